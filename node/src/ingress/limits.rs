//! What keeps one client from exhausting the ingress: a bound on open
//! connections, a deadline for every phase of a connection, and the
//! process's file-descriptor limit raised as far as it may go.
//!
//! - **TLS handshake**: done within [`HANDSHAKE_TIMEOUT`].
//! - **First request**: its head complete within [`HEADER_TIMEOUT`] of the
//!   connection's start (a client that sends nothing, or trickles a header,
//!   is closed). hyper's own header timeout closes HTTP/1 connections that
//!   take longer than that over a later request's head, or sit idle between
//!   requests.
//! - **Idle**: a connection with no request in flight for [`IDLE_TIMEOUT`]
//!   (an HTTP/2 connection with no stream, say) is closed. A request in
//!   flight (a long poll, a streamed response) is never cut by these.
//! - **Connections**: at most [`Limits::max_connections`] (default
//!   [`DEFAULT_MAX_CONNECTIONS`], `--ingress-max-connections`). When a new
//!   one arrives at the limit, the connections idle the longest (no request
//!   in flight: connected-and-silent ones first) are closed to make room;
//!   only when every connection is busy is the newcomer closed. So a flood
//!   of idle connections cannot lock out clients that send requests.
//!
//! Connections upgraded to websockets leave this accounting once the
//! upgrade is done (their tunnel is the app's stream).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

/// Default bound on the ingress's open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// File descriptors kept for everything but ingress connections (QUIC,
/// tunnels' files, logs, the data dir) when the limit is clamped to the
/// process's descriptor limit.
pub const FD_RESERVE: usize = 1024;
/// A TLS handshake must be done within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's head must arrive within this (the first one counted from the
/// connection's start).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// A connection with no request in flight is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The ingress's limits (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// `idle_since` while a request is in flight.
const BUSY: u64 = u64::MAX;

/// One open connection, as the registry and its watchdog see it.
#[derive(Debug)]
pub struct Conn {
    /// The registry's clock: times below are milliseconds since this.
    epoch: Instant,
    /// When its last request ended (or it opened); [`BUSY`] while requests
    /// are in flight.
    idle_since: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests it started.
    served: AtomicU64,
    /// Cancelled to close it (evicted, or timed out).
    pub close: CancellationToken,
    /// It was told to close to make room (and so counts as closing).
    evicted: std::sync::atomic::AtomicBool,
}

impl Conn {
    fn new(epoch: Instant) -> Conn {
        let c = Conn {
            epoch,
            idle_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            close: CancellationToken::new(),
            evicted: std::sync::atomic::AtomicBool::new(false),
        };
        c.idle_since.store(c.now_ms(), Ordering::SeqCst);
        c
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A request started on it; the guard ends it when dropped (with the
    /// response body).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.idle_since.store(BUSY, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When it has been idle since (ms), or `None` while busy.
    fn idle_since(&self) -> Option<u64> {
        match self.idle_since.load(Ordering::SeqCst) {
            BUSY => None,
            t => Some(t),
        }
    }

    /// Closes it once it stayed idle past its deadline (the header timeout
    /// before its first request, the idle timeout after); returns then.
    pub async fn watchdog(&self, limits: &Limits) {
        loop {
            let wait = match self.idle_since() {
                None => limits.idle_timeout,
                Some(since) => {
                    let limit = if self.served.load(Ordering::Relaxed) == 0 {
                        limits.header_timeout
                    } else {
                        limits.idle_timeout
                    };
                    let deadline = since.saturating_add(limit.as_millis() as u64);
                    let now = self.now_ms();
                    if now >= deadline {
                        return;
                    }
                    Duration::from_millis(deadline - now)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Ends one request of a [`Conn`] when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle_since.store(self.0.now_ms(), Ordering::SeqCst);
        }
    }
}

/// The open connections, bounded.
#[derive(Debug)]
pub struct Registry {
    max: usize,
    epoch: Instant,
    inner: Mutex<Inner>,
    /// Signalled when a connection closed to make room is gone.
    released: tokio::sync::Notify,
    /// Connections closed to make room, and newcomers refused (all busy).
    pub evicted: AtomicU64,
    pub refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Arc<Conn>>,
    /// Connections told to close (to make room) whose tasks have not let
    /// go of their sockets yet: they still count against the limit.
    closing: usize,
}

impl Registry {
    pub fn new(max: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max: max.max(1),
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
            released: tokio::sync::Notify::new(),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many connections hold a socket (those closing included).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.conns.len() + inner.closing
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits, before the next accept, until there is room for one more
    /// connection: at the limit, the longest-idle connections are told to
    /// close (a batch of 1/64 of the limit, so a flood costs one scan per
    /// batch, not one per connection), and this waits until they let go of
    /// their sockets. Meanwhile new connections wait in the listen backlog,
    /// holding no descriptor of ours. Returns at once when every connection
    /// is busy (the newcomer is then refused by [`Registry::admit`]).
    pub async fn wait_for_room(&self) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.conns.len() + inner.closing < self.max {
                    return;
                }
                if inner.closing == 0 && !self.evict_batch(&mut inner) {
                    return;
                }
            }
            released.await;
        }
    }

    /// Tells the longest-idle connections to close; false when none is idle.
    fn evict_batch(&self, inner: &mut Inner) -> bool {
        let mut idle: Vec<(u64, u64)> = inner
            .conns
            .iter()
            .filter_map(|(id, c)| c.idle_since().map(|since| (since, *id)))
            .collect();
        if idle.is_empty() {
            return false;
        }
        let batch = (self.max / 64).clamp(1, idle.len());
        if batch < idle.len() {
            idle.select_nth_unstable(batch - 1);
        }
        for (_, id) in &idle[..batch] {
            if let Some(c) = inner.conns.remove(id) {
                c.evicted.store(true, Ordering::SeqCst);
                c.close.cancel();
                inner.closing += 1;
            }
        }
        self.evicted.fetch_add(batch as u64, Ordering::Relaxed);
        true
    }

    /// A place for a connection just accepted; `None` when there is no room
    /// (every connection busy): the caller closes it at once.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut inner = self.lock();
        if inner.conns.len() + inner.closing >= self.max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        inner.next += 1;
        let id = inner.next;
        let conn = Arc::new(Conn::new(self.epoch));
        inner.conns.insert(id, conn.clone());
        Some(Admitted {
            registry: self.clone(),
            id,
            conn,
        })
    }
}

/// A connection's place in the [`Registry`], given back when dropped (with
/// its socket: drop it after the connection's task is done with it).
#[derive(Debug)]
pub struct Admitted {
    registry: Arc<Registry>,
    id: u64,
    pub conn: Arc<Conn>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if self.conn.evicted.load(Ordering::SeqCst) {
            inner.closing = inner.closing.saturating_sub(1);
            drop(inner);
            self.registry.released.notify_waiters();
        } else {
            inner.conns.remove(&self.id);
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (a
/// node holds a descriptor per ingress connection); returns the soft limit
/// in force afterwards.
pub fn raise_fd_limit() -> Option<usize> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-files limit"),
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit"),
        }
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    usize::try_from(soft).ok()
}

/// `wanted` connections, or fewer when the descriptor limit (`fds`) leaves
/// less than that after [`FD_RESERVE`]: the ingress must never run the
/// process out of descriptors.
pub fn clamp_to_fds(wanted: usize, fds: Option<usize>) -> usize {
    match fds {
        Some(fds) => wanted.min(fds.saturating_sub(FD_RESERVE).max(64)),
        None => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_limit_the_longest_idle_go_first_and_busy_ones_stay() {
        let r = Registry::new(4);
        let a = r.admit().expect("room");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = r.admit().expect("room");
        let c = r.admit().expect("room");
        let d = r.admit().expect("room");
        assert_eq!(r.len(), 4);
        assert!(r.admit().is_none(), "no room without making some");
        // a is the oldest idle, but busy: b is told to close instead, and
        // room is there only once b's task lets go of it.
        let _busy = a.conn.begin();
        let wait = tokio::spawn({
            let r = r.clone();
            async move { r.wait_for_room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(b.conn.close.is_cancelled() && !a.conn.close.is_cancelled());
        assert!(!wait.is_finished(), "room before b let go");
        assert_eq!(r.len(), 4);
        drop(b);
        wait.await.expect("room");
        assert_eq!(r.len(), 3);
        let e = r.admit().expect("room made");
        // Every connection busy: no room is made, the newcomer is refused.
        let _g = [c.conn.begin(), d.conn.begin(), e.conn.begin()];
        r.wait_for_room().await;
        assert!(r.admit().is_none());
        drop(_g);
        // Idle again: one is told to close, and its task lets go.
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.wait_for_room().await }
        });
        let conns = [c, d, e];
        tokio::time::timeout(Duration::from_secs(5), async {
            while !conns.iter().any(|x| x.conn.close.is_cancelled()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("one told to close");
        drop(conns);
        waiting.await.expect("room");
        assert!(r.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_header_timeout_a_busy_one_never() {
        let limits = Limits {
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let r = Registry::new(10);
        let silent = r.admit().expect("room");
        let started = Instant::now();
        silent.conn.watchdog(&limits).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_millis(300),
            "{waited:?}"
        );
        // After a request, the idle timeout counts from its end.
        let g = silent.conn.begin();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        drop(g);
        let started = Instant::now();
        silent.conn.watchdog(&limits).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(400),
            "{waited:?}"
        );

        let busy = r.admit().expect("room");
        let g = busy.conn.begin();
        let closed = tokio::time::timeout(Duration::from_secs(10), busy.conn.watchdog(&limits));
        assert!(closed.await.is_err(), "a busy connection was timed out");
        drop(g);
    }

    #[test]
    fn the_limit_leaves_descriptors_for_the_rest() {
        assert_eq!(clamp_to_fds(10_000, Some(20_000)), 10_000);
        assert_eq!(clamp_to_fds(10_000, Some(4_096)), 3_072);
        assert_eq!(clamp_to_fds(10_000, None), 10_000);
    }
}
