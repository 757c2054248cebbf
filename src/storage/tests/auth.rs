//! The auth store's rows: kept across a restart and carried by snapshots.

use super::*;
use crate::pb::etcdserverpb::{AuthUserAddRequest, AuthUserGrantRoleRequest};
use crate::pb::minietcdpb::internal_auth_request::Request as AuthReq;
use crate::pb::minietcdpb::InternalAuthRequest;

fn auth(s: &MvccStore, r: AuthReq) -> ApplyOutcome {
    apply(
        s,
        Request::Auth(InternalAuthRequest {
            username: "root".into(),
            auth_revision: 0,
            request: Some(r),
        }),
    )
}

pub(super) fn setup_root(s: &MvccStore) {
    auth(
        s,
        AuthReq::UserAdd(AuthUserAddRequest {
            name: "root".into(),
            hashed_password: "hash".into(),
            ..Default::default()
        }),
    );
    auth(
        s,
        AuthReq::UserGrantRole(AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        }),
    );
    let out = auth(s, AuthReq::Enable(Default::default()));
    assert_eq!(out.response.error, 0);
}

#[test]
fn auth_state_survives_restart_and_travels_in_snapshots() {
    let f = fixture();
    setup_root(&f.store);
    assert_eq!(f.store.auth_status().unwrap(), (true, 3));
    let snap = f.store.snapshot().unwrap();
    let f = f.restart();
    assert_eq!(f.store.auth_status().unwrap(), (true, 3));
    let (hash, rev) = f.store.password_hash("root").unwrap();
    assert_eq!((hash.as_slice(), rev), (&b"hash"[..], 3));

    let other = fixture();
    assert_eq!(other.store.auth_status().unwrap(), (false, 1));
    other.store.install_snapshot(&snap).unwrap();
    assert_eq!(other.store.auth_status().unwrap(), (true, 3));
    // A login's apply assigns the token on this member.
    let out = auth(
        &other.store,
        AuthReq::Authenticate(crate::pb::minietcdpb::InternalAuthenticateRequest {
            name: "root".into(),
            simple_token: "abc".into(),
        }),
    );
    assert_eq!(out.response.error, 0);
    let ai = other.store.auth_info("abc.3").unwrap();
    assert_eq!(ai.username, "root");
}

/// A client's put, checked for root at auth revision `rev`.
fn put_as_root(s: &MvccStore, key: &str, rev: u64) -> ApplyOutcome {
    s.apply(
        &InternalRequest {
            caller: Some(crate::pb::minietcdpb::Caller {
                username: "root".into(),
                auth_revision: rev,
            }),
            request: Some(Request::Put(PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        },
        b"applied",
    )
    .unwrap()
}

#[test]
fn a_write_checked_at_an_older_auth_revision_is_refused_at_apply() {
    let f = fixture();
    setup_root(&f.store);
    let (_, rev) = f.store.auth_status().unwrap();
    assert_eq!(put_as_root(&f.store, "a", rev).response.error, 0);
    // Permissions changed between the check and the apply: etcd's ErrAuthOldRevision.
    auth(
        &f.store,
        AuthReq::UserAdd(AuthUserAddRequest {
            name: "u".into(),
            hashed_password: "h".into(),
            ..Default::default()
        }),
    );
    let out = put_as_root(&f.store, "b", rev);
    assert_eq!(out.response.error, ApplyError::AuthOldRevision as i32);
    assert!(get(&f.store, "b", 0).unwrap().is_none());
    // The member's own writes carry no caller and are not checked.
    assert_eq!(put(&f.store, "c", "v").response.error, 0);
}
