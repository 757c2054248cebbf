//! Bad input: malformed and extreme requests to every RPC of KV, Watch, Lease, Cluster,
//! Maintenance and Auth, sent to a one-member etcd 3.4 and a one-member minietcd, must get the
//! same gRPC code and message (or, for a request that succeeds, the same outcome); and garbage
//! bytes on the client and peer ports of a three-member minietcd cluster must never make a
//! member panic or stop serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use minietcd::pb::authpb::{Permission, UserAddOptions};
use minietcd::pb::etcdserverpb::{
    compare, request_op, watch_request, AlarmRequest, AuthDisableRequest, AuthEnableRequest,
    AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGetRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGetRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
    AuthenticateRequest, CompactionRequest, Compare, DeleteRangeRequest, HashKvRequest,
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest, MoveLeaderRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCancelRequest, WatchCreateRequest, WatchRequest,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use tonic::{Response, Status};

use crate::differential::RawClients;
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::wait_until_async;

/// A request's outcome: "ok" (with whatever the case adds) or the gRPC code and message.
fn out<T>(r: Result<Response<T>, Status>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

fn put(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

fn del(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
                ..Default::default()
            },
        )),
    }
}

fn nested(depth: usize, leaf: RequestOp) -> RequestOp {
    let mut op = leaf;
    for _ in 0..depth {
        op = RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                success: vec![op],
                ..Default::default()
            })),
        };
    }
    op
}

fn cmp(result: i32, target: i32, union: Option<compare::TargetUnion>) -> Compare {
    Compare {
        result,
        target,
        key: b"k".to_vec(),
        range_end: Vec::new(),
        target_union: union,
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure: Vec::new(),
    }
}

/// Bigger than --max-request-bytes (1.5 MiB), within gRPC's receive limit (+512 KiB).
const TOO_LARGE: usize = 1536 * 1024 + 100;
/// Above gRPC's receive limit (2 MiB).
const OVERSIZED: usize = 3 << 20;

/// Every malformed or extreme unary request, by name.
fn unary_cases() -> Vec<&'static str> {
    vec![
        "range empty key",
        "range all keys",
        "range negative limit",
        "range negative revision",
        "range max revision",
        "range invalid sort order",
        "range negative sort order",
        "range negative filters",
        "range keys and count only",
        "range reversed range_end",
        "range key too large",
        "range oversized",
        "put empty key",
        "put empty value",
        "put missing lease",
        "put negative lease",
        "put ignore value with value",
        "put ignore value missing key",
        "put ignore lease with lease",
        "put too large",
        "put oversized",
        "put binary key",
        "delete empty key",
        "delete reversed range",
        "delete from key",
        "txn empty",
        "txn too many ops",
        "txn 128 ops",
        "txn deep nesting",
        "txn duplicate put",
        "txn put inside deleted range",
        "txn duplicate across nesting",
        "txn empty op",
        "txn compare without union",
        "txn compare target mismatch",
        "txn compare invalid result",
        "txn compare invalid target",
        "txn compare empty key",
        "txn op empty key",
        "txn oversized",
        "compact negative",
        "compact zero",
        "compact max",
        "lease grant zero ttl",
        "lease grant negative ttl",
        "lease grant huge ttl",
        "lease grant negative id",
        "lease grant duplicate id",
        "lease revoke zero",
        "lease revoke missing",
        "lease ttl missing",
        "lease ttl negative",
        "member add bad url",
        "member add no urls",
        "member add existing url",
        "member remove missing",
        "member remove zero",
        "member update missing",
        "member update bad url",
        "member promote missing",
        "alarm invalid type",
        "alarm activate missing member",
        "hashkv negative",
        "hashkv future",
        "move leader zero",
        "move leader missing",
        "authenticate disabled",
        "user add empty name",
        "user add empty password",
        "user add no password option",
        "user get missing",
        "user delete missing",
        "user change password missing",
        "user grant missing role",
        "user revoke missing",
        "role add empty",
        "role get missing",
        "role delete missing",
        "role grant invalid perm type",
        "role revoke missing",
        "auth enable without root",
        "auth disable when disabled",
    ]
}

/// Sends case `name`; the outcome, normalised.
async fn unary(c: &mut RawClients, name: &str) -> String {
    let big = vec![b'k'; TOO_LARGE];
    let huge = vec![b'k'; OVERSIZED];
    let range = |f: fn(&mut RangeRequest)| {
        let mut r = RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    match name {
        "range empty key" => out(c.kv.range(range(|r| r.key.clear())).await),
        "range all keys" => {
            let r =
                c.kv.range(range(|r| {
                    r.key = vec![0];
                    r.range_end = vec![0];
                    r.count_only = true;
                }))
                .await;
            out(r)
        }
        "range negative limit" => out(c.kv.range(range(|r| r.limit = -5)).await),
        "range negative revision" => out(c.kv.range(range(|r| r.revision = -1)).await),
        "range max revision" => out(c.kv.range(range(|r| r.revision = i64::MAX)).await),
        "range invalid sort order" => out(c.kv.range(range(|r| r.sort_order = 7)).await),
        "range invalid sort target" => out(c
            .kv
            .range(range(|r| {
                r.sort_order = 1;
                r.sort_target = 99;
            }))
            .await),
        "range negative sort order" => out(c.kv.range(range(|r| r.sort_order = -1)).await),
        "range negative filters" => out(c
            .kv
            .range(range(|r| {
                r.min_mod_revision = -1;
                r.max_mod_revision = -1;
                r.min_create_revision = -1;
                r.max_create_revision = -1;
            }))
            .await),
        "range keys and count only" => out(c
            .kv
            .range(range(|r| {
                r.keys_only = true;
                r.count_only = true;
            }))
            .await),
        "range reversed range_end" => out(c.kv.range(range(|r| r.range_end = b"a".to_vec())).await),
        "range key too large" => out(c
            .kv
            .range(RangeRequest {
                key: big,
                ..Default::default()
            })
            .await),
        "range oversized" => out(c
            .kv
            .range(RangeRequest {
                key: huge,
                ..Default::default()
            })
            .await),
        "put empty key" => out(c.kv.put(PutRequest::default()).await),
        "put empty value" => out(c
            .kv
            .put(PutRequest {
                key: b"bad/empty".to_vec(),
                ..Default::default()
            })
            .await),
        "put missing lease" => out(c
            .kv
            .put(PutRequest {
                key: b"bad/l".to_vec(),
                lease: 0x7777,
                ..Default::default()
            })
            .await),
        "put negative lease" => out(c
            .kv
            .put(PutRequest {
                key: b"bad/l".to_vec(),
                lease: -9,
                ..Default::default()
            })
            .await),
        "put ignore value with value" => out(c
            .kv
            .put(PutRequest {
                key: b"bad/iv".to_vec(),
                value: b"v".to_vec(),
                ignore_value: true,
                ..Default::default()
            })
            .await),
        "put ignore value missing key" => out(c
            .kv
            .put(PutRequest {
                key: b"bad/missing".to_vec(),
                ignore_value: true,
                ..Default::default()
            })
            .await),
        "put ignore lease with lease" => out(c
            .kv
            .put(PutRequest {
                key: b"bad/il".to_vec(),
                lease: 5,
                ignore_lease: true,
                ..Default::default()
            })
            .await),
        "put too large" => out(c
            .kv
            .put(PutRequest {
                key: b"bad/big".to_vec(),
                value: big,
                ..Default::default()
            })
            .await),
        "put oversized" => out(c
            .kv
            .put(PutRequest {
                key: b"bad/huge".to_vec(),
                value: huge,
                ..Default::default()
            })
            .await),
        "put binary key" => out(c
            .kv
            .put(PutRequest {
                key: vec![0, 0xff, 0xfe, b'\n'],
                value: vec![0xff; 3],
                ..Default::default()
            })
            .await),
        "delete empty key" => out(c.kv.delete_range(DeleteRangeRequest::default()).await),
        "delete reversed range" => out(c
            .kv
            .delete_range(DeleteRangeRequest {
                key: b"bad/z".to_vec(),
                range_end: b"bad/a".to_vec(),
                prev_kv: true,
            })
            .await),
        "delete from key" => {
            let r =
                c.kv.delete_range(DeleteRangeRequest {
                    key: b"bad/zzz".to_vec(),
                    range_end: vec![0],
                    prev_kv: false,
                })
                .await;
            match r {
                Ok(r) => format!("ok deleted {}", r.into_inner().deleted),
                Err(s) => out::<()>(Err(s)),
            }
        }
        "txn empty" => out(c.kv.txn(TxnRequest::default()).await),
        "txn too many ops" => {
            let ops = (0..129)
                .map(|i| put(format!("t{i}").as_bytes(), b"v"))
                .collect();
            out(c.kv.txn(txn(Vec::new(), ops)).await)
        }
        "txn 128 ops" => {
            let ops = (0..128)
                .map(|i| put(format!("t{i}").as_bytes(), b"v"))
                .collect();
            out(c.kv.txn(txn(Vec::new(), ops)).await)
        }
        "txn deep nesting" => out(c
            .kv
            .txn(txn(Vec::new(), vec![nested(30, put(b"deep", b"v"))]))
            .await),
        "txn deeper nesting" => out(c
            .kv
            .txn(txn(Vec::new(), vec![nested(60, put(b"deep", b"v"))]))
            .await),
        "txn duplicate put" => out(c
            .kv
            .txn(txn(Vec::new(), vec![put(b"d", b"1"), put(b"d", b"2")]))
            .await),
        "txn put inside deleted range" => out(c
            .kv
            .txn(txn(Vec::new(), vec![del(b"a", b"z"), put(b"d", b"2")]))
            .await),
        "txn duplicate across nesting" => out(c
            .kv
            .txn(txn(
                Vec::new(),
                vec![put(b"d", b"1"), nested(2, put(b"d", b"2"))],
            ))
            .await),
        "txn empty op" => out(c
            .kv
            .txn(txn(Vec::new(), vec![RequestOp { request: None }]))
            .await),
        "txn compare without union" => out(c.kv.txn(txn(vec![cmp(0, 3, None)], Vec::new())).await),
        "txn compare target mismatch" => out(c
            .kv
            .txn(txn(
                vec![cmp(0, 3, Some(compare::TargetUnion::Version(0)))],
                Vec::new(),
            ))
            .await),
        "txn compare invalid result" => out(c
            .kv
            .txn(txn(
                vec![cmp(9, 0, Some(compare::TargetUnion::Version(0)))],
                Vec::new(),
            ))
            .await),
        "txn compare invalid target" => out(c
            .kv
            .txn(txn(
                vec![cmp(0, 9, Some(compare::TargetUnion::Version(0)))],
                Vec::new(),
            ))
            .await),
        "txn compare empty key" => {
            let mut k = cmp(0, 0, Some(compare::TargetUnion::Version(0)));
            k.key.clear();
            out(c.kv.txn(txn(vec![k], Vec::new())).await)
        }
        "txn op empty key" => out(c.kv.txn(txn(Vec::new(), vec![put(b"", b"v")])).await),
        "txn oversized" => out(c.kv.txn(txn(Vec::new(), vec![put(b"o", &huge)])).await),
        "compact negative" => out(c
            .kv
            .compact(CompactionRequest {
                revision: -1,
                physical: false,
            })
            .await),
        "compact zero" => out(c.kv.compact(CompactionRequest::default()).await),
        "compact max" => out(c
            .kv
            .compact(CompactionRequest {
                revision: i64::MAX,
                physical: true,
            })
            .await),
        "lease grant zero ttl" => grant(c, 0, 0).await,
        "lease grant negative ttl" => grant(c, -10, 0).await,
        "lease grant huge ttl" => grant(c, i64::MAX, 0).await,
        "lease grant negative id" => grant(c, 60, -5).await,
        "lease grant duplicate id" => {
            let first = grant(c, 60, 0x4242).await;
            let second = grant(c, 60, 0x4242).await;
            let _ = c
                .lease
                .lease_revoke(LeaseRevokeRequest { id: 0x4242 })
                .await;
            format!("{first} / {second}")
        }
        "lease revoke zero" => out(c.lease.lease_revoke(LeaseRevokeRequest { id: 0 }).await),
        "lease revoke missing" => out(c.lease.lease_revoke(LeaseRevokeRequest { id: 0x999 }).await),
        "lease ttl missing" => match c
            .lease
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: 0x999,
                keys: true,
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                format!(
                    "ok ttl {} granted {} keys {}",
                    r.ttl,
                    r.granted_ttl,
                    r.keys.len()
                )
            }
            Err(s) => out::<()>(Err(s)),
        },
        "lease ttl negative" => out(c
            .lease
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: -1,
                keys: false,
            })
            .await),
        "member add bad url" => out(c
            .cluster
            .member_add(MemberAddRequest {
                peer_ur_ls: vec!["::not a url".into()],
                is_learner: false,
            })
            .await),
        "member add no urls" => out(c.cluster.member_add(MemberAddRequest::default()).await),
        "member add existing url" => {
            let members = c
                .cluster
                .member_list(MemberListRequest::default())
                .await
                .expect("member list")
                .into_inner()
                .members;
            let urls = members
                .first()
                .map(|m| m.peer_ur_ls.clone())
                .unwrap_or_default();
            out(c
                .cluster
                .member_add(MemberAddRequest {
                    peer_ur_ls: urls,
                    is_learner: false,
                })
                .await)
        }
        "member remove missing" => out(c
            .cluster
            .member_remove(MemberRemoveRequest { id: 77 })
            .await),
        "member remove zero" => out(c.cluster.member_remove(MemberRemoveRequest { id: 0 }).await),
        "member update missing" => out(c
            .cluster
            .member_update(MemberUpdateRequest {
                id: 77,
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            })
            .await),
        "member update bad url" => out(c
            .cluster
            .member_update(MemberUpdateRequest {
                id: 77,
                peer_ur_ls: vec!["::bad".into()],
            })
            .await),
        "member promote missing" => out(c
            .cluster
            .member_promote(MemberPromoteRequest { id: 77 })
            .await),
        "alarm invalid action" => out(c
            .maint
            .alarm(AlarmRequest {
                action: 9,
                member_id: 0,
                alarm: 0,
            })
            .await),
        "alarm invalid type" => out(c
            .maint
            .alarm(AlarmRequest {
                action: 0,
                member_id: 0,
                alarm: 9,
            })
            .await),
        "alarm activate missing member" => {
            let r = c
                .maint
                .alarm(AlarmRequest {
                    action: 1,
                    member_id: 77,
                    alarm: 0,
                })
                .await;
            // Writes would answer "database space exceeded" while the alarm is on.
            let _ = c
                .maint
                .alarm(AlarmRequest {
                    action: 2,
                    member_id: 77,
                    alarm: 0,
                })
                .await;
            match r {
                Ok(r) => format!("ok alarms {}", r.into_inner().alarms.len()),
                Err(s) => out::<()>(Err(s)),
            }
        }
        "hashkv negative" => out(c.maint.hash_kv(HashKvRequest { revision: -1 }).await),
        "hashkv future" => out(c.maint.hash_kv(HashKvRequest { revision: 1 << 40 }).await),
        "move leader zero" => out(c
            .maint
            .move_leader(MoveLeaderRequest { target_id: 0 })
            .await),
        "move leader missing" => out(c
            .maint
            .move_leader(MoveLeaderRequest { target_id: 77 })
            .await),
        "authenticate disabled" => out(c.auth.authenticate(AuthenticateRequest::default()).await),
        "user add empty name" => out(c.auth.user_add(AuthUserAddRequest::default()).await),
        "user add empty password" => out(c
            .auth
            .user_add(AuthUserAddRequest {
                name: "u-empty".into(),
                ..Default::default()
            })
            .await),
        "user add no password option" => out(c
            .auth
            .user_add(AuthUserAddRequest {
                name: "u-nopw".into(),
                password: "x".into(),
                options: Some(UserAddOptions { no_password: true }),
                ..Default::default()
            })
            .await),
        "user get missing" => out(c
            .auth
            .user_get(AuthUserGetRequest {
                name: "nobody".into(),
            })
            .await),
        "user delete missing" => out(c
            .auth
            .user_delete(AuthUserDeleteRequest {
                name: "nobody".into(),
            })
            .await),
        "user change password missing" => out(c
            .auth
            .user_change_password(AuthUserChangePasswordRequest {
                name: "nobody".into(),
                password: "p".into(),
                ..Default::default()
            })
            .await),
        "user grant missing role" => out(c
            .auth
            .user_grant_role(AuthUserGrantRoleRequest {
                user: "u-nopw".into(),
                role: "no-role".into(),
            })
            .await),
        "user revoke missing" => out(c
            .auth
            .user_revoke_role(AuthUserRevokeRoleRequest {
                name: "nobody".into(),
                role: "r".into(),
            })
            .await),
        "role add empty" => out(c.auth.role_add(AuthRoleAddRequest::default()).await),
        "role get missing" => out(c
            .auth
            .role_get(AuthRoleGetRequest { role: "nr".into() })
            .await),
        "role delete missing" => out(c
            .auth
            .role_delete(AuthRoleDeleteRequest { role: "nr".into() })
            .await),
        "role grant invalid perm type" => {
            let _ = c
                .auth
                .role_add(AuthRoleAddRequest {
                    name: "r-bad".into(),
                })
                .await;
            out(c
                .auth
                .role_grant_permission(AuthRoleGrantPermissionRequest {
                    name: "r-bad".into(),
                    perm: Some(Permission {
                        perm_type: 9,
                        key: b"k".to_vec(),
                        range_end: Vec::new(),
                    }),
                })
                .await)
        }
        "role grant no perm" => out(c
            .auth
            .role_grant_permission(AuthRoleGrantPermissionRequest {
                name: "r-bad".into(),
                perm: None,
            })
            .await),
        "role revoke missing" => out(c
            .auth
            .role_revoke_permission(AuthRoleRevokePermissionRequest {
                role: "r-bad".into(),
                key: b"nope".to_vec(),
                range_end: Vec::new(),
            })
            .await),
        "auth enable without root" => out(c.auth.auth_enable(AuthEnableRequest {}).await),
        "auth disable when disabled" => out(c.auth.auth_disable(AuthDisableRequest {}).await),
        other => panic!("no case {other}"),
    }
}

/// The outcome, or "no answer" after 5 s.
async fn within(f: impl std::future::Future<Output = String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| "no answer in 5 s".into())
}

async fn grant(c: &mut RawClients, ttl: i64, id: i64) -> String {
    match c.lease.lease_grant(LeaseGrantRequest { ttl, id }).await {
        Ok(r) => {
            let r = r.into_inner();
            let _ = c.lease.lease_revoke(LeaseRevokeRequest { id: r.id }).await;
            format!("ok ttl {} error {:?}", r.ttl, r.error)
        }
        Err(s) => out::<()>(Err(s)),
    }
}

/// The responses a watch stream sends in its first second after `reqs`, normalised (ids and
/// revisions relative to the create).
async fn watch(c: &mut RawClients, reqs: Vec<WatchRequest>) -> String {
    let stream = tokio_stream::iter(reqs);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1000);
    // grpc-go sends a stream's response headers with its first message, tonic at once: no
    // answer within the second is the same as no message within it.
    let mut resp = match tokio::time::timeout_at(deadline, c.watch.watch(stream)).await {
        Err(_) => return String::new(),
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return out::<()>(Err(s)),
    };
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, resp.message()).await {
            Err(_) => break,
            Ok(Ok(Some(r))) => seen.push(format!(
                "id {} created {} canceled {} reason {:?} compact {} events {}",
                r.watch_id,
                r.created,
                r.canceled,
                r.cancel_reason,
                r.compact_revision,
                r.events.len()
            )),
            Ok(Ok(None)) => {
                seen.push("end".into());
                break;
            }
            Ok(Err(s)) => {
                seen.push(out::<()>(Err(s)));
                break;
            }
        }
    }
    seen.join(" | ")
}

fn create(f: fn(&mut WatchCreateRequest)) -> WatchRequest {
    let mut w = WatchCreateRequest {
        key: b"w".to_vec(),
        ..Default::default()
    };
    f(&mut w);
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(w)),
    }
}

fn watch_cases() -> Vec<(&'static str, Vec<WatchRequest>)> {
    let cancel = |id| WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(
            WatchCancelRequest { watch_id: id },
        )),
    };
    vec![
        ("empty key", vec![create(|w| w.key.clear())]),
        ("negative start", vec![create(|w| w.start_revision = -5)]),
        ("future start", vec![create(|w| w.start_revision = 1 << 40)]),
        ("invalid filter", vec![create(|w| w.filters = vec![7, -1])]),
        ("negative watch id", vec![create(|w| w.watch_id = -7)]),
        (
            "duplicate watch id",
            vec![create(|w| w.watch_id = 5), create(|w| w.watch_id = 5)],
        ),
        (
            "reversed range",
            vec![create(|w| w.range_end = b"a".to_vec())],
        ),
        ("cancel unknown", vec![cancel(99)]),
        (
            "empty request",
            vec![WatchRequest {
                request_union: None,
            }],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_answer_like_etcd() {
    let etcd = Cluster::start(ClusterConfig::new(ServerKind::Etcd, 1));
    let mini = Cluster::start(ClusterConfig::new(ServerKind::Minietcd, 1));
    etcd.wait_ready().await;
    mini.wait_ready().await;
    let mut e = RawClients::connect(&etcd.endpoint(0)).await;
    let mut m = RawClients::connect(&mini.endpoint(0)).await;
    let mut diffs = Vec::new();
    // etcd 3.4 crashes (nil sort.Interface) on a sort target outside the enum when the range
    // is sorted; etcd 3.5 refuses it with "invalid sort option", as minietcd does.
    let b = unary(&mut m, "range invalid sort target").await;
    assert_eq!(b, "InvalidArgument: etcdserver: invalid sort option");
    // etcd 3.4 also crashes on an alarm action outside the enum (its applier returns no
    // response); minietcd answers like a GET.
    let b = unary(&mut m, "alarm invalid action").await;
    assert_eq!(b, "ok");
    // And on a permission grant without a permission; etcd 3.5 refuses it.
    let b = unary(&mut m, "role grant no perm").await;
    assert_eq!(b, "InvalidArgument: etcdserver: permission not given");
    // 60 nested txns are 120 nested messages: etcd 3.4 applies them (and its own client cannot
    // decode the answer); prost, under minietcd, stops decoding at 100 nested messages
    // (docs/fault-testing.md, "Deliberate differences").
    let b = unary(&mut m, "txn deeper nesting").await;
    assert!(
        b.starts_with("Internal: failed to decode Protobuf message")
            && b.ends_with("recursion limit reached"),
        "{b}"
    );
    // Watches first: the unary cases compact, and a watch from a negative revision answers
    // with the compacted revision (-1 before any compaction, on both servers).
    for (name, reqs) in watch_cases() {
        let a = within(watch(&mut e, reqs.clone())).await;
        let b = within(watch(&mut m, reqs)).await;
        tracing::info!(case = name, etcd = %a, minietcd = %b, "watch case");
        if a != b {
            diffs.push(format!("watch {name}:\n  etcd:     {a}\n  minietcd: {b}"));
        }
    }
    for name in unary_cases() {
        tracing::info!(case = name, "sending");
        let a = within(unary(&mut e, name)).await;
        let b = within(unary(&mut m, name)).await;
        tracing::info!(case = name, etcd = %a, minietcd = %b, "unary case");
        if a != b {
            diffs.push(format!("{name}:\n  etcd:     {a}\n  minietcd: {b}"));
        }
    }
    // Keep-alives for leases that do not exist: etcd answers TTL 0.
    for (name, id) in [("keepalive missing", 0x999), ("keepalive zero", 0)] {
        let mut r = Vec::new();
        for c in [&mut e, &mut m] {
            let reqs = tokio_stream::iter(vec![LeaseKeepAliveRequest { id }]);
            let s = match c.lease.lease_keep_alive(reqs).await {
                Ok(s) => {
                    let mut s = s.into_inner();
                    match tokio::time::timeout(Duration::from_secs(2), s.message()).await {
                        Ok(Ok(Some(k))) => format!("ttl {}", k.ttl),
                        Ok(Ok(None)) => "end".into(),
                        Ok(Err(s)) => out::<()>(Err(s)),
                        Err(_) => "no answer".into(),
                    }
                }
                Err(s) => out::<()>(Err(s)),
            };
            r.push(s);
        }
        if r[0] != r[1] {
            diffs.push(format!(
                "{name}:\n  etcd:     {}\n  minietcd: {}",
                r[0], r[1]
            ));
        }
    }
    let (mut etcd, mut mini) = (etcd, mini);
    assert!(
        etcd.exited(0).is_none(),
        "etcd exited:\n{}\ndifferences so far:\n{}",
        etcd.log(0),
        diffs.join("\n")
    );
    assert!(
        mini.exited(0).is_none(),
        "minietcd exited:\n{}",
        mini.log(0)
    );
    assert!(
        !mini.log(0).contains("panicked"),
        "minietcd panicked:\n{}",
        mini.log(0)
    );
    assert!(
        diffs.is_empty(),
        "differences from etcd 3.4:\n{}",
        diffs.join("\n")
    );
}

/// Random field values for the KV requests: whatever etcd answers, minietcd answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_field_values_answer_like_etcd() {
    let etcd = Cluster::start(ClusterConfig::new(ServerKind::Etcd, 1));
    let mini = Cluster::start(ClusterConfig::new(ServerKind::Minietcd, 1));
    etcd.wait_ready().await;
    mini.wait_ready().await;
    let mut e = RawClients::connect(&etcd.endpoint(0)).await;
    let mut m = RawClients::connect(&mini.endpoint(0)).await;
    let interesting = prop_oneof![
        Just(0i64),
        Just(-1i64),
        Just(i64::MIN),
        Just(i64::MAX),
        -3i64..5,
    ];
    let enum_val = prop_oneof![Just(-1i32), 0i32..6, Just(i32::MAX)];
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..4),
        prop::collection::vec(any::<u8>(), 0..3),
        (interesting.clone(), interesting.clone(), interesting),
        (enum_val.clone(), enum_val),
    );
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let mut diffs = Vec::new();
    for _ in 0..200 {
        let (key, range_end, (limit, revision, filter), (order, target)) =
            strategy.new_tree(&mut runner).expect("value").current();
        let req = RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order: order,
            sort_target: target,
            min_mod_revision: filter,
            ..Default::default()
        };
        // A sort target outside the enum crashes etcd 3.4 (see above): minietcd alone.
        if !(0..5).contains(&req.sort_target) {
            let b = out(m.kv.range(req.clone()).await);
            let want = if req.key.is_empty() {
                "InvalidArgument: etcdserver: key is not provided"
            } else {
                "InvalidArgument: etcdserver: invalid sort option"
            };
            assert_eq!(b, want, "{req:?}");
            continue;
        }
        let a = out(e.kv.range(req.clone()).await);
        let b = out(m.kv.range(req.clone()).await);
        if a != b {
            diffs.push(format!("{req:?}\n  etcd:     {a}\n  minietcd: {b}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "differences from etcd 3.4:\n{}",
        diffs.join("\n")
    );
}

/// Garbage written to a port: random bytes, HTTP/1 junk, a truncated HTTP/2 preface, a
/// preface followed by a frame header announcing 16 MiB, and a preface with a bad SETTINGS.
fn garbage(seed: u64) -> Vec<(&'static str, Vec<u8>)> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut random = vec![0u8; 4096];
    rng.fill_bytes(&mut random);
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut huge_frame = preface.clone();
    huge_frame.extend_from_slice(&[0xff, 0xff, 0xff, 0x00, 0x00, 0, 0, 0, 0]);
    huge_frame.extend(std::iter::repeat_n(0u8, 1 << 16));
    let mut bad_settings = preface.clone();
    // SETTINGS with a length that is not a multiple of 6, then MAX_FRAME_SIZE too small.
    bad_settings.extend_from_slice(&[0, 0, 5, 0x04, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0]);
    let mut headers_junk = preface.clone();
    headers_junk.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]);
    headers_junk.extend_from_slice(&[0, 0, 16, 0x01, 0x05, 0, 0, 0, 1]);
    let mut junk = vec![0u8; 16];
    rng.fill_bytes(&mut junk);
    headers_junk.extend_from_slice(&junk);
    vec![
        ("random bytes", random),
        (
            "http/1 junk",
            b"GET /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{{{{"
                .to_vec(),
        ),
        ("truncated preface", preface[..10].to_vec()),
        ("huge frame", huge_frame),
        ("bad settings", bad_settings),
        ("junk headers", headers_junk),
    ]
}

/// Writes `bytes` to `127.0.0.1:port` and reads until the server closes or 1 s passes.
fn attack(port: u16, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// A put and a linearizable read on every member succeed.
async fn every_member_serves(c: &Cluster, what: &str) {
    for i in 0..c.members.len() {
        let key = format!("after/{i}");
        wait_until_async(
            &format!("member {i} serves after {what}"),
            Duration::from_secs(10),
            || async {
                let kv = c.client_for(i).await?.kv();
                kv.put(key.as_str(), what, Default::default()).await.ok()?;
                let r = kv.get(key.as_str(), Default::default()).await.ok()?;
                (r.kvs.first().map(|kv| kv.value.clone()) == Some(what.as_bytes().to_vec()))
                    .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_client_and_peer_ports_is_survived() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    every_member_serves(&c, "start").await;
    for (i, m) in c.members.iter().enumerate() {
        for (name, bytes) in garbage(i as u64) {
            attack(m.client_port.port, &bytes);
            attack(m.peer_port.port, &bytes);
            tracing::info!(
                member = i,
                attack = name,
                "garbage sent to client and peer ports"
            );
            every_member_serves(&c, name).await;
        }
    }
    // Many half-open connections at once.
    let conns: Vec<TcpStream> = (0..64)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", c.members[0].client_port.port)).ok())
        .collect();
    every_member_serves(&c, "half-open connections").await;
    drop(conns);
    for i in 0..c.members.len() {
        assert!(c.exited(i).is_none(), "member {i} exited");
        let log = c.log(i);
        assert!(!log.contains("panicked"), "member {i} panicked:\n{log}");
    }
}
