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

/// A one-member cluster of `kind`, a member added to it (`member add` answers at once with
/// both members) and started joining: the cluster, a client of the first member, the new
/// member's index and the id the cluster gave it.
async fn one_member_plus_a_joiner(kind: ServerKind) -> (Cluster, etcd_client::Client, usize, u64) {
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
    (c, cl, new, id)
}

/// Member add on a one-member cluster answers at once with the new member list; the new
/// member then joins with `--initial-cluster-state existing` and the cluster serves.
async fn add_to_one_member(kind: ServerKind) {
    let (_cluster, cl, _, id) = one_member_plus_a_joiner(kind).await;
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

/// A member added at run time, restarted later with the flags of the cluster's first start
/// (`--initial-cluster-state new`, whose member id is not the one the cluster gave it): etcd
/// starts it as the member its data dir says it is; so must minietcd (found by the fault
/// soak, which restarts every member with its first flags).
async fn runtime_member_restarted_with_first_start_flags(kind: ServerKind) {
    let (mut c, cl, new, id) = one_member_plus_a_joiner(kind).await;
    let serves = |what: &'static str| {
        let cl = cl.clone();
        wait_until_async(what, Duration::from_secs(30), move || {
            let mut cl = cl.clone();
            async move {
                cl.put("k", "v", None).await.ok()?;
                let list = cl.member_list().await.ok()?;
                let m = list.members().iter().find(|m| m.id() == id)?;
                (!m.name().is_empty()).then_some(())
            }
        })
    };
    serves("the added member joined").await;
    // `restart` starts it as the cluster's first members start: state new.
    c.restart(new);
    serves("the cluster of two serving after the restart").await;
    let (member_id, _) = wait_until_async(
        "the restarted member answering",
        Duration::from_secs(30),
        || c.status(new),
    )
    .await;
    assert_eq!(
        member_id, id,
        "{kind:?}: it keeps the id the cluster gave it"
    );
    assert!(
        c.members[new].is_running(),
        "{kind:?}: it runs:\n{}",
        c.log(new)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_member_restarted_with_first_start_flags_etcd() {
    runtime_member_restarted_with_first_start_flags(ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_member_restarted_with_first_start_flags_minietcd() {
    runtime_member_restarted_with_first_start_flags(ServerKind::Minietcd).await;
}
