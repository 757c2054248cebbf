//! Membership changes and snapshot catch-up on real minietcd processes.

use std::time::{Duration, Instant};

use etcd_client::{GetOptions, MemberAddOptions};
use tonic::Code;

use crate::cluster_basic::{client_on, wait_local_value};
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::kv::assert_grpc;

/// Polls member `via`'s member list until `pred` holds for it.
async fn wait_members(
    c: &Cluster,
    via: usize,
    what: &str,
    pred: impl Fn(&[etcd_client::Member]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut cl = client_on(c, via).await;
        if let Ok(list) = cl.member_list().await {
            if pred(list.members()) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen; logs in {}",
            c.dir().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_member_add_of_a_fourth_member_then_remove() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = c.wait_ready().await;
    let follower = (leader + 1) % 3;
    let mut cl = client_on(&c, follower).await;
    cl.put("before-join", "1", None).await.unwrap();

    // Added through a follower: it forwards to the leader.
    let (new, url) = c.reserve_member();
    let added = cl.member_add([url.as_str()], None).await.unwrap();
    let member = added.member().unwrap().clone();
    assert_eq!(member.peer_urls(), std::slice::from_ref(&url));
    assert_eq!(member.name(), "", "not started yet");
    assert!(!member.is_learner());
    let id = member.id();
    let members = cl.member_list().await.unwrap().members().to_vec();
    assert_eq!(members.len(), 4);

    // etcd's refusals.
    let e = cl.member_add([url.as_str()], None).await.unwrap_err();
    assert_grpc(
        &e,
        Code::FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );
    let e = cl.member_remove(0x1234_5678).await.unwrap_err();
    assert_grpc(&e, Code::NotFound, "etcdserver: member not found");
    let voter = members.iter().find(|m| m.id() != id).unwrap().id();
    let e = cl.member_promote(voter).await.unwrap_err();
    assert_grpc(
        &e,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member",
    );

    // Started with --initial-cluster-state existing, it takes the id it was given, gets the
    // log from the leader and publishes its name and client URL.
    c.spawn_joining(new);
    let client_url = format!("http://{}", c.endpoint(new));
    wait_members(&c, leader, "the new member published", |ms| {
        ms.iter()
            .any(|m| m.id() == id && m.name() == "m3" && m.client_urls() == [client_url.clone()])
    })
    .await;
    assert_eq!(
        cl.member_list().await.unwrap().members().len(),
        4,
        "no member was added twice"
    );
    wait_local_value(&c, new, "before-join", b"1", Duration::from_secs(10)).await;
    let mut on_new = client_on(&c, new).await;
    on_new.put("through-new", "2", None).await.unwrap();
    wait_local_value(&c, leader, "through-new", b"2", Duration::from_secs(5)).await;

    // Removed again (through the new member itself): the member list shrinks everywhere.
    // With --strict-reconfig-check (on, as in etcd) the remove waits until the other members
    // have been connected for etcd's health interval (5 s): "unhealthy cluster" until then.
    let deadline = Instant::now() + Duration::from_secs(15);
    let removed = loop {
        match on_new.member_remove(id).await {
            Ok(r) => break r,
            Err(e) if e.to_string().contains("etcdserver: unhealthy cluster") => {
                assert!(Instant::now() < deadline, "still unhealthy: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("member remove: {e}"),
        }
    };
    assert_eq!(removed.members().len(), 3);
    assert!(removed.members().iter().all(|m| m.id() != id));
    // As etcd does, the removed member stops by itself.
    let stopped = Instant::now() + Duration::from_secs(10);
    while crate::support::port_open(c.client_port(new)) {
        assert!(Instant::now() < stopped, "the removed member keeps serving");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.kill(new);
    for i in 0..3 {
        wait_members(&c, i, "three members", |ms| {
            ms.len() == 3 && ms.iter().all(|m| m.id() != id)
        })
        .await;
    }
    cl.put("after-remove", "3", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_learner_is_added_promoted_and_updated() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = c.wait_ready().await;
    let mut cl = client_on(&c, leader).await;
    let (new, url) = c.reserve_member();
    let added = cl
        .member_add(
            [url.as_str()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap();
    let id = added.member().unwrap().id();
    assert!(added.member().unwrap().is_learner());
    let (_, second) = c.reserve_member();
    let e = cl
        .member_add(
            [second.as_str()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap_err();
    assert_grpc(
        &e,
        Code::FailedPrecondition,
        "etcdserver: too many learner members in cluster",
    );

    c.spawn_joining(new);
    cl.put("k", "v", None).await.unwrap();
    wait_local_value(&c, new, "k", b"v", Duration::from_secs(15)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let promoted = loop {
        match cl.member_promote(id).await {
            Ok(r) => break r,
            Err(e) => assert!(Instant::now() < deadline, "promote: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(promoted
        .members()
        .iter()
        .any(|m| m.id() == id && !m.is_learner()));

    // MemberUpdate rewrites the peer URLs; an unknown id is refused.
    let e = cl
        .member_update(0x42, vec!["http://127.0.0.1:1".to_string()])
        .await
        .unwrap_err();
    assert_grpc(&e, Code::NotFound, "etcdserver: member not found");
    let updated = cl.member_update(id, vec![url.clone()]).await.unwrap();
    assert_eq!(updated.members().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_follower_behind_purged_logs_catches_up_by_snapshot_with_history() {
    let mut c = Cluster::start_ready(
        ClusterConfig::new(ServerKind::Minietcd, 3)
            .arg("--snapshot-count=100")
            .arg("--experimental-snapshot-catchup-entries=10"),
    )
    .await;
    let leader = c.wait_ready().await;
    let follower = (leader + 1) % 3;
    let mut cl = client_on(&c, leader).await;
    let mut old_rev = 0;
    for n in 0..5 {
        let r = cl.put("h", format!("v{n}"), None).await.unwrap();
        if n == 1 {
            old_rev = r.header().unwrap().revision();
        }
    }
    wait_local_value(&c, follower, "h", b"v4", Duration::from_secs(5)).await;

    c.kill(follower);
    for n in 0..320 {
        cl.put(format!("fill/{}", n % 40), format!("{n}"), None)
            .await
            .unwrap();
    }
    cl.put("h", "latest", None).await.unwrap();

    c.restart(follower);
    wait_local_value(&c, follower, "h", b"latest", Duration::from_secs(20)).await;
    let log = std::fs::read_to_string(c.dir().join(format!("m{follower}.log"))).unwrap();
    assert!(
        log.contains("snapshot installed"),
        "the follower caught up without a snapshot; logs in {}",
        c.dir().display()
    );
    // Its history came with the snapshot: an old revision reads as on the leader.
    let opts = || Some(GetOptions::new().with_revision(old_rev).with_serializable());
    let mut on_follower = client_on(&c, follower).await;
    let theirs = on_follower.get("h", opts()).await.unwrap();
    let ours = cl.get("h", opts()).await.unwrap();
    assert_eq!(theirs.kvs()[0].value(), b"v1");
    let summary = |r: &etcd_client::GetResponse| -> Vec<(Vec<u8>, i64, i64, i64)> {
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv.value().to_vec(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                )
            })
            .collect()
    };
    assert_eq!(summary(&theirs), summary(&ours));
    let theirs = on_follower
        .get(
            "fill/",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .unwrap();
    assert_eq!(theirs.kvs().len(), 40);
}
