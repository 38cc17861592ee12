//! quinn's UDP socket on tokio, without standing write interest.
//!
//! quinn's own tokio socket registers the UDP socket for both readable and
//! writable events. Edge-triggered, the writable one fires whenever the
//! peer drains a datagram we sent and our send buffer shrinks: every packet
//! sent wakes the sending thread once more, for nothing (on a loopback or
//! a VM, where a wake-up is the dearest part of a small exchange, that is
//! about a third of the wake-ups of a request through a URL tunnel).
//!
//! [`QuietRuntime`] is quinn's tokio runtime with a socket registered for
//! readable events only. Sends are tried directly; only when one would
//! block does a connection wait for writability, through a registration of
//! a duplicate of the descriptor made for that wait and dropped after it.
//!
//! Invariants:
//! - No wake-up is lost: a writability registration made after a send
//!   blocked reports the socket at once if it is writable by then (epoll
//!   reports the current state on registration).
//! - Received datagrams, GSO/GRO and ECN are handled by `quinn-udp`'s
//!   `UdpSocketState`, as in quinn's own socket.

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// quinn's tokio runtime, with [`QuietSocket`]s.
#[derive(Debug)]
pub struct QuietRuntime;

impl Runtime for QuietRuntime {
    fn new_timer(&self, t: Instant) -> Pin<Box<dyn AsyncTimer>> {
        TokioRuntime.new_timer(t)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        TokioRuntime.spawn(future);
    }

    fn wrap_udp_socket(&self, sock: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(QuietSocket::new(sock)?))
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }
}

/// Registers `inner` with tokio's reactor for `interest`.
fn register<T: AsRawFd>(inner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` is a std socket or an `OwnedFd`: it owns its
    // descriptor, which stays open and the same for as long as the
    // `AsyncFd` holds it, and `as_raw_fd` always returns it.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register_with_interest(inner, interest) };
    Ok(registered?)
}

/// A UDP socket registered for readable events only.
#[derive(Debug)]
pub struct QuietSocket {
    io: AsyncFd<std::net::UdpSocket>,
    state: UdpSocketState,
    /// A send would have blocked: senders wait until the socket is
    /// writable again.
    blocked: AtomicBool,
}

impl QuietSocket {
    /// Must be called within a tokio runtime.
    pub fn new(sock: std::net::UdpSocket) -> io::Result<QuietSocket> {
        sock.set_nonblocking(true)?;
        let state = UdpSocketState::new((&sock).into())?;
        Ok(QuietSocket {
            io: register(sock, Interest::READABLE)?,
            state,
            blocked: AtomicBool::new(false),
        })
    }
}

impl AsyncUdpSocket for QuietSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller {
            socket: self,
            waiting: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        match self.state.send(self.io.get_ref().into(), transmit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked.store(true, Ordering::Release);
                Err(e)
            }
            other => other,
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx))?;
            match guard.try_io(|fd| self.state.recv(fd.get_ref().into(), bufs, meta)) {
                Ok(result) => return Poll::Ready(result),
                // Drained: the readiness was cleared, wait for the next.
                Err(_would_block) => continue,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

/// A connection's wait for the socket to take sends again.
#[derive(Debug)]
struct WritablePoller {
    socket: Arc<QuietSocket>,
    /// A duplicate of the descriptor registered for writable events, only
    /// while a send is blocked.
    waiting: Option<AsyncFd<OwnedFd>>,
}

impl UdpPoller for WritablePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.socket.blocked.load(Ordering::Acquire) {
            this.waiting = None;
            return Poll::Ready(Ok(()));
        }
        if this.waiting.is_none() {
            let fd = this.socket.io.get_ref().as_fd().try_clone_to_owned()?;
            this.waiting = Some(register(fd, Interest::WRITABLE)?);
        }
        if let Some(w) = &this.waiting {
            let _ready = ready!(w.poll_write_ready(cx))?;
        }
        this.waiting = None;
        this.socket.blocked.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams go out and come in, and a send that would have blocked
    /// makes the poller register for writability, which a writable socket
    /// reports at once (no wake-up lost), clearing the block.
    #[tokio::test]
    async fn sends_receive_and_a_blocked_sender_is_woken_when_writable() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let a_addr = a.local_addr().expect("addr");
        let b_addr = b.local_addr().expect("addr");
        let a = Arc::new(QuietSocket::new(a).expect("socket"));
        let b = Arc::new(QuietSocket::new(b).expect("socket"));
        let payload = b"hello over a quiet socket".to_vec();
        a.try_send(&Transmit {
            destination: b_addr,
            ecn: None,
            contents: &payload,
            segment_size: None,
            src_ip: None,
        })
        .expect("send");
        let mut buf = vec![0u8; 2048];
        let mut meta = [RecvMeta::default()];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            std::future::poll_fn(|cx| {
                let mut bufs = [IoSliceMut::new(&mut buf)];
                b.poll_recv(cx, &mut bufs, &mut meta)
            }),
        )
        .await
        .expect("a datagram within 5 s")
        .expect("recv");
        assert_eq!(n, 1);
        assert_eq!(&buf[..meta[0].len], &payload[..]);
        assert_eq!(meta[0].addr, a_addr);

        let mut poller = a.clone().create_io_poller();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(poller.as_mut().poll_writable(&mut cx).is_ready());
        // As after a send that would block.
        a.blocked.store(true, Ordering::Release);
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)),
        )
        .await
        .expect("writable within 5 s")
        .expect("writable");
        assert!(!a.blocked.load(Ordering::Acquire));
    }
}
