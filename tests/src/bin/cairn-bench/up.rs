//! Section 2: `cairn up` wall time on a copy of examples/hello, and how much
//! of it is Cairn's own overhead (wall time minus the plugin work that the
//! operations recorded in the catalog account for).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc::{self, Session};
use cairn_protocol::types::{OpKind, OpStatus, Operation};

use crate::procs::{self, NodeProc};
use crate::stats::{median, min_max};

const UP_TIMEOUT: Duration = Duration::from_secs(180);
const CMD_TIMEOUT: Duration = Duration::from_secs(60);
const KINDS: [OpKind; 4] = [
    OpKind::Build,
    OpKind::Artifact,
    OpKind::Deployment,
    OpKind::Release,
];

#[derive(Debug, Clone)]
pub struct Opts {
    pub reps: usize,
    pub cold_reps: usize,
}

/// One timed `cairn up`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpRun {
    pub wall_ms: f64,
    /// Σ (completed_ms − started_ms) over the operations this up recorded.
    pub plugin_ms: f64,
    /// wall − plugin.
    pub overhead_ms: f64,
    /// From spawning `cairn up` to the first operation's start.
    pub before_first_op_ms: f64,
    /// Time inside [first start, last completion] covered by no operation.
    pub between_ops_ms: f64,
    /// From the last operation's completion to `cairn up` exiting.
    pub after_last_op_ms: f64,
    /// Plugin time per operation kind (build, artifact, deployment, release).
    pub per_kind_ms: BTreeMap<String, f64>,
    pub operations: usize,
}

/// Medians over the runs of one kind (warm or cold).
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpSummary {
    pub label: String,
    pub runs: Vec<UpRun>,
    pub wall_p50_ms: f64,
    pub wall_min_ms: f64,
    pub wall_max_ms: f64,
    pub plugin_p50_ms: f64,
    pub overhead_p50_ms: f64,
    /// Median over runs of overhead / wall.
    pub overhead_share_p50: f64,
    pub before_first_op_p50_ms: f64,
    pub between_ops_p50_ms: f64,
    pub after_last_op_p50_ms: f64,
    pub per_kind_p50_ms: BTreeMap<String, f64>,
    /// Processes still alive after `cairn destroy` that the bench had to kill.
    pub leftover_processes: usize,
}

impl UpSummary {
    fn of(label: &str, runs: Vec<UpRun>, leftover_processes: usize) -> UpSummary {
        let col = |f: &dyn Fn(&UpRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let walls: Vec<f64> = runs.iter().map(|r| r.wall_ms).collect();
        let (lo, hi) = min_max(&walls);
        let mut per_kind = BTreeMap::new();
        for k in KINDS {
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.per_kind_ms.get(k.noun()).copied())
                .collect();
            if !v.is_empty() {
                per_kind.insert(k.noun().to_string(), median(&v));
            }
        }
        UpSummary {
            label: label.to_string(),
            wall_p50_ms: median(&walls),
            wall_min_ms: lo,
            wall_max_ms: hi,
            plugin_p50_ms: col(&|r| r.plugin_ms),
            overhead_p50_ms: col(&|r| r.overhead_ms),
            overhead_share_p50: col(&|r| r.overhead_ms / r.wall_ms),
            before_first_op_p50_ms: col(&|r| r.before_first_op_ms),
            between_ops_p50_ms: col(&|r| r.between_ops_ms),
            after_last_op_p50_ms: col(&|r| r.after_last_op_ms),
            per_kind_p50_ms: per_kind,
            leftover_processes,
            runs,
        }
    }
}

/// A fresh `CAIRN_HOME`. Dropping it destroys what `cairn up` deployed from
/// it, stops the embedded local node it may have started, and kills any
/// process that still mentions the directory.
struct Home {
    dir: PathBuf,
    cairn: PathBuf,
    app: PathBuf,
    deployed: bool,
}

impl Home {
    fn new(dir: PathBuf, cairn: &Path, app: &Path) -> anyhow::Result<Home> {
        std::fs::create_dir_all(&dir)?;
        Ok(Home {
            dir,
            cairn: cairn.to_path_buf(),
            app: app.to_path_buf(),
            deployed: false,
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cairn);
        c.env("CAIRN_HOME", &self.dir)
            .env_remove("CAIRN_CONTEXT")
            .arg("-C")
            .arg(&self.app)
            .args(args);
        c
    }

    fn run(&self, args: &[&str], log: &str, timeout: Duration) -> anyhow::Result<procs::Ran> {
        let cmd = self.cmd(args);
        let log = self.dir.join(log);
        tokio::task::block_in_place(|| procs::run_logged(cmd, &log, timeout))
    }

    fn destroy(&mut self) -> anyhow::Result<()> {
        let r = self.run(&["destroy"], "destroy.log", CMD_TIMEOUT)?;
        r.check("cairn destroy")?;
        self.deployed = false;
        Ok(())
    }

    /// The embedded node `cairn` started under this home, if any.
    fn local_node(&self) -> Option<procs::Ready> {
        let text = std::fs::read_to_string(self.dir.join("data/local-node/ready.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Kill what is left. Returns how many processes had to be killed
    /// besides the embedded node.
    fn cleanup(&mut self) -> usize {
        if self.deployed {
            let cmd = self.cmd(&["destroy"]);
            let _ = procs::run_logged(cmd, &self.dir.join("destroy-on-drop.log"), CMD_TIMEOUT);
            self.deployed = false;
        }
        if let Some(r) = self.local_node() {
            procs::terminate(r.pid);
        }
        procs::kill_under(&self.dir)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

pub async fn run(
    opts: &Opts,
    cairn: &Path,
    node_bin: &Path,
    app_src: &Path,
    root: &Path,
) -> anyhow::Result<(UpSummary, Option<UpSummary>)> {
    let app = root.join("hello");
    copy_dir(app_src, &app).with_context(|| format!("copying {}", app_src.display()))?;

    // Cold runs first: nothing of Cairn is running or cached yet besides the
    // binaries, as for a first-time user.
    let mut cold = Vec::new();
    let mut cold_left = 0;
    for i in 0..opts.cold_reps {
        eprintln!(
            "  cairn up, cold (embedded node start) {}/{}",
            i + 1,
            opts.cold_reps
        );
        let mut home = Home::new(root.join(format!("home-c{i:02}")), cairn, &app)?;
        cold.push(cold_run(&mut home).await?);
        home.destroy()?;
        if let Some(r) = home.local_node() {
            procs::terminate(r.pid);
        }
        cold_left += home.cleanup();
    }

    let node = NodeProc::start(node_bin, &root.join("node-up"), "cairn-bench").await?;
    let session = procs::connect(&node.dial()).await?;
    let mut warm = Vec::new();
    let mut warm_left = 0;
    let result = async {
        for i in 0..opts.reps {
            eprintln!("  cairn up, node running {}/{}", i + 1, opts.reps);
            let mut home = Home::new(root.join(format!("home-w{i:02}")), cairn, &app)?;
            home.run(
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
                "context.log",
                CMD_TIMEOUT,
            )?
            .check("cairn context create")?;
            let before: BTreeSet<u64> = operations(&session).await?.iter().map(|o| o.id).collect();
            let (wall, start_ms, end_ms) = timed_up(&mut home)?;
            let ops: Vec<Operation> = operations(&session)
                .await?
                .into_iter()
                .filter(|o| !before.contains(&o.id))
                .collect();
            warm.push(account(wall, start_ms, end_ms, &ops)?);
            home.destroy()?;
            warm_left += home.cleanup();
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    session.conn.close(0u32.into(), b"bench done");
    result?;
    let warm = UpSummary::of("node already running", warm, warm_left);
    let cold =
        (!cold.is_empty()).then(|| UpSummary::of("cold: embedded node start", cold, cold_left));
    Ok((warm, cold))
}

/// `cairn up` with no context: it starts the embedded node itself.
async fn cold_run(home: &mut Home) -> anyhow::Result<UpRun> {
    let (wall, start_ms, end_ms) = timed_up(home)?;
    let ready = home
        .local_node()
        .ok_or_else(|| anyhow!("cairn up left no local node ready file"))?;
    let ctx_file = home.dir.join("config/contexts/local.json");
    let ctx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&ctx_file).with_context(|| ctx_file.display().to_string())?,
    )?;
    let token = ctx["token"]
        .as_str()
        .ok_or_else(|| anyhow!("{}: no token", ctx_file.display()))?;
    let session = procs::connect(&procs::dial(&ready.addr, &ready.ca_fingerprint, token)).await?;
    let ops = operations(&session).await;
    session.conn.close(0u32.into(), b"bench done");
    account(wall, start_ms, end_ms, &ops?)
}

/// Run `cairn up`; returns its wall time and the wall-clock ms at spawn and exit.
fn timed_up(home: &mut Home) -> anyhow::Result<(Duration, u64, u64)> {
    home.deployed = true;
    let start_ms = cairn_protocol::now_ms();
    let r = home.run(&["up"], "up.log", UP_TIMEOUT)?;
    let end_ms = cairn_protocol::now_ms();
    r.check("cairn up")?;
    Ok((r.elapsed, start_ms, end_ms))
}

async fn operations(s: &Session) -> anyhow::Result<Vec<Operation>> {
    let mut all = Vec::new();
    for kind in KINDS {
        let r = rpc::call(
            &s.conn,
            &ClientRequest::ListOperations {
                kind,
                project: None,
                app: None,
            },
        )
        .await
        .map_err(|e| anyhow!("ListOperations: {e}"))?;
        match r {
            ClientResponse::Operations(v) => all.extend(v),
            other => bail!("ListOperations answered {other:?}"),
        }
    }
    Ok(all)
}

fn account(wall: Duration, start_ms: u64, end_ms: u64, ops: &[Operation]) -> anyhow::Result<UpRun> {
    if ops.is_empty() {
        bail!("cairn up recorded no operations");
    }
    let mut spans = Vec::new();
    let mut per_kind: BTreeMap<String, f64> = BTreeMap::new();
    for o in ops {
        let done = o.completed_ms.ok_or_else(|| {
            anyhow!(
                "{} v{} is still {:?} after up returned",
                o.kind.noun(),
                o.sequence,
                o.status
            )
        })?;
        if o.status != OpStatus::Success {
            bail!(
                "{} v{} ended {:?}: {:?}",
                o.kind.noun(),
                o.sequence,
                o.status,
                o.error
            );
        }
        let d = done.saturating_sub(o.started_ms);
        *per_kind.entry(o.kind.noun().to_string()).or_default() += d as f64;
        spans.push((o.started_ms, done));
    }
    spans.sort_unstable();
    let plugin: u64 = spans.iter().map(|(s, e)| e.saturating_sub(*s)).sum();
    // Union of the intervals, to find the time between operations.
    let (first, _) = spans[0];
    let mut covered = 0u64;
    let (mut cs, mut ce) = spans[0];
    for &(s, e) in &spans[1..] {
        if s > ce {
            covered += ce - cs;
            (cs, ce) = (s, e);
        } else {
            ce = ce.max(e);
        }
    }
    covered += ce - cs;
    let last = spans.iter().map(|s| s.1).max().unwrap_or(first);
    let wall_ms = crate::stats::ms(wall);
    Ok(UpRun {
        wall_ms,
        plugin_ms: plugin as f64,
        overhead_ms: wall_ms - plugin as f64,
        before_first_op_ms: first.saturating_sub(start_ms) as f64,
        between_ops_ms: (last - first).saturating_sub(covered) as f64,
        after_last_op_ms: end_ms.saturating_sub(last) as f64,
        per_kind_ms: per_kind,
        operations: ops.len(),
    })
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}
