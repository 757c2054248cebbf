//! The Raft log and vote on sled (openraft's v2 `RaftLogStorage`).
//!
//! Layout, in the node's own `sled::Db` (shared with the MVCC store, so one `flush` makes
//! both durable):
//! - tree [`LOG_TREE`]: log index as 8 big-endian bytes -> postcard-encoded `Entry`; big-endian
//!   keys sort numerically, so ranges and `last()` are plain sled iterations;
//! - tree [`STATE_TREE`]: `vote`, `committed`, `last_purged` (postcard-encoded).
//!
//! Durability: `append` writes the whole batch, flushes once, and only then tells openraft
//! the entries are on disk; a vote is flushed before `save_vote` returns. The committed log
//! id is written without a flush: losing it only means re-applying a few entries, which the
//! state machine tolerates.
//!
//! sled's `flush` writes its segments with `sync_file_range` (seen with strace), which
//! survives a crash of the process but does not force the drive's volatile cache. So when the
//! store knows sled's data file ([`LogStore::with_data_file`], as every node does), each
//! flush is followed by an `fdatasync` of that file through a descriptor of our own (fsync
//! acts on the file, whichever descriptor asks): an append is acknowledged only once on
//! stable storage, as etcd's WAL `fdatasync` makes it. Concurrent client writes share one
//! entry (the proposer's group commit), so one sync covers many writes.

// The error types are openraft's, fixed by the traits implemented here.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, StorageError, StorageIOError, Vote,
};
use tracing::instrument;

use crate::raft::codec;
use crate::raft::types::{NodeId, TypeConfig};

/// The sled tree holding log entries.
pub const LOG_TREE: &str = "raft_log";
/// The sled tree holding the vote, the committed log id and the last purged log id.
pub const STATE_TREE: &str = "raft_state";

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

type StoreResult<T> = Result<T, StorageError<NodeId>>;

/// The Raft log store. Cloning is cheap (sled trees are shared handles); a clone is also the
/// log reader openraft uses from its replication tasks.
#[derive(Clone)]
pub struct LogStore {
    /// The whole database, flushed to make appends and votes durable.
    db: sled::Db,
    /// Entries by big-endian index.
    log: sled::Tree,
    /// Vote, committed and last purged log ids.
    state: sled::Tree,
    /// sled's data file, fdatasync'ed after every flush (see the module doc).
    data_file: Option<std::sync::Arc<std::fs::File>>,
}

impl LogStore {
    /// Opens (or creates) the log trees inside `db`.
    pub fn open(db: &sled::Db) -> Result<LogStore, sled::Error> {
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree(LOG_TREE)?,
            state: db.open_tree(STATE_TREE)?,
            data_file: None,
        })
    }

    /// Makes every flush end with an `fdatasync` of sled's data file at `path`
    /// (`<sled dir>/db`).
    pub fn with_data_file(mut self, path: &std::path::Path) -> io::Result<LogStore> {
        self.data_file = Some(std::sync::Arc::new(std::fs::File::open(path)?));
        Ok(self)
    }

    /// sled's flush, then the fdatasync that makes it reach stable storage.
    async fn durable(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await?;
        if let Some(file) = &self.data_file {
            let file = file.clone();
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(io::Error::other)??;
        }
        Ok(())
    }

    fn read_state<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static [u8],
        subject: ErrorSubject<NodeId>,
    ) -> StoreResult<Option<T>> {
        let raw = self
            .state
            .get(key)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, &e))?;
        raw.map(|v| codec::decode("raft state", &v))
            .transpose()
            .map_err(|e| io_err(subject, ErrorVerb::Read, &e))
    }

    fn write_state<T: serde::Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> StoreResult<()> {
        let bytes = codec::encode("raft state", value)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, &e))?;
        self.state
            .insert(key, bytes)
            .map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> StoreResult<()> {
        self.durable()
            .await
            .map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    /// Removes every entry whose key falls in `range`, in one batch.
    fn remove_range(&self, range: (Bound<[u8; 8]>, Bound<[u8; 8]>)) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(range) {
            let (key, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}

/// Converts a storage failure into openraft's error; openraft treats it as fatal.
fn io_err<E: std::error::Error + 'static>(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: &E,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

fn key_bound(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn decode_entry(raw: &[u8]) -> StoreResult<Entry<TypeConfig>> {
    codec::decode("log entry", raw).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let bounds = (key_bound(range.start_bound()), key_bound(range.end_bound()));
        let mut out = Vec::new();
        for item in self.log.range(bounds) {
            let (_, raw) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            out.push(decode_entry(&raw)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.read_state(LAST_PURGED_KEY, ErrorSubject::Logs)?;
        let last = self
            .log
            .last()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        let last_log_id = match last {
            Some((_, raw)) => Some(decode_entry(&raw)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    #[instrument(level = "debug", skip_all, fields(vote = %vote))]
    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.write_state(VOTE_KEY, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.read_state(VOTE_KEY, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        self.write_state(COMMITTED_KEY, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_state::<Option<LogId<NodeId>>>(COMMITTED_KEY, ErrorSubject::Store)?
            .flatten())
    }

    /// One sled batch and one flush for the whole call, then the callback: entries are
    /// acknowledged only once durable.
    #[instrument(level = "debug", skip_all)]
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        let mut count = 0usize;
        for entry in entries {
            let bytes = codec::encode("log entry", &entry)
                .map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e))?;
            batch.insert(&entry.log_id.index.to_be_bytes(), bytes);
            count += 1;
        }
        tracing::trace!(count, "append");
        let written = match self.log.apply_batch(batch) {
            Ok(()) => self.durable().await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))
            }
        }
    }

    /// Deletes `log_id.index..`; flushed, so that entries a new leader overwrote never come
    /// back after a crash.
    #[instrument(level = "debug", skip_all, fields(since = %log_id))]
    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.remove_range((
            Bound::Included(log_id.index.to_be_bytes()),
            Bound::Unbounded,
        ))?;
        self.flush(ErrorSubject::Logs).await
    }

    /// Records `last_purged` first, then deletes `..=log_id.index`: a crash in between
    /// leaves extra entries, never a log state that claims entries it lost.
    #[instrument(level = "debug", skip_all, fields(upto = %log_id))]
    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.write_state(LAST_PURGED_KEY, &log_id, ErrorSubject::Logs)?;
        self.remove_range((
            Bound::Unbounded,
            Bound::Included(log_id.index.to_be_bytes()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{EntryPayload, SnapshotMeta, StoredMembership};

    use super::*;
    use crate::raft::types::{CommandResponse, MemberNode};

    /// A state machine kept in memory: just enough for the suite's state machine half, so
    /// that the suite checks the log store on its own.
    #[derive(Default, Clone)]
    struct MemStateMachine {
        applied: Option<LogId<NodeId>>,
        membership: StoredMembership<NodeId, MemberNode>,
        current: Option<(SnapshotMeta<NodeId, MemberNode>, Vec<u8>)>,
    }

    impl RaftSnapshotBuilder<TypeConfig> for MemStateMachine {
        async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
            let meta = SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id: format!("{:?}", self.applied),
            };
            let data = codec::encode("test", &(self.applied, self.membership.clone())).unwrap();
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        }
    }

    impl RaftStateMachine<TypeConfig> for MemStateMachine {
        type SnapshotBuilder = Self;
        async fn applied_state(
            &mut self,
        ) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, MemberNode>)> {
            Ok((self.applied, self.membership.clone()))
        }
        async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<CommandResponse>>
        where
            I: IntoIterator<Item = Entry<TypeConfig>> + Send,
            I::IntoIter: Send,
        {
            let mut out = Vec::new();
            for e in entries {
                self.applied = Some(e.log_id);
                if let EntryPayload::Membership(m) = e.payload {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                }
                out.push(CommandResponse::default());
            }
            Ok(out)
        }
        async fn get_snapshot_builder(&mut self) -> Self {
            self.clone()
        }
        async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
            Ok(Box::new(Cursor::new(Vec::new())))
        }
        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMeta<NodeId, MemberNode>,
            snapshot: Box<Cursor<Vec<u8>>>,
        ) -> StoreResult<()> {
            self.applied = meta.last_log_id;
            self.membership = meta.last_membership.clone();
            self.current = Some((meta.clone(), snapshot.into_inner()));
            Ok(())
        }
        async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
            if self.current.is_none() && self.applied.is_some() {
                let s = self.build_snapshot().await?;
                self.current = Some((s.meta, s.snapshot.into_inner()));
            }
            Ok(self.current.clone().map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }))
        }
    }

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, MemStateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> StoreResult<(tempfile::TempDir, LogStore, MemStateMachine)> {
            let dir = tempfile::tempdir().unwrap();
            let db = sled::open(dir.path()).unwrap();
            Ok((
                dir,
                LogStore::open(&db).unwrap(),
                MemStateMachine::default(),
            ))
        }
    }

    #[test]
    fn conformance_suite_log_store() {
        Suite::test_all(Builder).unwrap();
    }

    #[tokio::test]
    async fn log_and_vote_survive_reopen() {
        use openraft::testing::log_id;
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let mut store = LogStore::open(&db).unwrap();
            store.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
            let entries: Vec<Entry<TypeConfig>> = (1..=10)
                .map(|i| Entry {
                    log_id: log_id(3, 2, i),
                    payload: EntryPayload::Blank,
                })
                .collect();
            openraft::storage::RaftLogStorageExt::blocking_append(&mut store, entries)
                .await
                .unwrap();
            store.purge(log_id(3, 2, 4)).await.unwrap();
            store.truncate(log_id(3, 2, 9)).await.unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let mut store = LogStore::open(&db).unwrap();
        assert_eq!(
            store.read_vote().await.unwrap(),
            Some(Vote::new_committed(3, 2))
        );
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(3, 2, 4)));
        assert_eq!(state.last_log_id, Some(log_id(3, 2, 8)));
        let got = store.try_get_log_entries(0..100).await.unwrap();
        let indexes: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![5, 6, 7, 8]);
        let got = store.try_get_log_entries(6..=7).await.unwrap();
        assert_eq!(got.len(), 2);
    }
}
