//! Reaping: the one place in the process that waits for children.
//!
//! Invariants:
//! - Every process this binary starts is spawned through [`spawn`], and
//!   nothing else waits for children (no `tokio::process`, no
//!   `std::process::Child::wait`). The reaper waits for *any* child
//!   (`waitpid(-1)`), which is what reaps the orphans the kernel hands to PID 1.
//! - A watched child's status is never lost to that sweep: [`spawn`]
//!   registers the pid under the same lock that the sweep holds, so the sweep
//!   cannot reap a child before it is registered.
//! - A pid is signalled only while its process is known not to have been
//!   reaped ([`while_alive`]), so a signal never reaches a recycled pid.
//!
//! The registry is process-wide (there is one set of children per process);
//! [`start`] spawns a task on the current tokio runtime that sweeps on every
//! `SIGCHLD`. Several such tasks (several runtimes, as in tests) are harmless.

use std::collections::BTreeMap;
use std::io;
use std::process::{Child as StdChild, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
}

impl ExitStatus {
    /// The exit code a wrapper passes on: the child's code, or 128 + the
    /// signal number (the shell convention).
    pub fn exit_code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
        }
    }

    fn from_raw(status: libc::c_int) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(ExitStatus::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitStatus::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

/// Becomes `Some` once the child has been reaped.
pub type ExitWatch = watch::Receiver<Option<ExitStatus>>;

struct Registry {
    watched: BTreeMap<i32, watch::Sender<Option<ExitStatus>>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    watched: BTreeMap::new(),
});
static ORPHANS_REAPED: AtomicU64 = AtomicU64::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

fn registry() -> MutexGuard<'static, Registry> {
    // Every critical section leaves the map consistent, even if it panics.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts sweeping on `SIGCHLD` on the current tokio runtime. Call it before
/// the first [`spawn`], from within a runtime.
pub fn start() -> io::Result<()> {
    // The handler exists from here on: a SIGCHLD that arrives before the task
    // first runs is not lost.
    let mut sigchld = signal(SignalKind::child())?;
    STARTED.store(true, Ordering::Relaxed);
    tokio::spawn(async move {
        loop {
            reap();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// Spawns `cmd` and watches its exit. The returned `std` child must not be
/// waited on; its pipes may be taken.
pub fn spawn(cmd: &mut Command) -> io::Result<(StdChild, ExitWatch)> {
    if !STARTED.load(Ordering::Relaxed) {
        // Its status would never arrive.
        return Err(io::Error::other("the reaper is not started"));
    }
    let mut reg = registry();
    let child = cmd.spawn()?;
    let (tx, rx) = watch::channel(None);
    // Pids fit in i32 (pid_t); `id()` is u32 only by std's choice.
    reg.watched.insert(child.id() as i32, tx);
    Ok((child, rx))
}

/// Runs `f` while `pid` (a child from [`spawn`]) is certainly not reaped, so
/// its pid (and its process group id) still name it. `None` if it was reaped.
pub fn while_alive<R>(pid: i32, f: impl FnOnce() -> R) -> Option<R> {
    let reg = registry();
    if reg.watched.contains_key(&pid) {
        Some(f())
    } else {
        None
    }
}

/// Reaps every child that has ended: watched children's statuses go to their
/// [`ExitWatch`], others (orphans adopted as PID 1) are counted. Returns how
/// many were reaped.
pub fn reap() -> usize {
    let mut reg = registry();
    let mut reaped = 0;
    loop {
        let mut raw: libc::c_int = 0;
        // SAFETY: waitpid only writes the status into `raw`, a valid c_int.
        #[allow(unsafe_code)]
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        if pid == 0 {
            break; // children remain, none has ended
        }
        if pid < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break; // ECHILD: no children at all
        }
        reaped += 1;
        // Without WUNTRACED/WCONTINUED every status is an exit or a death.
        let status = ExitStatus::from_raw(raw);
        match (reg.watched.remove(&pid), status) {
            (Some(tx), Some(status)) => {
                // Nobody listening any more is fine.
                let _ = tx.send(Some(status));
            }
            (Some(tx), None) => {
                reg.watched.insert(pid, tx);
            }
            (None, _) => {
                ORPHANS_REAPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    reaped
}

/// Processes reaped that were not ours (adopted orphans), since start.
pub fn orphans_reaped() -> u64 {
    ORPHANS_REAPED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ExitStatus::Exited(7).exit_code(), 7);
        assert_eq!(ExitStatus::Signaled(9).exit_code(), 137);
        assert_eq!(ExitStatus::Signaled(15).exit_code(), 143);
    }
}
