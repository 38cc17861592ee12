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
//!
//! A single node is a one-member cluster: the same code path, not a special mode.

mod error;
pub mod log_store;
pub mod network;
pub mod node;
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
pub use node::{RaftNode, Tuning, SHUTDOWN_GRACE};
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

/// Build a snapshot once this many entries were applied since the last one.
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 1000;
/// Applied entries kept in the log after a snapshot, so a briefly lagging
/// follower can catch up by log instead of by snapshot. The log therefore holds
/// at most about `SNAPSHOT_LOGS_SINCE_LAST + LOGS_TO_KEEP_AFTER_SNAPSHOT` entries.
pub const LOGS_TO_KEEP_AFTER_SNAPSHOT: u64 = 200;
/// Leader heartbeat period.
pub const HEARTBEAT_INTERVAL_MS: u64 = 150;
/// Election timeout range: a follower that hears no leader for this long
/// stands for election.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 600;
/// Upper bound of the randomized election timeout.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 1200;

/// The bincode of a state, as `cairn server snapshot save` writes it.
pub fn encode_state(state: &crate::state::State) -> Result<Vec<u8>, DbError> {
    log_store::encode(state)
}

/// The state in a file written by `cairn server snapshot save`.
pub fn decode_state(bytes: &[u8]) -> Result<crate::state::State, DbError> {
    log_store::decode(bytes)
}
