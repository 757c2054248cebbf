//! Taking and installing snapshots of the store without holding it still.
//!
//! Taking one: under the apply lock (a moment), [`MvccStore::begin_snapshot`] records the
//! current revision and copies the few rows that change in place (meta with the `applied`
//! blob, leases, alarms, auth), and registers a reader. Applies go on meanwhile: the kv rows
//! a snapshot needs are immutable once written (one row per revision), rows of later
//! revisions are skipped, and the only thing that deletes kv rows (compaction, and a
//! defragment or install that rewrite the tree) waits while a reader is registered. The
//! rows then stream into any writer ([`SnapshotView::write_to`]), on a member the network's
//! chunks of a snapshot being sent, so a snapshot never sits in memory.
//!
//! Installing one: [`MvccStore::install_snapshot_from`] reads the rows once. A member's
//! store (in its own database) writes them into a new database beside the live one on a
//! writer thread while this thread validates them and rebuilds the index; once both are done
//! the copy is made durable and switched in as a defragment's copy is (see [`defrag`]), so a
//! bad snapshot or a crash at any point leaves the old store whole. A store inside a database
//! it does not own is rewritten in place instead: validated first, then written, with a
//! marker row that makes a crash in the middle visible to the next open (which starts from an
//! empty store). Either way the raft layer keeps the snapshot file until the install is done
//! and installs it again on start if the store is behind it.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, MutexGuard};

use super::backend::{self, META_INSTALLING};
use super::error::StorageError;
use super::revision::{parse_row_key, KV_PREFIX};
use super::snapshot::{self, Encoder};
use super::{
    clear_keeping_marker, defrag, finish_compaction, Engine, MvccStore, INSTALL_BATCH_BYTES,
    INSTALL_BATCH_ROWS,
};

/// Batches a snapshot install may have read ahead of the writer.
const INSTALL_QUEUE_BATCHES: usize = 4;
/// An install logs its progress every this many bytes written.
const INSTALL_PROGRESS_BYTES: u64 = 64 << 20;

/// A consistent view of the store for one snapshot; physical deletion of kv rows waits
/// until it is dropped.
pub struct SnapshotView<'a> {
    store: &'a MvccStore,
    /// The database as it was when the view began (a defragment waits for the view).
    engine: Arc<Engine>,
    /// The revision the view is at: kv rows above it are later writes.
    current: i64,
    /// The rows before the kv rows, copied under the apply lock.
    head: Vec<(sled::IVec, sled::IVec)>,
    /// The rows after the kv rows, copied under the apply lock.
    tail: Vec<(sled::IVec, sled::IVec)>,
}

/// The store held still for a rewrite of every row: no apply, no compaction step's
/// deletion, no open snapshot view.
pub(super) struct Exclusive<'a> {
    _removal: MutexGuard<'a, ()>,
    _apply: MutexGuard<'a, ()>,
}

impl SnapshotView<'_> {
    /// The revision this view is at.
    pub fn revision(&self) -> i64 {
        self.current
    }

    /// Writes the snapshot to `out` (from its current position), a row at a time; returns
    /// the writer and the snapshot's size in bytes.
    pub fn write_to<W: Write>(&self, out: W) -> Result<(W, u64), StorageError> {
        let mut enc = Encoder::new(out)?;
        for (k, v) in &self.head {
            enc.row(k, v)?;
        }
        for row in self.engine.tree.scan_prefix([KV_PREFIX]) {
            let (k, v) = row?;
            // Row keys sort by revision: everything from here on is newer than the view.
            if parse_row_key(&k)?.0.main > self.current {
                break;
            }
            enc.row(&k, &v)?;
        }
        for (k, v) in &self.tail {
            enc.row(k, v)?;
        }
        enc.finish()
    }
}

impl Drop for SnapshotView<'_> {
    fn drop(&mut self) {
        let mut readers = self
            .store
            .snapshot_readers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *readers = readers.saturating_sub(1);
        self.store.readers_done.notify_all();
    }
}

impl MvccStore {
    /// Begins a snapshot: a view of the store as it is now, which applies do not disturb.
    /// Takes the apply lock only while the rows that change in place are copied.
    pub fn begin_snapshot(&self) -> Result<SnapshotView<'_>, StorageError> {
        // Not in the middle of a compaction step's deletion (see [`super::compact`]).
        let _removal = self.lock_row_removal()?;
        let _apply = self.lock_apply()?;
        let engine = self.engine()?;
        let mut head = Vec::new();
        for row in engine.tree.range::<&[u8], _>(..&[KV_PREFIX][..]) {
            head.push(row?);
        }
        let mut tail = Vec::new();
        for row in engine.tree.range::<&[u8], _>(&[KV_PREFIX + 1][..]..) {
            let (k, v) = row?;
            if k.as_ref() != META_INSTALLING {
                tail.push((k, v));
            }
        }
        *self
            .snapshot_readers
            .lock()
            .map_err(|_| StorageError::Poisoned)? += 1;
        Ok(SnapshotView {
            store: self,
            engine,
            current: self.current_revision(),
            head,
            tail,
        })
    }

    /// The whole MVCC state, consistent with the `applied` blob it contains, in memory
    /// (for Maintenance.Snapshot and tests; Raft snapshots stream to the network).
    pub fn snapshot(&self) -> Result<Vec<u8>, StorageError> {
        let view = self.begin_snapshot()?;
        let (out, _) = view.write_to(std::io::Cursor::new(Vec::new()))?;
        Ok(out.into_inner())
    }

    /// Waits until no snapshot view is open.
    pub(super) fn wait_snapshot_readers(&self) -> Result<(), StorageError> {
        let mut readers = self
            .snapshot_readers
            .lock()
            .map_err(|_| StorageError::Poisoned)?;
        while *readers > 0 {
            readers = self
                .readers_done
                .wait(readers)
                .map_err(|_| StorageError::Poisoned)?;
        }
        Ok(())
    }

    /// The row removal lock and the apply lock, taken once no snapshot view is open (none
    /// can begin while the removal lock is held).
    pub(super) fn lock_apply_without_readers(&self) -> Result<Exclusive<'_>, StorageError> {
        let removal = self.lock_removal_without_readers()?;
        let apply = self.lock_apply()?;
        Ok(Exclusive {
            _removal: removal,
            _apply: apply,
        })
    }

    /// The row removal lock, taken once no snapshot view is open. The wait happens without
    /// the lock: a view being read out (and sent) can take long, and whoever begins another one
    /// meanwhile (the state machine, holding up applies) must not wait for this one.
    pub(super) fn lock_removal_without_readers(&self) -> Result<MutexGuard<'_, ()>, StorageError> {
        loop {
            self.wait_snapshot_readers()?;
            let removal = self.lock_row_removal()?;
            if *self
                .snapshot_readers
                .lock()
                .map_err(|_| StorageError::Poisoned)?
                == 0
            {
                return Ok(removal);
            }
        }
    }

    /// Replaces the whole state with a snapshot's, given in memory (see
    /// [`Self::install_snapshot_from`]).
    pub fn install_snapshot(&self, data: &[u8]) -> Result<(), StorageError> {
        self.install_snapshot_from(|| Ok(data))
    }

    /// Replaces the whole state with a snapshot's, read from `open()` twice (it must give
    /// the same bytes both times: a file). The snapshot is fully validated before anything
    /// is touched; while the tree is rewritten a marker row makes a crash visible to the
    /// next open().
    pub fn install_snapshot_from<R: Read + Send>(
        &self,
        mut open: impl FnMut() -> Result<R, StorageError>,
    ) -> Result<(), StorageError> {
        self.install_rows_from(|| snapshot::rows(open()?))
    }

    /// Replaces the whole state with the rows `source()` gives (key order). A store with a
    /// data dir is rebuilt in a new database beside the live one, in one pass, and switched
    /// in once the rows are validated and durable ([`Self::install_by_copy`]); a store inside
    /// a database it does not own is rewritten in place ([`Self::install_in_place`]).
    pub(super) fn install_rows_from<I>(
        &self,
        mut source: impl FnMut() -> Result<I, StorageError>,
    ) -> Result<(), StorageError>
    where
        I: Iterator<Item = Result<super::Row, StorageError>> + Send,
    {
        match &self.home {
            Some(home) => self.install_by_copy(home, source()?),
            None => self.install_in_place(source),
        }
    }

    /// Writes `rows` into a new database (the defragment's copy, see [`defrag`]) on one
    /// thread while this one validates them and rebuilds the index, then switches the copy
    /// in. Until the switch the live database is untouched: a bad snapshot, a failed write or
    /// a crash leaves the old store whole (a crash's copy is removed on the next open).
    fn install_by_copy<I>(&self, home: &super::Home, rows: I) -> Result<(), StorageError>
    where
        I: Iterator<Item = Result<super::Row, StorageError>> + Send,
    {
        let _apply = self.lock_apply_without_readers()?;
        let copy = defrag::Copy::create(&home.path, backend::TREE_NAME)?;
        let (tx, rx) = mpsc::sync_channel(INSTALL_QUEUE_BATCHES);
        // Both halves are seconds of CPU at a million keys, on threads of their own that run
        // behind the requests this member (or, on a shared machine, its peers) serves.
        let (recovered, written) = std::thread::scope(|s| {
            let writer = std::thread::Builder::new()
                .name("snapshot-install".into())
                .spawn_scoped(s, || {
                    crate::background::lower_this_thread();
                    write_batches(copy.tree(), rx)
                })
                .map_err(|e| StorageError::Corrupt(format!("snapshot install: {e}")))?;
            let checker = std::thread::Builder::new()
                .name("snapshot-check".into())
                .spawn_scoped(s, || {
                    crate::background::lower_this_thread();
                    backend::recover(Batches::new(rows, tx))
                })
                .map_err(|e| StorageError::Corrupt(format!("snapshot install: {e}")))?;
            let recovered = checker.join().unwrap_or_else(|_| {
                Err(StorageError::Corrupt(
                    "snapshot install: the checking thread panicked".into(),
                ))
            });
            let written = writer.join().unwrap_or_else(|_| {
                Err(StorageError::Corrupt(
                    "snapshot install: the writer thread panicked".into(),
                ))
            });
            Ok::<_, StorageError>((recovered, written))
        })?;
        // The writer's own error explains a validation that stopped because it went away.
        let outcome = written.and_then(|bytes| {
            let rec = recovered?;
            if rec.empty || rec.installing {
                return Err(StorageError::Corrupt(
                    "snapshot holds no store or an unfinished install".into(),
                ));
            }
            Ok((rec, bytes))
        });
        let (rec, bytes) = match outcome {
            Ok(done) => done,
            Err(e) => {
                copy.discard();
                return Err(e);
            }
        };
        tracing::info!(
            bytes,
            keys = rec.state.index.len(),
            "snapshot install: rows written and checked"
        );
        let mut state = rec.state;
        let kv_bytes = finish_compaction(copy.tree(), &mut state, rec.kv_bytes)?;
        copy.finish()?;
        tracing::info!("snapshot install: copy durable; switching to it");
        // Readers are held off only for the switch itself.
        let mut st = self.write_state()?;
        self.switch_to_copy(home)?;
        self.installed(&mut st, state, kv_bytes, bytes);
        Ok(())
    }

    /// Publishes the state of a finished install (`kv_bytes` of kv rows in the new tree).
    fn installed(&self, st: &mut super::State, state: super::State, kv_bytes: u64, bytes: u64) {
        self.current.store(state.current, Ordering::Release);
        self.kv_bytes.store(kv_bytes, Ordering::Relaxed);
        self.compacted.store(state.compacted, Ordering::Release);
        self.mark_removed(state.compacted);
        tracing::info!(
            rev = state.current,
            keys = state.index.len(),
            bytes,
            "snapshot installed"
        );
        self.tokens.set_enabled(state.auth.enabled);
        *st = state;
    }

    /// Replaces the whole state with the rows `source()` gives, asked for twice: once to
    /// validate them and rebuild the index, once to write them over the live tree.
    fn install_in_place<I>(
        &self,
        mut source: impl FnMut() -> Result<I, StorageError>,
    ) -> Result<(), StorageError>
    where
        I: Iterator<Item = Result<super::Row, StorageError>> + Send,
    {
        let rec = backend::recover(source()?)?;
        if rec.empty || rec.installing {
            return Err(StorageError::Corrupt(
                "snapshot holds no store or an unfinished install".into(),
            ));
        }
        let mut state = rec.state;
        let _apply = self.lock_apply_without_readers()?;
        // Readers are held off for the whole rewrite: the rows they would load vanish.
        let mut st = self.write_state()?;
        let e = self.engine()?;
        // The marker is durable before the first old row goes, and stays until the last new
        // row is in: a crash anywhere in between is seen as an interrupted install on open,
        // never as a store to trust (sled's `clear` removes rows one by one, marker included).
        e.tree.insert(META_INSTALLING, &[][..])?;
        e.tree.flush()?;
        clear_keeping_marker(&e.tree)?;
        let mut batch = sled::Batch::default();
        let (mut rows, mut bytes, mut total, mut logged) = (0usize, 0usize, 0u64, 0u64);
        for row in source()? {
            let (k, v) = row?;
            rows += 1;
            bytes += k.len() + v.len();
            batch.insert(k, v);
            if rows >= INSTALL_BATCH_ROWS || bytes >= INSTALL_BATCH_BYTES {
                e.tree.apply_batch(std::mem::take(&mut batch))?;
                total += bytes as u64;
                (rows, bytes) = (0, 0);
                if total - logged >= INSTALL_PROGRESS_BYTES {
                    logged = total;
                    tracing::info!(bytes = total, "snapshot install progress");
                }
            }
        }
        e.tree.apply_batch(batch)?;
        let kv_bytes = finish_compaction(&e.tree, &mut state, rec.kv_bytes)?;
        e.tree.remove(META_INSTALLING)?;
        e.tree.flush()?;
        self.installed(&mut st, state, kv_bytes, total + bytes as u64);
        Ok(())
    }
}

/// A batch of rows on its way to the install's writer, with its bytes (keys and values).
type RowBatch = (Vec<super::Row>, u64);

/// Batches the rows of a snapshot being installed pass through on their way to validation:
/// each full batch goes to the writer thread ([`write_batches`]).
struct Batches<I> {
    rows: I,
    batch: Vec<super::Row>,
    bytes: usize,
    tx: Option<mpsc::SyncSender<RowBatch>>,
}

impl<I> Batches<I> {
    fn new(rows: I, tx: mpsc::SyncSender<RowBatch>) -> Self {
        Batches {
            rows,
            batch: Vec::new(),
            bytes: 0,
            tx: Some(tx),
        }
    }

    /// Hands the batch to the writer; `false` when the writer has stopped (its error says
    /// why).
    fn send(&mut self) -> bool {
        let batch = (std::mem::take(&mut self.batch), self.bytes as u64);
        self.bytes = 0;
        self.tx.as_ref().is_some_and(|tx| tx.send(batch).is_ok())
    }
}

impl<I> Iterator for Batches<I>
where
    I: Iterator<Item = Result<super::Row, StorageError>> + Send,
{
    type Item = Result<super::Row, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.tx.as_ref()?;
        let Some(row) = self.rows.next() else {
            // The end: the last batch goes, and closing the channel tells the writer.
            let sent = self.send();
            self.tx = None;
            return (!sent).then(writer_gone);
        };
        if let Ok((k, v)) = &row {
            self.bytes += k.len() + v.len();
            self.batch.push((k.clone(), v.clone()));
            if (self.batch.len() >= INSTALL_BATCH_ROWS || self.bytes >= INSTALL_BATCH_BYTES)
                && !self.send()
            {
                self.tx = None;
                return Some(writer_gone());
            }
        }
        Some(row)
    }
}

fn writer_gone() -> Result<super::Row, StorageError> {
    Err(StorageError::Corrupt(
        "snapshot install: the writer stopped".into(),
    ))
}

/// Writes the rows `rx` gives into `tree` until the channel closes; returns the bytes
/// written.
fn write_batches(tree: &sled::Tree, rx: mpsc::Receiver<RowBatch>) -> Result<u64, StorageError> {
    let (mut total, mut logged) = (0u64, 0u64);
    for (rows, bytes) in rx {
        // The rows come in key order into a tree that only grows: each leaf is written once
        // per run of rows instead of once per row (sled's atomic batches would buy nothing,
        // the copy is trusted only once finished).
        total += bytes;
        tree.extend_ordered(rows)?;
        if total - logged >= INSTALL_PROGRESS_BYTES {
            logged = total;
            tracing::info!(bytes = total, "snapshot install progress");
        }
    }
    Ok(total)
}
