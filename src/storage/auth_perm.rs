//! Permission checks of the auth store (etcd's `isOpPermitted`, `IsAdminPermitted` and the
//! range permission cache): a user with the root role may do anything; anyone else needs
//! a role whose permissions cover the keys.
//!
//! A permission is a key range: `key` alone is one key; `key`..`range_end` is a half-open
//! interval; a `range_end` of `"\0"` reaches to the end of the key space. A point request
//! is permitted when one permission holds the key; a range request when the union of the
//! user's permissions covers the whole range: with READ on `a`..`c` and on `c`..`e`, a
//! range over `b`..`d` is permitted, one over `b`..`f` is not.

use std::cmp::Ordering;

use super::auth::{has_root_role, AuthInfo, AuthState};
use crate::pb::authpb::permission::Type as PermType;
use crate::pb::minietcdpb::ApplyError;

/// What an operation needs of a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Range, Watch, compares, prev_kv.
    Read,
    /// Put, DeleteRange, revoking a lease's keys.
    Write,
}

/// etcd's `IsAdminPermitted`: nothing to check while auth is off; otherwise the caller must
/// be a known user holding the root role.
pub(crate) fn admin_permitted(st: &AuthState, ai: &AuthInfo) -> Result<(), ApplyError> {
    if !st.enabled {
        return Ok(());
    }
    if ai.username.is_empty() {
        return Err(ApplyError::UserEmpty);
    }
    let user = st.users.get(&ai.username).ok_or(ApplyError::UserNotFound)?;
    if has_root_role(user) {
        Ok(())
    } else {
        Err(ApplyError::PermissionDenied)
    }
}

/// etcd's `isOpPermitted`: a request without a token is refused ("user name is empty"), one
/// looked up at an older auth revision is refused ("revision of auth store is old").
pub(crate) fn op_permitted(
    st: &AuthState,
    ai: &AuthInfo,
    key: &[u8],
    range_end: &[u8],
    need: Need,
) -> Result<(), ApplyError> {
    if !st.enabled {
        return Ok(());
    }
    if ai.revision == 0 {
        return Err(ApplyError::UserEmpty);
    }
    if ai.revision < st.revision {
        return Err(ApplyError::AuthOldRevision);
    }
    let user = st
        .users
        .get(&ai.username)
        .ok_or(ApplyError::PermissionDenied)?;
    if has_root_role(user) {
        return Ok(());
    }
    let mut ivls: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for role in user.roles.iter().filter_map(|r| st.roles.get(r)) {
        for p in &role.key_permission {
            let grants = match PermType::try_from(p.perm_type) {
                Ok(PermType::Readwrite) => true,
                Ok(PermType::Read) => need == Need::Read,
                Ok(PermType::Write) => need == Need::Write,
                Err(_) => false,
            };
            if grants {
                ivls.push(interval(&p.key, &p.range_end));
            }
        }
    }
    let ok = if range_end.is_empty() {
        ivls.iter()
            .any(|(b, e)| affine(b, key) != Ordering::Greater && affine(key, e) == Ordering::Less)
    } else {
        let end: &[u8] = if range_end == [0] { &[] } else { range_end };
        covers(&mut ivls, key, end)
    };
    if ok {
        Ok(())
    } else {
        Err(ApplyError::PermissionDenied)
    }
}

/// A permission as a half-open interval `[begin, end)`; an empty end is the end of the key
/// space. A single key `k` is `[k, k\0)`.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if range_end.is_empty() {
        (key.to_vec(), [key, &[0]].concat())
    } else if range_end == [0] {
        (key.to_vec(), Vec::new())
    } else {
        (key.to_vec(), range_end.to_vec())
    }
}

/// Compares interval bounds the way etcd's `BytesAffineComparable` does: the empty bound is
/// greater than every key.
fn affine(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// Whether the union of `ivls` covers `[key, end)` (`end` empty: to the end of the space),
/// etcd's `IntervalTree.Contains`: walking the intervals by their start, the covered prefix
/// `[key, reach)` grows until it reaches `end` or meets a gap.
fn covers(ivls: &mut [(Vec<u8>, Vec<u8>)], key: &[u8], end: &[u8]) -> bool {
    ivls.sort_by(|a, b| affine(&a.0, &b.0));
    let mut reach: Vec<u8> = key.to_vec();
    for (b, e) in ivls.iter() {
        if affine(&reach, end) != Ordering::Less {
            return true;
        }
        if affine(b, &reach) == Ordering::Greater {
            return false;
        }
        if affine(e, &reach) == Ordering::Greater {
            reach.clone_from(e);
        }
    }
    affine(&reach, end) != Ordering::Less
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::authpb::{Permission, Role, User};

    fn state(perms: &[(&str, &str, PermType)]) -> AuthState {
        let mut st = AuthState {
            enabled: true,
            ..AuthState::default()
        };
        st.roles.insert(
            "r".into(),
            Role {
                name: b"r".to_vec(),
                key_permission: perms
                    .iter()
                    .map(|(k, e, t)| Permission {
                        perm_type: *t as i32,
                        key: k.as_bytes().to_vec(),
                        range_end: e.as_bytes().to_vec(),
                    })
                    .collect(),
            },
        );
        st.users.insert(
            "u".into(),
            User {
                name: b"u".to_vec(),
                roles: vec!["r".into()],
                ..User::default()
            },
        );
        st
    }

    fn check(st: &AuthState, k: &str, e: &str, need: Need) -> Result<(), ApplyError> {
        let ai = AuthInfo {
            username: "u".into(),
            revision: st.revision,
        };
        op_permitted(st, &ai, k.as_bytes(), e.as_bytes(), need)
    }

    #[test]
    fn ranges_are_covered_by_the_union_of_permissions() {
        let st = state(&[
            ("a", "c", PermType::Read),
            ("c", "e", PermType::Readwrite),
            ("x", "", PermType::Write),
        ]);
        assert_eq!(check(&st, "b", "d", Need::Read), Ok(()));
        assert_eq!(check(&st, "b", "", Need::Read), Ok(()));
        assert_eq!(
            check(&st, "b", "f", Need::Read),
            Err(ApplyError::PermissionDenied)
        );
        assert_eq!(
            check(&st, "b", "", Need::Write),
            Err(ApplyError::PermissionDenied)
        );
        assert_eq!(check(&st, "d", "", Need::Write), Ok(()));
        assert_eq!(check(&st, "x", "", Need::Write), Ok(()));
        assert_eq!(check(&st, "x", "x\0", Need::Write), Ok(()));
        assert_eq!(
            check(&st, "x", "y", Need::Write),
            Err(ApplyError::PermissionDenied)
        );
    }

    #[test]
    fn open_ended_permission_covers_everything_after() {
        let st = state(&[("k", "\0", PermType::Read)]);
        assert_eq!(check(&st, "k", "\0", Need::Read), Ok(()));
        assert_eq!(check(&st, "z", "zz", Need::Read), Ok(()));
        assert_eq!(
            check(&st, "a", "\0", Need::Read),
            Err(ApplyError::PermissionDenied)
        );
    }

    #[test]
    fn no_token_and_old_revision_are_refused() {
        let st = state(&[]);
        let none = AuthInfo::default();
        assert_eq!(
            op_permitted(&st, &none, b"k", b"", Need::Read),
            Err(ApplyError::UserEmpty)
        );
        let old = AuthInfo {
            username: "u".into(),
            revision: 0,
        };
        assert_eq!(
            op_permitted(&st, &old, b"k", b"", Need::Read),
            Err(ApplyError::UserEmpty)
        );
        let mut newer = st.clone();
        newer.revision += 1;
        let ai = AuthInfo {
            username: "u".into(),
            revision: st.revision,
        };
        assert_eq!(
            op_permitted(&newer, &ai, b"k", b"", Need::Read),
            Err(ApplyError::AuthOldRevision)
        );
    }
}
