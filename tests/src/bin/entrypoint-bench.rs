//! `entrypoint-bench`: `cairn-entrypoint` (the static wrapper every app
//! instance runs under) against real processes.
//!
//! 1. Binary size of the static entrypoint (what ships into containers) and
//!    of the release (dynamic) one.
//! 2. Idle: entrypoints wrapping `sleep 3600`, side by side over one window:
//!    the static one deployed by `cairn up` (connected, registered), the
//!    static one without cluster settings, the release one both ways, and
//!    for contrast the process platform's supervisor and the node. RSS
//!    after settling, CPU over the window (ticks and schedstat), wake-ups.
//! 3. Logs to `cairn logs -f`: a deployed logger (this binary's `__serve`
//!    mode) writes bursts (throughput, drops) and paced runs (latency).
//! 4. The app's own slowdown: the logger writing N lines as fast as it can,
//!    directly (to /dev/null, to `cat`) and under the entrypoint
//!    (connected, CAIRN_DISABLE=1, without cluster settings), interleaved.
//! 5. Exec round trip: `cairn exec -- true` against `docker exec C true` on
//!    a locally imported busybox image, interleaved, with a breakdown.
//!
//! The machine is shared and noisy: figures are medians over repetitions
//! and every comparison is made side by side in the same run. Tables go to
//! stdout (to stderr with `--json`, which prints one JSON document on
//! stdout instead). Everything started is stopped on exit, on error and on
//! Ctrl-C (guards kill by pid; deployments get `cairn destroy`; the
//! container and image are removed).
//!
//! Build and run:
//!   cargo build --release -p cairn-tests -p cairn-cli -p cairn-node -p cairn-entrypoint \
//!     --bin entrypoint-bench --bin cairn --bin cairn-node --bin cairn-entrypoint
//!   (with one `--bin`, cargo builds that binary only, whatever `-p` says)
//!   entrypoint/build-static.sh
//!   ./target/release/entrypoint-bench [--quick] [--json]

#[path = "entrypoint-bench/docker.rs"]
mod docker;
#[path = "entrypoint-bench/emit.rs"]
mod emit;
#[path = "entrypoint-bench/exec.rs"]
mod exec;
#[path = "entrypoint-bench/idle.rs"]
mod idle;
#[path = "entrypoint-bench/logs.rs"]
mod logs;
#[path = "entrypoint-bench/procs.rs"]
mod procs;
#[path = "entrypoint-bench/slowdown.rs"]
mod slowdown;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use cairn_protocol::instance::DeploymentRef;
use cairn_tests::bench::args::{parse_num, Argv};
use cairn_tests::bench::report::{bench_main, command_line, machine, say};
use cairn_tests::bench::stats::{self, fmt_ms, fmt_rate, fmt_us, table};

use procs::{Cli, NodeProc};

const USAGE: &str = "\
usage: entrypoint-bench [--quick] [--json] [--idle-secs S] [--lines N] [--log-reps N]
                        [--rates R1,R2] [--paced-secs S] [--batch B] [--reps N]
                        [--exec-runs N] [--skip-idle] [--skip-logs] [--skip-slowdown]
                        [--skip-exec] [--skip-docker] [--exec-variants LIST]
                        [--bin-dir DIR] [--static-entrypoint PATH]
                        [--busybox PATH] [--tmp DIR]

  --quick          smaller numbers (a smoke run)
  --json           print one JSON document on stdout (tables go to stderr)
  --idle-secs S    idle window (default 60; quick 10), after 5 s of settling
  --lines N        lines per burst (logs) and per slowdown run (default 200000; quick 20000)
  --log-reps N     log rounds: one burst and one run per paced rate each (default 3; quick 1)
  --rates R1,R2    paced rates in lines/s (default 2000,10000)
  --paced-secs S   length of each paced run (default 10; quick 3)
  --batch B        the logger flushes every B lines when writing as fast as it can
                   (default 1: one write per line, like an app logging one event at a time)
  --reps N         slowdown repetitions, configurations interleaved (default 5; quick 2)
  --exec-runs N    timed exec rounds after 5 warm-ups (default 200; quick 30)
  --skip-docker    leave out the docker exec row (as when docker is unavailable)
  --exec-variants LIST
                   only these exec rows, comma-separated: cairn, docker, version,
                   new-conn, open-conn (default: all)
  --bin-dir DIR    where cairn, cairn-node and cairn-entrypoint are (default: next to this binary)
  --static-entrypoint PATH
                   the static entrypoint (default: target/static/x86_64-unknown-linux-gnu/
                   release/cairn-entrypoint, from entrypoint/build-static.sh)
  --busybox PATH   a static busybox for the Docker image (default: the entrypoint tests'
                   cache in target/static/busybox, else `apt-get download busybox-static`)
  --tmp DIR        parent of the bench's temp dir (default: the system temp dir)";

const PROJECT: &str = "epbench";
/// The project's stated aims.
const AIM_RSS_MIB: f64 = 4.0;
const AIM_EXEC_MS: f64 = 20.0;

#[derive(Debug, Clone)]
struct Args {
    json: bool,
    quick: bool,
    skip_idle: bool,
    skip_logs: bool,
    skip_slowdown: bool,
    skip_exec: bool,
    skip_docker: bool,
    bin_dir: Option<PathBuf>,
    static_ep: Option<PathBuf>,
    busybox: Option<PathBuf>,
    tmp: Option<PathBuf>,
    idle: idle::Opts,
    logs: logs::Opts,
    slow: slowdown::Opts,
    exec: exec::Opts,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Argv::from_env(USAGE);
    let quick = args.contains("--quick");
    let lines = if quick { 20_000 } else { 200_000 };
    let mut a = Args {
        json: false,
        quick,
        skip_idle: false,
        skip_logs: false,
        skip_slowdown: false,
        skip_exec: false,
        skip_docker: false,
        bin_dir: None,
        static_ep: None,
        busybox: None,
        tmp: None,
        idle: idle::Opts {
            idle_secs: if quick { 10 } else { 60 },
            settle_secs: 5,
        },
        logs: logs::Opts {
            lines,
            reps: if quick { 1 } else { 3 },
            rates: vec![2_000, 10_000],
            paced_secs: if quick { 3 } else { 10 },
            batch: 1,
        },
        slow: slowdown::Opts {
            lines,
            reps: if quick { 2 } else { 5 },
            batch: 1,
        },
        exec: exec::Opts {
            runs: if quick { 30 } else { 200 },
            warmup: 5,
            only: Vec::new(),
        },
    };
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--quick" => {}
            "--json" => a.json = true,
            "--skip-idle" => a.skip_idle = true,
            "--skip-logs" => a.skip_logs = true,
            "--skip-slowdown" => a.skip_slowdown = true,
            "--skip-exec" => a.skip_exec = true,
            "--skip-docker" => a.skip_docker = true,
            "--exec-variants" => {
                a.exec.only = args
                    .value("--exec-variants")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "--idle-secs" => a.idle.idle_secs = args.num::<u64>("--idle-secs")?.max(1),
            "--lines" => {
                let n = args.num::<u64>("--lines")?.max(1);
                a.logs.lines = n;
                a.slow.lines = n;
            }
            "--log-reps" => a.logs.reps = args.num::<u64>("--log-reps")?.max(1) as usize,
            "--rates" => {
                a.logs.rates = args
                    .value("--rates")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(parse_num::<u64>)
                    .collect::<anyhow::Result<Vec<u64>>>()?;
                if a.logs.rates.contains(&0) {
                    bail!("--rates: a rate must be above 0");
                }
            }
            "--paced-secs" => a.logs.paced_secs = args.num::<u64>("--paced-secs")?.max(1),
            "--batch" => {
                let b = args.num::<u64>("--batch")?.max(1);
                a.logs.batch = b;
                a.slow.batch = b;
            }
            "--reps" => a.slow.reps = args.num::<u64>("--reps")?.max(1) as usize,
            "--exec-runs" => a.exec.runs = args.num::<u64>("--exec-runs")?.max(1) as usize,
            "--bin-dir" => a.bin_dir = Some(args.value("--bin-dir")?.into()),
            "--static-entrypoint" => a.static_ep = Some(args.value("--static-entrypoint")?.into()),
            "--busybox" => a.busybox = Some(args.value("--busybox")?.into()),
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
    // The logger modes run as apps under the entrypoint: no runtime, no
    // argument parsing of the bench's own.
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("__emit") => return emit::main_emit(&argv[2..]),
        Some("__serve") => return emit::main_serve(&argv[2..]),
        _ => {}
    }
    bench_main("entrypoint-bench", parse_args(), None, |args| async move {
        run(&args).await
    })
}

/// The connection settings of a hand-run entrypoint.
#[derive(Debug, Clone)]
pub struct EntrypointEnv {
    pub addrs: String,
    pub ca_fingerprint: String,
    pub deployment: u64,
    pub token: String,
}

/// `BIN --` with the entrypoint's variables as asked (none inherited from
/// the bench's environment), stdin from /dev/null, in `cwd`, in a process
/// group of its own. The caller adds the app's command.
pub fn entrypoint_command(
    bin: &Path,
    env: Option<&EntrypointEnv>,
    disable: bool,
    cwd: &Path,
) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    for var in [
        "CAIRN_ADDRS",
        "CAIRN_CA_FINGERPRINT",
        "CAIRN_DEPLOYMENT_ID",
        "CAIRN_ENTRYPOINT_TOKEN",
        "CAIRN_DISABLE",
        "CAIRN_ENV_FIXED",
    ] {
        c.env_remove(var);
    }
    if let Some(e) = env {
        c.env("CAIRN_ADDRS", &e.addrs)
            .env("CAIRN_CA_FINGERPRINT", &e.ca_fingerprint)
            .env("CAIRN_DEPLOYMENT_ID", e.deployment.to_string())
            .env("CAIRN_ENTRYPOINT_TOKEN", &e.token);
    }
    if disable {
        c.env("CAIRN_DISABLE", "1");
    }
    c.arg("--")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .process_group(0);
    c
}

/// The binaries this run uses.
struct Bins {
    cairn: PathBuf,
    node: PathBuf,
    release_ep: PathBuf,
    static_ep: PathBuf,
    static_found: bool,
    bench: PathBuf,
    bin_dir: PathBuf,
}

impl Bins {
    /// The entrypoint that is measured (deployed, wrapped, in the image).
    fn measured(&self) -> &Path {
        if self.static_found {
            &self.static_ep
        } else {
            &self.release_ep
        }
    }

    /// How tables name it.
    fn measured_label(&self) -> &'static str {
        if self.static_found {
            "static"
        } else {
            "RELEASE (static missing)"
        }
    }
}

fn find_bins(args: &Args) -> anyhow::Result<Bins> {
    let bench = std::env::current_exe()?;
    let bin_dir = cairn_tests::bench::procs::bin_dir(args.bin_dir.as_ref())?;
    let b = |name: &str| bin_dir.join(name);
    let (cairn, node, release_ep) = (b("cairn"), b("cairn-node"), b("cairn-entrypoint"));
    for p in [&cairn, &node, &release_ep] {
        if !p.is_file() {
            bail!(
                "{} not found; build it: cargo build --release -p cairn-tests -p cairn-cli -p cairn-node -p cairn-entrypoint --bin entrypoint-bench --bin cairn --bin cairn-node --bin cairn-entrypoint",
                p.display()
            );
        }
    }
    let static_ep = cairn_tests::bench::procs::static_entrypoint(&bin_dir, args.static_ep.as_ref());
    let static_found = static_ep.is_file();
    Ok(Bins {
        cairn,
        node,
        release_ep,
        static_ep,
        static_found,
        bench,
        bin_dir,
    })
}

/// Where the entrypoint tests keep Debian's static busybox
/// (`target/static/busybox`): next to the static entrypoint's target dir,
/// next to ours, or the workspace's. The first that holds one, else the
/// workspace's (where `apt-get download` then puts it, as the tests do).
fn busybox_cache(bins: &Bins) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/static/busybox");
    let candidates = [
        bins.static_ep.ancestors().nth(3).map(|t| t.join("busybox")),
        bins.bin_dir.parent().map(|t| t.join("static/busybox")),
        Some(workspace.clone()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|c| c.join("x/bin/busybox").is_file())
        .unwrap_or(workspace)
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let bins = find_bins(args)?;
    let json = args.json;
    if !bins.static_found {
        let msg = format!(
            "!! the static entrypoint {} is missing (build it with entrypoint/build-static.sh, or pass --static-entrypoint): the rows below measure the RELEASE (dynamic) {} instead, labelled so",
            bins.static_ep.display(),
            bins.release_ep.display()
        );
        eprintln!("{msg}");
        say(json, &msg);
    }
    // Declared first so it is dropped last: every guard below stops its
    // processes before the directory goes away.
    let tmpdir = cairn_tests::bench::procs::temp_dir("epb-", args.tmp.as_ref())?;
    let root = tmpdir.path().to_path_buf();

    let machine = machine();
    let command = command_line();
    let skip_docker = args.skip_docker
        || !(args.exec.only.is_empty() || args.exec.only.iter().any(|v| v == "docker"));
    let docker_ok = !skip_docker && docker::available();
    let docker_version = if docker_ok {
        docker::version()
    } else {
        "unavailable".into()
    };
    say(
        json,
        &format!(
            "# entrypoint-bench  machine: {}\n# command: {command}\n# binaries: cairn {}, cairn-node {}, cairn-entrypoint (release) {}, cairn-entrypoint (static) {}{}\n# measured entrypoint: {} ({})\n# docker: {docker_version}  temp: {}",
            machine.summary(),
            bins.cairn.display(),
            bins.node.display(),
            bins.release_ep.display(),
            bins.static_ep.display(),
            if bins.static_found { "" } else { " [MISSING]" },
            bins.measured().display(),
            bins.measured_label(),
            root.display()
        ),
    );
    let mut doc = serde_json::json!({
        "machine": machine.json(),
        "command": command,
        "binaries": {
            "cairn": bins.cairn.display().to_string(),
            "cairn_node": bins.node.display().to_string(),
            "entrypoint_release": bins.release_ep.display().to_string(),
            "entrypoint_static": bins.static_ep.display().to_string(),
            "static_found": bins.static_found,
            "measured": bins.measured().display().to_string(),
        },
        "docker": docker_version,
        "quick": args.quick,
    });

    // 1. Sizes.
    let sizes = sizes(&bins)?;
    say(json, &sizes_table(&sizes));
    doc["sizes"] = serde_json::to_value(&sizes)?;

    // One node, one CLI home, two apps deployed with the measured
    // entrypoint: `idle` (sleep 3600) and `logger` (this binary, __serve).
    eprintln!("setup: starting cairn-node");
    let node = NodeProc::start(&bins.node, &root.join("node"), "entrypoint-bench").await?;
    let mut cli = Cli::new(root.join("home"), &bins.cairn, bins.measured(), &node)?;
    let apps = root.join("apps");
    let idle_dir = apps.join("idle");
    let logger_dir = apps.join("logger");
    let sock = root.join("ctl.sock");
    write_app(&idle_dir, "idle", &["sleep", "3600"])?;
    let bench = bins.bench.to_string_lossy().into_owned();
    let sock_s = sock.to_string_lossy().into_owned();
    write_app(&logger_dir, "logger", &[&bench, "__serve", &sock_s])?;
    let listener = logs::listen(&sock)?;
    eprintln!("setup: cairn up (idle, logger)");
    let up_idle = tokio::task::block_in_place(|| cli.up(&idle_dir))?;
    let up_logger = tokio::task::block_in_place(|| cli.up(&logger_dir))?;
    eprintln!(
        "setup: deployed in {} and {} ms",
        fmt_ms(stats::ms(up_idle)),
        fmt_ms(stats::ms(up_logger))
    );
    let (idle_instance, idle_pid) = cli
        .wait_connected("idle", |_| true, Duration::from_secs(30))
        .await?;
    let deployment = node.deployment_id(PROJECT, "idle").await?;
    let cluster = EntrypointEnv {
        addrs: node.ready.addr.clone(),
        ca_fingerprint: node.ready.ca_fingerprint.clone(),
        deployment,
        token: node.entrypoint_token("idle", deployment).await?,
    };
    let hand = root.join("hand");
    std::fs::create_dir_all(&hand)?;

    // 2. Idle.
    if !args.skip_idle {
        let rows = idle_section(&bins, &cli, &node, &cluster, idle_pid, &hand, &args.idle).await?;
        say(json, &idle_table(&rows, args.idle.settle_secs));
        doc["idle"] = serde_json::to_value(&rows)?;
    }

    // 3. Logs.
    if !args.skip_logs {
        eprintln!("logs: connecting to the deployed logger");
        let mut lb = logs::LogBench::connect(
            &listener,
            logs::Deployed {
                cli: &cli,
                app: "logger",
                app_dir: &logger_dir,
                log_file: cli.instance_log("logger", 1, 0),
            },
            &root,
            args.logs.batch,
            node.ready.pid,
        )
        .await?;
        let res = logs::run(&mut lb, &args.logs).await?;
        drop(lb);
        say(json, &logs_tables(&res, &args.logs, bins.measured_label()));
        doc["logs"] = serde_json::json!({
            "options": {
                "lines": args.logs.lines,
                "reps": args.logs.reps,
                "rates": args.logs.rates,
                "paced_secs": args.logs.paced_secs,
                "batch": args.logs.batch,
            },
            "results": res,
        });
    }
    drop(listener);

    // 4. Slowdown.
    if !args.skip_slowdown {
        let dir = hand.join("slowdown");
        std::fs::create_dir_all(&dir)?;
        let env = slowdown::Env {
            bench: &bins.bench,
            entrypoint: bins.measured(),
            cluster: &cluster,
            dir: &dir,
        };
        let samples = slowdown::run(&env, &args.slow).await?;
        let summary = slowdown::summarize(&samples, bins.measured_label());
        say(json, &slowdown_table(&summary, &args.slow));
        doc["slowdown"] = serde_json::json!({
            "options": {"lines": args.slow.lines, "reps": args.slow.reps, "batch": args.slow.batch},
            "summary": summary,
            "samples": samples,
        });
    }

    // 5. Exec.
    if !args.skip_exec {
        let container = if docker_ok {
            eprintln!("exec: building a busybox image for docker exec");
            let cache = busybox_cache(&bins);
            let busybox = docker::static_busybox(args.busybox.as_deref(), &cache)?;
            let ep = bins.static_found.then_some(bins.static_ep.as_path());
            Some(tokio::task::block_in_place(|| {
                docker::Container::start(&busybox, ep, &root)
            })?)
        } else {
            let msg = if skip_docker {
                "!! --skip-docker / --exec-variants: the docker exec row is SKIPPED"
            } else {
                "!! docker is not available (`docker info` failed): the docker exec row is SKIPPED"
            };
            eprintln!("{msg}");
            say(json, msg);
            None
        };
        let targets = exec::Targets {
            cli: &cli,
            app_dir: &idle_dir,
            target: DeploymentRef {
                project: PROJECT.into(),
                app: "idle".into(),
                workspace: cairn_protocol::types::DEFAULT_WORKSPACE.into(),
                sequence: None,
            },
            instance: idle_instance.clone(),
            dial: node.dial(),
            container: container.as_ref().map(|c| c.name.clone()),
        };
        eprintln!(
            "exec: {} warm-up + {} timed rounds",
            args.exec.warmup, args.exec.runs
        );
        let series = exec::run(&targets, &args.exec).await?;
        let pid1 = container.as_ref().map(|c| c.pid1.clone());
        drop(container);
        say(json, &exec_table(&series, pid1.as_deref(), &args.exec));
        doc["exec"] = serde_json::json!({
            "options": {"runs": args.exec.runs, "warmup": args.exec.warmup},
            "container_pid1": pid1,
            "series": series,
        });
    }

    eprintln!("cleanup: cairn destroy, stopping the node");
    drop(cli);
    drop(node);
    drop(tmpdir);
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

/// An app directory with a `cairn.hcl` deploying `command` on the process
/// platform (one instance, no port, not restarted).
fn write_app(dir: &Path, app: &str, command: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = serde_json::to_string(command)?;
    let hcl = format!(
        r#"project = "{PROJECT}"

app "{app}" {{
  build {{
    use "files" {{}}
  }}
  deploy {{
    use "process" {{
      command = {cmd}
      wait_for_port = false
      restart = false
    }}
  }}
}}
"#
    );
    std::fs::write(dir.join("cairn.hcl"), hcl)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// 1. Sizes

#[derive(Debug, Clone, serde::Serialize)]
struct Size {
    label: String,
    path: String,
    bytes: u64,
    /// No program interpreter: nothing to load at run time.
    is_static: bool,
}

fn sizes(bins: &Bins) -> anyhow::Result<Vec<Size>> {
    let mut out = Vec::new();
    let mut one = |label: &str, p: &Path| -> anyhow::Result<()> {
        let bytes = std::fs::read(p).with_context(|| p.display().to_string())?;
        out.push(Size {
            label: label.into(),
            path: p.display().to_string(),
            bytes: bytes.len() as u64,
            is_static: !has_interpreter(&bytes),
        });
        Ok(())
    };
    if bins.static_found {
        one(
            "cairn-entrypoint, static (build-static.sh)",
            &bins.static_ep,
        )?;
    }
    one(
        "cairn-entrypoint, release (for reference)",
        &bins.release_ep,
    )?;
    Ok(out)
}

/// Whether an ELF file has a PT_INTERP program header (a dynamic loader).
fn has_interpreter(b: &[u8]) -> bool {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let mut off = [0u8; 8];
    off.copy_from_slice(&b[0x20..0x28]);
    let phoff = u64::from_le_bytes(off) as usize;
    let (size, n) = (u16_at(0x36), u16_at(0x38));
    (0..n).any(|i| {
        let o = phoff + i * size;
        b.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == 3)
    })
}

fn mib(bytes: f64) -> f64 {
    bytes / 1024.0 / 1024.0
}

fn sizes_table(sizes: &[Size]) -> String {
    let mut out = String::from("\n## 1. Binary size\n\n");
    let rows: Vec<Vec<String>> = sizes
        .iter()
        .map(|s| {
            vec![
                s.label.clone(),
                s.bytes.to_string(),
                format!("{:.2}", mib(s.bytes as f64)),
                if s.is_static { "static" } else { "dynamic" }.into(),
                s.path.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["binary", "bytes", "MiB", "linking", "path"],
        &rows,
    ));
    out
}

// ---------------------------------------------------------------------------
// 2. Idle

async fn idle_section(
    bins: &Bins,
    cli: &Cli,
    node: &NodeProc,
    cluster: &EntrypointEnv,
    deployed_pid: u32,
    hand: &Path,
    opts: &idle::Opts,
) -> anyhow::Result<Vec<idle::IdleRow>> {
    let ep = bins.measured_label();
    let log = |n: &str| hand.join(format!("idle-{n}.log"));
    eprintln!("idle: starting hand-run entrypoints");
    let local = idle::spawn_sleeper(bins.measured(), None, hand, &log("local"))?;
    let rel_conn = idle::spawn_sleeper(
        &bins.release_ep,
        Some(cluster),
        hand,
        &log("release-connected"),
    )?;
    let rel_local = idle::spawn_sleeper(&bins.release_ep, None, hand, &log("release-local"))?;
    idle::wait_for_sleep(deployed_pid, None).await?;
    for (g, n) in [
        (&local, "local"),
        (&rel_conn, "release-connected"),
        (&rel_local, "release-local"),
    ] {
        idle::wait_for_sleep(g.pid(), Some(&log(n))).await?;
    }
    let rel_pid = rel_conn.pid();
    cli.wait_connected("idle", |p| p == rel_pid, Duration::from_secs(30))
        .await
        .with_context(|| {
            format!(
                "its output:\n{}",
                procs::tail(&log("release-connected"), 20)
            )
        })?;
    let supervisor = procs::parent_of(deployed_pid);
    let probe = |label: String, binary: &str, pid: u32, entrypoint: bool| idle::Probe {
        label,
        binary: binary.into(),
        pid,
        entrypoint,
    };
    let mut probes = vec![
        probe(
            "entrypoint, connected (deployed by `cairn up`, registered)".into(),
            ep,
            deployed_pid,
            true,
        ),
        probe(
            "entrypoint, no cluster settings (local-only)".into(),
            ep,
            local.pid(),
            true,
        ),
        probe(
            "entrypoint, connected (by hand, registered)".into(),
            "release",
            rel_pid,
            true,
        ),
        probe(
            "entrypoint, no cluster settings (local-only)".into(),
            "release",
            rel_local.pid(),
            true,
        ),
    ];
    if procs::comm(supervisor) == "cairn" {
        probes.push(probe(
            "contrast: `cairn __supervise` of row 1 (process platform)".into(),
            "cairn",
            supervisor,
            false,
        ));
    }
    probes.push(probe(
        "contrast: cairn-node (serving these instances)".into(),
        "cairn-node",
        node.ready.pid,
        false,
    ));
    let rows = idle::measure(&probes, opts).await?;
    drop((local, rel_conn, rel_local));
    Ok(rows)
}

fn idle_table(rows: &[idle::IdleRow], settle: u64) -> String {
    let window = rows.first().map_or(0.0, |r| r.window_s);
    let mut out = format!(
        "\n## 2. Idle, each wrapping `sleep 3600`, side by side: RSS after {settle} s of settling (max of the samples at the window's start and end); CPU over one {window:.0} s window\n"
    );
    out.push_str(&format!(
        "## CPU from utime+stime ticks ({} Hz; resolution {:.3} ms/min over this window) and from schedstat (ns); wake-ups = context switches, all threads. Aim: RSS < {AIM_RSS_MIB} MiB, no measurable idle CPU\n\n",
        cairn_tests::bench::procs::ticks_per_s(),
        1000.0 / cairn_tests::bench::procs::ticks_per_s() * 60.0 / window.max(1.0)
    ));
    let r: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let kb = |k: u64| format!("{:.2}", k as f64 / 1024.0);
            vec![
                r.label.clone(),
                r.binary.clone(),
                format!("{:.2}", r.rss_mib),
                format!("{:.2}", r.hwm_mib),
                kb(r.end.rss_anon_kb),
                kb(r.end.rss_file_kb),
                kb(r.end.pss_kb),
                r.end.threads.to_string(),
                format!("{:.3}", r.cpu_pct),
                format!("{:.1}", r.cpu_ms_per_min),
                format!("{:.2}", r.sched_ms_per_min),
                format!("{:.0}", r.wakeups_per_min),
                if !r.entrypoint {
                    "-".into()
                } else if r.rss_mib < AIM_RSS_MIB {
                    "yes".into()
                } else {
                    "NO".into()
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "process",
            "binary",
            "RSS MiB",
            "HWM MiB",
            "anon MiB",
            "file MiB",
            "PSS MiB",
            "threads",
            "CPU % core",
            "CPU ms/min",
            "sched ms/min",
            "wake-ups/min",
            "RSS < 4 MiB",
        ],
        &r,
    ));
    out
}

// ---------------------------------------------------------------------------
// 3. Logs

fn logs_tables(res: &logs::LogResults, opts: &logs::Opts, ep: &str) -> String {
    let mut out = format!(
        "\n## 3. Logs to `cairn logs -f --json --instance {}`: the app (deployed by `cairn up`, process platform, {ep} entrypoint) writes `<seq> <unix_ns> <run>` lines, one write per {} line(s) in bursts\n",
        res.instance,
        opts.batch
    );
    out.push_str("## delivered = distinct lines read from `cairn logs -f`; dropped = Σ the node's \"N lines dropped by the entrypoint\" notices; unaccounted = emitted − delivered − dropped; pass-through = lines in the instance log (the entrypoint's stdout via the supervisor)\n");
    out.push_str("## latency = time the bench read the line − the line's unix_ns; e2e lines/s = delivered ÷ (last line read − app's first line)\n");
    out.push_str("## CPU (schedstat): bursts, from the run's start until its lines were in; paced, while the app was writing, as % of one core\n\n");
    let lat = |us: u64| fmt_us(us);
    let mut rows: Vec<Vec<String>> = res
        .bursts
        .iter()
        .map(|r| {
            vec![
                format!("burst #{}", r.run),
                r.emitted.to_string(),
                fmt_ms(r.emit_ms),
                fmt_rate(r.emit_lines_per_s),
                r.delivered.to_string(),
                r.dropped_reported.to_string(),
                r.unaccounted.to_string(),
                r.lag_batches.to_string(),
                fmt_rate(r.e2e_lines_per_s),
                fmt_ms(r.tail_ms),
                r.passthrough.to_string(),
                format!("{:.0}", r.entrypoint_cpu_ms),
                format!("{:.0}", r.node_cpu_ms),
                format!("{:.0}", r.follower_cpu_ms),
                lat(r.latency.p50_us),
                lat(r.latency.p99_us),
                lat(r.latency.max_us),
            ]
        })
        .collect();
    if res.bursts.len() > 1 {
        let b: Vec<&logs::LogRun> = res.bursts.iter().collect();
        let m = |f: &dyn Fn(&logs::LogRun) -> f64| logs::med(&b, f);
        rows.push(vec![
            "median".into(),
            format!("{:.0}", m(&|r| r.emitted as f64)),
            fmt_ms(m(&|r| r.emit_ms)),
            fmt_rate(m(&|r| r.emit_lines_per_s)),
            format!("{:.0}", m(&|r| r.delivered as f64)),
            format!("{:.0}", m(&|r| r.dropped_reported as f64)),
            format!("{:.0}", m(&|r| r.unaccounted as f64)),
            format!("{:.0}", m(&|r| r.lag_batches as f64)),
            fmt_rate(m(&|r| r.e2e_lines_per_s)),
            fmt_ms(m(&|r| r.tail_ms)),
            format!("{:.0}", m(&|r| r.passthrough as f64)),
            format!("{:.0}", m(&|r| r.entrypoint_cpu_ms)),
            format!("{:.0}", m(&|r| r.node_cpu_ms)),
            format!("{:.0}", m(&|r| r.follower_cpu_ms)),
            lat(m(&|r| r.latency.p50_us as f64) as u64),
            lat(m(&|r| r.latency.p99_us as f64) as u64),
            lat(m(&|r| r.latency.max_us as f64) as u64),
        ]);
    }
    out.push_str(&table(
        &[
            "burst",
            "emitted",
            "app write ms",
            "app lines/s",
            "delivered",
            "dropped",
            "unaccounted",
            "lag batches",
            "e2e lines/s",
            "last line after app end ms",
            "pass-through",
            "entrypoint CPU ms",
            "node CPU ms",
            "logs -f CPU ms",
            "p50 ms",
            "p99 ms",
            "max ms",
        ],
        &rows,
    ));

    out.push_str(&format!(
        "\nPaced ({} s per run; per rate: each run, then the median of the runs' percentiles and the max over runs)\n\n",
        opts.paced_secs
    ));
    let mut rows = Vec::new();
    for &rate in &opts.rates {
        let mine: Vec<&logs::LogRun> = res.paced.iter().filter(|r| r.rate == rate).collect();
        for r in &mine {
            rows.push(vec![
                format!("{rate}/s #{}", r.run),
                r.emitted.to_string(),
                fmt_rate(r.emit_lines_per_s),
                r.delivered.to_string(),
                r.dropped_reported.to_string(),
                r.unaccounted.to_string(),
                r.lag_batches.to_string(),
                r.passthrough.to_string(),
                format!("{:.1}", r.entrypoint_cpu_pct_writing),
                format!("{:.1}", r.node_cpu_pct_writing),
                lat(r.latency.p50_us),
                lat(r.latency.p90_us),
                lat(r.latency.p99_us),
                lat(r.latency.max_us),
            ]);
        }
        if mine.len() > 1 {
            let m = |f: &dyn Fn(&logs::LogRun) -> f64| logs::med(&mine, f);
            rows.push(vec![
                format!("{rate}/s median"),
                format!("{:.0}", m(&|r| r.emitted as f64)),
                fmt_rate(m(&|r| r.emit_lines_per_s)),
                format!("{:.0}", m(&|r| r.delivered as f64)),
                format!("{:.0}", m(&|r| r.dropped_reported as f64)),
                format!("{:.0}", m(&|r| r.unaccounted as f64)),
                format!("{:.0}", m(&|r| r.lag_batches as f64)),
                format!("{:.0}", m(&|r| r.passthrough as f64)),
                format!("{:.1}", m(&|r| r.entrypoint_cpu_pct_writing)),
                format!("{:.1}", m(&|r| r.node_cpu_pct_writing)),
                lat(m(&|r| r.latency.p50_us as f64) as u64),
                lat(m(&|r| r.latency.p90_us as f64) as u64),
                lat(m(&|r| r.latency.p99_us as f64) as u64),
                lat(mine.iter().map(|r| r.latency.max_us).max().unwrap_or(0)),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "paced",
            "emitted",
            "app lines/s",
            "delivered",
            "dropped",
            "unaccounted",
            "lag batches",
            "pass-through",
            "entrypoint CPU % core",
            "node CPU % core",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
        ],
        &rows,
    ));
    let odd: Vec<String> = res
        .bursts
        .iter()
        .chain(&res.paced)
        .filter(|r| r.duplicates > 0 || r.out_of_order > 0 || r.unaccounted < 0)
        .map(|r| {
            format!(
                "run {}: {} duplicates, {} out of order, unaccounted {}",
                r.run, r.duplicates, r.out_of_order, r.unaccounted
            )
        })
        .collect();
    if !odd.is_empty() {
        out.push_str(&format!("\n!! {}\n", odd.join("; ")));
    }
    for r in res.bursts.iter().chain(&res.paced) {
        if r.lag_batches > 0 {
            out.push_str(&format!(
                "\n!! run {}: `cairn logs -f` fell behind the node's live broadcast: the node skipped {} batches for it (its notice counts batches, not lines); they are the {} unaccounted lines\n",
                r.run, r.lag_batches, r.unaccounted
            ));
        }
    }
    if !res.other_notices.is_empty() {
        out.push_str(&format!(
            "\nOther notices from the node: {:?}\n",
            res.other_notices
        ));
    }
    if let Some(s) = &res.entrypoint_after {
        out.push_str(&format!(
            "\nThe app's entrypoint after these runs: RSS {:.2} MiB, HWM (peak) {:.2} MiB, {} threads\n",
            s.rss_kb as f64 / 1024.0,
            s.hwm_kb as f64 / 1024.0,
            s.threads
        ));
    }
    if res.unparsed_lines > 0 {
        out.push_str(&format!(
            "\n!! {} lines from `cairn logs -f --json` were not JSON\n",
            res.unparsed_lines
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// 4. Slowdown

fn slowdown_table(summary: &[slowdown::Summary], opts: &slowdown::Opts) -> String {
    let mut out = format!(
        "\n## 4. The app's own slowdown: the logger writes {} lines as fast as it can (one write per {} line(s)) and times itself; {} repetitions, configurations interleaved\n",
        opts.lines, opts.batch, opts.reps
    );
    out.push_str("## × = median app time ÷ that of (a) / of (b); process wall = spawn to exit of the outermost process (the entrypoint's connect, registration and exit included)\n\n");
    let rows: Vec<Vec<String>> = summary
        .iter()
        .map(|s| {
            vec![
                s.label.clone(),
                s.runs.to_string(),
                format!(
                    "{} [{}–{}]",
                    fmt_ms(s.emit_ms_p50),
                    fmt_ms(s.emit_ms_min),
                    fmt_ms(s.emit_ms_max)
                ),
                fmt_rate(s.lines_per_s_p50),
                format!("{:.2}", s.vs_devnull),
                format!("{:.2}", s.vs_cat),
                fmt_ms(s.wall_ms_p50),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "configuration",
            "runs",
            "app time p50 ms [min–max]",
            "lines/s p50",
            "× (a)",
            "× (b)",
            "process wall p50 ms",
        ],
        &rows,
    ));
    out
}

// ---------------------------------------------------------------------------
// 5. Exec

fn exec_table(series: &[exec::Series], pid1: Option<&str>, opts: &exec::Opts) -> String {
    let mut out = format!(
        "\n## 5. Exec round trip: wall time of each run (process spawn to exit for the CLI rows); {} runs after {} warm-ups, variants interleaved (order rotates each round)\n",
        opts.runs, opts.warmup
    );
    out.push_str(&format!(
        "## container: locally imported busybox image, PID 1 = `{}`; Cairn target: the `idle` instance (deployed by `cairn up`, sleep 3600). Aim: cairn exec p50 < {AIM_EXEC_MS} ms on loopback\n\n",
        pid1.unwrap_or("(docker unavailable: row skipped)")
    ));
    let rows: Vec<Vec<String>> = series
        .iter()
        .map(|s| {
            vec![
                s.label.clone(),
                s.latency.n.to_string(),
                fmt_us(s.latency.p50_us),
                fmt_us(s.latency.p90_us),
                fmt_us(s.latency.p99_us),
                fmt_us(s.latency.mean_us),
                fmt_us(s.latency.max_us),
                s.failures.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "variant", "runs ok", "p50 ms", "p90 ms", "p99 ms", "mean ms", "max ms", "failed",
        ],
        &rows,
    ));
    for s in series.iter().filter(|s| s.failures > 0) {
        out.push_str(&format!(
            "!! {} failed {} of {} timed runs: {:?}\n",
            s.label, s.failures, opts.runs, s.failure_reasons
        ));
    }
    let get = |v: exec::Variant| series.iter().find(|s| s.variant == v);
    if let Some(c) = get(exec::Variant::CairnExec) {
        let p50 = c.latency.p50_us as f64 / 1000.0;
        out.push_str(&format!(
            "\ncairn exec p50 {} ms: {} the {AIM_EXEC_MS} ms aim\n",
            fmt_ms(p50),
            if p50 < AIM_EXEC_MS { "within" } else { "ABOVE" }
        ));
        match get(exec::Variant::DockerExec) {
            Some(d) => {
                let ratio =
                    |f: fn(&stats::Latency) -> u64| f(&c.latency) as f64 / f(&d.latency) as f64;
                out.push_str(&format!(
                    "cairn exec ÷ docker exec: p50 {:.2}×, p99 {:.2}×, mean {:.2}×\n",
                    ratio(|l| l.p50_us),
                    ratio(|l| l.p99_us),
                    ratio(|l| l.mean_us)
                ));
            }
            None => out.push_str("cairn exec ÷ docker exec: - (docker unavailable)\n"),
        }
        if let (Some(v), Some(o)) = (
            get(exec::Variant::CairnVersion),
            get(exec::Variant::ProtocolOpenConn),
        ) {
            let n =
                get(exec::Variant::ProtocolNewConn).map_or(f64::NAN, |n| n.latency.p50_us as f64);
            out.push_str(&format!(
                "breakdown of the p50: CLI start-up ≈ {} ms, connection set-up ≈ {} ms, exec on an open connection {} ms\n",
                fmt_us(v.latency.p50_us),
                fmt_ms((n - o.latency.p50_us as f64) / 1000.0),
                fmt_us(o.latency.p50_us)
            ));
        }
    }
    out
}
