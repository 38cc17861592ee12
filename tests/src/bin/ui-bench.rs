//! `ui-bench`: issue 17's web UI figure — the app page's time to first byte with 1,000
//! operations in the app's history — side by side, in one run against one `cairn-node`, with
//! the same app's JSON view (`GET /api/v1/projects/P/apps/A`) and the page of an app with 4.
//!
//! The history is made through the runner protocol, as a runner makes it: this bench
//! registers as a runner, takes one `up` job and records 1,000 operations in it (builds,
//! artifacts, deployments, releases in turn, each with 20 lines of output), then reports the
//! job done. The page renders every one of them (the history list and one row per active
//! deployment).
//!
//! The node renders a page whole before it sends the head, so the time to first byte is the
//! page's render time plus the round trip; the full body time is given next to it.
//!
//!   cargo build --release -p cairn-node -p cairn-tests --bin ui-bench
//!   ./target/release/ui-bench [--ops N] [--reads N]

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use cairn_protocol::api::{ClientRequest, ClientResponse, NodeToRunner, RunnerToNode};
use cairn_protocol::types::{
    JobKind, JobSpec, JobState, OpCompletion, OpKind, OpStatus, RunnerKind, RunnerTarget, Source,
    DEFAULT_WORKSPACE,
};
use cairn_protocol::{frame, rpc};
use cairn_tests::bench::args::Argv;
use cairn_tests::bench::node::BenchNode;
use cairn_tests::bench::procs::bin_dir;
use cairn_tests::bench::report::{command_line, machine};
use cairn_tests::bench::stats::{fmt_us, table, Latency};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

const USAGE: &str = "\
usage: ui-bench [--ops N] [--reads N] [--bin-dir DIR]

  --ops N      operations in the big app's history (default 1000)
  --reads N    requests of each page, one at a time (default 200)
  --bin-dir D  where cairn-node is (default: next to this binary)";

const RUNNER: &str = "ui-bench-runner";

fn main() -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ui-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn http_conn(addr: &str) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One GET: (time to the response head, time to the body's end, body bytes).
async fn timed_get(
    s: &mut Sender,
    host: &str,
    path: &str,
    token: &str,
) -> anyhow::Result<(u64, u64, usize)> {
    s.ready().await?;
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", host)
        .header("cookie", format!("cairn_session={token}"))
        .body(Empty::new())?;
    let t = Instant::now();
    let resp = s.send_request(req).await?;
    let head = t.elapsed().as_micros() as u64;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let all = t.elapsed().as_micros() as u64;
    if !status.is_success() {
        bail!(
            "GET {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok((head, all, body.len()))
}

/// Record `ops` operations of app `app` through the runner protocol, in one `up` job.
async fn make_history(conn: &quinn::Connection, app: &str, ops: usize) -> anyhow::Result<()> {
    let spec = JobSpec {
        kind: JobKind::Up {
            release: true,
            prune: false,
            retain: None,
        },
        project: "bench".into(),
        app: app.into(),
        workspace: DEFAULT_WORKSPACE.into(),
        source: Source::Local {
            dir: "/nonexistent/ui-bench".into(),
            config: "cairn.hcl".into(),
        },
        target: RunnerTarget::Id(RUNNER.into()),
    };
    let offer = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.accept_bi().await })
    };
    let job_id = match rpc::call(conn, &ClientRequest::QueueJob { spec }).await? {
        ClientResponse::JobQueued { id } => id,
        other => bail!("QueueJob: {other:?}"),
    };
    let (mut send, mut recv) = offer.await??;
    match frame::read_required::<_, NodeToRunner>(&mut recv).await? {
        NodeToRunner::Offer { job } if job.id == job_id => {}
        other => bail!("expected the offer of job {job_id}: {other:?}"),
    }
    frame::write(&mut send, &RunnerToNode::Accept).await?;
    match frame::read_required::<_, NodeToRunner>(&mut recv).await? {
        NodeToRunner::Started | NodeToRunner::StartedWithLease { .. } => {}
        other => bail!("expected Started: {other:?}"),
    }
    let kinds = [
        OpKind::Build,
        OpKind::Artifact,
        OpKind::Deployment,
        OpKind::Release,
    ];
    let mut last_seq = [0u64; 4];
    for i in 0..ops {
        let k = i % 4;
        let input_seq = (k > 0).then(|| last_seq[k - 1]);
        let (id, sequence) = match rpc::call(
            conn,
            &ClientRequest::BeginOperation {
                job_id,
                kind: kinds[k],
                plugin: "process".into(),
                input_seq,
            },
        )
        .await?
        {
            ClientResponse::OperationStarted { id, sequence } => (id, sequence),
            other => bail!("BeginOperation: {other:?}"),
        };
        last_seq[k] = sequence;
        let output = (0..20)
            .map(|l| format!("step {l} of operation {i}: {}", "x".repeat(60)))
            .collect();
        let url = matches!(kinds[k], OpKind::Deployment | OpKind::Release)
            .then(|| format!("http://{app}--v{sequence}.localhost:9703/"));
        match rpc::call(
            conn,
            &ClientRequest::CompleteOperation(OpCompletion {
                op_id: id,
                status: OpStatus::Success,
                result: None,
                error: None,
                output,
                output_dropped: 0,
                url,
            }),
        )
        .await?
        {
            ClientResponse::Ok => {}
            other => bail!("CompleteOperation: {other:?}"),
        }
    }
    frame::write(
        &mut send,
        &RunnerToNode::Done {
            state: JobState::Success,
            error: None,
        },
    )
    .await?;
    let _ = send.finish();
    let _ = send.stopped().await;
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let mut a = Argv::from_env(USAGE);
    let mut ops = 1000usize;
    let mut reads = 200usize;
    let mut bins_given: Option<std::path::PathBuf> = None;
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--ops" => ops = a.num("--ops")?,
            "--reads" => reads = a.num("--reads")?,
            "--bin-dir" => bins_given = Some(a.value("--bin-dir")?.into()),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    let bins = bin_dir(bins_given.as_ref())?;
    println!("ui-bench: {}", command_line());
    println!("{}", machine().summary());
    let dir = tempfile::tempdir()?;
    let node = BenchNode::start(&bins.join("cairn-node"), dir.path(), "ui-bench").await?;
    let http = node
        .ready
        .http
        .clone()
        .context("the node serves no HTTP API")?;
    let host = http.trim_start_matches("http://").to_string();
    let session = node.connect().await?;
    let conn = session.conn.clone();

    // Be a runner on this connection, and make the two apps' histories.
    let (_reg_send, mut reg_recv) = rpc::open(
        &conn,
        &ClientRequest::RegisterRunner {
            id: RUNNER.into(),
            kind: RunnerKind::Agent,
            labels: Default::default(),
        },
    )
    .await?;
    match frame::read_required::<_, ClientResponse>(&mut reg_recv).await? {
        ClientResponse::Registered => {}
        other => bail!("RegisterRunner: {other:?}"),
    }
    let t = Instant::now();
    make_history(&conn, "big", ops).await?;
    make_history(&conn, "small", 4).await?;
    println!(
        "recorded {} operations through the runner protocol in {:.1} s",
        ops + 4,
        t.elapsed().as_secs_f64()
    );

    let pages = [
        ("app page, big (HTML)", "/apps/bench/big".to_string()),
        (
            "app view, big (JSON)",
            "/api/v1/projects/bench/apps/big".to_string(),
        ),
        ("app page, small (HTML)", "/apps/bench/small".to_string()),
    ];
    let mut sender = http_conn(&host).await?;
    let mut rows = Vec::new();
    let mut heads = Vec::new();
    // Warm up, then alternate rounds of 20 so the three see the same machine.
    for (_, path) in &pages {
        let (_, _, n) = timed_get(&mut sender, &host, path, &node.token).await?;
        if n == 0 {
            bail!("{path}: an empty answer");
        }
    }
    let mut samples: Vec<(Vec<u64>, Vec<u64>, usize)> =
        pages.iter().map(|_| (Vec::new(), Vec::new(), 0)).collect();
    while samples[0].0.len() < reads {
        for (i, (_, path)) in pages.iter().enumerate() {
            for _ in 0..20.min(reads - samples[i].0.len()) {
                let (h, all, n) = timed_get(&mut sender, &host, path, &node.token).await?;
                samples[i].0.push(h);
                samples[i].1.push(all);
                samples[i].2 = n;
            }
        }
    }
    for ((name, _), (mut h, mut all, bytes)) in pages.iter().zip(samples) {
        let (hl, al) = (Latency::of(&mut h), Latency::of(&mut all));
        heads.push(hl.p50_us);
        rows.push(vec![
            name.to_string(),
            fmt_us(hl.p50_us),
            fmt_us(hl.p99_us),
            fmt_us(al.p50_us),
            format!("{:.0} KB", bytes as f64 / 1024.0),
        ]);
    }
    println!(
        "\n{reads} GETs of each, one at a time, keep-alive (the big app: {ops} operations, the small: 4)"
    );
    println!(
        "{}",
        table(
            &["page", "TTFB p50 ms", "TTFB p99 ms", "whole p50 ms", "size"],
            &rows
        )
    );
    println!(
        "big page / big JSON: TTFB p50 x{:.2}; big page / small page: x{:.2}",
        heads[0] as f64 / heads[1].max(1) as f64,
        heads[0] as f64 / heads[2].max(1) as f64
    );
    session.conn.close(0u32.into(), b"bye");
    Ok(())
}
