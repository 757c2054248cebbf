//! Unit tests of the store. Behaviours marked "etcd 3.4" were checked against a real etcd
//! 3.4.23 with etcdctl and its JSON gateway.

use super::*;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResp;
use crate::pb::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RequestOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;

pub(super) struct Fixture {
    pub dir: tempfile::TempDir,
    pub db: sled::Db,
    pub store: MvccStore,
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let store = MvccStore::open(&db).unwrap();
    Fixture { dir, db, store }
}

impl Fixture {
    /// Drops the store and the db and opens both again from the same directory.
    pub fn restart(self) -> Fixture {
        let Fixture { dir, db, store } = self;
        drop(store);
        db.flush().unwrap();
        drop(db);
        let db = sled::open(dir.path()).unwrap();
        let store = MvccStore::open(&db).unwrap();
        Fixture { dir, db, store }
    }
}

fn apply(s: &MvccStore, r: Request) -> ApplyOutcome {
    s.apply(&InternalRequest { request: Some(r) }, b"applied")
        .unwrap()
}

fn put(s: &MvccStore, k: &str, v: &str) -> ApplyOutcome {
    apply(
        s,
        Request::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }),
    )
}

fn put_lease(s: &MvccStore, k: &str, v: &str, lease: i64) -> ApplyOutcome {
    apply(
        s,
        Request::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            lease,
            ..Default::default()
        }),
    )
}

fn del(s: &MvccStore, k: &str, end: &str) -> ApplyOutcome {
    apply(
        s,
        Request::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: true,
        }),
    )
}

fn txn(s: &MvccStore, t: TxnRequest) -> (ApplyOutcome, Option<TxnResponse>) {
    let out = apply(s, Request::Txn(t));
    let resp = match &out.response.response {
        Some(Response::Txn(t)) => Some(t.clone()),
        _ => None,
    };
    (out, resp)
}

fn get(s: &MvccStore, k: &str, rev: i64) -> Result<Option<KeyValue>, StorageError> {
    let r = s.range(&RangeRequest {
        key: k.into(),
        revision: rev,
        ..Default::default()
    })?;
    Ok(r.kvs.into_iter().next())
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn range(s: &MvccStore, k: &str, end: &str) -> RangeResponse {
    s.range(&RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    })
    .unwrap()
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(u),
    }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

fn op_get(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: k.into(),
            ..Default::default()
        })),
    }
}

#[test]
fn fresh_store_starts_at_one_and_first_write_gets_two() {
    let f = fixture();
    assert_eq!(f.store.current_revision(), 1);
    assert_eq!(f.store.compact_revision(), 0);
    assert_eq!(f.store.applied().unwrap(), None);
    let out = put(&f.store, "a", "1");
    assert_eq!(out.revision, 2);
    assert_eq!(out.response.revision, 2);
    let kv = get(&f.store, "a", 0).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
    assert_eq!(f.store.applied().unwrap().as_deref(), Some(&b"applied"[..]));
}

#[test]
fn versions_and_generations() {
    let f = fixture();
    put(&f.store, "a", "1"); // 2
    put(&f.store, "a", "2"); // 3
    let out = del(&f.store, "a", ""); // 4
    assert_eq!(out.revision, 4);
    match out.response.response {
        Some(Response::DeleteRange(d)) => {
            assert_eq!(d.deleted, 1);
            assert_eq!(d.prev_kvs[0].value, b"2");
        }
        other => panic!("unexpected {other:?}"),
    }
    put(&f.store, "a", "3"); // 5
    let kv = get(&f.store, "a", 0).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    assert_eq!(get(&f.store, "a", 4).unwrap(), None);
    let old = get(&f.store, "a", 3).unwrap().unwrap();
    assert_eq!(
        (old.create_revision, old.version, old.value),
        (2, 2, b"2".to_vec())
    );
}

#[test]
fn a_write_that_changes_nothing_keeps_the_revision_but_stores_applied() {
    // etcd 3.4: `etcdctl del nothing` answers the unchanged revision.
    let f = fixture();
    put(&f.store, "a", "1");
    let out = f
        .store
        .apply(
            &InternalRequest {
                request: Some(Request::DeleteRange(DeleteRangeRequest {
                    key: b"missing".to_vec(),
                    ..Default::default()
                })),
            },
            b"second",
        )
        .unwrap();
    assert_eq!(out.revision, 2);
    assert!(out.events.is_empty());
    assert_eq!(f.store.applied().unwrap().as_deref(), Some(&b"second"[..]));
}

#[test]
fn range_end_rules() {
    let f = fixture();
    for k in ["a", "b", "ba", "bb", "c"] {
        put(&f.store, k, "v");
    }
    assert_eq!(keys(&range(&f.store, "b", "")), ["b"]);
    assert_eq!(keys(&range(&f.store, "b", "c")), ["b", "ba", "bb"]);
    assert_eq!(keys(&range(&f.store, "b", "\0")), ["b", "ba", "bb", "c"]);
    assert_eq!(
        keys(&range(&f.store, "\0", "\0")),
        ["a", "b", "ba", "bb", "c"]
    );
    assert!(range(&f.store, "c", "b").kvs.is_empty());
    assert!(range(&f.store, "zz", "").kvs.is_empty());
}

#[test]
fn range_limit_count_sort_and_filters() {
    let f = fixture();
    put(&f.store, "a", "3"); // 2
    put(&f.store, "b", "1"); // 3
    put(&f.store, "c", "2"); // 4
    put(&f.store, "a", "4"); // 5
    let base = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        ..Default::default()
    };
    let r = f
        .store
        .range(&RangeRequest {
            limit: 2,
            ..base.clone()
        })
        .unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["a".into(), "b".into()], true, 3)
    );
    // A non-KEY target with order NONE sorts ascending (etcd's apply.go).
    let r = f
        .store
        .range(&RangeRequest {
            sort_target: SortTarget::Value as i32,
            ..base.clone()
        })
        .unwrap();
    assert_eq!(keys(&r), ["b", "c", "a"]);
    let r = f
        .store
        .range(&RangeRequest {
            sort_target: SortTarget::Mod as i32,
            sort_order: SortOrder::Descend as i32,
            limit: 1,
            ..base.clone()
        })
        .unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec!["a".into()], true, 3));
    // Filters apply before the limit, but count is the count before filters (etcd).
    let r = f
        .store
        .range(&RangeRequest {
            min_create_revision: 3,
            ..base.clone()
        })
        .unwrap();
    assert_eq!((keys(&r), r.count), (vec!["b".into(), "c".into()], 3));
    let r = f
        .store
        .range(&RangeRequest {
            max_mod_revision: 4,
            limit: 1,
            ..base.clone()
        })
        .unwrap();
    assert_eq!((keys(&r), r.more), (vec!["b".into()], true));
    let r = f
        .store
        .range(&RangeRequest {
            count_only: true,
            ..base.clone()
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 3, false));
    let r = f
        .store
        .range(&RangeRequest {
            keys_only: true,
            ..base
        })
        .unwrap();
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));
}

#[test]
fn compaction_rules_match_etcd() {
    // etcd 3.4: after `compact 5`, `get --rev=5` works, `--rev=4` is compacted and
    // `--rev=-1` reads the current revision.
    let f = fixture();
    for i in 0..6 {
        put(&f.store, &format!("k{i}"), "v"); // 2..=7
    }
    put(&f.store, "k0", "again"); // 8
    let out = apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 5,
            physical: false,
        }),
    );
    assert_eq!(out.response.error, ApplyError::ApplyOk as i32);
    assert_eq!(f.store.compact_revision(), 5);
    assert_eq!(out.revision, 8, "compaction takes no revision");
    assert_eq!(get(&f.store, "k0", 5).unwrap().unwrap().value, b"v");
    assert!(matches!(
        get(&f.store, "k0", 4),
        Err(StorageError::Compacted)
    ));
    assert_eq!(get(&f.store, "k0", -1).unwrap().unwrap().value, b"again");
    assert!(matches!(
        get(&f.store, "k0", 9),
        Err(StorageError::FutureRevision)
    ));
    let again = apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 5,
            physical: false,
        }),
    );
    assert_eq!(again.response.error, ApplyError::Compacted as i32);
    let future = apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 9,
            physical: false,
        }),
    );
    assert_eq!(future.response.error, ApplyError::FutureRevision as i32);
}

#[test]
fn compaction_deletes_rows_and_tombstones() {
    let f = fixture();
    put(&f.store, "a", "1"); // 2
    put(&f.store, "a", "2"); // 3
    put(&f.store, "b", "1"); // 4
    del(&f.store, "b", ""); // 5
    put(&f.store, "c", "1"); // 6
    let rows = |f: &Fixture| f.store.tree.scan_prefix([revision::KV_PREFIX]).count();
    assert_eq!(rows(&f), 5);
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 5,
            physical: true,
        }),
    );
    // a@3 stays (latest), a@2 goes; b's generation ends in a tombstone at 5: all gone.
    assert_eq!(rows(&f), 2);
    assert_eq!(keys(&range(&f.store, "\0", "\0")), ["a", "c"]);
    let f = f.restart();
    assert_eq!(f.store.compact_revision(), 5);
    assert_eq!(f.store.current_revision(), 6);
    assert_eq!(get(&f.store, "a", 5).unwrap().unwrap().version, 2);
}

#[test]
fn compaction_of_a_trailing_tombstone_keeps_the_current_revision_on_restart() {
    let f = fixture();
    put(&f.store, "a", "1"); // 2
    del(&f.store, "a", ""); // 3
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 3,
            physical: false,
        }),
    );
    let f = f.restart();
    assert_eq!(f.store.current_revision(), 3);
    assert_eq!(put(&f.store, "a", "2").revision, 4);
}

#[test]
fn txn_one_revision_reads_own_writes_and_inner_headers() {
    // etcd 3.4 (JSON gateway): range before any write has header revision = old
    // revision, put/range/delete after a write the new one, a nested txn an empty header,
    // and nested compares see the state before the outer txn's writes.
    let f = fixture();
    put(&f.store, "k1", "v"); // 2
    let nested = TxnRequest {
        compare: vec![cmp(
            "n1",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        success: vec![op_put("n2", "y")],
        failure: vec![op_get("n1")],
    };
    let (out, resp) = txn(
        &f.store,
        TxnRequest {
            compare: vec![cmp(
                "k1",
                CompareTarget::Version,
                CompareResult::Greater,
                TargetUnion::Version(0),
            )],
            success: vec![
                op_get("k1"),
                op_put("n1", "x"),
                op_get("n1"),
                RequestOp {
                    request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                        key: b"zz".to_vec(),
                        ..Default::default()
                    })),
                },
                RequestOp {
                    request: Some(Op::RequestTxn(nested)),
                },
            ],
            failure: vec![],
        },
    );
    let resp = resp.unwrap();
    assert!(resp.succeeded);
    assert_eq!(out.revision, 3);
    assert_eq!(resp.header.unwrap().revision, 3);
    let revs: Vec<i64> = resp
        .responses
        .iter()
        .map(|r| match &r.response {
            Some(OpResp::ResponseRange(x)) => x.header.unwrap().revision,
            Some(OpResp::ResponsePut(x)) => x.header.unwrap().revision,
            Some(OpResp::ResponseDeleteRange(x)) => x.header.unwrap().revision,
            Some(OpResp::ResponseTxn(x)) => {
                assert!(x.succeeded, "nested compare sees n1 absent");
                x.header.unwrap().revision
            }
            None => -1,
        })
        .collect();
    assert_eq!(revs, [2, 3, 3, 3, 0]);
    match &resp.responses[2].response {
        Some(OpResp::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b"x"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(out.events.len(), 2);
    assert_eq!(get(&f.store, "n2", 0).unwrap().unwrap().mod_revision, 3);
}

#[test]
fn txn_compares_on_missing_keys_and_ranges() {
    let f = fixture();
    put(&f.store, "a1", "x"); // 2
    put(&f.store, "a2", "y"); // 3
    let run = |c: Compare| {
        txn(
            &f.store,
            TxnRequest {
                compare: vec![c],
                ..Default::default()
            },
        )
        .1
        .unwrap()
        .succeeded
    };
    // Missing key: version/create/mod compare as 0; a VALUE compare always fails.
    assert!(run(cmp(
        "nope",
        CompareTarget::Create,
        CompareResult::Equal,
        TargetUnion::CreateRevision(0)
    )));
    assert!(!run(cmp(
        "nope",
        CompareTarget::Value,
        CompareResult::NotEqual,
        TargetUnion::Value(b"q".to_vec())
    )));
    assert!(run(cmp(
        "a1",
        CompareTarget::Value,
        CompareResult::Less,
        TargetUnion::Value(b"y".to_vec())
    )));
    let mut c = cmp(
        "a",
        CompareTarget::Mod,
        CompareResult::Greater,
        TargetUnion::ModRevision(1),
    );
    c.range_end = b"b".to_vec();
    assert!(run(c.clone()));
    c.target_union = Some(TargetUnion::ModRevision(2));
    assert!(!run(c), "every key of the range must satisfy the compare");
    assert_eq!(
        f.store.current_revision(),
        3,
        "read-only txns take no revision"
    );
}

#[test]
fn txn_checks_fail_the_whole_txn() {
    let f = fixture();
    put(&f.store, "a", "1"); // 2
    let bad_lease = TxnRequest {
        success: vec![
            op_put("b", "1"),
            RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: b"c".to_vec(),
                    lease: 77,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    let (out, resp) = txn(&f.store, bad_lease);
    assert_eq!(out.response.error, ApplyError::LeaseNotFound as i32);
    assert!(resp.is_none());
    assert_eq!(out.revision, 2);
    assert_eq!(
        get(&f.store, "b", 0).unwrap(),
        None,
        "nothing of a failed txn is written"
    );
    let future = TxnRequest {
        success: vec![RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: b"a".to_vec(),
                revision: 3,
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    assert_eq!(
        txn(&f.store, future).0.response.error,
        ApplyError::FutureRevision as i32
    );
    // etcd 3.4: a negative revision inside a txn is "compacted" (a plain Range reads the
    // current revision instead).
    let negative = TxnRequest {
        success: vec![RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: b"a".to_vec(),
                revision: -1,
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    assert_eq!(
        txn(&f.store, negative).0.response.error,
        ApplyError::Compacted as i32
    );
}

#[test]
fn put_ignore_value_and_lease() {
    let f = fixture();
    let out = apply(
        &f.store,
        Request::Put(PutRequest {
            key: b"a".to_vec(),
            ignore_value: true,
            ..Default::default()
        }),
    );
    assert_eq!(out.response.error, ApplyError::KeyNotFound as i32);
    apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 5 }),
    );
    put_lease(&f.store, "a", "1", 5);
    let out = apply(
        &f.store,
        Request::Put(PutRequest {
            key: b"a".to_vec(),
            value: b"ignored".to_vec(),
            ignore_value: true,
            ignore_lease: true,
            prev_kv: true,
            ..Default::default()
        }),
    );
    match out.response.response {
        Some(Response::Put(p)) => assert_eq!(p.prev_kv.unwrap().value, b"1"),
        other => panic!("unexpected {other:?}"),
    }
    let kv = get(&f.store, "a", 0).unwrap().unwrap();
    assert_eq!((kv.value, kv.lease, kv.version), (b"1".to_vec(), 5, 2));
}

#[test]
fn leases_attach_detach_and_revoke() {
    let f = fixture();
    let g = apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 9 }),
    );
    assert_eq!(g.revision, 1, "a grant takes no revision");
    let dup = apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 9 }),
    );
    assert_eq!(dup.response.error, ApplyError::LeaseExists as i32);
    let missing = put_lease(&f.store, "x", "1", 10);
    assert_eq!(missing.response.error, ApplyError::LeaseNotFound as i32);
    put_lease(&f.store, "b", "1", 9); // 2
    put_lease(&f.store, "a", "1", 9); // 3
    put_lease(&f.store, "c", "1", 9); // 4
    put(&f.store, "c", "2"); // 5: detaches c
    let info = f.store.lease_info(9).unwrap().unwrap();
    assert_eq!(
        (info.granted_ttl_secs, info.keys),
        (30, vec![b"a".to_vec(), b"b".to_vec()])
    );
    let f = f.restart();
    assert_eq!(f.store.lease_info(9).unwrap().unwrap().keys.len(), 2);
    let out = apply(&f.store, Request::LeaseRevoke(LeaseRevokeRequest { id: 9 }));
    assert_eq!(out.revision, 6, "one revision for all attached keys");
    let deleted: Vec<_> = out
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.clone())
        .collect();
    assert_eq!(deleted, [b"a".to_vec(), b"b".to_vec()]);
    assert!(!f.store.lease_exists(9));
    assert_eq!(keys(&range(&f.store, "\0", "\0")), ["c"]);
    let again = apply(&f.store, Request::LeaseRevoke(LeaseRevokeRequest { id: 9 }));
    assert_eq!(again.response.error, ApplyError::LeaseNotFound as i32);
    assert_eq!(f.store.events(6, 6, 10).unwrap(), vec![(6, out.events)]);
}

#[test]
fn lease_id_zero_is_derived_deterministically() {
    let a = fixture();
    let b = fixture();
    let grant =
        |s: &MvccStore| match apply(s, Request::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 0 }))
            .response
            .response
        {
            Some(Response::LeaseGrant(g)) => g.id,
            other => panic!("unexpected {other:?}"),
        };
    let id = grant(&a.store);
    assert!(id > 0);
    assert_eq!(id, grant(&b.store), "members applying the same entry agree");
    let too_long = apply(
        &a.store,
        Request::LeaseGrant(LeaseGrantRequest {
            ttl: MAX_LEASE_TTL_SECS + 1,
            id: 1,
        }),
    );
    assert_eq!(too_long.response.error, ApplyError::LeaseTtlTooLarge as i32);
}

#[test]
fn events_match_apply_outcomes_with_prev_kv() {
    let f = fixture();
    let mut outcomes = vec![
        put(&f.store, "a", "1"),
        put(&f.store, "a", "2"),
        del(&f.store, "a", ""),
    ];
    let (out, _) = txn(
        &f.store,
        TxnRequest {
            success: vec![op_put("b", "1"), op_put("b", "2")],
            ..Default::default()
        },
    );
    outcomes.push(out);
    let hist = f.store.events(2, 100, 100).unwrap();
    let want: Vec<_> = outcomes
        .iter()
        .map(|o| (o.revision, o.events.clone()))
        .collect();
    assert_eq!(hist, want);
    // prev_kv: none for a create, the previous value otherwise; the delete event carries
    // the key and the delete revision only.
    assert_eq!(hist[0].1[0].prev_kv, None);
    assert_eq!(hist[1].1[0].prev_kv.as_ref().unwrap().value, b"1");
    let tomb = hist[2].1[0].kv.as_ref().unwrap();
    assert_eq!(
        (tomb.mod_revision, tomb.version, tomb.create_revision),
        (4, 0, 0)
    );
    assert_eq!(hist[2].1[0].prev_kv.as_ref().unwrap().value, b"2");
    assert_eq!(f.store.events(2, 100, 2).unwrap().len(), 2);
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 3,
            physical: false,
        }),
    );
    assert!(matches!(
        f.store.events(3, 5, 10),
        Err(StorageError::Compacted)
    ));
    assert_eq!(f.store.events(4, 5, 10).unwrap(), want[2..].to_vec());
}

#[test]
fn restart_restores_everything() {
    let f = fixture();
    put(&f.store, "a", "1");
    put(&f.store, "b", "1");
    del(&f.store, "a", "");
    put(&f.store, "a", "2");
    let before = range(&f.store, "\0", "\0");
    let f = f.restart();
    assert_eq!(f.store.current_revision(), 5);
    assert_eq!(range(&f.store, "\0", "\0"), before);
    assert_eq!(get(&f.store, "a", 3).unwrap().unwrap().value, b"1");
    assert_eq!(put(&f.store, "a", "3").revision, 6);
    assert_eq!(get(&f.store, "a", 0).unwrap().unwrap().version, 2);
}

#[test]
fn snapshot_installs_into_a_fresh_store() {
    let f = fixture();
    apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 3 }),
    );
    put_lease(&f.store, "a", "1", 3);
    put(&f.store, "b", "1");
    put(&f.store, "b", "2");
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 3,
            physical: false,
        }),
    );
    let snap = f.store.snapshot().unwrap();
    let g = fixture();
    put(&g.store, "junk", "x");
    g.store.install_snapshot(&snap).unwrap();
    assert_eq!(g.store.current_revision(), 4);
    assert_eq!(g.store.compact_revision(), 3);
    assert_eq!(g.store.applied().unwrap().as_deref(), Some(&b"applied"[..]));
    assert_eq!(range(&g.store, "\0", "\0"), range(&f.store, "\0", "\0"));
    assert_eq!(
        g.store.lease_info(3).unwrap().unwrap().keys,
        vec![b"a".to_vec()]
    );
    assert_eq!(
        g.store.events(4, 4, 1).unwrap(),
        f.store.events(4, 4, 1).unwrap()
    );
    let g = g.restart();
    assert_eq!(range(&g.store, "\0", "\0"), range(&f.store, "\0", "\0"));
    // Garbage is refused before anything is touched.
    assert!(matches!(
        g.store.install_snapshot(b"nonsense"),
        Err(StorageError::Corrupt(_))
    ));
    let mut cut = snap.clone();
    cut.truncate(snap.len() - 3);
    assert!(matches!(
        g.store.install_snapshot(&cut),
        Err(StorageError::Corrupt(_))
    ));
    assert_eq!(g.store.current_revision(), 4);
}

#[test]
fn garbled_tree_is_corrupt_not_a_panic() {
    let f = fixture();
    put(&f.store, "a", "1");
    f.store
        .tree
        .insert(
            revision::row_key(Revision::new(2, 0), false),
            &b"\xff\xff\xff"[..],
        )
        .unwrap();
    let Fixture { dir, db, store } = f;
    drop(store);
    assert!(matches!(
        MvccStore::open(&db),
        Err(StorageError::Corrupt(_))
    ));
    db.open_tree(backend::TREE_NAME)
        .unwrap()
        .insert(b"zzz", &b"?"[..])
        .unwrap();
    let err = MvccStore::open(&db).err().unwrap();
    assert!(err.to_string().contains("corrupt"), "{err}");
    drop(dir);
}

#[test]
fn interrupted_install_is_detected_on_open() {
    let f = fixture();
    put(&f.store, "a", "1");
    f.store
        .tree
        .insert(backend::META_INSTALLING, &[][..])
        .unwrap();
    let f = {
        let Fixture { dir, db, store } = f;
        drop(store);
        let store = MvccStore::open(&db).unwrap();
        Fixture { dir, db, store }
    };
    assert!(f.store.interrupted_install());
    assert_eq!(f.store.current_revision(), 1);
    assert_eq!(f.store.applied().unwrap(), None);
}
