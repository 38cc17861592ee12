//! The entrypoint's supervision loop: start the child, forward signals until
//! it ends, pass its output through, hand back its status.
//!
//! [`supervise`] runs the child once; [`supervise_with_config`] runs it
//! with the cluster's configuration as env vars and restarts it gracefully
//! ([`crate::child::ChildHandle::stop_gracefully`]) when that configuration
//! changes. Either returns only when the child ends on its own (or because
//! of a signal we forwarded), never because of a restart.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::child::{Child, ChildSpec, SpawnError};
use crate::cluster::{ConfigWatch, Env};
use crate::exec::AppContext;
use crate::logqueue::LogQueue;
use crate::reaper::{self, ExitStatus};
use crate::signals::ForwardedSignals;

/// How long the first start waits for the cluster's configuration before
/// starting the child without it (fail open).
pub const START_WAIT: Duration = Duration::from_secs(5);
/// How long a restart for a configuration change lets the child stop after
/// SIGTERM before it is killed.
pub const RESTART_GRACE: Duration = Duration::from_secs(10);

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

/// The app's spec as it was last started: what exec sessions run with.
#[derive(Debug, Default)]
pub struct CurrentApp(std::sync::Mutex<ChildSpec>);

impl CurrentApp {
    pub fn new(spec: ChildSpec) -> CurrentApp {
        CurrentApp(std::sync::Mutex::new(spec))
    }

    fn set(&self, spec: ChildSpec) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = spec;
    }
}

impl AppContext for CurrentApp {
    fn app_spec(&self) -> ChildSpec {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Like [`supervise`], with the cluster's configuration: waits up to
/// [`START_WAIT`] for it (then starts without it), sets it in the child's
/// environment (except the `fixed` names, which keep the platform's value),
/// and restarts the child gracefully each time it changes. `current` always
/// holds the spec the running child was started with. After a forwarded
/// stop signal (TERM, INT, QUIT) no restart happens: the child's end is
/// ours.
pub async fn supervise_with_config(
    spec: &ChildSpec,
    logs: Option<Arc<LogQueue>>,
    mut config: ConfigWatch,
    current: &CurrentApp,
    fixed: &[String],
) -> Result<ExitStatus, SpawnError> {
    reaper::start().map_err(SpawnError::Setup)?;
    let mut signals = ForwardedSignals::install().map_err(SpawnError::Setup)?;
    let mut env: Env = match tokio::time::timeout(START_WAIT, config.wait_for(Option::is_some))
        .await
    {
        Ok(Ok(got)) => got.clone().unwrap_or_default(),
        _ => {
            eprintln!(
                "cairn-entrypoint: no configuration from the cluster within {} s: starting the app without it",
                START_WAIT.as_secs()
            );
            Env::new()
        }
    };
    config.borrow_and_update();
    let mut watching = true;
    let mut stopping = false;
    // The configuration the app ran with before the last change: what it is
    // started with again when it cannot start with the new one.
    let mut previous: Option<Env> = None;
    let mut files = ConfigFiles::default();
    loop {
        files.write(&env, logs.as_deref());
        let started = with_env(spec, &env, fixed);
        let child = match Child::spawn(&started, logs.clone()) {
            Ok(child) => child,
            Err(e) => match previous.take() {
                Some(old) => {
                    report(
                        logs.as_deref(),
                        &format!("cannot start the app with the new configuration ({e}); it runs with the previous configuration until the configuration changes again"),
                    );
                    env = old;
                    continue;
                }
                None => return Err(e),
            },
        };
        current.set(started);
        let handle = child.handle();
        let ended = child.wait_with_output(OUTPUT_DRAIN_IDLE);
        tokio::pin!(ended);
        loop {
            tokio::select! {
                status = &mut ended => return Ok(status),
                sig = signals.recv() => {
                    stopping |= is_stop(sig);
                    handle.forward(sig);
                }
                changed = config.changed(), if watching && !stopping => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    let new = config.borrow_and_update().clone().unwrap_or_default();
                    if new == env {
                        continue;
                    }
                    // Checked before the running app is stopped: a
                    // configuration it cannot start with leaves it running.
                    if let Err(why) = fits(&with_env(spec, &new, fixed)) {
                        report(
                            logs.as_deref(),
                            &format!("the configuration changed, but the app cannot start with it: {why}; it keeps running with the previous configuration"),
                        );
                        continue;
                    }
                    previous = Some(std::mem::replace(&mut env, new));
                    break;
                }
            }
        }
        eprintln!("cairn-entrypoint: the configuration changed: restarting the app");
        let stop = handle.stop_gracefully(RESTART_GRACE);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                sig = signals.recv() => {
                    stopping |= is_stop(sig);
                    handle.forward(sig);
                }
            }
        }
        let status = ended.await;
        if stopping {
            return Ok(status);
        }
    }
}

/// Says `what` on the entrypoint's stderr and in the instance's logs (so
/// `cairn logs` shows it), prefixed `cairn-entrypoint:`.
fn report(logs: Option<&LogQueue>, what: &str) {
    let line = format!("cairn-entrypoint: {what}");
    eprintln!("{line}");
    if let Some(q) = logs {
        q.push(crate::logqueue::LogLine {
            stream: crate::logqueue::Stream::Stderr,
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            bytes: line.into_bytes(),
            truncated: false,
        });
    }
}

/// The kernel's limit on one argument or environment string
/// (`MAX_ARG_STRLEN`: 32 pages of 4 KiB).
const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Why the kernel would refuse to start `spec` (E2BIG): a string longer
/// than [`MAX_ARG_STRLEN`], or arguments and environment together past
/// `ARG_MAX` (as `sysconf` reports it, with a page of slack).
fn fits(spec: &ChildSpec) -> Result<(), String> {
    let env = child_env(spec);
    let strings = std::iter::once(spec.program.len())
        .chain(spec.args.iter().map(|a| a.len()))
        .chain(env.iter().map(|(k, v)| k.len() + 1 + v.len()));
    let mut total = 0usize;
    for len in strings {
        if len + 1 > MAX_ARG_STRLEN {
            return Err(format!(
                "one of its variables or arguments is {len} bytes, over the kernel's limit of {MAX_ARG_STRLEN} bytes for one string"
            ));
        }
        total += len + 1 + std::mem::size_of::<usize>();
    }
    let arg_max = nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(2 * 1024 * 1024);
    let room = arg_max.saturating_sub(4096);
    if total > room {
        return Err(format!(
            "its arguments and environment would take {total} bytes, over the {room} bytes the kernel allows (ARG_MAX {arg_max})"
        ));
    }
    Ok(())
}

/// The environment `spec`'s process gets: ours, with `spec.env` set on top
/// and `spec.env_remove` taken out.
fn child_env(spec: &ChildSpec) -> std::collections::BTreeMap<OsString, OsString> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (k, v) in &spec.env {
        env.insert(k.clone(), v.clone());
    }
    for k in &spec.env_remove {
        env.remove(k);
    }
    env
}

/// Signals after which the child's end is the entrypoint's end.
fn is_stop(sig: Signal) -> bool {
    matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)
}

/// `spec` with `env` set on top (the cluster's values win over inherited
/// ones, except for the `fixed` names). Cairn's reserved entries (the config
/// files) are not environment variables.
fn with_env(spec: &ChildSpec, env: &Env, fixed: &[String]) -> ChildSpec {
    let mut spec = spec.clone();
    spec.env.extend(
        env.iter()
            .filter(|(k, _)| !fixed.contains(k) && !cairn_protocol::config::is_reserved(k))
            .map(|(k, v)| (k.into(), v.into())),
    );
    spec
}

/// The config files (`config { file = { PATH = CONTENT } }`) this entrypoint wrote: a
/// relative path is under the working directory, an absolute one where it says. Each is
/// written (0600, through a temporary file and a rename) before the app starts and again
/// whenever the configuration changes; one the configuration no longer holds is removed. A
/// file that cannot be written is reported in the app's log, and the app starts anyway.
#[derive(Default)]
struct ConfigFiles {
    written: std::collections::BTreeSet<std::path::PathBuf>,
}

impl ConfigFiles {
    fn write(&mut self, env: &Env, logs: Option<&LogQueue>) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut now = std::collections::BTreeSet::new();
        for (name, content) in env {
            let Some(path) = cairn_protocol::config::file_path(name) else {
                continue;
            };
            let rel = std::path::Path::new(path);
            if rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                report(
                    logs,
                    &format!("config file {path:?} is not written: it holds `..`"),
                );
                continue;
            }
            let full = std::env::current_dir().unwrap_or_default().join(rel);
            let tmp = full.with_file_name(format!(
                ".{}.cairn-tmp",
                full.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            let result = (|| -> io::Result<()> {
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(content.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &full)
            })();
            match result {
                Ok(()) => {
                    now.insert(full);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    report(
                        logs,
                        &format!("cannot write config file {}: {e}", full.display()),
                    );
                }
            }
        }
        for gone in self.written.difference(&now) {
            let _ = std::fs::remove_file(gone);
        }
        self.written = now;
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
