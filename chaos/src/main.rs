//! `cairn-chaos`: run the chaos harness (`run`) or remove what a crashed
//! run left behind (`cleanup`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_chaos::run::{self, RunConfig};
use cairn_chaos::schedule::{self, Kind};
use cairn_chaos::{net, WORK_PREFIX};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn-chaos",
    about = "Fault injection against a real Cairn cluster"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a cluster in network namespaces, run the workload under faults,
    /// heal, and check the history.
    Run(RunArgs),
    /// Rolling upgrade under load: a cluster of the previous release (built
    /// once by tests/upgrade/build-release.sh), upgraded node by node to this
    /// build, then one node rolled back; checks and figures as a chaos run.
    Upgrade(UpgradeArgs),
    /// Print the fault schedule of a seed without running anything.
    Schedule(ScheduleArgs),
    /// Remove namespaces, bridges, processes and work dirs of crashed runs.
    Cleanup {
        /// Only this lane (default: every lane — which also stops runs in
        /// progress on other lanes).
        #[arg(long)]
        lane: Option<u8>,
    },
}

#[derive(Debug, clap::Args)]
struct ScheduleArgs {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "short")]
    schedule: Kind,
    /// e.g. 60s, 5m (default: 60s short, 5m long)
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// One seed (default 1). See also --seeds.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds, A..B (B excluded) or A..=B; prints a summary table.
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<(u64, u64)>,
    #[arg(long, value_enum, default_value = "short")]
    schedule: Kind,
    /// How long faults are injected, e.g. 60s, 5m (default: 60s short, 5m long).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Client-side timeout of one operation (its outcome is then unknown).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    op_timeout: Duration,
    /// The node binary (default: `cairn-node` next to this binary, built
    /// first with `cargo build -p cairn-node` when run through cargo).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Plant a bug in the nodes (sets CAIRN_CHAOS_BUG=NAME for them; the
    /// node must have the hook), e.g. ack-before-commit, stale-read.
    #[arg(long)]
    bug: Option<String>,
    /// Keep the work dir (logs, history.json) of passing runs too.
    #[arg(long)]
    keep: bool,
    /// Slot of this machine to run in, 0–9: runs on different lanes use
    /// different namespaces, bridges and subnets, so they can go on side by
    /// side (one run per lane at a time).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..10))]
    lane: u8,
}

#[derive(Debug, clap::Args)]
struct UpgradeArgs {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The release to upgrade from (tests/fixtures/RELEASES).
    #[arg(long, default_value = "v0.1.0")]
    from: String,
    /// A folder holding that release's cairn, cairn-node and
    /// cairn-entrypoint (default: build them with tests/upgrade/build-release.sh).
    #[arg(long)]
    from_bin: Option<PathBuf>,
    /// This build's node binary (default: next to this binary).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    keys: usize,
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    op_timeout: Duration,
    /// Keep the work dir (logs, history.json) of a passing run too.
    #[arg(long)]
    keep: bool,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..10))]
    lane: u8,
}

fn upgrade_cmd(a: UpgradeArgs) -> anyhow::Result<bool> {
    net::preflight().map_err(|e| anyhow::anyhow!(e))?;
    let lane = net::Lane(a.lane);
    let _lock = RunLock::take(lane)?;
    for r in net::cleanup(Some(lane)) {
        println!("removed leftover {r}");
    }
    let previous = match a.from_bin {
        Some(p) => p,
        None => {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default();
            let out = std::process::Command::new(root.join("tests/upgrade/build-release.sh"))
                .arg(&a.from)
                .stderr(std::process::Stdio::inherit())
                .output()?;
            anyhow::ensure!(out.status.success(), "building {} failed", a.from);
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let node_bin = match a.node_bin {
        Some(p) => p,
        None => node_bin_here()?,
    };
    let cfg = cairn_chaos::upgrade::Config {
        lane,
        nodes: a.nodes,
        previous,
        head_node: node_bin,
        clients: a.clients,
        keys: a.keys,
        op_timeout: a.op_timeout,
        keep_dir: std::env::temp_dir(),
        keep: a.keep,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(cairn_chaos::upgrade::run(&cfg))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    Ok(Duration::from_secs_f64(v * mul))
}

fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("bad seed range {s:?} (A..B or A..=B)");
    if let Some((a, b)) = s.split_once("..=") {
        let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        return Ok((a, b + 1));
    }
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.cmd {
        Cmd::Cleanup { lane } => {
            for r in cleanup(lane.map(net::Lane)) {
                println!("removed {r}");
            }
            ExitCode::SUCCESS
        }
        Cmd::Schedule(a) => {
            let d = a.duration.unwrap_or(a.schedule.default_duration());
            for s in schedule::schedule(a.seed, a.nodes, d, a.schedule) {
                println!("{s}");
            }
            ExitCode::SUCCESS
        }
        Cmd::Upgrade(a) => match upgrade_cmd(a) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("cairn-chaos: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run(a) => match run_cmd(a) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("cairn-chaos: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn cleanup(lane: Option<net::Lane>) -> Vec<String> {
    let mut out = net::cleanup(lane);
    let prefix = match lane {
        Some(l) => cairn_chaos::work_prefix(l),
        None => WORK_PREFIX.to_string(),
    };
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix)
                && std::fs::remove_dir_all(e.path()).is_ok()
            {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

fn node_bin(a: &RunArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &a.node_bin {
        return Ok(p.clone());
    }
    node_bin_here()
}

/// `cairn-node` next to this binary (built first when run through cargo).
fn node_bin_here() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no directory for {}", exe.display()))?;
    // Under `cargo run`, build the node and the CLI (the CLI-like client
    // runs `cairn`) of this same tree first, in this binary's profile.
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "--workspace", "--bins"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status()?;
        anyhow::ensure!(st.success(), "cargo build --workspace --bins failed");
    }
    let p = dir.join("cairn-node");
    anyhow::ensure!(
        p.exists(),
        "{} not found: run `cargo build --workspace --bins` or pass --node-bin",
        p.display()
    );
    Ok(p)
}

/// One run at a time per lane: runs of a lane share its namespace and
/// bridge names (and each starts by cleaning them up). Held while the file
/// exists and names a live process.
struct RunLock(PathBuf);

impl RunLock {
    fn take(lane: net::Lane) -> anyhow::Result<RunLock> {
        let path = std::env::temp_dir().join(format!("cairn-chaos-lane{}.lock", lane.0));
        if let Ok(pid) = std::fs::read_to_string(&path) {
            let pid = pid.trim();
            if !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists() {
                anyhow::bail!(
                    "another cairn-chaos run (pid {pid}) is in progress on lane {} ({}); pick another --lane",
                    lane.0,
                    path.display()
                );
            }
        }
        std::fs::write(&path, std::process::id().to_string())?;
        Ok(RunLock(path))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run_cmd(a: RunArgs) -> anyhow::Result<bool> {
    net::preflight().map_err(|e| anyhow::anyhow!(e))?;
    let lane = net::Lane(a.lane);
    let _lock = RunLock::take(lane)?;
    anyhow::ensure!(a.nodes >= 1 && a.nodes <= 9, "--nodes must be 1..=9");
    let node_bin = node_bin(&a)?;
    let seeds = match (a.seed, a.seeds) {
        (_, Some((x, y))) => (x..y).collect::<Vec<_>>(),
        (Some(s), None) => vec![s],
        (None, None) => vec![1],
    };
    let rt = tokio::runtime::Runtime::new()?;
    let mut outcomes = Vec::new();
    for seed in &seeds {
        let cfg = RunConfig {
            lane,
            nodes: a.nodes,
            seed: *seed,
            duration: a.duration.unwrap_or(a.schedule.default_duration()),
            kind: a.schedule,
            clients: a.clients,
            keys: a.keys,
            op_timeout: a.op_timeout,
            node_bin: node_bin.clone(),
            bug: a.bug.clone(),
            keep_dir: std::env::temp_dir(),
            keep: a.keep,
        };
        let out = rt.block_on(async {
            tokio::select! {
                o = run::run(&cfg) => Some(o),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        match out {
            Some(o) => outcomes.push(o),
            None => {
                // Dropping the run's future killed its nodes and removed its
                // network; make sure, then stop.
                cleanup(Some(lane));
                anyhow::bail!("interrupted");
            }
        }
    }
    if outcomes.len() > 1 {
        println!();
        println!(
            "{:>6} {:>7} {:>7} {:>7} {:>5} {:>12} {:>9} {:>14} {:>8} {:>6} {:>6}  result",
            "seed",
            "ops",
            "acked",
            "unknown",
            "lost",
            "linearizable",
            "jobs ok",
            "cli ok/failed",
            "cli gap",
            "faults",
            "secs"
        );
        for o in &outcomes {
            let (ops, acked, unk, lost, lin) = match &o.report {
                Some(r) => (
                    r.ops.to_string(),
                    r.acked_writes.to_string(),
                    r.unknown_writes.to_string(),
                    r.lost.len().to_string(),
                    if r.gave_up {
                        "gave-up"
                    } else if r.linearizable {
                        "yes"
                    } else {
                        "NO"
                    }
                    .to_string(),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            };
            let jobs = match &o.jobs {
                Some(j) if j.violations.is_empty() => format!("{}", j.succeeded),
                Some(j) => format!("{}BAD", j.violations.len()),
                None => "-".into(),
            };
            let (cli, gap) = match &o.cli {
                Some(c) => (
                    format!(
                        "{}/{}{}",
                        c.commands - c.failed,
                        c.failed,
                        if c.violations.is_empty() { "" } else { "BAD" }
                    ),
                    format!("{:.1}s", c.longest_gap_ms as f64 / 1000.0),
                ),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{:>6} {:>7} {:>7} {:>7} {:>5} {:>12} {:>9} {:>14} {:>8} {:>6} {:>6.0}  {}",
                o.seed,
                ops,
                acked,
                unk,
                lost,
                lin,
                jobs,
                cli,
                gap,
                o.faults,
                o.elapsed.as_secs_f64(),
                if o.passed() { "pass" } else { "FAIL" }
            );
        }
    }
    let failed: Vec<u64> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.seed)
        .collect();
    if !failed.is_empty() {
        println!("FAILED seeds: {failed:?}");
    }
    Ok(failed.is_empty())
}
