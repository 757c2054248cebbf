//! The MVCC key-value store on sled, with etcd's semantics (revisions, generations,
//! tombstones, compaction, leases). It imports neither raft nor watch nor gRPC services:
//! it is handed protobuf messages and returns protobuf messages.
//!
//! CONTRACT (used by `raft::state_machine` and `server::kv`):
//! - `MvccStore::open_dir(data dir, &shared sled::Db)` opens or creates the store in its own
//!   database `<data dir>/mvcc/` (or an older data dir's tree in the shared database) and
//!   recovers its state; `MvccStore::open(&sled::Db)` keeps it in a tree of the given
//!   database (tests), where it cannot be defragmented.
//! - `defragment()` copies the store into a fresh database and switches to it ([`defrag`]).
//! - `apply(req, applied)` applies one write (`apply_group` several) atomically together
//!   with the opaque `applied` blob (the raft layer's last-applied log id and membership),
//!   then publishes the new revision: key-space rows go in one by one with the commit record
//!   (revision and blob) last, and a crash's unfinished group is dropped at open (sled
//!   recovers a prefix of its log); groups with lease, alarm or auth rows use one sled batch.
//!   Apply-time errors (lease not found, ...) are answered in `InternalResponse.error`; `Err`
//!   is reserved for fatal I/O.
//! - `range` reads at a revision; reads never see a half-applied write.
//! - `begin_snapshot()` / `install_snapshot_from()` carry the whole MVCC state (history
//!   since the last compaction, leases, counters) plus the `applied` blob, consistently,
//!   streaming, without stopping applies ([`snapshot_view`]); `snapshot()` /
//!   `install_snapshot()` do the same in memory.
//! - `with_rows()` hands out every row under the apply lock (one consistent state), which
//!   [`snapshot_file`] writes as etcd's bbolt snapshot; `install_rows()` installs rows that
//!   [`snapshot_file`] read from one.
//!
//! Inside: [`backend`] (sled layout, recovery), [`revision`], [`key_index`] (etcd's
//! keyIndex), [`range`] (reads), [`txn`] (writes), [`compact`], [`lease`], [`events`]
//! (history), [`snapshot`], [`snapshot_file`] and [`bbolt`] (etcd's snapshot files).
//!
//! Leases: a LeaseGrant with ID 0 gets an id derived from the `applied` blob and the
//! revision, so every member picks the same one provided the blob is byte-identical on all
//! members for the same entry; servers should rather pick the id before proposing, as etcd
//! does. The TTL is stored as granted: etcd's minimum-TTL clamp depends on the election
//! timeout and belongs to the server. Expiry is not storage's business either.
//!
//! Concurrency: applies are serialised by a mutex. An apply holds the state's write lock
//! while it computes its changes, updates the index and writes its rows; readers hold the
//! read lock for a whole read, so they see a write entirely or not at all. No apply fsyncs:
//! the raft log is the durable record, and the `applied` blob in the commit record tells the
//! raft layer where to resume replaying.

mod alarm;
mod auth;
mod auth_api;
mod auth_perm;
pub mod auth_tokens;
mod backend;
pub mod bbolt;
mod compact;
mod defrag;
mod error;
mod events;
mod hash;
mod key_index;
mod lease;
mod range;
mod revision;
mod snapshot;
pub mod snapshot_file;
mod snapshot_view;
mod txn;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use auth::AuthInfo;
pub use auth_api::AuthCheckError;
pub use auth_perm::Need;
pub use error::StorageError;
pub use hash::KvHash;
pub use lease::{LeaseInfo, MAX_LEASE_TTL_SECS};
pub use revision::Revision;
pub use snapshot_view::SnapshotView;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use backend::{i64_bytes, State};
use range::View;
use txn::{Finished, LeaseOp, TxnError, WriteTxn};

use crate::pb::etcdserverpb::{
    CompactionResponse, LeaseGrantResponse, LeaseRevokeResponse, RangeRequest, RangeResponse,
    ResponseHeader,
};
use crate::pb::minietcdpb::internal_request::Request;
use crate::pb::minietcdpb::internal_response::Response;
use crate::pb::minietcdpb::{ApplyError, InternalRequest, InternalResponse};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::Event;

/// One row of the store's tree: key and value.
pub type Row = (sled::IVec, sled::IVec);

/// How many consumers of apply events want each event's `prev_kv` (watchers created with
/// prev_kv). A store handed one (see [`MvccStore::fill_prev_kv_on_demand`]) fills `prev_kv`
/// only while the count is above zero, so that a put need not read its key's old row, whose
/// page may have left the cache; a consumer that finds it missing reads it itself, at the
/// event's revision minus one, as etcd's watch server does. A store without one always fills
/// it.
#[derive(Debug, Clone, Default)]
pub struct PrevKvDemand(Arc<AtomicUsize>);

impl PrevKvDemand {
    /// Whether anyone wants prev_kv now.
    pub fn wanted(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }

    /// One more consumer wants it.
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// One consumer no longer wants it (paired with an earlier [`PrevKvDemand::add`]).
    pub fn remove(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// Rows handed to sled at once while a store is filled or cleared: a sled batch when an
/// install rewrites the tree in place, a call of `extend_ordered` when an install or a
/// defragment fills a copy.
const INSTALL_BATCH_ROWS: usize = 4096;
/// Bytes (keys and values) handed to sled at once likewise: with large values, the row bound
/// alone would let one batch hold hundreds of megabytes.
const INSTALL_BATCH_BYTES: usize = 4 << 20;
/// Attempts at deriving a free lease id for a LeaseGrant with id 0.
const LEASE_ID_ATTEMPTS: u64 = 64;

/// The result of applying one write.
#[derive(Debug, Clone, Default)]
pub struct ApplyOutcome {
    /// The response for the proposer (headers left empty: the server fills them).
    pub response: InternalResponse,
    /// The store revision after the apply (unchanged when nothing was written).
    pub revision: i64,
    /// The events of this write, in sub-revision order, with prev_kv always filled
    /// (the watch layer strips it for watchers that did not ask).
    pub events: Vec<Event>,
}

/// Where the rows live.
struct Engine {
    /// Kept to flush the whole database (the tree shares sled's log).
    db: sled::Db,
    /// The one tree holding rows, leases and meta (see [`backend`]).
    tree: sled::Tree,
    /// The database's own directory (`<data dir>/mvcc`); `None` when the tree is in a shared
    /// database.
    own_dir: Option<PathBuf>,
}

/// The data dir of a store opened with [`MvccStore::open_dir`].
struct Home {
    /// The data dir.
    path: PathBuf,
    /// The member's shared database, where older data dirs keep the store's tree.
    shared: sled::Db,
}

/// What a defragment did.
#[derive(Debug, Clone, Copy)]
pub struct Defragmented {
    /// The database's size on disk before.
    pub before_bytes: u64,
    /// And after.
    pub after_bytes: u64,
}

/// etcd's MVCC store, persisted in sled.
pub struct MvccStore {
    /// The database and tree holding the rows; replaced by a defragment (taken under the
    /// state lock or the apply lock, which a defragment holds while it switches).
    engine: RwLock<Arc<Engine>>,
    /// The data dir, when the store can be defragmented (see [`defrag`]).
    home: Option<Home>,
    /// Index, leases and counters; read-locked by readers for a whole read.
    state: RwLock<State>,
    /// The published current revision, readable without a lock.
    current: AtomicI64,
    /// The published compaction revision, readable without a lock.
    compacted: AtomicI64,
    /// The bytes of the kv rows in the tree (keys and values): added as applies write rows,
    /// taken off as compactions delete them, reset by an install (see
    /// [`MvccStore::size_in_use`]).
    kv_bytes: AtomicU64,
    /// Serialises applies, the start of snapshots, and installs.
    apply_lock: Mutex<()>,
    /// Held while a batch of a compaction's rows is deleted (without the apply lock, see
    /// [`compact`]), and by whatever reads or rewrites every row: the start of a
    /// snapshot view, [`MvccStore::with_rows`], a defragment, an install. Taken before the
    /// apply lock, never while holding it.
    row_removal: Mutex<()>,
    /// Open snapshot views (see [`snapshot_view`]): while any is, nothing deletes kv rows.
    snapshot_readers: Mutex<usize>,
    /// Signalled when a snapshot view closes.
    readers_done: Condvar,
    /// Set when open() found (and discarded) a half-installed snapshot.
    interrupted_install: AtomicBool,
    /// Where an applied compaction sends its revision for the background compactor (see
    /// [`MvccStore::spawn_compactor`]); without one, apply compacts in place.
    compactor: Mutex<Option<mpsc::Sender<i64>>>,
    /// How far compacted history is gone from the database (what a physical Compact waits
    /// for).
    removed: tokio::sync::watch::Sender<Removed>,
    /// This member's login tokens (in memory; see [`auth_tokens`]).
    tokens: auth_tokens::Tokens,
    /// `--experimental-compaction-batch-limit`: the bound of one compaction step (see
    /// [`compact::compact_index_step`]).
    compaction_batch_limit: AtomicUsize,
    /// Who wants prev_kv on apply events; unset: always filled.
    prev_kv_demand: std::sync::OnceLock<PrevKvDemand>,
}

/// What removing a compaction's history did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactedHistory {
    /// Rows deleted.
    pub rows: usize,
    /// Index steps taken (each under the apply lock, with a pause after it in the
    /// background).
    pub steps: usize,
}

/// How far the background compactor got (see [`MvccStore::removed_compacted`]).
#[derive(Debug, Clone)]
struct Removed {
    /// Compacted history through this revision is gone from the database.
    through: i64,
    /// The last removal that failed: its compaction revision, and why.
    failed: Option<(i64, String)>,
}

impl MvccStore {
    /// Opens (or creates) the store's tree inside `db` and recovers the revision counters,
    /// the key index and the leases. Such a store cannot be defragmented.
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Self::open_engine(db.clone(), None, None)
    }

    /// Opens (or creates) the store of the data dir `path`: in its own database `mvcc/`, or
    /// in the tree of the member's shared database `shared` where an older data dir keeps
    /// it. Repairs an interrupted defragment first.
    pub fn open_dir(path: &Path, shared: &sled::Db) -> Result<Self, StorageError> {
        defrag::recover(path)?;
        let own = path.join(defrag::MVCC_DIR);
        let legacy = !own.exists() && !shared.open_tree(backend::TREE_NAME)?.is_empty();
        let home = Some(Home {
            path: path.to_path_buf(),
            shared: shared.clone(),
        });
        if legacy {
            tracing::info!("the store is in the shared database (an older data dir)");
            return Self::open_engine(shared.clone(), None, home);
        }
        if !own.exists() {
            defrag::create(
                path,
                backend::TREE_NAME,
                &[
                    (backend::META_SCHEMA, backend::SCHEMA_VERSION.to_vec()),
                    (
                        backend::META_COMMIT,
                        backend::commit_row(backend::FIRST_REVISION, None),
                    ),
                ],
            )?;
        }
        let db = defrag::open_db(&own)?;
        if db.open_tree(backend::TREE_NAME)?.is_empty() {
            // sled opens a garbled database as a shorter or empty one without an error;
            // this one was created holding a store, so its contents are lost.
            return Err(StorageError::Corrupt(format!(
                "{}: the store's database lost its contents: restore it from a snapshot or \
                 remove the member and add it anew",
                own.display()
            )));
        }
        Self::open_engine(db, Some(own), home)
    }

    fn open_engine(
        db: sled::Db,
        own_dir: Option<PathBuf>,
        home: Option<Home>,
    ) -> Result<Self, StorageError> {
        let tree = db.open_tree(backend::TREE_NAME)?;
        drop_unfinished_group(&tree)?;
        let mut rec = backend::recover(tree.iter().map(|r| r.map_err(StorageError::from)))?;
        let interrupted = rec.installing;
        if interrupted {
            // A crash during install_snapshot left a mix of old and new rows: neither state
            // is trustworthy, so start empty with no applied blob; the raft layer then
            // restores from its snapshot or log.
            tracing::warn!("interrupted snapshot install found; starting from an empty store");
            // The marker goes last: a crash while clearing finds it again next time.
            clear_keeping_marker(&tree)?;
            tree.remove(backend::META_INSTALLING)?;
            tree.flush()?;
            rec = backend::Recovered {
                empty: true,
                ..backend::Recovered::default()
            };
        }
        if rec.empty {
            let mut batch = sled::Batch::default();
            batch.insert(backend::META_SCHEMA, backend::SCHEMA_VERSION);
            batch.insert(
                backend::META_COMMIT,
                backend::commit_row(backend::FIRST_REVISION, None),
            );
            tree.apply_batch(batch)?;
            rec.state.current = backend::FIRST_REVISION;
        }
        let mut state = rec.state;
        let kv_bytes = finish_compaction(&tree, &mut state, rec.kv_bytes)?;
        tracing::info!(
            rev = state.current,
            compacted = state.compacted,
            keys = state.index.len(),
            leases = state.leases.len(),
            "mvcc store opened"
        );
        let state_compacted = state.compacted;
        let tokens = auth_tokens::Tokens::default();
        tokens.set_enabled(state.auth.enabled);
        Ok(MvccStore {
            engine: RwLock::new(Arc::new(Engine { db, tree, own_dir })),
            home,
            current: AtomicI64::new(state.current),
            compacted: AtomicI64::new(state.compacted),
            state: RwLock::new(state),
            kv_bytes: AtomicU64::new(kv_bytes),
            apply_lock: Mutex::new(()),
            row_removal: Mutex::new(()),
            snapshot_readers: Mutex::new(0),
            readers_done: Condvar::new(),
            interrupted_install: AtomicBool::new(interrupted),
            compactor: Mutex::new(None),
            removed: tokio::sync::watch::Sender::new(Removed {
                through: state_compacted,
                failed: None,
            }),
            tokens,
            compaction_batch_limit: AtomicUsize::new(compact::COMPACT_STEP_KEYS),
            prev_kv_demand: std::sync::OnceLock::new(),
        })
    }

    /// From now on, apply events carry `prev_kv` only while `demand` says someone wants it
    /// (see [`PrevKvDemand`]). Set once; later calls are ignored.
    pub fn fill_prev_kv_on_demand(&self, demand: PrevKvDemand) {
        let _ = self.prev_kv_demand.set(demand);
    }

    /// Whether this apply's events need `prev_kv`.
    fn prev_kv_wanted(&self) -> bool {
        self.prev_kv_demand.get().is_none_or(PrevKvDemand::wanted)
    }

    /// The key as of main revision `rev`: None when it did not exist then, or when `rev` is
    /// below the compaction (what etcd's watch server gets when it fills a prev_kv).
    pub fn kv_at(
        &self,
        key: &[u8],
        rev: i64,
    ) -> Result<Option<crate::pb::mvccpb::KeyValue>, StorageError> {
        let st = self.read_state()?;
        if rev < st.compacted || rev > st.current {
            return Ok(None);
        }
        let e = self.engine()?;
        View::committed(&st, &e.tree).get(key, rev)
    }

    /// Sets `--experimental-compaction-batch-limit`: the bound of each compaction step (etcd
    /// takes 0 or less for its default, [`compact::COMPACT_STEP_KEYS`]).
    pub fn set_compaction_batch_limit(&self, limit: i64) {
        let limit = usize::try_from(limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(compact::COMPACT_STEP_KEYS);
        self.compaction_batch_limit.store(limit, Ordering::Relaxed);
    }

    /// The latest revision (1 on a fresh store, as in etcd).
    pub fn current_revision(&self) -> i64 {
        self.current.load(Ordering::Acquire)
    }

    /// The revision of the last compaction (0 when never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Whether open() discarded a half-installed snapshot (the store then started empty).
    pub fn interrupted_install(&self) -> bool {
        self.interrupted_install.load(Ordering::Acquire)
    }

    /// A range read with every RangeRequest option; the header carries only the revision.
    /// Blocking (the rows are read from sled).
    ///
    /// The state's lock is held only while the index is walked; the rows are loaded after,
    /// so a long range never holds up a write (and the readers queued behind that write).
    /// The rows a plan names are immutable, and only a compaction removes them: when one is
    /// gone, the range is planned and loaded again under the lock.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StorageError> {
        let e = self.engine()?;
        let plan = {
            let st = self.read_state()?;
            View::committed(&st, &e.tree).plan_range(req, st.current, st.compacted)?
        };
        if let Some(resp) = plan.finish(|rev| backend::find_kv(&e.tree, rev))? {
            return Ok(resp);
        }
        let st = self.read_state()?;
        // A defragment may have switched the database meanwhile.
        let e = self.engine()?;
        View::committed(&st, &e.tree).range(req, st.current, st.compacted)
    }

    /// [`Self::range`] when it can run without waiting for the state's lock (a writer holds
    /// or waits for it: `None`), for callers that must not block.
    pub fn try_range(&self, req: &RangeRequest) -> Option<Result<RangeResponse, StorageError>> {
        let e = match self.engine() {
            Ok(e) => e,
            Err(err) => return Some(Err(err)),
        };
        let st = match acquired(self.state.try_read()) {
            Ok(Some(st)) => st,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        Some(View::committed(&st, &e.tree).range(req, st.current, st.compacted))
    }

    /// Applies one write in one atomic sled batch together with `applied` (the blob also
    /// seeds a derived lease id).
    pub fn apply(
        &self,
        req: &InternalRequest,
        applied: &[u8],
    ) -> Result<ApplyOutcome, StorageError> {
        if let Some(Request::Compaction(c)) = &req.request {
            let _apply = self.lock_apply()?;
            if alarm::corrupt(&self.read_state()?.alarms) {
                self.record_applied(applied)?;
                let cur = self.current_revision();
                return Ok(outcome(None, Some(ApplyError::Corrupt), Vec::new(), cur));
            }
            return self.compact(c.revision, applied);
        }
        let mut out = self.apply_group(
            &[GroupWrite {
                request: req,
                lease_seed: applied,
            }],
            applied,
        )?;
        out.pop()
            .ok_or_else(|| StorageError::Corrupt("a write group lost its outcome".into()))
    }

    /// Applies `writes` in order, each its own revision, atomically with `applied` (see
    /// `GroupRows::write`).
    ///
    /// The state's write lock is held for the whole group: each write updates the index as
    /// it goes (the next write of the group must see it) while its rows wait in the group,
    /// readable by the group through an [`Overlay`]; readers see the group only once it is
    /// in the tree. A compaction cannot be part of a group (use [`Self::apply`]).
    #[tracing::instrument(level = "debug", skip_all, fields(writes = writes.len(), rev))]
    pub fn apply_group(
        &self,
        writes: &[GroupWrite<'_>],
        applied: &[u8],
    ) -> Result<Vec<ApplyOutcome>, StorageError> {
        let apply = self.lock_apply()?;
        let st = self.write_state()?;
        self.apply_group_holding(apply, st, writes, applied)
    }

    /// [`Self::apply_group`] if it can start without waiting: `Ok(None)`, with nothing done,
    /// while something holds the apply lock (a defragment, a snapshot read out by
    /// Maintenance.Snapshot, an install, a compaction step) or the state (HashKV and Hash
    /// read every row under it). For a caller that must not wait (an async task, maybe on
    /// the runtime's only worker thread).
    pub fn try_apply_group(
        &self,
        writes: &[GroupWrite<'_>],
        applied: &[u8],
    ) -> Result<Option<Vec<ApplyOutcome>>, StorageError> {
        let Some(apply) = acquired(self.apply_lock.try_lock())? else {
            return Ok(None);
        };
        let Some(st) = acquired(self.state.try_write())? else {
            return Ok(None);
        };
        self.apply_group_holding(apply, st, writes, applied)
            .map(Some)
    }

    fn apply_group_holding(
        &self,
        _apply: MutexGuard<'_, ()>,
        mut st: RwLockWriteGuard<'_, State>,
        writes: &[GroupWrite<'_>],
        applied: &[u8],
    ) -> Result<Vec<ApplyOutcome>, StorageError> {
        let fill_prev = self.prev_kv_wanted();
        let e = self.engine()?;
        // Alarm and auth rows go straight into a batch; the key space's rows are gathered.
        let mut batch = sled::Batch::default();
        let mut batch_used = false;
        let mut rows = GroupRows::new();
        let mut overlay = backend::Overlay::new();
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            let Some(request) = &write.request.request else {
                // Nothing to do, but the write is applied.
                outcomes.push(outcome(None, None, Vec::new(), st.current));
                continue;
            };
            if let Request::Alarm(a) = request {
                let resp = alarm::apply(&mut st.alarms, a, &mut batch);
                batch_used = true;
                outcomes.push(outcome(
                    Some(Response::Alarm(resp)),
                    None,
                    Vec::new(),
                    st.current,
                ));
                continue;
            }
            if let Request::LeaseCheckpoint(c) = request {
                // Not a write to the key space: no revision, and allowed under any alarm
                // (etcd's corrupt applier lets it through too).
                for cp in &c.checkpoints {
                    if let Some(l) = st.leases.get_mut(&cp.id) {
                        l.remaining_ttl_secs = cp.remaining_ttl;
                    }
                }
                outcomes.push(outcome(None, None, Vec::new(), st.current));
                continue;
            }
            if let Request::Auth(a) = request {
                batch_used = true;
                let (resp, err) = match auth::apply(&mut st.auth, &self.tokens, a, &mut batch) {
                    Ok(r) => (Some(Response::Auth(r)), None),
                    Err(e) => (None, Some(e)),
                };
                outcomes.push(outcome(resp, err, Vec::new(), st.current));
                continue;
            }
            if alarm::corrupt(&st.alarms) {
                outcomes.push(outcome(
                    None,
                    Some(ApplyError::Corrupt),
                    Vec::new(),
                    st.current,
                ));
                continue;
            }
            if alarm::no_space(&st.alarms) && alarm::grows_store(request) {
                outcomes.push(outcome(
                    None,
                    Some(ApplyError::NoSpace),
                    Vec::new(),
                    st.current,
                ));
                continue;
            }
            // etcd's apply-time auth check: a client's write whose permissions were checked
            // at an older auth revision (a role or user changed since) is refused, so no
            // write is applied under permissions that no longer hold.
            if let Some(c) = &write.request.caller {
                if st.auth.enabled && c.auth_revision < st.auth.revision {
                    outcomes.push(outcome(
                        None,
                        Some(ApplyError::AuthOldRevision),
                        Vec::new(),
                        st.current,
                    ));
                    continue;
                }
            }
            let done = {
                let mut w = WriteTxn::new(&st, &e.tree, Some(&overlay)).fill_prev(fill_prev);
                let result: Result<Response, TxnError> = match request {
                    Request::Put(p) => w.put(p).map(Response::Put),
                    Request::DeleteRange(d) => w.delete_range(d).map(Response::DeleteRange),
                    Request::Txn(t) => w.txn(t).map(Response::Txn),
                    Request::LeaseGrant(g) => grant(&st, &mut w, g.id, g.ttl, write.lease_seed),
                    Request::LeaseRevoke(r) => w
                        .revoke(r.id)
                        .map(|()| Response::LeaseRevoke(LeaseRevokeResponse::default())),
                    Request::Compaction(_) => Err(TxnError::Storage(StorageError::Corrupt(
                        "compaction reached a write group".into(),
                    ))),
                    Request::Alarm(_) | Request::Auth(_) | Request::LeaseCheckpoint(_) => {
                        Err(TxnError::Storage(StorageError::Corrupt(
                            "an alarm, auth call or lease checkpoint reached the write path".into(),
                        )))
                    }
                };
                match result {
                    Ok(resp) => Ok((w.finish(), resp)),
                    Err(TxnError::Apply(e)) => Err(e),
                    Err(TxnError::Storage(e)) => return Err(e),
                }
            };
            outcomes.push(match done {
                Ok((fin, response)) => {
                    let events = commit(&mut st, fin, &mut rows, &mut overlay);
                    outcome(Some(response), None, events, st.current)
                }
                Err(e) => outcome(None, Some(e), Vec::new(), st.current),
            });
        }
        let commit_row = backend::commit_row(st.current, Some(applied));
        let kv_bytes = rows.kv_bytes;
        rows.write(&e.tree, batch_used.then_some(batch), commit_row)?;
        self.kv_bytes.fetch_add(kv_bytes, Ordering::Relaxed);
        self.current.store(st.current, Ordering::Release);
        tracing::Span::current().record("rev", st.current);
        Ok(outcomes)
    }

    /// etcd's compaction: `rev <= compacted` is compacted, `rev > current` is future.
    fn compact(&self, rev: i64, applied: &[u8]) -> Result<ApplyOutcome, StorageError> {
        let (cur, compacted) = {
            let st = self.read_state()?;
            (st.current, st.compacted)
        };
        let e = self.engine()?;
        // etcd starts with compactMainRev = -1: a first compaction at revision 0 succeeds
        // (and compacts nothing); once any compaction happened, 0 is "compacted".
        let first_at_zero =
            rev == 0 && compacted == 0 && !e.tree.contains_key(backend::META_COMPACTED)?;
        let error = if rev <= compacted && !first_at_zero {
            Some(ApplyError::Compacted)
        } else if rev > cur {
            Some(ApplyError::FutureRevision)
        } else {
            None
        };
        let mut batch = sled::Batch::default();
        batch.insert(
            backend::META_COMMIT,
            backend::commit_row(cur, Some(applied)),
        );
        if error.is_none() {
            batch.insert(backend::META_COMPACTED, &i64_bytes(rev)[..]);
        }
        e.tree.apply_batch(batch)?;
        if let Some(e) = error {
            return Ok(outcome(None, Some(e), Vec::new(), cur));
        }
        {
            let mut st = self.write_state()?;
            st.compacted = rev;
            self.compacted.store(rev, Ordering::Release);
        }
        // Reads below `rev` are refused from here on; the history they would need goes in
        // the background, as etcd's scheduled compaction does.
        let queued = match self.compactor.lock() {
            Ok(tx) => tx.as_ref().is_some_and(|tx| tx.send(rev).is_ok()),
            Err(_) => false,
        };
        if !queued {
            // Under the apply lock already (taken by `apply`).
            self.remove_compacted_steps(rev, false)?;
        }
        Ok(outcome(
            Some(Response::Compaction(CompactionResponse::default())),
            None,
            Vec::new(),
            cur,
        ))
    }

    /// Drops the history a compaction at `rev` made unreachable: the key index a step at a
    /// time (bounded by the compaction batch limit, see
    /// [`Self::set_compaction_batch_limit`]) under the apply lock, with a pause after each
    /// step; the rows the steps drop are gathered (up to [`compact::COMPACT_PENDING_ROWS`])
    /// and deleted without the apply lock, in revision order, as many rows at a time as a
    /// step visits keys, with a pause after each batch. A batch's deletion holds the row
    /// removal lock, so a snapshot view, a defragment or an install never starts in the
    /// middle of one.
    pub fn remove_compacted(&self, rev: i64) -> Result<CompactedHistory, StorageError> {
        self.remove_compacted_steps(rev, true)
    }

    /// [`Self::remove_compacted`]; `background` false when the caller holds the apply lock
    /// (then the steps run back to back, and no view can begin meanwhile).
    fn remove_compacted_steps(
        &self,
        rev: i64,
        background: bool,
    ) -> Result<CompactedHistory, StorageError> {
        let limit = self.compaction_batch_limit.load(Ordering::Relaxed);
        let mut from: Option<Vec<u8>> = None;
        let mut pending: Vec<(Revision, bool)> = Vec::new();
        let mut rows = 0;
        let mut steps = 0;
        let started = std::time::Instant::now();
        let mut last_progress = started;
        tracing::info!(rev, batch_limit = limit, "removing compacted history");
        // The compaction's record on disk first (applies write no more than sled's buffer):
        // a crash during the removal then finds it, and open finishes the removal, instead of
        // the Raft log applying the compaction again.
        self.engine()?.tree.flush()?;
        loop {
            steps += 1;
            let next = {
                let _apply = if background {
                    Some(self.lock_apply()?)
                } else {
                    None
                };
                let mut st = self.write_state()?;
                let (removed, next) =
                    compact::compact_index_step(&mut st, rev, from.as_deref(), limit);
                pending.extend(removed);
                next
            };
            if next.is_none() || pending.len() >= compact::COMPACT_PENDING_ROWS {
                rows += pending.len();
                if background {
                    self.delete_behind_requests(&mut pending, limit)?;
                } else {
                    self.delete_compacted_rows(&mut pending, limit, false)?;
                }
            }
            match next {
                Some(key) => from = Some(key),
                None => break,
            }
            if last_progress.elapsed() >= compact::COMPACT_PROGRESS_EVERY {
                last_progress = std::time::Instant::now();
                tracing::info!(rev, rows, steps, "removing compacted history: in progress");
            }
            if background {
                std::thread::sleep(compact::COMPACT_STEP_PAUSE);
            }
        }
        tracing::info!(
            rev,
            rows,
            steps,
            took_ms = started.elapsed().as_millis() as u64,
            "compacted history removed"
        );
        self.mark_removed(rev);
        Ok(CompactedHistory { rows, steps })
    }

    /// [`Self::delete_compacted_rows`] in the background, on a thread of its own that runs
    /// behind the requests (`crate::background`): the deletion is seconds of CPU at a million
    /// keys, and holds no lock a request waits for (only the removal lock, which snapshot
    /// views and installs take). The index steps stay on the compactor's thread, at normal
    /// priority: they hold the apply lock.
    fn delete_behind_requests(
        &self,
        pending: &mut Vec<(Revision, bool)>,
        batch: usize,
    ) -> Result<(), StorageError> {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("compaction-delete".into())
                .spawn_scoped(s, || {
                    crate::background::lower_this_thread();
                    self.delete_compacted_rows(pending, batch, true)
                })
                .map_err(|e| StorageError::Corrupt(format!("compaction: {e}")))?
                .join()
                .unwrap_or_else(|_| {
                    Err(StorageError::Corrupt(
                        "compaction: the deleting thread panicked".into(),
                    ))
                })
        })
    }

    /// Deletes the gathered rows of a compaction in revision order, `batch` rows at a time
    /// (see [`Self::remove_compacted_steps`]), and empties `pending`.
    fn delete_compacted_rows(
        &self,
        pending: &mut Vec<(Revision, bool)>,
        batch: usize,
        background: bool,
    ) -> Result<(), StorageError> {
        compact::removal_order(pending);
        let mut batches = pending.chunks_mut(batch.max(1)).peekable();
        while let Some(rows) = batches.next() {
            let started = std::time::Instant::now();
            {
                // A snapshot being read needs every row it may reach: deletion waits for it
                // (then holds the removal lock, so that no other view begins meanwhile). An
                // install, which resets the count, takes the removal lock as well: the rows
                // and their count go together.
                let _removal = if background {
                    Some(self.lock_removal_without_readers()?)
                } else {
                    self.wait_snapshot_readers()?;
                    None
                };
                let bytes = compact::delete_rows(&self.engine()?.tree, rows)?;
                self.uncount_kv_bytes(bytes);
            }
            if background && batches.peek().is_some() {
                std::thread::sleep(compact::delete_pause(started.elapsed()));
            }
        }
        pending.clear();
        Ok(())
    }

    /// Takes `bytes` of deleted kv rows off the count of bytes in use (never below zero: an
    /// install may have reset it).
    fn uncount_kv_bytes(&self, bytes: u64) {
        let _ = self
            .kv_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// Records that the history of compactions through `rev` is gone.
    fn mark_removed(&self, rev: i64) {
        self.removed.send_if_modified(|r| {
            let newer = rev > r.through;
            if newer {
                r.through = rev;
                r.failed = None;
            }
            newer
        });
    }

    /// Records that removing the history of a compaction at `rev` failed: whoever waits for
    /// it is told (the rows stay until a later compaction or the next start removes them).
    fn mark_removal_failed(&self, rev: i64, error: &StorageError) {
        self.removed.send_modify(|r| {
            r.failed = Some((rev, error.to_string()));
        });
    }

    /// Resolves once the history a compaction at `rev` dropped is gone from the database, or
    /// with the error that stopped its removal.
    pub async fn removed_compacted(&self, rev: i64) -> Result<(), String> {
        let mut removed = self.removed.subscribe();
        // The sender lives as long as the store, which the caller borrows.
        let r = removed
            .wait_for(|r| r.through >= rev || r.failed.as_ref().is_some_and(|(f, _)| *f >= rev))
            .await
            .map_err(|_| "the store is closed".to_string())?;
        match &r.failed {
            Some((_, e)) if r.through < rev => Err(format!("removing compacted history: {e}")),
            _ => Ok(()),
        }
    }

    /// Starts the thread that removes compacted history in the background
    /// ([`Self::remove_compacted`]) for every compaction applied from now on. The thread
    /// ends when the store is dropped.
    pub fn spawn_compactor(store: &Arc<MvccStore>) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel::<i64>();
        let weak = Arc::downgrade(store);
        std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || {
                while let Ok(mut rev) = rx.recv() {
                    // A later compaction covers every earlier one still queued.
                    while let Ok(later) = rx.try_recv() {
                        rev = rev.max(later);
                    }
                    let Some(store) = weak.upgrade() else { return };
                    if let Err(e) = store.remove_compacted(rev) {
                        // The rows stay; the next start removes them (open compacts again).
                        tracing::error!(rev, error = %e, "removing compacted history failed");
                        store.mark_removal_failed(rev, &e);
                    }
                }
            })?;
        if let Ok(mut slot) = store.compactor.lock() {
            *slot = Some(tx);
        }
        Ok(())
    }

    /// Records only the `applied` blob (blank and membership entries).
    pub fn set_applied(&self, applied: &[u8]) -> Result<(), StorageError> {
        let _apply = self.lock_apply()?;
        self.record_applied(applied)
    }

    /// Writes the commit record with an unchanged revision (the caller holds the apply lock,
    /// so the revision cannot move meanwhile).
    fn record_applied(&self, applied: &[u8]) -> Result<(), StorageError> {
        let row = backend::commit_row(self.current_revision(), Some(applied));
        self.engine()?.tree.insert(backend::META_COMMIT, row)?;
        Ok(())
    }

    /// The last `applied` blob stored, if any.
    pub fn applied(&self) -> Result<Option<Vec<u8>>, StorageError> {
        match self.engine()?.tree.get(backend::META_COMMIT)? {
            Some(v) => Ok(backend::parse_commit_row(&v)?.1),
            None => Ok(None),
        }
    }

    /// Makes everything written so far durable (applies do not fsync on their own).
    pub fn flush(&self) -> Result<(), StorageError> {
        let e = self.engine()?;
        e.db.flush()?;
        // The raft layer fsyncs the shared database's file; the store's own is synced here.
        if let Some(dir) = &e.own_dir {
            defrag::sync_db_files(dir)?;
        }
        Ok(())
    }

    /// The bytes the store's rows take (keys and values): what the database would shrink
    /// to, less sled's own overhead (etcd's db size in use). The kv rows, nearly all of them,
    /// are counted as they are written and deleted; the other rows (leases, auth, alarms,
    /// meta) are read.
    pub fn size_in_use(&self) -> Result<u64, StorageError> {
        let e = self.engine()?;
        let kv = self.kv_bytes.load(Ordering::Relaxed);
        let mut other = 0u64;
        let below = e.tree.range(..[revision::KV_PREFIX].as_slice());
        let above = e.tree.range([revision::KV_PREFIX + 1].as_slice()..);
        for row in below.chain(above) {
            let (k, v) = row?;
            other += (k.len() + v.len()) as u64;
        }
        Ok(kv.saturating_add(other))
    }

    /// [`Self::size_in_use`] read from every row (what the counting must agree with).
    #[cfg(test)]
    pub(crate) fn size_in_use_read(&self) -> Result<u64, StorageError> {
        let e = self.engine()?;
        let mut bytes = 0u64;
        for row in e.tree.iter() {
            let (k, v) = row?;
            bytes += (k.len() + v.len()) as u64;
        }
        Ok(bytes)
    }

    /// The size on disk of the database holding the store (etcd's db size).
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.engine()?.db.size_on_disk()?)
    }

    /// etcd's Defragment: copies the store into a fresh database and switches to it, giving
    /// back the space of everything deleted or compacted (see [`defrag`]). Applies and reads
    /// wait meanwhile.
    pub fn defragment(&self) -> Result<Defragmented, StorageError> {
        let home = self.home.as_ref().ok_or_else(|| {
            StorageError::Corrupt("this store has no data dir to defragment in".into())
        })?;
        let _apply = self.lock_apply_without_readers()?;
        let old = self.engine()?;
        old.db.flush()?;
        let before_bytes = old.db.size_on_disk()?;
        defrag::copy(&home.path, &old.tree, backend::TREE_NAME)?;
        drop(old);
        let st = self.write_state()?;
        let after_bytes = self.switch_to_copy(home)?.db.size_on_disk()?;
        drop(st);
        tracing::info!(before_bytes, after_bytes, "defragmented");
        Ok(Defragmented {
            before_bytes,
            after_bytes,
        })
    }

    /// Moves the finished copy (see [`defrag`]) into place and makes it the store's database;
    /// the caller holds the apply lock and the state. Returns the new engine.
    fn switch_to_copy(&self, home: &Home) -> Result<Arc<Engine>, StorageError> {
        let aside = defrag::switch(&home.path)?;
        let own = home.path.join(defrag::MVCC_DIR);
        let db = defrag::open_db(&own)?;
        let tree = db.open_tree(backend::TREE_NAME)?;
        let new = Arc::new(Engine {
            db,
            tree,
            own_dir: Some(own),
        });
        let old = std::mem::replace(
            &mut *self.engine.write().map_err(|_| StorageError::Poisoned)?,
            new.clone(),
        );
        // A range that planned before the switch may still load rows from the old database
        // through its `Arc`: its files stay open until the last such read drops it.
        let legacy = old.own_dir.is_none();
        drop(old);
        if let Some(dir) = aside {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove the old database");
            }
        }
        if legacy {
            // The rows now live in their own database; the shared one's tree goes.
            home.shared.drop_tree(backend::TREE_NAME)?;
        }
        Ok(new)
    }

    /// Calls `f` with every row of the store in key order (an install marker excepted)
    /// while holding the apply lock: no write lands meanwhile, so the rows are one
    /// consistent state, the `applied` blob among them. Maintenance.Snapshot writes them
    /// out as etcd's bbolt file (see [`snapshot_file`]).
    pub fn with_rows<T, E: From<StorageError>>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = Result<Row, StorageError>>) -> Result<T, E>,
    ) -> Result<T, E> {
        let _removal = self.lock_row_removal()?;
        let _apply = self.lock_apply()?;
        let tree = self.engine()?.tree.clone();
        let mut rows = tree
            .iter()
            .map(|r| r.map_err(StorageError::from))
            .filter(|r| !matches!(r, Ok((k, _)) if k.as_ref() == backend::META_INSTALLING));
        f(&mut rows)
    }

    /// The data dir of a store opened with [`MvccStore::open_dir`] (where scratch files such
    /// as a snapshot being sent belong).
    pub fn data_dir(&self) -> Option<&Path> {
        self.home.as_ref().map(|h| h.path.as_path())
    }

    /// Replaces the whole state with `rows` (key order, as [`MvccStore::with_rows`] gives
    /// them or as [`snapshot_file::read_etcd`] converts an etcd snapshot). The rows are fully
    /// validated before anything is touched; while the tree is rewritten a marker row makes
    /// a crash visible to the next open().
    pub fn install_rows(&self, rows: Vec<Row>) -> Result<(), StorageError> {
        self.install_rows_from(|| Ok(rows.iter().cloned().map(Ok)))
    }

    /// History for watch catch-up: the events of revisions `from_rev..=to_rev`, grouped by
    /// revision, at most `max_revs` revisions. Errors with `Compacted` when `from_rev` is
    /// below the compaction. As in etcd, history from the compaction revision itself is
    /// served, although a delete at exactly that revision is gone with its tombstone.
    pub fn events(
        &self,
        from_rev: i64,
        to_rev: i64,
        max_revs: usize,
    ) -> Result<Vec<(i64, Vec<Event>)>, StorageError> {
        let st = self.read_state()?;
        if st.compacted > 0 && from_rev < st.compacted {
            return Err(StorageError::Compacted);
        }
        let e = self.engine()?;
        let view = View::committed(&st, &e.tree);
        events::read(&view, from_rev.max(1), to_rev.min(st.current), max_revs)
    }

    /// etcd's HashKV at `rev` (0: current): see [`hash`]. Holds off applies while it reads,
    /// so the hash describes one revision.
    pub fn hash_kv(&self, rev: i64) -> Result<KvHash, StorageError> {
        let st = self.read_state()?;
        hash::hash_kv(&st, &self.engine()?.tree, rev)
    }

    /// etcd's Hash: every row of the store, and the current revision it describes.
    pub fn hash(&self) -> Result<(u32, i64), StorageError> {
        let st = self.read_state()?;
        Ok((hash::hash_all(&st, &self.engine()?.tree)?, st.current))
    }

    /// The active alarms, as (member id, alarm type), ascending.
    pub fn alarms(&self) -> Result<Vec<(u64, i32)>, StorageError> {
        Ok(self.read_state()?.alarms.iter().copied().collect())
    }

    /// Whether a lease exists (Put with an unknown lease fails before proposing).
    pub fn lease_exists(&self, id: i64) -> bool {
        self.read_state()
            .map(|st| st.leases.contains_key(&id))
            .unwrap_or(false)
    }

    /// Every lease id, ascending (LeaseLeases).
    pub fn lease_ids(&self) -> Result<Vec<i64>, StorageError> {
        Ok(self.read_state()?.leases.keys().copied().collect())
    }

    /// Every lease with its granted TTL in seconds, ascending by id (the leader's expiry
    /// scan: no attached keys are copied).
    pub fn lease_ttls(&self) -> Result<Vec<(i64, i64)>, StorageError> {
        Ok(self
            .read_state()?
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl_secs))
            .collect())
    }

    /// Every lease's checkpointed remaining TTL in seconds, for the leases that have one
    /// (a new leader starts their clocks from it).
    pub fn lease_checkpoints(&self) -> Result<Vec<(i64, i64)>, StorageError> {
        Ok(self
            .read_state()?
            .leases
            .iter()
            .filter(|(_, l)| l.remaining_ttl_secs > 0)
            .map(|(id, l)| (*id, l.remaining_ttl_secs))
            .collect())
    }

    /// A lease's checkpointed remaining TTL in seconds; 0 when it has none or is unknown.
    pub fn lease_checkpoint(&self, id: i64) -> Result<i64, StorageError> {
        Ok(self
            .read_state()?
            .leases
            .get(&id)
            .map_or(0, |l| l.remaining_ttl_secs))
    }

    /// A lease's granted TTL in seconds, None if unknown (keep-alives).
    pub fn lease_ttl(&self, id: i64) -> Result<Option<i64>, StorageError> {
        Ok(self.read_state()?.leases.get(&id).map(|l| l.ttl_secs))
    }

    /// A lease's granted TTL and attached keys (LeaseTimeToLive), None if unknown.
    pub fn lease_info(&self, id: i64) -> Result<Option<LeaseInfo>, StorageError> {
        Ok(self.read_state()?.leases.get(&id).map(|l| LeaseInfo {
            id,
            granted_ttl_secs: l.ttl_secs,
            keys: l.keys.iter().cloned().collect(),
        }))
    }

    /// The tree holding the rows (tests look at the rows directly).
    #[cfg(test)]
    pub(crate) fn tree(&self) -> sled::Tree {
        match self.engine.read() {
            Ok(e) => e.tree.clone(),
            Err(p) => p.into_inner().tree.clone(),
        }
    }

    fn engine(&self) -> Result<Arc<Engine>, StorageError> {
        Ok(self
            .engine
            .read()
            .map_err(|_| StorageError::Poisoned)?
            .clone())
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, State>, StorageError> {
        self.state.read().map_err(|_| StorageError::Poisoned)
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>, StorageError> {
        self.state.write().map_err(|_| StorageError::Poisoned)
    }

    fn lock_apply(&self) -> Result<MutexGuard<'_, ()>, StorageError> {
        self.apply_lock.lock().map_err(|_| StorageError::Poisoned)
    }

    fn lock_row_removal(&self) -> Result<MutexGuard<'_, ()>, StorageError> {
        self.row_removal.lock().map_err(|_| StorageError::Poisoned)
    }
}

/// One write of a group: the request, and the bytes a derived lease id is seeded with
/// (they must be the same on every member: the write's place in the log).
pub struct GroupWrite<'a> {
    /// The write.
    pub request: &'a InternalRequest,
    /// Seeds the id of a LeaseGrant with id 0.
    pub lease_seed: &'a [u8],
}

/// Builds an outcome at `revision`, filling top-level response headers with it.
fn outcome(
    response: Option<Response>,
    error: Option<ApplyError>,
    events: Vec<Event>,
    revision: i64,
) -> ApplyOutcome {
    let header = Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    });
    let response = response.map(|mut r| {
        match &mut r {
            Response::Put(x) => x.header = header,
            Response::DeleteRange(x) => x.header = header,
            Response::Txn(x) => x.header = header,
            Response::Compaction(x) => x.header = header,
            Response::LeaseGrant(x) => x.header = header,
            Response::LeaseRevoke(x) => x.header = header,
            Response::Alarm(x) => x.header = header,
            // Each auth response carries its own header, filled by the server.
            Response::Auth(_) => {}
        }
        r
    });
    ApplyOutcome {
        response: InternalResponse {
            revision,
            error: error.map_or(ApplyError::ApplyOk as i32, |e| e as i32),
            response,
            // Filled by the state machine, which knows the entry.
            log_index: 0,
        },
        revision,
        events,
    }
}

/// Removes the kv rows above the recorded current revision: rows of a write group whose
/// commit record never reached the disk. A group of kv writes is written row by row with its
/// commit record last (see [`GroupRows::write`]), and sled recovers a prefix of what was
/// written, so a crash can leave some of a group's rows without its record; the Raft log
/// applies the group again after the restart.
fn drop_unfinished_group(tree: &sled::Tree) -> Result<(), StorageError> {
    let Some(commit) = tree.get(backend::META_COMMIT)? else {
        return Ok(());
    };
    let (current, _) = backend::parse_commit_row(&commit)?;
    let start = revision::main_lower_bound(current.saturating_add(1));
    let end = [revision::KV_PREFIX + 1];
    let mut dropped = 0usize;
    for row in tree.range(start..end.to_vec()) {
        let (k, _) = row?;
        tree.remove(k)?;
        dropped += 1;
    }
    if dropped > 0 {
        tracing::warn!(
            rows = dropped,
            current,
            "dropped the rows of a write group that was not finished before the stop; the log applies it again"
        );
        tree.flush()?;
    }
    Ok(())
}

/// A lock taken without waiting: `None` when another holder has it.
fn acquired<G>(attempt: std::sync::TryLockResult<G>) -> Result<Option<G>, StorageError> {
    match attempt {
        Ok(guard) => Ok(Some(guard)),
        Err(std::sync::TryLockError::WouldBlock) => Ok(None),
        Err(std::sync::TryLockError::Poisoned(_)) => Err(StorageError::Poisoned),
    }
}

/// The rows of a write group, in order, written at the end of the group.
struct GroupRows {
    rows: Vec<(Vec<u8>, Option<sled::IVec>)>,
    /// Whether every row is a kv row (puts and tombstones: inserts only).
    kv_only: bool,
    /// The bytes of the kv rows set (keys and values).
    kv_bytes: u64,
}

impl GroupRows {
    fn new() -> Self {
        GroupRows {
            rows: Vec::new(),
            kv_only: true,
            kv_bytes: 0,
        }
    }

    /// Adds a write's rows, keeping the rows it sets in `overlay` for the group's later reads.
    fn add(&mut self, ops: backend::RowOps, overlay: &mut backend::Overlay) {
        for (k, v) in ops.into_inner() {
            let kv_row = k.first() == Some(&revision::KV_PREFIX);
            self.kv_only &= v.is_some() && kv_row;
            match &v {
                Some(v) => {
                    if kv_row {
                        self.kv_bytes += (k.len() + v.len()) as u64;
                    }
                    overlay.insert(k.clone(), v.clone());
                }
                None => {
                    overlay.remove(&k);
                }
            }
            self.rows.push((k, v));
        }
    }

    /// Writes the rows and then `commit` (the commit record). A group of kv rows only is
    /// written insert by insert: sled then writes its log buffer when it fills (or on a
    /// flush), where an atomic batch makes it write and `sync_file_range` the buffer at once,
    /// twice per batch, on every apply. Atomicity is not lost: sled recovers a prefix of its
    /// log, so the commit record, written last, is there only if every row before it is, and
    /// rows without their record are dropped at open ([`drop_unfinished_group`]). Groups
    /// with other rows (leases, which a replay could not tell apart, and `batch`: the alarm
    /// and auth rows, if any) go in one batch.
    fn write(
        self,
        tree: &sled::Tree,
        batch: Option<sled::Batch>,
        commit: Vec<u8>,
    ) -> Result<(), StorageError> {
        if self.kv_only && batch.is_none() {
            for (k, v) in self.rows {
                if let Some(v) = v {
                    tree.insert(k, v)?;
                }
            }
            tree.insert(backend::META_COMMIT, commit)?;
            return Ok(());
        }
        let mut batch = batch.unwrap_or_default();
        for (k, v) in self.rows {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(backend::META_COMMIT, commit);
        tree.apply_batch(batch)?;
        Ok(())
    }
}

/// Adds a finished txn's rows to the group (and overlay), then updates the index and leases
/// and moves the state's revision (published once the group is written).
fn commit(
    st: &mut State,
    fin: Finished,
    group: &mut GroupRows,
    overlay: &mut backend::Overlay,
) -> Vec<Event> {
    let Finished {
        batch: rows,
        rev,
        events,
        lease_ops,
    } = fin;
    group.add(rows, overlay);
    for (sub, ev) in events.iter().enumerate() {
        let Some(kv) = &ev.kv else { continue };
        let r = Revision::new(rev, i64::try_from(sub).unwrap_or(i64::MAX));
        if ev.r#type == EventType::Delete as i32 {
            if let Some(ki) = st.index.get_mut(&kv.key) {
                ki.tombstone(r);
            }
        } else if let Some(ki) = st.index.get_mut(&kv.key) {
            ki.put(r);
        } else {
            let mut ki = key_index::KeyIndex::default();
            ki.put(r);
            st.index.insert(kv.key.clone(), ki);
        }
    }
    for op in lease_ops {
        match op {
            LeaseOp::Attach(id, key) => {
                if let Some(l) = st.leases.get_mut(&id) {
                    l.keys.insert(key.clone());
                    st.key_leases.insert(key, id);
                }
            }
            LeaseOp::Detach(id, key) => {
                if let Some(l) = st.leases.get_mut(&id) {
                    l.keys.remove(&key);
                }
                if st.key_leases.get(&key) == Some(&id) {
                    st.key_leases.remove(&key);
                }
            }
            LeaseOp::Grant(id, ttl_secs) => {
                st.leases.insert(
                    id,
                    lease::Lease {
                        ttl_secs,
                        ..lease::Lease::default()
                    },
                );
            }
            LeaseOp::Revoke(id) => {
                // The revoke deleted (and so detached) every key first.
                if let Some(l) = st.leases.remove(&id) {
                    for key in l.keys {
                        if st.key_leases.get(&key) == Some(&id) {
                            st.key_leases.remove(&key);
                        }
                    }
                }
            }
        }
    }
    st.current = rev;
    events
}

/// LeaseGrant: id 0 picks a free id derived from the applied blob and revision (see
/// [`lease::derive_lease_id`]); an existing id or a TTL above etcd's maximum is refused.
fn grant(
    st: &State,
    w: &mut WriteTxn<'_>,
    id: i64,
    ttl_secs: i64,
    applied: &[u8],
) -> Result<Response, TxnError> {
    if ttl_secs > MAX_LEASE_TTL_SECS {
        return Err(ApplyError::LeaseTtlTooLarge.into());
    }
    let id = if id == 0 {
        (0..LEASE_ID_ATTEMPTS)
            .map(|attempt| lease::derive_lease_id(applied, st.current, attempt))
            .find(|id| !st.leases.contains_key(id))
            .ok_or(ApplyError::LeaseExists)?
    } else {
        id
    };
    if st.leases.contains_key(&id) {
        return Err(ApplyError::LeaseExists.into());
    }
    w.grant(id, ttl_secs);
    Ok(Response::LeaseGrant(LeaseGrantResponse {
        header: None,
        id,
        ttl: ttl_secs,
        error: String::new(),
    }))
}

/// Removes every row but the install marker, in batches.
fn clear_keeping_marker(tree: &sled::Tree) -> Result<(), StorageError> {
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in tree.iter().keys() {
            let key = key?;
            if key.as_ref() == backend::META_INSTALLING {
                continue;
            }
            batch.remove(key);
            n += 1;
            if n == INSTALL_BATCH_ROWS {
                break;
            }
        }
        if n == 0 {
            return Ok(());
        }
        tree.apply_batch(batch)?;
    }
}

/// Re-runs the recorded compaction over a freshly rebuilt index and deletes the rows it
/// drops (left behind by a crash during compaction, or carried by a snapshot). `kv_bytes`
/// are the bytes of the tree's kv rows; returns what is left of them.
fn finish_compaction(
    tree: &sled::Tree,
    state: &mut State,
    kv_bytes: u64,
) -> Result<u64, StorageError> {
    if state.compacted > 0 {
        let mut removed = compact::compact_index(state, state.compacted);
        if !removed.is_empty() {
            tracing::info!(rows = removed.len(), "finishing an interrupted compaction");
            let gone = compact::delete_rows(tree, &mut removed)?;
            return Ok(kv_bytes.saturating_sub(gone));
        }
    }
    Ok(kv_bytes)
}
