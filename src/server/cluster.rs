//! The Cluster service: MemberList from the Raft membership (which carries every member's
//! published name and client URLs); membership changes run on the leader through
//! [`Admin`](super::admin::Admin).

use tonic::{Request, Response, Status};

use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use crate::pb::minietcdpb::admin_request::Request as AdminReq;
use crate::pb::minietcdpb::admin_response::Response as AdminResp;
use crate::pb::minietcdpb::AdminRequest;

use super::admin::{members_of, Admin};
use super::{ApiError, ServerContext};

/// The Cluster gRPC service.
pub struct ClusterService {
    ctx: ServerContext,
    /// Runs membership changes on the leader.
    admin: Admin,
}

impl ClusterService {
    pub fn new(ctx: ServerContext, admin: Admin) -> Self {
        ClusterService { ctx, admin }
    }

    /// Every member of the current Raft membership, voters and learners.
    pub fn members(&self) -> Vec<Member> {
        let m = self.ctx.header.metrics();
        members_of(m.membership_config.membership())
    }

    async fn run(&self, req: AdminReq) -> Result<AdminResp, Status> {
        let resp = self
            .admin
            .route(AdminRequest { request: Some(req) })
            .await?;
        resp.response
            .ok_or_else(|| ApiError::Internal("empty admin answer".into()).into())
    }

    /// etcd 3.4's cluster server fills cluster id, member id and term, not the revision.
    fn header(&self) -> Option<crate::pb::etcdserverpb::ResponseHeader> {
        Some(self.ctx.header.at(0))
    }
}

fn mismatch() -> Status {
    ApiError::Internal("admin request answered with another response".into()).into()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if req.get_ref().linearizable {
            self.ctx.read_barrier(false).await.map_err(Status::from)?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.ctx.check_admin(req.metadata())?;
        match self.run(AdminReq::MemberAdd(req.into_inner())).await? {
            AdminResp::MemberAdd(mut r) => {
                r.header = self.header();
                Ok(Response::new(r))
            }
            _ => Err(mismatch()),
        }
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.ctx.check_admin(req.metadata())?;
        match self.run(AdminReq::MemberRemove(req.into_inner())).await? {
            AdminResp::MemberRemove(mut r) => {
                r.header = self.header();
                Ok(Response::new(r))
            }
            _ => Err(mismatch()),
        }
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.ctx.check_admin(req.metadata())?;
        match self.run(AdminReq::MemberUpdate(req.into_inner())).await? {
            AdminResp::MemberUpdate(mut r) => {
                r.header = self.header();
                Ok(Response::new(r))
            }
            _ => Err(mismatch()),
        }
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.ctx.check_admin(req.metadata())?;
        match self.run(AdminReq::MemberPromote(req.into_inner())).await? {
            AdminResp::MemberPromote(mut r) => {
                r.header = self.header();
                Ok(Response::new(r))
            }
            _ => Err(mismatch()),
        }
    }
}
