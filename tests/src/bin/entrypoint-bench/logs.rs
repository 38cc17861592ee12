//! Section 3: log throughput and latency, end to end, to `cairn logs -f`.
//!
//! The deployed app is this binary's `__serve` mode (see `emit`), told over
//! a Unix socket what to write, so one instance (one entrypoint, one
//! registration) serves every run. `cairn logs -f --json --instance ID`
//! runs as a child; a thread reads its stdout, stamps each line when it is
//! read and parses it. App lines are `"<seq> <unix_ns> <run>"`: latency is
//! (time read by the bench − unix_ns), both from this host's clock.
//!
//! Accounting per run: emitted (by the app), delivered (distinct lines of
//! the run that reached the follower), dropped (the sum of the node's
//! `notice` lines "cairn: N lines dropped by the entrypoint" that arrived
//! during the run), reader lag (notices "this reader fell behind; N
//! batches … skipped": batches, not lines) and unaccounted (emitted −
//! delivered − dropped). Pass-through: lines of the run in the process
//! platform's instance log (the entrypoint's own stdout, through the
//! supervisor).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use cairn_tests::bench::stats::{median, Latency};

use crate::procs::{self, unix_ns, Cli, ProcGuard};

#[derive(Debug, Clone)]
pub struct Opts {
    /// Lines per burst.
    pub lines: u64,
    /// Bursts, and runs per paced rate.
    pub reps: usize,
    /// Paced rates (lines/s).
    pub rates: Vec<u64>,
    pub paced_secs: u64,
    /// The app flushes every this many lines in a burst.
    pub batch: u64,
}

/// A run is over when every line arrived, or nothing arrived for this long
/// after the app finished.
const QUIET: Duration = Duration::from_secs(3);
/// Longest wait for a run's lines after the app finished.
const DRAIN_MAX: Duration = Duration::from_secs(120);

/// CPU time (schedstat, ns) of the processes that carry the lines.
#[derive(Debug, Clone, Copy, Default)]
struct CpuAt {
    entrypoint: u64,
    node: u64,
    follower: u64,
}

impl CpuAt {
    fn ms_since(&self, before: &CpuAt) -> (f64, f64, f64) {
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / 1e6;
        (
            d(self.entrypoint, before.entrypoint),
            d(self.node, before.node),
            d(self.follower, before.follower),
        )
    }
}

/// What the follower saw of one run.
#[derive(Debug, Default)]
struct RunSeen {
    seqs: Vec<u64>,
    lat_ns: Vec<u64>,
    first_recv_ns: u64,
    last_recv_ns: u64,
    out_of_order: u64,
}

/// Everything the follower thread read so far.
#[derive(Debug, Default)]
struct Seen {
    runs: BTreeMap<u64, RunSeen>,
    marks: Vec<String>,
    /// Σ N of "N lines dropped by the entrypoint" notices.
    dropped: u64,
    /// Σ N of "N batches … skipped" notices (the follower lagged).
    lag_batches: u64,
    other_notices: Vec<String>,
    /// Lines read (of any kind): progress.
    lines: u64,
    unparsed: u64,
    eof: bool,
}

/// `cairn logs -f --json --instance ID`, read by a thread of ours.
struct Follower {
    seen: Arc<Mutex<Seen>>,
    proc: ProcGuard,
    stderr: PathBuf,
}

impl Follower {
    fn start(cli: &Cli, app_dir: &Path, instance: &str, stderr: PathBuf) -> anyhow::Result<Self> {
        let dir = app_dir.to_string_lossy().into_owned();
        let mut cmd = cli.command(&["-C", &dir, "logs", "-f", "--json", "--instance", instance]);
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .process_group(0);
        let mut child = cmd.spawn().context("starting cairn logs -f")?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("cairn logs -f has no stdout pipe"))?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        std::thread::Builder::new()
            .name("follower".into())
            .spawn(move || read_follower(out, &s))?;
        Ok(Follower {
            seen,
            proc: ProcGuard { child },
            stderr,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.proc.child.try_wait()? {
            bail!(
                "cairn logs -f exited ({status}); its stderr:\n{}",
                procs::tail(&self.stderr, 20)
            );
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct JsonLine<'a> {
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    line: std::borrow::Cow<'a, str>,
}

fn read_follower(out: impl Read, seen: &Mutex<Seen>) {
    let mut r = BufReader::with_capacity(256 * 1024, out);
    let mut buf = String::new();
    loop {
        buf.clear();
        match r.read_line(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let now = unix_ns();
        let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
        s.lines += 1;
        let Ok(j) = serde_json::from_str::<JsonLine>(buf.trim_end()) else {
            s.unparsed += 1;
            continue;
        };
        if j.stream == "notice" {
            let num = |after: &str| {
                j.line
                    .strip_prefix(after)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
            };
            if j.line.contains("dropped by the entrypoint") {
                s.dropped += num("cairn: ").unwrap_or(0);
            } else if let Some(n) = num("cairn: this reader fell behind; ") {
                s.lag_batches += n;
            } else {
                s.other_notices.push(j.line.into_owned());
            }
            continue;
        }
        let mut w = j.line.split_whitespace().map(|x| x.parse::<u64>().ok());
        match (w.next(), w.next(), w.next(), w.next()) {
            (Some(Some(seq)), Some(Some(ns)), Some(Some(run)), None) => {
                let r = s.runs.entry(run).or_default();
                if r.seqs.is_empty() {
                    r.first_recv_ns = now;
                }
                if r.seqs.last().is_some_and(|&last| seq < last) {
                    r.out_of_order += 1;
                }
                r.seqs.push(seq);
                r.lat_ns.push(now.saturating_sub(ns));
                r.last_recv_ns = now;
            }
            _ => s.marks.push(j.line.into_owned()),
        }
    }
    seen.lock().unwrap_or_else(PoisonError::into_inner).eof = true;
}

/// One burst or paced run, as the bench accounts for it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogRun {
    pub run: u64,
    /// 0 for a burst (as fast as possible).
    pub rate: u64,
    pub emitted: u64,
    /// The app's own time to write them (through the entrypoint).
    pub emit_ms: f64,
    pub emit_lines_per_s: f64,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub dropped_reported: u64,
    pub lag_batches: u64,
    /// emitted − delivered − dropped_reported (may be negative: a bug).
    pub unaccounted: i64,
    /// From the app's first line to the last line read by the bench.
    pub e2e_ms: f64,
    pub e2e_lines_per_s: f64,
    /// From the app's last line to the last line read by the bench.
    pub tail_ms: f64,
    /// Lines of the run in the instance log (the pass-through).
    pub passthrough: u64,
    /// CPU (schedstat) from the run's start until its lines were in, ms:
    /// the app's entrypoint, the node, the `cairn logs -f` process.
    pub entrypoint_cpu_ms: f64,
    pub node_cpu_ms: f64,
    pub follower_cpu_ms: f64,
    /// CPU while the app was writing, as % of one core.
    pub entrypoint_cpu_pct_writing: f64,
    pub node_cpu_pct_writing: f64,
    pub latency: Latency,
}

/// The deployed logger: its control socket and follower.
pub struct LogBench {
    ctl: BufReader<UnixStream>,
    ctl_w: UnixStream,
    follower: Follower,
    pub instance: String,
    pub entrypoint_pid: u32,
    node_pid: u32,
    log_file: PathBuf,
    batch: u64,
    next_run: u64,
}

/// Binds the control socket (before the app is deployed).
pub fn listen(path: &Path) -> anyhow::Result<UnixListener> {
    let l = UnixListener::bind(path).with_context(|| path.display().to_string())?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The logger as `cairn up` deployed it.
pub struct Deployed<'a> {
    pub cli: &'a Cli,
    pub app: &'a str,
    pub app_dir: &'a Path,
    /// Its instance log (the process platform's).
    pub log_file: PathBuf,
}

impl LogBench {
    /// Accepts the deployed logger's connection, finds its instance (the
    /// entrypoint is the logger's parent), follows its logs and waits
    /// until the follower sees what the app writes.
    pub async fn connect(
        listener: &UnixListener,
        d: Deployed<'_>,
        root: &Path,
        batch: u64,
        node_pid: u32,
    ) -> anyhow::Result<LogBench> {
        let Deployed {
            cli,
            app,
            app_dir,
            log_file,
        } = d;
        let deadline = Instant::now() + Duration::from_secs(60);
        let sock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!(
                            "the deployed logger did not connect within 60 s; instance log:\n{}",
                            procs::tail(&log_file, 20)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(Duration::from_secs(600)))?;
        let ctl_w = sock.try_clone()?;
        let mut ctl = BufReader::new(sock);
        let hello = read_reply(&mut ctl)?;
        let logger_pid: u32 = hello
            .strip_prefix("hello ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| anyhow!("the logger said {hello:?}"))?;
        let ep_pid = procs::parent_of(logger_pid);
        if procs::comm(ep_pid) != "cairn-entrypoin" {
            eprintln!(
                "logs: warning: the logger's parent (pid {ep_pid}) is {:?}, not cairn-entrypoint",
                procs::comm(ep_pid)
            );
        }
        let (instance, _) = cli
            .wait_connected(app, |p| p == ep_pid, Duration::from_secs(30))
            .await?;
        let follower = Follower::start(cli, app_dir, &instance, root.join("follower.stderr"))?;
        let mut lb = LogBench {
            ctl,
            ctl_w,
            follower,
            instance,
            entrypoint_pid: ep_pid,
            node_pid,
            log_file,
            batch,
            next_run: 1,
        };
        lb.sync().await?;
        Ok(lb)
    }

    /// Marks until the follower shows one: it is live.
    async fn sync(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut k = 0;
        loop {
            k += 1;
            let mark = format!("sync-{k}");
            self.command(&format!("mark {mark}"))?;
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(1) {
                if self.follower.with(|s| s.marks.contains(&mark)) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.follower.check_alive()?;
            if Instant::now() > deadline {
                bail!("cairn logs -f shows none of the app's lines after 30 s");
            }
        }
    }

    fn command(&mut self, cmd: &str) -> anyhow::Result<String> {
        writeln!(self.ctl_w, "{cmd}")?;
        let r = tokio::task::block_in_place(|| read_reply(&mut self.ctl))?;
        if r.starts_with("error") {
            bail!("the logger answered {r:?} to {cmd:?}");
        }
        Ok(r)
    }

    /// One run of `n` lines at `rate` (0: as fast as possible).
    pub async fn run(&mut self, n: u64, rate: u64) -> anyhow::Result<LogRun> {
        let run = self.next_run;
        self.next_run += 1;
        let (dropped0, lag0) = self.follower.with(|s| (s.dropped, s.lag_batches));
        let cpu0 = self.cpu_at();
        let offset = std::fs::metadata(&self.log_file).map_or(0, |m| m.len());
        let batch = if rate == 0 { self.batch } else { 1 };
        let reply = self.command(&format!("emit {run} {n} {rate} {batch}"))?;
        let mut w = reply.split_whitespace().skip(1).map(|x| x.parse::<u64>());
        let (Some(Ok(r)), Some(Ok(start_ns)), Some(Ok(end_ns))) = (w.next(), w.next(), w.next())
        else {
            bail!("the logger answered {reply:?}");
        };
        if r != run {
            bail!("the logger finished run {r}, not {run}");
        }
        let cpu_done = self.cpu_at();
        // Until every line is in, or nothing moves for QUIET.
        let t0 = Instant::now();
        let mut progress = (u64::MAX, u64::MAX);
        let mut still_since = Instant::now();
        loop {
            let (got, now) = self.follower.with(|s| {
                (
                    s.runs.get(&run).map_or(0, |r| r.seqs.len() as u64),
                    (s.lines, s.dropped),
                )
            });
            if got >= n {
                break;
            }
            if now != progress {
                progress = now;
                still_since = Instant::now();
            } else if still_since.elapsed() > QUIET {
                break;
            }
            if t0.elapsed() > DRAIN_MAX {
                eprintln!(
                    "logs: run {run}: still receiving after {DRAIN_MAX:?}; counting what arrived"
                );
                break;
            }
            self.follower.check_alive()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A drop notice rides on the next batch after the drop: give a
        // last one a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu1 = self.cpu_at();
        let passthrough = count_run_lines(&self.log_file, offset, run)?;
        let (seen, dropped1, lag1) = self.follower.with(|s| {
            (
                s.runs.remove(&run).unwrap_or_default(),
                s.dropped,
                s.lag_batches,
            )
        });
        let RunSeen {
            mut seqs,
            lat_ns,
            last_recv_ns,
            out_of_order,
            ..
        } = seen;
        let received = seqs.len() as u64;
        seqs.sort_unstable();
        seqs.dedup();
        let delivered = seqs.len() as u64;
        let dropped = dropped1 - dropped0;
        let mut lat_us: Vec<u64> = lat_ns.iter().map(|ns| ns / 1000).collect();
        let emit_s = end_ns.saturating_sub(start_ns) as f64 / 1e9;
        let (ep_ms, node_ms, follower_ms) = cpu1.ms_since(&cpu0);
        let (ep_w, node_w, _) = cpu_done.ms_since(&cpu0);
        let pct = |ms: f64| ms / 1000.0 / emit_s * 100.0;
        let e2e_s = last_recv_ns.saturating_sub(start_ns) as f64 / 1e9;
        Ok(LogRun {
            run,
            rate,
            emitted: n,
            emit_ms: emit_s * 1000.0,
            emit_lines_per_s: n as f64 / emit_s,
            delivered,
            duplicates: received - delivered,
            out_of_order,
            dropped_reported: dropped,
            lag_batches: lag1 - lag0,
            unaccounted: n as i64 - delivered as i64 - dropped as i64,
            e2e_ms: e2e_s * 1000.0,
            e2e_lines_per_s: if delivered > 0 {
                delivered as f64 / e2e_s
            } else {
                0.0
            },
            tail_ms: if delivered > 0 {
                last_recv_ns.saturating_sub(end_ns) as f64 / 1e6
            } else {
                f64::NAN
            },
            passthrough,
            entrypoint_cpu_ms: ep_ms,
            node_cpu_ms: node_ms,
            follower_cpu_ms: follower_ms,
            entrypoint_cpu_pct_writing: pct(ep_w),
            node_cpu_pct_writing: pct(node_w),
            latency: Latency::of(&mut lat_us),
        })
    }

    fn cpu_at(&self) -> CpuAt {
        let ns = |pid: u32| procs::sample(pid).map_or(0, |s| s.sched_ns);
        CpuAt {
            entrypoint: ns(self.entrypoint_pid),
            node: ns(self.node_pid),
            follower: ns(self.follower.proc.pid()),
        }
    }

    /// Notices that were neither drops nor lag (shown after the tables).
    pub fn other_notices(&self) -> Vec<String> {
        self.follower.with(|s| s.other_notices.clone())
    }

    pub fn unparsed(&self) -> u64 {
        self.follower.with(|s| s.unparsed)
    }
}

fn read_reply(r: &mut BufReader<UnixStream>) -> anyhow::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)
        .context("reading the logger's answer")?
        == 0
    {
        bail!("the logger closed its control socket");
    }
    Ok(line.trim_end().to_string())
}

/// Lines `"<seq> <ns> <run>"` of `run` in `path` from byte `offset` on.
fn count_run_lines(path: &Path, offset: u64, run: u64) -> anyhow::Result<u64> {
    let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    f.seek(SeekFrom::Start(offset))?;
    let tag = run.to_string();
    let mut n = 0;
    for line in BufReader::with_capacity(1 << 20, f).split(b'\n') {
        let line = line?;
        let mut w = line.split(|&b| b == b' ');
        if let (Some(_), Some(_), Some(r), None) = (w.next(), w.next(), w.next(), w.next()) {
            if r == tag.as_bytes() {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Every run of the section: bursts and paced rates interleaved, `reps`
/// rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogResults {
    pub bursts: Vec<LogRun>,
    pub paced: Vec<LogRun>,
    pub instance: String,
    pub other_notices: Vec<String>,
    pub unparsed_lines: u64,
    /// The app's entrypoint after every run.
    pub entrypoint_after: Option<procs::ProcSample>,
}

pub async fn run(lb: &mut LogBench, opts: &Opts) -> anyhow::Result<LogResults> {
    let mut bursts = Vec::new();
    let mut paced = Vec::new();
    for rep in 0..opts.reps {
        eprintln!(
            "logs: round {}/{}: burst of {} lines",
            rep + 1,
            opts.reps,
            opts.lines
        );
        bursts.push(lb.run(opts.lines, 0).await?);
        for &rate in &opts.rates {
            eprintln!(
                "logs: round {}/{}: {rate} lines/s for {} s",
                rep + 1,
                opts.reps,
                opts.paced_secs
            );
            paced.push(lb.run(rate * opts.paced_secs, rate).await?);
        }
    }
    Ok(LogResults {
        bursts,
        paced,
        instance: lb.instance.clone(),
        other_notices: lb.other_notices(),
        unparsed_lines: lb.unparsed(),
        entrypoint_after: procs::sample(lb.entrypoint_pid),
    })
}

/// Median of `f` over `runs`.
pub fn med(runs: &[&LogRun], f: impl Fn(&LogRun) -> f64) -> f64 {
    median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>())
}
