//! `cairn-bench`: benchmarks for issue 2, run against real processes.
//!
//! 1. Catalog write (SetConfig: one Raft write each) and linearizable read
//!    (ListConfig on a small scope) throughput and latency on one release
//!    `cairn-node`, from 1 client and from 64 clients (64 QUIC connections,
//!    each sequential).
//! 2. `cairn up` wall time on a copy of examples/hello, with a node already
//!    running and cold (the CLI starting its embedded node), and the share of
//!    it that is Cairn's own overhead: wall − Σ plugin work recorded in the
//!    catalog.
//!
//! The machine is shared and noisy: every figure is a median over rounds or
//! repetitions, and configurations that are compared are interleaved in the
//! same run. Tables go to stdout (to stderr with `--json`, which prints one
//! JSON document on stdout instead). Everything started is stopped on exit,
//! on error and on Ctrl-C (guards kill by pid; deployments get `cairn destroy`).
//!
//! Build and run:
//!   cargo build --release -p cairn-tests -p cairn-cli -p cairn-node --bin cairn-bench --bin cairn --bin cairn-node
//!   ./target/release/cairn-bench [--quick] [--json]

#[path = "cairn-bench/catalog.rs"]
mod catalog;
#[path = "cairn-bench/procs.rs"]
mod procs;
#[path = "cairn-bench/up.rs"]
mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use cairn_tests::bench::args::{parse_num, Argv};
use cairn_tests::bench::report::{bench_main, command_line, fsync_baseline, machine, say};
use cairn_tests::bench::stats;

use stats::{fmt_ms, fmt_rate, fmt_us, median, min_max, table};

const USAGE: &str = "\
usage: cairn-bench [--quick] [--json] [--rounds N] [--reps N] [--cold-reps N]
                   [--clients N] [--writes N1,NM] [--reads N1,NM]
                   [--skip-catalog] [--skip-up] [--bin-dir DIR] [--tmp DIR]

  --quick          smaller numbers (a smoke run)
  --json           print one JSON document on stdout (tables go to stderr)
  --rounds N       catalog rounds per configuration, interleaved (default 3; quick 1)
  --reps N         `cairn up` repetitions with a node running (default 5; quick 2)
  --cold-reps N    `cairn up` repetitions that start the embedded node (default 3; quick 1)
  --clients N      concurrent clients for the multi-client rows (default 64)
  --writes N1,NM   writes per round for 1 client and for N clients (default 2000,20000)
  --reads N1,NM    reads per round for 1 client and for N clients (default 2000,20000)
  --bin-dir DIR    where `cairn` and `cairn-node` are (default: next to this binary)
  --tmp DIR        parent of the bench's temp dir (default: the system temp dir)";

#[derive(Debug, Clone)]
struct Args {
    json: bool,
    quick: bool,
    skip_catalog: bool,
    skip_up: bool,
    bin_dir: Option<PathBuf>,
    tmp: Option<PathBuf>,
    catalog: catalog::Opts,
    up: up::Opts,
    fsync_probes: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Argv::from_env(USAGE);
    let quick = args.contains("--quick");
    let mut a = Args {
        json: false,
        quick,
        skip_catalog: false,
        skip_up: false,
        bin_dir: None,
        tmp: None,
        catalog: catalog::Opts {
            clients: 64,
            writes_single: if quick { 200 } else { 2_000 },
            writes_multi: if quick { 2_000 } else { 20_000 },
            reads_single: if quick { 200 } else { 2_000 },
            reads_multi: if quick { 2_000 } else { 20_000 },
            rounds: if quick { 1 } else { 3 },
            warmup: if quick { 64 } else { 256 },
        },
        up: up::Opts {
            reps: if quick { 2 } else { 5 },
            cold_reps: if quick { 1 } else { 3 },
        },
        fsync_probes: if quick { 200 } else { 1000 },
    };
    while let Some(flag) = args.next_flag() {
        let pair = |s: String| -> anyhow::Result<(usize, usize)> {
            let (x, y) = s
                .split_once(',')
                .with_context(|| format!("{s:?}: expected N1,NM"))?;
            Ok((parse_num::<usize>(x)?, parse_num::<usize>(y)?))
        };
        match flag.as_str() {
            "--quick" => {}
            "--json" => a.json = true,
            "--skip-catalog" => a.skip_catalog = true,
            "--skip-up" => a.skip_up = true,
            "--rounds" => a.catalog.rounds = args.num::<usize>("--rounds")?.max(1),
            "--reps" => a.up.reps = args.num::<usize>("--reps")?.max(1),
            "--cold-reps" => a.up.cold_reps = args.num::<usize>("--cold-reps")?,
            "--clients" => a.catalog.clients = args.num::<usize>("--clients")?.max(1),
            "--writes" => {
                (a.catalog.writes_single, a.catalog.writes_multi) = pair(args.value("--writes")?)?
            }
            "--reads" => {
                (a.catalog.reads_single, a.catalog.reads_multi) = pair(args.value("--reads")?)?
            }
            "--bin-dir" => a.bin_dir = Some(args.value("--bin-dir")?.into()),
            "--tmp" => a.tmp = Some(args.value("--tmp")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if a.up.reps >= 100 || a.up.cold_reps >= 100 {
        bail!("--reps and --cold-reps must be below 100");
    }
    Ok(a)
}

fn main() -> ExitCode {
    bench_main("cairn-bench", parse_args(), None, |args| async move {
        run(&args).await
    })
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no parent directory")?
            .to_path_buf(),
    };
    let cairn = bin_dir.join("cairn");
    let node_bin = bin_dir.join("cairn-node");
    for b in [&cairn, &node_bin] {
        if !b.is_file() {
            bail!(
                "{} not found; build it: cargo build --release -p cairn-tests -p cairn-cli -p cairn-node --bin cairn-bench --bin cairn --bin cairn-node",
                b.display()
            );
        }
    }
    let app_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    if !app_src.join("cairn.hcl").is_file() {
        bail!("{} has no cairn.hcl", app_src.display());
    }
    // Declared first so it is dropped last: every guard below kills its
    // processes before the directory goes away.
    let mut tmp = tempfile::Builder::new();
    tmp.prefix("cairn-bench-");
    let root = match &args.tmp {
        Some(d) => tmp.tempdir_in(d)?,
        None => tmp.tempdir()?,
    };

    let machine = machine();
    let command = command_line();
    let json = args.json;
    say(
        json,
        &format!(
            "# cairn-bench  machine: {}\n# command: {command}\n# binaries: {}  temp: {}",
            machine.summary(),
            bin_dir.display(),
            root.path().display()
        ),
    );

    let mut doc = serde_json::json!({
        "machine": machine.json(),
        "command": command,
        "binaries": bin_dir.display().to_string(),
        "quick": args.quick,
    });

    if !args.skip_catalog {
        eprintln!("catalog: fsync baseline ({} probes)", args.fsync_probes);
        let fsync = fsync_baseline(root.path(), args.fsync_probes).await?;
        eprintln!("catalog: starting cairn-node");
        let node =
            procs::NodeProc::start(&node_bin, &root.path().join("node-catalog"), "cairn-bench")
                .await?;
        let series = catalog::run(&node, &args.catalog).await?;
        drop(node);
        eprintln!("catalog: fsync baseline again");
        let fsync_after = fsync_baseline(root.path(), args.fsync_probes).await?;
        say(
            json,
            &catalog_tables(
                &args.catalog,
                &series,
                &[("before", &fsync), ("after", &fsync_after)],
            ),
        );
        doc["catalog"] = serde_json::json!({
            "options": {
                "clients": args.catalog.clients,
                "writes_single": args.catalog.writes_single,
                "writes_multi": args.catalog.writes_multi,
                "reads_single": args.catalog.reads_single,
                "reads_multi": args.catalog.reads_multi,
                "rounds": args.catalog.rounds,
                "warmup": args.catalog.warmup,
                "value_bytes": catalog::VALUE_BYTES,
            },
            "fsync_baseline_before": fsync,
            "fsync_baseline_after": fsync_after,
            "series": series,
        });
    }

    if !args.skip_up {
        eprintln!(
            "up: {} cold + {} warm runs",
            args.up.cold_reps, args.up.reps
        );
        let (warm, cold) = up::run(&args.up, &cairn, &node_bin, &app_src, root.path()).await?;
        say(json, &up_tables(&warm, cold.as_ref()));
        doc["up"] = serde_json::json!({ "warm": warm, "cold": cold });
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    drop(root);
    Ok(())
}

fn catalog_tables(
    opts: &catalog::Opts,
    series: &[catalog::Series],
    fsync: &[(&str, &stats::Latency)],
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n## Catalog on one cairn-node (release): writes = SetConfig (one Raft write each, 8-byte keys, {}-byte values); \
reads = ListConfig on an {}-variable scope (linearizable)\n",
        catalog::VALUE_BYTES,
        8
    ));
    out.push_str(&format!(
        "## {} round(s) per row, rows interleaved; throughput = median over rounds [min–max]; latency = median over rounds of each round's percentile; max = over all samples\n\n",
        opts.rounds
    ));
    let mut rows = Vec::new();
    for s in series {
        let tput: Vec<f64> = s.rounds.iter().map(|r| r.ops_per_s).collect();
        let (lo, hi) = min_max(&tput);
        let lat = |f: fn(&stats::Latency) -> u64| {
            fmt_us(median(
                &s.rounds
                    .iter()
                    .map(|r| f(&r.latency) as f64)
                    .collect::<Vec<_>>(),
            ) as u64)
        };
        let cpu = median(
            &s.rounds
                .iter()
                .map(|r| r.node_cpu_us_per_op)
                .collect::<Vec<_>>(),
        );
        let cores = median(&s.rounds.iter().map(|r| r.node_cores).collect::<Vec<_>>());
        rows.push(vec![
            match s.op {
                catalog::Op::Write => "write".to_string(),
                catalog::Op::Read => format!("read ({})", s.phase),
            },
            s.clients.to_string(),
            s.rounds.first().map(|r| r.ops).unwrap_or(0).to_string(),
            s.catalog_vars.to_string(),
            format!(
                "{} [{}–{}]",
                fmt_rate(median(&tput)),
                fmt_rate(lo),
                fmt_rate(hi)
            ),
            lat(|l| l.p50_us),
            lat(|l| l.p90_us),
            lat(|l| l.p99_us),
            fmt_us(s.pooled.max_us),
            format!("{cpu:.0}"),
            format!("{cores:.2}"),
        ]);
    }
    out.push_str(&table(
        &[
            "operation",
            "clients",
            "ops/round",
            "catalog vars",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "node CPU µs/op",
            "node cores",
        ],
        &rows,
    ));
    for (when, f) in fsync {
        out.push_str(&format!(
            "{}fsync baseline {when} the rows above, same file system (4 KiB pwrite + fdatasync, {} probes): p50 {} ms, p90 {} ms, p99 {} ms, max {} ms\n",
            if *when == "before" { "\n" } else { "" },
            f.n,
            fmt_us(f.p50_us),
            fmt_us(f.p90_us),
            fmt_us(f.p99_us),
            fmt_us(f.max_us)
        ));
    }
    out
}

fn up_tables(warm: &up::UpSummary, cold: Option<&up::UpSummary>) -> String {
    let mut out = String::new();
    out.push_str("\n## `cairn up` on a copy of examples/hello (fresh CAIRN_HOME per run; `cairn destroy` after each, untimed)\n");
    out.push_str("## overhead = wall − Σ(completed_ms − started_ms) of the operations the run recorded; share = median over runs of overhead/wall\n\n");
    let all: Vec<&up::UpSummary> = std::iter::once(warm).chain(cold).collect();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.label.clone(),
                s.runs.len().to_string(),
                fmt_ms(s.wall_p50_ms),
                format!("{}–{}", fmt_ms(s.wall_min_ms), fmt_ms(s.wall_max_ms)),
                fmt_ms(s.plugin_p50_ms),
                fmt_ms(s.overhead_p50_ms),
                format!("{:.0}%", s.overhead_share_p50 * 100.0),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "cairn up",
            "runs",
            "wall p50 ms",
            "wall min–max",
            "plugin work p50 ms",
            "overhead p50 ms",
            "overhead share",
        ],
        &rows,
    ));

    out.push_str("\nWhere the time goes (p50 ms): plugin work per operation, and the overhead split by when it happens\n\n");
    let kinds = ["build", "artifact", "deployment", "release"];
    let mut headers = vec!["cairn up"];
    headers.extend(["build", "push", "deploy", "release"]);
    headers.extend(["before 1st op", "between ops", "after last op"]);
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let mut r = vec![s.label.clone()];
            for k in kinds {
                r.push(
                    s.per_kind_p50_ms
                        .get(k)
                        .map(|v| fmt_ms(*v))
                        .unwrap_or("-".into()),
                );
            }
            r.push(fmt_ms(s.before_first_op_p50_ms));
            r.push(fmt_ms(s.between_ops_p50_ms));
            r.push(fmt_ms(s.after_last_op_p50_ms));
            r
        })
        .collect();
    out.push_str(&table(&headers, &rows));

    out.push_str("\nEach run (ms)\n\n");
    let mut rows = Vec::new();
    for s in &all {
        for (i, r) in s.runs.iter().enumerate() {
            rows.push(vec![
                format!("{} #{}", s.label, i + 1),
                fmt_ms(r.wall_ms),
                fmt_ms(r.plugin_ms),
                fmt_ms(r.overhead_ms),
                fmt_ms(r.before_first_op_ms),
                fmt_ms(r.between_ops_ms),
                fmt_ms(r.after_last_op_ms),
                r.operations.to_string(),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "run",
            "wall",
            "plugin work",
            "overhead",
            "before 1st op",
            "between ops",
            "after last op",
            "ops",
        ],
        &rows,
    ));
    let left: usize = all.iter().map(|s| s.leftover_processes).sum();
    if left > 0 {
        out.push_str(&format!(
            "\nnote: {left} process(es) were still running after `cairn destroy` and were killed by the bench\n"
        ));
    }
    out
}
