//! The logger the bench runs as an app (modes of this binary, dispatched
//! from `main` before anything else starts):
//!
//! - `entrypoint-bench __emit N RATE [--batch B] [--result FILE]` writes N
//!   lines `"<seq> <unix_ns>\n"` to stdout, as fast as it can when RATE is
//!   0, else paced at RATE lines/s, then reports its own elapsed time
//!   (`start_ns end_ns lines`) to FILE, or on stderr.
//! - `entrypoint-bench __serve SOCKET` is the deployed app of the log
//!   section: it connects to the bench's Unix socket and runs what it is
//!   told, one command per line: `mark TEXT` (print TEXT), `emit RUN N RATE
//!   B` (like `__emit`, lines `"<seq> <unix_ns> <RUN>"`), answering `ok` /
//!   `done RUN start_ns end_ns`. It exits when the socket closes.
//!
//! Output goes through a buffered writer on fd 1 (not std's line-buffered
//! stdout) flushed every B lines (default 1: one `write` per line, like an
//! app that logs one event at a time) and at the end of each paced batch,
//! so lines are whole and each line's timestamp is taken just before it is
//! written.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::procs::unix_ns;

/// The buffered writer's size (more than any batch we flush).
const BUF: usize = 64 * 1024;

/// When a run started and ended (ns since the epoch), and its line count.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start_ns: u64,
    pub end_ns: u64,
    pub lines: u64,
}

impl Span {
    pub fn elapsed_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// `start_ns end_ns lines`, as `__emit` reports it.
    pub fn parse(text: &str) -> Option<Span> {
        let mut w = text.split_whitespace().map(|s| s.parse::<u64>().ok());
        Some(Span {
            start_ns: w.next()??,
            end_ns: w.next()??,
            lines: w.next()??,
        })
    }
}

/// A buffered writer on our fd 1.
fn stdout_writer() -> io::Result<BufWriter<File>> {
    let fd = io::stdout().as_fd().try_clone_to_owned()?;
    Ok(BufWriter::with_capacity(BUF, File::from(fd)))
}

/// Writes `n` lines `"<seq> <unix_ns>[ <run>]\n"`: as fast as possible
/// when `rate` is 0 (flushing every `batch` lines), else at `rate` lines/s
/// on an absolute schedule (flushing each time the lines due are written).
pub fn emit<W: Write>(
    w: &mut W,
    n: u64,
    rate: f64,
    batch: u64,
    run: Option<u64>,
) -> io::Result<Span> {
    let batch = batch.max(1);
    let line = |w: &mut W, seq: u64| match run {
        Some(r) => writeln!(w, "{seq} {} {r}", unix_ns()),
        None => writeln!(w, "{seq} {}", unix_ns()),
    };
    let start_ns = unix_ns();
    if rate <= 0.0 {
        for seq in 0..n {
            line(w, seq)?;
            if (seq + 1) % batch == 0 {
                w.flush()?;
            }
        }
    } else {
        let t0 = Instant::now();
        let mut next = 0u64;
        while next < n {
            let due = ((t0.elapsed().as_secs_f64() * rate) as u64 + 1).min(n);
            if due > next {
                for seq in next..due {
                    line(w, seq)?;
                }
                w.flush()?;
                next = due;
            } else {
                let at = t0 + Duration::from_secs_f64(next as f64 / rate);
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
        }
    }
    w.flush()?;
    Ok(Span {
        start_ns,
        end_ns: unix_ns(),
        lines: n,
    })
}

/// `__emit N RATE [--batch B] [--result FILE]`.
pub fn main_emit(args: &[String]) -> ExitCode {
    let usage = "usage: entrypoint-bench __emit N RATE [--batch B] [--result FILE]";
    let parse = || -> Option<(u64, f64, u64, Option<String>)> {
        let n = args.first()?.replace('_', "").parse().ok()?;
        let rate = args.get(1)?.parse().ok()?;
        let (mut batch, mut result) = (1, None);
        let mut it = args[2..].iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--batch" => batch = it.next()?.parse().ok()?,
                "--result" => result = Some(it.next()?.clone()),
                _ => return None,
            }
        }
        Some((n, rate, batch, result))
    };
    let Some((n, rate, batch, result)) = parse() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let span = stdout_writer().and_then(|mut w| emit(&mut w, n, rate, batch, None));
    let span = match span {
        Ok(s) => s,
        Err(e) => {
            eprintln!("__emit: writing stdout: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = format!("{} {} {}\n", span.start_ns, span.end_ns, span.lines);
    let written = match &result {
        Some(path) => std::fs::write(path, report),
        None => io::stderr().write_all(report.as_bytes()),
    };
    if let Err(e) = written {
        eprintln!("__emit: reporting: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `__serve SOCKET`.
pub fn main_serve(args: &[String]) -> ExitCode {
    let Some(path) = args.first() else {
        eprintln!("usage: entrypoint-bench __serve SOCKET");
        return ExitCode::from(2);
    };
    match serve(path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("__serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &str) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let sock = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut reply = sock.try_clone()?;
    writeln!(reply, "hello {}", std::process::id())?;
    let mut out = stdout_writer()?;
    for cmd in BufReader::new(sock).lines() {
        let cmd = cmd?;
        let mut w = cmd.split_whitespace();
        match w.next() {
            Some("mark") => {
                let text = cmd["mark".len()..].trim();
                writeln!(out, "{text}")?;
                out.flush()?;
                writeln!(reply, "ok")?;
            }
            Some("emit") => {
                let mut num = || w.next().and_then(|s| s.parse::<f64>().ok());
                let (Some(run), Some(n), Some(rate), Some(batch)) = (num(), num(), num(), num())
                else {
                    writeln!(reply, "error bad command {cmd:?}")?;
                    continue;
                };
                let span = emit(&mut out, n as u64, rate, batch as u64, Some(run as u64))?;
                writeln!(
                    reply,
                    "done {} {} {}",
                    run as u64, span.start_ns, span.end_ns
                )?;
            }
            _ => writeln!(reply, "error unknown command {cmd:?}")?,
        }
    }
    Ok(())
}
