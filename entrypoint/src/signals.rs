//! Which signals the entrypoint forwards to the child, and to whom.
//!
//! The child runs in its own process group (its pgid is its pid). The choice:
//!
//! - **TERM, INT, HUP, QUIT go to the whole group.** They mean "stop" (or
//!   "your terminal is gone"). A terminal sends them to its whole foreground
//!   group, `dumb-init` forwards them to the group, and
//!   [`crate::child::ChildHandle::stop_gracefully`] stops the group too: an
//!   app started through a wrapper (`sh -c 'a | b'`, `npm start`) stops as
//!   a whole instead of leaving helpers behind.
//! - **USR1, USR2, WINCH go to the child process only.** Their meaning is the
//!   app's own and often differs between a master and its workers (nginx,
//!   Apache, unicorn, gunicorn: reopen logs, graceful stop, scale); the master
//!   relays them as it sees fit.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

/// Who a forwarded signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The child's process group (the child and everything it started that
    /// did not move to another group).
    Group,
    /// The child process alone.
    Child,
}

/// The forwarded signals and their targets.
pub const FORWARDED: [(Signal, Target); 7] = [
    (Signal::SIGTERM, Target::Group),
    (Signal::SIGINT, Target::Group),
    (Signal::SIGHUP, Target::Group),
    (Signal::SIGQUIT, Target::Group),
    (Signal::SIGUSR1, Target::Child),
    (Signal::SIGUSR2, Target::Child),
    (Signal::SIGWINCH, Target::Child),
];

/// Where `sig` goes when forwarded, or `None` if it is not forwarded.
pub fn target_of(sig: Signal) -> Option<Target> {
    FORWARDED.iter().find(|(s, _)| *s == sig).map(|(_, t)| *t)
}

/// Handlers for every signal in [`FORWARDED`]. From creation on, those
/// signals no longer have their default action on the entrypoint (which
/// would kill it); they are queued here until received.
pub struct ForwardedSignals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl ForwardedSignals {
    /// Installs the handlers; call it within a runtime, before the child starts.
    pub fn install() -> io::Result<Self> {
        let streams = FORWARDED
            .iter()
            .map(|&(sig, _)| Ok((sig, signal(SignalKind::from_raw(sig as i32))?)))
            .collect::<io::Result<_>>()?;
        Ok(Self { streams })
    }

    /// The next signal received.
    pub async fn recv(&mut self) -> Signal {
        poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_go_to_the_group_app_signals_to_the_child() {
        for sig in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            assert_eq!(target_of(sig), Some(Target::Group), "{sig}");
        }
        for sig in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGWINCH] {
            assert_eq!(target_of(sig), Some(Target::Child), "{sig}");
        }
        assert_eq!(target_of(Signal::SIGKILL), None);
        assert_eq!(target_of(Signal::SIGCHLD), None);
    }
}
