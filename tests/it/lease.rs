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

/// A client on member `i` alone.
async fn client_on(c: &Cluster, i: usize) -> etcd_client::Client {
    crate::cluster_basic::client_on(c, i).await
}

/// Three members, and a member that is not the leader.
async fn cluster_and_follower(kind: ServerKind) -> (Cluster, usize, usize) {
    let c = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
    let leader = c.wait_ready().await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    (c, leader, follower)
}

/// LeaseTimeToLive on a follower answers from the leader's clock, which keep-alives refresh
/// (etcd forwards it to the leader): not a stale 0 for a live lease, nor a full TTL forever.
async fn follower_time_to_live_follows_the_leader(kind: ServerKind) {
    let (c, leader, follower) = cluster_and_follower(kind).await;
    let mut on_leader = client_on(&c, leader).await;
    let mut on_follower = client_on(&c, follower).await;

    // Granted and kept alive through the follower for longer than its TTL.
    let id = on_follower.lease_grant(4, None).await.unwrap().id();
    let (mut keeper, mut stream) = on_follower.lease_keep_alive(id).await.unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        keeper.keep_alive().await.unwrap();
        let r = stream.message().await.unwrap().unwrap();
        assert_eq!((r.id(), r.ttl()), (id, 4), "{kind:?}: keep-alive");
    }
    let t = on_follower.lease_time_to_live(id, None).await.unwrap();
    assert!(
        (2..=4).contains(&t.ttl()),
        "{kind:?}: a lease kept alive a moment ago reports TTL {} on a follower",
        t.ttl()
    );
    assert_eq!(t.granted_ttl(), 4);

    // Granted through the leader and never kept alive: the follower sees it run down.
    let id = on_leader.lease_grant(6, None).await.unwrap().id();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let t = on_follower.lease_time_to_live(id, None).await.unwrap();
    assert!(
        (1..=4).contains(&t.ttl()),
        "{kind:?}: a 6 s lease reports TTL {} on a follower 2.5 s after its grant",
        t.ttl()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_follower_time_to_live_follows_the_leader() {
    follower_time_to_live_follows_the_leader(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lease_follower_time_to_live_follows_the_leader() {
    follower_time_to_live_follows_the_leader(ServerKind::Etcd).await;
}

/// A keep-alive that arrives after the lease expired is refused (TTL 0), never answered
/// with a TTL while the revoke deletes the lease and its keys: the offsets spread the
/// keep-alives across the leader's expiry checks.
async fn expired_lease_is_not_renewed(kind: ServerKind) {
    let (c, _leader, follower) = cluster_and_follower(kind).await;
    let mut cl = client_on(&c, follower).await;
    let mut renewed = Vec::new();
    let mut answered_early = Vec::new();
    for (n, late_ms) in [20u64, 80, 140, 200, 260].into_iter().enumerate() {
        let key = format!("expired/{n}");
        let g = cl.lease_grant(2, None).await.unwrap();
        let (id, term) = (g.id(), g.header().map(|h| h.raft_term()));
        cl.put(key.as_str(), "v", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        // Opening the stream renews the lease once (the client sends a first keep-alive):
        // the clock runs from its answer at the latest.
        let (mut keeper, mut stream) = cl.lease_keep_alive(id).await.unwrap();
        let renewed_at = tokio::time::Instant::now();
        tokio::time::sleep_until(renewed_at + Duration::from_millis(2000 + late_ms)).await;
        keeper.keep_alive().await.unwrap();
        let r = stream.message().await.unwrap().unwrap();
        if r.ttl() > 0 {
            // A leader elected meanwhile restarts every lease's clock (etcd's Promote).
            if r.header().map(|h| h.raft_term()) == term {
                renewed.push((late_ms, r.ttl()));
            }
        } else {
            // etcd answers only once the revoke is done: the keys are gone by then.
            let left = cl.get(key.as_str(), None).await.unwrap().kvs().len();
            if left != 0 {
                answered_early.push(late_ms);
            }
        }
        let mut cl2 = cl.clone();
        wait_until_async(
            "the expired lease's key to go",
            Duration::from_secs(10),
            || {
                let mut cl = cl2.clone();
                let key = key.clone();
                async move {
                    cl.get(key, None)
                        .await
                        .ok()
                        .filter(|r| r.kvs().is_empty())
                        .map(|_| ())
                }
            },
        )
        .await;
        let t = cl2.lease_time_to_live(id, None).await.unwrap();
        assert_eq!(t.ttl(), -1, "{kind:?}: lease {id} outlived its revoke");
    }
    assert!(
        renewed.is_empty(),
        "{kind:?}: keep-alives (ms after expiry, TTL) answered for expired leases: {renewed:?}"
    );
    assert!(
        answered_early.is_empty(),
        "{kind:?}: keep-alives (ms after expiry) answered TTL 0 while the lease's key was still there: {answered_early:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expired_is_not_renewed() {
    expired_lease_is_not_renewed(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lease_expired_is_not_renewed() {
    expired_lease_is_not_renewed(ServerKind::Etcd).await;
}

/// A lease outlives a leader change that happens late in its TTL (the new leader restarts
/// every clock), is kept alive through the new leader, and still expires once left alone.
async fn lease_survives_a_leader_change(kind: ServerKind) {
    let (mut c, leader, follower) = cluster_and_follower(kind).await;
    let mut cl = client_on(&c, follower).await;
    let id = cl.lease_grant(3, None).await.unwrap().id();
    let granted = tokio::time::Instant::now();
    cl.put("moved", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.kill(leader);
    c.wait_ready().await;
    tokio::time::sleep_until(granted + Duration::from_millis(3500)).await;
    assert_eq!(
        cl.get("moved", None).await.unwrap().kvs().len(),
        1,
        "{kind:?}: the lease expired across the leader change"
    );
    let (mut keeper, mut stream) = cl.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let r = stream.message().await.unwrap().unwrap();
    assert_eq!(
        (r.id(), r.ttl()),
        (id, 3),
        "{kind:?}: keep-alive on the new leader"
    );
    let t = cl.lease_time_to_live(id, None).await.unwrap();
    assert!((1..=3).contains(&t.ttl()), "{kind:?}: TTL {}", t.ttl());
    drop((keeper, stream));
    let mut cl2 = cl.clone();
    wait_until_async("the lease to expire", Duration::from_secs(10), || {
        let mut cl = cl2.clone();
        async move {
            cl.get("moved", None)
                .await
                .ok()
                .filter(|r| r.kvs().is_empty())
                .map(|_| ())
        }
    })
    .await;
    assert_eq!(cl2.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_survives_a_leader_change_late_in_its_ttl() {
    lease_survives_a_leader_change(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lease_survives_a_leader_change_late_in_its_ttl() {
    lease_survives_a_leader_change(ServerKind::Etcd).await;
}

/// The TTL a new leader reports for a 60 s lease granted 5 s before the old leader died,
/// with or without lease checkpoints (every second).
async fn ttl_after_a_leader_change(checkpoints: bool) -> i64 {
    let mut config = ClusterConfig::new(ServerKind::Minietcd, 3);
    if checkpoints {
        config = config
            .arg("--experimental-enable-lease-checkpoint")
            .arg("--experimental-lease-checkpoint-interval=1s");
    }
    let mut c = Cluster::start_ready(config).await;
    let leader = c.wait_ready().await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let mut cl = client_on(&c, follower).await;
    let id = cl.lease_grant(60, None).await.unwrap().id();
    // Five seconds of the lease pass on the leader's clock (a checkpoint each second).
    let cl2 = cl.clone();
    wait_until_async("5 s of the lease to pass", Duration::from_secs(15), || {
        let mut cl = cl2.clone();
        async move {
            let t = cl.lease_time_to_live(id, None).await.ok()?;
            (t.ttl() <= 55).then_some(())
        }
    })
    .await;
    c.kill(leader);
    let next = c.wait_ready().await;
    assert_ne!(next, leader);
    // Asked on the surviving follower: the new leader's clock.
    let t = cl.lease_time_to_live(id, None).await.unwrap();
    assert_eq!(t.granted_ttl(), 60);
    t.ttl()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_checkpoints_keep_the_remaining_ttl_across_a_leader_change() {
    let ttl = ttl_after_a_leader_change(true).await;
    assert!((1..=58).contains(&ttl), "TTL {ttl} after the leader change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lease_checkpoints_a_new_leader_restarts_the_full_ttl() {
    let ttl = ttl_after_a_leader_change(false).await;
    assert!(ttl >= 59, "TTL {ttl} after the leader change");
}
