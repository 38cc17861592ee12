//! `cairn logs`: the output of a deployment's instances, from every node
//! that holds some of it.
//!
//! With `-f` the command follows new lines until interrupted; if its node
//! goes away it reconnects (to any member) and resumes where it left off.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context as _};
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::frame;
use cairn_protocol::instance::{LogEntry, LogStream, LogsQuery};
use cairn_protocol::rpc;

use super::{DeploymentArgs, Global};
use crate::client;

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: DeploymentArgs,
    /// Keep following new lines (until Ctrl-C).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only this instance (its id or a unique prefix, see `cairn instance list`).
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Only lines from this long ago on (30s, 5m, 2h, 1d) or since this time
    /// (RFC 3339, e.g. 2026-11-30T18:00:00Z).
    #[arg(long, value_name = "T", value_parser = parse_since)]
    pub since: Option<u64>,
    /// Only the last N lines of the history.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Prefix each line with its time (UTC).
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// How long a follower waits between attempts to get its stream back.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// How long a follower keeps trying to get its stream back.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

pub async fn run(g: &Global, a: &LogsArgs) -> anyhow::Result<i32> {
    let target = a.target.target(g)?;
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut query = LogsQuery {
        target,
        instance: a.instance.clone(),
        since_ms: a.since,
        tail: a.tail,
        follow: a.follow,
    };
    let mut printer = Printer::new(a);
    let mut lost_since: Option<tokio::time::Instant> = None;
    loop {
        let outcome = stream_once(&ctx, &query, &mut printer).await;
        match outcome {
            Ok(Ended::Done { unavailable }) => {
                for u in unavailable {
                    eprintln!("warning: lines unavailable from {u}");
                }
                return Ok(0);
            }
            Ok(Ended::Lost(reason)) | Err(Failure::Lost(reason)) if a.follow => {
                let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    bail!("lost the log stream and could not get it back within {RECONNECT_FOR:?}: {reason}");
                }
                if printer.printed > 0 || lost_since == Some(since) {
                    eprintln!("cairn: lost the log stream ({reason}); reconnecting…");
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
                // Resume at the last line's time; lines printed at that very
                // millisecond are recognised and skipped.
                query.since_ms = printer.last_time.or(query.since_ms);
                query.tail = None;
                printer.resume();
            }
            Ok(Ended::Lost(reason)) | Err(Failure::Lost(reason)) => {
                bail!("lost the connection to the node: {reason}")
            }
            Err(Failure::Refused(e)) => return Err(e),
        }
    }
}

enum Ended {
    Done { unavailable: Vec<String> },
    Lost(String),
}

enum Failure {
    /// The node or the connection went away: following may retry.
    Lost(String),
    /// The node said no (bad app, no deployment…): final.
    Refused(anyhow::Error),
}

async fn stream_once(
    ctx: &crate::context::Context,
    query: &LogsQuery,
    printer: &mut Printer,
) -> Result<Ended, Failure> {
    let s = client::connect(ctx)
        .await
        .map_err(|e| Failure::Lost(e.to_string()))?;
    let (mut send, mut recv) = rpc::open(&s.conn, &ClientRequest::Logs(query.clone()))
        .await
        .map_err(|e| Failure::Lost(e.to_string()))?;
    let _ = send.finish();
    loop {
        let resp = tokio::select! {
            r = frame::read::<_, ClientResponse>(&mut recv) => r,
            _ = tokio::signal::ctrl_c() => {
                s.conn.close(0u32.into(), b"bye");
                return Ok(Ended::Done { unavailable: vec![] });
            }
        };
        match resp {
            Ok(Some(ClientResponse::LogLines(lines))) => {
                printer
                    .print(&lines)
                    .map_err(|e| Failure::Refused(e.context("writing to stdout")))?;
            }
            Ok(Some(ClientResponse::LogsEnd { unavailable })) => {
                s.conn.close(0u32.into(), b"bye");
                return Ok(Ended::Done { unavailable });
            }
            Ok(Some(ClientResponse::Error { message })) => {
                return Err(Failure::Refused(anyhow::anyhow!(message)))
            }
            Ok(Some(other)) => {
                return Err(Failure::Refused(anyhow::anyhow!(
                    "unexpected answer from the node: {other:?}"
                )))
            }
            Ok(None) => return Ok(Ended::Lost("the node ended the stream".into())),
            Err(e) => return Ok(Ended::Lost(e.to_string())),
        }
    }
}

type LineKey = (String, u64, String);

/// Writes lines as the flags ask, remembering the newest time printed and
/// the lines printed at that millisecond: after a reconnect the stream
/// starts again at that time, and those lines are skipped once each.
struct Printer {
    timestamps: bool,
    json: bool,
    printed: u64,
    last_time: Option<u64>,
    at_last_time: HashMap<LineKey, u32>,
    /// Lines at `last_time` to skip (once each) after a reconnect.
    skip: HashMap<LineKey, u32>,
}

impl Printer {
    fn new(a: &LogsArgs) -> Printer {
        Printer {
            timestamps: a.timestamps,
            json: a.json,
            printed: 0,
            last_time: None,
            at_last_time: HashMap::new(),
            skip: HashMap::new(),
        }
    }

    /// The stream starts again at `last_time`.
    fn resume(&mut self) {
        self.skip = self.at_last_time.clone();
    }

    fn print(&mut self, lines: &[LogEntry]) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for e in lines {
            if e.stream != LogStream::Notice {
                let key = (e.instance.clone(), e.node, e.line.clone());
                if self.last_time == Some(e.time_ms) {
                    if let Some(n) = self.skip.get_mut(&key).filter(|n| **n > 0) {
                        *n -= 1;
                        continue;
                    }
                }
                match self.last_time {
                    Some(t) if e.time_ms < t => {}
                    Some(t) if e.time_ms == t => *self.at_last_time.entry(key).or_default() += 1,
                    _ => {
                        self.last_time = Some(e.time_ms);
                        self.at_last_time.clear();
                        self.skip.clear();
                        self.at_last_time.insert(key, 1);
                    }
                }
            }
            self.printed += 1;
            if self.json {
                let v = serde_json::json!({
                    "time_ms": e.time_ms,
                    "deployment": format!("v{}", e.sequence),
                    "instance": e.instance,
                    "node": format!("{:x}", e.node),
                    "stream": match e.stream {
                        LogStream::Stdout => "stdout",
                        LogStream::Stderr => "stderr",
                        LogStream::Notice => "notice",
                    },
                    "line": e.line,
                    "truncated": e.truncated,
                });
                writeln!(out, "{v}")?;
                continue;
            }
            if self.timestamps {
                write!(out, "{} ", timestamp(e.time_ms))?;
            }
            let who: String = if e.stream == LogStream::Notice {
                "cairn".into()
            } else {
                e.instance.chars().take(8).collect()
            };
            let cut = if e.truncated { " [truncated]" } else { "" };
            writeln!(out, "{who:<8} | {}{cut}", e.line)?;
        }
        out.flush().context("flushing stdout")?;
        Ok(())
    }
}

/// RFC 3339 UTC with milliseconds.
fn timestamp(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_else(|_| ms.to_string())
}

/// `--since`: a duration back from now (`90s`, `5m`, `1.5h`, `2d`) or an
/// RFC 3339 time; milliseconds since the epoch.
pub fn parse_since(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        return u64::try_from(ms).map_err(|_| format!("{s:?} is before 1970"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?} has no unit (use s, m, h or d, e.g. 10m)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("{s:?} is not a duration (e.g. 30s, 5m, 2h, 1d) or an RFC 3339 time")
    })?;
    let unit_ms = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use s, m, h or d, e.g. 10m)"
            ))
        }
    };
    let back = (n * unit_ms) as u64;
    Ok(cairn_protocol::now_ms().saturating_sub(back))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        // `now` after the parse: the parse reads the clock itself, and a
        // millisecond may tick between the two readings.
        let t = parse_since("5m").expect("5m");
        let now = cairn_protocol::now_ms();
        assert!(now - t >= 300_000 && now - t < 310_000, "{}", now - t);
        let t = parse_since("1.5h").expect("1.5h");
        assert!((now - t).abs_diff(5_400_000) < 10_000);
        assert_eq!(parse_since("2026-11-30T18:00:00Z"), Ok(1_796_061_600_000));
        assert_eq!(
            parse_since("2026-11-30T18:00:00.250+01:00"),
            Ok(1_796_058_000_250)
        );
        for bad in ["", "5", "5 minutes", "x", "5y", "yesterday"] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(timestamp(1_796_061_600_250), "2026-11-30T18:00:00.250Z");
    }
}
