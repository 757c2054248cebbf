//! Every KV error case answers etcd's exact string and gRPC code.

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use tonic::Code;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::kv::{assert_grpc, connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_etcds() {
    let c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let mut cl = connect(&c).await;

    let e = cl.put("", "v", None).await.unwrap_err();
    assert_grpc(&e, Code::InvalidArgument, "etcdserver: key is not provided");
    let e = cl.get("", None).await.unwrap_err();
    assert_grpc(&e, Code::InvalidArgument, "etcdserver: key is not provided");
    let e = cl.delete("", None).await.unwrap_err();
    assert_grpc(&e, Code::InvalidArgument, "etcdserver: key is not provided");

    let e = cl
        .put("k", "v", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap_err();
    assert_grpc(&e, Code::InvalidArgument, "etcdserver: value is provided");
    let e = cl
        .put("k", "", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap_err();
    assert_grpc(&e, Code::InvalidArgument, "etcdserver: key not found");
    let e = cl
        .put(
            "k",
            "v",
            Some(PutOptions::new().with_ignore_lease().with_lease(5)),
        )
        .await
        .unwrap_err();
    assert_grpc(&e, Code::InvalidArgument, "etcdserver: lease is provided");

    let e = cl
        .put("k", "v", Some(PutOptions::new().with_lease(0x1234)))
        .await
        .unwrap_err();
    assert_grpc(&e, Code::NotFound, "etcdserver: requested lease not found");

    let rev = cl
        .put("k", "v1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cl.put("k", "v2", None).await.unwrap();
    let e = cl
        .get("k", Some(GetOptions::new().with_revision(rev + 100)))
        .await
        .unwrap_err();
    assert_grpc(
        &e,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    cl.compact(rev + 1, None).await.unwrap();
    let e = cl
        .get("k", Some(GetOptions::new().with_revision(rev)))
        .await
        .unwrap_err();
    assert_grpc(
        &e,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let e = cl.compact(rev, None).await.unwrap_err();
    assert_grpc(
        &e,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let e = cl.compact(rev + 1000, None).await.unwrap_err();
    assert_grpc(
        &e,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );

    let ops: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("t{i}"), "v", None))
        .collect();
    let e = cl.txn(Txn::new().and_then(ops)).await.unwrap_err();
    assert_grpc(
        &e,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    let ops: Vec<TxnOp> = (0..128)
        .map(|i| TxnOp::put(format!("t{i}"), "v", None))
        .collect();
    cl.txn(Txn::new().and_then(ops))
        .await
        .expect("128 ops are allowed");

    let e = cl
        .txn(
            Txn::new()
                .when([Compare::version("k", CompareOp::Greater, 0)])
                .and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]),
        )
        .await
        .unwrap_err();
    assert_grpc(
        &e,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );

    // Bigger than --max-request-bytes (1.5 MiB) but within the transport's slack.
    let big = vec![b'x'; 1536 * 1024 + 10];
    let e = cl.put("big", big, None).await.unwrap_err();
    assert_grpc(
        &e,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    // Nothing was written by any failed request.
    assert!(cl.get("big", None).await.unwrap().kvs().is_empty());
    assert!(cl.get("d", None).await.unwrap().kvs().is_empty());
}
