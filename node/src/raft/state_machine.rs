//! The state machine store: [`State`] in memory, the current snapshot in redb
//! (`raft-sm.redb`).
//!
//! Invariants:
//! - `apply` is the only writer of the in-memory state (besides installing a
//!   snapshot); it runs on openraft's state machine task, in log order.
//! - A snapshot is committed to redb (`Durability::Immediate`) before openraft
//!   learns about it, so log purging can never outrun the persisted snapshot.
//! - On open, memory is exactly the persisted snapshot (or empty). The committed
//!   log suffix after it is re-applied by openraft at startup, because the log
//!   store persists the committed log id (`save_committed`/`read_committed`).
//! - The snapshot data is [`SnapshotData`] (the state together with its last
//!   applied log id and membership) in the current [`format`](super::format);
//!   data in format 0 (written by release 0.1.0, or sent by a 0.1.0 leader)
//!   is read through [`LegacySnapshotData`]. A follower that speaks only
//!   0.1.0's protocol is sent format 0 ([`legacy_snapshot_data`]).

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StoredMembership,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::format::{decode, decode_or_legacy, encode_as, encode_legacy, WriteFormat};
use super::log_store::{io_err, DbError};
use super::{Entry, LogId, Node, NodeId, StorageError, TypeConfig};
use crate::state::{v0, Response, State};

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const KEY_CURRENT: &str = "current";

/// What the state machine has applied so far. Shared (read-only) with the
/// [`RaftNode`](super::RaftNode) handle for local reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Applied {
    pub(crate) state: State,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership<NodeId, Node>,
}

/// The payload of a snapshot.
#[derive(Serialize, Deserialize)]
pub struct SnapshotData {
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, Node>,
}

/// Borrowing twin of [`SnapshotData`]: same fields, same order, so the same
/// encoding, without cloning the state to encode it.
#[derive(Serialize)]
struct SnapshotDataRef<'a> {
    state: &'a State,
    last_applied: &'a Option<LogId>,
    membership: &'a StoredMembership<NodeId, Node>,
}

/// The persisted current snapshot: its meta and its encoded [`SnapshotData`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    data: Vec<u8>,
}

/// The Raft state machine. openraft's state machine task owns it; the handle
/// keeps a clone of the shared [`Applied`] lock.
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    db: Arc<Database>,
    /// Makes snapshot ids unique within this process.
    snapshot_seq: Arc<AtomicU64>,
    /// Snapshots installed from a leader since open (see [`RaftNode::progress`](super::RaftNode::progress)).
    installed: Arc<AtomicU64>,
    /// The size of the current snapshot's data, in bytes (0 without one).
    snapshot_bytes: Arc<AtomicU64>,
    /// The format records are written in: follows the state's cluster
    /// version (shared with the log store, see [`WriteFormat`]).
    format: WriteFormat,
}

impl StateMachineStore {
    /// Open (or create) `raft-sm.redb` in `dir` and load the current snapshot, if any.
    pub fn open(dir: &Path) -> Result<Self, DbError> {
        let db = Database::create(dir.join(super::SM_FILE))?;
        let txn = db.begin_write()?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        let db = Arc::new(db);

        let snapshot_bytes = Arc::new(AtomicU64::new(0));
        let applied = match read_current(&db)? {
            None => Applied::default(),
            Some(stored) => {
                snapshot_bytes.store(stored.data.len() as u64, Ordering::Relaxed);
                let data = decode_snapshot_data(&stored.data)?;
                tracing::info!(
                    last_applied = ?stored.meta.last_log_id,
                    snapshot_id = %stored.meta.snapshot_id,
                    "loaded state machine from snapshot"
                );
                Applied {
                    state: data.state,
                    last_applied: stored.meta.last_log_id,
                    membership: stored.meta.last_membership,
                }
            }
        };

        let format = WriteFormat::default();
        format.follow(applied.state.cluster_version());
        Ok(Self {
            applied: Arc::new(RwLock::new(applied)),
            db,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            installed: Arc::new(AtomicU64::new(0)),
            snapshot_bytes,
            format,
        })
    }

    /// The format records are written in, to share with the log store.
    pub fn write_format(&self) -> WriteFormat {
        self.format.clone()
    }

    /// The lock on the applied state, shared with the node handle.
    pub(crate) fn shared(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }

    /// The current snapshot's size in bytes, shared with the node handle.
    pub(crate) fn snapshot_bytes(&self) -> Arc<AtomicU64> {
        self.snapshot_bytes.clone()
    }

    /// The count of snapshots installed from a leader, shared with the node handle.
    pub(crate) fn installed_counter(&self) -> Arc<AtomicU64> {
        self.installed.clone()
    }

    pub(crate) fn db_weak(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
    }
}

/// Snapshot data in either format.
pub fn decode_snapshot_data(bytes: &[u8]) -> Result<SnapshotData, DbError> {
    decode_or_legacy::<SnapshotData, LegacySnapshotData>(bytes)
}

/// Snapshot data as release 0.1.0 reads it (format 0), for a follower that
/// speaks only its protocol. Data already in format 0 is returned as is.
pub fn legacy_snapshot_data(bytes: Vec<u8>) -> Result<Vec<u8>, DbError> {
    if super::format::format_of(&bytes)? == 0 {
        return Ok(bytes);
    }
    let data = decode_snapshot_data(&bytes)?;
    encode_legacy(&LegacySnapshotData {
        state: v0::State::from(&data.state),
        last_applied: data.last_applied,
        membership: data.membership,
    })
}

/// The state lock is poisoned only if `State::apply` panicked.
fn poisoned(verb: ErrorVerb) -> StorageError {
    io_err(ErrorSubject::StateMachine, verb, DbError::Poisoned)
}

fn read_current(db: &Database) -> Result<Option<StoredSnapshot>, DbError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SNAPSHOT)?;
    let Some(bytes) = table.get(KEY_CURRENT)? else {
        return Ok(None);
    };
    Ok(Some(decode(bytes.value())?))
}

/// Persist `stored` as the current snapshot. With `only_if_newer`, an older
/// snapshot never replaces a newer one (a build racing an install).
async fn persist(
    db: Arc<Database>,
    stored: StoredSnapshot,
    only_if_newer: bool,
    format: u8,
) -> Result<(), DbError> {
    tokio::task::spawn_blocking(move || {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(SNAPSHOT)?;
            if only_if_newer {
                let existing = table
                    .get(KEY_CURRENT)?
                    .map(|b| decode::<StoredSnapshot>(b.value()));
                if let Some(existing) = existing {
                    if existing?.meta.last_log_id > stored.meta.last_log_id {
                        tracing::info!("a newer snapshot is already persisted; keep it");
                        return Ok(());
                    }
                }
            }
            table.insert(KEY_CURRENT, encode_as(format, &stored)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    })
    .await
    .map_err(|e| DbError::Join(e.to_string()))?
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, Node>), StorageError> {
        let applied = self.applied.read().map_err(|_| poisoned(ErrorVerb::Read))?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self
            .applied
            .write()
            .map_err(|_| poisoned(ErrorVerb::Write))?;
        let mut out = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(req) => applied.state.apply(&req),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::default()
                }
            };
            out.push(resp);
        }
        self.format.follow(applied.state.cluster_version());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Cloned here, on the state machine task, so the snapshot is a consistent
        // cut even though it is encoded and written on another task.
        let applied = self
            .applied
            .read()
            .map(|a| Arc::new(a.clone()))
            .map_err(|_: PoisonError<_>| ());
        SnapshotBuilder {
            applied,
            db: self.db.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
            seq: self.snapshot_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let bytes = snapshot.into_inner();
        let data = decode_snapshot_data(&bytes)
            .map_err(|e| io_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Read, e))?;
        tracing::info!(last_applied = ?meta.last_log_id, snapshot_id = %meta.snapshot_id, "installing snapshot");

        let size = bytes.len() as u64;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        persist(
            self.db.clone(),
            stored,
            false,
            super::format::for_cluster_version(data.state.cluster_version()),
        )
        .await
        .map_err(|e| io_err(ErrorSubject::Snapshot(sig), ErrorVerb::Write, e))?;

        let mut applied = self
            .applied
            .write()
            .map_err(|_| poisoned(ErrorVerb::Write))?;
        self.format.follow(data.state.cluster_version());
        *applied = Applied {
            state: data.state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.installed.fetch_add(1, Ordering::Relaxed);
        self.snapshot_bytes.store(size, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = read_current(&self.db)
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// Builds a snapshot from a consistent copy of the applied state.
pub struct SnapshotBuilder {
    /// `Err` if the state lock was poisoned when the builder was made.
    applied: Result<Arc<Applied>, ()>,
    db: Arc<Database>,
    snapshot_bytes: Arc<AtomicU64>,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let applied = self
            .applied
            .as_ref()
            .map_err(|()| poisoned(ErrorVerb::Read))?;
        let snapshot_id = match &applied.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        let sig = Some(meta.signature());
        let format = super::format::for_cluster_version(applied.state.cluster_version());
        let bytes = if format == 0 {
            encode_legacy(&LegacySnapshotData {
                state: v0::State::from(&applied.state),
                last_applied: applied.last_applied,
                membership: applied.membership.clone(),
            })
        } else {
            encode_as(
                format,
                &SnapshotDataRef {
                    state: &applied.state,
                    last_applied: &applied.last_applied,
                    membership: &applied.membership,
                },
            )
        }
        .map_err(|e| io_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write, e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        persist(self.db.clone(), stored, true, format)
            .await
            .map_err(|e| io_err(ErrorSubject::Snapshot(sig), ErrorVerb::Write, e))?;
        self.snapshot_bytes
            .store(bytes.len() as u64, Ordering::Relaxed);
        tracing::info!(last_applied = ?meta.last_log_id, snapshot_id = %meta.snapshot_id, bytes = bytes.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

/// The snapshot data of release 0.1.0 ([`SnapshotData`] with the state as 0.1.0 encoded
/// it, [`v0::State`]).
#[derive(Serialize, Deserialize)]
pub struct LegacySnapshotData {
    pub state: v0::State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, Node>,
}

impl From<LegacySnapshotData> for SnapshotData {
    fn from(d: LegacySnapshotData) -> SnapshotData {
        SnapshotData {
            state: d.state.into(),
            last_applied: d.last_applied,
            membership: d.membership,
        }
    }
}
