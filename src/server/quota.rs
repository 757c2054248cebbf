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
use crate::storage::{MvccStore, StorageError};

/// How stale the measured database size may be: sled sums its files on every call, so the
/// quota check of a busy member reuses one measurement for this long.
const SIZE_REFRESH: Duration = Duration::from_millis(100);
/// How stale Status's db_size_in_use may be: measuring it reads every row.
const IN_USE_REFRESH: Duration = Duration::from_secs(5);
/// A measurement of the bytes in use that takes longer than this (a large store, partly out
/// of sled's cache) is no longer made while a Status call waits: the call gets the last
/// figure and a background thread measures again.
const IN_USE_WAIT_LIMIT: Duration = Duration::from_millis(200);
/// Before anything was measured: a database up to this size on disk is measured while the
/// call waits; a larger one reports its size on disk until the first measurement is in.
const IN_USE_WAIT_MAX_DB_BYTES: u64 = 64 << 20;
/// A slow measurement is repeated at most once per this many times its own duration, so that
/// reading every row takes a small share of the member's time (and of sled's cache).
const IN_USE_SLOW_REFRESH_FACTOR: u32 = 20;
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
    /// The bytes in use as last measured.
    in_use: Mutex<InUse>,
}

/// What is known of the bytes in use (see [`SpaceQuota::size_in_use`]).
#[derive(Debug, Default)]
struct InUse {
    /// The last measurement: when it ended, the bytes, how long it took.
    last: Option<(Instant, u64, Duration)>,
    /// A compaction or a defragment since the last measurement.
    stale: bool,
    /// A background measurement is under way.
    measuring: bool,
}

impl InUse {
    /// Whether the last measurement can be given as it is.
    fn fresh(&self) -> bool {
        self.last.is_some_and(|(at, _, took)| {
            !self.stale && at.elapsed() < IN_USE_REFRESH.max(took * IN_USE_SLOW_REFRESH_FACTOR)
        })
    }
}

impl SpaceQuota {
    pub fn new(store: Arc<MvccStore>, quota_bytes: Option<u64>) -> SpaceQuota {
        SpaceQuota {
            store,
            quota_bytes,
            cached: Mutex::new(None),
            in_use: Mutex::new(InUse::default()),
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

    /// The bytes the store's rows take (Status's db_size_in_use). Measuring reads every row:
    /// a measurement is reused for [`IN_USE_REFRESH`] (longer for a slow one), and one that
    /// took over [`IN_USE_WAIT_LIMIT`] is renewed in the background while callers get the
    /// last figure. Blocking.
    pub fn size_in_use(self: &Arc<Self>) -> Result<u64, StorageError> {
        {
            let mut c = self.in_use.lock().map_err(|_| StorageError::Poisoned)?;
            if c.fresh() {
                return Ok(c.last.map_or(0, |(_, bytes, _)| bytes));
            }
            let wait = match c.last {
                Some((_, _, took)) => took <= IN_USE_WAIT_LIMIT,
                None => self.db_size() <= IN_USE_WAIT_MAX_DB_BYTES,
            };
            if !wait {
                let known = c.last.map(|(_, bytes, _)| bytes);
                if !c.measuring {
                    c.measuring = true;
                    let me = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("size-in-use".into())
                        .spawn(move || me.measure_in_use());
                    if let Err(e) = spawned {
                        c.measuring = false;
                        tracing::warn!(error = %e, "could not start measuring the bytes in use");
                    }
                }
                // Until the first measurement is in: the database's size on disk.
                return Ok(known.unwrap_or_else(|| self.db_size()));
            }
        }
        self.measure_in_use()
    }

    /// Reads every row to measure the bytes in use, and keeps the figure.
    fn measure_in_use(&self) -> Result<u64, StorageError> {
        let started = Instant::now();
        // Staleness is judged from the start: a compaction during the scan may not be in it.
        if let Ok(mut c) = self.in_use.lock() {
            c.stale = false;
        }
        let measured = self.store.size_in_use();
        if let Ok(mut c) = self.in_use.lock() {
            c.measuring = false;
            if let Ok(bytes) = measured {
                c.last = Some((Instant::now(), bytes, started.elapsed()));
            }
        }
        if let Err(e) = &measured {
            tracing::debug!(error = %e, "measuring the bytes in use");
        }
        measured
    }

    /// Forgets the measurement of the bytes in use (after a defragment or a compaction).
    pub fn forget_in_use(&self) {
        if let Ok(mut c) = self.in_use.lock() {
            c.stale = true;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::PutRequest;
    use crate::pb::minietcdpb::InternalRequest;

    fn quota_over_rows(n: usize) -> (tempfile::TempDir, Arc<SpaceQuota>) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = Arc::new(MvccStore::open(&db).unwrap());
        for i in 0..n {
            let put = InternalRequest {
                caller: None,
                request: Some(Write::Put(PutRequest {
                    key: format!("k{i:04}").into_bytes(),
                    value: vec![b'v'; 100],
                    ..Default::default()
                })),
            };
            store.apply(&put, b"applied").unwrap();
        }
        (dir, Arc::new(SpaceQuota::new(store, None)))
    }

    #[test]
    fn a_quick_measurement_is_made_while_the_caller_waits() {
        let (_dir, q) = quota_over_rows(10);
        let first = q.size_in_use().unwrap();
        assert!(first > 10 * 100, "{first}");
        // Reused while fresh; measured again (still waiting for it) once forgotten.
        q.store
            .apply(
                &InternalRequest {
                    caller: None,
                    request: Some(Write::Put(PutRequest {
                        key: b"more".to_vec(),
                        value: vec![b'v'; 1000],
                        ..Default::default()
                    })),
                },
                b"applied",
            )
            .unwrap();
        assert_eq!(q.size_in_use().unwrap(), first);
        q.forget_in_use();
        assert!(q.size_in_use().unwrap() > first + 1000);
    }

    #[test]
    fn a_slow_measurement_is_renewed_in_the_background() {
        let (_dir, q) = quota_over_rows(50);
        // As if the last measurement had taken seconds and a compaction came since.
        {
            let mut c = q.in_use.lock().unwrap();
            c.last = Some((Instant::now(), 123, Duration::from_secs(2)));
            c.stale = true;
        }
        // The caller gets the last figure at once; the new one follows.
        assert_eq!(q.size_in_use().unwrap(), 123);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = q.in_use.lock().unwrap().last.map(|(_, b, _)| b);
            if now != Some(123) {
                assert!(now.unwrap() > 50 * 100);
                break;
            }
            assert!(Instant::now() < deadline, "no background measurement");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(q.size_in_use().unwrap() > 50 * 100);
    }
}
