//! Section 4: what the entrypoint costs the app it wraps. The logger
//! (`__emit N 0`) writes N lines as fast as it can and measures its own
//! time; the configurations are interleaved within each repetition (the
//! starting one rotates) so the machine's noise hits them all alike.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_tests::bench::stats::{median, min_max};

use crate::emit::Span;
use crate::procs;
use crate::EntrypointEnv;

#[derive(Debug, Clone)]
pub struct Opts {
    pub lines: u64,
    pub reps: usize,
    pub batch: u64,
}

/// How long one run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Config {
    /// (a) stdout to /dev/null.
    DevNull,
    /// (b) stdout to a pipe read by `cat > /dev/null`.
    Cat,
    /// (c) under the entrypoint, connected (lines shipped to the node).
    Connected,
    /// (d) under the entrypoint with CAIRN_DISABLE=1 (it execs the app).
    Disabled,
    /// (e) under the entrypoint without cluster settings (pass-through only).
    LocalOnly,
}

pub const CONFIGS: [Config; 5] = [
    Config::DevNull,
    Config::Cat,
    Config::Connected,
    Config::Disabled,
    Config::LocalOnly,
];

impl Config {
    pub fn label(self, ep: &str) -> String {
        match self {
            Config::DevNull => "(a) direct, stdout > /dev/null".into(),
            Config::Cat => "(b) direct, stdout | cat > /dev/null".into(),
            Config::Connected => format!("(c) {ep} entrypoint, connected, its stdout > /dev/null"),
            Config::Disabled => format!("(d) {ep} entrypoint, CAIRN_DISABLE=1 (exec)"),
            Config::LocalOnly => {
                format!("(e) {ep} entrypoint, no cluster settings (pass-through only)")
            }
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub config: Config,
    pub rep: usize,
    /// The app's own time for its lines.
    pub emit_ms: f64,
    pub lines_per_s: f64,
    /// Spawn to exit of the outermost process (the entrypoint's connect,
    /// registration and shutdown included).
    pub wall_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub config: Config,
    pub label: String,
    pub runs: usize,
    pub emit_ms_p50: f64,
    pub emit_ms_min: f64,
    pub emit_ms_max: f64,
    pub lines_per_s_p50: f64,
    pub wall_ms_p50: f64,
    /// Median emit time ÷ that of (a) and of (b).
    pub vs_devnull: f64,
    pub vs_cat: f64,
}

pub struct Env<'a> {
    pub bench: &'a Path,
    pub entrypoint: &'a Path,
    pub cluster: &'a EntrypointEnv,
    pub dir: &'a Path,
}

pub async fn run(env: &Env<'_>, opts: &Opts) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for rep in 0..opts.reps {
        eprintln!(
            "slowdown: repetition {}/{} ({} lines per run)",
            rep + 1,
            opts.reps,
            opts.lines
        );
        for k in 0..CONFIGS.len() {
            let config = CONFIGS[(k + rep) % CONFIGS.len()];
            out.push(one(env, opts, config, rep).await?);
        }
    }
    Ok(out)
}

async fn one(env: &Env<'_>, opts: &Opts, config: Config, rep: usize) -> anyhow::Result<Sample> {
    let tag = format!("{config:?}-{rep}").to_lowercase();
    let result: PathBuf = env.dir.join(format!("{tag}.result"));
    let errlog = env.dir.join(format!("{tag}.stderr"));
    let emit_args = [
        "__emit".to_string(),
        opts.lines.to_string(),
        "0".into(),
        "--batch".into(),
        opts.batch.to_string(),
        "--result".into(),
        result.to_string_lossy().into_owned(),
    ];
    let mut cmd = match config {
        Config::DevNull | Config::Cat => {
            let mut c = std::process::Command::new(env.bench);
            c.args(&emit_args).current_dir(env.dir).stdin(Stdio::null());
            c
        }
        Config::Connected | Config::Disabled | Config::LocalOnly => {
            let cluster = (config == Config::Connected).then_some(env.cluster);
            let mut c = crate::entrypoint_command(
                env.entrypoint,
                cluster,
                config == Config::Disabled,
                env.dir,
            );
            c.arg(env.bench).args(&emit_args);
            c
        }
    };
    cmd.stderr(std::fs::File::create(&errlog)?);
    // (b): the reader of the pipe.
    let mut cat = None;
    if config == Config::Cat {
        let mut c = std::process::Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting cat")?;
        let pipe = c.stdin.take().context("cat has no stdin pipe")?;
        cmd.stdout(Stdio::from(pipe));
        cat = Some(procs::ProcGuard { child: c });
    } else {
        cmd.stdout(Stdio::null());
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("starting the logger")?;
    // The command holds the only other copy of cat's stdin: drop ours so
    // cat sees the end once the logger is done.
    drop(cmd);
    let status = tokio::time::timeout(RUN_TIMEOUT, child.wait())
        .await
        .with_context(|| format!("{config:?} did not finish within {RUN_TIMEOUT:?}"))??;
    let wall = t0.elapsed();
    if let Some(mut cat) = cat {
        tokio::task::block_in_place(|| cat.child.wait())?;
    }
    if !status.success() {
        bail!(
            "{config:?}: the logger failed ({status}); stderr:\n{}",
            procs::tail(&errlog, 20)
        );
    }
    let text = std::fs::read_to_string(&result).with_context(|| {
        format!(
            "{config:?}: no result; stderr:\n{}",
            procs::tail(&errlog, 20)
        )
    })?;
    let span = Span::parse(&text).with_context(|| format!("{config:?}: result {text:?}"))?;
    let emit_s = span.elapsed_ns() as f64 / 1e9;
    Ok(Sample {
        config,
        rep,
        emit_ms: emit_s * 1000.0,
        lines_per_s: span.lines as f64 / emit_s,
        wall_ms: wall.as_secs_f64() * 1000.0,
    })
}

pub fn summarize(samples: &[Sample], ep: &str) -> Vec<Summary> {
    let p50 = |c: Config| {
        median(
            &samples
                .iter()
                .filter(|s| s.config == c)
                .map(|s| s.emit_ms)
                .collect::<Vec<_>>(),
        )
    };
    let (devnull, cat) = (p50(Config::DevNull), p50(Config::Cat));
    CONFIGS
        .iter()
        .map(|&c| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.config == c).collect();
            let emit: Vec<f64> = mine.iter().map(|s| s.emit_ms).collect();
            let (lo, hi) = min_max(&emit);
            let e = median(&emit);
            Summary {
                config: c,
                label: c.label(ep),
                runs: mine.len(),
                emit_ms_p50: e,
                emit_ms_min: lo,
                emit_ms_max: hi,
                lines_per_s_p50: median(&mine.iter().map(|s| s.lines_per_s).collect::<Vec<_>>()),
                wall_ms_p50: median(&mine.iter().map(|s| s.wall_ms).collect::<Vec<_>>()),
                vs_devnull: e / devnull,
                vs_cat: e / cat,
            }
        })
        .collect()
}
