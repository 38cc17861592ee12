//! A client that behaves like a person at a terminal (issue 12): the real
//! `cairn` binary, one command at a time, each a new process (so a fresh
//! connection, dialled as the CLI dials), and no retries by the harness. Each
//! command is `cairn config set --project chaos-cli C<n>=v<n>` (the CLI reads
//! the scope, then writes). What the CLI does inside one command (moving to
//! another member, sending its write again with the same request id) is the
//! CLI's own business: that is what a user gets.
//!
//! [`check`] reports, per fault, how many commands ran and failed and the
//! longest gap without a successful command; a failed command is a
//! violation unless it overlapped a window in which no majority of the
//! nodes was up ([`Window::no_majority`], plus [`RECOVERY`]). In the final
//! read each name must hold the value of its last acknowledged command, or
//! of a later one that failed (a failed command may still have been applied).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The project the commands write to.
pub const PROJECT: &str = "chaos-cli";
/// How many variable names the commands cycle through.
pub const KEYS: u64 = 50;
/// A command still running after this long is killed and counted failed
/// (the CLI gives up on its own well before: its connect and call deadlines).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// After a window without a majority heals, this long is still excused: the
/// restarted nodes start, elect a leader, and a command that began meanwhile
/// runs to its end.
pub const RECOVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    /// The `cairn` binary.
    pub cairn: PathBuf,
    /// `CAIRN_HOME` of the commands (their context and what they remember).
    pub home: PathBuf,
    pub nodes: Vec<SocketAddr>,
    pub ca: String,
    pub token: String,
}

/// One command.
#[derive(Debug, Clone, Serialize)]
pub struct Cmd {
    pub n: u64,
    /// µs since the run's start, on the monotonic clock.
    pub invoke_us: u64,
    pub complete_us: u64,
    pub ok: bool,
    /// The end of its stderr, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A fault as it was applied: from `from_us` to the next fault (or the end).
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub fault: String,
    pub from_us: u64,
    /// When it was healed.
    pub healed_us: u64,
    /// A majority of the nodes was down (so commands may fail) until healed.
    pub no_majority: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultFigures {
    pub fault: String,
    pub commands: usize,
    pub failed: usize,
    /// Of `failed`, those excused by a window without a majority.
    pub excused: usize,
    /// The longest time without a successful command completing, over the
    /// stretch from this fault to the next.
    pub longest_gap_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CliReport {
    pub commands: usize,
    pub failed: usize,
    pub excused: usize,
    pub longest_gap_ms: u64,
    pub per_fault: Vec<FaultFigures>,
    /// Failed commands outside windows without a majority, and acknowledged
    /// variables missing from the final read.
    pub violations: Vec<String>,
}

/// Write the context the commands use: the first node's address, the others
/// as members (as a context that has talked to the cluster once has).
pub fn prepare(cfg: &Config) -> std::io::Result<()> {
    let dir = cfg.home.join("config/contexts");
    std::fs::create_dir_all(&dir)?;
    let ctx = serde_json::json!({
        "name": "chaos",
        "address": cfg.nodes[0].to_string(),
        "ca_fingerprint": cfg.ca,
        "token": cfg.token,
        "local": false,
        "members": cfg.nodes[1..].iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("chaos.json"), ctx.to_string())?;
    std::fs::write(cfg.home.join("config/current"), "chaos")
}

fn us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

async fn cairn(cfg: &Config, args: &[&str]) -> Result<String, String> {
    let child = tokio::process::Command::new(&cfg.cairn)
        .args(args)
        .env("CAIRN_HOME", &cfg.home)
        .env_remove("CAIRN_CONTEXT")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.cairn.display()))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            Err(format!(
                "{} ({})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                out.status
            ))
        }
        Ok(Err(e)) => Err(format!("waiting for cairn: {e}")),
        Err(_) => Err(format!("still running after {COMMAND_TIMEOUT:?}: killed")),
    }
}

/// Run commands one after another until `stop` is set.
pub async fn run(cfg: Config, start: Instant, stop: Arc<AtomicBool>) -> Vec<Cmd> {
    let mut out = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let invoke_us = us(start);
        let var = format!("C{}=v{n}", n % KEYS);
        let r = cairn(&cfg, &["config", "set", "--project", PROJECT, &var]).await;
        out.push(Cmd {
            n,
            invoke_us,
            complete_us: us(start),
            ok: r.is_ok(),
            error: r.err(),
        });
    }
    out
}

/// The variables of [`PROJECT`] (name → value) as one `cairn config list`
/// reads them, trying until `deadline` (after healing).
pub async fn final_read(cfg: &Config, deadline: Instant) -> Option<BTreeMap<String, String>> {
    loop {
        let r = cairn(cfg, &["config", "list", "--project", PROJECT, "--json"]).await;
        if let Ok(text) = r {
            if let Ok(serde_json::Value::Array(vars)) = serde_json::from_str(&text) {
                return Some(
                    vars.iter()
                        .filter_map(|v| {
                            Some((
                                v["name"].as_str()?.to_string(),
                                v["value"].as_str()?.to_string(),
                            ))
                        })
                        .collect(),
                );
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The report: figures per fault and the violations.
pub fn check(
    cmds: &[Cmd],
    windows: &[Window],
    fin: &BTreeMap<String, String>,
    end_us: u64,
) -> CliReport {
    let recovery = RECOVERY.as_micros() as u64;
    let excused = |c: &Cmd| {
        windows.iter().any(|w| {
            w.no_majority && c.invoke_us < w.healed_us + recovery && c.complete_us >= w.from_us
        })
    };
    let successes: Vec<u64> = cmds
        .iter()
        .filter(|c| c.ok)
        .map(|c| c.complete_us)
        .collect();
    // Longest stretch without a success overlapping [from, to).
    let gap = |from: u64, to: u64| -> u64 {
        let mut prev = 0u64;
        let mut longest = 0u64;
        for &t in successes.iter().chain(std::iter::once(&end_us)) {
            if t >= from && prev < to {
                longest = longest.max(t - prev);
            }
            prev = t;
        }
        longest / 1000
    };
    let mut r = CliReport {
        commands: cmds.len(),
        ..CliReport::default()
    };
    for c in cmds.iter().filter(|c| !c.ok) {
        r.failed += 1;
        if excused(c) {
            r.excused += 1;
        } else {
            r.violations.push(format!(
                "command {} (t={:.1}s..{:.1}s) failed with a majority up: {}",
                c.n,
                c.invoke_us as f64 / 1e6,
                c.complete_us as f64 / 1e6,
                c.error.as_deref().unwrap_or("?")
            ));
        }
    }
    for (i, w) in windows.iter().enumerate() {
        let to = windows.get(i + 1).map_or(end_us, |n| n.from_us);
        let inside: Vec<&Cmd> = cmds
            .iter()
            .filter(|c| c.invoke_us >= w.from_us && c.invoke_us < to)
            .collect();
        let failed: Vec<&&Cmd> = inside.iter().filter(|c| !c.ok).collect();
        r.per_fault.push(FaultFigures {
            fault: w.fault.clone(),
            commands: inside.len(),
            failed: failed.len(),
            excused: failed.iter().filter(|c| excused(c)).count(),
            longest_gap_ms: gap(w.from_us, to),
        });
    }
    r.longest_gap_ms = gap(0, end_us);
    // Per name: the last acknowledged command, and the values it may hold.
    let mut last_ok: BTreeMap<u64, u64> = BTreeMap::new();
    for c in cmds.iter().filter(|c| c.ok) {
        last_ok.insert(c.n % KEYS, c.n);
    }
    for (key, ok_n) in last_ok {
        let name = format!("C{key}");
        let allowed: Vec<String> = cmds
            .iter()
            .filter(|c| c.n % KEYS == key && (c.n == ok_n || (c.n > ok_n && !c.ok)))
            .map(|c| format!("v{}", c.n))
            .collect();
        let found = fin.get(&name);
        if !found.is_some_and(|v| allowed.contains(v)) {
            r.violations.push(format!(
                "{name}: holds {found:?} in the final read, but command {ok_n} set it to v{ok_n} and was acknowledged (allowed: {allowed:?})"
            ));
        }
    }
    r
}

/// The `cairn` binary next to the node binary (both built by
/// `cargo build --workspace --bins`).
pub fn cairn_bin(node_bin: &Path) -> Option<PathBuf> {
    let p = node_bin.parent()?.join("cairn");
    p.exists().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(n: u64, from_s: f64, to_s: f64, ok: bool) -> Cmd {
        Cmd {
            n,
            invoke_us: (from_s * 1e6) as u64,
            complete_us: (to_s * 1e6) as u64,
            ok,
            error: (!ok).then(|| "boom".into()),
        }
    }

    fn window(fault: &str, from_s: f64, healed_s: f64, no_majority: bool) -> Window {
        Window {
            fault: fault.into(),
            from_us: (from_s * 1e6) as u64,
            healed_us: (healed_s * 1e6) as u64,
            no_majority,
        }
    }

    #[test]
    fn a_name_holds_its_last_acknowledged_value_or_a_later_failed_one() {
        let k = KEYS;
        let cmds = vec![
            cmd(1, 0.0, 1.0, true),
            cmd(1 + k, 1.0, 2.0, true),
            cmd(1 + 2 * k, 2.0, 3.0, false),
        ];
        // The failed one ran while no majority was up: excused.
        let windows = [window("kill -9 n1,n2", 1.5, 3.0, true)];
        let fin = |v: &str| BTreeMap::from([("C1".to_string(), v.to_string())]);
        let ok = |v: &str| {
            check(&cmds, &windows, &fin(v), 4_000_000)
                .violations
                .is_empty()
        };
        assert!(ok(&format!("v{}", 1 + k)), "the last acknowledged value");
        assert!(
            ok(&format!("v{}", 1 + 2 * k)),
            "a later failed write that applied"
        );
        assert!(
            !ok("v1"),
            "an older acknowledged value: the last write was lost"
        );
        assert!(!ok("x"));
    }

    #[test]
    fn failures_are_excused_only_without_a_majority_and_gaps_are_measured() {
        let cmds = vec![
            cmd(1, 0.0, 1.0, true),
            cmd(2, 1.0, 2.0, true),
            // The kill at 2.5 s: the next success comes at 4.0 s.
            cmd(3, 2.0, 4.0, true),
            cmd(4, 4.0, 5.0, true),
            // Majority down from 10 s to 12 s: failures that overlap it or
            // begin before 17 s are excused.
            cmd(5, 9.0, 11.0, false),
            cmd(6, 11.0, 16.0, false),
            cmd(7, 16.0, 18.0, false),
            cmd(8, 18.0, 19.0, true),
            // A failure with a majority up.
            cmd(9, 19.0, 20.0, false),
        ];
        let windows = vec![
            window("kill -9 n1", 2.5, 3.5, false),
            window("kill -9 n1,n2", 10.0, 12.0, true),
        ];
        // Names are C(n mod KEYS): each command its own name here. C4 was
        // acknowledged but is missing; C5's failed write may have applied.
        let fin: BTreeMap<String, String> =
            [("C1", "v1"), ("C2", "v2"), ("C3", "v3"), ("C8", "v8")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let r = check(&cmds, &windows, &fin, 21_000_000);
        assert_eq!((r.commands, r.failed, r.excused), (9, 4, 3));
        // Command 9 failed with a majority up; C4 was acknowledged and lost.
        assert_eq!(r.violations.len(), 2, "{:?}", r.violations);
        assert!(
            r.violations[0].starts_with("command 9 "),
            "{:?}",
            r.violations
        );
        assert!(r.violations[1].starts_with("C4:"), "{:?}", r.violations);
        // From the kill to the next fault: commands 4 and 5; the longest
        // stretch without a success is 5 s → 19 s (the no-majority window).
        assert_eq!((r.per_fault[0].commands, r.per_fault[0].failed), (2, 1));
        assert_eq!(r.per_fault[0].longest_gap_ms, 14_000);
        assert_eq!((r.per_fault[1].commands, r.per_fault[1].failed), (4, 3));
        assert_eq!(r.per_fault[1].excused, 2);
        assert_eq!(r.per_fault[1].longest_gap_ms, 14_000);
        assert_eq!(r.longest_gap_ms, 14_000);
    }
}
