//! Section 1: catalog writes (SetConfig, one Raft write each) and
//! linearizable reads (ListConfig on a small scope) against one real node,
//! from 1 client and from many clients (one QUIC connection each, each
//! doing its calls one after the other).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc::{self, Session};
use cairn_protocol::types::{ConfigScope, ConfigVar};
use tokio::sync::Barrier;

use crate::procs::{self, NodeProc};
use crate::stats::Latency;

/// Longest any single call may take before the bench gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Project scope written by the write benchmark.
const WRITE_SCOPE: &str = "bench";
/// Small project scope read by the read benchmark.
const READ_SCOPE: &str = "bench-read";
const READ_SCOPE_VARS: usize = 8;
pub const VALUE_BYTES: usize = 256;

#[derive(Debug, Clone)]
pub struct Opts {
    pub clients: usize,
    pub writes_single: usize,
    pub writes_multi: usize,
    pub reads_single: usize,
    pub reads_multi: usize,
    pub rounds: usize,
    pub warmup: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Op {
    Write,
    Read,
}

/// One timed round of one configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Round {
    pub ops: usize,
    pub wall_ms: f64,
    pub ops_per_s: f64,
    pub latency: Latency,
    /// The node's CPU time (user+system) during the round, per operation.
    pub node_cpu_us_per_op: f64,
    /// The node's CPU use during the round, in cores (2.0 = both cores busy).
    pub node_cores: f64,
}

/// All rounds of one configuration (operation, phase, client count).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Series {
    pub op: Op,
    /// "empty catalog" / "after writes" for reads; "" for writes.
    pub phase: String,
    pub clients: usize,
    /// Config variables in the catalog when the series ran.
    pub catalog_vars: usize,
    pub rounds: Vec<Round>,
    /// Percentiles over the samples of every round together.
    pub pooled: Latency,
}

struct Work {
    op: Op,
    phase: &'static str,
    clients: usize,
    total: usize,
    samples: Vec<u64>,
    rounds: Vec<Round>,
}

pub async fn run(node: &NodeProc, opts: &Opts) -> anyhow::Result<Vec<Series>> {
    let dial = node.dial();
    let mut sessions: Vec<Session> = Vec::with_capacity(opts.clients);
    for _ in 0..opts.clients.max(1) {
        sessions.push(procs::connect(&dial).await?);
    }
    let result = run_with(node, &sessions, opts).await;
    for s in &sessions {
        s.conn.close(0u32.into(), b"bench done");
    }
    for s in &sessions {
        s.endpoint.wait_idle().await;
    }
    result
}

async fn run_with(
    node: &NodeProc,
    sessions: &[Session],
    opts: &Opts,
) -> anyhow::Result<Vec<Series>> {
    let single = &sessions[..1];
    let multi = sessions;
    let value: Arc<str> = value_of(VALUE_BYTES).into();

    // The small scope the reads list.
    for i in 0..READ_SCOPE_VARS {
        let r = call(&single[0], &set(READ_SCOPE, &format!("r{i:07}"), &value)).await?;
        expect_ok(&r)?;
    }
    // Warm-up (untimed): connections, allocator, redb file growth.
    if opts.warmup > 0 {
        drive(multi, opts.warmup, writes("bench-warmup", value.clone())).await?;
        drive(multi, opts.warmup, reads()).await?;
    }

    let mut order = vec![
        Work::new(Op::Read, "empty catalog", 1, opts.reads_single),
        Work::new(Op::Read, "empty catalog", multi.len(), opts.reads_multi),
    ];
    let mut out = Vec::new();
    let mut vars = READ_SCOPE_VARS + if opts.warmup > 0 { opts.warmup } else { 0 };
    // Rounds are interleaved (1 client, N clients, 1 client, …) so that noise
    // on the shared machine hits both configurations alike.
    for phase in 0..3 {
        if phase == 1 {
            order = vec![
                Work::new(Op::Write, "", 1, opts.writes_single),
                Work::new(Op::Write, "", multi.len(), opts.writes_multi),
            ];
        } else if phase == 2 {
            order = vec![
                Work::new(Op::Read, "after writes", 1, opts.reads_single),
                Work::new(Op::Read, "after writes", multi.len(), opts.reads_multi),
            ];
        }
        let catalog_vars = vars;
        for round in 0..opts.rounds {
            for w in order.iter_mut() {
                if w.total == 0 {
                    continue;
                }
                eprintln!(
                    "  {:?}{} clients={} ops={} round {}/{}",
                    w.op,
                    if w.phase.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", w.phase)
                    },
                    w.clients,
                    w.total,
                    round + 1,
                    opts.rounds
                );
                let conns = if w.clients == 1 { single } else { multi };
                let gen = match w.op {
                    Op::Write => writes(WRITE_SCOPE, value.clone()),
                    Op::Read => reads(),
                };
                let cpu0 = cpu_ticks(node.ready.pid);
                let (wall, mut samples) = drive(conns, w.total, gen).await?;
                let cpu = cpu_ticks(node.ready.pid).saturating_sub(cpu0);
                let cpu_s = cpu as f64 / ticks_per_s();
                let latency = Latency::of(&mut samples);
                w.samples.extend_from_slice(&samples);
                w.rounds.push(Round {
                    ops: w.total,
                    wall_ms: crate::stats::ms(wall),
                    ops_per_s: w.total as f64 / wall.as_secs_f64(),
                    latency,
                    node_cpu_us_per_op: cpu_s * 1e6 / w.total as f64,
                    node_cores: cpu_s / wall.as_secs_f64(),
                });
            }
        }
        if phase == 1 {
            vars += opts.writes_single.max(opts.writes_multi);
        }
        for mut w in order.drain(..) {
            if w.rounds.is_empty() {
                continue;
            }
            out.push(Series {
                op: w.op,
                phase: w.phase.to_string(),
                clients: w.clients,
                catalog_vars,
                pooled: Latency::of(&mut w.samples),
                rounds: w.rounds,
            });
        }
    }
    Ok(out)
}

impl Work {
    fn new(op: Op, phase: &'static str, clients: usize, total: usize) -> Work {
        Work {
            op,
            phase,
            clients,
            total,
            samples: Vec::new(),
            rounds: Vec::new(),
        }
    }
}

type Gen =
    Arc<dyn Fn(usize) -> (ClientRequest, fn(&ClientResponse) -> anyhow::Result<()>) + Send + Sync>;

fn writes(scope: &'static str, value: Arc<str>) -> Gen {
    Arc::new(move |i| (set(scope, &format!("k{i:07}"), &value), expect_ok))
}

fn reads() -> Gen {
    Arc::new(|_| {
        (
            ClientRequest::ListConfig {
                scope: Some(ConfigScope::Project(READ_SCOPE.into())),
            },
            expect_read,
        )
    })
}

fn set(scope: &str, name: &str, value: &str) -> ClientRequest {
    ClientRequest::SetConfig {
        var: ConfigVar {
            scope: ConfigScope::Project(scope.into()),
            name: name.into(),
            value: value.into(),
            secret: false,
        },
    }
}

fn expect_ok(r: &ClientResponse) -> anyhow::Result<()> {
    match r {
        ClientResponse::Ok => Ok(()),
        other => bail!("SetConfig answered {other:?}"),
    }
}

fn expect_read(r: &ClientResponse) -> anyhow::Result<()> {
    match r {
        ClientResponse::Config(v) if v.len() == READ_SCOPE_VARS => Ok(()),
        ClientResponse::Config(v) => bail!(
            "ListConfig returned {} variables, expected {READ_SCOPE_VARS}",
            v.len()
        ),
        other => bail!("ListConfig answered {other:?}"),
    }
}

/// Printable pseudo-random bytes (so nothing downstream compresses them away).
fn value_of(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

async fn call(s: &Session, req: &ClientRequest) -> anyhow::Result<ClientResponse> {
    tokio::time::timeout(CALL_TIMEOUT, rpc::call(&s.conn, req))
        .await
        .map_err(|_| anyhow!("no answer within {} s", CALL_TIMEOUT.as_secs()))?
        .map_err(|e| anyhow!("{e}"))
}

/// Run `total` calls spread over `conns` (call i on connection i mod n), each
/// connection sequential, all starting together. Returns the wall time and
/// each call's latency in microseconds.
async fn drive(conns: &[Session], total: usize, gen: Gen) -> anyhow::Result<(Duration, Vec<u64>)> {
    let n = conns.len();
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for (c, s) in conns.iter().enumerate() {
        let conn = s.clone();
        let barrier = barrier.clone();
        let gen = gen.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total / n + 1);
            barrier.wait().await;
            let mut i = c;
            while i < total {
                let (req, check) = gen(i);
                let t = Instant::now();
                let r = call(&conn, &req)
                    .await
                    .with_context(|| format!("client {c}, call {i}"))?;
                lat.push(t.elapsed().as_micros() as u64);
                check(&r).with_context(|| format!("client {c}, call {i}"))?;
                i += n;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let mut all = Vec::with_capacity(total);
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow!("client task: {e}"));
            }
        }
    }
    let wall = t0.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok((wall, all)),
    }
}

/// utime + stime of `pid`, in clock ticks (0 if unreadable).
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the ")" that ends the command name: state is field 3, so
    // utime (14) and stime (15) are at indices 11 and 12.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Baseline for the write numbers: how long a small write + fdatasync takes
/// on the file system that holds the node's data (redb commits with
/// immediate durability on every Raft append).
pub async fn fsync_baseline(dir: &std::path::Path, n: usize) -> anyhow::Result<Latency> {
    let path = dir.join("fsync-probe");
    let samples = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u64>> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let buf = vec![b'x'; 4096];
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            f.seek(SeekFrom::Start(((i % 64) * 4096) as u64))?;
            f.write_all(&buf)?;
            f.sync_data()?;
            out.push(t.elapsed().as_micros() as u64);
        }
        drop(f);
        let _ = std::fs::remove_file(&path);
        Ok(out)
    })
    .await??;
    let mut s = samples;
    Ok(Latency::of(&mut s))
}
