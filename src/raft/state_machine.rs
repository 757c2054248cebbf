//! The Raft state machine: the MVCC store, driven by committed log entries (openraft's v2
//! `RaftStateMachine` and `RaftSnapshotBuilder`).
//!
//! An entry carries a group of writes (see [`Command`](crate::raft::types::Command)). Each
//! write is applied as ONE sled batch that also records the "applied blob" (see
//! [`AppliedState`]): after the last write of an entry the blob names that entry as applied;
//! after an earlier one it keeps the previous entry as the last applied and records how many
//! writes of this entry are in (`in_progress`). Data and applied state can never disagree
//! after a crash: openraft re-applies from the entry after the last applied one, and the
//! writes of a half-applied entry that already took effect are skipped, so no write is lost
//! or applied twice.
//!
//! Order of effects for a write (etcd's "durable before visible"): the batch is written, the
//! [`ApplyObserver`] is told about the revision and its events, and only then does openraft
//! get the response that answers the proposer.
//!
//! The blocking sled work runs on tokio's blocking pool, one hop per `apply` call (openraft
//! hands over every committed entry it has in one call), not one per entry. Measured once
//! (release build, 20 000 puts of small values, 64 entries per call, 2-core machine):
//! inline on the runtime thread 54k/s, one hop per call 62k/s (the same, within noise), one
//! hop per entry 19k/s. One hop per call costs
//! nothing measurable and keeps sled's blocking I/O off the runtime's worker threads.

// The error types are openraft's, fixed by the traits implemented here.
#![allow(clippy::result_large_err)]

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::pb::minietcdpb::internal_request::Request;
use crate::pb::minietcdpb::{InternalRequest, InternalResponse};
use crate::raft::codec;
use crate::raft::snapshot::{BlockWriter, SnapshotDir, STREAM_QUEUE_BLOCKS};
use crate::raft::types::{
    ApplyObserver, CommandResponse, Entry, LogId, Snapshot, SnapshotData, SnapshotMeta,
    StoredMembership, TypeConfig,
};
use crate::storage::{GroupWrite, MvccStore, SnapshotView, StorageError};
pub use snapshot_trigger::SnapshotTrigger;

type StoreResult<T> = Result<T, io::Error>;

/// What the state machine has applied: stored inside every MVCC batch as the applied blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppliedState {
    /// The last log entry whose effect is entirely in the store.
    pub last_applied: Option<LogId>,
    /// The last membership entry applied (openraft needs it back after a restart).
    pub last_membership: StoredMembership,
    /// The entry after `last_applied` when only some of its writes are in the store (the
    /// node stopped between two of them); `None` between entries.
    pub in_progress: Option<EntryProgress>,
}

/// How far the writes of one entry have been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryProgress {
    /// The entry.
    pub log_id: LogId,
    /// How many of its writes (a prefix) took effect.
    pub done: u64,
}

/// Writes gathered for one sled batch: (entry position, write, lease seed, entry index).
#[derive(Default)]
struct Group<'a> {
    writes: Vec<(usize, &'a InternalRequest, Vec<u8>, u64)>,
    /// The last entry gathered (blank and membership entries included).
    last_log_id: Option<LogId>,
}

fn encode_applied(state: &AppliedState) -> StoreResult<Vec<u8>> {
    codec::encode("applied state", state).map_err(|e| sm_err("apply", &e))
}

/// Shared between the state machine and its snapshot builders.
struct Shared {
    /// The MVCC store every entry is applied to.
    store: Arc<MvccStore>,
    /// Told about every write and every snapshot install (the watch layer).
    observer: Arc<dyn ApplyObserver>,
    /// Keeps the current snapshot across restarts (a marker of the durable store, or the
    /// snapshot last installed, so that an interrupted install can be redone).
    snapshots: SnapshotDir,
    /// The applied state; its lock also keeps a snapshot build from interleaving with an
    /// apply, so that a snapshot's data and its meta describe the same point in the log.
    applied: Mutex<AppliedState>,
    /// Serialises replacing the kept snapshot (a build finishing while an install runs).
    keep_lock: Mutex<()>,
    /// sled's data file, fdatasync'ed after sled's flush in [`Shared::make_durable`], and
    /// sled's directory of large values (sled writes them to files of their own, unsynced).
    data_file: OnceLock<(std::fs::File, std::path::PathBuf)>,
    /// Counts applied writes for `--snapshot-count`.
    trigger: Arc<SnapshotTrigger>,
    /// Set once openraft has started (see [`StateMachine::serve_snapshots`]): from then on a
    /// kept marker asked for is a member to be sent a snapshot, and the rows are read out.
    serving: std::sync::atomic::AtomicBool,
    /// Builds write the rows out as they did before markers (openraft's conformance suite
    /// installs what a build returns elsewhere).
    #[cfg(test)]
    write_out_builds: bool,
}

impl Shared {
    /// Makes everything applied so far durable: sled's flush (which writes with
    /// `sync_file_range` only), then an `fdatasync` of sled's data file. Apply never waits
    /// for this (the log is the source of truth); a snapshot does, because the log below it
    /// may be purged once it exists.
    fn make_durable(&self) -> StoreResult<()> {
        self.store.flush().map_err(|e| sm_err("write", &e))?;
        if let Some((f, blobs)) = self.data_file.get() {
            f.sync_data().map_err(|e| sm_err("write", &e))?;
            sync_blobs(blobs).map_err(|e| sm_err("write", &e))?;
        }
        Ok(())
    }

    fn lock(&self) -> StoreResult<MutexGuard<'_, AppliedState>> {
        self.applied.lock().map_err(|_| {
            sm_err(
                "read",
                &std::io::Error::other("applied state lock poisoned"),
            )
        })
    }

    /// openraft's periodic snapshot (`--snapshot-count`): makes the store durable up to
    /// what is applied now and keeps a marker of that position, after which openraft may
    /// purge the log below it. The rows are not copied: the store is the snapshot's data,
    /// and they are read out only when a member needs them ([`Shared::snapshot_to_send`]),
    /// as etcd sends its live database only to a member that needs it. (Copying the whole
    /// store every `--snapshot-count` writes cost CPU, disk writes and, with the store larger
    /// than sled's cache, the cache itself, in proportion to the store's size.)
    fn build_snapshot(&self) -> StoreResult<Snapshot> {
        #[cfg(test)]
        if self.write_out_builds {
            let (meta, snapshot) = self.write_out()?;
            return Ok(Snapshot { meta, snapshot });
        }
        let meta = {
            let applied = self.lock()?;
            self.trigger.captured();
            SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership.clone(),
            }
        };
        self.make_durable()?;
        let _keep = self.keep_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = self.current_snapshot()? {
            if kept.meta.last_log_id >= meta.last_log_id {
                // Installed since at this position or later: it stands.
                return Ok(kept);
            }
        }
        let data = self
            .snapshots
            .keep_marker(&meta)
            .map_err(|e| sm_err("write snapshot", &e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot built (its data is the store)");
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }

    /// The snapshot to send to a member: the kept one, or, when that is a marker, the store
    /// as it is now, read from a view on a thread of its own while the network sends it
    /// (no file: the rows go from the store to the receiver as they are read, see
    /// `snapshot::Streamed`). openraft's state machine worker asks for it and applies
    /// nothing until it has the answer, so the answer is the position and the stream of
    /// rows to come. A view holds back compaction's deletion while it is open; it closes
    /// when the rows are all read or the network stops taking them.
    fn snapshot_to_send(self: &Arc<Self>) -> StoreResult<Option<Snapshot>> {
        let kept = match self.current_snapshot()? {
            Some(kept) if kept.snapshot.is_marker() => kept,
            other => return Ok(other),
        };
        let (meta_tx, meta_rx) = std::sync::mpsc::channel();
        let (blocks_tx, blocks_rx) = tokio::sync::mpsc::channel(STREAM_QUEUE_BLOCKS);
        let shared = self.clone();
        std::thread::Builder::new()
            .name("snapshot-out".into())
            .spawn(move || {
                let (meta, view) = match shared.capture_view() {
                    Ok(captured) => captured,
                    Err(e) => {
                        let _ = meta_tx.send(Err(e));
                        return;
                    }
                };
                // Reading out a million rows takes seconds of CPU: behind the requests (once
                // the view is captured, under the lock applies take).
                crate::background::lower_this_thread();
                let _ = meta_tx.send(Ok(meta.clone()));
                let started = std::time::Instant::now();
                let failures = blocks_tx.clone();
                let written = view.write_to(BlockWriter::new(blocks_tx));
                // Every row is read: the view need not wait for the network with the rest.
                drop(view);
                match written {
                    Ok((out, bytes)) => match out.finish() {
                        Ok(()) => tracing::info!(
                            last_log_id = ?meta.last_log_id,
                            bytes,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "snapshot read out"
                        ),
                        Err(e) => tracing::warn!(error = %e, "snapshot not read out"),
                    },
                    // The network side says why its stream stops short.
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot not read out");
                        let _ = failures.blocking_send(Err(io::Error::other(e.to_string())));
                    }
                }
            })
            .map_err(|e| sm_err("write snapshot", &e))?;
        let meta = meta_rx
            .recv()
            .map_err(|_| sm_err("write snapshot", &"the read-out stopped before it began"))??;
        Ok(Some(Snapshot {
            meta,
            snapshot: kept.snapshot.streamed(blocks_rx),
        }))
    }

    /// A view of the store and the log position it reflects. The apply lock is held only
    /// while the view begins (see `storage::snapshot_view`): applies go on while its rows
    /// are read. (No snapshot is kept by it: `--snapshot-count`'s count goes on.)
    fn capture_view(&self) -> StoreResult<(SnapshotMeta, SnapshotView<'_>)> {
        let applied = self.lock()?;
        let view = self
            .store
            .begin_snapshot()
            .map_err(|e| sm_err("read state machine", &e))?;
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership.clone(),
        };
        Ok((meta, view))
    }

    /// Writes the store's state and the log position it reflects to a new snapshot file
    /// (what openraft's conformance suite gets from a build, see `write_out_builds`).
    #[cfg(test)]
    fn write_out(&self) -> StoreResult<(SnapshotMeta, SnapshotData)> {
        let (meta, view) = self.capture_view()?;
        self.trigger.captured();
        let mut file = self
            .snapshots
            .create(&meta)
            .map_err(|e| sm_err("write snapshot", &e))?;
        let body = file.body().map_err(|e| sm_err("write snapshot", &e))?;
        view.write_to(body)
            .map_err(|e| sm_err("write snapshot", &e))?;
        drop(view);
        let mut data = file.finish().map_err(|e| sm_err("write snapshot", &e))?;
        // Kept unless something newer was kept meanwhile: the kept position never goes back.
        let _keep = self.keep_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self
            .current_snapshot()?
            .is_none_or(|kept| kept.meta.last_log_id <= meta.last_log_id)
        {
            self.snapshots
                .keep(&mut data)
                .map_err(|e| sm_err("write snapshot", &e))?;
        }
        Ok((meta, data))
    }

    /// Applies `entries` in order; runs on the blocking pool.
    ///
    /// The writes of all the entries go to the store as one group (one sled batch) whose
    /// applied blob names the last entry. A compaction (which deletes rows in batches of its
    /// own) splits the group: the writes before it are written with a blob that records how
    /// far through its entry they got (`in_progress`), so a crash between the parts still
    /// applies every write exactly once.
    fn apply_entries(&self, entries: Vec<Entry>) -> StoreResult<Vec<CommandResponse>> {
        let mut applied = self.lock()?;
        let responses = self.apply_locked(&mut applied, &entries, Wait::Yes)?;
        responses.ok_or_else(|| sm_err("apply", &"the store refused a write that may wait"))
    }

    /// [`Shared::apply_entries`] with the applied state's lock already held. With
    /// [`Wait::No`], `Ok(None)` when the store's apply lock is held by someone else: nothing
    /// was applied (only for entries without a compaction, see [`is_short`]).
    fn apply_locked(
        &self,
        applied: &mut AppliedState,
        entries: &[Entry],
        wait: Wait,
    ) -> StoreResult<Option<Vec<CommandResponse>>> {
        let mut responses: Vec<CommandResponse> = Vec::with_capacity(entries.len());
        let mut group = Group::default();
        // The state once everything gathered so far is in the store.
        let mut state = applied.clone();
        for entry in entries {
            let log_id = entry.log_id;
            let pos = responses.len();
            responses.push(CommandResponse::default());
            let skip = match state.in_progress {
                Some(p) if p.log_id == log_id => p.done,
                _ => 0,
            };
            let last_membership = match &entry.payload {
                EntryPayload::Membership(m) => StoredMembership::new(Some(log_id), m.clone()),
                _ => state.last_membership.clone(),
            };
            if let EntryPayload::Normal(cmd) = &entry.payload {
                let count = cmd.0.len();
                for (i, req) in cmd.0.iter().enumerate() {
                    let done = u64::try_from(i + 1).unwrap_or(u64::MAX);
                    if done <= skip {
                        // Applied by a previous run, whose proposer went away with it.
                        responses[pos].0.push(InternalResponse::default());
                        continue;
                    }
                    // Only a LeaseGrant reads its seed: no encoding for every other write.
                    let seed = if matches!(req.request, Some(Request::LeaseGrant(_))) {
                        codec::encode("lease seed", &(log_id, done))
                            .map_err(|e| sm_err("apply", &e))?
                    } else {
                        Vec::new()
                    };
                    if matches!(req.request, Some(Request::Compaction(_))) {
                        // Everything before the compaction goes first, as far as write i.
                        let before = AppliedState {
                            in_progress: (i > 0).then_some(EntryProgress {
                                log_id,
                                done: done - 1,
                            }),
                            ..state.clone()
                        };
                        // A compaction is never applied without waiting (see `is_short`).
                        self.flush_group(&mut group, &before, log_id, &mut responses, Wait::Yes)?;
                        let after = if i + 1 == count {
                            AppliedState {
                                last_applied: Some(log_id),
                                last_membership: last_membership.clone(),
                                in_progress: None,
                            }
                        } else {
                            AppliedState {
                                in_progress: Some(EntryProgress { log_id, done }),
                                ..state.clone()
                            }
                        };
                        let blob = encode_applied(&after)?;
                        let mut outcome = self
                            .store
                            .apply(req, &blob)
                            .map_err(|e| sm_err("apply", &e))?;
                        *applied = after;
                        outcome.response.log_index = log_id.index;
                        responses[pos].0.push(outcome.response);
                        continue;
                    }
                    group.writes.push((pos, req, seed, log_id.index));
                }
            }
            state = AppliedState {
                last_applied: Some(log_id),
                last_membership,
                in_progress: None,
            };
            group.last_log_id = Some(log_id);
        }
        if let Some(log_id) = group.last_log_id {
            if !self.flush_group(&mut group, &state, log_id, &mut responses, wait)? {
                return Ok(None);
            }
        }
        *applied = state;
        Ok(Some(responses))
    }

    /// Writes the gathered writes (or only the blob, when there are none) with `state` as
    /// the applied blob, tells the observer about each write's events, and files each
    /// response under its entry. With [`Wait::No`], returns `false` with nothing written
    /// when the store's apply lock is held by someone else.
    fn flush_group(
        &self,
        group: &mut Group<'_>,
        state: &AppliedState,
        _log_id: LogId,
        responses: &mut [CommandResponse],
        wait: Wait,
    ) -> StoreResult<bool> {
        let blob = encode_applied(state)?;
        let writes: Vec<GroupWrite<'_>> = group
            .writes
            .iter()
            .map(|(_, request, seed, _)| GroupWrite {
                request,
                lease_seed: seed,
            })
            .collect();
        let outcomes = crate::metrics::backend_commit(|| match wait {
            Wait::Yes => self.store.apply_group(&writes, &blob).map(Some),
            Wait::No => self.store.try_apply_group(&writes, &blob),
        })
        .map_err(|e| sm_err("apply", &e))?;
        let Some(outcomes) = outcomes else {
            return Ok(false);
        };
        drop(writes);
        for ((pos, _, _, index), mut outcome) in group.writes.drain(..).zip(outcomes) {
            if !outcome.events.is_empty() {
                self.observer.notify(outcome.revision, &outcome.events);
            }
            outcome.response.log_index = index;
            if let Some(r) = responses.get_mut(pos) {
                r.0.push(outcome.response);
            }
        }
        group.last_log_id = None;
        Ok(true)
    }

    /// Replaces the store with a snapshot's state and keeps the snapshot as the current one.
    fn install(&self, meta: &SnapshotMeta, data: SnapshotData) -> StoreResult<()> {
        let next = AppliedState {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            in_progress: None,
        };
        let blob =
            codec::encode("applied state", &next).map_err(|e| sm_err("write snapshot", &e))?;
        // Keep the snapshot first: if the node dies while the store is being rewritten,
        // `open` finds the store empty and installs this snapshot again.
        let data = if self.snapshots.is_kept(&data) {
            data
        } else {
            let mut data = if self.snapshots.owns(&data) {
                data
            } else {
                self.snapshots
                    .copy_in(meta, &data)
                    .map_err(|e| sm_err("write snapshot", &e))?
            };
            let _keep = self.keep_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.snapshots
                .keep(&mut data)
                .map_err(|e| sm_err("write snapshot", &e))?;
            data
        };
        let mut applied = self.lock()?;
        self.store
            .install_snapshot_from(|| {
                data.reader()
                    .map_err(|e| StorageError::Sled(sled::Error::Io(e)))
            })
            .map_err(|e| sm_err("write snapshot", &e))?;
        // The snapshot carries the blob of the state it was built from; writing the meta's
        // own blob makes the applied id exactly the one openraft installed.
        self.store
            .set_applied(&blob)
            .map_err(|e| sm_err("write snapshot", &e))?;
        *applied = next;
        self.trigger.captured();
        drop(applied);
        self.make_durable()?;
        self.observer.restored(self.store.current_revision());
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "snapshot installed");
        Ok(())
    }

    fn current_snapshot(&self) -> StoreResult<Option<Snapshot>> {
        let kept = self
            .snapshots
            .kept()
            .map_err(|e| sm_err("read snapshot", &e))?;
        Ok(kept.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

/// fsyncs every file in sled's blob directory (values over about 128 KiB), then the
/// directory: sled writes them without a sync, so without this a snapshot could cover a large
/// value that a power cut then loses.
fn sync_blobs(dir: &std::path::Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        match std::fs::File::open(&path) {
            Ok(f) => f.sync_data()?,
            // sled removed it meanwhile (a value overwritten or compacted).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// A state machine failure, in the error type openraft takes (and treats as fatal).
fn sm_err<E: std::fmt::Display>(what: &str, e: &E) -> io::Error {
    io::Error::other(format!("state machine: {what}: {e}"))
}

/// Runs blocking sled work on the blocking pool; a panic there becomes a storage error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| sm_err("write", &e))?
}

/// Most writes applied on the state machine's own task; larger groups go to the blocking pool.
const SHORT_APPLY_WRITES: usize = 32;

/// Whether an apply may wait for the store's apply lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// It may (on the blocking pool).
    Yes,
    /// It may not (on the state machine's task): it gives up, with nothing applied.
    No,
}

/// Whether applying `entries` is certainly quick: few writes, each a put or a transaction
/// on single keys (no key ranges, whose deletes or reads may touch any number of keys), and
/// no membership change, lease, auth or compaction work.
fn is_short(entries: &[Entry]) -> bool {
    let mut writes = 0;
    for entry in entries {
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(_) => return false,
            EntryPayload::Normal(cmd) => {
                writes += cmd.0.len();
                if writes > SHORT_APPLY_WRITES || !cmd.0.iter().all(is_single_key) {
                    return false;
                }
            }
        }
    }
    true
}

/// A put, or a transaction whose compares and operations all name one key each.
fn is_single_key(req: &InternalRequest) -> bool {
    use crate::pb::etcdserverpb::request_op::Request as Op;
    match &req.request {
        Some(Request::Put(_)) => true,
        Some(Request::Txn(txn)) => {
            txn.compare.iter().all(|c| c.range_end.is_empty())
                && txn
                    .success
                    .iter()
                    .chain(&txn.failure)
                    .all(|op| match &op.request {
                        Some(Op::RequestPut(_)) => true,
                        Some(Op::RequestRange(r)) => r.range_end.is_empty(),
                        Some(Op::RequestDeleteRange(d)) => d.range_end.is_empty(),
                        Some(Op::RequestTxn(_)) | None => false,
                    })
        }
        _ => false,
    }
}

/// The state machine over the MVCC store.
pub struct StateMachine {
    shared: Arc<Shared>,
}

/// Builds snapshots for openraft, possibly while the state machine keeps applying.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

/// See [`StateMachine::serve_snapshots`].
pub struct ServeSnapshots(Arc<Shared>);

impl ServeSnapshots {
    /// From now on, asking for the current snapshot reads a kept marker's store out.
    pub fn start(&self) {
        self.0
            .serving
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl StateMachine {
    /// Opens the state machine over `store`, recovering the applied state from the store's
    /// applied blob.
    pub fn open(
        snapshot_dir: &std::path::Path,
        store: Arc<MvccStore>,
        observer: Arc<dyn ApplyObserver>,
    ) -> StoreResult<StateMachine> {
        let snapshots = SnapshotDir::open(snapshot_dir)
            .map_err(|e| sm_err(&format!("open {}", snapshot_dir.display()), &e))?;
        let blob = store.applied().map_err(|e| sm_err("read", &e))?;
        let applied = match &blob {
            Some(b) => codec::decode("applied state", b).map_err(|e| sm_err("read", &e))?,
            None => AppliedState::default(),
        };
        let applied_id = applied.last_applied;
        let shared = Arc::new(Shared {
            store,
            observer,
            snapshots,
            applied: Mutex::new(applied),
            keep_lock: Mutex::new(()),
            data_file: OnceLock::new(),
            trigger: SnapshotTrigger::new(0),
            serving: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            write_out_builds: false,
        });
        // A kept snapshot ahead of the store: an install that did not finish. The store is
        // either empty (an in-place install, interrupted) or still the one before the install
        // (a copy that was never switched in). The log below the snapshot may be purged, so
        // the snapshot is the only way forward.
        if let Some(snap) = shared.current_snapshot()? {
            if snap.meta.last_log_id > applied_id && snap.snapshot.is_marker() {
                // A marker is kept only once the store is durable up to it.
                return Err(sm_err(
                    "open",
                    &format!(
                        "the store (applied {applied_id:?}) is behind the snapshot marker at {:?}: it lost writes it had made durable",
                        snap.meta.last_log_id
                    ),
                ));
            }
            if snap.meta.last_log_id > applied_id {
                tracing::warn!(
                    last_log_id = ?snap.meta.last_log_id,
                    store_applied = ?applied_id,
                    "the store is behind its kept snapshot, restoring the snapshot"
                );
                shared.install(&snap.meta, snap.snapshot)?;
            }
        }
        let last_applied = shared.lock()?.last_applied;
        tracing::info!(?last_applied, "state machine opened");
        Ok(StateMachine { shared })
    }

    /// Makes [`Shared::make_durable`] end with an `fdatasync` of sled's data file at `path`
    /// (`<sled dir>/db`).
    pub fn with_data_file(self, path: &std::path::Path) -> std::io::Result<StateMachine> {
        let file = std::fs::File::open(path)?;
        let blobs = path
            .parent()
            .map_or_else(|| std::path::PathBuf::from("blobs"), |d| d.join("blobs"));
        let _ = self.shared.data_file.set((file, blobs));
        Ok(self)
    }

    /// Applies `entries` in order and returns one answer per entry (what `apply` hands to
    /// openraft's responders).
    pub async fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
    ) -> StoreResult<Vec<CommandResponse>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let writes: usize = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(cmd) => cmd.0.len(),
                _ => 0,
            })
            .sum();
        let responses = self.apply_counted(entries).await;
        self.shared
            .trigger
            .applied(u64::try_from(writes).unwrap_or(u64::MAX));
        responses
    }

    /// [`Self::apply_entries`] without the counting.
    async fn apply_counted(&mut self, entries: Vec<Entry>) -> StoreResult<Vec<CommandResponse>> {
        if is_short(&entries) {
            // A few single-key writes take tens of microseconds: applied here, on the state
            // machine's task, they skip two thread hand-offs (to the blocking pool and back)
            // on every write's way to its answer. Only when nothing holds the applied state
            // (a snapshot being captured does) nor the store's apply lock (a defragment or a
            // Maintenance.Snapshot may, for seconds): the task never waits on a lock, which
            // with one worker thread would stop the whole runtime.
            if let Ok(mut applied) = self.shared.applied.try_lock() {
                if let Some(responses) =
                    self.shared.apply_locked(&mut applied, &entries, Wait::No)?
                {
                    return Ok(responses);
                }
            }
        }
        let shared = self.shared.clone();
        blocking(move || shared.apply_entries(entries)).await
    }

    /// Asks for a snapshot every `writes` applied writes (`--snapshot-count`; 0 never asks).
    /// Whoever holds the Raft handle waits on [`Self::snapshot_trigger`] and asks openraft.
    pub fn with_snapshot_count(self, writes: u64) -> StateMachine {
        self.shared.trigger.set_every(writes);
        self
    }

    /// A handle that tells the state machine openraft has started (call
    /// [`ServeSnapshots::start`] once `Raft::new` has returned): openraft reads the current
    /// snapshot at start-up only for its position, and afterwards only to send it, so only
    /// then is a kept marker's store read out.
    pub fn serve_snapshots(&self) -> ServeSnapshots {
        ServeSnapshots(self.shared.clone())
    }

    /// Builds write the rows out (see `Shared::write_out_builds`).
    #[cfg(test)]
    fn with_builds_written_out(mut self) -> StateMachine {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.write_out_builds = true;
        }
        self
    }

    /// Counts applied writes and says when a snapshot is due.
    pub fn snapshot_trigger(&self) -> Arc<SnapshotTrigger> {
        self.shared.trigger.clone()
    }

    /// The directory of this member's snapshot files (where received snapshots go).
    pub fn snapshot_dir(&self) -> SnapshotDir {
        self.shared.snapshots.clone()
    }

    /// The MVCC store this state machine applies to.
    pub fn store(&self) -> &Arc<MvccStore> {
        &self.shared.store
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    #[instrument(level = "info", skip_all)]
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot> {
        let shared = self.shared.clone();
        blocking(move || shared.build_snapshot()).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId>, StoredMembership)> {
        let applied = self.shared.lock()?;
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    #[instrument(level = "debug", skip_all)]
    async fn apply<S>(&mut self, entries: S) -> StoreResult<()>
    where
        S: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        // openraft reads the whole committed range before handing it over: everything is
        // there already, and one blocking hop applies it all.
        let items: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        if items.is_empty() {
            return Ok(());
        }
        let (entries, responders): (Vec<Entry>, Vec<_>) = items.into_iter().unzip();
        let responses = self.apply_entries(entries).await?;
        for (responder, response) in responders.into_iter().zip(responses) {
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    #[instrument(level = "info", skip_all, fields(last_log_id = ?meta.last_log_id))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> StoreResult<()> {
        let shared = self.shared.clone();
        let meta = meta.clone();
        blocking(move || shared.install(&meta, snapshot)).await
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot>> {
        let shared = self.shared.clone();
        if shared.serving.load(std::sync::atomic::Ordering::Acquire) {
            blocking(move || shared.snapshot_to_send()).await
        } else {
            blocking(move || shared.current_snapshot()).await
        }
    }
}

mod snapshot_trigger;
#[cfg(test)]
mod tests;
