//! The Raft log on redb (`raft-log.redb`).
//!
//! Tables:
//! - `entries`: log index → [`Entry`].
//! - `meta`: `"vote"` → Vote, `"committed"` → Option<LogId>,
//!   `"last_purged"` → LogId.
//!
//! Each value is in one of the [`format`](super::format)s (read whichever it
//! is; written in the one [`WriteFormat`] says).
//!
//! Invariants:
//! - Entries are consecutive: `append` only extends, `truncate` cuts a suffix,
//!   `purge` cuts a prefix and records the last purged id first.
//! - Every write is one redb write transaction. Vote, entries and purge are
//!   committed with `Durability::Immediate` before the call returns (and before
//!   the append callback fires). The committed pointer is a hint used to re-apply
//!   on startup, so it is committed without an fsync of its own: it becomes
//!   durable with the next vote/append/purge.
//! - openraft awaits every write call in order, so writes are serialized.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogId, RaftLogReader,
    StorageIOError, Vote,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::de::DeserializeOwned;

use super::format::{decode, WriteFormat};
use super::{Entry, LogId, NodeId, StorageError, TypeConfig};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// The Raft log store. Cheap to clone: clones share one redb database, which is
/// also how the log reader handed to replication tasks is made.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The format new records are written in (see [`WriteFormat`]).
    format: WriteFormat,
}

impl LogStore {
    /// Open (or create) `raft-log.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, DbError> {
        let db = Database::create(dir.join(super::LOG_FILE))?;
        // Create the tables up front so that read transactions can always open them.
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            format: WriteFormat::default(),
        })
    }

    /// Write records in the format `format` says (shared with the state
    /// machine store, which follows the cluster version).
    pub fn with_write_format(mut self, format: WriteFormat) -> Self {
        self.format = format;
        self
    }

    /// A weak reference to the database, to observe when every user has let go of it.
    pub(crate) fn db_weak(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
    }

    /// Number of entries physically present (for tests and metrics).
    pub fn entry_count(&self) -> Result<u64, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        Ok(table.len()?)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let Some(bytes) = table.get(key)? else {
            return Ok(None);
        };
        Ok(Some(decode(bytes.value())?))
    }

    /// Run `f` in one write transaction on a blocking thread, then commit with
    /// the given durability.
    async fn write<T, F>(&self, durability: Durability, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| DbError::Join(e.to_string()))?
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let Some((_, v)) = table.last()? else {
            return Ok(None);
        };
        let entry: Entry = decode(v.value())?;
        Ok(Some(*entry.get_log_id()))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let read = || -> Result<Vec<Entry>, DbError> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let mut out = Vec::new();
            for item in table.range::<u64>(range.clone())? {
                let (_, v) = item?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        };
        read().map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let st = || -> Result<LogState<TypeConfig>, DbError> {
            let last_purged_log_id: Option<LogId> = self.read_meta(KEY_LAST_PURGED)?;
            let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        };
        st().map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = self
            .format
            .encode(vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.write(Durability::Immediate, move |txn| {
            txn.open_table(META)?.insert(KEY_VOTE, bytes.as_slice())?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = self
            .format
            .encode(&committed)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        // Not fsynced on its own (see the module invariants): losing it in a crash
        // only means re-applying less at startup; the leader re-commits the rest.
        self.write(Durability::None, move |txn| {
            txn.open_table(META)?
                .insert(KEY_COMMITTED, bytes.as_slice())?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> = self
            .read_meta(KEY_COMMITTED)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let format = self.format.get();
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.get_log_id().index, super::format::encode_as(format, &e)?)))
            .collect::<Result<Vec<(u64, Vec<u8>)>, DbError>>()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let res = self
            .write(Durability::Immediate, move |txn| {
                let mut table = txn.open_table(ENTRIES)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncate log since");
        let since = log_id.index;
        self.write(Durability::Immediate, move |txn| {
            txn.open_table(ENTRIES)?.retain_in(since.., |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purge log upto");
        let bytes = self
            .format
            .encode(&log_id)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let upto = log_id.index;
        // Recording the purge point and deleting the prefix in one transaction
        // keeps `get_log_state` consistent at every instant.
        self.write(Durability::Immediate, move |txn| {
            txn.open_table(META)?
                .insert(KEY_LAST_PURGED, bytes.as_slice())?;
            txn.open_table(ENTRIES)?.retain_in(..=upto, |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }
}

/// Errors of the redb-backed stores, before they are mapped to openraft's
/// [`StorageError`](openraft::StorageError).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("decoding stored record: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("encoding record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("{0}")]
    Format(String),
    #[error("blocking storage task failed: {0}")]
    Join(String),
    #[error("state lock poisoned by a panic while applying")]
    Poisoned,
}

macro_rules! db_error_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(e.into())
            }
        }
    )*};
}
db_error_from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub(crate) fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: DbError) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}
