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

fn setup_root(s: &MvccStore) {
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
