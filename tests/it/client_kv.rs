//! The client's unary services against real servers: options, etcd's error meanings,
//! failover, RequireLeader and endpoint discovery.

use std::time::Duration;

use minietcd::pb::etcdserverpb::response_op::Response;
use minietcd_client::{
    Client, ClientError, ClientOptions, CompactOptions, Compare, CompareOp, DeleteOptions,
    GetOptions, LeaseOptions, MaintenanceOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};

pub async fn kv_options_and_errors(kind: ServerKind) {
    let cluster = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let client = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    let kv = client.kv();
    let first = kv
        .put("p/a", "1", PutOptions::new())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    kv.put("p/b", "22", PutOptions::new()).await.unwrap();
    kv.put("p/c", "333", PutOptions::new()).await.unwrap();
    kv.put("q", "x", PutOptions::new()).await.unwrap();
    let prev = kv
        .put("p/a", "1b", PutOptions::new().prev_kv())
        .await
        .unwrap()
        .prev_kv
        .unwrap();
    assert_eq!((prev.value.as_slice(), prev.version), (&b"1"[..], 1));

    let all = kv.get("p/", GetOptions::new().prefix()).await.unwrap();
    assert_eq!(all.count, 3);
    let keys: Vec<&[u8]> = all.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"p/a"[..], b"p/b", b"p/c"]);
    let desc = kv
        .get(
            "p/",
            GetOptions::new()
                .prefix()
                .sort(SortTarget::Key, SortOrder::Descend)
                .limit(2),
        )
        .await
        .unwrap();
    assert_eq!(desc.kvs[0].key, b"p/c");
    assert!(desc.more);
    let old = kv
        .get("p/a", GetOptions::new().revision(first))
        .await
        .unwrap();
    assert_eq!(old.kvs[0].value, b"1");
    let count = kv
        .get("p/", GetOptions::new().prefix().count_only())
        .await
        .unwrap();
    assert_eq!((count.count, count.kvs.len()), (3, 0));
    let keys_only = kv
        .get("p/", GetOptions::new().prefix().keys_only().serializable())
        .await
        .unwrap();
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    let from = kv.get("p/b", GetOptions::new().from_key()).await.unwrap();
    assert_eq!(from.count, 3, "p/b, p/c, q");

    let txn = Txn::new()
        .when([
            Compare::value("q", CompareOp::Equal, "x"),
            Compare::version("p/a", CompareOp::Greater, 1),
        ])
        .and_then([
            TxnOp::put("q", "y", PutOptions::new()),
            TxnOp::get("p/", GetOptions::new().prefix()),
        ])
        .or_else([TxnOp::delete("q", DeleteOptions::new())]);
    let resp = kv.txn(txn).await.unwrap();
    assert!(resp.succeeded);
    assert!(
        matches!(&resp.responses[1].response, Some(Response::ResponseRange(r)) if r.count == 3)
    );

    let deleted = kv
        .delete("p/", DeleteOptions::new().prefix().prev_kv())
        .await
        .unwrap();
    assert_eq!((deleted.deleted, deleted.prev_kvs.len()), (3, 3));

    let current = kv
        .get("q", GetOptions::new())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    assert_eq!(
        kv.get("q", GetOptions::new().revision(current + 10))
            .await
            .unwrap_err(),
        ClientError::FutureRevision
    );
    kv.compact(current - 1, CompactOptions::new())
        .await
        .unwrap();
    assert_eq!(
        kv.get("q", GetOptions::new().revision(first))
            .await
            .unwrap_err(),
        ClientError::Compacted {
            compact_revision: 0
        }
    );
    let err = kv.put("", "v", PutOptions::new()).await.unwrap_err();
    assert_eq!(
        err,
        ClientError::InvalidArgument("etcdserver: key is not provided".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_kv_options_and_error_meanings() {
    kv_options_and_errors(ServerKind::Etcd).await;
}

pub async fn leases(kind: ServerKind) {
    let cluster = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let client = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    let lease = client.lease();
    let granted = lease.grant(60, LeaseOptions::new()).await.unwrap();
    client
        .kv()
        .put("leased", "v", PutOptions::new().lease(granted.id))
        .await
        .unwrap();
    let ttl = lease
        .time_to_live(granted.id, LeaseOptions::new().with_keys())
        .await
        .unwrap();
    assert_eq!(
        (ttl.granted_ttl, ttl.keys.clone()),
        (60, vec![b"leased".to_vec()])
    );
    assert!(lease
        .leases(LeaseOptions::new())
        .await
        .unwrap()
        .leases
        .iter()
        .any(|l| l.id == granted.id));
    let (keeper, mut answers) = lease.keep_alive(granted.id).await.unwrap();
    assert_eq!(answers.message().await.unwrap().unwrap().ttl, 60);
    keeper.keep_alive().await.unwrap();
    assert_eq!(answers.message().await.unwrap().unwrap().id, granted.id);
    lease.revoke(granted.id, LeaseOptions::new()).await.unwrap();
    assert!(
        client
            .kv()
            .get("leased", GetOptions::new())
            .await
            .unwrap()
            .kvs
            .is_empty(),
        "revoke deletes keys"
    );
    assert_eq!(
        lease
            .revoke(granted.id, LeaseOptions::new())
            .await
            .unwrap_err(),
        ClientError::LeaseNotFound
    );
    keeper.keep_alive().await.unwrap();
    assert!(
        answers.message().await.unwrap().unwrap().ttl <= 0,
        "keep-alive of a revoked lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lease_grant_keep_alive_revoke() {
    leases(ServerKind::Etcd).await;
}

pub async fn failover_leader_requirement_and_discovery(kind: ServerKind) {
    let mut cluster = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
    // A dead endpoint first in the list: connect and requests skip it.
    let dead = crate::support::free_port();
    let mut endpoints = vec![format!("127.0.0.1:{}", dead.port)];
    endpoints.extend(cluster.endpoints());
    let opts = ClientOptions::new()
        .dial_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(3));
    let client = Client::connect(&endpoints, opts.clone()).await.unwrap();
    client.kv().put("f", "1", PutOptions::new()).await.unwrap();
    assert_ne!(
        client.current_endpoint(),
        format!("http://127.0.0.1:{}", dead.port)
    );

    // The member in use dies: a write (which is only resent when it cannot have reached a
    // server) and a read both move on to a live member.
    let current = client.current_endpoint();
    let on = (0..3)
        .find(|i| format!("http://{}", cluster.endpoint(*i)) == current)
        .unwrap();
    cluster.kill(on);
    cluster.wait_ready().await;
    client.kv().put("f", "1", PutOptions::new()).await.unwrap();
    assert_eq!(
        client.kv().get("f", GetOptions::new()).await.unwrap().kvs[0].value,
        b"1"
    );
    assert_ne!(client.current_endpoint(), current);

    // Discovery replaces the list with the members' client URLs.
    let discovering = Client::connect(
        [cluster.endpoint(cluster.running()[0])],
        opts.clone().discover_endpoints(true),
    )
    .await
    .unwrap();
    let mut found = discovering.endpoints();
    found.sort();
    let mut want: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| format!("http://{e}"))
        .collect();
    want.sort();
    assert_eq!(found, want);

    // A member that has lost its leader refuses RequireLeader requests with "no leader",
    // while a plain serializable read is still served.
    let leader = cluster.wait_ready().await;
    let lonely = cluster
        .running()
        .into_iter()
        .find(|i| *i != leader)
        .unwrap();
    for i in 0..3 {
        if i != lonely {
            cluster.kill(i);
        }
    }
    let lonely_client = Client::connect([cluster.endpoint(lonely)], opts.clone())
        .await
        .unwrap();
    crate::support::wait_until_async(
        "the lonely member to notice it has no leader",
        Duration::from_secs(15),
        || {
            let c = lonely_client.clone();
            async move {
                let r = c
                    .kv()
                    .get("f", GetOptions::new().serializable().require_leader())
                    .await;
                (r == Err(ClientError::NoLeader)).then_some(())
            }
        },
    )
    .await;
    let plain = lonely_client
        .kv()
        .get("f", GetOptions::new().serializable())
        .await
        .unwrap();
    assert_eq!(plain.kvs[0].value, b"1");
    let status = lonely_client
        .maintenance()
        .status(MaintenanceOptions::new())
        .await
        .unwrap();
    assert_eq!(status.leader, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_failover_require_leader_and_discovery() {
    failover_leader_requirement_and_discovery(ServerKind::Etcd).await;
}

// The same scenarios against minietcd, run with `cargo test --test it -- --ignored minietcd_`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_kv_options_and_error_meanings() {
    kv_options_and_errors(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_lease_grant_keep_alive_revoke() {
    leases(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_failover_require_leader_and_discovery() {
    failover_leader_requirement_and_discovery(ServerKind::Minietcd).await;
}
