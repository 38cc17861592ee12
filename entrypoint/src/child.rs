//! The app process: started in its own process group with piped output,
//! signalled, stopped gracefully, waited for.
//!
//! Invariant: a child is signalled by pid or process group only while it is
//! not reaped (see [`crate::reaper::while_alive`]); the single exception, the
//! last `SIGKILL` of [`ChildHandle::stop_gracefully`] to leftovers of the
//! group, first checks that the group still has members.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{getpgrp, getpid, tcgetpgrp, tcsetpgrp, Pid};
use tokio::time::Instant;

use crate::logqueue::LogQueue;
use crate::output::OutputPumps;
use crate::reaper::{self, ExitStatus, ExitWatch};
use crate::signals::{target_of, Target};

/// How often [`ChildHandle::stop_gracefully`] looks whether the child's
/// process group is empty yet (its other members are not our children, so
/// there is nothing to wait on).
const GROUP_POLL: Duration = Duration::from_millis(20);

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ChildSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Set in the child's environment, on top of the entrypoint's own.
    pub env: Vec<(OsString, OsString)>,
    /// Removed from the child's environment.
    pub env_remove: Vec<OsString>,
}

impl ChildSpec {
    pub fn new(
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot run {program}: {source}")]
    Exec { program: String, source: io::Error },
    #[error("cannot start the output threads: {0}")]
    Pumps(io::Error),
    #[error("cannot set up signal handling: {0}")]
    Setup(io::Error),
}

impl SpawnError {
    /// The shell's convention: 127 when the command was not found, 126 when
    /// it could not be run.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}

/// A running child and its output pumps.
#[derive(Debug)]
pub struct Child {
    handle: ChildHandle,
    output: OutputPumps,
}

/// A cheap, cloneable handle to signal, stop and wait for a child.
#[derive(Debug, Clone)]
pub struct ChildHandle {
    pid: i32,
    exit: ExitWatch,
}

impl Child {
    /// Starts `spec` in a new process group (pgid = its pid), stdin
    /// inherited, stdout/stderr piped through [`OutputPumps`] (lines to
    /// `logs` when given). If our stdin is the terminal and we are its
    /// foreground group, the child's group becomes the foreground group, so
    /// an interactive app can read the terminal (as `tini` does).
    ///
    /// Requires [`reaper::start`] on this runtime.
    pub fn spawn(spec: &ChildSpec, logs: Option<Arc<LogQueue>>) -> Result<Child, SpawnError> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::inherit())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for key in &spec.env_remove {
            cmd.env_remove(key);
        }
        for (key, value) in &spec.env {
            cmd.env(key, value);
        }
        if stdin_is_our_foreground_terminal() {
            hand_terminal_to_child(&mut cmd);
        }
        die_with_entrypoint(&mut cmd);
        // std's spawn returns once the child has exec'd (or failed to), so
        // its process group exists from here on.
        let (mut std_child, exit) = reaper::spawn(&mut cmd).map_err(|source| SpawnError::Exec {
            program: spec.program.to_string_lossy().into_owned(),
            source,
        })?;
        let handle = ChildHandle {
            pid: std_child.id() as i32,
            exit,
        };
        // Invariant: both were set to `Stdio::piped()` above.
        let (Some(stdout), Some(stderr)) = (std_child.stdout.take(), std_child.stderr.take())
        else {
            handle.signal(Signal::SIGKILL, Target::Group);
            return Err(SpawnError::Pumps(io::Error::other("no output pipes")));
        };
        match OutputPumps::start(stdout, stderr, logs) {
            Ok(output) => Ok(Child { handle, output }),
            Err(e) => {
                // Nobody would drain its pipes: it would hang.
                handle.signal(Signal::SIGKILL, Target::Group);
                Err(SpawnError::Pumps(e))
            }
        }
    }

    pub fn handle(&self) -> ChildHandle {
        self.handle.clone()
    }

    /// Waits for the child to end, then for its output to be passed through
    /// (bounded: see [`OutputPumps::finish`]).
    pub async fn wait_with_output(self, drain_idle: Duration) -> ExitStatus {
        let status = self.handle.wait().await;
        self.output.finish(drain_idle).await;
        status
    }
}

impl ChildHandle {
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The exit status once the child has been reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Waits for the child to end.
    pub async fn wait(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => *status,
            // The reaper never drops a sender without sending a status.
            Err(_) => None,
        };
        status.unwrap_or(ExitStatus::Signaled(Signal::SIGKILL as i32))
    }

    /// Sends `sig` to the child or its group. False if it has already been
    /// reaped (or the signal could not be sent).
    pub fn signal(&self, sig: Signal, target: Target) -> bool {
        let pid = Pid::from_raw(self.pid);
        reaper::while_alive(self.pid, || match target {
            Target::Group => killpg(pid, sig),
            Target::Child => kill(pid, sig),
        })
        .is_some_and(|sent| sent.is_ok())
    }

    /// Forwards a signal the entrypoint received, to the target chosen in
    /// [`crate::signals::FORWARDED`]. False for a signal that is not forwarded.
    pub fn forward(&self, sig: Signal) -> bool {
        target_of(sig).is_some_and(|target| self.signal(sig, target))
    }

    /// Stops the child's process group: `SIGTERM` to the group, then up to
    /// `grace` for the child and the rest of its group to end, then `SIGKILL`
    /// to whatever of the group is left. Returns the child's status.
    pub async fn stop_gracefully(&self, grace: Duration) -> ExitStatus {
        let deadline = Instant::now() + grace;
        self.signal(Signal::SIGTERM, Target::Group);
        let ended = tokio::time::timeout_at(deadline, self.wait()).await.ok();
        if ended.is_some() {
            // The child is gone; give the rest of its group the same deadline.
            while group_exists(self.pid) && Instant::now() < deadline {
                tokio::time::sleep(GROUP_POLL.min(deadline - Instant::now())).await;
            }
            if group_exists(self.pid) {
                let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
        } else {
            self.signal(Signal::SIGKILL, Target::Group);
        }
        match ended {
            Some(status) => status,
            None => self.wait().await,
        }
    }
}

/// Whether a process group `pgid` still has members we may signal.
fn group_exists(pgid: i32) -> bool {
    // ESRCH: no members left; EPERM: the id now names someone else's group.
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Whether stdin is a terminal whose foreground process group is ours.
fn stdin_is_our_foreground_terminal() -> bool {
    let stdin = io::stdin();
    matches!(tcgetpgrp(stdin.as_fd()), Ok(pgrp) if pgrp == getpgrp())
}

/// The child gets SIGKILL if the entrypoint dies (killed with SIGKILL, say):
/// a supervisor that restarts the entrypoint must not find the old app
/// still holding its port.
#[allow(unsafe_code)]
fn die_with_entrypoint(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec; prctl is
    // async-signal-safe and changes only the child's own attribute.
    unsafe {
        cmd.pre_exec(|| {
            crate::exec::die_with_parent();
            Ok(())
        });
    }
}

/// Makes the child's new process group the terminal's foreground group, so
/// that reading the terminal does not stop it with `SIGTTIN`.
#[allow(unsafe_code)]
fn hand_terminal_to_child(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec (after std's
    // setpgid and signal-mask reset); it allocates nothing and makes only
    // async-signal-safe calls (sigprocmask, tcsetpgrp, getpid). Fd 0 is open:
    // the parent just found it to be a terminal and the child inherits it.
    unsafe {
        cmd.pre_exec(|| {
            // tcsetpgrp from a background group raises SIGTTOU unless it is
            // blocked.
            let mut block = SigSet::empty();
            block.add(Signal::SIGTTOU);
            let mut old = SigSet::empty();
            let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old));
            let _ = tcsetpgrp(BorrowedFd::borrow_raw(0), getpid());
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            Ok(())
        });
    }
}
