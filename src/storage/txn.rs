//! One write transaction: etcd's `storeTxnWrite` plus the applier's Put / DeleteRange / Txn.
//!
//! All changes of one apply share ONE main revision (`base + 1`) and take sub revisions in
//! order. Nothing touches the shared state while the txn runs: changes accumulate in a
//! sled batch, a [`Pending`] overlay (so the txn's later reads see its earlier writes, as in
//! etcd) and a list of lease operations; the caller commits them all at once, or drops the
//! txn on an apply error so that a failed request leaves no trace.

use prost::Message;

use super::backend::{Overlay, RowOps, State};
use super::error::StorageError;
use super::range::{Pending, View};
use super::revision::{row_key, Revision};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeResponse,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::minietcdpb::ApplyError;
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};

/// Why a write failed: an etcd error answered to the client, or a fatal storage error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TxnError {
    /// An apply-time error (the request is refused, nothing is written).
    #[error("apply error {0:?}")]
    Apply(ApplyError),
    /// Fatal.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<ApplyError> for TxnError {
    fn from(e: ApplyError) -> Self {
        TxnError::Apply(e)
    }
}

/// A change to the lease table, applied to the in-memory state after the batch is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaseOp {
    /// A put attached the key to the lease.
    Attach(i64, Vec<u8>),
    /// A put with another lease, or a delete, detached the key.
    Detach(i64, Vec<u8>),
    /// A new lease with its TTL in seconds.
    Grant(i64, i64),
    /// The lease is gone (its keys were deleted in the same txn).
    Revoke(i64),
}

/// A write transaction in progress.
pub(crate) struct WriteTxn<'a> {
    /// The state before the txn (read-locked by the caller; applies are serialised).
    view_state: &'a State,
    /// Where the rows of earlier revisions are read from.
    tree: &'a sled::Tree,
    /// Rows of earlier writes of the same group, not yet in the tree.
    overlay: Option<&'a Overlay>,
    /// The revision before this txn.
    base: i64,
    /// The txn's own changes, visible to its later reads.
    pending: Pending,
    /// The rows to write.
    batch: RowOps,
    /// The lease table changes to make after the batch is written.
    lease_ops: Vec<LeaseOp>,
    /// Whether events carry prev_kv (see [`super::PrevKvDemand`]); when not, a put reads its
    /// key's old row only if the request needs its value.
    fill_prev: bool,
}

/// What a put needs of its key's current version besides the value.
#[derive(Debug, Clone, Copy)]
struct Head {
    created: i64,
    version: i64,
    lease: i64,
}

impl Head {
    fn of(kv: &KeyValue) -> Self {
        Head {
            created: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// What a finished txn hands to the commit step.
pub(crate) struct Finished {
    /// Every row of the txn (kv rows, lease rows); meta is added at commit.
    pub batch: RowOps,
    /// The revision after the txn (`base` when nothing changed).
    pub rev: i64,
    /// The changes in sub-revision order; they also drive the index update.
    pub events: Vec<Event>,
    /// Lease table changes, in order.
    pub lease_ops: Vec<LeaseOp>,
}

impl<'a> WriteTxn<'a> {
    /// Starts a txn on top of `state` (read under the caller's lock).
    pub fn new(state: &'a State, tree: &'a sled::Tree, overlay: Option<&'a Overlay>) -> Self {
        WriteTxn {
            view_state: state,
            tree,
            overlay,
            base: state.current,
            pending: Pending {
                rev: state.current + 1,
                ..Pending::default()
            },
            batch: RowOps::default(),
            lease_ops: Vec::new(),
            fill_prev: true,
        }
    }

    /// Whether the events carry prev_kv (on by default).
    pub fn fill_prev(mut self, fill: bool) -> Self {
        self.fill_prev = fill;
        self
    }

    /// The revision reads inside the txn see (etcd: `beginRev + 1` once something changed).
    pub fn rev(&self) -> i64 {
        if self.pending.events.is_empty() {
            self.base
        } else {
            self.base + 1
        }
    }

    fn view(&self) -> View<'_> {
        View {
            state: self.view_state,
            tree: self.tree,
            overlay: self.overlay,
            pending: Some(&self.pending),
        }
    }

    fn base_view(&self) -> View<'_> {
        View {
            state: self.view_state,
            tree: self.tree,
            overlay: self.overlay,
            pending: None,
        }
    }

    /// The key as this txn sees it now.
    fn current(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        self.view().get(key, self.pending.rev)
    }

    /// The key's current creation, version and lease from the index, without reading its row
    /// (the caller has checked that this txn has not touched the key).
    fn committed_head(&self, key: &[u8]) -> Option<Head> {
        let at = self.view_state.index.get(key)?.get(self.base)?;
        Some(Head {
            created: at.created,
            version: at.version,
            lease: self.view_state.key_leases.get(key).copied().unwrap_or(0),
        })
    }

    /// The key as it was before this txn (what watchers get as prev_kv).
    fn before(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        self.base_view().get(key, self.base)
    }

    /// Whether a lease exists (granted before this txn, not revoked by it).
    fn lease_exists(&self, id: i64) -> bool {
        self.view_state.leases.contains_key(&id) && !self.lease_ops.contains(&LeaseOp::Revoke(id))
    }

    fn next_rev(&self) -> Revision {
        let sub = i64::try_from(self.pending.events.len()).unwrap_or(i64::MAX);
        Revision::new(self.pending.rev, sub)
    }

    fn record(&mut self, key: Vec<u8>, event: Event) {
        let idx = self.pending.events.len();
        self.pending.events.push(event);
        self.pending.latest.insert(key, idx);
    }

    /// etcd's Put (applier + `storeTxnWrite.put`).
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, TxnError> {
        // etcd checks the requested lease before the key (Put outside a txn).
        if req.lease != 0 && !self.lease_exists(req.lease) {
            return Err(ApplyError::LeaseNotFound.into());
        }
        let touched = self.pending.latest.contains_key(&req.key);
        // The old row is read only when its value is needed: by the request, or as the
        // event's prev_kv. Otherwise the index and the lease map have all a put needs.
        let load_old =
            touched || req.prev_kv || req.ignore_value || req.ignore_lease || self.fill_prev;
        let (head, old) = if load_old {
            let old = self.current(&req.key)?;
            (old.as_ref().map(Head::of), old)
        } else {
            (self.committed_head(&req.key), None)
        };
        if (req.ignore_value || req.ignore_lease) && head.is_none() {
            return Err(ApplyError::KeyNotFound.into());
        }
        let lease = match (&head, req.ignore_lease) {
            (Some(h), true) => h.lease,
            _ => req.lease,
        };
        if lease != 0 && !self.lease_exists(lease) {
            return Err(ApplyError::LeaseNotFound.into());
        }
        let rev = self.next_rev();
        let value = match (&old, req.ignore_value) {
            (Some(o), true) => o.value.clone(),
            _ => req.value.clone(),
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: head.map_or(rev.main, |h| h.created),
            mod_revision: rev.main,
            version: head.map_or(1, |h| h.version + 1),
            value,
            lease,
        };
        self.batch.insert(row_key(rev, false), kv.encode_to_vec());
        let old_lease = head.map_or(0, |h| h.lease);
        if old_lease != 0 {
            self.lease_ops
                .push(LeaseOp::Detach(old_lease, req.key.clone()));
        }
        if lease != 0 {
            self.lease_ops.push(LeaseOp::Attach(lease, req.key.clone()));
        }
        // A create event carries no prev_kv (etcd's watch skips it); otherwise prev_kv is
        // the key before this txn, which is `old` unless the txn already touched the key.
        // Without fill_prev, `old` is loaded only when the request asked for it.
        let (prev, prev_kv) = if kv.create_revision == kv.mod_revision {
            (None, old.filter(|_| req.prev_kv))
        } else if touched {
            let prev = if self.fill_prev {
                self.before(&req.key)?
            } else {
                None
            };
            (prev, old.filter(|_| req.prev_kv))
        } else if req.prev_kv {
            (old.clone(), old)
        } else {
            (old, None)
        };
        let resp = PutResponse {
            header: Some(ResponseHeader {
                revision: rev.main,
                ..ResponseHeader::default()
            }),
            prev_kv,
        };
        self.record(
            req.key.clone(),
            Event {
                r#type: EventType::Put as i32,
                kv: Some(kv),
                prev_kv: prev,
            },
        );
        Ok(resp)
    }

    /// Deletes one live key whose current value is `old`.
    fn delete_key(&mut self, old: &KeyValue) -> Result<(), StorageError> {
        let rev = self.next_rev();
        let tomb = KeyValue {
            key: old.key.clone(),
            mod_revision: rev.main,
            ..KeyValue::default()
        };
        self.batch.insert(row_key(rev, true), tomb.encode_to_vec());
        if old.lease != 0 {
            self.lease_ops
                .push(LeaseOp::Detach(old.lease, old.key.clone()));
        }
        // Before this txn the key was `old` unless the txn already touched it.
        let prev = if self.pending.latest.contains_key(&old.key) {
            self.before(&old.key)?
        } else {
            Some(old.clone())
        };
        self.record(
            old.key.clone(),
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: prev,
            },
        );
        Ok(())
    }

    /// etcd's DeleteRange: one sub revision per deleted key, in key order.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, TxnError> {
        let found = self
            .view()
            .walk(&req.key, &req.range_end, self.pending.rev, 0, false)?;
        for kv in &found.kvs {
            self.delete_key(kv)?;
        }
        Ok(DeleteRangeResponse {
            header: Some(ResponseHeader {
                revision: self.rev(),
                ..ResponseHeader::default()
            }),
            deleted: found.count,
            prev_kvs: if req.prev_kv { found.kvs } else { Vec::new() },
        })
    }

    /// Deletes the given keys (a lease revoke), each one that is live.
    pub fn delete_keys(&mut self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        for key in keys {
            if let Some(kv) = self.current(key)? {
                self.delete_key(&kv)?;
            }
        }
        Ok(())
    }

    /// Records a lease grant (the caller checked it is new).
    pub fn grant(&mut self, id: i64, ttl_secs: i64) {
        let key = super::lease::lease_key(id);
        self.batch.insert(key, ttl_secs.to_be_bytes());
        self.lease_ops.push(LeaseOp::Grant(id, ttl_secs));
    }

    /// Revokes a lease: its keys are deleted (sorted, one revision), then it is removed.
    pub fn revoke(&mut self, id: i64) -> Result<(), TxnError> {
        let Some(lease) = self.view_state.leases.get(&id) else {
            return Err(ApplyError::LeaseNotFound.into());
        };
        let keys: Vec<Vec<u8>> = lease.keys.iter().cloned().collect();
        self.delete_keys(&keys)?;
        self.batch.remove(super::lease::lease_key(id));
        self.lease_ops.push(LeaseOp::Revoke(id));
        Ok(())
    }

    /// etcd's Txn: every compare (nested ones included) is evaluated against the state
    /// before the txn; the chosen requests are checked before anything is written; then the
    /// chosen branch runs.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, TxnError> {
        let mut path = Vec::new();
        self.compare_path(req, &mut path)?;
        self.check(req, &path)?;
        let mut pos = 0;
        let mut resp = self.exec(req, &path, &mut pos)?;
        resp.header = Some(ResponseHeader {
            revision: self.rev(),
            ..ResponseHeader::default()
        });
        Ok(resp)
    }

    /// etcd's `compareToPath`: the outcome of every txn on the chosen path, pre-order.
    fn compare_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), StorageError> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in branch(req, ok) {
            if let Some(Op::RequestTxn(t)) = &op.request {
                self.compare_path(t, path)?;
            }
        }
        Ok(())
    }

    /// etcd's `applyCompare`: every key of the range must satisfy the compare; a missing
    /// key compares as a zero KeyValue, except that a VALUE compare on it always fails.
    fn compare(&self, c: &Compare) -> Result<bool, StorageError> {
        let found = self
            .base_view()
            .walk(&c.key, &c.range_end, self.base, 0, false)?;
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        if found.kvs.is_empty() {
            if target == CompareTarget::Value {
                return Ok(false);
            }
            return Ok(compare_kv(c, target, &KeyValue::default()));
        }
        Ok(found.kvs.iter().all(|kv| compare_kv(c, target, kv)))
    }

    /// etcd's `checkRequests`: first every put of the chosen path (a missing lease, or with
    /// ignore_value/ignore_lease a missing key), then every range (an unreadable revision);
    /// any failure fails the whole txn before anything is written.
    fn check(&self, req: &TxnRequest, path: &[bool]) -> Result<(), TxnError> {
        self.check_ops(req, path, &mut 0, true)?;
        self.check_ops(req, path, &mut 0, false)
    }

    fn check_ops(
        &self,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
        puts: bool,
    ) -> Result<(), TxnError> {
        let ok = path.get(*pos).copied().unwrap_or(false);
        *pos += 1;
        for op in branch(req, ok) {
            match &op.request {
                Some(Op::RequestPut(p)) if puts => {
                    // etcd's checkRequestPut: the key first, then the lease (a plain Put
                    // checks them the other way round).
                    if (p.ignore_value || p.ignore_lease) && self.before(&p.key)?.is_none() {
                        return Err(ApplyError::KeyNotFound.into());
                    }
                    if p.lease != 0 && !self.lease_exists(p.lease) {
                        return Err(ApplyError::LeaseNotFound.into());
                    }
                }
                Some(Op::RequestRange(r)) if !puts && r.revision != 0 => {
                    // etcd: `rev > rv.Rev()` future, `rev < rv.FirstRev()` compacted (so a
                    // negative revision inside a txn is "compacted", unlike a plain Range).
                    if r.revision > self.base {
                        return Err(ApplyError::FutureRevision.into());
                    }
                    if r.revision < self.view_state.compacted {
                        return Err(ApplyError::Compacted.into());
                    }
                }
                Some(Op::RequestTxn(t)) => self.check_ops(t, path, pos, puts)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs the chosen branch. Inner responses carry their own header revision as etcd's
    /// do (put: the txn revision; range/delete: the revision seen so far); a nested txn's
    /// header is empty.
    fn exec(
        &mut self,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<TxnResponse, TxnError> {
        let ok = path.get(*pos).copied().unwrap_or(false);
        *pos += 1;
        let ops = branch(req, ok);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Op::RequestRange(r)) => OpResponse::ResponseRange(self.range(r)?),
                Some(Op::RequestPut(p)) => OpResponse::ResponsePut(self.put(p)?),
                Some(Op::RequestDeleteRange(d)) => {
                    OpResponse::ResponseDeleteRange(self.delete_range(d)?)
                }
                Some(Op::RequestTxn(t)) => {
                    let mut inner = self.exec(t, path, pos)?;
                    inner.header = Some(ResponseHeader::default());
                    OpResponse::ResponseTxn(inner)
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        })
    }

    /// A Range inside the txn: sees the txn's own writes.
    fn range(&self, r: &crate::pb::etcdserverpb::RangeRequest) -> Result<RangeResponse, TxnError> {
        let cur = self.rev();
        self.view()
            .range(r, cur, self.view_state.compacted)
            .map_err(|e| match e {
                StorageError::Compacted => TxnError::Apply(ApplyError::Compacted),
                StorageError::FutureRevision => TxnError::Apply(ApplyError::FutureRevision),
                other => TxnError::Storage(other),
            })
    }

    /// Ends the txn, handing its changes to the commit step.
    pub fn finish(self) -> Finished {
        Finished {
            batch: self.batch,
            rev: if self.pending.events.is_empty() {
                self.base
            } else {
                self.pending.rev
            },
            events: self.pending.events,
            lease_ops: self.lease_ops,
        }
    }
}

/// The requests of the branch a compare outcome selects.
fn branch(req: &TxnRequest, ok: bool) -> &[crate::pb::etcdserverpb::RequestOp] {
    if ok {
        &req.success
    } else {
        &req.failure
    }
}

/// etcd's `compareKV`. A target value of another kind than the target compares as zero.
fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let ord = match target {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        CompareTarget::Version => kv.version.cmp(&int_target(c, target)),
        CompareTarget::Create => kv.create_revision.cmp(&int_target(c, target)),
        CompareTarget::Mod => kv.mod_revision.cmp(&int_target(c, target)),
        CompareTarget::Lease => kv.lease.cmp(&int_target(c, target)),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

fn int_target(c: &Compare, target: CompareTarget) -> i64 {
    match (&c.target_union, target) {
        (Some(TargetUnion::Version(v)), CompareTarget::Version)
        | (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create)
        | (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod)
        | (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => *v,
        _ => 0,
    }
}
