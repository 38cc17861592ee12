//! `config-bench`: issue 16's figures, side by side in one run.
//!
//! 1. Config evaluation: `config::load_with` (parse, variables, every expression, the
//!    function calls) on the largest file of `../shared/waypoint-corpus` (made ready as the
//!    corpus test does: stubs, variable values, a git repository) and on examples/hello's
//!    `cairn.hcl`, in this process, `--loads` times each, interleaved; p50/p99 per load.
//! 2. An external plugin's per-operation overhead: the same do-nothing build run by the
//!    built-in `null` builder and by `cairn-plugin-misbehave` in its `ok` mode (an external
//!    program built with cairn-plugin-sdk that makes one step and one line), `--ops` times
//!    each, interleaved, through the catalog exactly as a runner calls them; p50/p99 per
//!    operation and the difference. Describing the plugin (once per config load) is timed
//!    too.
//!
//! The machine is shared and noisy: read the medians and the ratio, not single runs.
//!
//!   cargo build --release -p cairn-tests --bin config-bench --bin cairn-plugin-misbehave
//!   ./target/release/config-bench [--loads N] [--ops N]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use cairn_cli::config;
use cairn_cli::plugins::{Catalog, ExternalWanted, OpContext, OutputSink, Stream};
use cairn_tests::bench::args::Argv;
use cairn_tests::bench::procs::bin_dir;
use cairn_tests::bench::report::{command_line, machine};
use cairn_tests::bench::stats::{fmt_us, table, Latency};
use cairn_tests::{corpus, workspace_root};

const USAGE: &str = "\
usage: config-bench [--loads N] [--ops N] [--bin-dir DIR]

  --loads N    config loads of each file (default 200)
  --ops N      build operations of each plugin (default 100)
  --bin-dir D  where cairn-plugin-misbehave is (default: next to this binary)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("config-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Quiet(usize);

impl OutputSink for Quiet {
    fn line(&mut self, _stream: Stream, _text: &str) {
        self.0 += 1;
    }
}

fn op_context(dir: &Path) -> OpContext {
    OpContext {
        project: "bench".into(),
        app: "bench".into(),
        workspace: "default".into(),
        sequence: 1,
        source_dir: dir.to_path_buf(),
        data_dir: dir.join("data"),
        self_exe: PathBuf::from("cairn"),
        env: Default::default(),
        entrypoint: None,
        out: Box::new(Quiet(0)),
    }
}

fn micros(t: Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

fn row(name: &str, l: &Latency) -> Vec<String> {
    vec![
        name.to_string(),
        l.n.to_string(),
        l.p50_us.to_string(),
        l.p99_us.to_string(),
        l.mean_us.to_string(),
    ]
}

fn run() -> anyhow::Result<()> {
    let mut a = Argv::from_env(USAGE);
    let mut loads = 200usize;
    let mut ops = 100usize;
    let mut bins: Option<PathBuf> = None;
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--loads" => loads = a.value("--loads")?.parse()?,
            "--ops" => ops = a.value("--ops")?.parse()?,
            "--bin-dir" => bins = Some(PathBuf::from(a.value("--bin-dir")?)),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    println!("config-bench: {}", command_line());
    println!("{}", machine().summary());

    // 1. Config evaluation.
    let corpus_dir = corpus::dir().context("../shared/waypoint-corpus is absent")?;
    let largest = corpus::files(&corpus_dir)
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .context("an empty corpus")?;
    let prepared = corpus::prepare(&largest)?;
    let big = prepared.dir.path().join("waypoint.hcl");
    let big_inputs = config::Inputs {
        vars: corpus::values(&prepared.name)
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    };
    let hello = workspace_root().join("examples/hello/cairn.hcl");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (mut big_us, mut hello_us) = (Vec::new(), Vec::new());
    for _ in 0..loads {
        let t = Instant::now();
        let cfg = config::load_with(&big, &big_inputs);
        big_us.push(micros(t));
        if let Err(e) = cfg {
            bail!("{} does not load: {e}", prepared.name);
        }
        let t = Instant::now();
        config::load(&hello).context("examples/hello")?;
        hello_us.push(micros(t));
    }
    let big_l = Latency::of(&mut big_us);
    let hello_l = Latency::of(&mut hello_us);
    println!();
    println!("1. config evaluation (config::load_with, in process)");
    println!(
        "{}",
        table(
            &["file", "loads", "p50 µs", "p99 µs", "mean µs"],
            &[
                row(
                    &format!("{} ({} bytes)", prepared.name, size(&largest)),
                    &big_l
                ),
                row(
                    &format!("examples/hello ({} bytes)", size(&hello)),
                    &hello_l
                ),
            ]
        )
    );

    // 2. External plugin overhead.
    let bin = bin_dir(bins.as_ref())?;
    let program = bin.join("cairn-plugin-misbehave");
    if !program.exists() {
        bail!(
            "{} is missing: cargo build --release -p cairn-tests --bin cairn-plugin-misbehave",
            program.display()
        );
    }
    let work = tempfile::tempdir()?;
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::os::unix::fs::symlink(&program, plugins.join("cairn-plugin-misbehave"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let base = Catalog::builtin();
    let wanted = [ExternalWanted {
        name: "misbehave".into(),
        timeout: None,
        declared: true,
        checksum: None,
    }];
    let mut describe_us = Vec::new();
    let mut catalog = None;
    for _ in 0..20 {
        let t = Instant::now();
        let c = rt.block_on(base.with_externals(&wanted, std::slice::from_ref(&plugins)))?;
        describe_us.push(micros(t));
        catalog = Some(c);
    }
    let catalog = catalog.context("no catalog")?;
    let describe_l = Latency::of(&mut describe_us);
    let builtin = catalog.builder("null", &serde_json::json!({}))?;
    let external = rt.block_on(async {
        tokio::task::block_in_place(|| {
            catalog.builder("misbehave", &serde_json::json!({ "mode": "ok" }))
        })
    })?;
    let (mut b_us, mut e_us) = (Vec::new(), Vec::new());
    for i in 0..ops + 5 {
        let mut ctx = op_context(work.path());
        let t = Instant::now();
        rt.block_on(builtin.build(&mut ctx))?;
        let b = micros(t);
        let mut ctx = op_context(work.path());
        let t = Instant::now();
        let v = rt.block_on(external.build(&mut ctx))?;
        let e = micros(t);
        if v.type_name != "misbehave.Thing" {
            bail!("the external build made a {}", v.type_name);
        }
        if i >= 5 {
            // the first few warm the page cache and the runtime
            b_us.push(b);
            e_us.push(e);
        }
    }
    let b_l = Latency::of(&mut b_us);
    let e_l = Latency::of(&mut e_us);
    println!();
    println!("2. one build operation, built-in null vs external cairn-plugin-misbehave (mode ok)");
    println!(
        "{}",
        table(
            &["plugin", "ops", "p50 µs", "p99 µs", "mean µs"],
            &[
                row("built-in null", &b_l),
                row("external misbehave", &e_l),
                row("describe (once per config load)", &describe_l),
            ]
        )
    );
    println!(
        "external overhead per operation: p50 +{} ms (a process started, hello, request, answer; the built-in does nothing in {} µs)",
        fmt_us(e_l.p50_us.saturating_sub(b_l.p50_us)),
        b_l.p50_us
    );
    Ok(())
}
