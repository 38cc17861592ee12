//! Tests of the raft layer: openraft's storage conformance suite, restart
//! recovery, snapshot + log compaction, and the handle's API.

use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{LogIdOptionExt, RaftLogReader, StorageHelper, StorageIOError, Vote};
use serde::Serialize;
use tempfile::TempDir;

use super::*;
use crate::state::{Command, Request, State};

/// Generous bound for anything that should happen "promptly" on a loaded CI box.
const PROMPT: Duration = Duration::from_secs(10);

/// Logs to the test output when `RUST_LOG` is set.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

struct TempStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let log = LogStore::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        let sm = StateMachineStore::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

/// openraft's own storage conformance suite (it builds its own runtimes, so
/// this is a plain `#[test]`).
#[test]
fn raft_storage_conformance_suite() {
    init_tracing();
    Suite::test_all(TempStores).expect("conformance suite");
}

fn put(i: usize) -> Request {
    Request {
        now_ms: 1_000 + i as u64,
        command: Command::Put {
            key: format!("key-{i}"),
            value: format!("value-{i}"),
        },
    }
}

/// `State` and `Response` are compared by their bincode encoding, so these
/// tests rely on nothing but the traits the raft layer itself requires.
fn bytes<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("encodable")
}

fn expected_state(reqs: &[Request]) -> State {
    let mut s = State::default();
    for r in reqs {
        s.apply(r);
    }
    s
}

fn small_snapshots() -> Tuning {
    Tuning::fixed_snapshots(50, 10)
}

async fn open_leader(dir: &std::path::Path, tuning: Tuning) -> RaftNode {
    init_tracing();
    let node = RaftNode::open_with(dir, 1, "127.0.0.1:9701".into(), NoPeers, tuning)
        .await
        .expect("open");
    node.initialize_single().await.expect("initialize");
    let leader = node.wait_for_leader(PROMPT).await.expect("a leader");
    assert_eq!(leader.id, 1);
    assert!(node.is_leader());
    node
}

#[tokio::test]
async fn write_returns_the_apply_response_promptly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_leader(dir.path(), Tuning::default()).await;

    let first = put(1);
    let again = Request {
        now_ms: 2_000,
        command: Command::Put {
            key: "key-1".into(),
            value: "second".into(),
        },
    };

    let mut model = State::default();
    for req in [first, again] {
        let want = model.apply(&req);
        let got = tokio::time::timeout(PROMPT, node.write(req))
            .await
            .expect("write returns promptly")
            .expect("write succeeds");
        assert_eq!(bytes(&got), bytes(&want), "response is what apply returned");
    }
    let seen = node.read(bytes).await.expect("linearizable read");
    assert_eq!(seen, bytes(&model));
    assert_eq!(bytes(&node.state_snapshot()), bytes(&model));
    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn uninitialized_node_refuses_with_retryable_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RaftNode::open(dir.path(), 7, "127.0.0.1:1".into(), NoPeers)
        .await
        .expect("open");
    assert!(!node.is_leader());

    let err = node.write(put(0)).await.expect_err("no leader yet");
    assert!(
        matches!(err, WriteError::ForwardToLeader { leader: None }),
        "{err:?}"
    );
    assert!(err.is_retryable());

    let err = node.read(|_| ()).await.expect_err("no leader yet");
    assert!(
        matches!(err, ReadError::ForwardToLeader { leader: None }),
        "{err:?}"
    );
    node.shutdown().await.expect("shutdown");

    let err = node.write(put(0)).await.expect_err("stopped");
    assert!(matches!(err, WriteError::Fatal(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn restart_keeps_every_write_and_does_not_reinitialize() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reqs: Vec<Request> = (0..200).map(put).collect();
    let want = bytes(&expected_state(&reqs));

    let node = open_leader(dir.path(), Tuning::default()).await;
    for r in &reqs {
        node.write(r.clone()).await.expect("write");
    }
    let before = node.metrics();
    let membership_log_id = *before.membership_config.log_id();
    assert!(membership_log_id.is_some());
    assert!(before.snapshot.is_none(), "default tuning: no snapshot yet");
    node.shutdown().await.expect("shutdown");

    // The committed log id was persisted, so openraft re-applies the log at startup.
    {
        let mut log = LogStore::open(dir.path()).expect("log store");
        let committed = log.read_committed().await.expect("read committed");
        assert_eq!(committed, before.last_applied);
    }

    let node = RaftNode::open(dir.path(), 1, "127.0.0.1:9701".into(), NoPeers)
        .await
        .expect("reopen");
    // `open` returns after `Raft::new`, which re-applied the committed entries.
    assert_eq!(
        bytes(&node.state_snapshot()),
        want,
        "state recovered on open"
    );
    assert!(node.raft().is_initialized().await.expect("running"));
    node.initialize_single()
        .await
        .expect("initialize is a no-op");
    node.wait_for_leader(PROMPT).await.expect("leader again");

    let after = node.metrics();
    assert_eq!(
        *after.membership_config.log_id(),
        membership_log_id,
        "no new membership entry: not initialized twice"
    );
    assert_eq!(node.read(bytes).await.expect("read"), want);

    let more = put(1000);
    node.write(more.clone()).await.expect("write after restart");
    let mut all = reqs.clone();
    all.push(more);
    assert_eq!(
        node.read(bytes).await.expect("read"),
        bytes(&expected_state(&all))
    );
    node.shutdown().await.expect("shutdown");
}

/// The exact mechanism `Raft::new` uses at startup (`StorageHelper::get_initial_state`)
/// re-applies the committed log onto a state machine that only has its snapshot.
#[tokio::test]
async fn startup_reapplies_committed_log_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reqs: Vec<Request> = (0..20).map(put).collect();

    let node = open_leader(dir.path(), Tuning::default()).await;
    for r in &reqs {
        node.write(r.clone()).await.expect("write");
    }
    let last_applied = node.metrics().last_applied;
    node.shutdown().await.expect("shutdown");

    let mut log = LogStore::open(dir.path()).expect("log store");
    let mut sm = StateMachineStore::open(dir.path()).expect("sm store");
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, None, "no snapshot: the state machine starts empty");
    assert_eq!(
        bytes(&sm.shared().read().expect("lock").state),
        bytes(&State::default())
    );

    let initial = StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .expect("initial state");
    assert_eq!(initial.committed, last_applied);
    assert_eq!(sm.applied_state().await.expect("applied").0, last_applied);
    assert_eq!(
        bytes(&sm.shared().read().expect("lock").state),
        bytes(&expected_state(&reqs)),
        "every committed entry re-applied"
    );
}

#[tokio::test]
async fn snapshots_keep_the_log_bounded_and_restart_is_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tuning = small_snapshots();
    let reqs: Vec<Request> = (0..500).map(put).collect();
    let want = bytes(&expected_state(&reqs));

    let node = open_leader(dir.path(), tuning.clone()).await;
    for r in &reqs {
        node.write(r.clone()).await.expect("write");
    }
    let last = node.metrics().last_log_index.expect("log not empty");
    let snap_at_least = last - tuning.snapshot_logs_since_last;
    let m = node
        .raft()
        .wait(Some(PROMPT))
        .metrics(
            |m| {
                m.snapshot.index() >= Some(snap_at_least)
                    && m.purged.index() >= Some(snap_at_least - tuning.logs_to_keep_after_snapshot)
            },
            "snapshot built and log purged",
        )
        .await
        .expect("snapshot and purge");
    tracing::info!(snapshot = ?m.snapshot, purged = ?m.purged, "compacted");
    node.shutdown().await.expect("shutdown");

    {
        let log = LogStore::open(dir.path()).expect("log store");
        let entries = log.entry_count().expect("count");
        let bound = tuning.snapshot_logs_since_last + tuning.logs_to_keep_after_snapshot;
        assert!(
            entries <= bound,
            "log holds {entries} entries, bound {bound}"
        );
        let mut sm = StateMachineStore::open(dir.path()).expect("sm store");
        let snap = sm
            .get_current_snapshot()
            .await
            .expect("read snapshot")
            .expect("a persisted snapshot");
        assert!(snap.meta.last_log_id.index() >= Some(snap_at_least));
    }

    let node = RaftNode::open_with(dir.path(), 1, "127.0.0.1:9701".into(), NoPeers, tuning)
        .await
        .expect("reopen");
    assert_eq!(
        bytes(&node.state_snapshot()),
        want,
        "snapshot + re-applied suffix"
    );
    node.wait_for_leader(PROMPT).await.expect("leader again");
    assert_eq!(node.read(bytes).await.expect("read"), want);
    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn log_store_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lid = |term, index| openraft::testing::log_id::<NodeId>(term, 1, index);
    {
        let mut log = LogStore::open(dir.path()).expect("open");
        log.save_vote(&Vote::new(3, 1)).await.expect("vote");
        log.blocking_append((1..=10).map(|i| openraft::testing::blank_ent::<TypeConfig>(2, 1, i)))
            .await
            .expect("append");
        log.save_committed(Some(lid(2, 8)))
            .await
            .expect("committed");
        log.purge(lid(2, 4)).await.expect("purge");
        log.truncate(lid(2, 10)).await.expect("truncate");
    }
    let mut log = LogStore::open(dir.path()).expect("reopen");
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 1)));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(lid(2, 8))
    );
    let st = log.get_log_state().await.expect("state");
    assert_eq!(st.last_purged_log_id, Some(lid(2, 4)));
    assert_eq!(st.last_log_id, Some(lid(2, 9)));
    let got = log.try_get_log_entries(0..100).await.expect("entries");
    let idx: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
    assert_eq!(idx, (5..=9).collect::<Vec<_>>());
}

#[tokio::test]
async fn no_peers_is_unreachable() {
    use openraft::error::RPCError;
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};

    let mut factory = NetworkFactory::new(NoPeers);
    let mut net = factory.new_client(2, &Node::new("10.0.0.2:9701")).await;
    let req = openraft::raft::VoteRequest::new(Vote::new(1, 1), None);
    let err = net
        .vote(req, RPCOption::new(Duration::from_secs(1)))
        .await
        .expect_err("unreachable");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("10.0.0.2:9701"), "{err}");
}

/// The size-scaled cadence on a live node: while the state grows by one
/// record per write the interval doubles, and with a steady state of R
/// records a snapshot comes once per about R writes, not every
/// `snapshot_logs_since_last`.
#[tokio::test]
async fn the_snapshot_interval_grows_with_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tuning = Tuning {
        snapshot_logs_since_last: 20,
        snapshot_logs_per_record: 1,
        logs_to_keep_after_snapshot: 5,
        ..Tuning::default()
    };
    let node = open_leader(dir.path(), tuning).await;
    // Every snapshot index the node reports, in order.
    let mut watch = node.metrics_watch();
    let seen = tokio::spawn(async move {
        let mut seen: Vec<u64> = Vec::new();
        loop {
            if let Some(s) = watch.borrow_and_update().snapshot.map(|s| s.index) {
                if seen.last() != Some(&s) {
                    seen.push(s);
                }
            }
            if watch.changed().await.is_err() {
                return seen;
            }
        }
    });
    let overwrite = |i: usize| Request {
        now_ms: 5_000 + i as u64,
        command: Command::Put {
            key: "key-0".into(),
            value: format!("again-{i}"),
        },
    };
    // 300 records; then 400 overwrites (the state stays at 300 records).
    for i in 0..300 {
        node.write(put(i)).await.expect("write");
    }
    for i in 0..400 {
        node.write(overwrite(i)).await.expect("write");
    }
    let last = node.metrics().last_applied.index().expect("applied");
    // Let a due snapshot finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = node.metrics();
    node.shutdown().await.expect("shutdown");
    let seen = seen.await.expect("watcher");
    tracing::info!(?seen, last, "snapshots");

    // A fixed interval of 20 would have built ~35 snapshots.
    assert!(
        (4..=8).contains(&seen.len()),
        "snapshots at {seen:?} over {last} entries"
    );
    // Each interval is at least the records at the previous snapshot (one
    // per entry while growing, 300 once steady), or the minimum of 20.
    for w in seen.windows(2) {
        let records_then = w[0].min(300);
        assert!(
            w[1] - w[0] + 2 >= records_then.max(20),
            "interval {} after a snapshot of ~{records_then} records: {seen:?}",
            w[1] - w[0]
        );
    }
    // The log is still purged behind the last snapshot.
    let snap = m.snapshot.index().expect("a snapshot");
    assert!(m.purged.index() >= Some(snap - 5), "{m:?}");
    assert!(
        last - snap < 300 + 20,
        "{} entries since the last snapshot",
        last - snap
    );
}

/// A snapshot for a follower of release 0.1.0 is in its format (bincode of
/// its `State`), whatever format this node holds it in; and what 0.1.0
/// sends reads back here.
#[test]
fn snapshot_data_converts_to_and_from_release_0_1s_format() {
    use crate::raft::format;
    use crate::raft::state_machine::{decode_snapshot_data, legacy_snapshot_data, SnapshotData};
    let mut state = expected_state(&[put(1), put(2)]);
    state.cluster_version = Some(5);
    let data = SnapshotData {
        state: state.clone(),
        last_applied: Some(openraft::testing::log_id::<NodeId>(1, 1, 2)),
        membership: openraft::StoredMembership::default(),
    };
    let current = format::encode(&data).expect("encode");
    let legacy = legacy_snapshot_data(current).expect("convert");
    assert_eq!(format::format_of(&legacy).expect("format"), 0);
    let (old, used): (crate::raft::state_machine::LegacySnapshotData, usize) =
        bincode::serde::decode_from_slice(&legacy, bincode::config::standard())
            .expect("0.1.0 reads it");
    assert_eq!(used, legacy.len());
    assert_eq!(old.state.registers, state.registers);
    assert_eq!(old.last_applied, data.last_applied);
    // Back: everything but what 0.1.0 has no field for.
    let back = decode_snapshot_data(&legacy).expect("decode");
    assert_eq!(back.state.cluster_version, None);
    assert_eq!(back.state.registers, state.registers);
    // Already format 0: passed through as is.
    assert_eq!(legacy_snapshot_data(legacy.clone()).expect("same"), legacy);
}
