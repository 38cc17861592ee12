//! Section 2: an idle entrypoint. Every probe wraps `sleep 3600` and they
//! all idle side by side over the same window: after they settle, VmRSS,
//! VmHWM (and RssAnon/RssFile, PSS) are read once, and CPU time is the
//! difference over the window, from `/proc/PID/stat` (utime+stime, clock
//! ticks) and from `/proc/PID/task/*/schedstat` (ns, much finer), with the
//! context switches (wake-ups) over the same window.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_tests::bench::procs::ticks_per_s;

use crate::procs::{self, ProcGuard, ProcSample};
use crate::EntrypointEnv;

#[derive(Debug, Clone)]
pub struct Opts {
    pub idle_secs: u64,
    pub settle_secs: u64,
}

/// One process watched over the idle window.
pub struct Probe {
    pub label: String,
    /// Which binary it runs (for the table).
    pub binary: String,
    pub pid: u32,
    /// An entrypoint (judged against the aim), or a process for contrast.
    pub entrypoint: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleRow {
    pub label: String,
    pub binary: String,
    pub pid: u32,
    pub entrypoint: bool,
    pub window_s: f64,
    pub start: ProcSample,
    pub end: ProcSample,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    /// CPU over the window from utime+stime ticks: % of one core.
    pub cpu_pct: f64,
    /// The same, as ms of CPU per minute.
    pub cpu_ms_per_min: f64,
    /// From schedstat (ns resolution): ms of CPU per minute.
    pub sched_ms_per_min: f64,
    pub wakeups_per_min: f64,
}

/// Hand-run entrypoints wrapping `sleep 3600`: connected (with `env`) or
/// local-only (without).
pub fn spawn_sleeper(
    bin: &Path,
    env: Option<&EntrypointEnv>,
    cwd: &Path,
    log: &Path,
) -> anyhow::Result<ProcGuard> {
    let mut cmd = crate::entrypoint_command(bin, env, false, cwd);
    let out = std::fs::File::create(log)?;
    cmd.args(["sleep", "3600"])
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(ProcGuard { child })
}

/// Waits until `pid` has a child running `sleep` (the entrypoint started
/// its app).
pub async fn wait_for_sleep(pid: u32, log: Option<&PathBuf>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if procs::children_of(pid)
            .iter()
            .any(|&c| procs::comm(c) == "sleep")
        {
            return Ok(());
        }
        if !cairn_tests::bench::procs::pid_alive(pid) || Instant::now() > deadline {
            bail!(
                "entrypoint {pid} did not start `sleep 3600`{}",
                log.map(|l| format!("; its output:\n{}", procs::tail(l, 20)))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits `settle`, samples every probe, waits the window, samples again.
pub async fn measure(probes: &[Probe], opts: &Opts) -> anyhow::Result<Vec<IdleRow>> {
    eprintln!(
        "idle: {} processes settle for {} s, then an idle window of {} s",
        probes.len(),
        opts.settle_secs,
        opts.idle_secs
    );
    tokio::time::sleep(Duration::from_secs(opts.settle_secs)).await;
    let take = |p: &Probe| {
        procs::sample(p.pid).with_context(|| format!("{} (pid {}) is gone", p.label, p.pid))
    };
    let t0 = Instant::now();
    let start: Vec<ProcSample> = probes.iter().map(take).collect::<Result<_, _>>()?;
    tokio::time::sleep(Duration::from_secs(opts.idle_secs)).await;
    let end: Vec<ProcSample> = probes.iter().map(take).collect::<Result<_, _>>()?;
    let window = t0.elapsed().as_secs_f64();
    let tps = ticks_per_s();
    let per_min = 60.0 / window;
    Ok(probes
        .iter()
        .zip(start.into_iter().zip(end))
        .map(|(p, (s, e))| {
            let ticks = e.cpu_ticks.saturating_sub(s.cpu_ticks) as f64;
            let cpu_s = ticks / tps;
            IdleRow {
                label: p.label.clone(),
                binary: p.binary.clone(),
                pid: p.pid,
                entrypoint: p.entrypoint,
                window_s: window,
                rss_mib: s.rss_kb.max(e.rss_kb) as f64 / 1024.0,
                hwm_mib: e.hwm_kb as f64 / 1024.0,
                cpu_pct: cpu_s / window * 100.0,
                cpu_ms_per_min: cpu_s * 1000.0 * per_min,
                sched_ms_per_min: e.sched_ns.saturating_sub(s.sched_ns) as f64 / 1e6 * per_min,
                wakeups_per_min: e.switches.saturating_sub(s.switches) as f64 * per_min,
                start: s,
                end: e,
            }
        })
        .collect())
}
