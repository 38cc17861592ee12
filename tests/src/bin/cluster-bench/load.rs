//! The two measurements: closed-loop write throughput/latency, and
//! leader-failover time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use cairn_tests::bench::load::closed_loop;

use crate::cluster::{Cluster, MEMBERS};
use crate::conn::{within, Conn};
use crate::stats::Latency;

/// Longest a single throughput write may take before the bench gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Distinct 8-byte keys: a letter and 7 digits.
static KEYS: AtomicU64 = AtomicU64::new(0);

pub fn key(prefix: char, n: u64) -> String {
    format!("{prefix}{:07}", n % 10_000_000)
}

fn next_keys(n: usize) -> u64 {
    KEYS.fetch_add(n as u64, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Throughput

/// Run `total` writes spread over `conns` (write i on connection i mod n),
/// each connection sequential (closed loop), all starting together. Returns
/// the wall time and each write's latency in microseconds.
pub async fn drive(
    conns: &[Conn],
    total: usize,
    value: &Arc<str>,
) -> anyhow::Result<(Duration, Vec<u64>)> {
    let base = next_keys(total);
    let value = value.clone();
    closed_loop(conns, total, move |conn: Conn, c, i| {
        let value = value.clone();
        async move {
            let k = key('k', base + i as u64);
            let t = Instant::now();
            within(CALL_TIMEOUT, conn.put(&k, &value))
                .await
                .with_context(|| format!("client {c}, write {i}"))?;
            Ok(t.elapsed().as_micros() as u64)
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Failover

/// A new write attempt starts this often, alternating between the surviving
/// members, whatever the attempts before it are doing.
pub const PROBE_EVERY: Duration = Duration::from_millis(5);
/// An attempt not answered within this is abandoned (a newer one is already
/// under way).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many attempts in flight.
const MAX_IN_FLIGHT: usize = 512;
/// Steady writing before the kill.
const STEADY: Duration = Duration::from_millis(500);
/// Give up on a trial after this.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The survivors' view of the leader is polled this often.
const VIEW_EVERY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, serde::Serialize)]
pub struct Trial {
    pub system: &'static str,
    /// Member index killed (the leader) and the member that led afterwards.
    pub killed: usize,
    pub new_leader: Option<usize>,
    /// kill -9 → first acknowledged write among those started after the kill.
    pub failover_ms: f64,
    /// kill -9 → first time a survivor reports a new leader (polled every
    /// 10 ms, so up to ~10 ms late); None if never seen before the write.
    pub new_leader_seen_ms: Option<f64>,
    /// Latency of the first acknowledged write (it started at most
    /// PROBE_EVERY before the previous one failed or at the new leader).
    pub first_ack_latency_ms: f64,
    /// Attempts started after the kill and before the first ack, and how
    /// they ended.
    pub attempts_before_ack: usize,
    pub failed_before_ack: usize,
    pub timed_out_before_ack: usize,
    /// Distinct error messages seen after the kill (a few).
    pub errors: Vec<String>,
    /// Restart of the killed member → cluster healthy again (untimed part
    /// of the trial).
    pub recovery_ms: f64,
    /// Restarts of the killed member that exited by themselves during
    /// start-up (each retried), with the last line of their log.
    pub restart_failures: Vec<String>,
}

struct Attempt {
    start: Instant,
    end: Instant,
    result: Result<(), String>,
}

/// Kill the leader of `cluster` with SIGKILL while a client keeps writing to
/// the surviving members; time kill → next acknowledged write; restart the
/// member and wait until the cluster is healthy.
pub async fn failover_trial(
    cluster: &mut Cluster,
    value: &Arc<str>,
    settle: Duration,
) -> anyhow::Result<Trial> {
    cluster.check_alive()?;
    let leader = cluster.leader().await?;
    let old_id = cluster.ids[leader];
    let survivors: Vec<usize> = (0..MEMBERS).filter(|&i| i != leader).collect();
    let mut conns = Vec::new();
    for &i in &survivors {
        conns.push(cluster.connect(i).await?);
    }
    // Separate connections for the leader-view polls, so they never queue
    // behind writes.
    let mut views = Vec::new();
    for &i in &survivors {
        views.push(cluster.connect(i).await?);
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Attempt>();
    let prober = tokio::spawn(probe(conns.clone(), value.clone(), tx));

    let result = async {
        // Steady state first: the writes must be flowing before the kill.
        let t0 = Instant::now();
        let mut acks = 0;
        let mut pre_errors = 0;
        while t0.elapsed() < STEADY || acks < 10 {
            let a = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .map_err(|_| anyhow!("no write completed for 10 s before the kill"))?
                .context("prober stopped")?;
            match a.result {
                Ok(()) => acks += 1,
                Err(e) => {
                    pre_errors += 1;
                    if pre_errors > 5 {
                        bail!("writes fail before the kill (healthy cluster): {e}");
                    }
                    eprintln!("  warning: a write failed before the kill: {e}");
                }
            }
        }

        let t_kill = cluster.members[leader].kill9()?;
        let viewer = tokio::spawn(watch_leader(views.clone(), old_id, t_kill));
        let mut attempts = 0;
        let mut failed = 0;
        let mut timed_out = 0;
        let mut errors: Vec<String> = Vec::new();
        let (ack_end, ack_start) = loop {
            let left = TRIAL_TIMEOUT.saturating_sub(t_kill.elapsed());
            let a = tokio::time::timeout(left, rx.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "no write acknowledged within {} s of killing the leader; errors seen: {errors:?}",
                        TRIAL_TIMEOUT.as_secs()
                    )
                })?
                .context("prober stopped")?;
            if a.start < t_kill {
                continue;
            }
            attempts += 1;
            match a.result {
                Ok(()) => break (a.end, a.start),
                Err(e) => {
                    failed += 1;
                    if e.starts_with("no answer within") {
                        timed_out += 1;
                    }
                    let short: String = e.chars().take(140).collect();
                    if errors.len() < 4 && !errors.contains(&short) {
                        errors.push(short);
                    }
                }
            }
        };
        prober.abort();
        // The new leader is known by the time a write is acknowledged; the
        // poll may still be up to one period behind.
        let seen = match tokio::time::timeout(Duration::from_secs(2), viewer).await {
            Ok(Ok(s)) => s,
            _ => None,
        };
        Ok::<_, anyhow::Error>((
            t_kill,
            ack_end.duration_since(t_kill),
            ack_end.duration_since(ack_start),
            seen,
            attempts,
            failed,
            timed_out,
            errors,
        ))
    }
    .await;
    prober.abort();
    for c in conns.iter().chain(&views) {
        c.close();
    }
    let (_t_kill, failover, first_latency, seen, attempts, failed, timed_out, errors) = result?;

    let t_restart = Instant::now();
    let restart_failures = cluster.restart(leader).await?;
    cluster.wait_healthy().await?;
    let recovery = t_restart.elapsed();
    let new_leader = cluster.leader().await.ok();
    tokio::time::sleep(settle).await;

    Ok(Trial {
        system: cluster.name(),
        killed: leader,
        new_leader,
        failover_ms: ms(failover),
        new_leader_seen_ms: seen.map(ms),
        first_ack_latency_ms: ms(first_latency),
        attempts_before_ack: attempts,
        failed_before_ack: failed,
        timed_out_before_ack: timed_out,
        errors,
        recovery_ms: ms(recovery),
        restart_failures,
    })
}

/// Start a write every PROBE_EVERY, alternating over `conns`, and report
/// each one's outcome. Runs until aborted (which aborts every attempt).
async fn probe(conns: Vec<Conn>, value: Arc<str>, tx: mpsc::UnboundedSender<Attempt>) {
    let mut set = JoinSet::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut k: usize = 0;
    loop {
        tick.tick().await;
        while set.try_join_next().is_some() {}
        if set.len() >= MAX_IN_FLIGHT {
            continue;
        }
        let conn = conns[k % conns.len()].clone();
        k += 1;
        let key = key('f', next_keys(1));
        let value = value.clone();
        let tx = tx.clone();
        set.spawn(async move {
            let start = Instant::now();
            let r = within(ATTEMPT_TIMEOUT, conn.put(&key, &value)).await;
            let _ = tx.send(Attempt {
                start,
                end: Instant::now(),
                result: r.map_err(|e| format!("{e:#}")),
            });
        });
    }
}

/// Poll every survivor's view of the leader until one names a leader other
/// than `old`; the time since the kill.
async fn watch_leader(views: Vec<Conn>, old: u64, t_kill: Instant) -> Option<Duration> {
    let deadline = t_kill + TRIAL_TIMEOUT;
    while Instant::now() < deadline {
        for v in &views {
            if let Ok(Some(l)) = within(Duration::from_millis(500), v.leader_view()).await {
                if l != old {
                    return Some(t_kill.elapsed());
                }
            }
        }
        tokio::time::sleep(VIEW_EVERY).await;
    }
    None
}

pub use crate::stats::ms;

/// Percentiles of failover times (ms) across trials.
pub fn summary(values: &[f64]) -> Latency {
    let mut us: Vec<u64> = values.iter().map(|v| (v * 1000.0).round() as u64).collect();
    Latency::of(&mut us)
}
