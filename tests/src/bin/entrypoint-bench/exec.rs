//! Section 5: exec round trip. `cairn exec --instance ID -- true` (the
//! whole CLI process: start-up, context, QUIC handshake, the node opening a
//! stream on the entrypoint's connection, fork/exec of `true` in the app's
//! context, exit code back) against `docker exec CONTAINER true`, with the
//! variants interleaved in one loop (the order rotates every iteration).
//! For the breakdown: `cairn --version` (the CLI's start-up alone) and the
//! same exec from this process over the protocol, on a new connection
//! each time and on one open connection.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::frame;
use cairn_protocol::instance::{DeploymentRef, ExecInput, ExecOutput, ExecSpec};
use cairn_protocol::rpc::{self, Dial, Session};
use cairn_tests::bench::stats::Latency;

use crate::procs::{self, Cli};

#[derive(Debug, Clone)]
pub struct Opts {
    pub runs: usize,
    pub warmup: usize,
    /// Only these variants (by `Variant::key`); empty: all.
    pub only: Vec<String>,
}

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    CairnExec,
    DockerExec,
    CairnVersion,
    ProtocolNewConn,
    ProtocolOpenConn,
}

impl Variant {
    /// The name `--exec-variants` takes.
    pub fn key(self) -> &'static str {
        match self {
            Variant::CairnExec => "cairn",
            Variant::DockerExec => "docker",
            Variant::CairnVersion => "version",
            Variant::ProtocolNewConn => "new-conn",
            Variant::ProtocolOpenConn => "open-conn",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Variant::CairnExec => {
                "cairn exec --instance ID -- true (CLI process; context → the node)"
            }
            Variant::DockerExec => "docker exec CONTAINER true",
            Variant::CairnVersion => "cairn --version (CLI start-up only, no exec)",
            Variant::ProtocolNewConn => "in-process Exec `true`, new QUIC connection each",
            Variant::ProtocolOpenConn => "in-process Exec `true`, on one open connection",
        }
    }
}

/// What each variant runs against.
pub struct Targets<'a> {
    pub cli: &'a Cli,
    pub app_dir: &'a Path,
    pub target: DeploymentRef,
    pub instance: String,
    pub dial: Dial,
    /// `None`: docker is not available (the row is skipped).
    pub container: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Series {
    pub variant: Variant,
    pub label: String,
    /// Over the runs that succeeded.
    pub latency: Latency,
    pub samples_us: Vec<u64>,
    /// Timed runs that failed (not in the samples), and why, by message.
    pub failures: usize,
    pub failure_reasons: BTreeMap<String, usize>,
}

/// A variant stops the bench when more than this share of its runs fail.
const MAX_FAILURE_SHARE: f64 = 0.2;

pub async fn run(t: &Targets<'_>, opts: &Opts) -> anyhow::Result<Vec<Series>> {
    let mut variants = vec![Variant::CairnExec];
    if t.container.is_some() {
        variants.push(Variant::DockerExec);
    }
    variants.extend([
        Variant::CairnVersion,
        Variant::ProtocolNewConn,
        Variant::ProtocolOpenConn,
    ]);
    if !opts.only.is_empty() {
        variants.retain(|v| opts.only.iter().any(|k| k == v.key()));
        if variants.is_empty() {
            bail!("--exec-variants: none of {:?} is available", opts.only);
        }
    }
    let open = rpc::connect(&t.dial)
        .await
        .with_context(|| format!("connecting to {}", t.dial.addr))?;
    let result = async {
        // One checked run of each first: a failure says why (three tries:
        // a run may fail by chance, see the failure counts).
        for &v in &variants {
            let mut tries = 0;
            while let Err(e) = once(t, &open, v, true).await {
                tries += 1;
                if tries == 3 {
                    return Err(e);
                }
                eprintln!("exec: {} failed: {e:#}; trying again", v.label());
            }
        }
        let mut samples: Vec<Vec<u64>> = vec![Vec::new(); variants.len()];
        let mut failures: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); variants.len()];
        let total = opts.warmup + opts.runs;
        for i in 0..total {
            if i == opts.warmup {
                eprintln!("exec: {} warm-up rounds done", opts.warmup);
            } else if i > opts.warmup && (i - opts.warmup).is_multiple_of(50) {
                eprintln!("exec: {}/{} rounds", i - opts.warmup, opts.runs);
            }
            for k in 0..variants.len() {
                let idx = (k + i) % variants.len();
                match once(t, &open, variants[idx], false).await {
                    Ok(d) if i >= opts.warmup => samples[idx].push(d.as_micros() as u64),
                    Ok(_) => {}
                    Err(e) => {
                        let why = format!("{e:#}");
                        eprintln!("exec: {} failed: {why}", variants[idx].label());
                        if i < opts.warmup {
                            continue;
                        }
                        *failures[idx].entry(why).or_default() += 1;
                        let n: usize = failures[idx].values().sum();
                        if n as f64 > (total as f64 * MAX_FAILURE_SHARE).max(5.0) {
                            bail!(
                                "{} failed {n} times: {:?}",
                                variants[idx].label(),
                                failures[idx]
                            );
                        }
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>(
            variants
                .iter()
                .zip(samples.into_iter().zip(failures))
                .map(|(&variant, (s, f))| {
                    let mut sorted = s.clone();
                    Series {
                        variant,
                        label: variant.label().into(),
                        latency: Latency::of(&mut sorted),
                        samples_us: s,
                        failures: f.values().sum(),
                        failure_reasons: f,
                    }
                })
                .collect(),
        )
    }
    .await;
    open.conn.close(0u32.into(), b"bench done");
    result
}

/// One timed run of `v`. `check`: capture the output and fail with it.
async fn once(
    t: &Targets<'_>,
    open: &Session,
    v: Variant,
    check: bool,
) -> anyhow::Result<Duration> {
    let dir = t.app_dir.to_string_lossy().into_owned();
    let cmd = match v {
        Variant::CairnExec => {
            Some(
                t.cli
                    .command(&["-C", &dir, "exec", "--instance", &t.instance, "--", "true"]),
            )
        }
        Variant::CairnVersion => Some(t.cli.command(&["--version"])),
        Variant::DockerExec => {
            let name = t
                .container
                .as_deref()
                .ok_or_else(|| anyhow!("no container"))?;
            let mut c = std::process::Command::new("docker");
            c.args(["exec", name, "true"]).stdin(Stdio::null());
            Some(c)
        }
        Variant::ProtocolNewConn | Variant::ProtocolOpenConn => None,
    };
    if let Some(cmd) = cmd {
        if check {
            let out = tokio::task::block_in_place(|| procs::output_within(cmd, RUN_TIMEOUT))?;
            if !out.status.success() {
                bail!(
                    "{} failed ({}):\n{}{}",
                    v.label(),
                    out.status,
                    out.stdout,
                    out.stderr
                );
            }
            return Ok(Duration::ZERO);
        }
        return timed(cmd, v).await;
    }
    let t0 = Instant::now();
    let code = if v == Variant::ProtocolOpenConn {
        exec_true(open, t).await?
    } else {
        let s = rpc::connect(&t.dial)
            .await
            .with_context(|| format!("connecting to {}", t.dial.addr))?;
        let code = exec_true(&s, t).await;
        s.conn.close(0u32.into(), b"exec done");
        code?
    };
    let d = t0.elapsed();
    if code != 0 {
        bail!("`true` exited {code}");
    }
    Ok(d)
}

/// Spawn to exit of `cmd` (output discarded), which must succeed.
async fn timed(cmd: std::process::Command, v: Variant) -> anyhow::Result<Duration> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let t0 = Instant::now();
    let child = cmd.spawn().with_context(|| v.label().to_string())?;
    let out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("{} took over {RUN_TIMEOUT:?}", v.label()))??;
    let d = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(d)
}

/// `Exec ["true"]` on `conn`, as `cairn exec` does it: its exit code.
async fn exec_true(s: &Session, t: &Targets<'_>) -> anyhow::Result<i32> {
    let req = ClientRequest::Exec {
        target: t.target.clone(),
        instance: Some(t.instance.clone()),
        spec: ExecSpec {
            command: vec!["true".into()],
            tty: None,
            stdin: false,
        },
    };
    let (mut send, mut recv) = rpc::open(&s.conn, &req).await.context("opening")?;
    match frame::read_required::<_, ClientResponse>(&mut recv)
        .await
        .context("reading the answer")?
    {
        ClientResponse::ExecOpened { .. } => {}
        ClientResponse::Error { message } => bail!("exec refused: {message}"),
        other => bail!("unexpected answer {other:?}"),
    }
    frame::write(&mut send, &ExecInput::StdinEof)
        .await
        .context("sending StdinEof")?;
    // Our side stays open until the exit arrives (a finished stream would
    // read as a client that went away).
    loop {
        match frame::read::<_, ExecOutput>(&mut recv)
            .await
            .context("reading the session's output")?
        {
            Some(ExecOutput::Exit { code }) => return Ok(code),
            Some(ExecOutput::Failed { message, .. }) => bail!("exec failed: {message}"),
            Some(_) => {}
            None => bail!("the session ended before the exit"),
        }
    }
}
