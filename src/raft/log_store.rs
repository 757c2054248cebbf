//! The Raft log and vote on the WAL (openraft's v2 `RaftLogStorage`), see [`crate::raft::wal`].
//!
//! Entries are encoded with postcard once, on append, and written by the WAL's writer thread,
//! which syncs everything queued at once (group commit) and only then tells openraft the
//! entries are durable. The committed log id rides along with the next sync (losing it only
//! means re-applying a few entries, which the state machine tolerates); a vote and a
//! truncation are awaited until durable.
//!
//! Decoded entries are kept in a cache bounded by [`CACHE_BYTES`] (never evicting an entry
//! that is not yet durable), so that replication and apply read recent entries without
//! touching the files or decoding them again.

// The error types are openraft's, fixed by the traits implemented here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use tracing::instrument;

use crate::raft::codec;
use crate::raft::types::{Entry, LogId, TypeConfig, Vote};
use crate::raft::wal::fs::StdFs;
use crate::raft::wal::{Wal, WalError, WalOptions};

/// Encoded bytes of decoded entries kept in memory.
pub const CACHE_BYTES: usize = 8 << 20;

type StoreResult<T> = Result<T, io::Error>;

/// Recent entries, decoded.
#[derive(Default)]
struct EntryCache {
    entries: BTreeMap<u64, (Entry, usize)>,
    bytes: usize,
    /// Entries up to here are durable in the WAL and may be evicted.
    durable: u64,
}

impl EntryCache {
    fn insert(&mut self, entry: Entry, size: usize) {
        let index = entry.log_id.index;
        self.cut_from(index);
        self.entries.insert(index, (entry, size));
        self.bytes += size;
    }

    fn evict(&mut self) {
        while self.bytes > CACHE_BYTES {
            match self.entries.first_key_value() {
                Some((&i, _)) if i <= self.durable => {
                    if let Some((_, size)) = self.entries.remove(&i) {
                        self.bytes -= size;
                    }
                }
                _ => break,
            }
        }
    }

    fn cut_from(&mut self, index: u64) {
        for (_, (_, size)) in self.entries.split_off(&index) {
            self.bytes -= size;
        }
        self.durable = self.durable.min(index.saturating_sub(1));
    }

    fn purge_to(&mut self, index: u64) {
        let keep = self.entries.split_off(&(index + 1));
        for (_, (_, size)) in std::mem::replace(&mut self.entries, keep) {
            self.bytes -= size;
        }
    }
}

/// The Raft log store. Cloning is cheap; a clone is also the log reader openraft uses from
/// its replication tasks.
#[derive(Clone)]
pub struct LogStore {
    /// The files.
    wal: Wal,
    /// Recent entries, decoded.
    cache: Arc<Mutex<EntryCache>>,
}

impl LogStore {
    /// Opens (or creates) the log in directory `dir`.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<LogStore, WalError> {
        let fs = StdFs::new(dir).map_err(|source| WalError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        Ok(LogStore::new(Wal::open(Arc::new(fs), opts)?))
    }

    /// The log store over an open WAL.
    pub fn new(wal: Wal) -> LogStore {
        let durable = wal.state().entries.map_or(0, |(_, last)| last);
        LogStore {
            wal,
            cache: Arc::new(Mutex::new(EntryCache {
                durable,
                ..EntryCache::default()
            })),
        }
    }

    fn cache(&self) -> MutexGuard<'_, EntryCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, index: u64) -> StoreResult<Option<Entry>> {
        if let Some((e, _)) = self.cache().entries.get(&index) {
            return Ok(Some(e.clone()));
        }
        let Some(raw) = self.wal.read(index).map_err(|e| io_err("read logs", &e))? else {
            return Ok(None);
        };
        codec::decode("log entry", &raw)
            .map(Some)
            .map_err(|e| io_err("read logs", &e))
    }

    /// Waits for a WAL operation that reports through a callback.
    async fn wait(
        &self,
        subject: &str,
        op: impl FnOnce(&Wal, crate::raft::wal::Done) -> Result<(), WalError>,
    ) -> StoreResult<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        op(
            &self.wal,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .map_err(|e| io_err(subject, &e))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(subject, &e)),
            Err(e) => Err(io_err(subject, &e)),
        }
    }
}

/// Converts a storage failure into the error openraft takes (and treats as fatal).
fn io_err<E: std::fmt::Display>(what: &str, e: &E) -> io::Error {
    io::Error::other(format!("raft log: {what}: {e}"))
}

fn decode_state<T: serde::de::DeserializeOwned>(
    raw: Option<&[u8]>,
    subject: &str,
) -> StoreResult<Option<T>> {
    raw.map(|v| codec::decode("raft state", v))
        .transpose()
        .map_err(|e| io_err(subject, &e))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn read_vote(&mut self) -> StoreResult<Option<Vote>> {
        decode_state(self.wal.state().vote.as_deref(), "read vote")
    }

    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry>> {
        let Some((first, last)) = self.wal.state().entries else {
            return Ok(Vec::new());
        };
        let start = match range.start_bound() {
            Bound::Included(&i) => i.max(first),
            Bound::Excluded(&i) => i.saturating_add(1).max(first),
            Bound::Unbounded => first,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.min(last),
            Bound::Excluded(&i) => i.saturating_sub(1).min(last),
            Bound::Unbounded => last,
        };
        if matches!(range.end_bound(), Bound::Excluded(&0)) || start > end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(usize::try_from(end - start + 1).unwrap_or(0).min(4096));
        for i in start..=end {
            match self.entry(i)? {
                Some(e) => out.push(e),
                None => break,
            }
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let state = self.wal.state();
        let last_purged_log_id: Option<LogId> = decode_state(
            state.purged.as_ref().map(|(_, b)| b.as_slice()),
            "read purged",
        )?;
        let last_log_id = match state.entries {
            Some((_, last)) => match self.entry(last)? {
                Some(e) => Some(e.log_id),
                None => last_purged_log_id,
            },
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
    async fn save_vote(&mut self, vote: &Vote) -> StoreResult<()> {
        let bytes = codec::encode("raft state", vote).map_err(|e| io_err("write vote", &e))?;
        self.wait("save vote", |wal, done| wal.save_vote(&bytes, Some(done)))
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StoreResult<()> {
        let bytes =
            codec::encode("raft state", &committed).map_err(|e| io_err("write store", &e))?;
        self.wal
            .save_committed(&bytes)
            .map_err(|e| io_err("write store", &e))
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId>> {
        Ok(
            decode_state::<Option<LogId>>(self.wal.state().committed.as_deref(), "read committed")?
                .flatten(),
        )
    }

    /// Queues the entries on the WAL and returns; openraft hears through `callback` once
    /// they are durable.
    #[instrument(level = "debug", skip_all)]
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        let mut decoded = Vec::new();
        for entry in entries {
            let bytes =
                codec::encode("log entry", &entry).map_err(|e| io_err("encode log entry", &e))?;
            encoded.push((entry.log_id.index, bytes));
            decoded.push(entry);
        }
        let Some(&(last, _)) = encoded.last() else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        {
            let mut cache = self.cache();
            for (entry, (_, bytes)) in decoded.into_iter().zip(&encoded) {
                cache.insert(entry, bytes.len());
            }
        }
        let cache = self.cache.clone();
        let done: crate::raft::wal::Done = Box::new(move |r| match r {
            Ok(()) => {
                {
                    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
                    c.durable = c.durable.max(last);
                    c.evict();
                }
                callback.io_completed(Ok(()));
            }
            Err(e) => callback.io_completed(Err(io::Error::other(e.to_string()))),
        });
        self.wal
            .append(encoded.iter().map(|(i, b)| (*i, b.as_slice())), Some(done))
            .map_err(|e| io_err("write logs", &e))
    }

    /// Deletes every entry after `last_log_id`, durably, so that entries a new leader
    /// overwrote never come back after a crash.
    #[instrument(level = "debug", skip_all)]
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> StoreResult<()> {
        let since = last_log_id.map_or(0, |l| l.index + 1);
        self.cache().cut_from(since);
        self.wait("truncate", |wal, done| wal.truncate(since, Some(done)))
            .await
    }

    /// Deletes `..=log_id.index`; whole segments go once the purge record is durable.
    #[instrument(level = "debug", skip_all, fields(upto = %log_id))]
    async fn purge(&mut self, log_id: LogId) -> StoreResult<()> {
        let bytes = codec::encode("raft state", &log_id).map_err(|e| io_err("write logs", &e))?;
        self.cache().purge_to(log_id.index);
        self.wal
            .purge(log_id.index, &bytes)
            .map_err(|e| io_err("delete logs", &e))?;
        tracing::info!(index = log_id.index, "raft log purged");
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Cursor;

    use futures::TryStreamExt;
    use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::types::{CommandResponse, SnapshotMeta, StoredMembership};

    /// The in-memory state machine's snapshots: bytes in memory.
    type SnapshotData = Cursor<Vec<u8>>;
    type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

    /// A state machine kept in memory: just enough for the suite's state machine half, so
    /// that the suite checks the log store on its own.
    #[derive(Default, Clone)]
    struct MemStateMachine {
        applied: Option<LogId>,
        membership: StoredMembership,
        current: Option<(SnapshotMeta, Vec<u8>)>,
    }

    impl RaftSnapshotBuilder<TypeConfig> for MemStateMachine {
        type SnapshotData = SnapshotData;
        async fn build_snapshot(&mut self) -> StoreResult<Snapshot> {
            let meta = SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
            };
            let data = codec::encode("test", &(self.applied, self.membership.clone())).unwrap();
            Ok(Snapshot {
                meta,
                snapshot: Cursor::new(data),
            })
        }
    }

    impl RaftStateMachine<TypeConfig> for MemStateMachine {
        type SnapshotData = SnapshotData;
        type SnapshotBuilder = Self;
        async fn applied_state(&mut self) -> StoreResult<(Option<LogId>, StoredMembership)> {
            Ok((self.applied, self.membership.clone()))
        }
        async fn apply<S>(&mut self, entries: S) -> StoreResult<()>
        where
            S: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
        {
            let entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
            for (e, responder) in entries {
                self.applied = Some(e.log_id);
                if let EntryPayload::Membership(m) = e.payload {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                }
                if let Some(r) = responder {
                    r.send(CommandResponse::default());
                }
            }
            Ok(())
        }
        async fn get_snapshot_builder(&mut self) -> Self {
            self.clone()
        }
        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMeta,
            snapshot: SnapshotData,
        ) -> StoreResult<()> {
            self.applied = meta.last_log_id;
            self.membership = meta.last_membership.clone();
            self.current = Some((meta.clone(), snapshot.into_inner()));
            Ok(())
        }
        async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot>> {
            if self.current.is_none() && self.applied.is_some() {
                let s = self.build_snapshot().await?;
                self.current = Some((s.meta, s.snapshot.into_inner()));
            }
            Ok(self.current.clone().map(|(meta, data)| Snapshot {
                meta,
                snapshot: Cursor::new(data),
            }))
        }
    }

    struct Builder;

    /// Small segments: the suite opens many stores.
    pub(crate) fn small() -> WalOptions {
        WalOptions {
            segment_bytes: 256 << 10,
        }
    }

    impl StoreBuilder<TypeConfig, LogStore, MemStateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<
            (tempfile::TempDir, LogStore, MemStateMachine),
            openraft::StorageError<TypeConfig>,
        > {
            let dir = tempfile::tempdir().unwrap();
            let log = LogStore::open(dir.path(), small()).unwrap();
            Ok((dir, log, MemStateMachine::default()))
        }
    }

    #[tokio::test]
    async fn conformance_suite_log_store() {
        Suite::test_all(Builder).await.unwrap();
    }

    #[tokio::test]
    async fn log_and_vote_survive_reopen() {
        use openraft::testing::log_id;
        let log_id = log_id::<TypeConfig>;
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path(), small()).unwrap();
            store.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
            let entries: Vec<Entry> = (1..=10)
                .map(|i| Entry {
                    log_id: log_id(3, 2, i),
                    payload: EntryPayload::Blank,
                })
                .collect();
            openraft::storage::RaftLogStorageExt::blocking_append(&mut store, entries)
                .await
                .unwrap();
            store.purge(log_id(3, 2, 4)).await.unwrap();
            store.truncate_after(Some(log_id(3, 2, 8))).await.unwrap();
        }
        let mut store = LogStore::open(dir.path(), small()).unwrap();
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
