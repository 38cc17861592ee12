//! `api-bench`: issue 17's HTTP API figures, side by side with the same read over QUIC, in
//! one run against one `cairn-node`.
//!
//! The read: the 100 config variables of one project (`GET /api/v1/config?project=bench`,
//! `ClientRequest::ListConfig`): both go through the same service layer and a linearizable
//! read, and return the same 100 variables.
//!
//! 1. Latency: `--reads` reads of each, one at a time, in alternating rounds of 100 (HTTP/1.1
//!    keep-alive on one connection; QUIC, a stream per request on one connection, as the
//!    CLI does); p50/p99.
//! 2. Throughput: `--clients` concurrent clients for `--secs` seconds each (HTTP: a
//!    keep-alive connection per client; QUIC: one connection, a stream per request);
//!    requests/s.
//!
//! The machine is shared and noisy: read the medians and the ratios, not single runs.
//!
//!   cargo build --release -p cairn-node -p cairn-tests --bin api-bench
//!   ./target/release/api-bench [--reads N] [--clients C] [--secs S]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc;
use cairn_protocol::types::{ConfigScope, ConfigVar};
use cairn_tests::bench::args::Argv;
use cairn_tests::bench::node::BenchNode;
use cairn_tests::bench::procs::bin_dir;
use cairn_tests::bench::report::{command_line, machine};
use cairn_tests::bench::stats::{fmt_rate, fmt_us, table, Latency};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

const USAGE: &str = "\
usage: api-bench [--reads N] [--clients C] [--secs S] [--bin-dir DIR]

  --reads N    reads of each kind, one at a time (default 2000)
  --clients C  concurrent clients in the throughput run (default 8)
  --secs S     seconds of each throughput run (default 5)
  --bin-dir D  where cairn-node is (default: next to this binary)";

const VARS: usize = 100;

fn main() -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("api-bench: {e:#}");
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

/// One HTTP read; the number of variables it returned.
async fn http_read(s: &mut Sender, host: &str, token: &str) -> anyhow::Result<usize> {
    s.ready().await?;
    let req = hyper::Request::builder()
        .uri("/api/v1/config?project=bench")
        .header("host", host)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())?;
    let resp = s.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    let vars: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
    Ok(vars.len())
}

/// One QUIC read; the number of variables it returned.
async fn quic_read(conn: &quinn::Connection) -> anyhow::Result<usize> {
    match rpc::call(
        conn,
        &ClientRequest::ListConfig {
            scope: Some(ConfigScope::Project("bench".into())),
        },
    )
    .await?
    {
        ClientResponse::Config(v) => Ok(v.len()),
        other => bail!("unexpected {other:?}"),
    }
}

async fn run() -> anyhow::Result<()> {
    let mut a = Argv::from_env(USAGE);
    let mut reads = 2000usize;
    let mut clients = 8usize;
    let mut secs = 5u64;
    let mut bins_given: Option<std::path::PathBuf> = None;
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--reads" => reads = a.num("--reads")?,
            "--clients" => clients = a.num("--clients")?,
            "--secs" => secs = a.num("--secs")?,
            "--bin-dir" => bins_given = Some(a.value("--bin-dir")?.into()),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    let bins = bin_dir(bins_given.as_ref())?;
    println!("api-bench: {}", command_line());
    println!("{}", machine().summary());
    let dir = tempfile::tempdir()?;
    let node = BenchNode::start(&bins.join("cairn-node"), dir.path(), "api-bench").await?;
    let http = node
        .ready
        .http
        .clone()
        .context("the node serves no HTTP API")?;
    let host = http.trim_start_matches("http://").to_string();
    let session = node.connect().await?;
    let conn = session.conn.clone();
    for i in 0..VARS {
        let r = rpc::call(
            &conn,
            &ClientRequest::SetConfig {
                var: ConfigVar {
                    scope: ConfigScope::Project("bench".into()),
                    name: format!("VAR_{i}"),
                    value: format!("value {i} {}", "x".repeat(40)),
                    secret: false,
                },
            },
        )
        .await?;
        if !matches!(r, ClientResponse::Ok) {
            bail!("SetConfig: {r:?}");
        }
    }
    let mut sender = http_conn(&host).await?;
    if http_read(&mut sender, &host, &node.token).await? != VARS || quic_read(&conn).await? != VARS
    {
        bail!("the two reads do not return the {VARS} variables");
    }

    // 1. Latency, one at a time, alternating rounds.
    let (mut h, mut q) = (Vec::with_capacity(reads), Vec::with_capacity(reads));
    while h.len() < reads {
        for _ in 0..100.min(reads - h.len()) {
            let t = Instant::now();
            http_read(&mut sender, &host, &node.token).await?;
            h.push(t.elapsed().as_micros() as u64);
        }
        for _ in 0..100.min(reads - q.len()) {
            let t = Instant::now();
            quic_read(&conn).await?;
            q.push(t.elapsed().as_micros() as u64);
        }
    }
    let (hl, ql) = (Latency::of(&mut h), Latency::of(&mut q));

    // 2. Throughput, `clients` at once.
    let deadline = Duration::from_secs(secs);
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    for _ in 0..clients {
        let mut s = http_conn(&host).await?;
        let (host, token, count) = (host.clone(), node.token.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while t0.elapsed() < deadline {
                if http_read(&mut s, &host, &token).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks.drain(..) {
        t.await?;
    }
    let http_rate = count.swap(0, Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for _ in 0..clients {
        let (conn, count) = (conn.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while t0.elapsed() < deadline {
                if quic_read(&conn).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let quic_rate = count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();

    println!(
        "\nread: the {VARS} config variables of a project (linearizable read), {reads} of each, one at a time"
    );
    let row = |name: &str, l: &Latency, rate: f64| {
        vec![
            name.to_string(),
            fmt_us(l.p50_us),
            fmt_us(l.p90_us),
            fmt_us(l.p99_us),
            fmt_rate(rate),
        ]
    };
    println!(
        "{}",
        table(
            &[
                "transport",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                &format!("req/s ({clients} clients)")
            ],
            &[
                row("HTTP/1.1 JSON", &hl, http_rate),
                row("QUIC bincode", &ql, quic_rate),
            ]
        )
    );
    println!(
        "HTTP/QUIC: p50 x{:.2}, p99 x{:.2}, throughput x{:.2}",
        hl.p50_us as f64 / ql.p50_us.max(1) as f64,
        hl.p99_us as f64 / ql.p99_us.max(1) as f64,
        http_rate / quic_rate.max(1e-9)
    );
    session.conn.close(0u32.into(), b"bye");
    Ok(())
}
