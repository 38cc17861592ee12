//! `cluster-bench`: Cairn against etcd, side by side in one run (issue 3).
//!
//! Two 3-member clusters on loopback, both running for the whole bench: three
//! `cairn-node` processes and three `etcd` processes (Debian's `etcd-server`
//! package, all defaults except addresses). Same payload for both: 8-byte
//! keys, 256-byte values; every write is durable on a quorum before it is
//! acknowledged (etcd fsyncs its WAL, Cairn commits redb with immediate
//! durability).
//!
//! 1. Write throughput and latency, closed loop: 1 client on the leader, 1
//!    client on a follower (the write is forwarded to the leader), and N
//!    clients (default 64, one connection each) spread round-robin over the
//!    three members. Rows and systems are interleaved in rounds so noise on
//!    the shared machine hits both.
//! 2. Leader failover, trials alternating between the systems: a prober
//!    starts a write every 5 ms against the two other members (each attempt
//!    abandoned after 2 s), then the leader gets `kill -9`; the time is from
//!    the kill to the first acknowledged write among those started after
//!    it. The killed member is then restarted on its data dir and the next
//!    trial waits until the cluster is healthy (one leader, equal logs, a
//!    write through every member).
//!
//! Client paths: Cairn through `cairn_protocol::rpc` (QUIC + TLS, one
//! `SetConfig` request per write); etcd through its native gRPC API
//! (`etcdserverpb.KV/Put` over HTTP/2, plaintext, hand-written prost
//! messages on tonic).
//!
//! Tables go to stdout (to stderr with `--json`, which prints one JSON
//! document on stdout). Everything started is stopped on exit, on error and
//! on Ctrl-C; the temp dir is removed.
//!
//! Build and run:
//!   cargo build --release -p cairn-tests -p cairn-cli -p cairn-node --bin cluster-bench --bin cairn --bin cairn-node
//!   ./target/release/cluster-bench [--quick] [--json]

#[path = "cluster-bench/cluster.rs"]
mod cluster;
#[path = "cluster-bench/conn.rs"]
mod conn;
#[path = "cluster-bench/etcd_grpc.rs"]
mod etcd_grpc;
#[path = "cluster-bench/load.rs"]
mod load;
#[path = "cluster-bench/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_tests::bench::args::{parse_num, Argv};
use cairn_tests::bench::load::value_of;
use cairn_tests::bench::report::{bench_main, command_line, fsync_baseline, host, say, Host};
use cairn_tests::bench::stats;

use cluster::{Cluster, Kind};
use conn::Conn;
use stats::{fmt_ms, fmt_rate, fmt_us, median, min_max, table, Latency};

pub const VALUE_BYTES: usize = 256;

const USAGE: &str = "\
usage: cluster-bench [--quick] [--json] [--rounds N] [--clients N] [--writes N1,NM]
                     [--trials N] [--settle-ms MS] [--skip-throughput] [--skip-failover]
                     [--bin-dir DIR] [--etcd PATH] [--tmp DIR] [--keep]

  --quick          smaller numbers (a smoke run)
  --json           print one JSON document on stdout (tables go to stderr)
  --rounds N       throughput rounds per row and system, interleaved (default 3; quick 1)
  --clients N      concurrent clients (connections) for the multi-client row (default 64)
  --writes N1,NM   writes per round for each 1-client row and for the N-client row
                   (default 3000,20000; quick 300,3000)
  --trials N       leader-failover trials per system (default 20; quick 3)
  --settle-ms MS   pause after the cluster is healthy again, before the next trial (default 500)
  --bin-dir DIR    where `cairn-node` is (default: next to this binary)
  --etcd PATH      the etcd binary (default: `etcd` on PATH; Debian package etcd-server)
  --tmp DIR        parent of the bench's temp dir (default: the system temp dir)
  --keep           keep the temp dir (members' data and logs) after the run";

#[derive(Debug, Clone)]
struct Args {
    json: bool,
    quick: bool,
    rounds: usize,
    clients: usize,
    writes_single: usize,
    writes_multi: usize,
    warmup: usize,
    trials: usize,
    settle: Duration,
    skip_throughput: bool,
    skip_failover: bool,
    bin_dir: Option<PathBuf>,
    etcd: Option<PathBuf>,
    tmp: Option<PathBuf>,
    keep: bool,
    fsync_probes: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Argv::from_env(USAGE);
    let quick = args.contains("--quick");
    let mut a = Args {
        json: false,
        quick,
        rounds: if quick { 1 } else { 3 },
        clients: 64,
        writes_single: if quick { 300 } else { 3_000 },
        writes_multi: if quick { 3_000 } else { 20_000 },
        warmup: if quick { 128 } else { 512 },
        trials: if quick { 3 } else { 20 },
        settle: Duration::from_millis(500),
        skip_throughput: false,
        skip_failover: false,
        bin_dir: None,
        etcd: None,
        tmp: None,
        keep: false,
        fsync_probes: if quick { 200 } else { 1000 },
    };
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--quick" => {}
            "--json" => a.json = true,
            "--skip-throughput" => a.skip_throughput = true,
            "--skip-failover" => a.skip_failover = true,
            "--keep" => a.keep = true,
            "--rounds" => a.rounds = args.num::<usize>("--rounds")?.max(1),
            "--clients" => a.clients = args.num::<usize>("--clients")?.max(1),
            "--trials" => a.trials = args.num::<usize>("--trials")?.max(1),
            "--settle-ms" => {
                a.settle = Duration::from_millis(args.num::<usize>("--settle-ms")? as u64)
            }
            "--writes" => {
                let v = args.value("--writes")?;
                let (x, y) = v
                    .split_once(',')
                    .with_context(|| format!("{v:?}: expected N1,NM"))?;
                a.writes_single = parse_num::<usize>(x)?.max(1);
                a.writes_multi = parse_num::<usize>(y)?.max(1);
            }
            "--bin-dir" => a.bin_dir = Some(args.value("--bin-dir")?.into()),
            "--etcd" => a.etcd = Some(args.value("--etcd")?.into()),
            "--tmp" => a.tmp = Some(args.value("--tmp")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    bench_main(
        "cluster-bench",
        parse_args(),
        Some(Duration::from_secs(2)),
        |args| async move { run(&args).await },
    )
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn version_of(bin: &Path, arg: &str) -> String {
    std::process::Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no parent directory")?
            .to_path_buf(),
    };
    let node_bin = bin_dir.join("cairn-node");
    if !node_bin.is_file() {
        bail!(
            "{} not found; build it: cargo build --release -p cairn-tests -p cairn-cli -p cairn-node --bin cluster-bench --bin cairn --bin cairn-node",
            node_bin.display()
        );
    }
    let etcd_bin = match &args.etcd {
        Some(p) => p.clone(),
        None => find_on_path("etcd").context(
            "`etcd` not found on PATH: install Debian's etcd-server package \
             (apt-get install -y etcd-server) or pass --etcd PATH",
        )?,
    };
    if !etcd_bin.is_file() {
        bail!("{} does not exist", etcd_bin.display());
    }
    let etcd_version = version_of(&etcd_bin, "--version");

    // Declared first so it is dropped last: the clusters below stop their
    // processes before the directory goes away.
    let mut tmp = tempfile::Builder::new();
    tmp.prefix("cluster-bench-");
    let root = match &args.tmp {
        Some(d) => tmp.tempdir_in(d)?,
        None => tmp.tempdir()?,
    };
    let json = args.json;
    let machine = machine();
    let command = command_line();
    say(
        json,
        &format!(
            "# cluster-bench  machine: {machine}\n# command: {command}\n# cairn-node: {}  etcd: {} ({etcd_version})\n# temp: {}",
            node_bin.display(),
            etcd_bin.display(),
            root.path().display()
        ),
    );
    say(json, &setup_notes(args));
    let r = measure(
        args,
        &root,
        &node_bin,
        &etcd_bin,
        machine,
        command,
        etcd_version,
    )
    .await;
    // Every process is stopped by now (the clusters dropped in `measure`).
    if args.keep {
        let p = root.keep();
        eprintln!("kept {}", p.display());
    }
    r
}

async fn measure(
    args: &Args,
    root: &tempfile::TempDir,
    node_bin: &Path,
    etcd_bin: &Path,
    machine: String,
    command: String,
    etcd_version: String,
) -> anyhow::Result<()> {
    let json = args.json;

    eprintln!("fsync baseline ({} probes)", args.fsync_probes);
    let fsync = fsync_baseline(root.path(), args.fsync_probes).await?;

    eprintln!("starting 3 cairn-node and 3 etcd members");
    let t = Instant::now();
    let mut cairn = Cluster::start_cairn(node_bin, root.path()).await?;
    eprintln!("  cairn healthy after {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let mut etcd = Cluster::start_etcd(etcd_bin, root.path()).await?;
    eprintln!("  etcd healthy after {:.1} s", t.elapsed().as_secs_f64());

    let mut doc = serde_json::json!({
        "machine": machine,
        "command": command,
        "cairn_node": node_bin.display().to_string(),
        "etcd": etcd_bin.display().to_string(),
        "etcd_version": etcd_version,
        "quick": args.quick,
        "key_bytes": 8,
        "value_bytes": VALUE_BYTES,
        "client_paths": {
            "cairn": "cairn_protocol::rpc over QUIC+TLS, one connection per client, SetConfig per write",
            "etcd": "native gRPC (tonic, HTTP/2, plaintext), one channel per client, etcdserverpb.KV/Put per write",
        },
        "fsync_baseline": fsync,
    });

    let value: Arc<str> = value_of(VALUE_BYTES).into();

    if !args.skip_throughput {
        let series = throughput(args, [&cairn, &etcd], &value).await?;
        say(json, &throughput_tables(args, &series, &fsync));
        doc["throughput"] = serde_json::json!({
            "rounds": args.rounds,
            "clients": args.clients,
            "writes_single": args.writes_single,
            "writes_multi": args.writes_multi,
            "warmup": args.warmup,
            "series": series,
        });
    }

    if !args.skip_failover {
        let trials = failover(args, [&mut cairn, &mut etcd], &value).await?;
        say(json, &failover_tables(&trials));
        doc["failover"] = serde_json::json!({
            "trials_per_system": args.trials,
            "probe_every_ms": load::PROBE_EVERY.as_millis() as u64,
            "attempt_timeout_ms": load::ATTEMPT_TIMEOUT.as_millis() as u64,
            "trials": trials,
        });
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    drop(cairn);
    drop(etcd);
    Ok(())
}

fn setup_notes(args: &Args) -> String {
    format!(
        "# setup: 3 members per system on 127.0.0.1, both clusters up for the whole run; 8-byte keys, {VALUE_BYTES}-byte values\n\
# durability: both acknowledge a write only after a quorum has it on disk: etcd fsyncs its WAL (default; no --unsafe-no-fsync),\n\
#   Cairn appends each Raft batch to redb with Durability::Immediate (fsync)\n\
# client paths: cairn = cairn_protocol::rpc over QUIC+TLS (SetConfig on scope project:bench, one QUIC connection per client);\n\
#   etcd = native gRPC, etcdserverpb.KV/Put over plaintext HTTP/2 (tonic, hand-written prost messages; one channel per client)\n\
# raft timing (each system's defaults): cairn heartbeat 100 ms, election timeout 300–600 ms; openraft 0.9 makes a follower that\n\
#   had a leader wait leader_lease (= election_timeout_max, 600 ms) + the election timeout, and a candidate that saw a longer log\n\
#   another 2 × election_timeout_max; etcd heartbeat 100 ms, election timeout 1000 ms (randomized 1000–2000 ms by etcd/raft),\n\
#   check-quorum on, pre-vote off (3.4 defaults)\n\
# throughput: {} round(s), rows × systems interleaved; {} warm-up writes per system; failover: {} trials per system, alternating",
        args.rounds, args.warmup, args.trials
    )
}

// ---------------------------------------------------------------------------
// Throughput

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Row {
    OneOnLeader,
    OneOnFollower,
    Many,
}

impl Row {
    fn label(self, clients: usize) -> String {
        match self {
            Row::OneOnLeader => "1 client → leader".into(),
            Row::OneOnFollower => "1 client → follower".into(),
            Row::Many => format!("{clients} clients → all 3"),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct Round {
    ops: usize,
    wall_ms: f64,
    ops_per_s: f64,
    latency: Latency,
    /// CPU time (user+system) of the system's 3 processes per write.
    server_cpu_us_per_op: f64,
    /// CPU time of this bench process (the clients) per write.
    client_cpu_us_per_op: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Series {
    system: Kind,
    row: Row,
    clients: usize,
    rounds: Vec<Round>,
    /// Percentiles over the samples of every round together.
    pooled: Latency,
    #[serde(skip)]
    samples: Vec<u64>,
}

impl Series {
    fn ops_per_s(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.ops_per_s).collect::<Vec<_>>())
    }
    fn cpu(&self, f: fn(&Round) -> f64) -> f64 {
        median(&self.rounds.iter().map(f).collect::<Vec<_>>())
    }
}

struct Conns {
    leader: usize,
    on_leader: Conn,
    on_follower: Conn,
    many: Vec<Conn>,
}

async fn open_conns(c: &Cluster, clients: usize) -> anyhow::Result<Conns> {
    let leader = c.leader().await?;
    let mut many = Vec::with_capacity(clients);
    for i in 0..clients {
        many.push(c.connect((leader + i) % cluster::MEMBERS).await?);
    }
    Ok(Conns {
        leader,
        on_leader: c.connect(leader).await?,
        on_follower: c.connect((leader + 1) % cluster::MEMBERS).await?,
        many,
    })
}

async fn throughput(
    args: &Args,
    clusters: [&Cluster; 2],
    value: &Arc<str>,
) -> anyhow::Result<Vec<Series>> {
    let mut conns = Vec::new();
    for c in &clusters {
        let cs = open_conns(c, args.clients).await?;
        eprintln!(
            "throughput: {} warm-up ({} writes; leader is member {})",
            c.name(),
            args.warmup,
            cs.leader
        );
        load::drive(&cs.many, args.warmup, value).await?;
        conns.push(cs);
    }
    let rows = [Row::OneOnLeader, Row::OneOnFollower, Row::Many];
    let mut series: Vec<Series> = Vec::new();
    for row in rows {
        for c in &clusters {
            series.push(Series {
                system: c.kind,
                row,
                clients: if row == Row::Many { args.clients } else { 1 },
                rounds: Vec::new(),
                pooled: Latency::default(),
                samples: Vec::new(),
            });
        }
    }
    let me = std::process::id();
    for round in 0..args.rounds {
        for (ri, row) in rows.iter().enumerate() {
            // Alternate which system goes first.
            let order: [usize; 2] = if (round + ri) % 2 == 0 {
                [0, 1]
            } else {
                [1, 0]
            };
            for si in order {
                let c = &clusters[si];
                let cs = &conns[si];
                let (set, total): (&[Conn], usize) = match row {
                    Row::OneOnLeader => (std::slice::from_ref(&cs.on_leader), args.writes_single),
                    Row::OneOnFollower => {
                        (std::slice::from_ref(&cs.on_follower), args.writes_single)
                    }
                    Row::Many => (&cs.many, args.writes_multi),
                };
                eprintln!(
                    "  round {}/{}: {} {} ({total} writes)",
                    round + 1,
                    args.rounds,
                    c.name(),
                    row.label(args.clients)
                );
                let pids = c.pids();
                let cpu = |pids: &[u32]| pids.iter().map(|&p| procs::cpu_seconds(p)).sum::<f64>();
                let (s0, m0) = (cpu(&pids), procs::cpu_seconds(me));
                let (wall, mut samples) = load::drive(set, total, value).await?;
                let (s1, m1) = (cpu(&pids), procs::cpu_seconds(me));
                let lat = Latency::of(&mut samples);
                let s = series
                    .iter_mut()
                    .find(|s| s.system == c.kind && s.row == *row)
                    .context("series")?;
                s.samples.extend_from_slice(&samples);
                s.rounds.push(Round {
                    ops: total,
                    wall_ms: load::ms(wall),
                    ops_per_s: total as f64 / wall.as_secs_f64(),
                    latency: lat,
                    server_cpu_us_per_op: (s1 - s0) * 1e6 / total as f64,
                    client_cpu_us_per_op: (m1 - m0) * 1e6 / total as f64,
                });
            }
        }
    }
    for (si, c) in clusters.iter().enumerate() {
        let now = c.leader().await?;
        if now != conns[si].leader {
            eprintln!(
                "  note: {} leader moved from member {} to {} during the throughput rows",
                c.name(),
                conns[si].leader,
                now
            );
        }
        for x in conns[si]
            .many
            .iter()
            .chain([&conns[si].on_leader, &conns[si].on_follower])
        {
            x.close();
        }
    }
    for s in &mut series {
        s.pooled = Latency::of(&mut s.samples);
    }
    Ok(series)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

fn throughput_tables(args: &Args, series: &[Series], fsync: &Latency) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n## Write throughput and latency: closed loop, each client sequential; {} round(s) per row; \
ops/s = median over rounds [min–max]; latency over all rounds' samples\n\n",
        args.rounds
    ));
    let mut rows = Vec::new();
    for s in series {
        let tput: Vec<f64> = s.rounds.iter().map(|r| r.ops_per_s).collect();
        let (lo, hi) = min_max(&tput);
        rows.push(vec![
            s.row.label(s.clients),
            s.system.name().to_string(),
            s.rounds.first().map(|r| r.ops).unwrap_or(0).to_string(),
            format!(
                "{} [{}–{}]",
                fmt_rate(s.ops_per_s()),
                fmt_rate(lo),
                fmt_rate(hi)
            ),
            fmt_us(s.pooled.p50_us),
            fmt_us(s.pooled.p90_us),
            fmt_us(s.pooled.p99_us),
            fmt_us(s.pooled.max_us),
            format!("{:.0}", s.cpu(|r| r.server_cpu_us_per_op)),
            format!("{:.0}", s.cpu(|r| r.client_cpu_us_per_op)),
        ]);
    }
    out.push_str(&table(
        &[
            "row",
            "system",
            "writes/round",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "servers CPU µs/op",
            "client CPU µs/op",
        ],
        &rows,
    ));
    out.push_str("\n## Ratios Cairn / etcd (ops/s: above 1 = Cairn faster; latency and CPU: below 1 = Cairn faster)\n\n");
    let mut rows = Vec::new();
    for pair in series.chunks(2) {
        let (Some(c), Some(e)) = (
            pair.iter().find(|s| s.system == Kind::Cairn),
            pair.iter().find(|s| s.system == Kind::Etcd),
        ) else {
            continue;
        };
        rows.push(vec![
            c.row.label(c.clients),
            ratio(c.ops_per_s(), e.ops_per_s()),
            ratio(c.pooled.p50_us as f64, e.pooled.p50_us as f64),
            ratio(c.pooled.p99_us as f64, e.pooled.p99_us as f64),
            ratio(
                c.cpu(|r| r.server_cpu_us_per_op),
                e.cpu(|r| r.server_cpu_us_per_op),
            ),
        ]);
    }
    out.push_str(&table(
        &["row", "ops/s", "p50", "p99", "servers CPU/op"],
        &rows,
    ));
    out.push_str(&format!(
        "\nfsync baseline, same file system (4 KiB pwrite + fdatasync, {} probes): p50 {} ms, p99 {} ms, max {} ms\n",
        fsync.n,
        fmt_us(fsync.p50_us),
        fmt_us(fsync.p99_us),
        fmt_us(fsync.max_us)
    ));
    out
}

// ---------------------------------------------------------------------------
// Failover

async fn failover(
    args: &Args,
    clusters: [&mut Cluster; 2],
    value: &Arc<str>,
) -> anyhow::Result<Vec<load::Trial>> {
    let mut trials = Vec::new();
    for t in 0..args.trials {
        let order: [usize; 2] = if t % 2 == 0 { [0, 1] } else { [1, 0] };
        for si in order {
            let c = &mut *clusters[si];
            let tr = load::failover_trial(c, value, args.settle)
                .await
                .with_context(|| format!("{} failover trial {}", c.name(), t + 1))?;
            eprintln!(
                "  failover {}/{} {}: killed member {} → write acknowledged after {} ms (new leader seen at {} ms, {} attempts failed; recovery {} ms)",
                t + 1,
                args.trials,
                tr.system,
                tr.killed,
                fmt_ms(tr.failover_ms),
                tr.new_leader_seen_ms.map(fmt_ms).unwrap_or("-".into()),
                tr.failed_before_ack,
                fmt_ms(tr.recovery_ms),
            );
            trials.push(tr);
        }
    }
    Ok(trials)
}

fn failover_tables(trials: &[load::Trial]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n## Leader failover: kill -9 the leader → first acknowledged write started after the kill \
(a write starts every {} ms against the 2 survivors, each abandoned after {} ms); trials alternate between systems\n\
## (with 20 trials the nearest-rank p99 is the slowest trial)\n\n",
        load::PROBE_EVERY.as_millis(),
        load::ATTEMPT_TIMEOUT.as_millis()
    ));
    let mut rows = Vec::new();
    let mut sums = Vec::new();
    for kind in [Kind::Cairn, Kind::Etcd] {
        let ts: Vec<&load::Trial> = trials.iter().filter(|t| t.system == kind.name()).collect();
        if ts.is_empty() {
            continue;
        }
        let f = load::summary(&ts.iter().map(|t| t.failover_ms).collect::<Vec<_>>());
        let seen: Vec<f64> = ts.iter().filter_map(|t| t.new_leader_seen_ms).collect();
        let after: Vec<f64> = ts
            .iter()
            .filter_map(|t| t.new_leader_seen_ms.map(|s| (t.failover_ms - s).max(0.0)))
            .collect();
        let (lo, _) = min_max(&ts.iter().map(|t| t.failover_ms).collect::<Vec<_>>());
        let failed = median(
            &ts.iter()
                .map(|t| t.failed_before_ack as f64)
                .collect::<Vec<_>>(),
        );
        let rec = median(&ts.iter().map(|t| t.recovery_ms).collect::<Vec<_>>());
        rows.push(vec![
            kind.name().to_string(),
            ts.len().to_string(),
            fmt_us(f.p50_us),
            fmt_us(f.p99_us),
            fmt_us(f.max_us),
            fmt_ms(lo),
            fmt_ms(median(&seen)),
            fmt_ms(median(&after)),
            format!("{failed:.0}"),
            fmt_ms(rec),
            ts.iter()
                .map(|t| t.restart_failures.len())
                .sum::<usize>()
                .to_string(),
        ]);
        sums.push((kind, f));
    }
    out.push_str(&table(
        &[
            "system",
            "trials",
            "p50 ms",
            "p99 ms",
            "max ms",
            "min ms",
            "new leader seen p50",
            "seen → write p50",
            "failed attempts p50",
            "restart → healthy p50",
            "failed restarts",
        ],
        &rows,
    ));
    if let [(_, c), (_, e)] = sums.as_slice() {
        out.push_str(&format!(
            "\nratio Cairn / etcd (below 1 = Cairn recovers faster): p50 {}, p99 {}, max {}\n",
            ratio(c.p50_us as f64, e.p50_us as f64),
            ratio(c.p99_us as f64, e.p99_us as f64),
            ratio(c.max_us as f64, e.max_us as f64),
        ));
    }
    let mut errs: Vec<String> = Vec::new();
    for t in trials {
        for e in &t.errors {
            let line = format!("{}: {e}", t.system);
            if !errs.contains(&line) {
                errs.push(line);
            }
        }
    }
    let mut fails: Vec<String> = Vec::new();
    for t in trials {
        for f in &t.restart_failures {
            let line = format!("{}: {f}", t.system);
            if !fails.contains(&line) {
                fails.push(line);
            }
        }
    }
    if !fails.is_empty() {
        out.push_str(
            "\nrestarted members that exited by themselves during start-up (started again):\n",
        );
        for f in fails.iter().take(6) {
            out.push_str(&format!("  {f}\n"));
        }
    }
    if !errs.is_empty() {
        out.push_str(
            "\nerrors the clients saw between the kill and the first acknowledged write:\n",
        );
        for e in errs.iter().take(12) {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Misc

fn machine() -> String {
    let Host { nproc, cpu, kernel } = host();
    format!("nproc={nproc}, cpu={cpu}, kernel={kernel}")
}
