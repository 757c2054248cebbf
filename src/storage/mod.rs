//! The MVCC key-value store on sled, with etcd's semantics (revisions, generations,
//! tombstones, compaction, leases). It imports neither raft nor watch nor gRPC services:
//! it is handed protobuf messages and returns protobuf messages.
//!
//! CONTRACT (used by `raft::state_machine` and `server::kv`; the bodies are filled in by the
//! storage work):
//! - `MvccStore::open(&sled::Db)` opens or creates the store's trees and recovers its state.
//! - `apply(req, applied)` applies one write as ONE atomic sled batch that also stores the
//!   opaque `applied` blob (the raft layer's last-applied log id and membership), then
//!   publishes the new revision. Apply-time errors (lease not found, ...) are answered in
//!   `InternalResponse.error`; `Err` is reserved for fatal I/O.
//! - `range` reads at a revision; reads never see a half-applied write.
//! - `snapshot()` / `install_snapshot()` carry the whole MVCC state (history since the last
//!   compaction, leases, counters) plus the `applied` blob, consistently.

mod error;

pub use error::StorageError;

use crate::pb::etcdserverpb::{RangeRequest, RangeResponse};
use crate::pb::minietcdpb::{InternalRequest, InternalResponse};
use crate::pb::mvccpb::Event;

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

/// etcd's MVCC store, persisted in sled.
pub struct MvccStore {
    _db: sled::Db,
}

impl MvccStore {
    /// Opens (or creates) the store's trees inside `db` and recovers the revision counters
    /// and the key index.
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(MvccStore { _db: db.clone() })
    }

    /// The latest revision (1 on a fresh store, as in etcd).
    pub fn current_revision(&self) -> i64 {
        todo!("storage")
    }

    /// The revision of the last compaction (0 when never compacted).
    pub fn compact_revision(&self) -> i64 {
        todo!("storage")
    }

    /// A range read with every RangeRequest option; the header is left empty.
    pub fn range(&self, _req: &RangeRequest) -> Result<RangeResponse, StorageError> {
        todo!("storage")
    }

    /// Applies one write in one atomic sled batch together with `applied`.
    pub fn apply(
        &self,
        _req: &InternalRequest,
        _applied: &[u8],
    ) -> Result<ApplyOutcome, StorageError> {
        todo!("storage")
    }

    /// Records only the `applied` blob (blank and membership entries).
    pub fn set_applied(&self, _applied: &[u8]) -> Result<(), StorageError> {
        todo!("storage")
    }

    /// The last `applied` blob stored, if any.
    pub fn applied(&self) -> Result<Option<Vec<u8>>, StorageError> {
        todo!("storage")
    }

    /// The whole MVCC state, consistent with the `applied` blob it contains.
    pub fn snapshot(&self) -> Result<Vec<u8>, StorageError> {
        todo!("storage")
    }

    /// Replaces the whole state with a snapshot's.
    pub fn install_snapshot(&self, _data: &[u8]) -> Result<(), StorageError> {
        todo!("storage")
    }

    /// History for watch catch-up: the events of revisions `from_rev..=to_rev`, grouped by
    /// revision, at most `max_revs` revisions. Errors with `Compacted` below the compaction.
    pub fn events(
        &self,
        _from_rev: i64,
        _to_rev: i64,
        _max_revs: usize,
    ) -> Result<Vec<(i64, Vec<Event>)>, StorageError> {
        todo!("storage")
    }

    /// Whether a lease exists (Put with an unknown lease fails before proposing).
    pub fn lease_exists(&self, _id: i64) -> bool {
        todo!("storage")
    }
}
