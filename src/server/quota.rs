//! The space quota (`--quota-backend-bytes`), as etcd's `quotaKVServer` and
//! `quotaLeaseServer` enforce it: before a Put, Txn or LeaseGrant is proposed, the database
//! size plus the request's cost must stay below the quota; otherwise this member raises its
//! NOSPACE alarm through Raft and the request fails with "etcdserver: mvcc: database space
//! exceeded". Once the alarm is active every member refuses growing writes at apply time
//! (see `storage::alarm`) until `etcdctl alarm disarm` clears it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;

use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{AlarmRequest, AlarmType, LeaseGrantRequest, PutRequest, TxnRequest};
use crate::pb::minietcdpb::internal_request::Request as Write;

use super::{ApiError, ServerContext};
use crate::storage::MvccStore;

/// How stale the measured database size may be: sled sums its files on every call, so the
/// quota check of a busy member reuses one measurement for this long.
const SIZE_REFRESH: Duration = Duration::from_millis(100);
/// etcd's `kvOverhead`: what a put costs besides its encoded size.
const KV_OVERHEAD_BYTES: u64 = 256;
/// etcd's `leaseOverhead`.
const LEASE_OVERHEAD_BYTES: u64 = 64;

/// The member's database size and its quota.
pub struct SpaceQuota {
    /// The store whose database's size on disk is measured.
    store: Arc<MvccStore>,
    /// `None`: no quota (a negative `--quota-backend-bytes`).
    quota_bytes: Option<u64>,
    /// The last measurement and when it was taken.
    cached: Mutex<Option<(Instant, u64)>>,
}

impl SpaceQuota {
    pub fn new(store: Arc<MvccStore>, quota_bytes: Option<u64>) -> SpaceQuota {
        SpaceQuota {
            store,
            quota_bytes,
            cached: Mutex::new(None),
        }
    }

    /// The database's size on disk now (what Status reports as db_size).
    pub fn db_size_now(&self) -> u64 {
        let Ok(mut cached) = self.cached.lock() else {
            return self.store.size_on_disk().unwrap_or(0);
        };
        match self.store.size_on_disk() {
            Ok(size) => {
                *cached = Some((Instant::now(), size));
                size
            }
            // sled's files can change while they are listed (a value file removed): keep the
            // last size measured rather than take the database for empty.
            Err(e) => {
                tracing::debug!(error = %e, "measuring the database size");
                cached.map_or(0, |(_, size)| size)
            }
        }
    }

    /// The database size, measured at most [`SIZE_REFRESH`] ago.
    fn db_size(&self) -> u64 {
        if let Ok(c) = self.cached.lock() {
            if let Some((at, size)) = *c {
                if at.elapsed() < SIZE_REFRESH {
                    return size;
                }
            }
        }
        self.db_size_now()
    }

    /// etcd's `backendQuota.Available`: size + cost < quota.
    fn available(&self, cost: u64) -> bool {
        match self.quota_bytes {
            None => true,
            Some(q) => self.db_size().saturating_add(cost) < q,
        }
    }
}

/// etcd's `costPut`.
fn cost_put(r: &PutRequest) -> u64 {
    KV_OVERHEAD_BYTES + r.encoded_len() as u64
}

/// etcd's `costTxn`: the larger branch, counting only its puts.
fn cost_txn(t: &TxnRequest) -> u64 {
    let branch = |ops: &[crate::pb::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Op::RequestPut(p)) => cost_put(p),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

/// etcd's `costLease`.
fn cost_lease(r: &LeaseGrantRequest) -> u64 {
    LEASE_OVERHEAD_BYTES + r.encoded_len() as u64
}

impl ServerContext {
    /// etcd's `quotaAlarmer.check` for a Put, Txn or LeaseGrant about to be proposed: when
    /// the quota would be exceeded, raises this member's NOSPACE alarm and refuses.
    pub async fn check_quota(&self, write: &Write) -> Result<(), ApiError> {
        let cost = match write {
            Write::Put(p) => cost_put(p),
            Write::Txn(t) => cost_txn(t),
            Write::LeaseGrant(g) => cost_lease(g),
            _ => return Ok(()),
        };
        if self.quota.available(cost) {
            return Ok(());
        }
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.header.member_id(),
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(e) = self.propose(Write::Alarm(raise)).await {
            tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
        } else {
            tracing::warn!(
                quota_bytes = self.quota.quota_bytes.unwrap_or(0),
                "database space exceeded; NOSPACE alarm raised"
            );
        }
        Err(ApiError::NoSpace)
    }
}
