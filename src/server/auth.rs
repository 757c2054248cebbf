//! The Auth service (etcd's `AuthServer`): every call goes through Raft, reads included, as
//! in etcd, so that its answer reflects every auth change committed before it, and the
//! apply checks the caller's root role against the same state. Passwords are hashed here,
//! on the member the client called, before anything enters the log; logins are checked
//! here against the hash (etcd's `CheckPassword`) and then proposed without the password,
//! so the apply only assigns the token.

use rand::Rng;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{ApiError, ServerContext};
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
};
use crate::pb::minietcdpb::internal_auth_request::Request as AuthReq;
use crate::pb::minietcdpb::internal_auth_response::Response as AuthResp;
use crate::pb::minietcdpb::internal_request::Request as Write;
use crate::pb::minietcdpb::internal_response::Response as Applied;
use crate::pb::minietcdpb::{
    InternalAuthRequest, InternalAuthResponse, InternalAuthenticateRequest,
};

/// Letters of a simple token's random part (etcd's `letters`).
const TOKEN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Length of a simple token's random part (etcd's `defaultSimpleTokenLength`).
const TOKEN_LENGTH: usize = 16;
/// Logins retried because auth changed between the password check and the apply.
const LOGIN_ATTEMPTS: usize = 8;

/// How logins and passwords are handled (`--auth-token`, `--bcrypt-cost`).
#[derive(Debug, Clone, Copy)]
pub struct AuthConfig {
    /// bcrypt's cost for new password hashes.
    pub bcrypt_cost: u32,
}

/// The Auth gRPC service.
pub struct AuthService {
    ctx: ServerContext,
    cfg: AuthConfig,
}

impl AuthService {
    pub fn new(ctx: ServerContext, cfg: AuthConfig) -> Self {
        AuthService { ctx, cfg }
    }

    /// Proposes one auth call on behalf of the caller its token names.
    async fn call(&self, md: &MetadataMap, req: AuthReq) -> Result<(AuthResp, i64), Status> {
        let ai = self.ctx.caller(md)?;
        let write = Write::Auth(InternalAuthRequest {
            username: ai.username,
            auth_revision: ai.revision,
            request: Some(req),
        });
        match self.ctx.propose(write).await? {
            (Applied::Auth(InternalAuthResponse { response: Some(r) }), rev) => Ok((r, rev)),
            _ => Err(unexpected()),
        }
    }

    /// A bcrypt hash of `password`, made off the runtime's threads (bcrypt is slow on
    /// purpose), in the `$2a$` form etcd's Go bcrypt writes.
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.cfg.bcrypt_cost;
        let hashed = tokio::task::spawn_blocking(move || {
            bcrypt::hash_with_result(password, cost)
                .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        })
        .await
        .map_err(|e| Status::from(ApiError::Internal(e.to_string())))?;
        hashed.map_err(|e| Status::from(ApiError::Internal(format!("bcrypt: {e}"))))
    }
}

fn unexpected() -> Status {
    ApiError::Internal("apply answered an auth call with another response".into()).into()
}

/// A fresh random token prefix (etcd's `genTokenPrefix`).
fn token_prefix() -> String {
    let mut rng = rand::thread_rng();
    (0..TOKEN_LENGTH)
        .map(|_| {
            let i = rng.gen_range(0..TOKEN_LETTERS.len());
            char::from(TOKEN_LETTERS.get(i).copied().unwrap_or(b'a'))
        })
        .collect()
}

/// Answers one auth call whose request and response variants share a name.
macro_rules! answer {
    ($self:ident, $md:expr, $variant:ident, $req:expr) => {{
        match $self.call(&$md, AuthReq::$variant($req)).await? {
            (AuthResp::$variant(mut resp), rev) => {
                $self.ctx.header.fill(&mut resp.header, rev);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }};
}

#[tonic::async_trait]
impl Auth for AuthService {
    #[instrument(skip_all)]
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, Enable, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, Disable, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn auth_status(
        &self,
        _req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        self.ctx.read_barrier(false).await?;
        let (enabled, auth_revision) = self.ctx.store.auth_status().map_err(ApiError::from)?;
        Ok(Response::new(AuthStatusResponse {
            header: Some(self.ctx.header.at(self.ctx.store.current_revision())),
            enabled,
            auth_revision,
        }))
    }

    #[instrument(skip_all, fields(user = %req.get_ref().name))]
    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let md = req.metadata().clone();
        let AuthenticateRequest { name, password } = req.into_inner();
        self.ctx.read_barrier(false).await?;
        for _ in 0..LOGIN_ATTEMPTS {
            let (hash, checked_at) = match self.ctx.store.password_hash(&name) {
                Ok(h) => h,
                Err(e) => {
                    let e = ApiError::from(e);
                    if e != ApiError::AuthNotEnabled {
                        tracing::warn!(user = %name, "invalid authentication was requested");
                    }
                    return Err(e.into());
                }
            };
            let pw = password.clone();
            let ok = tokio::task::spawn_blocking(move || {
                bcrypt::verify(pw, &String::from_utf8_lossy(&hash))
            })
            .await
            .map_err(|e| Status::from(ApiError::Internal(e.to_string())))?
            .unwrap_or(false);
            if !ok {
                tracing::warn!(user = %name, "invalid authentication was requested");
                return Err(ApiError::AuthFailed.into());
            }
            let login = InternalAuthenticateRequest {
                name: name.clone(),
                simple_token: token_prefix(),
            };
            let resp: Result<Response<AuthenticateResponse>, Status> =
                answer!(self, md, Authenticate, login);
            let (_, now) = self.ctx.store.auth_status().map_err(ApiError::from)?;
            if now == checked_at {
                return resp;
            }
            tracing::info!("auth changed while the password was checked; retrying the login");
        }
        Err(ApiError::AuthOldRevision.into())
    }

    #[instrument(skip_all, fields(user = %req.get_ref().name))]
    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        let password = std::mem::take(&mut r.password);
        if !r.options.is_some_and(|o| o.no_password) {
            r.hashed_password = self.hash(password).await?;
        }
        answer!(self, md, UserAdd, r)
    }

    #[instrument(skip_all)]
    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, UserGet, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, UserList, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, UserDelete, req.into_inner())
    }

    #[instrument(skip_all, fields(user = %req.get_ref().name))]
    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        let password = std::mem::take(&mut r.password);
        r.hashed_password = self.hash(password).await?;
        answer!(self, md, UserChangePassword, r)
    }

    #[instrument(skip_all)]
    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, UserGrantRole, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, UserRevokeRole, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, RoleAdd, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, RoleGet, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, RoleList, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, RoleDelete, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        // etcd 3.5's check (etcd 3.4 dereferences the missing permission and crashes).
        if req.get_ref().perm.is_none() {
            return Err(ApiError::PermissionNotGiven.into());
        }
        let md = req.metadata().clone();
        answer!(self, md, RoleGrantPermission, req.into_inner())
    }

    #[instrument(skip_all)]
    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let md = req.metadata().clone();
        answer!(self, md, RoleRevokePermission, req.into_inner())
    }
}
