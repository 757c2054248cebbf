//! `--strict-reconfig-check` and member add on a one-member cluster, each run against real
//! etcd 3.4 and minietcd with the same expectations.

use std::time::Duration;

use tonic::Code;

use crate::cluster_basic::client_on;
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::kv::assert_grpc;
use crate::support::wait_until_async;

/// With strict reconfig check (the default), removing a live member while another one is
/// down is refused with etcd's "unhealthy cluster"; removing the down member is allowed.
async fn strict_remove(kind: ServerKind) {
    let mut c = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
    let leader = c.wait_ready().await;
    let (down, live) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut cl = client_on(&c, leader).await;
    let members = cl.member_list().await.unwrap().members().to_vec();
    let id_of = |i: usize| {
        let name = c.members[i].name.clone();
        members.iter().find(|m| m.name() == name).unwrap().id()
    };
    let (down_id, live_id) = (id_of(down), id_of(live));
    c.kill(down);
    // Give the leader time to notice (etcd: its transport; minietcd: a missed heartbeat).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e = cl.member_remove(live_id).await.unwrap_err();
    assert_grpc(&e, Code::Unavailable, "etcdserver: unhealthy cluster");
    // A down member is not part of the active quorum: removing it is allowed once the
    // leader counts it as inactive (etcd and minietcd: 5 s without an answer at most).
    let r = wait_until_async("the down member removed", Duration::from_secs(20), || {
        let mut cl = cl.clone();
        async move { cl.member_remove(down_id).await.ok() }
    })
    .await;
    assert_eq!(r.members().len(), 2, "{kind:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_refuses_a_remove_that_loses_quorum_etcd() {
    strict_remove(ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_refuses_a_remove_that_loses_quorum_minietcd() {
    strict_remove(ServerKind::Minietcd).await;
}

/// `--strict-reconfig-check=false`: the same remove is not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_off_allows_the_remove() {
    let config = ClusterConfig::new(ServerKind::Minietcd, 3).arg("--strict-reconfig-check=false");
    let mut c = Cluster::start_ready(config).await;
    let leader = c.wait_ready().await;
    let (down, live) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut cl = client_on(&c, leader).await;
    let members = cl.member_list().await.unwrap().members().to_vec();
    let live_name = c.members[live].name.clone();
    let live_id = members.iter().find(|m| m.name() == live_name).unwrap().id();
    c.kill(down);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Not refused. (etcd then commits it with the old configuration's quorum; openraft's joint
    // consensus needs the new configuration's too, which the down member denies, so on
    // minietcd the request may time out instead.)
    let r = tokio::time::timeout(Duration::from_secs(15), cl.member_remove(live_id))
        .await
        .expect("remove answered in time");
    if let Err(e) = r {
        assert!(!e.to_string().contains("unhealthy cluster"), "{e}");
    }
}

/// Member add on a one-member cluster answers at once with the new member list; the new
/// member then joins with `--initial-cluster-state existing` and the cluster serves.
async fn add_to_one_member(kind: ServerKind) {
    let mut c = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let mut cl = client_on(&c, 0).await;
    let (new, url) = c.reserve_member();
    let added = tokio::time::timeout(Duration::from_secs(3), cl.member_add([url.as_str()], None))
        .await
        .expect("member add answers at once")
        .unwrap();
    assert_eq!(added.member_list().len(), 2, "{kind:?}");
    let id = added.member().unwrap().id();
    c.spawn_joining(new);
    wait_until_async(
        "the cluster of two serving",
        Duration::from_secs(30),
        || {
            let mut cl = cl.clone();
            async move {
                cl.put("after-add", "1", None).await.ok()?;
                let list = cl.member_list().await.ok()?;
                let joined = list
                    .members()
                    .iter()
                    .any(|m| m.id() == id && !m.name().is_empty());
                joined.then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_add_on_a_one_member_cluster_answers_at_once_etcd() {
    add_to_one_member(ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_add_on_a_one_member_cluster_answers_at_once_minietcd() {
    add_to_one_member(ServerKind::Minietcd).await;
}
