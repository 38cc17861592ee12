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

use crate::procs::{self, NodeProc};
use crate::stats::Latency;
use cairn_tests::bench::load::{closed_loop, value_of};
use cairn_tests::bench::procs::{cpu_ticks, ticks_per_s};

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
    closed_loop(conns, total, move |conn: Session, c, i| {
        let gen = gen.clone();
        async move {
            let (req, check) = gen(i);
            let t = Instant::now();
            let r = call(&conn, &req)
                .await
                .with_context(|| format!("client {c}, call {i}"))?;
            let lat = t.elapsed().as_micros() as u64;
            check(&r).with_context(|| format!("client {c}, call {i}"))?;
            Ok(lat)
        }
    })
    .await
}
