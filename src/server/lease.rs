//! The Lease service. Grants and revokes go through Raft; deadlines live in the [`Lessor`].

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::lessor::Lessor;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::pb::minietcdpb::admin_request::Request as AdminReq;
use crate::pb::minietcdpb::admin_response::Response as AdminResp;
use crate::pb::minietcdpb::internal_request::Request as Write;
use crate::pb::minietcdpb::internal_response::Response as Applied;
use crate::pb::minietcdpb::{AdminRequest, AdminResponse};
use crate::storage::MAX_LEASE_TTL_SECS;

use super::admin::Admin;
use super::{ApiError, ServerContext};

/// Keep-alive responses waiting to be sent on one stream.
const KEEPALIVE_STREAM_BUFFER: usize = 16;

/// The Lease gRPC service.
pub struct LeaseService {
    ctx: ServerContext,
    lessor: Arc<Lessor>,
    /// Sends keep-alives to the leader, whose lessor alone decides expiry.
    admin: Admin,
}

impl LeaseService {
    pub fn new(ctx: ServerContext, lessor: Arc<Lessor>, admin: Admin) -> Self {
        LeaseService { ctx, lessor, admin }
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    #[instrument(skip_all, fields(ttl = req.get_ref().ttl))]
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.ctx.caller(req.metadata())?;
        let mut req = req.into_inner();
        self.ctx.check_quota(&Write::LeaseGrant(req)).await?;
        if req.ttl > MAX_LEASE_TTL_SECS {
            return Err(ApiError::LeaseTtlTooLarge.into());
        }
        req.ttl = self.lessor.effective_ttl(req.ttl);
        if req.id == 0 {
            // etcd picks a random-looking positive id on the proposing member.
            req.id = loop {
                let id = rand::random::<i64>() & i64::MAX;
                if id != 0 {
                    break id;
                }
            };
        }
        let id = req.id;
        match self.ctx.propose(Write::LeaseGrant(req)).await? {
            (Applied::LeaseGrant(mut resp), rev) => {
                // The leader starts the lease's clock before the client hears of the grant
                // (etcd starts it when the leader applies the grant); failing that, the
                // leader's next expiry check starts it.
                let renew = AdminRequest {
                    request: Some(AdminReq::LeaseRenew(LeaseKeepAliveRequest { id })),
                };
                if let Err(e) = self.admin.route(renew).await {
                    tracing::debug!(lease = id, error = %e, "starting a granted lease's clock");
                }
                self.ctx.header.fill(&mut resp.header, rev);
                Ok(Response::new(resp))
            }
            _ => {
                Err(ApiError::Internal("lease grant answered with another response".into()).into())
            }
        }
    }

    #[instrument(skip_all, fields(lease = req.get_ref().id))]
    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let ai = self.ctx.caller(req.metadata())?;
        let req = req.into_inner();
        self.ctx.check_lease_revoke(&ai, req.id)?;
        match self.ctx.propose_as(Write::LeaseRevoke(req), &ai).await? {
            (Applied::LeaseRevoke(mut resp), rev) => {
                self.ctx.header.fill(&mut resp.header, rev);
                Ok(Response::new(resp))
            }
            _ => {
                Err(ApiError::Internal("lease revoke answered with another response".into()).into())
            }
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVE_STREAM_BUFFER);
        let admin = self.admin.clone();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                let Ok(msg) = msg else { break };
                let id = msg.id;
                // The renew runs on the leader (here or over the peer service), which
                // confirms its leadership with a quorum first.
                let req = AdminRequest {
                    request: Some(AdminReq::LeaseRenew(msg)),
                };
                let ttl = match admin.route(req).await {
                    Ok(AdminResponse {
                        response: Some(AdminResp::LeaseRenew(r)),
                    }) => r.ttl,
                    Ok(_) => {
                        let e =
                            ApiError::Internal("lease renew answered with another response".into());
                        let _ = tx.send(Err(Status::from(e))).await;
                        break;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                };
                let resp = LeaseKeepAliveResponse {
                    header: Some(ctx.header.at(ctx.store.current_revision())),
                    id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        let out = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(out)))
    }

    #[instrument(skip_all, fields(lease = req.get_ref().id))]
    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        // Only the leader's clock counts (keep-alives refresh it alone): a follower asks the
        // leader, as etcd does. The leader confirms its leadership and answers from its
        // applied store; an unknown or expired lease is TTL -1, not an error (etcd).
        let req = AdminRequest {
            request: Some(AdminReq::LeaseTimeToLive(req.into_inner())),
        };
        let mut resp = match self.admin.route(req).await? {
            AdminResponse {
                response: Some(AdminResp::LeaseTimeToLive(r)),
            } => r,
            _ => {
                return Err(ApiError::Internal(
                    "lease time-to-live answered with another response".into(),
                )
                .into())
            }
        };
        resp.header = Some(self.ctx.header.at(self.ctx.store.current_revision()));
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.ctx.read_barrier(false).await?;
        let leases = self
            .ctx
            .store
            .lease_ids()
            .map_err(ApiError::from)?
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.ctx.header.at(self.ctx.store.current_revision())),
            leases,
        }))
    }
}
