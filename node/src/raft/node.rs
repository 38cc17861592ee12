//! [`RaftNode`]: the handle the rest of the node uses to write through Raft and
//! to read the replicated [`State`].
//!
//! openraft's core task owns the log store and its state machine task owns the
//! state machine store; the handle (cheap to clone) holds the `Raft` API handle
//! and a read lock on the applied state.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use openraft::error::{Fatal, InitializeError};
use openraft::{Config, LogIdOptionExt, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use super::error::{Leader, RaftError, ReadError, WriteError};
use super::log_store::LogStore;
use super::network::{NetworkFactory, PeerTransport};
use super::state_machine::{Applied, StateMachineStore};
use super::{Metrics, Node, NodeId, Raft};
use crate::state::{Request, Response, State};

/// How long [`RaftNode::shutdown`] waits for openraft's tasks to release the
/// redb files after the core has stopped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Raft timing and log-compaction knobs. `Default` uses the module constants.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Build a snapshot once at least this many entries were applied since
    /// the last one (see [`cadence`](super::cadence))…
    pub snapshot_logs_since_last: u64,
    /// …and at least this many per record of the state, so the interval
    /// grows with the state. 0: a fixed interval of `snapshot_logs_since_last`.
    pub snapshot_logs_per_record: u64,
    /// Applied entries kept in the log after a snapshot.
    pub logs_to_keep_after_snapshot: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            snapshot_logs_since_last: super::SNAPSHOT_LOGS_SINCE_LAST,
            snapshot_logs_per_record: super::SNAPSHOT_LOGS_PER_RECORD,
            logs_to_keep_after_snapshot: super::LOGS_TO_KEEP_AFTER_SNAPSHOT,
            heartbeat_interval_ms: super::HEARTBEAT_INTERVAL_MS,
            election_timeout_min_ms: super::ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: super::ELECTION_TIMEOUT_MAX_MS,
        }
    }
}

impl Tuning {
    /// A snapshot every `n` applied entries whatever the state's size, and
    /// `keep` entries kept in the log after it (tests: make followers catch
    /// up by snapshot after a few writes).
    pub fn fixed_snapshots(n: u64, keep: u64) -> Tuning {
        Tuning {
            snapshot_logs_since_last: n,
            snapshot_logs_per_record: 0,
            logs_to_keep_after_snapshot: keep,
            ..Tuning::default()
        }
    }

    /// The openraft config (not yet validated). Snapshots are triggered by
    /// [`cadence`](super::cadence), not by openraft's fixed policy; purging
    /// after a snapshot is still openraft's (`max_in_snapshot_log_to_keep`).
    fn config(&self) -> Config {
        Config {
            cluster_name: "cairn".to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.logs_to_keep_after_snapshot,
            purge_batch_size: 1,
            ..Default::default()
        }
    }
}

/// Handle to this node's Raft member. Clone freely.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    id: NodeId,
    addr: String,
    pub(super) raft: Raft,
    applied: Arc<RwLock<Applied>>,
    /// Snapshots received from a leader and installed since this process started.
    snapshots_installed: Arc<AtomicU64>,
    snapshot_bytes: Arc<AtomicU64>,
    /// The two redb databases, to wait for their release on shutdown.
    dbs: [Weak<redb::Database>; 2],
}

impl Inner {
    /// [`State::record_count`] of the applied state.
    pub(super) fn state_records(&self) -> u64 {
        self.applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .state
            .record_count()
    }
}

/// Where this node's log and state machine are (its own view, no round trip).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// Last log index included in this node's current snapshot.
    pub snapshot_index: Option<u64>,
    /// Last log index purged from this node's log.
    pub purged_index: Option<u64>,
    /// Snapshots this node received from a leader and installed since it started.
    pub snapshots_installed: u64,
    /// The size of this node's current snapshot, in bytes (0 without one).
    pub snapshot_bytes: u64,
}

impl RaftNode {
    /// Open the Raft member stored in `data_dir` (created if missing) with the
    /// default [`Tuning`]. A restarted node resumes from its snapshot and the
    /// committed log before this returns.
    pub async fn open<T: PeerTransport>(
        data_dir: &Path,
        node_id: NodeId,
        addr: String,
        transport: T,
    ) -> Result<RaftNode, RaftError> {
        Self::open_with(data_dir, node_id, addr, transport, Tuning::default()).await
    }

    /// [`RaftNode::open`] with explicit tuning.
    pub async fn open_with<T: PeerTransport>(
        data_dir: &Path,
        node_id: NodeId,
        addr: String,
        transport: T,
        tuning: Tuning,
    ) -> Result<RaftNode, RaftError> {
        std::fs::create_dir_all(data_dir).map_err(|source| RaftError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let config = Arc::new(tuning.config().validate()?);
        let sm = StateMachineStore::open(data_dir).map_err(|source| RaftError::Store {
            path: data_dir.join(super::SM_FILE),
            source,
        })?;
        let log_store = LogStore::open(data_dir)
            .map_err(|source| RaftError::Store {
                path: data_dir.join(super::LOG_FILE),
                source,
            })?
            .with_write_format(sm.write_format());
        let applied = sm.shared();
        let snapshots_installed = sm.installed_counter();
        let snapshot_bytes = sm.snapshot_bytes();
        let dbs = [log_store.db_weak(), sm.db_weak()];

        // `Raft::new` re-applies committed-but-unapplied entries before it returns.
        let raft = Raft::new(
            node_id,
            config,
            NetworkFactory::new(transport),
            log_store,
            sm,
        )
        .await?;
        tracing::info!(node_id, %addr, "raft node open");

        let inner = Arc::new(Inner {
            id: node_id,
            addr,
            raft,
            applied,
            snapshots_installed,
            snapshot_bytes,
            dbs,
        });
        let cadence = super::cadence::Cadence::new(
            tuning.snapshot_logs_since_last,
            tuning.snapshot_logs_per_record,
        );
        tokio::spawn(super::cadence::run(
            Arc::downgrade(&inner),
            inner.raft.metrics(),
            cadence,
        ));
        Ok(RaftNode { inner })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's peer address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The underlying openraft handle (for peer RPC handlers and membership changes).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Make this node a one-member cluster. Idempotent: a node that is already
    /// initialized (e.g. after a restart) is left untouched.
    pub async fn initialize_single(&self) -> Result<(), RaftError> {
        let raft = &self.inner.raft;
        if raft.is_initialized().await? {
            tracing::debug!("raft already initialized; not initializing again");
            return Ok(());
        }
        let members = BTreeMap::from([(self.inner.id, Node::new(self.inner.addr.clone()))]);
        match raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(node_id = self.inner.id, "initialized single-member cluster");
                Ok(())
            }
            // Lost a race with another initialization: already initialized is the goal.
            Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(e))) => {
                tracing::debug!(%e, "raft already initialized");
                Ok(())
            }
            Err(openraft::error::RaftError::APIError(e)) => Err(RaftError::Initialize(e)),
            Err(openraft::error::RaftError::Fatal(f)) => Err(f.into()),
        }
    }

    /// Commit `req` through Raft and return what `State::apply` answered.
    pub async fn write(&self, req: Request) -> Result<Response, WriteError> {
        let resp = self.inner.raft.client_write(req).await?;
        Ok(resp.data)
    }

    /// A linearizable read: confirm leadership with a quorum, wait until the
    /// state machine has applied everything committed before, then run `f`.
    /// `f` runs under the state's read lock: keep it short (apply waits).
    pub async fn read<F, T>(&self, f: F) -> Result<T, ReadError>
    where
        F: FnOnce(&State) -> T,
    {
        self.inner.raft.ensure_linearizable().await?;
        let applied = self
            .inner
            .applied
            .read()
            .map_err(|_: PoisonError<_>| Fatal::Panicked)?;
        Ok(f(&applied.state))
    }

    /// Run `f` on this node's current state without any Raft round trip. May be
    /// stale (a follower lags, a deposed leader does not know yet).
    pub fn read_local<F, T>(&self, f: F) -> T
    where
        F: FnOnce(&State) -> T,
    {
        // A poisoned lock means `State::apply` panicked; openraft's state machine
        // task is then dead and every linearizable call reports `Fatal`. A local,
        // explicitly stale read may still see the last state.
        let applied = self
            .inner
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f(&applied.state)
    }

    /// A copy of this node's current state (non-linearizable, see [`RaftNode::read_local`]).
    pub fn state_snapshot(&self) -> State {
        self.read_local(State::clone)
    }

    /// The latest metrics openraft published.
    pub fn metrics(&self) -> Metrics {
        self.inner.raft.metrics().borrow().clone()
    }

    /// This node's log, state machine and snapshot positions.
    pub fn progress(&self) -> Progress {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        Progress {
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.index(),
            snapshot_index: m.snapshot.index(),
            purged_index: m.purged.index(),
            snapshots_installed: self.inner.snapshots_installed.load(Ordering::Relaxed),
            snapshot_bytes: self.inner.snapshot_bytes.load(Ordering::Relaxed),
        }
    }

    /// A watch on openraft's metrics.
    pub fn metrics_watch(&self) -> watch::Receiver<Metrics> {
        self.inner.raft.metrics()
    }

    /// Whether this node currently believes it is the leader (local, cheap; a
    /// write or [`RaftNode::read`] is what confirms it).
    pub fn is_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.id)
    }

    /// (id, address) of every member (voters and learners) in this node's
    /// view of the membership.
    pub fn members(&self) -> Vec<(NodeId, String)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// The id of the leader this node knows of (cheap: no copy of the metrics).
    pub fn leader_id(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// The voters in this node's view of the membership.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().voter_ids().collect()
    }

    /// The leader this node knows of, with its address from the membership.
    pub fn leader(&self) -> Option<Leader> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?;
        Some(Leader {
            id,
            addr: node.addr.clone(),
        })
    }

    /// Wait until some leader is known, at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<Leader> {
        let res = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await;
        match res {
            Ok(_) => self.leader(),
            Err(_) => None,
        }
    }

    /// Stop the Raft member and wait (at most [`SHUTDOWN_GRACE`]) until its
    /// stores are closed, so the same data dir can be opened again.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| RaftError::Join(e.to_string()))?;
        // The state machine task and any snapshot task end shortly after the core.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.inner.dbs.iter().any(|db| db.strong_count() > 0) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("raft stores still open {SHUTDOWN_GRACE:?} after shutdown");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(node_id = self.inner.id, "raft node stopped");
        Ok(())
    }
}
