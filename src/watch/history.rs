//! Where unsynced watchers read missed events from: the MVCC store's history in sled, or an
//! in-memory history (unit tests, benchmarks). A trait so that watch logic is testable
//! without sled and the store never learns about watch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::pb::mvccpb::{Event, KeyValue};
use crate::storage::{MvccStore, StorageError};

/// Read access to the store's write history.
pub trait History: Send + Sync + 'static {
    /// The latest revision.
    fn current_revision(&self) -> i64;
    /// The last compaction revision (0 when never compacted).
    fn compact_revision(&self) -> i64;
    /// The events of revisions `from..=to`, grouped by revision, at most `max_revs`
    /// revisions; `Compacted` when `from` is below the compaction.
    fn events(
        &self,
        from: i64,
        to: i64,
        max_revs: usize,
    ) -> Result<Vec<(i64, Vec<Event>)>, StorageError>;
    /// The key as of main revision `rev`; None when it did not exist then or `rev` is
    /// compacted away (fills a prev_kv that the apply left out).
    fn kv_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, StorageError>;
}

impl History for MvccStore {
    fn current_revision(&self) -> i64 {
        MvccStore::current_revision(self)
    }
    fn compact_revision(&self) -> i64 {
        MvccStore::compact_revision(self)
    }
    fn events(
        &self,
        from: i64,
        to: i64,
        max_revs: usize,
    ) -> Result<Vec<(i64, Vec<Event>)>, StorageError> {
        MvccStore::events(self, from, to, max_revs)
    }
    fn kv_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, StorageError> {
        MvccStore::kv_at(self, key, rev)
    }
}

impl<T: History> History for Arc<T> {
    fn current_revision(&self) -> i64 {
        (**self).current_revision()
    }
    fn compact_revision(&self) -> i64 {
        (**self).compact_revision()
    }
    fn events(
        &self,
        from: i64,
        to: i64,
        max_revs: usize,
    ) -> Result<Vec<(i64, Vec<Event>)>, StorageError> {
        (**self).events(from, to, max_revs)
    }
    fn kv_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, StorageError> {
        (**self).kv_at(key, rev)
    }
}

/// An in-memory history: revisions and their events, with compaction.
#[derive(Default)]
pub struct MemoryHistory {
    /// Events by revision.
    revs: Mutex<BTreeMap<i64, Vec<Event>>>,
    /// Latest revision (1 when fresh, as etcd).
    current: AtomicI64,
    /// Last compaction.
    compacted: AtomicI64,
}

impl MemoryHistory {
    /// A fresh history at revision 1.
    pub fn new() -> Self {
        MemoryHistory {
            revs: Mutex::new(BTreeMap::new()),
            current: AtomicI64::new(1),
            compacted: AtomicI64::new(0),
        }
    }

    /// Records the events of the next revision; returns that revision. The events' kv
    /// mod_revision must already be the returned revision (see [`MemoryHistory::next_revision`]).
    pub fn append(&self, rev: i64, events: Vec<Event>) {
        if let Ok(mut revs) = self.revs.lock() {
            revs.insert(rev, events);
        }
        self.current.fetch_max(rev, Ordering::SeqCst);
    }

    /// The revision the next write will take.
    pub fn next_revision(&self) -> i64 {
        self.current.load(Ordering::SeqCst) + 1
    }

    /// Forgets every revision below `rev`.
    pub fn compact(&self, rev: i64) {
        if let Ok(mut revs) = self.revs.lock() {
            let keep = revs.split_off(&rev);
            *revs = keep;
        }
        self.compacted.fetch_max(rev, Ordering::SeqCst);
    }
}

impl History for MemoryHistory {
    fn current_revision(&self) -> i64 {
        self.current.load(Ordering::SeqCst)
    }
    fn compact_revision(&self) -> i64 {
        self.compacted.load(Ordering::SeqCst)
    }
    fn events(
        &self,
        from: i64,
        to: i64,
        max_revs: usize,
    ) -> Result<Vec<(i64, Vec<Event>)>, StorageError> {
        if from < self.compacted.load(Ordering::SeqCst) {
            return Err(StorageError::Compacted);
        }
        if from > to {
            return Ok(Vec::new());
        }
        let revs = self
            .revs
            .lock()
            .map_err(|_| StorageError::Corrupt("history lock poisoned".into()))?;
        Ok(revs
            .range(from..=to)
            .take(max_revs)
            .map(|(r, e)| (*r, e.clone()))
            .collect())
    }
    fn kv_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, StorageError> {
        if rev < self.compacted.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let revs = self
            .revs
            .lock()
            .map_err(|_| StorageError::Corrupt("history lock poisoned".into()))?;
        // The key's latest event at or below `rev`: a put is the key, a delete its absence.
        let latest = revs.range(..=rev).rev().find_map(|(_, evs)| {
            evs.iter()
                .rev()
                .find(|e| e.kv.as_ref().is_some_and(|kv| kv.key == key))
        });
        Ok(latest.and_then(|e| {
            (e.r#type != crate::pb::mvccpb::event::EventType::Delete as i32)
                .then(|| e.kv.clone())
                .flatten()
        }))
    }
}
