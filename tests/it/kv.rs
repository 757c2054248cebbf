//! The KV API through a real third-party client (the `etcd-client` crate) against a real
//! minietcd process: every Range/Put/DeleteRange/Txn/Compact feature, then the same again
//! after a restart from the data dir (nothing lost, revisions continue).

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse,
};

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};

pub async fn connect(c: &Cluster) -> Client {
    Client::connect(c.endpoints(), None).await.expect("connect")
}

fn keys(r: &etcd_client::GetResponse) -> Vec<String> {
    r.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

fn k(p: &str, s: &str) -> String {
    format!("{p}{s}")
}

/// Exercises every KV feature under prefix `p`; returns the revision after the last write.
pub async fn exercise_kv(cl: &mut Client, p: &str) -> i64 {
    // Put: revision, create/mod revision and version.
    let r0 = cl.put(k(p, "a"), "1", None).await.unwrap();
    let h = r0.header().unwrap();
    assert_ne!(h.cluster_id(), 0);
    assert_ne!(h.member_id(), 0);
    assert!(h.raft_term() >= 1);
    let rev_a = h.revision();
    let got = cl.get(k(p, "a"), None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (rev_a, rev_a, 1)
    );
    assert_eq!(got.header().unwrap().revision(), rev_a);

    // prev_kv and version increments.
    let r = cl
        .put(k(p, "a"), "2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(r.prev_key().unwrap().value(), b"1");
    assert_eq!(r.header().unwrap().revision(), rev_a + 1);
    let kv = cl.get(k(p, "a"), None).await.unwrap().kvs()[0].clone();
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (rev_a, rev_a + 1, 2)
    );

    // ignore_value keeps the value; a fresh put elsewhere.
    cl.put(k(p, "a"), "", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap();
    let kv = cl.get(k(p, "a"), None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.version()), (&b"2"[..], 3));
    for (key, v) in [("b", "bv"), ("c", "cv"), ("d", "dv"), ("e", "ev")] {
        cl.put(k(p, key), v, None).await.unwrap();
    }

    // Ranges: single key, [b, d), prefix, from-key, all keys.
    let r = cl
        .get(k(p, "b"), Some(GetOptions::new().with_range(k(p, "d"))))
        .await
        .unwrap();
    assert_eq!(keys(&r), [k(p, "b"), k(p, "c")]);
    let r = cl
        .get(p, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys(&r), ["a", "b", "c", "d", "e"].map(|s| k(p, s)));
    let r = cl
        .get(k(p, "c"), Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert!(keys(&r).starts_with(&[k(p, "c"), k(p, "d"), k(p, "e")]));
    let r = cl
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert!(keys(&r).contains(&k(p, "e")));

    // limit, more, count.
    let r = cl
        .get(p, Some(GetOptions::new().with_prefix().with_limit(2)))
        .await
        .unwrap();
    assert_eq!(keys(&r), [k(p, "a"), k(p, "b")]);
    assert!(r.more());
    assert_eq!(r.count(), 5);

    // Sort order and target.
    let r = cl
        .get(
            p,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), ["e", "d", "c", "b", "a"].map(|s| k(p, s)));
    let r = cl
        .get(
            p,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Mod, SortOrder::Descend),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r)[0], k(p, "e"));
    assert_eq!(keys(&r)[4], k(p, "a"), "a was modified first");
    let r = cl
        .get(
            p,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Version, SortOrder::Descend),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r)[0], k(p, "a"));
    let r = cl
        .get(
            p,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Value, SortOrder::Ascend),
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"2");

    // keys_only, count_only.
    let r = cl
        .get(p, Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .unwrap();
    assert!(r.kvs().iter().all(|kv| kv.value().is_empty()));
    assert_eq!(r.kvs().len(), 5);
    let r = cl
        .get(p, Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 5);

    // Revision: a read in the past sees the old value; serializable reads work too.
    let r = cl
        .get(k(p, "a"), Some(GetOptions::new().with_revision(rev_a)))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"1");
    let r = cl
        .get(k(p, "a"), Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"2");

    // min/max mod and create revision filters.
    let rev_b = cl.get(k(p, "b"), None).await.unwrap().kvs()[0].mod_revision();
    let r = cl
        .get(
            p,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_min_mod_revision(rev_b + 1),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), [k(p, "c"), k(p, "d"), k(p, "e")]);
    let r = cl
        .get(
            p,
            Some(GetOptions::new().with_prefix().with_max_mod_revision(rev_b)),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), [k(p, "a"), k(p, "b")]);
    let r = cl
        .get(
            p,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_min_create_revision(rev_b),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), [k(p, "b"), k(p, "c"), k(p, "d"), k(p, "e")]);
    let r = cl
        .get(
            p,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_max_create_revision(rev_a),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), [k(p, "a")]);

    // DeleteRange: single key with prev_kv, then a range; deleted counts; one revision.
    let before = cl
        .get(p, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let rev_before = before.header().unwrap().revision();
    let r = cl
        .delete(k(p, "e"), Some(DeleteOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(r.deleted(), 1);
    assert_eq!(r.prev_kvs()[0].value(), b"ev");
    assert_eq!(r.header().unwrap().revision(), rev_before + 1);
    let r = cl
        .delete(
            k(p, "c"),
            Some(DeleteOptions::new().with_range(k(p, "e")).with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(r.deleted(), 2);
    assert_eq!(r.prev_kvs().len(), 2);
    assert_eq!(r.header().unwrap().revision(), rev_before + 2);
    let r = cl.delete(k(p, "nothing"), None).await.unwrap();
    assert_eq!(r.deleted(), 0);
    assert_eq!(
        r.header().unwrap().revision(),
        rev_before + 2,
        "no-op delete takes no revision"
    );
    // A new generation starts at version 1 with a new create revision.
    let r = cl.put(k(p, "c"), "again", None).await.unwrap();
    let kv = cl.get(k(p, "c"), None).await.unwrap().kvs()[0].clone();
    assert_eq!(
        (kv.version(), kv.create_revision()),
        (1, r.header().unwrap().revision())
    );

    // Txn: every compare target and result, one revision per txn, responses in order.
    let kv_a = cl.get(k(p, "a"), None).await.unwrap().kvs()[0].clone();
    let t = Txn::new()
        .when([
            Compare::value(k(p, "a"), CompareOp::Equal, "2"),
            Compare::version(k(p, "a"), CompareOp::Greater, 2),
            Compare::create_revision(k(p, "a"), CompareOp::Equal, kv_a.create_revision()),
            Compare::mod_revision(k(p, "a"), CompareOp::Less, kv_a.mod_revision() + 1),
            Compare::lease(k(p, "a"), CompareOp::Equal, 0),
            Compare::value(k(p, "b"), CompareOp::NotEqual, "zzz"),
        ])
        .and_then([
            TxnOp::put(k(p, "t1"), "x", None),
            TxnOp::put(k(p, "t2"), "y", None),
            TxnOp::get(k(p, "t1"), None),
            TxnOp::delete(k(p, "b"), None),
        ])
        .or_else([TxnOp::put(k(p, "fail"), "1", None)]);
    let rev_pre = cl
        .get(k(p, "a"), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let r = cl.txn(t).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(
        r.header().unwrap().revision(),
        rev_pre + 1,
        "one revision per txn"
    );
    let ops = r.op_responses();
    assert_eq!(ops.len(), 4);
    match &ops[2] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"x"),
        other => panic!("expected a get response, got {other:?}"),
    }
    match &ops[3] {
        TxnOpResponse::Delete(d) => assert_eq!(d.deleted(), 1),
        other => panic!("expected a delete response, got {other:?}"),
    }
    let t1 = cl.get(k(p, "t1"), None).await.unwrap().kvs()[0].clone();
    let t2 = cl.get(k(p, "t2"), None).await.unwrap().kvs()[0].clone();
    assert_eq!(t1.mod_revision(), t2.mod_revision());

    // Failure branch, range compare, nested txn.
    let r = cl
        .txn(
            Txn::new()
                .when([Compare::version(k(p, "t"), CompareOp::Equal, 1).with_prefix()])
                .and_then([TxnOp::txn(
                    Txn::new()
                        .when([Compare::value(k(p, "t1"), CompareOp::Equal, "nope")])
                        .and_then([TxnOp::put(k(p, "n"), "then", None)])
                        .or_else([TxnOp::put(k(p, "n"), "else", None)]),
                )])
                .or_else([TxnOp::put(k(p, "n"), "outer-else", None)]),
        )
        .await
        .unwrap();
    assert!(r.succeeded(), "t1 and t2 both have version 1");
    let n = cl.get(k(p, "n"), None).await.unwrap();
    assert_eq!(n.kvs()[0].value(), b"else");
    let r = cl
        .txn(
            Txn::new()
                .when([Compare::version(k(p, "t"), CompareOp::Greater, 1).with_prefix()])
                .and_then([TxnOp::put(k(p, "m"), "then", None)])
                .or_else([TxnOp::put(k(p, "m"), "else", None)]),
        )
        .await
        .unwrap();
    assert!(!r.succeeded());
    assert_eq!(
        cl.get(k(p, "m"), None).await.unwrap().kvs()[0].value(),
        b"else"
    );

    // Compact: reads below fail, the latest values survive.
    let last = cl
        .put(k(p, "last"), "v", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cl.compact(
        last - 1,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    let e = cl
        .get(k(p, "a"), Some(GetOptions::new().with_revision(rev_a)))
        .await
        .unwrap_err();
    assert_grpc(
        &e,
        tonic::Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let r = cl
        .get(p, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(
        keys(&r),
        ["a", "c", "last", "m", "n", "t1", "t2"].map(|s| k(p, s))
    );
    last
}

/// Asserts that an etcd-client error is a gRPC status with `code` and exactly `msg`.
pub fn assert_grpc(e: &etcd_client::Error, code: tonic::Code, msg: &str) {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(s.code() as i32, code as i32, "code of {s:?}");
            assert_eq!(s.message(), msg);
        }
        other => panic!("expected gRPC status {code:?} {msg:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kv_feature_and_again_after_restart() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let mut cl = connect(&c).await;
    let last = exercise_kv(&mut cl, "one/").await;
    let all_before = cl
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();

    c.restart(0);
    c.wait_ready().await;
    let mut cl = connect(&c).await;
    let all_after = cl
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let flat = |r: &etcd_client::GetResponse| -> Vec<String> {
        r.kvs()
            .iter()
            .map(|kv| {
                format!(
                    "{:?}={:?} c{} m{} v{} l{}",
                    kv.key(),
                    kv.value(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                    kv.lease()
                )
            })
            .collect()
    };
    assert_eq!(
        flat(&all_after),
        flat(&all_before),
        "every key survives the restart"
    );
    assert!(all_after.header().unwrap().revision() >= last);
    let last2 = exercise_kv(&mut cl, "two/").await;
    assert!(last2 > last, "revisions continue after a restart");
}

/// A range's header carries the revision the range was read at, so that "get, then watch
/// from header.revision + 1" misses nothing: with one key written continuously, the header
/// revision is exactly the key's mod_revision.
async fn range_header_is_the_read_revision(kind: ServerKind) {
    let c = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let mut reader = connect(&c).await;
    reader.put("hot", "0", None).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let mut writer = connect(&c).await;
        let stop_w = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                writer.put("hot", n.to_string(), None).await.unwrap();
            }
            n
        }));
    }
    let mut ahead = 0;
    for _ in 0..3000 {
        let r = reader.get("hot", None).await.unwrap();
        let header = r.header().unwrap().revision();
        let modified = r.kvs()[0].mod_revision();
        if header != modified {
            ahead += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    assert!(writes > 50, "the writers made only {writes} writes");
    assert_eq!(
        ahead, 0,
        "{kind:?}: {ahead} of 3000 ranges had a header newer than their data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_header_is_the_read_revision_minietcd() {
    range_header_is_the_read_revision(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_header_is_the_read_revision_etcd() {
    range_header_is_the_read_revision(ServerKind::Etcd).await;
}
