//! Who is calling, and may they: the `token` metadata becomes the caller's user (etcd's
//! `AuthInfoFromCtx`), and each KV, Lease, Watch, Cluster and Maintenance call is checked
//! where etcd checks it (`apply_auth.go`, `v3_server.go`, the v3rpc maintenance and watch
//! servers): Range needs READ; Put and DeleteRange WRITE, and READ too when they return the
//! previous value; a Txn every permission its compares and operations need; a LeaseRevoke
//! or a Put with a lease WRITE on every key of the lease; member and maintenance calls root.
//!
//! minietcd checks a write's permissions on the member that receives it, before proposing,
//! against its applied auth state, and the write carries the auth revision of that check
//! ([`ServerContext::propose_as`]): the apply refuses it with etcd's "revision of auth store
//! is old" when any user, role or permission changed in between, so no write is applied
//! under permissions that no longer hold (etcd re-checks the permissions at apply; a changed
//! revision is what makes them differ).

use tonic::metadata::MetadataMap;

use super::{ApiError, ServerContext};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use crate::storage::{AuthInfo, Need};

/// gRPC metadata carrying the token (etcd's `rpctypes.TokenFieldNameGRPC`).
pub const TOKEN_METADATA: &str = "token";
/// The gRPC gateway's spelling of it (`TokenFieldNameSwagger`).
const TOKEN_METADATA_GATEWAY: &str = "authorization";
/// Where the common name of the caller's verified client certificate travels from the
/// transport to the services (see [`mark_cert_user`]); a value sent by a client is dropped.
const CERT_USER_METADATA: &str = "minietcd-cert-user";

/// Puts the common name of the request's verified client certificate (there is one only with
/// `--client-cert-auth` or a trusted CA) where [`ServerContext::caller`] finds it, and drops
/// any such entry the client sent itself. etcd's `AuthInfoFromTLS`: without a token, the CN
/// is the user. The certificate is parsed only while `auth_enabled` (every request passes
/// here); the client's own entry is dropped always.
pub fn mark_cert_user<T>(req: &mut tonic::Request<T>, auth_enabled: bool) {
    req.metadata_mut().remove(CERT_USER_METADATA);
    if !auth_enabled {
        return;
    }
    let Some(cn) = crate::tls::peer_common_name(req) else {
        return;
    };
    if let Ok(v) = cn.parse() {
        req.metadata_mut().insert(CERT_USER_METADATA, v);
    }
}

impl ServerContext {
    /// The caller a request's token names; without a token, the common name of its client
    /// certificate (at the current auth revision, as etcd's `AuthInfoFromTLS`), else empty
    /// (no user, revision 0); "invalid auth token" for an unknown or expired token, whether
    /// auth is on or not, as in etcd (a client then logs in again).
    pub fn caller(&self, md: &MetadataMap) -> Result<AuthInfo, ApiError> {
        let Some(token) = md
            .get(TOKEN_METADATA)
            .or_else(|| md.get(TOKEN_METADATA_GATEWAY))
        else {
            if let Some(cn) = md.get(CERT_USER_METADATA).and_then(|v| v.to_str().ok()) {
                let (_, revision) = self.store.auth_status()?;
                return Ok(AuthInfo {
                    username: cn.to_string(),
                    revision,
                });
            }
            return Ok(AuthInfo::default());
        };
        let token = token.to_str().map_err(|_| ApiError::InvalidAuthToken)?;
        Ok(self.store.auth_info(token)?)
    }

    /// Whether checks are needed at all: auth is on. Without it every call is permitted
    /// (a token, if any, must still be valid: see [`Self::caller`]).
    fn checking(&self) -> bool {
        self.store.auth_enabled()
    }

    /// etcd's `IsRangePermitted`.
    pub fn check_read(&self, ai: &AuthInfo, key: &[u8], end: &[u8]) -> Result<(), ApiError> {
        if !self.checking() {
            return Ok(());
        }
        Ok(self.store.auth_permitted(ai, key, end, Need::Read)?)
    }

    /// etcd's `doSerialize` tail: a read served while the auth store changed is refused,
    /// so that no answer reflects permissions older than the read.
    pub fn check_still_current(&self, ai: &AuthInfo) -> Result<(), ApiError> {
        if ai.revision == 0 {
            return Ok(());
        }
        let (_, now) = self.store.auth_status()?;
        if now != ai.revision {
            return Err(ApiError::AuthOldRevision);
        }
        Ok(())
    }

    /// etcd's `authApplierV3.Put`.
    pub fn check_put(&self, ai: &AuthInfo, r: &PutRequest) -> Result<(), ApiError> {
        if !self.checking() {
            return Ok(());
        }
        self.store.auth_permitted(ai, &r.key, &[], Need::Write)?;
        self.store.auth_lease_keys(ai, r.lease)?;
        if r.prev_kv {
            self.store.auth_permitted(ai, &r.key, &[], Need::Read)?;
        }
        Ok(())
    }

    /// etcd's `authApplierV3.DeleteRange`.
    pub fn check_delete(&self, ai: &AuthInfo, r: &DeleteRangeRequest) -> Result<(), ApiError> {
        if !self.checking() {
            return Ok(());
        }
        self.store
            .auth_permitted(ai, &r.key, &r.range_end, Need::Write)?;
        if r.prev_kv {
            self.store
                .auth_permitted(ai, &r.key, &r.range_end, Need::Read)?;
        }
        Ok(())
    }

    /// etcd's `checkTxnAuth`: every compare needs READ, every operation of both branches
    /// what it needs on its own (a nested txn's too).
    pub fn check_txn(&self, ai: &AuthInfo, t: &TxnRequest) -> Result<(), ApiError> {
        if !self.checking() {
            return Ok(());
        }
        for c in &t.compare {
            self.store
                .auth_permitted(ai, &c.key, &c.range_end, Need::Read)?;
        }
        self.check_ops(ai, &t.success)?;
        self.check_ops(ai, &t.failure)
    }

    fn check_ops(&self, ai: &AuthInfo, ops: &[RequestOp]) -> Result<(), ApiError> {
        for op in ops {
            match &op.request {
                Some(Op::RequestRange(r)) => {
                    self.store
                        .auth_permitted(ai, &r.key, &r.range_end, Need::Read)?;
                }
                Some(Op::RequestPut(p)) => {
                    self.store.auth_permitted(ai, &p.key, &[], Need::Write)?;
                }
                Some(Op::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        self.store
                            .auth_permitted(ai, &d.key, &d.range_end, Need::Read)?;
                    }
                    self.store
                        .auth_permitted(ai, &d.key, &d.range_end, Need::Write)?;
                }
                Some(Op::RequestTxn(t)) => self.check_txn(ai, t)?,
                None => {}
            }
        }
        Ok(())
    }

    /// etcd's `checkLeasePuts` for a LeaseRevoke: WRITE on every key of the lease.
    pub fn check_lease_revoke(&self, ai: &AuthInfo, lease: i64) -> Result<(), ApiError> {
        if !self.checking() {
            return Ok(());
        }
        Ok(self.store.auth_lease_keys(ai, lease)?)
    }

    /// The maintenance service's root check (`authMaintenanceServer.isAuthenticated`):
    /// etcd answers the auth store's errors unconverted, with code Unknown.
    pub fn check_admin_unconverted(&self, md: &MetadataMap) -> Result<(), ApiError> {
        self.check_admin(md).map_err(|e| {
            let raw = match &e {
                ApiError::UserEmpty => "auth: user name is empty",
                ApiError::UserNotFound => "auth: user not found",
                ApiError::PermissionDenied => "auth: permission denied",
                ApiError::InvalidAuthToken => "auth: invalid auth token",
                _ => return e,
            };
            ApiError::Unknown(raw.into())
        })
    }

    /// etcd's `IsAdminPermitted` for the caller of `md`: member and maintenance calls.
    pub fn check_admin(&self, md: &MetadataMap) -> Result<(), ApiError> {
        let ai = self.caller(md)?;
        if !self.checking() {
            return Ok(());
        }
        Ok(self.store.auth_admin(&ai)?)
    }
}
