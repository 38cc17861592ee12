//! The load generator: `oha` (crates.io), run to completion with JSON
//! output, one run per measurement.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::procs::output_within;

/// How one oha run loads its target.
#[derive(Debug, Clone)]
pub struct Load {
    /// Connections (oha's workers).
    pub conns: u32,
    pub secs: u64,
    /// Requests per second in all; `None`: as fast as it can.
    pub rate: Option<u32>,
    /// A new connection for every request.
    pub no_keepalive: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Run {
    pub rps: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Responses with status 200.
    pub ok: u64,
    /// Responses with another status, and requests that failed (connection
    /// errors, timeouts), not counting those cut off by the run's end.
    pub failed: u64,
    /// What the failures were, as oha names them.
    pub errors: Vec<String>,
}

/// The oha binary and how it asks for JSON.
#[derive(Debug, Clone)]
pub struct Oha {
    pub bin: PathBuf,
    pub version: String,
    /// `--output-format json` (oha ≥ 1.5) or `-j` (older).
    json_flag: Vec<&'static str>,
}

impl Oha {
    pub fn new(bin: &Path) -> anyhow::Result<Oha> {
        let help = output_within(
            {
                let mut c = Command::new(bin);
                c.arg("--help");
                c
            },
            Duration::from_secs(10),
        )
        .with_context(|| format!("running {} --help", bin.display()))?;
        let version = output_within(
            {
                let mut c = Command::new(bin);
                c.arg("--version");
                c
            },
            Duration::from_secs(10),
        )
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_default();
        let json_flag = if help.stdout.contains("--output-format") {
            vec!["--output-format", "json"]
        } else {
            vec!["-j"]
        };
        Ok(Oha {
            bin: bin.to_path_buf(),
            version,
            json_flag,
        })
    }

    /// Loads `url` (with `Host: host` when given) as `load` says.
    pub fn run(&self, url: &str, host: Option<&str>, load: &Load) -> anyhow::Result<Run> {
        let mut c = Command::new(&self.bin);
        c.arg("--no-tui")
            .args(&self.json_flag)
            .args(["-z", &format!("{}s", load.secs)])
            .args(["-c", &load.conns.to_string()])
            // A request that takes this long is an error, not a sample.
            .args(["-t", "10s"]);
        if let Some(rate) = load.rate {
            // Latency counted from when each request was due, not from when
            // it was sent (no coordinated omission).
            c.args(["-q", &rate.to_string(), "--latency-correction"]);
        }
        if load.no_keepalive {
            c.arg("--disable-keepalive");
        }
        if let Some(h) = host {
            c.args(["-H", &format!("Host: {h}")]);
        }
        c.arg(url);
        let out = output_within(c, Duration::from_secs(load.secs + 60))?;
        if !out.status.success() {
            bail!(
                "oha against {url} failed ({}):\n{}{}",
                out.status,
                out.stdout,
                out.stderr
            );
        }
        parse(&out.stdout).with_context(|| format!("oha's output: {}", out.stdout))
    }
}

/// oha's JSON report → [`Run`].
pub fn parse(text: &str) -> anyhow::Result<Run> {
    let v: serde_json::Value = serde_json::from_str(text.trim()).context("not JSON")?;
    let secs = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN) * 1000.0;
    let summary = &v["summary"];
    let pct = &v["latencyPercentiles"];
    let mut ok = 0;
    let mut failed = 0;
    let mut errors = Vec::new();
    if let Some(codes) = v["statusCodeDistribution"].as_object() {
        for (code, n) in codes {
            let n = n.as_u64().unwrap_or(0);
            if code == "200" {
                ok += n;
            } else {
                failed += n;
                errors.push(format!("{n} × status {code}"));
            }
        }
    }
    if let Some(errs) = v["errorDistribution"].as_object() {
        for (what, n) in errs {
            let n = n.as_u64().unwrap_or(0);
            // In flight when the run's time was up: not the target's fault.
            if what.contains("deadline") {
                continue;
            }
            failed += n;
            errors.push(format!("{n} × {what}"));
        }
    }
    Ok(Run {
        rps: summary["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: secs(&pct["p50"]),
        p99_ms: secs(&pct["p99"]),
        p999_ms: secs(&pct["p99.9"]),
        ok,
        failed,
        errors,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_report() {
        let r = super::parse(
            r#"{"summary":{"successRate":1.0,"requestsPerSec":1234.5},
                "latencyPercentiles":{"p50":0.001,"p99":0.0025,"p99.9":0.004},
                "statusCodeDistribution":{"200":100,"502":2},
                "errorDistribution":{"aborted due to deadline":7,"connection closed":1}}"#,
        )
        .expect("a valid report");
        assert_eq!(r.rps, 1234.5);
        assert!((r.p99_ms - 2.5).abs() < 1e-9);
        assert_eq!((r.ok, r.failed), (100, 3));
        assert_eq!(r.errors.len(), 2);
    }
}
