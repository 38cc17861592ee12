//! The rolling-upgrade harness (issue 14): a cluster of the previous
//! release under load is upgraded node by node to this build, then one node
//! goes back to the previous release, and nothing may be lost on the way.
//!
//! 1. A cluster of the previous release's `cairn-node` (in network
//!    namespaces, as the chaos runs), and an app deployed by that release's
//!    `cairn up` on the process platform: two instances of the URL-service
//!    test app under that release's entrypoint.
//! 2. Load, all along: the register and durability workload
//!    ([`workload`], linearizability and no acknowledged write lost), jobs
//!    through a headless runner ([`jobs`], each job at most once, every
//!    queued job run), and HTTP requests through every node's ingress to the
//!    app ([`http_load`]).
//! 3. Each node in turn (followers first, the leader last): marked down for
//!    the HTTP load, stopped with SIGTERM, its binary replaced by this
//!    build's, started, and waited for until it is a voter whose log is at
//!    the leader's; then marked up. Then the first node upgraded goes back to
//!    the previous release the same way.
//! 4. Checks: the chaos checks above, plus every HTTP request sent to a node
//!    marked up answered 200, and at the end both instances are connected
//!    and still run the previous release's entrypoint.
//!
//! Figures: time per node replacement, the longest gap between two
//! acknowledged writes over the whole run, and HTTP requests served and
//! failed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_protocol::api::{ClientRequest, ClientResponse};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::checker;
use crate::cluster::Cluster;
use crate::jobs;
use crate::verify;
use crate::workload::{self, Outcome as OpOutcome};

/// The URL-service test app (the same file the end-to-end tests use).
const WEBAPP: &str = include_str!("../../tests/src/webapp.py");
/// The ingress port next to the chaos nodes' QUIC port 9701.
const INGRESS_PORT: u16 = 9703;
/// Load before the first replacement and between two of them.
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    pub lane: crate::net::Lane,
    pub nodes: usize,
    /// `cairn`, `cairn-node` and `cairn-entrypoint` of the previous release.
    pub previous: PathBuf,
    /// This build's `cairn-node`.
    pub head_node: PathBuf,
    pub clients: usize,
    pub keys: usize,
    pub op_timeout: Duration,
    pub keep_dir: PathBuf,
    pub keep: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    pub node: usize,
    /// When the node was stopped (µs since the load began).
    pub stopped_us: u64,
    /// The same on the wall clock (ms since the epoch, as job records).
    pub stopped_ms: u64,
    /// Whether the stopped binary was the previous release's (which does
    /// not let the jobs running through it end before it stops).
    pub stopped_previous: bool,
    /// From SIGTERM to the node a voter caught up with the leader.
    pub took_ms: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct HttpFigures {
    pub sent: u64,
    pub served: u64,
    /// Failed while their node was marked up for the whole request.
    pub failed: u64,
    /// Failed while their node was being replaced (not counted).
    pub excused: u64,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub steps: Vec<Step>,
    pub acked_writes: usize,
    pub longest_ack_gap_ms: u64,
    pub linearizable: bool,
    pub lost: Vec<String>,
    pub jobs_queued: usize,
    pub jobs_succeeded: usize,
    /// Jobs whose runner was lost as a node of the previous release stopped
    /// (that release does not let them end first).
    pub jobs_cut_by_previous: usize,
    pub http: HttpFigures,
    pub violations: Vec<String>,
}

pub async fn run(cfg: &Config) -> anyhow::Result<bool> {
    let work = tempfile::Builder::new()
        .prefix(&crate::work_prefix(cfg.lane))
        .tempdir()?;
    let res = inner(cfg, work.path()).await;
    let passed = match &res {
        Ok(o) => {
            print(o);
            o.violations.is_empty()
        }
        Err(e) => {
            println!("   error: {e:#}");
            false
        }
    };
    if !passed || cfg.keep {
        let dest = cfg.keep_dir.join(format!(
            "cairn-upgrade-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ));
        let src = work.keep();
        let kept = if std::fs::rename(&src, &dest).is_ok() {
            dest
        } else {
            src
        };
        println!("   logs kept in {}", kept.display());
    }
    println!("   {}", if passed { "PASS" } else { "FAILED" });
    Ok(passed)
}

fn print(o: &Outcome) {
    for s in &o.steps {
        println!(
            "   {:<34} n{}  {:>6.1}s",
            s.what,
            s.node + 1,
            s.took_ms as f64 / 1000.0
        );
    }
    println!(
        "   acked writes {}  longest gap between acknowledged writes {:.2}s  linearizable {}  lost {}",
        o.acked_writes,
        o.longest_ack_gap_ms as f64 / 1000.0,
        if o.linearizable { "yes" } else { "NO" },
        o.lost.len()
    );
    println!(
        "   jobs queued {}  succeeded {}  failed as a node of the previous release stopped under them {}",
        o.jobs_queued, o.jobs_succeeded, o.jobs_cut_by_previous
    );
    println!(
        "   http requests {}  served {}  failed {}  (excused while their node was being replaced: {})",
        o.http.sent, o.http.served, o.http.failed, o.http.excused
    );
    for v in &o.violations {
        println!("   VIOLATION {v}");
    }
}

async fn inner(cfg: &Config, work: &Path) -> anyhow::Result<Outcome> {
    let old_node = cfg.previous.join("cairn-node");
    let old_cairn = cfg.previous.join("cairn");
    let old_entrypoint = cfg.previous.join("cairn-entrypoint");
    for p in [&old_node, &old_cairn, &old_entrypoint, &cfg.head_node] {
        anyhow::ensure!(p.exists(), "{} not found", p.display());
    }
    let mut cluster = Cluster::start(cfg.lane, cfg.nodes, &old_node, work, None).await?;
    println!(
        "== upgrade: {} nodes of {} → {}",
        cfg.nodes,
        cfg.previous.display(),
        cfg.head_node.display()
    );

    // The app, deployed by the previous release's CLI.
    let home = work.join("cli-home");
    crate::cli_client::prepare(&crate::cli_client::Config {
        cairn: old_cairn.clone(),
        home: home.clone(),
        nodes: cluster.addrs(),
        ca: cluster.ca_fingerprint.clone(),
        token: cluster.user_token.clone(),
    })?;
    let app = work.join("app");
    std::fs::create_dir_all(&app)?;
    std::fs::write(app.join("cairn.hcl"), APP_HCL)?;
    std::fs::write(app.join("web.py"), WEBAPP)?;
    let up = std::process::Command::new(&old_cairn)
        .args(["-C"])
        .arg(&app)
        .arg("up")
        .env("CAIRN_HOME", &home)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(
        up.status.success(),
        "the previous release's `cairn up` failed:\n{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    println!("   app deployed by the previous release's `cairn up`");

    let wcfg = workload::Config {
        clients: cfg.clients,
        keys: cfg.keys,
        op_timeout: cfg.op_timeout,
        nodes: cluster.addrs(),
        ca: cluster.ca_fingerprint.clone(),
        token: cluster.user_token.clone(),
        seed: 14,
    };
    let ingresses: Vec<SocketAddr> = cluster
        .nodes
        .iter()
        .map(|n| SocketAddr::new(n.addr.ip(), INGRESS_PORT))
        .collect();
    let marks = Arc::new(Marks::new(cfg.nodes));
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(workload::run(wcfg.clone(), start, stop.clone()));
    let job_clients = tokio::spawn(jobs::run(wcfg.clone(), start, stop.clone()));
    let http = tokio::spawn(http_load(ingresses, marks.clone(), stop.clone()));

    let mut violations = Vec::new();
    let mut steps = Vec::new();
    tokio::time::sleep(SETTLE).await;
    let leader = cluster.leader().await.unwrap_or(0);
    let mut order: Vec<usize> = (0..cfg.nodes).filter(|i| *i != leader).collect();
    order.push(leader);
    for &i in &order {
        steps.push(
            replace(
                &mut cluster,
                &marks,
                i,
                &cfg.head_node,
                "upgraded to this build",
                (start, &old_node),
            )
            .await?,
        );
        tokio::time::sleep(SETTLE).await;
    }
    // Every voter runs this build: the cluster version must still be the
    // previous release's (the rollback window), so one node can go back.
    match upgrade_status(&cluster).await {
        Some(st) if st.cluster_version == 4 && st.next_version == Some(5) => {}
        other => violations.push(format!(
            "after the upgrade, expected cluster version 4 and next 5, got {other:?}"
        )),
    }
    let back = order[0];
    steps.push(
        replace(
            &mut cluster,
            &marks,
            back,
            &old_node,
            "rolled back to the previous release",
            (start, &old_node),
        )
        .await?,
    );
    tokio::time::sleep(SETTLE).await;
    // A voter runs the previous release again: finishing is refused, naming
    // it, and the cluster stays where that release can follow.
    match finish(&cluster).await {
        Err(e) if e.contains("0.1.0") => println!("   finishing refused as it must: {e}"),
        other => violations.push(format!(
            "finishing the upgrade with a voter on the previous release: expected a refusal naming it, got {other:?}"
        )),
    }
    match upgrade_status(&cluster).await {
        Some(st) if st.cluster_version == 4 => {}
        other => violations.push(format!(
            "after the rollback, expected cluster version 4, got {other:?}"
        )),
    }

    let liveness = jobs::liveness_job(&wcfg, Duration::from_secs(60)).await;
    // Jobs acknowledged before this point had at least 10 s to run.
    let due_us = start.elapsed().as_micros() as u64;
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let history = clients.await?;
    let job_history = job_clients.await?;
    let http = http.await?;
    if let Some(c) = cluster.crashed().first() {
        violations.push(format!("n{} exited by itself", c + 1));
    }
    let fin = workload::final_read(&wcfg, start, Instant::now() + Duration::from_secs(60))
        .await
        .ok_or_else(|| anyhow::anyhow!("the final read did not succeed within 60 s"))?;
    let jobs_fin = jobs::final_read(&wcfg, Instant::now() + Duration::from_secs(60))
        .await
        .ok_or_else(|| anyhow::anyhow!("the final jobs read did not succeed within 60 s"))?;
    let mut jobs_report = jobs::check(&job_history, &jobs_fin);
    if let Err(e) = liveness {
        jobs_report.violations.push(e);
    }
    violations.extend(jobs_report.violations.iter().map(|v| format!("jobs: {v}")));
    // Every job queued during the upgrade ran, and succeeded, except one whose
    // runner was lost just as a node of the previous release (which cannot
    // wait for the jobs running through it) stopped.
    let started: std::collections::BTreeSet<_> =
        job_history.started.iter().map(|s| s.job).collect();
    let mut not_run = Vec::new();
    let mut cut_by_previous = 0usize;
    for q in job_history
        .queued
        .iter()
        .filter(|q| q.outcome == OpOutcome::Ok && q.complete_us < due_us)
    {
        let Some(id) = q.job else { continue };
        let state = jobs_fin.jobs.get(&id);
        if state == Some(&cairn_protocol::types::JobState::Success) {
            continue;
        }
        let job = inspect_job(&cluster, id).await;
        let lost = job
            .as_ref()
            .and_then(|j| j.error.as_deref())
            .is_some_and(|e| {
                e.contains("lost")
                    || e.contains("previous leader")
                    || e.contains("no longer connected")
            });
        let at = job.as_ref().and_then(|j| j.completed_ms).unwrap_or(0);
        let cut = lost
            && steps.iter().any(|st| {
                st.stopped_previous && st.stopped_ms <= at && at <= st.stopped_ms + 15_000
            });
        if cut {
            cut_by_previous += 1;
        } else {
            not_run.push(format!(
                "job {id} ({state:?}, started: {}, error: {:?})",
                started.contains(&id),
                job.and_then(|j| j.error)
            ));
        }
    }
    if !not_run.is_empty() {
        violations.push(format!(
            "{} jobs queued during the upgrade did not run to success: {}",
            not_run.len(),
            not_run
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let longest_ack_gap_ms = longest_ack_gap(&history, start.elapsed());
    let keys: Vec<String> = (0..cfg.keys).map(workload::key_name).collect();
    let acked = history
        .iter()
        .filter(|o| o.outcome == OpOutcome::Ok && !matches!(o.kind, workload::OpKind::Read { .. }))
        .count();
    let hist = history.clone();
    let report = tokio::task::spawn_blocking(move || {
        verify::verify(&hist, &fin, &keys, checker::DEFAULT_BUDGET)
    })
    .await?;
    if !report.passed() {
        violations.push(format!(
            "registers: linearizable {}, gave up {}, lost {:?}",
            report.linearizable, report.gave_up, report.lost
        ));
    }
    if http.failed > 0 {
        violations.push(format!(
            "{} HTTP requests failed while their node was up: {:?}",
            http.failed,
            http.failures.iter().take(5).collect::<Vec<_>>()
        ));
    }
    if http.served == 0 {
        violations.push("no HTTP request was served".into());
    }
    match instances_connected(&cluster).await {
        Some(2) => {}
        other => violations.push(format!(
            "expected the app's 2 instances connected at the end, found {other:?}"
        )),
    }
    let old_running = running_copies_of(&old_entrypoint);
    if old_running != 2 {
        violations.push(format!(
            "expected 2 entrypoints of the previous release still running, found {old_running}"
        ));
    }
    std::fs::write(
        work.join("history.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "steps": steps,
            "ops": history,
            "jobs": job_history,
            "http": http,
        }))?,
    )?;
    // The app's instances belong to the CLI's process platform: stop them.
    let _ = std::process::Command::new(&old_cairn)
        .args(["-C"])
        .arg(&app)
        .arg("destroy")
        .env("CAIRN_HOME", &home)
        .stdin(std::process::Stdio::null())
        .output();
    cluster.stop_all();
    Ok(Outcome {
        steps,
        acked_writes: acked,
        longest_ack_gap_ms,
        linearizable: report.linearizable,
        lost: report.lost,
        jobs_queued: jobs_report.queued,
        jobs_succeeded: jobs_report.succeeded,
        jobs_cut_by_previous: cut_by_previous,
        http,
        violations,
    })
}

const APP_HCL: &str = r#"project = "shop"

app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["python3", "web.py"]
      count   = 2
    }
  }
  release {
    use "process" {}
  }
}
"#;

/// Which nodes the HTTP load may use, and a counter per node that moves
/// whenever its mark changes (a request that saw it move is excused).
struct Marks {
    up: Vec<AtomicBool>,
    epoch: Vec<AtomicU64>,
}

impl Marks {
    fn new(n: usize) -> Marks {
        Marks {
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
            epoch: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn set(&self, i: usize, up: bool) {
        self.up[i].store(up, Ordering::SeqCst);
        self.epoch[i].fetch_add(1, Ordering::SeqCst);
    }
}

async fn replace(
    cluster: &mut Cluster,
    marks: &Marks,
    i: usize,
    bin: &Path,
    what: &str,
    (start, previous): (Instant, &Path),
) -> anyhow::Result<Step> {
    marks.set(i, false);
    // Requests already sent to it finish first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped_previous = cluster.nodes[i].bin.as_deref().unwrap_or(previous) == previous;
    let stopped_us = start.elapsed().as_micros() as u64;
    let stopped_ms = cairn_protocol::now_ms();
    let began = Instant::now();
    cluster.replace_binary(i, bin).await?;
    cluster.wait_healthy(i, cluster.nodes.len(), 10).await?;
    let took = began.elapsed();
    marks.set(i, true);
    println!("   n{} {what} in {:.1}s", i + 1, took.as_secs_f64());
    Ok(Step {
        what: what.to_string(),
        node: i,
        stopped_us,
        stopped_ms,
        stopped_previous,
        took_ms: took.as_millis() as u64,
    })
}

/// Requests to `web.localhost` through the ingresses of the nodes marked
/// up, in turn, one at a time, until `stop`.
async fn http_load(
    ingresses: Vec<SocketAddr>,
    marks: Arc<Marks>,
    stop: Arc<AtomicBool>,
) -> HttpFigures {
    let mut f = HttpFigures::default();
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        next = (next + 1) % ingresses.len();
        if !marks.up[next].load(Ordering::SeqCst) {
            continue;
        }
        let epoch = marks.epoch[next].load(Ordering::SeqCst);
        let r = tokio::time::timeout(Duration::from_secs(10), get(ingresses[next])).await;
        let moved = marks.epoch[next].load(Ordering::SeqCst) != epoch;
        f.sent += 1;
        match r {
            Ok(Ok(200)) => f.served += 1,
            _ if moved => f.excused += 1,
            other => {
                f.failed += 1;
                if f.failures.len() < 20 {
                    f.failures.push(format!("n{}: {other:?}", next + 1));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f
}

/// One `GET /` for `web.localhost`; its status.
async fn get(addr: SocketAddr) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "no status in {:?}",
                text.chars().take(80).collect::<String>()
            )
        })
}

/// The longest time between two acknowledged writes (from the start to
/// the first, and from the last to the end, included).
fn longest_ack_gap(history: &[workload::Op], end: Duration) -> u64 {
    let mut acks: Vec<u64> = history
        .iter()
        .filter(|o| o.outcome == OpOutcome::Ok && !matches!(o.kind, workload::OpKind::Read { .. }))
        .map(|o| o.complete_us)
        .collect();
    acks.sort_unstable();
    let mut last = 0u64;
    let mut longest = 0u64;
    for a in acks.iter().copied().chain([end.as_micros() as u64]) {
        longest = longest.max(a.saturating_sub(last));
        last = a;
    }
    longest / 1000
}

/// The cluster's upgrade status, from the first node that answers it.
async fn upgrade_status(cluster: &Cluster) -> Option<cairn_protocol::api::UpgradeStatus> {
    cluster
        .ask(5, &ClientRequest::Upgrade { finish: false }, |r| match r {
            Ok(ClientResponse::Upgrade(st)) => Some(st),
            _ => None,
        })
        .await
}

/// `cairn server upgrade --finish`, through the first node that speaks
/// protocol 5: the new cluster version, or the refusal.
async fn finish(cluster: &Cluster) -> Result<u32, String> {
    cluster
        .ask(5, &ClientRequest::Upgrade { finish: true }, |r| {
            Some(match r {
                Ok(ClientResponse::Upgrade(st)) => Ok(st.cluster_version),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            })
        })
        .await
        .unwrap_or_else(|| Err("no node speaks protocol 5".into()))
}

/// Job `id` as the cluster records it.
async fn inspect_job(cluster: &Cluster, id: u64) -> Option<cairn_protocol::types::Job> {
    cluster
        .ask(0, &ClientRequest::InspectJob { id }, |r| match r {
            Ok(ClientResponse::Job(j)) => Some(*j),
            _ => None,
        })
        .await
}

/// Instances of the app connected now (waiting up to 30 s for both).
async fn instances_connected(cluster: &Cluster) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = cluster
            .ask(0, &ClientRequest::ListInstances, |r| match r {
                Ok(ClientResponse::Instances(list)) => Some(
                    list.iter()
                        .filter(|x| x.state == cairn_protocol::types::InstanceState::Connected)
                        .count(),
                ),
                _ => None,
            })
            .await;
        if n == Some(2) || (n.is_some() && Instant::now() > deadline) {
            return n;
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Processes whose program is `program` or a byte-for-byte copy of it (the
/// process platform runs a copy of the entrypoint).
fn running_copies_of(program: &Path) -> usize {
    let Ok(want) = std::fs::read(program) else {
        return 0;
    };
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.filter_map(|e| {
        let exe = e.ok()?.path().join("exe");
        let len = std::fs::metadata(&exe).ok()?.len();
        (len == want.len() as u64).then_some(exe)
    })
    .filter(|exe| std::fs::read(exe).is_ok_and(|b| b == want))
    .count()
}
