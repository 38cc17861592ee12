//! The entrypoint's supervision loop: start the child, forward signals until
//! it ends, pass its output through, hand back its status.
//!
//! This is the local core. The cluster connection (config as env vars, log
//! shipping from the [`LogQueue`], exec, restarts through
//! [`crate::child::ChildHandle::stop_gracefully`]) plugs in around it.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::child::{Child, ChildSpec, SpawnError};
use crate::logqueue::LogQueue;
use crate::reaper::{self, ExitStatus};
use crate::signals::ForwardedSignals;

/// After the child ends, how long its output may stand still before we stop
/// waiting for the pipes to close (a daemonised grandchild can hold them open
/// forever).
pub const OUTPUT_DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Runs `spec` to its end under supervision: the reaper sweeps zombies (all
/// of them when we are PID 1), the signals in
/// [`crate::signals::FORWARDED`] are forwarded, the output is passed through
/// (and split into `logs` when given). Returns the child's status once its
/// output has been passed through.
pub async fn supervise(
    spec: &ChildSpec,
    logs: Option<Arc<LogQueue>>,
) -> Result<ExitStatus, SpawnError> {
    // Both before the child exists: no SIGCHLD and no forwarded signal may
    // arrive while nothing handles it (a SIGTERM would kill us, not it).
    reaper::start().map_err(SpawnError::Setup)?;
    let mut signals = ForwardedSignals::install().map_err(SpawnError::Setup)?;
    let child = Child::spawn(spec, logs)?;
    let handle = child.handle();
    let ended = child.wait_with_output(OUTPUT_DRAIN_IDLE);
    tokio::pin!(ended);
    loop {
        tokio::select! {
            status = &mut ended => return Ok(status),
            sig = signals.recv() => {
                handle.forward(sig);
            }
        }
    }
}

/// `CAIRN_DISABLE`: replaces this process with the command (`execvp`: same
/// pid, same environment, nothing of ours left). Returns only on failure.
pub fn exec_direct(program: &OsString, args: &[OsString]) -> SpawnError {
    let source: io::Error = Command::new(program).args(args).exec();
    SpawnError::Exec {
        program: program.to_string_lossy().into_owned(),
        source,
    }
}
