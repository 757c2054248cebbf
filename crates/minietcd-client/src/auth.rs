//! Logging in with a user name and password (etcdctl's `--user`), and the Auth service's
//! user, role and permission calls.
//!
//! A client given a user logs in when it connects and sends the token it got in the
//! `token` metadata of every request. A member answers "etcdserver: invalid auth token" once
//! the token has expired (etcd's `--auth-token-ttl`) or the member restarted; the client
//! then logs in again and repeats the request once, as clientv3 does.

use std::sync::{Arc, RwLock};

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::endpoints::request;
use super::pb::authpb::UserAddOptions;
use super::pb::authpb::{permission, Permission};
use super::pb::etcdserverpb::auth_client::AuthClient as PbAuthClient;
use super::pb::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthUserAddRequest,
    AuthUserAddResponse, AuthUserChangePasswordRequest, AuthUserChangePasswordResponse,
    AuthUserDeleteRequest, AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse,
    AuthUserGrantRoleRequest, AuthUserGrantRoleResponse, AuthUserListRequest, AuthUserListResponse,
    AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse, AuthenticateRequest,
};
use super::{CallOverrides, ClientError, ClientInner};

/// The gRPC metadata key of the token (etcd's `rpctypes.TokenFieldNameGRPC`).
pub(crate) const TOKEN_KEY: &str = "token";
/// The message of a login while auth is off.
const MSG_AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";
/// The message with which a member refuses an unknown or expired token.
pub(crate) const MSG_INVALID_TOKEN: &str = "etcdserver: invalid auth token";

/// A user's credentials and the token they last got.
pub(crate) struct Login {
    name: String,
    password: String,
    token: RwLock<Option<MetadataValue<tonic::metadata::Ascii>>>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Login").field("name", &self.name).finish()
    }
}

impl Login {
    pub(crate) fn new(name: String, password: String) -> Arc<Login> {
        Arc::new(Login {
            name,
            password,
            token: RwLock::new(None),
        })
    }

    /// The token to send, if logged in.
    pub(crate) fn token(&self) -> Option<MetadataValue<tonic::metadata::Ascii>> {
        match self.token.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Logs in on `channel` and keeps the new token. With auth off there is no token to
    /// get, and requests go without one (clientv3 does the same).
    pub(crate) async fn authenticate(&self, channel: Channel) -> Result<(), ClientError> {
        let answer = PbAuthClient::new(channel)
            .authenticate(AuthenticateRequest {
                name: self.name.clone(),
                password: self.password.clone(),
            })
            .await;
        let value = match answer {
            Ok(resp) => Some(
                MetadataValue::try_from(resp.into_inner().token.as_str()).map_err(|_| {
                    ClientError::InvalidArgument("the server sent an unusable token".into())
                })?,
            ),
            Err(s) if s.message() == MSG_AUTH_NOT_ENABLED => None,
            Err(s) => return Err(ClientError::from_status(&s)),
        };
        match self.token.write() {
            Ok(mut g) => *g = value,
            Err(p) => *p.into_inner() = value,
        }
        Ok(())
    }
}

/// Adds the token of `login` (if any) to a request's metadata.
pub(crate) fn add_token<T>(req: &mut tonic::Request<T>, login: Option<&Login>) {
    if let Some(t) = login.and_then(Login::token) {
        req.metadata_mut().insert(TOKEN_KEY, t);
    }
}

/// The Auth service: users, roles, permissions, enabling and disabling auth.
#[derive(Clone)]
pub struct AuthClient {
    inner: Arc<ClientInner>,
}

/// Runs one Auth call on the current member (with failover for reads).
macro_rules! auth_call {
    ($self:ident, $method:ident, $req:expr, $idempotent:expr) => {{
        let call = $self.inner.call_options(CallOverrides::default());
        let msg = $req;
        $self
            .inner
            .endpoints
            .call(&call, $idempotent, |ch| {
                let req = request(msg.clone(), &call);
                async move { PbAuthClient::new(ch).$method(req).await }
            })
            .await
    }};
}

impl AuthClient {
    pub(crate) fn new(inner: Arc<ClientInner>) -> Self {
        AuthClient { inner }
    }

    /// Turns auth on (the `root` user must exist and hold the `root` role).
    pub async fn auth_enable(&self) -> Result<AuthEnableResponse, ClientError> {
        auth_call!(self, auth_enable, AuthEnableRequest {}, false)
    }

    /// Turns auth off.
    pub async fn auth_disable(&self) -> Result<AuthDisableResponse, ClientError> {
        auth_call!(self, auth_disable, AuthDisableRequest {}, false)
    }

    /// Adds a user; `no_password` makes one that cannot log in with a password.
    pub async fn user_add(
        &self,
        name: &str,
        password: &str,
        no_password: bool,
    ) -> Result<AuthUserAddResponse, ClientError> {
        let req = AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            options: Some(UserAddOptions { no_password }),
            hashed_password: String::new(),
        };
        auth_call!(self, user_add, req, false)
    }

    /// A user's roles.
    pub async fn user_get(&self, name: &str) -> Result<AuthUserGetResponse, ClientError> {
        auth_call!(
            self,
            user_get,
            AuthUserGetRequest { name: name.into() },
            true
        )
    }

    /// Every user.
    pub async fn user_list(&self) -> Result<AuthUserListResponse, ClientError> {
        auth_call!(self, user_list, AuthUserListRequest {}, true)
    }

    /// Removes a user.
    pub async fn user_delete(&self, name: &str) -> Result<AuthUserDeleteResponse, ClientError> {
        auth_call!(
            self,
            user_delete,
            AuthUserDeleteRequest { name: name.into() },
            false
        )
    }

    /// Changes a user's password.
    pub async fn user_change_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<AuthUserChangePasswordResponse, ClientError> {
        let req = AuthUserChangePasswordRequest {
            name: name.into(),
            password: password.into(),
            hashed_password: String::new(),
        };
        auth_call!(self, user_change_password, req, false)
    }

    /// Grants a role to a user.
    pub async fn user_grant_role(
        &self,
        user: &str,
        role: &str,
    ) -> Result<AuthUserGrantRoleResponse, ClientError> {
        let req = AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        auth_call!(self, user_grant_role, req, false)
    }

    /// Revokes a role from a user.
    pub async fn user_revoke_role(
        &self,
        name: &str,
        role: &str,
    ) -> Result<AuthUserRevokeRoleResponse, ClientError> {
        let req = AuthUserRevokeRoleRequest {
            name: name.into(),
            role: role.into(),
        };
        auth_call!(self, user_revoke_role, req, false)
    }

    /// Adds a role.
    pub async fn role_add(&self, name: &str) -> Result<AuthRoleAddResponse, ClientError> {
        auth_call!(
            self,
            role_add,
            AuthRoleAddRequest { name: name.into() },
            false
        )
    }

    /// A role's permissions.
    pub async fn role_get(&self, role: &str) -> Result<AuthRoleGetResponse, ClientError> {
        auth_call!(
            self,
            role_get,
            AuthRoleGetRequest { role: role.into() },
            true
        )
    }

    /// Every role.
    pub async fn role_list(&self) -> Result<AuthRoleListResponse, ClientError> {
        auth_call!(self, role_list, AuthRoleListRequest {}, true)
    }

    /// Removes a role (and takes it from every user).
    pub async fn role_delete(&self, role: &str) -> Result<AuthRoleDeleteResponse, ClientError> {
        auth_call!(
            self,
            role_delete,
            AuthRoleDeleteRequest { role: role.into() },
            false
        )
    }

    /// Grants `perm_type` on `key` (with `range_end`: the range `[key, range_end)`; `"\0"`:
    /// every key from `key` on) to a role.
    pub async fn role_grant_permission(
        &self,
        role: &str,
        perm_type: permission::Type,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
    ) -> Result<AuthRoleGrantPermissionResponse, ClientError> {
        let req = AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(Permission {
                perm_type: perm_type as i32,
                key: key.into(),
                range_end: range_end.into(),
            }),
        };
        auth_call!(self, role_grant_permission, req, false)
    }

    /// Revokes the permission on `key`..`range_end` from a role.
    pub async fn role_revoke_permission(
        &self,
        role: &str,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
    ) -> Result<AuthRoleRevokePermissionResponse, ClientError> {
        let req = AuthRoleRevokePermissionRequest {
            role: role.into(),
            key: key.into(),
            range_end: range_end.into(),
        };
        auth_call!(self, role_revoke_permission, req, false)
    }
}
