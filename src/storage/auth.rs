//! The auth store (etcd's `auth.authStore`): users, roles, their key permissions and the
//! enabled flag, changed only through Raft, so every member holds the same. Rows live in the
//! store's tree and are written in the same sled batch as the applied index: they survive a
//! restart, travel in Raft snapshots and in Maintenance.Snapshot files, and are rebuilt by
//! [`super::backend::recover`].
//!
//! Rows (prefix `A`):
//! - `A/enabled`: one byte, 1 when auth is on (etcd's `authEnabled`);
//! - `A/revision`: the auth revision (u64 BE), bumped by every change; a fresh store is at 1;
//! - `A/u/<name>`: an `authpb.User` (the password as a bcrypt hash, never in clear);
//! - `A/r/<name>`: an `authpb.Role`.
//!
//! Passwords are hashed by the proposing member before the write enters Raft, and logins are
//! checked against the hash there too (etcd's `CheckPassword`): apply stays cheap and
//! deterministic. The apply of a login assigns the token on every member (see
//! [`super::auth_tokens`]).

use std::collections::BTreeMap;

use prost::Message;

use super::auth_perm;
use super::auth_tokens::Tokens;
use super::error::StorageError;
use crate::pb::authpb::{Permission, Role, User};
use crate::pb::etcdserverpb::{
    AuthDisableResponse, AuthEnableResponse, AuthRoleAddResponse, AuthRoleDeleteResponse,
    AuthRoleGetResponse, AuthRoleGrantPermissionResponse, AuthRoleListResponse,
    AuthRoleRevokePermissionResponse, AuthUserAddResponse, AuthUserChangePasswordResponse,
    AuthUserDeleteResponse, AuthUserGetResponse, AuthUserGrantRoleResponse, AuthUserListResponse,
    AuthUserRevokeRoleResponse, AuthenticateResponse,
};
use crate::pb::minietcdpb::internal_auth_request::Request as AuthReq;
use crate::pb::minietcdpb::internal_auth_response::Response as AuthResp;
use crate::pb::minietcdpb::{ApplyError, InternalAuthRequest, InternalAuthResponse};

/// First byte of auth rows.
pub(crate) const AUTH_PREFIX: u8 = b'A';
/// The enabled flag's row.
pub(crate) const ENABLED_KEY: &[u8] = b"A/enabled";
/// The auth revision's row.
pub(crate) const REVISION_KEY: &[u8] = b"A/revision";
/// Prefix of user rows.
pub(crate) const USER_PREFIX: &[u8] = b"A/u/";
/// Prefix of role rows.
pub(crate) const ROLE_PREFIX: &[u8] = b"A/r/";
/// etcd's built-in root user and role.
pub(crate) const ROOT: &str = "root";
/// The auth revision of a store that never changed auth (etcd commits 1 on creation).
const FIRST_AUTH_REVISION: u64 = 1;

/// Users, roles and the enabled flag, as the rows hold them.
#[derive(Debug, Clone)]
pub(crate) struct AuthState {
    /// Whether requests are checked.
    pub enabled: bool,
    /// Bumped by every change; a token's requests made at an older revision are refused
    /// (etcd's ErrAuthOldRevision).
    pub revision: u64,
    /// name -> user.
    pub users: BTreeMap<String, User>,
    /// name -> role.
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            enabled: false,
            revision: FIRST_AUTH_REVISION,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// Who a request comes from, as its token says (etcd's `AuthInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    /// The user; empty for a request without a token.
    pub username: String,
    /// The auth revision when the token was looked up; 0 without a token.
    pub revision: u64,
}

/// Rebuilds the state from one auth row.
pub(crate) fn recover_row(st: &mut AuthState, k: &[u8], v: &[u8]) -> Result<(), StorageError> {
    let bad = |what: &str| StorageError::Corrupt(format!("auth row {k:?}: {what}"));
    if k == ENABLED_KEY {
        st.enabled = v == [1];
    } else if k == REVISION_KEY {
        let b: [u8; 8] = v.try_into().map_err(|_| bad("bad revision"))?;
        st.revision = u64::from_be_bytes(b);
    } else if let Some(name) = k.strip_prefix(USER_PREFIX) {
        let user = User::decode(v).map_err(|e| bad(&e.to_string()))?;
        st.users.insert(utf8(name).map_err(|_| bad("name"))?, user);
    } else if let Some(name) = k.strip_prefix(ROLE_PREFIX) {
        let role = Role::decode(v).map_err(|e| bad(&e.to_string()))?;
        st.roles.insert(utf8(name).map_err(|_| bad("name"))?, role);
    } else {
        return Err(bad("unknown auth row"));
    }
    Ok(())
}

fn utf8(b: &[u8]) -> Result<String, std::string::FromUtf8Error> {
    String::from_utf8(b.to_vec())
}

fn user_key(name: &str) -> Vec<u8> {
    [USER_PREFIX, name.as_bytes()].concat()
}

fn role_key(name: &str) -> Vec<u8> {
    [ROLE_PREFIX, name.as_bytes()].concat()
}

/// The changes of one auth apply, written to the group's batch.
struct Writer<'a> {
    st: &'a mut AuthState,
    batch: &'a mut sled::Batch,
}

impl Writer<'_> {
    fn put_user(&mut self, u: User) {
        let name = String::from_utf8_lossy(&u.name).into_owned();
        self.batch.insert(user_key(&name), u.encode_to_vec());
        self.st.users.insert(name, u);
    }

    fn put_role(&mut self, r: Role) {
        let name = String::from_utf8_lossy(&r.name).into_owned();
        self.batch.insert(role_key(&name), r.encode_to_vec());
        self.st.roles.insert(name, r);
    }

    fn set_enabled(&mut self, on: bool) {
        self.st.enabled = on;
        self.batch.insert(ENABLED_KEY, &[u8::from(on)][..]);
    }

    /// etcd's `commitRevision`.
    fn bump(&mut self) {
        self.st.revision += 1;
        self.batch
            .insert(REVISION_KEY, &self.st.revision.to_be_bytes()[..]);
    }
}

/// Whether the call needs root at apply (etcd's `needAdminPermission`).
fn needs_admin(r: &AuthReq) -> bool {
    !matches!(
        r,
        AuthReq::Authenticate(_) | AuthReq::UserGet(_) | AuthReq::RoleGet(_)
    )
}

/// Applies one Auth call (etcd's `authApplierV3` around `authStore`): the root check first,
/// then the call. Token changes (login, user removed, password changed, auth disabled) go
/// to `tokens`, this member's in-memory token table.
pub(crate) fn apply(
    st: &mut AuthState,
    tokens: &Tokens,
    req: &InternalAuthRequest,
    batch: &mut sled::Batch,
) -> Result<InternalAuthResponse, ApplyError> {
    let Some(r) = &req.request else {
        return Err(ApplyError::InvalidAuthMgmt);
    };
    let caller = AuthInfo {
        username: req.username.clone(),
        revision: req.auth_revision,
    };
    let admin = auth_perm::admin_permitted(st, &caller);
    if needs_admin(r) {
        admin?;
    }
    let mut w = Writer { st, batch };
    let resp = match r {
        AuthReq::Enable(_) => {
            if !w.st.enabled {
                let root = w.st.users.get(ROOT).ok_or(ApplyError::RootUserNotExist)?;
                if !has_root_role(root) {
                    return Err(ApplyError::RootRoleNotExist);
                }
                w.set_enabled(true);
                tracing::info!("authentication enabled");
            }
            AuthResp::Enable(AuthEnableResponse::default())
        }
        AuthReq::Disable(_) => {
            if w.st.enabled {
                w.set_enabled(false);
                w.bump();
                tokens.clear();
                tracing::info!("authentication disabled");
            }
            AuthResp::Disable(AuthDisableResponse::default())
        }
        AuthReq::Authenticate(a) => {
            if !w.st.enabled {
                return Err(ApplyError::AuthNotEnabled);
            }
            let user = w.st.users.get(&a.name).ok_or(ApplyError::AuthFailed)?;
            if no_password(user) {
                return Err(ApplyError::AuthFailed);
            }
            let token = format!("{}.{}", a.simple_token, w.st.revision);
            tokens.assign(&token, &a.name);
            AuthResp::Authenticate(AuthenticateResponse {
                header: None,
                token,
            })
        }
        AuthReq::UserAdd(a) => {
            if a.name.is_empty() {
                return Err(ApplyError::UserEmpty);
            }
            if w.st.users.contains_key(&a.name) {
                return Err(ApplyError::UserAlreadyExist);
            }
            w.put_user(User {
                name: a.name.clone().into_bytes(),
                password: a.hashed_password.clone().into_bytes(),
                roles: Vec::new(),
                options: Some(a.options.unwrap_or_default()),
            });
            w.bump();
            tracing::info!(user = %a.name, "added a user");
            AuthResp::UserAdd(AuthUserAddResponse::default())
        }
        AuthReq::UserGet(g) => {
            // A user may read itself; anyone else needs root.
            if admin.is_err() && g.name != caller.username {
                admin?;
            }
            let user = w.st.users.get(&g.name).ok_or(ApplyError::UserNotFound)?;
            AuthResp::UserGet(AuthUserGetResponse {
                header: None,
                roles: user.roles.clone(),
            })
        }
        AuthReq::UserList(_) => AuthResp::UserList(AuthUserListResponse {
            header: None,
            users: w.st.users.keys().cloned().collect(),
        }),
        AuthReq::UserDelete(d) => {
            if w.st.enabled && d.name == ROOT {
                return Err(ApplyError::InvalidAuthMgmt);
            }
            if w.st.users.remove(&d.name).is_none() {
                return Err(ApplyError::UserNotFound);
            }
            w.batch.remove(user_key(&d.name));
            w.bump();
            tokens.invalidate_user(&d.name);
            tracing::info!(user = %d.name, "deleted a user");
            AuthResp::UserDelete(AuthUserDeleteResponse::default())
        }
        AuthReq::UserChangePassword(c) => {
            let mut user =
                w.st.users
                    .get(&c.name)
                    .cloned()
                    .ok_or(ApplyError::UserNotFound)?;
            user.password = c.hashed_password.clone().into_bytes();
            w.put_user(user);
            w.bump();
            tokens.invalidate_user(&c.name);
            tracing::info!(user = %c.name, "changed a user's password");
            AuthResp::UserChangePassword(AuthUserChangePasswordResponse::default())
        }
        AuthReq::UserGrantRole(g) => {
            let mut user =
                w.st.users
                    .get(&g.user)
                    .cloned()
                    .ok_or(ApplyError::UserNotFound)?;
            if g.role != ROOT && !w.st.roles.contains_key(&g.role) {
                return Err(ApplyError::RoleNotFound);
            }
            if let Err(at) = user.roles.binary_search(&g.role) {
                user.roles.insert(at, g.role.clone());
                w.put_user(user);
                w.bump();
                tracing::info!(user = %g.user, role = %g.role, "granted a role");
            }
            AuthResp::UserGrantRole(AuthUserGrantRoleResponse::default())
        }
        AuthReq::UserRevokeRole(r) => {
            if w.st.enabled && r.name == ROOT && r.role == ROOT {
                return Err(ApplyError::InvalidAuthMgmt);
            }
            let mut user =
                w.st.users
                    .get(&r.name)
                    .cloned()
                    .ok_or(ApplyError::UserNotFound)?;
            let before = user.roles.len();
            user.roles.retain(|x| *x != r.role);
            if user.roles.len() == before {
                return Err(ApplyError::RoleNotGranted);
            }
            w.put_user(user);
            w.bump();
            tracing::info!(user = %r.name, role = %r.role, "revoked a role");
            AuthResp::UserRevokeRole(AuthUserRevokeRoleResponse::default())
        }
        AuthReq::RoleAdd(a) => {
            if a.name.is_empty() {
                return Err(ApplyError::RoleEmpty);
            }
            if w.st.roles.contains_key(&a.name) {
                return Err(ApplyError::RoleAlreadyExist);
            }
            w.put_role(Role {
                name: a.name.clone().into_bytes(),
                key_permission: Vec::new(),
            });
            w.bump();
            tracing::info!(role = %a.name, "added a role");
            AuthResp::RoleAdd(AuthRoleAddResponse::default())
        }
        AuthReq::RoleGet(g) => {
            // A user may read its own roles; anyone else needs root.
            let own =
                w.st.users
                    .get(&caller.username)
                    .is_some_and(|u| u.roles.contains(&g.role));
            if admin.is_err() && !own {
                admin?;
            }
            let role = w.st.roles.get(&g.role).ok_or(ApplyError::RoleNotFound)?;
            AuthResp::RoleGet(AuthRoleGetResponse {
                header: None,
                perm: role.key_permission.clone(),
            })
        }
        AuthReq::RoleList(_) => AuthResp::RoleList(AuthRoleListResponse {
            header: None,
            roles: w.st.roles.keys().cloned().collect(),
        }),
        AuthReq::RoleDelete(d) => {
            if w.st.enabled && d.role == ROOT {
                return Err(ApplyError::InvalidAuthMgmt);
            }
            if w.st.roles.remove(&d.role).is_none() {
                return Err(ApplyError::RoleNotFound);
            }
            w.batch.remove(role_key(&d.role));
            let holders: Vec<User> =
                w.st.users
                    .values()
                    .filter(|u| u.roles.contains(&d.role))
                    .cloned()
                    .collect();
            for mut u in holders {
                u.roles.retain(|x| *x != d.role);
                w.put_user(u);
            }
            w.bump();
            tracing::info!(role = %d.role, "deleted a role");
            AuthResp::RoleDelete(AuthRoleDeleteResponse::default())
        }
        AuthReq::RoleGrantPermission(g) => {
            let mut role =
                w.st.roles
                    .get(&g.name)
                    .cloned()
                    .ok_or(ApplyError::RoleNotFound)?;
            let perm = g.perm.clone().unwrap_or_default();
            grant_permission(&mut role.key_permission, perm);
            w.put_role(role);
            w.bump();
            tracing::info!(role = %g.name, "granted a permission");
            AuthResp::RoleGrantPermission(AuthRoleGrantPermissionResponse::default())
        }
        AuthReq::RoleRevokePermission(r) => {
            let mut role =
                w.st.roles
                    .get(&r.role)
                    .cloned()
                    .ok_or(ApplyError::RoleNotFound)?;
            let before = role.key_permission.len();
            role.key_permission
                .retain(|p| p.key != r.key || p.range_end != r.range_end);
            if role.key_permission.len() == before {
                return Err(ApplyError::PermissionNotGranted);
            }
            w.put_role(role);
            w.bump();
            tracing::info!(role = %r.role, "revoked a permission");
            AuthResp::RoleRevokePermission(AuthRoleRevokePermissionResponse::default())
        }
    };
    tokens.set_enabled(w.st.enabled);
    Ok(InternalAuthResponse {
        response: Some(resp),
    })
}

/// etcd's RoleGrantPermission: the same key and range end replace the type; otherwise the
/// permission joins, kept sorted by key (a stable sort, as etcd's).
fn grant_permission(perms: &mut Vec<Permission>, perm: Permission) {
    let at = perms.partition_point(|p| p.key < perm.key);
    if let Some(p) = perms
        .get_mut(at)
        .filter(|p| p.key == perm.key && p.range_end == perm.range_end)
    {
        p.perm_type = perm.perm_type;
        return;
    }
    perms.push(perm);
    perms.sort_by(|a, b| a.key.cmp(&b.key));
}

/// Whether the user holds the root role.
pub(crate) fn has_root_role(u: &User) -> bool {
    u.roles.iter().any(|r| r == ROOT)
}

/// A user added with `--no-password` cannot log in with a password.
pub(crate) fn no_password(u: &User) -> bool {
    u.options.is_some_and(|o| o.no_password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{
        AuthRoleAddRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
    };

    fn call(st: &mut AuthState, r: AuthReq) -> Result<InternalAuthResponse, ApplyError> {
        let tokens = Tokens::default();
        let mut batch = sled::Batch::default();
        apply(
            st,
            &tokens,
            &InternalAuthRequest {
                username: String::new(),
                auth_revision: 0,
                request: Some(r),
            },
            &mut batch,
        )
    }

    #[test]
    fn enable_needs_root_with_root_role() {
        let mut st = AuthState::default();
        assert_eq!(
            call(&mut st, AuthReq::Enable(Default::default())),
            Err(ApplyError::RootUserNotExist)
        );
        call(
            &mut st,
            AuthReq::UserAdd(AuthUserAddRequest {
                name: ROOT.into(),
                ..Default::default()
            }),
        )
        .unwrap();
        assert_eq!(
            call(&mut st, AuthReq::Enable(Default::default())),
            Err(ApplyError::RootRoleNotExist)
        );
        call(
            &mut st,
            AuthReq::UserGrantRole(AuthUserGrantRoleRequest {
                user: ROOT.into(),
                role: ROOT.into(),
            }),
        )
        .unwrap();
        call(&mut st, AuthReq::Enable(Default::default())).unwrap();
        assert!(st.enabled);
        assert_eq!(st.revision, 3);
        // Now root is needed for admin calls.
        assert_eq!(
            call(
                &mut st,
                AuthReq::RoleAdd(AuthRoleAddRequest { name: "r".into() })
            ),
            Err(ApplyError::UserEmpty)
        );
    }

    #[test]
    fn grant_keeps_permissions_sorted_and_replaces_same_range() {
        let p = |k: &str, e: &str, t: i32| Permission {
            perm_type: t,
            key: k.into(),
            range_end: e.into(),
        };
        let mut perms = vec![];
        grant_permission(&mut perms, p("b", "", 0));
        grant_permission(&mut perms, p("a", "b", 0));
        grant_permission(&mut perms, p("b", "", 2));
        assert_eq!(perms, vec![p("a", "b", 0), p("b", "", 2)]);
    }
}
