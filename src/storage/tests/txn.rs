//! Txn semantics: compares, branches, nesting, checks, inner headers; Put flags.

use super::*;

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

/// Regression (property test): a Put naming an unknown lease AND ignore_lease on a missing
/// key answered "key not found"; etcd looks the requested lease up first.
#[test]
fn regression_unknown_lease_is_checked_before_ignore_flags() {
    let f = fixture();
    let out = apply(
        &f.store,
        Request::Put(PutRequest {
            key: b"a".to_vec(),
            lease: 1,
            ignore_lease: true,
            ..Default::default()
        }),
    );
    assert_eq!(out.response.error, ApplyError::LeaseNotFound as i32);
}
