//! The Lock service (etcd's `v3lock`, on clientv3 concurrency's `Mutex`).
//!
//! Lock(name, lease): the caller's key is `name/<lease hex>`, put bound to the lease unless it
//! exists already (the same lease locking twice gets its own key back). The owner is the
//! oldest key under `name/`. A caller that is not the owner waits for the deletion of every
//! key created before its own, then checks that its own key still exists (its lease may have
//! ended meanwhile: "mutex: session is expired"). Unlock(key) deletes the key; a lease's
//! revoke or expiry deletes it too. A caller that goes away while waiting has its key deleted,
//! so that it does not block the queue.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::pb::etcdserverpb::TxnRequest;
use crate::pb::v3lockpb::lock_server::Lock;
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

use super::concurrency::{
    create_revision_is, first_created, get_op, go_error, key_range, lease_key, prefix_of, put_op,
    range_kvs, range_op, LocalClient,
};

/// concurrency's `ErrSessionExpired`.
const SESSION_EXPIRED: &str = "mutex: session is expired";

/// The Lock gRPC service.
pub struct LockService {
    client: Arc<LocalClient>,
}

impl LockService {
    pub fn new(client: Arc<LocalClient>) -> Self {
        LockService { client }
    }
}

/// Deletes a waiter's key if its request is dropped before it gets the lock (etcd's Lock
/// unlocks when its context ends while waiting).
struct WaiterGuard {
    client: Arc<LocalClient>,
    key: Option<Vec<u8>>,
}

impl WaiterGuard {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.delete(&key).await {
                    tracing::debug!(error = %e, "removing an abandoned lock waiter's key");
                }
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    #[instrument(skip_all, fields(lease = req.get_ref().lease))]
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let req = req.into_inner();
        let c = &self.client;
        let lease = c.session_lease(req.lease).await?;
        let prefix = prefix_of(&req.name);
        let my_key = lease_key(&prefix, lease);
        let owner = range_op(first_created(&prefix));
        let resp = c
            .txn(TxnRequest {
                compare: vec![create_revision_is(&my_key, 0)],
                success: vec![put_op(&my_key, b"", lease), owner.clone()],
                failure: vec![get_op(&my_key), owner],
            })
            .await?;
        let mut my_rev = resp.header.as_ref().map_or(0, |h| h.revision);
        if !resp.succeeded {
            my_rev = range_kvs(&resp, 0)
                .first()
                .map_or(0, |kv| kv.create_revision);
        }
        let owner_rev = range_kvs(&resp, 1).first().map(|kv| kv.create_revision);
        if owner_rev.is_none_or(|r| r == my_rev) {
            return Ok(Response::new(LockResponse {
                header: resp.header,
                key: my_key,
            }));
        }
        let guard = WaiterGuard {
            client: c.clone(),
            key: Some(my_key.clone()),
        };
        // etcd ignores why the wait ended: it unlocks, and the check below then finds the
        // key gone.
        if let Err(e) = c.wait_deletes(&prefix, my_rev - 1).await {
            tracing::debug!(error = %e, "waiting for the lock ended");
            c.delete(&my_key).await?;
        }
        let mine = c.range(key_range(&my_key)).await?;
        guard.disarm();
        if mine.kvs.is_empty() {
            return Err(go_error(SESSION_EXPIRED));
        }
        Ok(Response::new(LockResponse {
            header: mine.header,
            key: my_key,
        }))
    }

    #[instrument(skip_all)]
    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let header = self.client.delete(&req.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header }))
    }
}
