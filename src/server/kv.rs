//! The KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Reads come from the local store, after a Raft read barrier unless serializable. Writes
//! become one `InternalRequest` proposed through Raft; its apply-time errors are etcd's.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::pb::minietcdpb::internal_request::Request as Write;
use crate::pb::minietcdpb::internal_response::Response as Applied;
use crate::pb::minietcdpb::{Caller, InternalRequest, InternalResponse};

use super::{txn_check, ApiError, ServerContext};
use crate::storage::MvccStore;

/// The KV gRPC service.
pub struct KvService {
    ctx: ServerContext,
}

impl KvService {
    pub fn new(ctx: ServerContext) -> Self {
        KvService { ctx }
    }
}

impl ServerContext {
    /// Proposes one write through Raft and returns what its apply produced, with the apply's
    /// error (if any) turned into etcd's.
    pub async fn propose(&self, write: Write) -> Result<(Applied, i64), ApiError> {
        self.propose_with(write, None).await
    }

    /// [`Self::propose`] for a client's write whose permissions were checked for `ai`: the
    /// apply refuses it if the auth store changed since (etcd checks at apply too).
    pub async fn propose_as(
        &self,
        write: Write,
        ai: &crate::storage::AuthInfo,
    ) -> Result<(Applied, i64), ApiError> {
        let caller = (ai.revision != 0).then(|| Caller {
            username: ai.username.clone(),
            auth_revision: ai.revision,
        });
        self.propose_with(write, caller).await
    }

    async fn propose_with(
        &self,
        write: Write,
        caller: Option<Caller>,
    ) -> Result<(Applied, i64), ApiError> {
        let req = InternalRequest {
            caller,
            request: Some(write),
        };
        if req.encoded_len() > self.max_request_bytes {
            return Err(ApiError::RequestTooLarge);
        }
        let resp: InternalResponse = self.proposer.write(req).await?;
        if let Some(e) = ApiError::from_apply(resp.error) {
            return Err(e);
        }
        let applied = resp
            .response
            .ok_or_else(|| ApiError::Internal("apply returned no response".into()))?;
        Ok((applied, resp.revision))
    }

    /// A linearizable read barrier unless the request asked for a serializable read; a
    /// serializable read still waits until a starting member has caught up with what it
    /// may have served before it stopped, so that its reads never go back in time.
    pub async fn read_barrier(&self, serializable: bool) -> Result<(), ApiError> {
        if serializable {
            self.proposer.wait_caught_up().await?;
        } else {
            self.proposer.read_index().await?;
        }
        Ok(())
    }
}

/// Runs a range without blocking an async worker: a single key is read inline when the
/// store's lock is free at once; anything longer (a key range, or a writer holding or waiting
/// for the lock) runs on the blocking pool.
async fn read_range(store: &Arc<MvccStore>, req: RangeRequest) -> Result<RangeResponse, ApiError> {
    if req.range_end.is_empty() {
        if let Some(done) = store.try_range(&req) {
            return Ok(done?);
        }
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.range(&req))
        .await
        .map_err(|e| ApiError::Internal(format!("range task failed: {e}")))?
        .map_err(ApiError::from)
}

fn unexpected(what: &str) -> Status {
    ApiError::Internal(format!("apply answered a {what} with another response")).into()
}

#[tonic::async_trait]
impl Kv for KvService {
    #[instrument(skip_all, fields(key_len = req.get_ref().key.len()))]
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let ai = self.ctx.caller(req.metadata())?;
        let req = req.into_inner();
        txn_check::check_range(&req)?;
        self.ctx.read_barrier(req.serializable).await?;
        self.ctx.check_read(&ai, &req.key, &req.range_end)?;
        let mut resp = read_range(&self.ctx.store, req).await?;
        self.ctx.check_still_current(&ai)?;
        // The revision the range was read at, not the store's revision now: a client that
        // watches from header.revision + 1 (list-then-watch) must not miss a write.
        let read_at = resp
            .header
            .as_ref()
            .map_or_else(|| self.ctx.store.current_revision(), |h| h.revision);
        self.ctx.header.fill(&mut resp.header, read_at);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all, fields(key_len = req.get_ref().key.len()))]
    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let ai = self.ctx.caller(req.metadata())?;
        let write = Write::Put(req.into_inner());
        self.ctx.check_quota(&write).await?;
        if let Write::Put(req) = &write {
            txn_check::check_put(req)?;
            self.ctx.check_put(&ai, req)?;
        }
        match self.ctx.propose_as(write, &ai).await? {
            (Applied::Put(mut resp), rev) => {
                self.ctx.header.fill(&mut resp.header, rev);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("put")),
        }
    }

    #[instrument(skip_all, fields(key_len = req.get_ref().key.len()))]
    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let ai = self.ctx.caller(req.metadata())?;
        let req = req.into_inner();
        txn_check::check_delete(&req)?;
        self.ctx.check_delete(&ai, &req)?;
        match self.ctx.propose_as(Write::DeleteRange(req), &ai).await? {
            (Applied::DeleteRange(mut resp), rev) => {
                self.ctx.header.fill(&mut resp.header, rev);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("delete")),
        }
    }

    #[instrument(skip_all, fields(ops = req.get_ref().success.len() + req.get_ref().failure.len()))]
    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let ai = self.ctx.caller(req.metadata())?;
        let write = Write::Txn(req.into_inner());
        self.ctx.check_quota(&write).await?;
        if let Write::Txn(req) = &write {
            txn_check::check_txn(req, self.ctx.max_txn_ops)?;
            self.ctx.check_txn(&ai, req)?;
        }
        match self.ctx.propose_as(write, &ai).await? {
            (Applied::Txn(mut resp), rev) => {
                self.ctx.header.fill(&mut resp.header, rev);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("txn")),
        }
    }

    #[instrument(skip_all, fields(rev = req.get_ref().revision))]
    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        // etcd 3.4 checks no permission for a compaction, only that a token is valid.
        self.ctx.caller(req.metadata())?;
        let req = req.into_inner();
        let (at, physical) = (req.revision, req.physical);
        match self.ctx.propose(Write::Compaction(req)).await? {
            (Applied::Compaction(mut resp), rev) => {
                if physical {
                    // etcd: answer once the compacted history is gone from this member's
                    // database, not only scheduled for removal.
                    self.ctx
                        .store
                        .removed_compacted(at)
                        .await
                        .map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
                }
                self.ctx.header.fill(&mut resp.header, rev);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("compaction")),
        }
    }
}
