//! Raft over redb: the replicated log, the state machine store, the peer
//! network seam, and the [`RaftNode`] handle the rest of the node uses.
//!
//! Code map (each unit is swappable and tested on its own):
//! - [`log_store`]: `raft-log.redb` — entries, vote, committed, last purged.
//!   Invariant: every write is committed to redb before openraft is told it is
//!   done (the append callback fires after the commit), and the log has no holes.
//! - [`state_machine`]: the in-memory [`State`] plus last applied log id and
//!   membership; the current snapshot lives in `raft-sm.redb`. Invariant: after
//!   open, memory equals the persisted snapshot; openraft re-applies the committed
//!   log suffix (see [`LogStore::read_committed`](openraft::storage::RaftLogStorage::read_committed)).
//! - [`network`]: [`Network`] adapts openraft's `RaftNetwork` onto a small
//!   [`PeerTransport`] trait; [`NoPeers`] is the transport of a lone node.
//! - [`node`]: [`RaftNode`], the cloneable handle (openraft's core task owns the
//!   stores; the handle shares only a read lock on the state).
//! - [`cadence`]: when each node builds a snapshot (the interval grows with
//!   the state's size); openraft's own policy is `Never`.
//! - [`snapshot_file`]: the versioned file of `cairn server snapshot save`
//!   and `cairn-node --restore` (magic, format version, state).
//! - [`format`]: how every value above is kept on disk (self-describing,
//!   versioned; release 0.1.0's bincode still read).
//!
//! A single node is a one-member cluster: the same code path, not a special mode.

pub mod cadence;
mod error;
pub mod format;
pub mod log_store;
pub mod network;
pub mod node;
pub mod snapshot_file;
pub mod state_machine;

#[cfg(test)]
mod tests;

use std::io::Cursor;

pub use error::{Leader, RaftError, ReadError, WriteError};
pub use log_store::{DbError, LogStore};
pub use network::{
    InstallSnapshotRpcError, Network, NetworkFactory, NoPeers, NoTransport, Peer, PeerTransport,
    RpcError, SnapshotStreamError,
};
pub use node::{Progress, RaftNode, Tuning, SHUTDOWN_GRACE};
pub use snapshot_file::{
    decode_snapshot_file, encode_snapshot_file, SnapshotFileError, OLDEST_SNAPSHOT_FILE_VERSION,
    SNAPSHOT_FILE_MAGIC, SNAPSHOT_FILE_VERSION,
};
pub use state_machine::{SnapshotBuilder, SnapshotData, StateMachineStore};

use crate::state::{Request, Response};

openraft::declare_raft_types!(
    /// Cairn's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft member's id.
pub type NodeId = u64;
/// A Raft member's address record (`addr` is its peer QUIC address).
pub type Node = openraft::BasicNode;
/// One log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// The openraft instance this module drives.
pub type Raft = openraft::Raft<TypeConfig>;
/// Metrics as published by openraft.
pub type Metrics = openraft::RaftMetrics<NodeId, Node>;
/// openraft's storage error, specialised.
pub type StorageError = openraft::StorageError<NodeId>;

/// File name of the Raft log database inside the node's data dir.
pub const LOG_FILE: &str = "raft-log.redb";
/// File name of the state machine snapshot database inside the node's data dir.
pub const SM_FILE: &str = "raft-sm.redb";

/// Build a snapshot once at least this many entries were applied since the
/// last one (the whole interval while the state is small; see [`cadence`]).
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 1000;
/// … and at least this many entries per record of the state: a large state
/// is snapshotted less often (see [`cadence`]).
pub const SNAPSHOT_LOGS_PER_RECORD: u64 = 1;
/// Applied entries kept in the log after a snapshot, so a briefly lagging
/// follower can catch up by log instead of by snapshot. The log therefore holds
/// at most about `max(SNAPSHOT_LOGS_SINCE_LAST, records in the state at the
/// last snapshot) + LOGS_TO_KEEP_AFTER_SNAPSHOT` entries.
pub const LOGS_TO_KEEP_AFTER_SNAPSHOT: u64 = 200;
/// Leader heartbeat period.
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Election timeout range. openraft 0.9 draws each node's timeout once, in
/// this range, and a follower that had a leader stands for election only
/// after `ELECTION_TIMEOUT_MAX_MS` (the leader lease) + its timeout without
/// hearing from it: 900–1,200 ms here, about etcd's default of 1,000 ms
/// (heartbeat 100). A candidate that saw a longer log waits 2 × the max more.
/// (It was 600–1,200 with heartbeat 150: 1.8–2.4 s, measured failover p50
/// 2.2 s against etcd's 1.1 s.)
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
/// Upper bound of the randomized election timeout (also the leader lease).
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
