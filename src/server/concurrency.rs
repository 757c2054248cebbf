//! The member's own client for the Lock and Election services (etcd's `v3client` plus the
//! parts of clientv3's `concurrency` package those services use): KV requests go through the
//! local [`KvService`] exactly as a client's would (quota, validation, Raft), lease grants
//! through the local [`LeaseService`], and waits on deletions through the local
//! [`WatchableStore`].
//!
//! Both services build on one pattern: a caller owns a key `name/<lease in hex>` bound to its
//! lease; the key with the oldest create revision under `name/` is the holder (lock owner,
//! election leader); the others wait, each for the deletion of the key created just before
//! its own ([`LocalClient::wait_deletes`]), so a release wakes one waiter, not all.
//!
//! Errors of the KV requests reach the caller as etcd's in-process client makes them: the
//! message of etcd's error with gRPC code Unknown ([`relay`]).

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tonic::{Code, Request, Status};

use crate::lessor::Lessor;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResp;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest,
};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use crate::watch::stream::StreamWatchers;
use crate::watch::{Delivery, WatchableStore, CHAN_BUF_LEN};

use super::admin::Admin;
use super::kv::KvService;
use super::lease::LeaseService;
use super::watch::SERVER_STOPPED;
use super::{ApiError, ServerContext};

/// clientv3 concurrency's `defaultSessionTTL`: the TTL of the lease a request without one gets.
pub const DEFAULT_SESSION_TTL_SECS: i64 = 60;

/// What etcd's watch-based wait answers when its watch ends without the deletion.
const LOST_WATCHER: &str = "lost watcher waiting for delete";

/// The member's in-process client.
pub struct LocalClient {
    /// KV requests, served as any client's.
    kv: KvService,
    /// Lease grants for requests that name no lease.
    lease: LeaseService,
    /// Where waits on deletions register their watchers.
    watchable: Arc<WatchableStore>,
    /// Headers of watch answers (Observe's responses carry them).
    ctx: ServerContext,
    /// Turns true when the member stops: waits then end, so that they do not hold up the
    /// server's graceful shutdown (as watch streams end then).
    stopping: Option<watch::Receiver<bool>>,
}

/// The same error message under gRPC code Unknown: etcd's lock and election services call
/// etcd through clientv3, which turns etcd's errors into plain Go errors that gRPC then
/// answers as Unknown.
pub fn relay(s: Status) -> Status {
    Status::new(Code::Unknown, s.message().to_owned())
}

/// A plain Go error of the concurrency package, answered as gRPC Unknown.
pub fn go_error(message: &str) -> Status {
    Status::new(Code::Unknown, message.to_owned())
}

/// The key a lease owns under `prefix` (which ends in `/`): Go's `%x` of the lease id.
pub fn lease_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut key = prefix.to_vec();
    key.extend_from_slice(hex.as_bytes());
    key
}

/// `name/`: the prefix under which the keys of a lock or election live.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// A compare on a key's create revision.
pub fn create_revision_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

/// A put bound to `lease`, as a txn operation.
pub fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

/// A single-key get.
pub fn key_range(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

/// A single-key get, as a txn operation.
pub fn get_op(key: &[u8]) -> RequestOp {
    range_op(key_range(key))
}

/// A range, as a txn operation.
pub fn range_op(req: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(req)),
    }
}

/// clientv3's `Get(prefix, WithFirstCreate())`: the oldest key under `prefix`.
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: minietcd_client::prefix_range_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The key-values of a txn's `i`th response, if it is a range.
pub fn range_kvs(resp: &TxnResponse, i: usize) -> &[KeyValue] {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(OpResp::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

impl LocalClient {
    pub fn new(
        ctx: ServerContext,
        lessor: Arc<Lessor>,
        admin: Admin,
        watchable: Arc<WatchableStore>,
        stopping: Option<watch::Receiver<bool>>,
    ) -> Arc<Self> {
        Arc::new(LocalClient {
            kv: KvService::new(ctx.clone()),
            lease: LeaseService::new(ctx.clone(), lessor, admin),
            watchable,
            ctx,
            stopping,
        })
    }

    /// Resolves once the member stops (never without a stop signal).
    pub async fn stopped(&self) {
        match self.stopping.clone() {
            Some(mut rx) => {
                let _ = rx.wait_for(|s| *s).await;
            }
            None => std::future::pending().await,
        }
    }

    /// A header at `revision`, for answers built from watch events.
    pub fn header_at(&self, revision: i64) -> ResponseHeader {
        self.ctx.header.at(revision)
    }

    /// concurrency's `NewSession(WithLease(lease))`: the lease to use, a fresh one of
    /// [`DEFAULT_SESSION_TTL_SECS`] when the request names none (etcd grants it, then orphans
    /// it: nobody keeps it alive).
    pub async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let req = LeaseGrantRequest {
            ttl: DEFAULT_SESSION_TTL_SECS,
            id: 0,
        };
        let resp = self
            .lease
            .lease_grant(Request::new(req))
            .await
            .map_err(relay)?;
        Ok(resp.into_inner().id)
    }

    /// A linearizable range.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Status> {
        let resp = self.kv.range(Request::new(req)).await.map_err(relay)?;
        Ok(resp.into_inner())
    }

    /// A txn.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, Status> {
        let resp = self.kv.txn(Request::new(req)).await.map_err(relay)?;
        Ok(resp.into_inner())
    }

    /// Deletes one key; answers the delete's header.
    pub async fn delete(&self, key: &[u8]) -> Result<Option<ResponseHeader>, Status> {
        let req = DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let resp = self
            .kv
            .delete_range(Request::new(req))
            .await
            .map_err(relay)?;
        Ok(resp.into_inner().header)
    }

    /// concurrency's `waitDeletes`: waits until no key under `prefix` has a create revision
    /// at or below `max_create_rev`, one key at a time (the newest such key first), and
    /// answers the header of the range that found none.
    pub async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create_rev: i64,
    ) -> Result<Option<ResponseHeader>, Status> {
        tokio::select! {
            r = self.wait_deletes_until_stopped(prefix, max_create_rev) => r,
            () = self.stopped() => Err(relay(Status::unavailable(SERVER_STOPPED))),
        }
    }

    async fn wait_deletes_until_stopped(
        &self,
        prefix: &[u8],
        max_create_rev: i64,
    ) -> Result<Option<ResponseHeader>, Status> {
        loop {
            let req = RangeRequest {
                key: prefix.to_vec(),
                range_end: minietcd_client::prefix_range_end(prefix),
                limit: 1,
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Create as i32,
                max_create_revision: max_create_rev,
                ..Default::default()
            };
            let resp = self.range(req).await?;
            let Some(last) = resp.kvs.first() else {
                return Ok(resp.header);
            };
            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
            self.wait_delete(&last.key, rev).await?;
        }
    }

    /// concurrency's `waitDelete`: watches `key` from `rev` until it is deleted.
    async fn wait_delete(&self, key: &[u8], rev: i64) -> Result<(), Status> {
        let mut watch = self.watch(key, Vec::new(), rev);
        loop {
            let Some(d) = watch.next().await else {
                return Err(go_error(LOST_WATCHER));
            };
            if d.compact_revision != 0 {
                return Err(go_error(&ApiError::Compacted.to_string()));
            }
            if d.events
                .iter()
                .any(|ev| ev.r#type == EventType::Delete as i32)
            {
                return Ok(());
            }
        }
    }

    /// A watch on `key`..`range_end` from `start_rev`, ended when dropped.
    pub fn watch(&self, key: &[u8], range_end: Vec<u8>, start_rev: i64) -> LocalWatch {
        let (tx, rx) = mpsc::channel(CHAN_BUF_LEN);
        let mut watchers = StreamWatchers::new(self.watchable.clone(), tx);
        watchers.create(WatchCreateRequest {
            key: key.to_vec(),
            range_end,
            start_revision: start_rev,
            ..Default::default()
        });
        LocalWatch {
            _watchers: watchers,
            rx,
        }
    }
}

/// One in-process watcher; dropping it cancels the watcher in the store.
pub struct LocalWatch {
    /// Owns the watcher (its drop cancels it).
    _watchers: StreamWatchers,
    /// What the store delivers to it.
    rx: mpsc::Receiver<Delivery>,
}

impl LocalWatch {
    /// The next delivery; None when the store dropped the watcher's channel.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}
