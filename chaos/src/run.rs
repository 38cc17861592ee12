//! One chaos run: cluster up, workload and faults, heal, final read, check.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checker;
use crate::cli_client::{self, CliReport};
use crate::cluster::Cluster;
use crate::jobs::{self, JobsReport};
use crate::schedule::{self, Fault, Kind, Step, Target};
use crate::verify::{self, Report};
use crate::workload;

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Which slot of this machine (names, subnet) the run uses.
    pub lane: crate::net::Lane,
    pub nodes: usize,
    pub seed: u64,
    pub duration: Duration,
    pub kind: Kind,
    pub clients: usize,
    pub keys: usize,
    pub op_timeout: Duration,
    pub node_bin: PathBuf,
    pub bug: Option<String>,
    /// Where failed runs keep their logs and history.
    pub keep_dir: PathBuf,
    /// Keep the work dir even when the run passes.
    pub keep: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub seed: u64,
    pub faults: usize,
    pub elapsed: Duration,
    /// `None` when the run could not get as far as checking.
    pub report: Option<Report>,
    pub error: Option<String>,
    pub kept: Option<PathBuf>,
    /// Nodes that exited without being killed by the harness.
    pub crashed: Vec<usize>,
    /// The jobs checks (`None` when the run did not get that far).
    pub jobs: Option<JobsReport>,
    /// The CLI-like client's figures and checks (`None` likewise).
    pub cli: Option<CliReport>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.crashed.is_empty()
            && self.report.as_ref().is_some_and(Report::passed)
            && self.jobs.as_ref().is_some_and(|j| j.violations.is_empty())
            && self.cli.as_ref().is_some_and(|c| c.violations.is_empty())
    }
}

pub fn replay_command(cfg: &RunConfig) -> String {
    let mut s = format!(
        "cargo run -p cairn-chaos -- run --nodes {} --seed {} --schedule {} --duration {}s",
        cfg.nodes,
        cfg.seed,
        match cfg.kind {
            Kind::Short => "short",
            Kind::Long => "long",
        },
        cfg.duration.as_secs()
    );
    if let Some(b) = &cfg.bug {
        s.push_str(&format!(" --bug {b}"));
    }
    if cfg.lane.0 != 0 {
        s.push_str(&format!(" --lane {}", cfg.lane.0));
    }
    s
}

pub async fn run(cfg: &RunConfig) -> Outcome {
    let begun = Instant::now();
    let steps = schedule::schedule(cfg.seed, cfg.nodes, cfg.duration, cfg.kind);
    println!(
        "== seed {} — {} nodes, {:?} schedule, {}s, {} faults",
        cfg.seed,
        cfg.nodes,
        cfg.kind,
        cfg.duration.as_secs(),
        steps.len()
    );
    for s in &steps {
        println!("   {s}");
    }
    let work = match tempfile::Builder::new()
        .prefix(&crate::work_prefix(cfg.lane))
        .tempdir()
    {
        Ok(w) => w,
        Err(e) => {
            return Outcome {
                seed: cfg.seed,
                faults: steps.len(),
                elapsed: begun.elapsed(),
                report: None,
                error: Some(format!("tempdir: {e}")),
                kept: None,
                crashed: vec![],
                jobs: None,
                cli: None,
            }
        }
    };
    let (report, error, crashed, jobs, cli) = match inner(cfg, &steps, work.path()).await {
        Ok((r, crashed, jobs, cli)) => (Some(r), None, crashed, Some(jobs), Some(cli)),
        Err(e) => (None, Some(format!("{e:#}")), vec![], None, None),
    };
    let mut out = Outcome {
        seed: cfg.seed,
        faults: steps.len(),
        elapsed: begun.elapsed(),
        report,
        error,
        kept: None,
        crashed,
        jobs,
        cli,
    };
    if !out.passed() || cfg.keep {
        let dest = cfg.keep_dir.join(format!(
            "cairn-chaos-seed-{}-{}",
            cfg.seed,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ));
        let src = work.keep();
        if std::fs::rename(&src, &dest).is_ok() {
            out.kept = Some(dest);
        } else {
            out.kept = Some(src);
        }
    }
    print_outcome(cfg, &out);
    out
}

fn print_outcome(cfg: &RunConfig, out: &Outcome) {
    if let Some(r) = &out.report {
        println!(
            "   ops {}  acked writes {}  unknown {}  reads {}  lost {}  linearizable {}",
            r.ops,
            r.acked_writes,
            r.unknown_writes,
            r.ok_reads,
            r.lost.len(),
            if r.gave_up {
                "gave-up"
            } else if r.linearizable {
                "yes"
            } else {
                "NO"
            }
        );
        for l in r.lost.iter().take(10) {
            println!("   LOST {l}");
        }
        for (k, v) in &r.keys {
            if !v.starts_with("linearizable") {
                println!("   {k}: {v}");
            }
        }
    }
    if let Some(j) = &out.jobs {
        println!(
            "   jobs queued {}  started {}  succeeded {}  violations {}",
            j.queued,
            j.started,
            j.succeeded,
            j.violations.len()
        );
        for v in j.violations.iter().take(10) {
            println!("   JOBS {v}");
        }
    }
    if let Some(c) = &out.cli {
        println!(
            "   cli commands {}  failed {} ({} while no majority was up)  longest gap without success {:.1}s  violations {}",
            c.commands,
            c.failed,
            c.excused,
            c.longest_gap_ms as f64 / 1000.0,
            c.violations.len()
        );
        for f in &c.per_fault {
            println!(
                "   cli   {:<28} commands {:>3}  failed {:>2}  longest gap {:>5.1}s",
                f.fault,
                f.commands,
                f.failed,
                f.longest_gap_ms as f64 / 1000.0
            );
        }
        for v in c.violations.iter().take(10) {
            println!("   CLI {v}");
        }
    }
    for c in &out.crashed {
        println!("   node n{} exited by itself (a crash)", c + 1);
    }
    if let Some(e) = &out.error {
        println!("   error: {e}");
    }
    if out.passed() {
        println!(
            "   PASS seed {} in {:.0}s",
            out.seed,
            out.elapsed.as_secs_f64()
        );
    } else {
        println!(
            "   FAILED seed {} — replay: {}",
            out.seed,
            replay_command(cfg)
        );
    }
    if let Some(k) = &out.kept {
        println!("   logs and history kept in {}", k.display());
    }
}

async fn inner(
    cfg: &RunConfig,
    steps: &[Step],
    work: &Path,
) -> anyhow::Result<(Report, Vec<usize>, JobsReport, CliReport)> {
    let mut cluster =
        Cluster::start(cfg.lane, cfg.nodes, &cfg.node_bin, work, cfg.bug.clone()).await?;
    println!(
        "   cluster up: {} (netem {})",
        cluster
            .nodes
            .iter()
            .map(|n| format!("n{}={}", n.idx + 1, n.addr))
            .collect::<Vec<_>>()
            .join(" "),
        if cluster.net.netem {
            "yes"
        } else {
            "no: delay faults use tbf throttling"
        }
    );
    let wcfg = workload::Config {
        clients: cfg.clients,
        keys: cfg.keys,
        op_timeout: cfg.op_timeout,
        nodes: cluster.addrs(),
        ca: cluster.ca_fingerprint.clone(),
        token: cluster.user_token.clone(),
        seed: cfg.seed,
    };
    let ccfg = cli_client::Config {
        cairn: cli_client::cairn_bin(&cfg.node_bin).ok_or_else(|| {
            anyhow::anyhow!(
                "no `cairn` next to {} (build it: cargo build --workspace --bins)",
                cfg.node_bin.display()
            )
        })?,
        home: work.join("cli-home"),
        nodes: cluster.addrs(),
        ca: cluster.ca_fingerprint.clone(),
        token: cluster.user_token.clone(),
    };
    cli_client::prepare(&ccfg)?;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(workload::run(wcfg.clone(), start, stop.clone()));
    let job_clients = tokio::spawn(jobs::run(wcfg.clone(), start, stop.clone()));
    let cli_commands = tokio::spawn(cli_client::run(ccfg.clone(), start, stop.clone()));
    let us = || start.elapsed().as_micros() as u64;

    let mut fault_log = Vec::new();
    let mut windows = Vec::new();
    for step in steps {
        tokio::time::sleep_until((start + step.at).into()).await;
        let from_us = us();
        let applied = apply(&mut cluster, &step.fault).await;
        let line = format!(
            "t={:.1}s {} → {applied}",
            start.elapsed().as_secs_f64(),
            step.fault
        );
        println!("   {line}");
        fault_log.push(line);
        tokio::time::sleep(step.hold).await;
        cluster.heal_all().await?;
        windows.push(cli_client::Window {
            fault: format!("t={:.1}s {}", from_us as f64 / 1e6, step.fault),
            from_us,
            healed_us: us(),
            no_majority: leaves_no_majority(&step.fault, cfg.nodes),
        });
    }
    tokio::time::sleep_until((start + cfg.duration).into()).await;
    cluster.heal_all().await?;
    // A few seconds of fault-free load; one more job must then run (the
    // runner found a node that offers it jobs); then stop the clients. The
    // final reads start after every client operation has completed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let liveness = jobs::liveness_job(&wcfg, Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    let history = clients.await?;
    let job_history = job_clients.await?;
    let cli_history = cli_commands.await?;
    let end_us = us();
    let crashed = cluster.crashed();
    let fin = workload::final_read(&wcfg, start, Instant::now() + Duration::from_secs(60))
        .await
        .ok_or_else(|| anyhow::anyhow!("the final read did not succeed within 60 s of healing"))?;
    let jobs_fin = jobs::final_read(&wcfg, Instant::now() + Duration::from_secs(60))
        .await
        .ok_or_else(|| anyhow::anyhow!("the final jobs read did not succeed within 60 s"))?;
    let cli_fin = cli_client::final_read(&ccfg, Instant::now() + Duration::from_secs(60))
        .await
        .ok_or_else(|| anyhow::anyhow!("the CLI's final read did not succeed within 60 s"))?;
    let cli_report = cli_client::check(&cli_history, &windows, &cli_fin, end_us);
    std::fs::write(
        work.join("history.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "seed": cfg.seed,
            "faults": fault_log,
            "ops": history,
            "final": fin,
            "jobs": job_history,
            "jobs_final": jobs_fin,
            "cli": cli_history,
            "cli_report": cli_report,
        }))?,
    )?;
    let mut jobs_report = jobs::check(&job_history, &jobs_fin);
    if let Err(e) = liveness {
        jobs_report.violations.push(e);
    }
    let keys: Vec<String> = (0..cfg.keys).map(workload::key_name).collect();
    let report = tokio::task::spawn_blocking(move || {
        verify::verify(&history, &fin, &keys, checker::DEFAULT_BUDGET)
    })
    .await?;
    cluster.stop_all();
    Ok((report, crashed, jobs_report, cli_report))
}

/// Whether `fault` leaves fewer than a majority of the `n` nodes up (so
/// nothing can be written until it heals).
fn leaves_no_majority(fault: &Fault, n: usize) -> bool {
    let down = match fault {
        Fault::Kill(_) | Fault::Pause(_) => 1,
        Fault::KillSeveral { nodes } => nodes.len(),
        // A minority is cut off: the rest is a majority.
        Fault::IsolateLeader | Fault::Partition { .. } => 0,
        Fault::Loss { .. } | Fault::Delay { .. } => 0,
    };
    down * 2 >= n
}

/// Resolve a target to a node index (the leader, or a fixed node).
async fn resolve(cluster: &Cluster, t: Target) -> Option<usize> {
    match t {
        Target::Node(i) => Some(i),
        Target::Leader => cluster.leader().await,
    }
}

/// Apply one fault; returns what was done (with resolved targets).
async fn apply(cluster: &mut Cluster, fault: &Fault) -> String {
    match fault {
        Fault::Kill(t) => match resolve(cluster, *t).await {
            Some(i) => {
                cluster.kill(i);
                format!("killed n{}", i + 1)
            }
            None => "no leader to kill".into(),
        },
        Fault::KillSeveral { nodes } => {
            for &i in nodes {
                cluster.kill(i);
            }
            let s: Vec<String> = nodes.iter().map(|i| format!("n{}", i + 1)).collect();
            format!("killed {}", s.join(","))
        }
        Fault::Pause(t) => match resolve(cluster, *t).await {
            Some(i) => {
                cluster.pause(i);
                format!("stopped n{}", i + 1)
            }
            None => "no leader to stop".into(),
        },
        Fault::IsolateLeader => match cluster.leader().await {
            Some(i) => match cluster.net.partition(&[i]) {
                Ok(()) => format!("n{} isolated", i + 1),
                Err(e) => format!("partition failed: {e}"),
            },
            None => "no leader to isolate".into(),
        },
        Fault::Partition { side } => match cluster.net.partition(side) {
            Ok(()) => "partitioned".into(),
            Err(e) => format!("partition failed: {e}"),
        },
        Fault::Loss { node, pct } => match resolve(cluster, *node).await {
            Some(i) => match cluster.net.loss(i, *pct) {
                Ok(()) => format!("n{} loses {pct}%", i + 1),
                Err(e) => format!("loss failed: {e}"),
            },
            None => "no leader".into(),
        },
        Fault::Delay { node, ms } => match resolve(cluster, *node).await {
            Some(i) => match cluster.net.delay(i, *ms) {
                Ok(()) => format!("n{} delayed {ms}ms", i + 1),
                Err(e) => format!("delay failed: {e}"),
            },
            None => "no leader".into(),
        },
    }
}
