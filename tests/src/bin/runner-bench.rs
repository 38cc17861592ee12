//! `runner-bench`: issue 19's figures for remote runners, in one run.
//!
//! 1. Dispatch latency: from the moment a client sends `QueueJob` to the moment the runner
//!    holds `Started` (the node recorded the job running and told the runner to begin),
//!    on a one-node cluster (client and runner on it), on a three-node cluster with the
//!    client and the runner on the leader, and on the same cluster through a follower
//!    (the write forwarded to the leader, the offer relayed back through the follower).
//!    Each runner is this bench, speaking the runner protocol as `cairn runner agent`
//!    does; it ends every job at once (trivial jobs), one job at a time.
//! 2. Throughput: trivial jobs per second across 4 runners (on the three nodes), jobs on
//!    40 apps (jobs of one app run one at a time), all queued at once.
//! 3. A 100 MB source (incompressible: 100 files of 1 MB random bytes): `cairn build
//!    --runner R --detach` packing and uploading it, the node's resident memory before and
//!    after (and its peak), and the same command again (already in the cluster).
//!
//!   cargo build --release -p cairn-node -p cairn-cli -p cairn-tests --bin runner-bench --bin cairn --bin cairn-node
//!   ./target/release/runner-bench [--jobs N] [--throughput N]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use cairn_protocol::api::{ClientRequest, ClientResponse, NodeToRunner, RunnerToNode};
use cairn_protocol::frame;
use cairn_protocol::rpc::{self, Dial, Session};
use cairn_protocol::types::{
    JobKind, JobSpec, JobState, RunnerKind, RunnerTarget, Source, TokenScope, DEFAULT_WORKSPACE,
};
use cairn_tests::bench::args::Argv;
use cairn_tests::bench::procs::{bin_dir, client_dial, temp_dir};
use cairn_tests::bench::report::{command_line, machine};
use cairn_tests::bench::stats::{fmt_us, table, Latency};
use tokio::sync::mpsc;

const USAGE: &str = "\
usage: runner-bench [--jobs N] [--throughput N] [--bin-dir DIR]

  --jobs N         jobs per dispatch-latency case, one at a time (default 200)
  --throughput N   jobs for the 4-runner throughput (default 400)
  --bin-dir DIR    where cairn and cairn-node are (default: next to this binary)";

struct Args {
    jobs: usize,
    throughput: usize,
    bin_dir: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Argv::from_env(USAGE);
    let mut out = Args {
        jobs: 200,
        throughput: 400,
        bin_dir: None,
    };
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--jobs" => out.jobs = a.num("--jobs")?,
            "--throughput" => out.throughput = a.num("--throughput")?,
            "--bin-dir" => out.bin_dir = Some(PathBuf::from(a.value("--bin-dir")?)),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runner-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A node process, killed on drop.
struct Node {
    child: std::process::Child,
    addr: String,
    ca: String,
    pid: u32,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(serde::Deserialize)]
struct Ready {
    addr: String,
    ca_fingerprint: String,
    pid: u32,
}

async fn start_node(bin: &Path, dir: &Path, extra: &[String]) -> anyhow::Result<Node> {
    std::fs::create_dir_all(dir)?;
    let ready = dir.join("ready.json");
    let log = dir.join("node.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new(bin)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-ingress",
            "--no-http",
            "--ready-file",
        ])
        .arg(&ready)
        .arg("--bootstrap-file")
        .arg(dir.join("bootstrap.token"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut node = Node {
        child,
        addr: String::new(),
        ca: String::new(),
        pid: 0,
        log,
    };
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            if let Ok(r) = serde_json::from_str::<Ready>(&text) {
                node.addr = r.addr;
                node.ca = r.ca_fingerprint;
                node.pid = r.pid;
                return Ok(node);
            }
        }
        if let Some(status) = node.child.try_wait()? {
            bail!("cairn-node exited ({status}): see {}", node.log.display());
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("cairn-node not ready in 60 s: see {}", node.log.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` nodes: the first bootstraps, the others join it. Returns them and a user token.
async fn cluster(bin: &Path, root: &Path, n: usize) -> anyhow::Result<(Vec<Node>, String)> {
    let first = start_node(bin, &root.join("n0"), &[]).await?;
    let boot = std::fs::read_to_string(root.join("n0/bootstrap.token"))?;
    let token = cairn_cli::local::exchange_bootstrap(&first.addr, &first.ca, boot.trim())
        .await
        .context("exchanging the bootstrap token")?;
    let mut nodes = vec![first];
    for i in 1..n {
        let join = match call(
            &dial(&nodes[0], &token),
            ClientRequest::CreateToken {
                scope: TokenScope::Join,
                name: "runner-bench".into(),
                ttl_s: Some(600),
            },
        )
        .await?
        {
            ClientResponse::Token { token } => token,
            other => bail!("CreateToken answered {other:?}"),
        };
        let dir = root.join(format!("n{i}"));
        std::fs::create_dir_all(&dir)?;
        let tf = dir.join("join.token");
        cairn_protocol::private::write(&tf, join.as_bytes())?;
        let extra = vec![
            "--join".to_string(),
            nodes[0].addr.clone(),
            "--join-token-file".into(),
            tf.display().to_string(),
            "--join-ca".into(),
            nodes[0].ca.clone(),
        ];
        nodes.push(start_node(bin, &dir, &extra).await?);
    }
    // Every member a voter.
    let t0 = Instant::now();
    loop {
        if let Ok(ClientResponse::Members(ms)) =
            call(&dial(&nodes[0], &token), ClientRequest::Members).await
        {
            if ms.len() == n
                && ms
                    .iter()
                    .all(|m| m.role == cairn_protocol::api::MemberRole::Voter)
            {
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the cluster did not form in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((nodes, token))
}

fn dial(n: &Node, token: &str) -> Dial {
    client_dial("runner-bench", &n.addr, &n.ca, token)
}

async fn call(d: &Dial, req: ClientRequest) -> anyhow::Result<ClientResponse> {
    let s = rpc::connect(d).await.map_err(|e| anyhow!("{e}"))?;
    let r = rpc::call(&s.conn, &req).await;
    s.conn.close(0u32.into(), b"bench");
    r.map_err(|e| anyhow!("{e}"))
}

/// The leader's index among `nodes`.
async fn leader_of(nodes: &[Node], token: &str) -> anyhow::Result<usize> {
    match call(&dial(&nodes[0], token), ClientRequest::ServerInfo).await? {
        ClientResponse::ServerInfo(info) => {
            let leader = info.leader.ok_or_else(|| anyhow!("no leader"))?;
            let addr = info
                .members
                .iter()
                .find(|(id, _)| *id == leader)
                .map(|(_, a)| a.clone())
                .ok_or_else(|| anyhow!("the leader is not a member"))?;
            nodes
                .iter()
                .position(|n| n.addr == addr)
                .ok_or_else(|| anyhow!("no node at {addr}"))
        }
        other => bail!("ServerInfo answered {other:?}"),
    }
}

/// A runner (this bench) registered on its own connection: every offer is
/// accepted, `(job, when Started arrived)` is sent on `started`, and the job
/// ends at once.
/// Resumes the bench's runners were asked for (see `runner`).
static RESUMES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn runner(
    d: &Dial,
    id: &str,
    labels: &[(&str, &str)],
    started: mpsc::UnboundedSender<(u64, Instant)>,
) -> anyhow::Result<(Session, quinn::SendStream, quinn::RecvStream)> {
    let s = rpc::connect(d).await.map_err(|e| anyhow!("{e}"))?;
    let req = ClientRequest::RegisterRunner {
        id: id.into(),
        kind: RunnerKind::Agent,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let (send, mut recv) = rpc::open(&s.conn, &req).await.map_err(|e| anyhow!("{e}"))?;
    match frame::read_required::<_, ClientResponse>(&mut recv).await? {
        ClientResponse::Registered => {}
        other => bail!("RegisterRunner answered {other:?}"),
    }
    let conn = s.conn.clone();
    tokio::spawn(async move {
        while let Ok((mut osend, mut orecv)) = conn.accept_bi().await {
            let started = started.clone();
            tokio::spawn(async move {
                let job = match frame::read_required(&mut orecv).await {
                    Ok(NodeToRunner::Offer { job }) => job,
                    // A job whose stream broke (a leader change under load):
                    // this runner ended it already; it says so, and counts it.
                    Ok(NodeToRunner::Resume { job, .. }) => {
                        RESUMES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        eprintln!(
                            "runner-bench: a resume of job {job} (its stream broke), declined"
                        );
                        let reason = "the bench runner ended it already".to_string();
                        let _ = frame::write(&mut osend, &RunnerToNode::Decline { reason }).await;
                        let _ = osend.finish();
                        return;
                    }
                    _ => return,
                };
                if frame::write(&mut osend, &RunnerToNode::Accept)
                    .await
                    .is_err()
                {
                    return;
                }
                match frame::read_required::<_, NodeToRunner>(&mut orecv).await {
                    Ok(NodeToRunner::Started | NodeToRunner::StartedWithLease { .. }) => {}
                    _ => return,
                }
                let _ = started.send((job.id, Instant::now()));
                let done = RunnerToNode::Done {
                    state: JobState::Success,
                    error: None,
                };
                if frame::write(&mut osend, &done).await.is_ok() {
                    let _ = osend.finish();
                    let _ = orecv.read_to_end(1024).await;
                }
            });
        }
    });
    Ok((s, send, recv))
}

fn spec(app: &str, target: RunnerTarget) -> JobSpec {
    JobSpec {
        kind: JobKind::Build { push: false },
        project: "bench".into(),
        app: app.into(),
        workspace: DEFAULT_WORKSPACE.into(),
        source: Source::Local {
            dir: "/nonexistent/runner-bench".into(),
            config: "cairn.hcl".into(),
        },
        target,
    }
}

async fn queue(conn: &quinn::Connection, spec: JobSpec) -> anyhow::Result<u64> {
    match rpc::call(conn, &ClientRequest::QueueJob { spec })
        .await
        .map_err(|e| anyhow!("{e}"))?
    {
        ClientResponse::JobQueued { id } => Ok(id),
        other => bail!("QueueJob answered {other:?}"),
    }
}

/// `jobs` jobs one at a time through `client` for runner `id`: queued → Started, µs.
async fn latency(
    client: &Dial,
    runner_dial: &Dial,
    id: &str,
    app: &str,
    jobs: usize,
) -> anyhow::Result<Latency> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _r = runner(runner_dial, id, &[], tx).await?;
    let c = rpc::connect(client).await.map_err(|e| anyhow!("{e}"))?;
    let mut samples = Vec::with_capacity(jobs);
    for i in 0..jobs + 10 {
        let t0 = Instant::now();
        let job = queue(&c.conn, spec(app, RunnerTarget::Id(id.into()))).await?;
        let at = loop {
            let (j, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .map_err(|_| anyhow!("job {job} was not started in 30 s"))?
                .ok_or_else(|| anyhow!("the runner stopped"))?;
            if j == job {
                break at;
            }
        };
        // The first 10 warm the connections up.
        if i >= 10 {
            samples.push(at.duration_since(t0).as_micros() as u64);
        }
        // The job ends at once; the next of this app waits for that end.
        wait_final(&c.conn, job).await?;
    }
    Ok(Latency::of(&mut samples))
}

async fn wait_final(conn: &quinn::Connection, job: u64) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        if let ClientResponse::Job(j) = rpc::call(conn, &ClientRequest::InspectJob { id: job })
            .await
            .map_err(|e| anyhow!("{e}"))?
        {
            if j.state.is_final() {
                return Ok(());
            }
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("job {job} did not end in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn run() -> anyhow::Result<()> {
    let a = args()?;
    let bins = bin_dir(a.bin_dir.as_ref())?;
    let node_bin = bins.join("cairn-node");
    let cairn_bin = bins.join("cairn");
    for b in [&node_bin, &cairn_bin] {
        if !b.is_file() {
            bail!("{} is missing: build it with --release", b.display());
        }
    }
    let root = temp_dir("runner-bench-", None)?;
    println!("runner-bench: {}", command_line());
    println!("{}", machine().summary());

    // 1. Dispatch latency.
    let mut rows = Vec::new();
    {
        let (one, token) = cluster(&node_bin, &root.path().join("one"), 1).await?;
        let d = dial(&one[0], &token);
        let l = latency(&d, &d, "lat-one", "one", a.jobs).await?;
        rows.push(vec![
            "one node".into(),
            fmt_us(l.p50_us),
            fmt_us(l.p99_us),
            fmt_us(l.max_us),
        ]);
    }
    let (three, token) = cluster(&node_bin, &root.path().join("three"), 3).await?;
    let leader = leader_of(&three, &token).await?;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let dl = dial(&three[leader], &token);
    let l = latency(&dl, &dl, "lat-leader", "leader", a.jobs).await?;
    rows.push(vec![
        "3 nodes, on the leader".into(),
        fmt_us(l.p50_us),
        fmt_us(l.p99_us),
        fmt_us(l.max_us),
    ]);
    let df = dial(&three[follower], &token);
    let l = latency(&df, &df, "lat-follower", "follower", a.jobs).await?;
    rows.push(vec![
        "3 nodes, through a follower".into(),
        fmt_us(l.p50_us),
        fmt_us(l.p99_us),
        fmt_us(l.max_us),
    ]);
    println!(
        "\nDispatch latency, QueueJob sent → Started at the runner ({} jobs each, one at a time):",
        a.jobs
    );
    println!(
        "{}",
        table(&["case", "p50 (ms)", "p99 (ms)", "max (ms)"], &rows)
    );

    // 2. Throughput across 4 runners on the three nodes.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut held = Vec::new();
    for (i, n) in [0usize, 1, 2, 0].iter().enumerate() {
        held.push(
            runner(
                &dial(&three[*n], &token),
                &format!("tp-{i}"),
                &[("pool", "tp")],
                tx.clone(),
            )
            .await?,
        );
    }
    drop(tx);
    let apps = 40;
    let clients: Vec<Session> = {
        let mut v = Vec::new();
        for n in &three {
            v.push(
                rpc::connect(&dial(n, &token))
                    .await
                    .map_err(|e| anyhow!("{e}"))?,
            );
        }
        v
    };
    let target = RunnerTarget::Labels([("pool".to_string(), "tp".to_string())].into());
    let t0 = Instant::now();
    let mut queued = tokio::task::JoinSet::new();
    for i in 0..a.throughput {
        let conn = clients[i % clients.len()].conn.clone();
        let s = spec(&format!("tp{}", i % apps), target.clone());
        queued.spawn(async move { queue(&conn, s).await });
    }
    let mut ids = Vec::new();
    while let Some(r) = queued.join_next().await {
        ids.push(r??);
    }
    let queued_in = t0.elapsed();
    let mut seen = 0usize;
    while seen < ids.len() {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .map_err(|_| anyhow!("only {seen} of {} jobs started within 60 s", ids.len()))?
            .ok_or_else(|| anyhow!("the runners stopped"))?;
        seen += 1;
    }
    for id in &ids {
        wait_final(&clients[0].conn, *id).await?;
    }
    let all = t0.elapsed();
    println!(
        "\nThroughput: {} trivial jobs on {apps} apps across 4 runners (2 on node {}, 1 each on the others): all queued in {:.2} s, all ended in {:.2} s: {:.0} jobs/s",
        ids.len(),
        0,
        queued_in.as_secs_f64(),
        all.as_secs_f64(),
        ids.len() as f64 / all.as_secs_f64()
    );
    drop(held);

    // 3. A 100 MB source.
    let src = root.path().join("big");
    std::fs::create_dir_all(&src)?;
    std::fs::write(
        src.join("cairn.hcl"),
        "project = \"bench\"\n\napp \"big\" {\n  build {\n    use \"files\" {\n      path = \".\"\n    }\n  }\n\n  deploy {\n    use \"process\" {\n      command = [\"true\"]\n    }\n  }\n}\n",
    )?;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for f in 0..100 {
        let bytes: Vec<u8> = (0..1024 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        std::fs::write(src.join(format!("blob-{f:03}.bin")), bytes)?;
    }
    let home = root.path().join("home");
    let cli = |args: &[&str]| -> anyhow::Result<(std::process::Output, Duration)> {
        let t = Instant::now();
        let o = Command::new(&cairn_bin)
            .args(args)
            .current_dir(&src)
            .env("CAIRN_HOME", &home)
            .env("NO_COLOR", "1")
            .env_remove("CAIRN_CONTEXT")
            .stdin(Stdio::null())
            .output()?;
        Ok((o, t.elapsed()))
    };
    let (o, _) = cli(&[
        "context",
        "create",
        "bench",
        "--address",
        &three[leader].addr,
        "--ca-fingerprint",
        &three[leader].ca,
        "--token",
        &token,
        "--use",
    ])?;
    if !o.status.success() {
        bail!("context create: {}", String::from_utf8_lossy(&o.stderr));
    }
    let pid = three[leader].pid;
    let before = rss_kb(pid, "VmRSS:");
    let (o, took) = cli(&["build", "--runner", "nobody", "--detach"])?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() {
        bail!("cairn build: {out}\n{}", String::from_utf8_lossy(&o.stderr));
    }
    let after = rss_kb(pid, "VmRSS:");
    let peak = rss_kb(pid, "VmHWM:");
    let line = out
        .lines()
        .find(|l| l.contains("Source sha256:"))
        .unwrap_or("")
        .to_string();
    let (o2, again) = cli(&["build", "--runner", "nobody", "--detach"])?;
    let out2 = String::from_utf8_lossy(&o2.stdout).into_owned();
    println!("\nA 100 MB source (100 files of 1 MB random bytes) uploaded with `cairn build --runner nobody --detach` to the leader:");
    println!("  {line}");
    println!(
        "  whole command (pack + upload + queue): {:.2} s; again (already in the cluster): {:.2} s{}",
        took.as_secs_f64(),
        again.as_secs_f64(),
        if out2.contains("already in the cluster") { "" } else { " (NOT reported as already there!)" }
    );
    println!(
        "  the node's resident memory: {} MB before, {} MB after, peak {} MB",
        before / 1024,
        after / 1024,
        peak / 1024
    );
    Ok(())
}
