//! `url-bench`: the URL service's tunnel against the app reached directly
//! and through two other tunnels, bore and rathole, side by side in one run
//! on the same app with the same load generator (oha).
//!
//! Targets (all on loopback, all in front of the same program, this
//! binary's `__serve` mode: a small hyper server):
//!
//! - direct: the app on its own port;
//! - cairn: `cairn up` deploys the app on the process platform under the
//!   static `cairn-entrypoint`; requests go to the node's ingress with
//!   `Host: web.localhost` and through a stream on the entrypoint's
//!   outbound QUIC connection (TLS 1.3) to the app;
//! - bore (`bore-cli`) and rathole: each a server (the public side) and a
//!   client next to the app dialing out to it, in front of the direct app.
//!
//! Measurements, interleaved (every round runs every target, in an order
//! that rotates, so drift on this shared machine hits all alike; medians
//! over rounds):
//!
//! 1. throughput: `oha -c 50 -z 10s`, keep-alive;
//! 2. throughput with a new connection for every request;
//! 3. latency at a fixed 1,000 requests/s (`-q 1000 --latency-correction`):
//!    p50/p99/p99.9, and what each tunnel adds to the direct p99;
//! 4. memory (RSS) and CPU time of every process of every path, idle and
//!    under load.
//!
//! Everything started is stopped on exit, on error and on Ctrl-C.
//!
//! Build and run:
//!   cargo install --locked oha bore-cli
//!   cargo install rathole --no-default-features --features server,client,noise
//!   (rathole 0.5's lock file pins a `time` that today's compiler rejects,
//!   hence no --locked; `noise` adds the encrypted row)
//!   cargo build --release -p cairn-tests -p cairn-cli -p cairn-node -p cairn-entrypoint \
//!     --bin url-bench --bin cairn --bin cairn-node --bin cairn-entrypoint
//!   entrypoint/build-static.sh
//!   ./target/release/url-bench [--quick] [--json]

#[path = "url-bench/oha.rs"]
mod oha;
// Shared with entrypoint-bench, which uses all of it.
#[allow(dead_code)]
#[path = "entrypoint-bench/procs.rs"]
mod procs;
#[path = "url-bench/serve.rs"]
mod serve;
#[path = "url-bench/tunnels.rs"]
mod tunnels;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use cairn_tests::bench::args::Argv;
use cairn_tests::bench::report::{bench_main, command_line, machine, say};
use cairn_tests::bench::stats::{fmt_ms, fmt_rate, median, min_max, table};

use oha::{Load, Oha, Run};
use procs::{Cli, NodeProc, ProcGuard};

const USAGE: &str = "\
usage: url-bench [--quick] [--json] [--rounds N] [--secs S] [--conns C]
                 [--rate R] [--latency-conns C] [--skip-bore] [--skip-rathole]
                 [--oha PATH] [--bore PATH] [--rathole PATH]
                 [--bin-dir DIR] [--static-entrypoint PATH] [--tmp DIR]
                 [--node-env K=V]... [--only LIST]

  --quick          a smoke run: 1 round of 3 s runs
  --json           print one JSON document on stdout (tables go to stderr)
  --rounds N       rounds; each runs every target once per measurement (default 3)
  --secs S         length of each oha run (default 10)
  --conns C        connections for the throughput runs (default 50)
  --rate R         requests/s of the latency runs (default 1000)
  --latency-conns C
                   connections for the latency runs (default 20)
  --skip-bore, --skip-rathole
                   leave that tunnel out
  --oha, --bore, --rathole PATH
                   the tools (default: on PATH, else in ~/.cargo/bin;
                   install them as this file's header says)
  --bin-dir DIR    where cairn and cairn-node are (default: next to this binary)
  --static-entrypoint PATH
                   the entrypoint deployed (default: target/static/x86_64-unknown-linux-gnu/
                   release/cairn-entrypoint, from entrypoint/build-static.sh)
  --tmp DIR        parent of the bench's temp dir (default: the system temp dir)
  --node-env K=V   an environment variable for the node (e.g. TOKIO_WORKER_THREADS=1)
  --only LIST      only these measurements, comma-separated: keepalive, new-conn,
                   serial, latency (default: all)";

const PROJECT: &str = "urlbench";
const APP: &str = "web";
/// The issue's aims.
const AIM_FRACTION_OF_DIRECT: f64 = 0.5;
const AIM_ADDED_P99_MS: f64 = 1.0;

#[derive(Debug, Clone)]
struct Args {
    json: bool,
    rounds: usize,
    secs: u64,
    conns: u32,
    rate: u32,
    latency_conns: u32,
    skip_bore: bool,
    skip_rathole: bool,
    oha: Option<PathBuf>,
    bore: Option<PathBuf>,
    rathole: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
    static_ep: Option<PathBuf>,
    tmp: Option<PathBuf>,
    node_env: Vec<(String, String)>,
    only: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Argv::from_env(USAGE);
    let quick = args.contains("--quick");
    let mut a = Args {
        json: false,
        rounds: if quick { 1 } else { 3 },
        secs: if quick { 3 } else { 10 },
        conns: 50,
        rate: 1000,
        latency_conns: 20,
        skip_bore: false,
        skip_rathole: false,
        oha: None,
        bore: None,
        rathole: None,
        bin_dir: None,
        static_ep: None,
        tmp: None,
        node_env: Vec::new(),
        only: Vec::new(),
    };
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--quick" => {}
            "--json" => a.json = true,
            "--rounds" => a.rounds = args.num::<u64>("--rounds")?.max(1) as usize,
            "--secs" => a.secs = args.num::<u64>("--secs")?.max(1),
            "--conns" => a.conns = args.num::<u64>("--conns")?.clamp(1, 10_000) as u32,
            "--rate" => a.rate = args.num::<u64>("--rate")?.clamp(1, 1_000_000) as u32,
            "--latency-conns" => {
                a.latency_conns = args.num::<u64>("--latency-conns")?.clamp(1, 10_000) as u32;
            }
            "--skip-bore" => a.skip_bore = true,
            "--skip-rathole" => a.skip_rathole = true,
            "--oha" => a.oha = Some(args.value("--oha")?.into()),
            "--bore" => a.bore = Some(args.value("--bore")?.into()),
            "--rathole" => a.rathole = Some(args.value("--rathole")?.into()),
            "--bin-dir" => a.bin_dir = Some(args.value("--bin-dir")?.into()),
            "--static-entrypoint" => a.static_ep = Some(args.value("--static-entrypoint")?.into()),
            "--tmp" => a.tmp = Some(args.value("--tmp")?.into()),
            "--only" => {
                a.only = args
                    .value("--only")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                for o in &a.only {
                    if !["keepalive", "new-conn", "serial", "latency"].contains(&o.as_str()) {
                        bail!("--only: unknown measurement {o:?}\n{USAGE}");
                    }
                }
            }
            "--node-env" => {
                let kv = args.value("--node-env")?;
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--node-env {kv:?}: expected K=V"))?;
                a.node_env.push((k.to_string(), v.to_string()));
            }
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
    // The app mode runs under the entrypoint: no argument parsing of the
    // bench's own.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("__serve") {
        return serve::main_serve(&argv[2..]);
    }
    bench_main("url-bench", parse_args(), None, |args| async move {
        run(&args).await
    })
}

/// Whether something listens on `127.0.0.1:port`.
pub fn port_in_use(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// `name` as given, else on PATH, else in Cargo's bin dir.
fn find_tool(given: Option<&PathBuf>, name: &str) -> Option<PathBuf> {
    if let Some(p) = given {
        return p.is_file().then(|| p.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    std::env::split_paths(&path)
        .chain(cargo_home.map(|c| c.join("bin")))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// One way to the app: where oha sends requests, and the processes on the
/// way (whose memory and CPU are measured).
struct Target {
    name: String,
    url: String,
    host: Option<String>,
    procs: Vec<(String, u32)>,
}

/// Peak RSS (kB) of some processes over a window, sampled every 100 ms,
/// and their CPU time (ticks) over it.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
    pids: Vec<u32>,
    ticks0: Vec<u64>,
}

impl Watch {
    fn start(pids: Vec<u32>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let ticks0 = pids
            .iter()
            .map(|&p| cairn_tests::bench::procs::cpu_ticks(p))
            .collect();
        let (s, ps) = (stop.clone(), pids.clone());
        let thread = std::thread::spawn(move || {
            let mut peak = vec![0u64; ps.len()];
            while !s.load(Ordering::Relaxed) {
                for (i, &p) in ps.iter().enumerate() {
                    if let Some(x) = procs::sample(p) {
                        peak[i] = peak[i].max(x.rss_kb);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        Watch {
            stop,
            thread,
            pids,
            ticks0,
        }
    }

    /// (peak RSS kB, CPU ticks) per process.
    fn finish(self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.thread.join().unwrap_or_default();
        self.pids
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let t = cairn_tests::bench::procs::cpu_ticks(p).saturating_sub(self.ticks0[i]);
                (peak.get(i).copied().unwrap_or(0), t)
            })
            .collect()
    }
}

/// One measurement: its name and load.
struct Scenario {
    key: &'static str,
    title: String,
    load: Load,
}

/// A run of one target in one scenario, with what its processes used.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    round: usize,
    target: String,
    run: Run,
    /// Per process: peak RSS (kB) and CPU ms over the run.
    procs: BTreeMap<String, (u64, f64)>,
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let json = args.json;
    let bench = std::env::current_exe()?;
    let bin_dir = cairn_tests::bench::procs::bin_dir(args.bin_dir.as_ref())?;
    let (cairn, node_bin) = (bin_dir.join("cairn"), bin_dir.join("cairn-node"));
    for p in [&cairn, &node_bin] {
        if !p.is_file() {
            bail!(
                "{} not found; build it: cargo build --release -p cairn-tests -p cairn-cli -p cairn-node -p cairn-entrypoint --bin url-bench --bin cairn --bin cairn-node --bin cairn-entrypoint",
                p.display()
            );
        }
    }
    let static_ep = cairn_tests::bench::procs::static_entrypoint(&bin_dir, args.static_ep.as_ref());
    if !static_ep.is_file() {
        bail!(
            "the static entrypoint {} is missing: build it with entrypoint/build-static.sh, or pass --static-entrypoint",
            static_ep.display()
        );
    }
    let oha_bin = find_tool(args.oha.as_ref(), "oha")
        .context("oha not found (the load generator): cargo install --locked oha, or pass --oha")?;
    let oha = Oha::new(&oha_bin)?;
    let mut missing = Vec::new();
    let bore_bin = if args.skip_bore {
        None
    } else {
        let b = find_tool(args.bore.as_ref(), "bore");
        if b.is_none() {
            missing.push("bore (cargo install --locked bore-cli)");
        }
        b
    };
    let rathole_bin = if args.skip_rathole {
        None
    } else {
        let b = find_tool(args.rathole.as_ref(), "rathole");
        if b.is_none() {
            missing.push("rathole (cargo install rathole --no-default-features --features server,client,noise)");
        }
        b
    };
    for m in &missing {
        let msg = format!("!! {m} not found: its rows are left out");
        eprintln!("{msg}");
        say(json, &msg);
    }

    // Declared first so it is dropped last.
    let tmpdir = cairn_tests::bench::procs::temp_dir("urlb-", args.tmp.as_ref())?;
    let root = tmpdir.path().to_path_buf();
    let machine = machine();
    let command = command_line();
    say(
        json,
        &format!(
            "# url-bench  machine: {}\n# command: {command}\n# load: {} ({}), {} round(s) of {} s runs; throughput with {} connections, latency at {} req/s over {}\n# entrypoint: {}  temp: {}",
            machine.summary(),
            oha.bin.display(),
            oha.version,
            args.rounds,
            args.secs,
            args.conns,
            args.rate,
            args.latency_conns,
            static_ep.display(),
            root.display()
        ),
    );

    // The app, direct.
    let app_port = tunnels::free_port()?;
    let app_log = root.join("app.log");
    let direct_app = {
        let f = std::fs::File::create(&app_log)?;
        let child = Command::new(&bench)
            .args(["__serve", &app_port.to_string()])
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .process_group(0)
            .spawn()
            .context("starting the app")?;
        ProcGuard { child }
    };
    let direct_addr = format!("127.0.0.1:{app_port}");
    tunnels::wait_http(&direct_addr, None, Duration::from_secs(10)).await?;

    // Cairn: a node, and the app deployed on it.
    let node = NodeProc::start_with_env(&node_bin, &root.join("node"), "url-bench", &args.node_env)
        .await?;
    let ingress = node
        .ready
        .ingress
        .clone()
        .context("the node serves no ingress")?;
    let ingress_addr = ingress.trim_start_matches("http://").to_string();
    let mut cli = Cli::new(root.join("home"), &cairn, &static_ep, &node)?;
    let app_dir = root.join("app");
    write_app(&app_dir, &bench)?;
    let up = cli.up(&app_dir)?;
    let (instance, ep_pid) = cli
        .wait_connected(APP, |_| true, Duration::from_secs(30))
        .await?;
    let deployed_app = procs::children_of(ep_pid)
        .first()
        .copied()
        .context("the entrypoint has no child (the app)")?;
    let host = format!("{APP}.localhost");
    tunnels::wait_http(&ingress_addr, Some(&host), Duration::from_secs(30)).await?;
    say(
        json,
        &format!(
            "# cairn: node {} ingress {ingress}, `cairn up` took {:.1} s, instance {instance} (entrypoint pid {ep_pid}, app pid {deployed_app})",
            node.ready.addr,
            up.as_secs_f64()
        ),
    );

    let mut targets = vec![
        Target {
            name: "direct".into(),
            url: format!("http://{direct_addr}/"),
            host: None,
            procs: vec![("app".into(), direct_app.pid())],
        },
        Target {
            name: "cairn".into(),
            url: format!("http://{ingress_addr}/"),
            host: Some(host.clone()),
            procs: vec![
                ("node".into(), node.ready.pid),
                ("entrypoint".into(), ep_pid),
                ("app".into(), deployed_app),
            ],
        },
    ];
    let mut versions = BTreeMap::new();
    versions.insert("oha".to_string(), oha.version.clone());
    let mut tunnels_up = Vec::new();
    if let Some(b) = &bore_bin {
        let t = tunnels::bore(b, &root, app_port).await?;
        tunnels_up.push(t);
    }
    if let Some(b) = &rathole_bin {
        let t = tunnels::rathole(b, &root, app_port, false).await?;
        tunnels_up.push(t);
        match tunnels::rathole(b, &root, app_port, true).await {
            Ok(t) => tunnels_up.push(t),
            Err(e) => {
                let msg = format!("!! rathole-noise left out: {e:#}");
                eprintln!("{msg}");
                say(json, &msg);
            }
        }
    }
    for t in &tunnels_up {
        versions.insert(t.name.to_string(), t.version.clone());
        say(
            json,
            &format!("# {}: {} public {}", t.name, t.version, t.public),
        );
        targets.push(Target {
            name: t.name.to_string(),
            url: format!("http://{}/", t.public),
            host: None,
            procs: vec![
                ("server".into(), t.server.pid()),
                ("client".into(), t.client.pid()),
                ("app".into(), direct_app.pid()),
            ],
        });
    }

    // Idle memory, after everything settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut idle: BTreeMap<String, u64> = BTreeMap::new();
    for t in &targets {
        for (label, pid) in &t.procs {
            if let Some(s) = procs::sample(*pid) {
                idle.insert(format!("{} {label}", t.name), s.rss_kb);
            }
        }
    }

    // Warm-up: every path carries traffic once before anything counts.
    let warm = Load {
        conns: args.conns,
        secs: 2,
        rate: None,
        no_keepalive: false,
    };
    for t in &targets {
        tokio::task::block_in_place(|| oha.run(&t.url, t.host.as_deref(), &warm))
            .with_context(|| format!("warming up {}", t.name))?;
    }

    let scenarios = [
        Scenario {
            key: "keepalive",
            title: format!(
                "Throughput: {} connections, keep-alive, {} s",
                args.conns, args.secs
            ),
            load: Load {
                conns: args.conns,
                secs: args.secs,
                rate: None,
                no_keepalive: false,
            },
        },
        Scenario {
            key: "new-conn",
            title: format!(
                "Throughput: {} connections, a new connection for every request, {} s",
                args.conns, args.secs
            ),
            load: Load {
                conns: args.conns,
                secs: args.secs,
                rate: None,
                no_keepalive: true,
            },
        },
        Scenario {
            key: "serial",
            title: format!(
                "Round trip: one connection, one request at a time, keep-alive, {} s",
                args.secs
            ),
            load: Load {
                conns: 1,
                secs: args.secs,
                rate: None,
                no_keepalive: false,
            },
        },
        Scenario {
            key: "latency",
            title: format!(
                "Latency at {} requests/s ({} connections, keep-alive, latency from when each request was due), {} s",
                args.rate, args.latency_conns, args.secs
            ),
            load: Load {
                conns: args.latency_conns,
                secs: args.secs,
                rate: Some(args.rate),
                no_keepalive: false,
            },
        },
    ];

    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|sc| args.only.is_empty() || args.only.iter().any(|o| o == sc.key))
        .collect();
    let tick_ms = 1000.0 / cairn_tests::bench::procs::ticks_per_s();
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 0..args.rounds {
        for sc in &scenarios {
            let n = targets.len();
            for k in 0..n {
                let t = &targets[(k + round) % n];
                let pids: Vec<u32> = t.procs.iter().map(|(_, p)| *p).collect();
                let watch = Watch::start(pids);
                let r =
                    tokio::task::block_in_place(|| oha.run(&t.url, t.host.as_deref(), &sc.load))
                        .with_context(|| format!("{} against {}", sc.key, t.name))?;
                let used = watch.finish();
                let procs = t
                    .procs
                    .iter()
                    .zip(used)
                    .map(|((label, _), (kb, ticks))| (label.clone(), (kb, ticks as f64 * tick_ms)))
                    .collect();
                eprintln!(
                    "url-bench: round {}/{} {:<9} {:<13} {:>8} req/s  p50 {} ms  p99 {} ms  failed {}",
                    round + 1,
                    args.rounds,
                    sc.key,
                    t.name,
                    fmt_rate(r.rps),
                    fmt_ms(r.p50_ms),
                    fmt_ms(r.p99_ms),
                    r.failed
                );
                samples.entry(sc.key).or_default().push(Sample {
                    round,
                    target: t.name.clone(),
                    run: r,
                    procs,
                });
            }
        }
    }

    // Tables.
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let of = |key: &str, target: &str| -> Vec<Sample> {
        samples
            .get(key)
            .map(|v| v.iter().filter(|s| s.target == target).cloned().collect())
            .unwrap_or_default()
    };
    let med =
        |v: &[Sample], f: fn(&Run) -> f64| median(&v.iter().map(|s| f(&s.run)).collect::<Vec<_>>());
    let mut summary = serde_json::Map::new();
    for sc in &scenarios {
        // Latency rows: the fixed-rate run, and the one-at-a-time one.
        let latency_table = sc.load.rate.is_some() || sc.load.conns == 1;
        let direct = of(sc.key, "direct");
        let direct_rps = med(&direct, |r| r.rps);
        let direct_p99 = med(&direct, |r| r.p99_ms);
        let mut rows = Vec::new();
        let mut js = serde_json::Map::new();
        for name in &names {
            let v = of(sc.key, name);
            let rps: Vec<f64> = v.iter().map(|s| s.run.rps).collect();
            let (lo, hi) = min_max(&rps);
            let rps_m = median(&rps);
            let p50 = med(&v, |r| r.p50_ms);
            let p99 = med(&v, |r| r.p99_ms);
            let p999 = med(&v, |r| r.p999_ms);
            let failed: u64 = v.iter().map(|s| s.run.failed).sum();
            let ok: u64 = v.iter().map(|s| s.run.ok).sum();
            // CPU per request of the path's own processes (not the app).
            let cpu_us: Vec<f64> = v
                .iter()
                .map(|s| {
                    let ms: f64 = s
                        .procs
                        .iter()
                        .filter(|(l, _)| name == "direct" || l.as_str() != "app")
                        .map(|(_, (_, ms))| ms)
                        .sum();
                    let reqs = s.run.ok + s.run.failed;
                    if reqs == 0 {
                        f64::NAN
                    } else {
                        ms * 1000.0 / reqs as f64
                    }
                })
                .collect();
            let cpu_us = median(&cpu_us);
            let ratio = rps_m / direct_rps;
            let added = p99 - direct_p99;
            let mut row = vec![name.clone()];
            if latency_table {
                row.extend([
                    fmt_rate(rps_m),
                    fmt_ms(p50),
                    fmt_ms(p99),
                    fmt_ms(p999),
                    if name == "direct" {
                        "-".into()
                    } else {
                        format!("{added:+.2}")
                    },
                ]);
            } else {
                row.extend([
                    format!("{} ({}–{})", fmt_rate(rps_m), fmt_rate(lo), fmt_rate(hi)),
                    format!("{ratio:.2}"),
                    fmt_ms(p50),
                    fmt_ms(p99),
                ]);
            }
            row.extend([format!("{cpu_us:.0}"), format!("{failed}/{}", ok + failed)]);
            rows.push(row);
            js.insert(
                name.clone(),
                serde_json::json!({
                    "rps_median": rps_m, "rps_min": lo, "rps_max": hi,
                    "ratio_to_direct": ratio, "p50_ms": p50, "p99_ms": p99,
                    "p999_ms": p999, "added_p99_ms": added,
                    "cpu_us_per_request": cpu_us, "failed": failed, "requests": ok + failed,
                }),
            );
        }
        let headers: Vec<&str> = if latency_table {
            vec![
                "target",
                "req/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "added p99 ms",
                "tunnel CPU µs/req",
                "failed",
            ]
        } else {
            vec![
                "target",
                "req/s median (min–max)",
                "× direct",
                "p50 ms",
                "p99 ms",
                "tunnel CPU µs/req",
                "failed",
            ]
        };
        say(
            json,
            &format!("\n## {}\n{}", sc.title, table(&headers, &rows)),
        );
        summary.insert(sc.key.to_string(), serde_json::Value::Object(js));
    }
    say(
        json,
        "(medians over rounds; \"tunnel CPU\" is the CPU time of the path's own processes per request: the app's for direct, the others' without the app's)",
    );

    // Memory.
    let mut rows = Vec::new();
    let mut mem = serde_json::Map::new();
    for t in &targets {
        for (label, _) in &t.procs {
            if t.name != "direct" && label == "app" {
                continue;
            }
            let key = format!("{} {label}", t.name);
            let peak = samples
                .values()
                .flatten()
                .filter(|s| s.target == t.name)
                .filter_map(|s| s.procs.get(label).map(|(kb, _)| *kb))
                .max()
                .unwrap_or(0);
            let idle_kb = idle.get(&key).copied().unwrap_or(0);
            rows.push(vec![
                key.clone(),
                format!("{:.1}", idle_kb as f64 / 1024.0),
                format!("{:.1}", peak as f64 / 1024.0),
            ]);
            mem.insert(
                key,
                serde_json::json!({"idle_kb": idle_kb, "peak_kb": peak}),
            );
        }
    }
    say(
        json,
        &format!(
            "\n## Memory (RSS MiB; peak sampled every 100 ms over all runs)\n{}",
            table(&["process", "idle", "under load (peak)"], &rows)
        ),
    );

    // Aims.
    let get = |key: &str, target: &str, field: &str| {
        summary
            .get(key)
            .and_then(|s| s.get(target))
            .and_then(|t| t.get(field))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let mut aims = vec![];
    if summary.contains_key("keepalive") {
        let frac = get("keepalive", "cairn", "ratio_to_direct");
        aims.push(format!(
            "throughput ≥ {AIM_FRACTION_OF_DIRECT} × direct (keep-alive): {frac:.2} × → {}",
            met(frac >= AIM_FRACTION_OF_DIRECT)
        ));
    }
    for t in &tunnels_up {
        for key in ["keepalive", "new-conn"] {
            if !summary.contains_key(key) {
                continue;
            }
            let r = get(key, "cairn", "rps_median") / get(key, t.name, "rps_median");
            aims.push(format!(
                "ahead of {} ({key}): cairn/{} = {r:.2} × → {}",
                t.name,
                t.name,
                met(r > 1.0)
            ));
        }
    }
    if summary.contains_key("latency") {
        let added = get("latency", "cairn", "added_p99_ms");
        aims.push(format!(
            "added p99 at {} req/s < {AIM_ADDED_P99_MS} ms: {added:+.2} ms → {}",
            args.rate,
            met(added < AIM_ADDED_P99_MS)
        ));
    }
    say(json, &format!("\n## Aims\n{}", aims.join("\n")));

    let failed_anywhere: u64 = samples.values().flatten().map(|s| s.run.failed).sum();
    if failed_anywhere > 0 {
        let what: Vec<String> = samples
            .values()
            .flatten()
            .filter(|s| s.run.failed > 0)
            .map(|s| format!("{}: {}", s.target, s.run.errors.join(", ")))
            .collect();
        say(json, &format!("\n!! failed requests:\n{}", what.join("\n")));
    }

    if json {
        let doc = serde_json::json!({
            "machine": machine.json(),
            "command": command,
            "versions": versions,
            "args": {
                "rounds": args.rounds, "secs": args.secs, "conns": args.conns,
                "rate": args.rate, "latency_conns": args.latency_conns,
            },
            "summary": summary,
            "memory": mem,
            "aims": aims,
            "samples": samples,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    drop(tunnels_up);
    drop(cli);
    drop(node);
    drop(direct_app);
    drop(tmpdir);
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// The app directory: `web` of project `urlbench`, one instance of this
/// binary's `__serve` on the process platform, released.
fn write_app(dir: &Path, bench: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = serde_json::to_string(&[bench.to_string_lossy().as_ref(), "__serve"])?;
    let hcl = format!(
        r#"project = "{PROJECT}"

app "{APP}" {{
  build {{
    use "files" {{}}
  }}
  deploy {{
    use "process" {{
      command = {cmd}
    }}
  }}
  release {{
    use "process" {{}}
  }}
}}
"#
    );
    std::fs::write(dir.join("cairn.hcl"), hcl)?;
    Ok(())
}
