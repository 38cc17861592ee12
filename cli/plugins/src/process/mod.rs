//! Platform and releaser `process`: runs an artifact as plain processes on the
//! runner's host, each instance kept up by a detached supervisor
//! (`cairn __supervise SPEC`, see [`run_supervisor`]) that outlives the CLI.
//!
//! Layout under `data_dir/deployments/<app>/`:
//! - `v<N>/`: the extracted artifact (removed by `destroy`);
//! - `v<N>.run/instance-<i>.{spec.json,state.json,log}`: the supervisor's spec
//!   (mode 0600, it holds the config env; removed by `destroy`), its state file and
//!   the instance log (both kept);
//! - `v<N>.home/instance-<i>/`: each instance's `HOME` (with `tmp/`);
//! - `released`: the sequence of the released deployment.
//!
//! When the runner is root, instances run as another user (see
//! [`isolation`]) and `v<N>/`, `v<N>.home/` and `v<N>.entrypoint` (a copy of
//! the entrypoint) are under [`isolation::instance_root`] instead, owned by
//! that user; `v<N>.run/` stays here.
//!
//! Invariant: `deploy` either returns with every instance running or leaves nothing
//! running.

pub mod isolation;
mod platform;
mod release;
mod supervisor;
mod sys;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{InstanceHealth, OpContext, PluginError};

pub use platform::ProcessPlatform;
pub use release::{released_sequence, ProcessReleaser, Release, RELEASE};
pub use supervisor::{
    read_state, run_supervisor, Status, SupervisorSpec, SupervisorState, Timing, STATE_ENV,
};

pub const DEPLOYMENT: &str = "process.Deployment";

/// `process.Deployment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub app: String,
    pub sequence: u64,
    /// The extracted artifact.
    pub dir: PathBuf,
    pub instances: Vec<Instance>,
    /// The deployment URL (instance 0).
    pub url: String,
}

impl crate::Typed for Deployment {
    const TYPE_NAME: &'static str = DEPLOYMENT;
}

/// One supervised instance of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub index: usize,
    pub port: u16,
    pub supervisor_pid: u32,
    pub log: PathBuf,
    pub state: PathBuf,
    pub spec: PathBuf,
}

/// `data_dir/deployments/<app>`, refusing app names that are not a plain file name.
pub(crate) fn app_dir(ctx: &OpContext) -> Result<PathBuf, PluginError> {
    let app = ctx.app.as_str();
    if app.is_empty() || app == "." || app == ".." || app.contains('/') || app.contains('\0') {
        return Err(PluginError::Failed(format!("invalid app name {app:?}")));
    }
    Ok(ctx.data_dir.join("deployments").join(app))
}

/// How long a supervisor has to stop its command and exit after SIGTERM (its own
/// grace period for the command is 5 s).
const SUPERVISOR_GRACE: Duration = Duration::from_secs(8);

/// Whether `pid` is the supervisor of this instance (and not a reused pid).
fn is_supervisor(instance: &Instance) -> bool {
    sys::process_exists(instance.supervisor_pid)
        && sys::cmdline_has_arg(instance.supervisor_pid, instance.spec.as_os_str()).unwrap_or(true)
}

/// Stops an instance: SIGTERM to its supervisor (which stops the command), SIGKILL
/// if it does not exit in time, then SIGKILL to the command's group if the supervisor
/// could not stop it. Returns once they are gone. Idempotent.
pub(crate) fn stop_instance(instance: &Instance) -> Result<(), PluginError> {
    let mut killed = false;
    if is_supervisor(instance) {
        let _ = sys::signal_process(instance.supervisor_pid, sys::SIGTERM);
        if !wait_until(SUPERVISOR_GRACE, || {
            !sys::process_exists(instance.supervisor_pid)
        }) {
            let _ = sys::signal_process(instance.supervisor_pid, sys::SIGKILL);
            killed = true;
            wait_until(Duration::from_secs(2), || {
                !sys::process_exists(instance.supervisor_pid)
            });
        }
    }
    // The supervisor died without stopping its command (killed just now, or earlier).
    if killed || !is_supervisor(instance) {
        sys::kill_marked(&supervisor::marker_for(&instance.state));
    }
    if let Ok(state) = read_state(&instance.state) {
        if let Some(child) = state.child_pid {
            let ours = || {
                let entry = format!("{}={}", STATE_ENV, instance.state.display());
                sys::environ_has(child, std::ffi::OsStr::new(&entry)).unwrap_or(killed)
            };
            if state.status == Status::Running && sys::group_exists(child) && ours() {
                let _ = sys::signal_group(child, sys::SIGKILL);
                wait_until(Duration::from_secs(2), || !sys::group_exists(child));
            }
        }
    }
    if is_supervisor(instance) {
        return Err(PluginError::Failed(format!(
            "supervisor {} of instance {} did not stop",
            instance.supervisor_pid, instance.index
        )));
    }
    let _ = std::fs::remove_file(&instance.spec);
    Ok(())
}

/// Stops every instance and removes the extracted directory.
pub(crate) fn destroy_deployment(deployment: &Deployment) -> Result<(), PluginError> {
    let mut failures = Vec::new();
    for instance in &deployment.instances {
        if let Err(e) = stop_instance(instance) {
            failures.push(e.to_string());
        }
    }
    if !failures.is_empty() {
        return Err(PluginError::Failed(failures.join("; ")));
    }
    // The instances' homes and the entrypoint copy (see `platform`).
    let sibling = |suffix: &str| PathBuf::from(format!("{}{suffix}", deployment.dir.display()));
    let _ = std::fs::remove_dir_all(sibling(".home"));
    let _ = std::fs::remove_file(sibling(".entrypoint"));
    match std::fs::remove_dir_all(&deployment.dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PluginError::io(
            format!("removing {}", deployment.dir.display()),
            e,
        )),
    }
}

/// Removes what deployment `ctx.sequence` of `ctx.app` left when its deploy
/// never returned (its runner or node died): found by where it lives, not by
/// a record. Its supervisors are found by their spec files' directory in
/// their command lines, its app processes by the marker their supervisors set,
/// and its files by their names. Returns what it removed, for the output.
pub(crate) fn destroy_interrupted(ctx: &OpContext) -> Result<String, PluginError> {
    use std::os::unix::ffi::OsStrExt;
    let app_dir = app_dir(ctx)?;
    let seq = ctx.sequence;
    let run_dir = app_dir.join(format!("v{seq}.run"));
    let prefix = run_dir.join("instance-").into_os_string();
    let mut supervisors = 0;
    let mut failures = Vec::new();
    for (pid, spec) in sys::pids_with_arg_prefix(&prefix) {
        let Some(index) = instance_index(Path::new(&spec)) else {
            continue;
        };
        let instance = Instance {
            index,
            port: 0,
            supervisor_pid: pid,
            log: run_dir.join(format!("instance-{index}.log")),
            state: run_dir.join(format!("instance-{index}.state.json")),
            spec: PathBuf::from(spec),
        };
        supervisors += 1;
        if let Err(e) = stop_instance(&instance) {
            failures.push(e.to_string());
        }
    }
    if !failures.is_empty() {
        return Err(PluginError::Failed(failures.join("; ")));
    }
    // App processes whose supervisor is gone: `STATE_ENV=<run_dir>/instance-…`.
    let mut marker = std::ffi::OsString::from(format!("{STATE_ENV}="));
    marker.push(&prefix);
    let orphans = sys::kill_marked_prefix(&marker);
    // Its spec files (they hold the config env), code and homes.
    if let Ok(entries) = std::fs::read_dir(&run_dir) {
        for e in entries.flatten() {
            if e.file_name().as_bytes().ends_with(b".spec.json") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut removed = Vec::new();
    for root in [
        app_dir.clone(),
        isolation::instance_root(&ctx.data_dir).join(&ctx.app),
    ] {
        for name in [format!("v{seq}"), format!("v{seq}.home")] {
            let dir = root.join(name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| PluginError::io(format!("removing {}", dir.display()), e))?;
                removed.push(dir.display().to_string());
            }
        }
        let _ = std::fs::remove_file(root.join(format!("v{seq}.entrypoint")));
    }
    Ok(format!(
        "stopped {supervisors} supervisor(s) and {orphans} orphaned process(es); removed {}",
        if removed.is_empty() {
            "no files".to_string()
        } else {
            removed.join(", ")
        }
    ))
}

/// `…/instance-3.spec.json` → 3.
fn instance_index(spec: &Path) -> Option<usize> {
    spec.file_name()?
        .to_str()?
        .strip_prefix("instance-")?
        .strip_suffix(".spec.json")?
        .parse()
        .ok()
}

/// The health of one instance: its supervisor and its command are both running.
pub(crate) fn instance_health(instance: &Instance) -> InstanceHealth {
    let state = read_state(&instance.state).ok();
    let child = state
        .as_ref()
        .filter(|s| s.status == Status::Running)
        .and_then(|s| s.child_pid);
    let alive = is_supervisor(instance) && child.is_some_and(sys::process_exists);
    InstanceHealth {
        index: instance.index,
        alive,
        port: Some(instance.port),
        pid: child.filter(|_| alive),
        restarts: state.map_or(0, |s| s.restarts),
    }
}

/// Polls `done` every 20 ms until it holds or `limit` passes; returns whether it held.
pub(crate) fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last few lines of a log, on one line.
pub(crate) fn log_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(2048)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests;
