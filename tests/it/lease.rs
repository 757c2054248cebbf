//! Leases through the `etcd-client` crate: grant, put with a lease, time-to-live with keys,
//! keep-alive, revoke (attached keys deleted), and expiry on the leader.

use std::time::Duration;

use etcd_client::{LeaseTimeToLiveOptions, PutOptions};
use tonic::Code;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::kv::{assert_grpc, connect};
use crate::support::wait_until_async;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_lifecycle() {
    let c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let mut cl = connect(&c).await;

    let g = cl.lease_grant(60, None).await.unwrap();
    assert!(g.id() > 0);
    assert_eq!(g.ttl(), 60);
    let id = g.id();
    cl.put("l/a", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    cl.put("l/b", "2", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    cl.put("l/c", "3", None).await.unwrap();
    let kv = cl.get("l/a", None).await.unwrap().kvs()[0].clone();
    assert_eq!(kv.lease(), id);

    let t = cl
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(t.granted_ttl(), 60);
    assert!(t.ttl() > 0 && t.ttl() <= 60);
    assert_eq!(t.keys(), [b"l/a".to_vec(), b"l/b".to_vec()]);

    let leases = cl.leases().await.unwrap();
    assert!(leases.leases().iter().any(|l| l.id() == id));

    let (mut keeper, mut stream) = cl.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let resp = stream.message().await.unwrap().unwrap();
    assert_eq!((resp.id(), resp.ttl()), (id, 60));

    // Re-putting without a lease detaches the key.
    cl.put("l/b", "2b", None).await.unwrap();
    let rev = cl
        .lease_revoke(id)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert!(cl.get("l/a", None).await.unwrap().kvs().is_empty());
    assert_eq!(cl.get("l/b", None).await.unwrap().kvs()[0].value(), b"2b");
    assert_eq!(cl.get("l/c", None).await.unwrap().kvs().len(), 1);
    assert!(rev > kv.mod_revision());
    let e = cl.lease_revoke(id).await.unwrap_err();
    assert_grpc(&e, Code::NotFound, "etcdserver: requested lease not found");
    let t = cl.lease_time_to_live(id, None).await.unwrap();
    assert_eq!(t.ttl(), -1);

    // A short lease expires on its own and takes its keys with it.
    let g = cl.lease_grant(1, None).await.unwrap();
    cl.put("l/short", "x", Some(PutOptions::new().with_lease(g.id())))
        .await
        .unwrap();
    let mut cl2 = cl.clone();
    wait_until_async("the short lease to expire", Duration::from_secs(15), || {
        let mut cl = cl2.clone();
        async move {
            cl.get("l/short", None)
                .await
                .ok()
                .filter(|r| r.kvs().is_empty())
                .map(|_| ())
        }
    })
    .await;
    let t = cl2.lease_time_to_live(g.id(), None).await.unwrap();
    assert_eq!(t.ttl(), -1);
}
