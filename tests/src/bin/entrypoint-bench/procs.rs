//! Process plumbing: the `cairn-node` under test, a `cairn` CLI with its own
//! `CAIRN_HOME` (contexts, `up`, `destroy`), guards that stop what they
//! started (by pid, never by name), commands with a deadline, and what
//! `/proc` says about a process (memory, CPU time, wake-ups).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
pub use cairn_tests::bench::node::BenchNode as NodeProc;
use cairn_tests::bench::procs::kill_under;
pub use cairn_tests::bench::procs::{tail, terminate};

/// How long one ordinary CLI command may take.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `cairn up` may take.
const UP_TIMEOUT: Duration = Duration::from_secs(180);

/// A long-lived child this bench started (an entrypoint, a follower):
/// dropping it sends SIGTERM, then SIGKILL after 5 s, and reaps it.
pub struct ProcGuard {
    pub child: Child,
}

impl ProcGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        terminate(self.child.id());
        let _ = self.child.wait();
    }
}

/// The `cairn` CLI with a `CAIRN_HOME` of its own and a context on the
/// bench's node. Dropping it runs `cairn destroy` for every app it deployed
/// and then kills any process that still mentions the home directory
/// (supervisors, entrypoints, apps).
pub struct Cli {
    pub home: PathBuf,
    cairn: PathBuf,
    /// `CAIRN_ENTRYPOINT_BIN` for deploys.
    entrypoint: PathBuf,
    deployed: Vec<PathBuf>,
}

impl Cli {
    pub fn new(
        home: PathBuf,
        cairn: &Path,
        entrypoint: &Path,
        node: &NodeProc,
    ) -> anyhow::Result<Cli> {
        std::fs::create_dir_all(&home)?;
        let cli = Cli {
            home,
            cairn: cairn.to_path_buf(),
            entrypoint: entrypoint.to_path_buf(),
            deployed: Vec::new(),
        };
        cli.ok(
            &[
                "context",
                "create",
                "bench",
                "--address",
                &node.ready.addr,
                "--ca-fingerprint",
                &node.ready.ca_fingerprint,
                "--token",
                &node.token,
                "--use",
            ],
            CMD_TIMEOUT,
        )?;
        Ok(cli)
    }

    /// `cairn ARGS…` with this home (not run).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cairn);
        c.env("CAIRN_HOME", &self.home)
            .env("NO_COLOR", "1")
            .env("CAIRN_ENTRYPOINT_BIN", &self.entrypoint)
            .env_remove("CAIRN_CONTEXT")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// `cairn ARGS…`, which must succeed within `timeout`: its stdout.
    pub fn ok(&self, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let out = output_within(self.command(args), timeout)?;
        if !out.status.success() {
            bail!(
                "cairn {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                out.stdout,
                out.stderr
            );
        }
        Ok(out.stdout)
    }

    /// `cairn -C DIR up`; `destroy` runs for it when the CLI drops.
    pub fn up(&mut self, app_dir: &Path) -> anyhow::Result<Duration> {
        let dir = app_dir.to_string_lossy().into_owned();
        self.deployed.push(app_dir.to_path_buf());
        let t0 = Instant::now();
        self.ok(&["-C", &dir, "up"], UP_TIMEOUT)?;
        Ok(t0.elapsed())
    }

    /// `cairn instance list --json`: the connected instances of `app`, as
    /// (instance id, entrypoint pid).
    pub fn connected_instances(&self, app: &str) -> anyhow::Result<Vec<(String, u32)>> {
        let text = self.ok(&["instance", "list", "--json"], CMD_TIMEOUT)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("instance list: {text}"))?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["app"] == app && i["state"] == "connected")
            .map(|i| {
                (
                    i["instance"].as_str().unwrap_or_default().to_string(),
                    i["pid"].as_u64().unwrap_or_default() as u32,
                )
            })
            .collect())
    }

    /// Polls `cairn instance list` until an instance of `app` whose
    /// entrypoint pid satisfies `pid_ok` is connected; its id and pid.
    pub async fn wait_connected(
        &self,
        app: &str,
        pid_ok: impl Fn(u32) -> bool,
        within: Duration,
    ) -> anyhow::Result<(String, u32)> {
        let deadline = Instant::now() + within;
        loop {
            let found = tokio::task::block_in_place(|| self.connected_instances(app))?
                .into_iter()
                .find(|(_, pid)| pid_ok(*pid));
            if let Some(f) = found {
                return Ok(f);
            }
            if Instant::now() > deadline {
                bail!(
                    "`cairn instance list` shows no connected instance of {app} after {} s",
                    within.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Where the process platform logs instance `i` of the newest
    /// deployment of `app` (the supervisor's stdout and stderr, so the
    /// entrypoint's pass-through).
    pub fn instance_log(&self, app: &str, seq: u64, i: u32) -> PathBuf {
        self.home
            .join(format!("data/runner/deployments/{app}/v{seq}.run"))
            .join(format!("instance-{i}.log"))
    }

    fn cleanup(&mut self) {
        for dir in std::mem::take(&mut self.deployed) {
            let dir = dir.to_string_lossy().into_owned();
            if let Err(e) = self.ok(&["-C", &dir, "destroy"], CMD_TIMEOUT) {
                eprintln!("entrypoint-bench: cleanup: {e:#}");
            }
        }
        let left = kill_under(&self.home);
        if left > 0 {
            eprintln!("entrypoint-bench: cleanup: killed {left} leftover process(es)");
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Output of a command run to completion.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with its stdout and stderr captured, killing it after
/// `timeout`.
pub fn output_within(mut cmd: Command, timeout: Duration) -> anyhow::Result<Output> {
    use std::io::Read as _;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let reader = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(child.stdout.take().map(|s| Box::new(s) as _));
    let err = reader(child.stderr.take().map(|s| Box::new(s) as _));
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if t0.elapsed() > timeout {
            terminate(child.id());
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// What `/proc` says about one process at one moment.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcSample {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub rss_anon_kb: u64,
    pub rss_file_kb: u64,
    /// Proportional set size (shared pages divided among their users).
    pub pss_kb: u64,
    pub threads: u64,
    /// utime + stime of the whole process, in clock ticks.
    pub cpu_ticks: u64,
    /// Σ over live threads of the time on a CPU (`schedstat`), ns.
    pub sched_ns: u64,
    /// Σ over live threads of voluntary + involuntary context switches:
    /// how often it woke up.
    pub switches: u64,
}

/// Reads `/proc/PID/…`; `None` when the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let pss_kb = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .map(|t| kb(&t, "Pss:"))
        .unwrap_or(0);
    let mut sched_ns = 0;
    let mut switches = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                sched_ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            if let Ok(s) = std::fs::read_to_string(t.path().join("status")) {
                switches +=
                    kb(&s, "voluntary_ctxt_switches:") + kb(&s, "nonvoluntary_ctxt_switches:");
            }
        }
    }
    Some(ProcSample {
        rss_kb: kb(&status, "VmRSS:"),
        hwm_kb: kb(&status, "VmHWM:"),
        rss_anon_kb: kb(&status, "RssAnon:"),
        rss_file_kb: kb(&status, "RssFile:") + kb(&status, "RssShmem:"),
        pss_kb,
        threads: kb(&status, "Threads:"),
        cpu_ticks: cairn_tests::bench::procs::cpu_ticks(pid),
        sched_ns,
        switches,
    })
}

/// The parent of `pid` (0 if unknown).
pub fn parent_of(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The children of `pid` (its main thread's).
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The command name of `pid` (`comm`).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Nanoseconds since the Unix epoch.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
