//! When to build a snapshot: the interval grows with the size of the state.
//!
//! A snapshot is the whole state, so building one costs time (and bytes
//! written) linear in the state's size, while it saves the log entries
//! applied since the last one. openraft's `SnapshotPolicy::LogsSinceLast(n)`
//! is fixed when the node starts: with a large state (24 MB at 95k keys) a
//! full snapshot every 1,000 writes dominates the write path. So openraft's
//! policy is `Never` and this module decides instead:
//!
//! **Build a snapshot once the entries applied since the last one reach
//! `max(min_logs, logs_per_record × R)`, where R is the number of records
//! the state held at the last snapshot** ([`snapshot_threshold`]).
//!
//! - With `logs_per_record = 1` (the default), a snapshot of R records is
//!   followed by at least R writes before the next one, so the records the
//!   snapshots write, amortized over the writes, are at most about two per
//!   write (the next snapshot holds at most R + those writes), whatever the
//!   state's size. R is taken at the last snapshot, not now: a state that
//!   grows by one record per write would otherwise never catch up with its
//!   own threshold (then the interval simply doubles: 1k, 2k, 4k, …).
//! - The log between snapshots holds at most `max(min_logs, R)` entries, so a
//!   restart replays no more than about the state's size, and disk use stays
//!   proportional to it. A small state keeps the old cadence: every
//!   `min_logs` entries.
//! - Purging is unchanged: after each snapshot openraft purges the log up to
//!   `max_in_snapshot_log_to_keep` entries before it
//!   (`Tuning::logs_to_keep_after_snapshot`), so the log never grows without
//!   bound.
//!
//! `logs_per_record = 0` gives a fixed interval of `min_logs` entries (the
//! hidden `cairn-node --raft-snapshot-every N` test knob).
//!
//! Every node (leader or follower) runs [`run`] for itself, as openraft's own
//! policy would: it watches openraft's metrics and calls
//! `raft.trigger().snapshot()` when the threshold is reached.

use std::sync::Weak;

use openraft::LogIdOptionExt;
use tokio::sync::watch;

use super::node::Inner;
use super::Metrics;

/// Entries to apply since the last snapshot before the next one is built:
/// `max(min_logs, logs_per_record × records)`, `records` being the state's
/// size at the last snapshot.
pub fn snapshot_threshold(min_logs: u64, logs_per_record: u64, records: u64) -> u64 {
    min_logs.max(logs_per_record.saturating_mul(records))
}

/// Entries applied after the log index `base` (the last snapshot, or the
/// last trigger), up to `applied`. `None` means "nothing" (index -1).
pub fn logs_since(applied: Option<u64>, base: Option<u64>) -> u64 {
    let next = |i: Option<u64>| i.map_or(0, |i| i + 1);
    next(applied).saturating_sub(next(base))
}

/// The snapshot decision of one node, fed with its metrics.
#[derive(Debug, Clone)]
pub struct Cadence {
    min_logs: u64,
    logs_per_record: u64,
    /// The applied index at which a snapshot was last triggered: not
    /// triggered again until another threshold's worth of entries, even if
    /// openraft skipped that trigger (a build already running).
    triggered: Option<u64>,
    /// The index the interval counts from (the later of the current
    /// snapshot and the last trigger) and the state's records when this
    /// task first saw it.
    base: Option<(Option<u64>, u64)>,
}

impl Cadence {
    pub fn new(min_logs: u64, logs_per_record: u64) -> Cadence {
        Cadence {
            min_logs,
            logs_per_record,
            triggered: None,
            base: None,
        }
    }

    /// Whether to trigger a snapshot now, given the last applied index and
    /// the current snapshot's index. `records` (the state's size now) is
    /// asked only when the base moved (a snapshot was triggered, built or
    /// installed; and at the first call). `Some((since, threshold))` when
    /// due; the trigger is then recorded.
    pub fn due(
        &mut self,
        applied: Option<u64>,
        snapshot: Option<u64>,
        records: impl FnOnce() -> u64,
    ) -> Option<(u64, u64)> {
        let base = snapshot.max(self.triggered);
        let base_records = match self.base {
            Some((b, r)) if b == base => r,
            _ => {
                let r = records();
                self.base = Some((base, r));
                r
            }
        };
        let since = logs_since(applied, base);
        let threshold = snapshot_threshold(self.min_logs, self.logs_per_record, base_records);
        if since < threshold {
            return None;
        }
        self.triggered = applied;
        Some((since, threshold))
    }
}

/// Watch the metrics of the node behind `node` and trigger a snapshot
/// whenever `cadence` says so. Ends when the node is dropped or its Raft
/// core stops.
pub(super) async fn run(
    node: Weak<Inner>,
    mut metrics: watch::Receiver<Metrics>,
    mut cadence: Cadence,
) {
    loop {
        let (applied, snapshot) = {
            let m = metrics.borrow_and_update();
            (m.last_applied.index(), m.snapshot.index())
        };
        let Some(inner) = node.upgrade() else { return };
        if let Some((since, threshold)) = cadence.due(applied, snapshot, || inner.state_records()) {
            tracing::info!(
                since,
                threshold,
                "building a snapshot: {since} entries applied since the last one (threshold {threshold})"
            );
            if inner.raft.trigger().snapshot().await.is_err() {
                return; // the Raft core stopped
            }
        }
        drop(inner);
        if metrics.changed().await.is_err() {
            return; // the Raft core stopped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_state_keeps_the_minimum_interval() {
        assert_eq!(snapshot_threshold(1000, 1, 0), 1000);
        assert_eq!(snapshot_threshold(1000, 1, 999), 1000);
        assert_eq!(snapshot_threshold(1000, 1, 1000), 1000);
    }

    #[test]
    fn a_large_state_grows_the_interval_with_its_records() {
        // The 24 MB / 95k keys state of the bench: one snapshot per 95k writes,
        // not one per 1,000.
        assert_eq!(snapshot_threshold(1000, 1, 95_000), 95_000);
        assert_eq!(snapshot_threshold(1000, 2, 95_000), 190_000);
        assert_eq!(snapshot_threshold(1000, 1, 1001), 1001);
    }

    #[test]
    fn zero_per_record_is_a_fixed_interval() {
        assert_eq!(snapshot_threshold(20, 0, 0), 20);
        assert_eq!(snapshot_threshold(20, 0, 1_000_000), 20);
    }

    #[test]
    fn no_overflow() {
        assert_eq!(snapshot_threshold(1, u64::MAX, 3), u64::MAX);
    }

    #[test]
    fn logs_since_counts_entries_after_the_base() {
        assert_eq!(logs_since(None, None), 0);
        // Index 0 is the first entry.
        assert_eq!(logs_since(Some(0), None), 1);
        assert_eq!(logs_since(Some(9), None), 10);
        assert_eq!(logs_since(Some(9), Some(9)), 0);
        assert_eq!(logs_since(Some(1009), Some(9)), 1000);
        // A base ahead of applied (an installed snapshot not yet in the
        // metrics' applied index) is "nothing since".
        assert_eq!(logs_since(Some(5), Some(9)), 0);
    }

    /// Simulate a node whose state grows by one record per write, with a
    /// snapshot built as soon as it is triggered: the records written by
    /// snapshots stay under two per write (the fixed 1,000-entry interval
    /// writes ~100 per write at 200k records), the interval doubles, and the
    /// log between snapshots never holds more entries than the state has
    /// records.
    #[test]
    fn a_growing_state_costs_under_two_records_per_write() {
        let writes = 200_000u64;
        let run = |mut c: Cadence| {
            let (mut snapshot, mut written, mut snapshots) = (None, 0u64, 0u64);
            for applied in 0..writes {
                let records = applied + 1;
                let since = logs_since(Some(applied), snapshot);
                assert!(
                    since <= records.max(1000),
                    "{since} entries at {records} records"
                );
                if c.due(Some(applied), snapshot, || records).is_some() {
                    snapshot = Some(applied);
                    written += records;
                    snapshots += 1;
                }
            }
            (written, snapshots)
        };
        let (written, snapshots) = run(Cadence::new(1000, 1));
        assert!(
            written <= 2 * writes,
            "{written} records written by snapshots"
        );
        // 1k, 2k, 4k, … 128k.
        assert_eq!(snapshots, 8);
        let (fixed, fixed_snapshots) = run(Cadence::new(1000, 0));
        assert_eq!(fixed_snapshots, writes / 1000);
        assert!(fixed > 50 * written, "fixed {fixed} vs scaled {written}");
    }

    /// A state that does not grow (overwrites): one snapshot per `records`
    /// writes, so each write costs about one record of snapshot.
    #[test]
    fn a_steady_large_state_snapshots_once_per_its_size() {
        let records = 95_000u64;
        let mut c = Cadence::new(1000, 1);
        let mut snapshot = None;
        let mut at = Vec::new();
        for applied in 0..400_000u64 {
            if c.due(Some(applied), snapshot, || records).is_some() {
                snapshot = Some(applied);
                at.push(applied);
            }
        }
        assert_eq!(at, vec![94_999, 189_999, 284_999, 379_999]);
    }

    #[test]
    fn a_trigger_is_not_repeated_while_the_snapshot_is_built() {
        let mut c = Cadence::new(10, 0);
        assert_eq!(c.due(Some(8), None, || 0), None);
        assert_eq!(c.due(Some(9), None, || 0), Some((10, 10)));
        // The snapshot is not in the metrics yet: no second trigger.
        assert_eq!(c.due(Some(12), None, || 0), None);
        assert_eq!(c.due(Some(19), None, || 0), Some((10, 10)));
        // Once built, counting starts from the snapshot.
        assert_eq!(c.due(Some(25), Some(19), || 0), None);
        assert_eq!(c.due(Some(29), Some(19), || 0), Some((10, 10)));
        // A snapshot installed from the leader moves the base forward.
        assert_eq!(c.due(Some(500), Some(495), || 0), None);
    }

    #[test]
    fn the_threshold_uses_the_records_at_the_last_snapshot() {
        let mut c = Cadence::new(10, 1);
        assert_eq!(c.due(Some(5), None, || 100), None);
        // Same base: the state is not counted again, however it grew.
        assert_eq!(c.due(Some(98), None, || panic!("counted again")), None);
        assert_eq!(
            c.due(Some(99), None, || panic!("counted again")),
            Some((100, 100))
        );
        // The trigger moved the base: counted once more (300 records now).
        assert_eq!(c.due(Some(150), None, || 300), None);
        assert_eq!(c.due(Some(150), Some(99), || panic!("same base")), None);
        assert_eq!(
            c.due(Some(399), Some(99), || panic!("same base")),
            Some((300, 300))
        );
        // A snapshot installed past the trigger: a new base, counted again.
        assert_eq!(c.due(Some(1000), Some(1000), || 5), None);
        assert_eq!(
            c.due(Some(1010), Some(1000), || panic!("same base")),
            Some((10, 10))
        );
    }
}
