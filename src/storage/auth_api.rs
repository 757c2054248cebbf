//! What the server asks of the auth store outside Raft: token lookups, password hashes for
//! a login, and permission checks against this member's applied auth state.

use std::time::Duration;

use super::auth::{no_password, AuthInfo};
use super::auth_perm::{self, Need};
use super::{MvccStore, StorageError};
use crate::pb::minietcdpb::ApplyError;

/// A refusal by the auth store, or a failure of the store itself.
#[derive(Debug, thiserror::Error)]
pub enum AuthCheckError {
    /// etcd's auth error for this case.
    #[error("auth: {0:?}")]
    Denied(ApplyError),
    /// An unknown or expired token.
    #[error("auth: invalid auth token")]
    InvalidToken,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<ApplyError> for AuthCheckError {
    fn from(e: ApplyError) -> Self {
        AuthCheckError::Denied(e)
    }
}

impl MvccStore {
    /// Sets `--auth-token-ttl`.
    pub fn set_auth_token_ttl(&self, ttl: Duration) {
        self.tokens.set_ttl(ttl);
    }

    /// Whether auth is enabled (without the state lock: the request path asks it of every
    /// call).
    pub fn auth_enabled(&self) -> bool {
        self.tokens.enabled()
    }

    /// Whether auth is enabled, and the auth revision.
    pub fn auth_status(&self) -> Result<(bool, u64), StorageError> {
        let st = self.read_state()?;
        Ok((st.auth.enabled, st.auth.revision))
    }

    /// etcd's `AuthInfoFromCtx` for a token: its user at the current auth revision, or
    /// "invalid auth token" for an unknown or expired one.
    pub fn auth_info(&self, token: &str) -> Result<AuthInfo, AuthCheckError> {
        let user = self
            .tokens
            .user(token)
            .ok_or(AuthCheckError::InvalidToken)?;
        let revision = self.read_state()?.auth.revision;
        Ok(AuthInfo {
            username: user,
            revision,
        })
    }

    /// etcd's `CheckPassword`, first half: the user's bcrypt hash and the auth revision it
    /// was read at (the caller compares the password off the store's locks).
    pub fn password_hash(&self, name: &str) -> Result<(Vec<u8>, u64), AuthCheckError> {
        let st = self.read_state()?;
        if !st.auth.enabled {
            return Err(ApplyError::AuthNotEnabled.into());
        }
        let user = st.auth.users.get(name).ok_or(ApplyError::AuthFailed)?;
        if no_password(user) {
            return Err(ApplyError::AuthFailed.into());
        }
        Ok((user.password.clone(), st.auth.revision))
    }

    /// etcd's `IsRangePermitted` / `IsPutPermitted` / `IsDeleteRangePermitted`.
    pub fn auth_permitted(
        &self,
        ai: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
        need: Need,
    ) -> Result<(), AuthCheckError> {
        let st = self.read_state()?;
        Ok(auth_perm::op_permitted(&st.auth, ai, key, range_end, need)?)
    }

    /// etcd's `IsAdminPermitted`.
    pub fn auth_admin(&self, ai: &AuthInfo) -> Result<(), AuthCheckError> {
        let st = self.read_state()?;
        Ok(auth_perm::admin_permitted(&st.auth, ai)?)
    }

    /// etcd's `checkLeasePuts`: WRITE on every key attached to the lease.
    pub fn auth_lease_keys(&self, ai: &AuthInfo, lease: i64) -> Result<(), AuthCheckError> {
        let st = self.read_state()?;
        if !st.auth.enabled {
            return Ok(());
        }
        if let Some(l) = st.leases.get(&lease) {
            for key in &l.keys {
                auth_perm::op_permitted(&st.auth, ai, key, &[], Need::Write)?;
            }
        }
        Ok(())
    }
}
