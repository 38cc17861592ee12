//! The process supervisor: `cairn __supervise SPEC` keeps one instance running.
//!
//! It starts the command in its own process group, restarts it when it exits (with
//! exponential backoff, reset once the command has run long enough), records its
//! state in a JSON file after every change, and on SIGTERM/SIGINT stops the command's
//! group gracefully (SIGTERM, then SIGKILL after a grace period) and exits.
//!
//! Invariant: the state file is replaced atomically, and it names a child pid only
//! while that child is running under this supervisor.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::sys;
use crate::command::resolve_program;

/// Set on the supervised command: the path of its supervisor's state file. It tells
/// the command's processes apart from unrelated ones that reuse a recorded pid.
pub const STATE_ENV: &str = "CAIRN_INSTANCE_STATE";

/// What to supervise; written by the platform, read by the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSpec {
    pub command: Vec<String>,
    pub workdir: PathBuf,
    /// Set on top of the supervisor's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where the supervisor's stdout/stderr (and so the command's) go; informational.
    pub log: PathBuf,
    pub state: PathBuf,
    #[serde(default)]
    pub port: Option<u16>,
    /// Restart the command whenever it exits (a deployed process is meant to stay up).
    #[serde(default = "yes")]
    pub restart: bool,
    #[serde(default)]
    pub timing: Timing,
    /// Run the command as this (uid, gid) instead of the supervisor's user.
    #[serde(default)]
    pub run_as: Option<(u32, u32)>,
}

fn yes() -> bool {
    true
}

/// Restart and stop timings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A command that ran at least this long before exiting restarts with the initial
    /// backoff again.
    pub reset_after_ms: u64,
    /// How long the command has to exit after SIGTERM before it gets SIGKILL.
    pub stop_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
            reset_after_ms: 10_000,
            stop_timeout_ms: 5_000,
        }
    }
}

/// What the supervisor is doing; written to the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorState {
    pub supervisor_pid: u32,
    /// The running command's pid (also its process-group id).
    pub child_pid: Option<u32>,
    pub restarts: u64,
    pub port: Option<u16>,
    pub status: Status,
    /// How the command last exited.
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Starting,
    Running,
    /// Waiting before a restart.
    Backoff,
    /// Stopped on request.
    Stopped,
    /// The command exited and is not restarted.
    Exited,
}

/// Entry point of `cairn __supervise SPEC`. Call it from a plain (non-async) `main`;
/// it runs its own single-threaded runtime on a thread of its own, so it also works
/// when a runtime is already running.
pub fn run_supervisor(spec_path: &Path) -> ExitCode {
    ExitCode::from(run(spec_path))
}

/// [`run_supervisor`], with the exit status as a number: 0 when stopped on request,
/// the command's status when it exited without restart, 2 on a bad spec.
pub(crate) fn run(spec_path: &Path) -> u8 {
    let spec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            serde_json::from_slice::<SupervisorSpec>(&bytes).map_err(|e| e.to_string())
        }) {
        Ok(spec) => spec,
        Err(e) => {
            log(&format!("cannot read spec {}: {e}", spec_path.display()));
            return 2;
        }
    };
    if spec.command.is_empty() {
        log("the spec has an empty command");
        return 2;
    }
    let thread = std::thread::Builder::new()
        .name("supervisor".to_string())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(supervise(spec)),
                Err(e) => {
                    log(&format!("cannot start the runtime: {e}"));
                    2
                }
            }
        });
    match thread.map(|t| t.join()) {
        Ok(Ok(code)) => code,
        _ => 2,
    }
}

/// Writes a line to the supervisor's stderr (the instance log), bypassing any output
/// capture.
fn log(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[cairn supervisor {}] {message}", std::process::id());
}

async fn supervise(spec: SupervisorSpec) -> u8 {
    // Handlers first: from the moment the state file exists, SIGTERM must stop the
    // command rather than kill the supervisor alone.
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (mut term, mut int, _hup) = match signals {
        (Ok(term), Ok(int), Ok(hup)) => (term, int, hup),
        _ => {
            log("cannot install signal handlers");
            return 2;
        }
    };
    let timing = spec.timing;
    let initial = Duration::from_millis(timing.initial_backoff_ms.max(1));
    let max = Duration::from_millis(timing.max_backoff_ms).max(initial);
    let mut backoff = initial;
    let mut state = SupervisorState {
        supervisor_pid: std::process::id(),
        child_pid: None,
        restarts: 0,
        port: spec.port,
        status: Status::Starting,
        last_exit: None,
    };
    write_state(&spec.state, &state);
    loop {
        let started = Instant::now();
        let (program, args) = match spec.command.split_first() {
            Some(split) => split,
            None => return 2,
        };
        let mut cmd = tokio::process::Command::new(resolve_program(program, &spec.workdir));
        cmd.args(args)
            .current_dir(&spec.workdir)
            .env_clear()
            .envs(&spec.env)
            .env(STATE_ENV, &spec.state)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .process_group(0);
        if let Some((uid, gid)) = spec.run_as {
            // std drops the supplementary groups too when leaving root.
            cmd.uid(uid).gid(gid);
        }
        sys::terminate_with_parent(&mut cmd);
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id();
                log(&format!(
                    "started `{}` (pid {})",
                    spec.command.join(" "),
                    pid.unwrap_or(0)
                ));
                state.child_pid = pid;
                state.status = Status::Running;
                write_state(&spec.state, &state);
                let exit = tokio::select! {
                    exit = child.wait() => exit,
                    _ = stop_requested(&mut term, &mut int) => {
                        stop_child(&mut child, pid, timing).await;
                        sys::kill_marked(&marker(&spec));
                        state.child_pid = None;
                        state.status = Status::Stopped;
                        write_state(&spec.state, &state);
                        log("stopped");
                        return 0;
                    }
                };
                // Whatever the leader left behind goes with it: its group,
                // and anything else of this instance (an app under the
                // entrypoint runs in a group of its own).
                if let Some(pid) = pid {
                    let _ = sys::signal_group(pid, sys::SIGKILL);
                }
                sys::kill_marked(&marker(&spec));
                let text = match &exit {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                log(&format!("`{program}` {text}"));
                state.last_exit = Some(text);
                if !spec.restart {
                    state.child_pid = None;
                    state.status = Status::Exited;
                    write_state(&spec.state, &state);
                    let code = exit.ok().and_then(|s| s.code()).unwrap_or(1);
                    return u8::try_from(code).unwrap_or(1);
                }
            }
            Err(e) => {
                log(&format!("cannot start `{program}`: {e}"));
                state.last_exit = Some(format!("cannot start: {e}"));
                if !spec.restart {
                    state.child_pid = None;
                    state.status = Status::Exited;
                    write_state(&spec.state, &state);
                    return 127;
                }
            }
        }
        if started.elapsed() >= Duration::from_millis(timing.reset_after_ms) {
            backoff = initial;
        }
        state.child_pid = None;
        state.restarts += 1;
        state.status = Status::Backoff;
        write_state(&spec.state, &state);
        log(&format!("restarting in {} ms", backoff.as_millis()));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop_requested(&mut term, &mut int) => {
                state.status = Status::Stopped;
                write_state(&spec.state, &state);
                log("stopped");
                return 0;
            }
        }
        backoff = (backoff * 2).min(max);
    }
}

/// The environment entry every process of this instance inherits.
pub(crate) fn marker(spec: &SupervisorSpec) -> std::ffi::OsString {
    marker_for(&spec.state)
}

/// `CAIRN_INSTANCE_STATE=<state file>`.
pub(crate) fn marker_for(state: &Path) -> std::ffi::OsString {
    let mut entry = std::ffi::OsString::from(format!("{STATE_ENV}="));
    entry.push(state.as_os_str());
    entry
}

async fn stop_requested(term: &mut Signal, int: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// SIGTERM to the command's group, SIGKILL after the grace period, then SIGKILL to
/// whatever is left in the group.
async fn stop_child(child: &mut tokio::process::Child, pid: Option<u32>, timing: Timing) {
    let Some(pid) = pid else {
        let _ = child.kill().await;
        return;
    };
    let _ = sys::signal_group(pid, sys::SIGTERM);
    let grace = Duration::from_millis(timing.stop_timeout_ms);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        log(&format!(
            "pid {pid} did not exit within {} ms, killing it",
            grace.as_millis()
        ));
        let _ = sys::signal_group(pid, sys::SIGKILL);
        let _ = child.wait().await;
    }
    let _ = sys::signal_group(pid, sys::SIGKILL);
}

fn write_state(path: &Path, state: &SupervisorState) {
    if let Err(e) = write_json_atomic(path, state) {
        log(&format!("cannot write state {}: {e}", path.display()));
    }
}

/// Writes JSON to a temporary file next to `path` (mode 0600), then renames
/// it into place.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    cairn_protocol::private::write(path, &bytes)
}

/// Reads a supervisor's state file.
pub fn read_state(path: &Path) -> std::io::Result<SupervisorState> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}
