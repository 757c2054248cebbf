//! etcd's CheckQuorum as a client sees it: a leader cut off from its majority stops calling
//! itself leader within a few election timeouts, so require-leader streams on it end, new
//! require-leader requests on it are refused, and its Status names no leader of its own.
//! Against etcd 3.4 and minietcd.

use std::time::Duration;

use etcd_client::{ConnectOptions, GetOptions};

use crate::etcd_cluster::{ServerKind, TEST_ELECTION_TIMEOUT_MS};
use crate::robust::fault_cluster::FaultCluster;
use crate::robust::proxy::LinkFault;
use crate::robust::scenarios::SCENARIO_TIMEOUT;
use crate::support::wait_until_async;

/// How long the isolated leader may take to notice: etcd checks quorum every election timeout
/// and its require-leader monitor every few.
fn notice_within() -> Duration {
    Duration::from_millis(10 * TEST_ELECTION_TIMEOUT_MS).max(Duration::from_secs(5))
}

async fn require_leader_client(endpoint: &str) -> etcd_client::Client {
    let opts = ConnectOptions::new()
        .with_require_leader(true)
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2));
    etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .expect("connect")
}

async fn isolated_leader_is_no_leader(kind: ServerKind) {
    let fc = FaultCluster::start(kind, &[]).await;
    let leader = fc.leader().await;
    let follower = fc.other(&[leader]);
    let third = fc.other(&[leader, follower]);
    let (leader_id, lead) = fc.cluster.status(leader).await.expect("status");
    assert_eq!(
        leader_id, lead,
        "{kind:?}: the leader names itself before the partition"
    );

    let mut client = require_leader_client(&fc.cluster.endpoint(leader)).await;
    let mut stream = client.watch("cq/", None).await.expect("watch");

    fc.proxies
        .partition(&[&[leader], &[follower, third]], LinkFault::Blackhole);
    fc.expect_new_leader(follower, leader).await;

    // The open require-leader stream on the cut-off leader ends.
    let ended = tokio::time::timeout(notice_within(), async {
        loop {
            match stream.message().await {
                Ok(Some(resp)) if resp.canceled() => return,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "{kind:?}: the require-leader watch on the isolated leader stayed open"
    );
    // Its Status no longer names itself leader, and a require-leader read is refused.
    let endpoint = fc.cluster.endpoint(leader);
    wait_until_async(
        &format!("{kind:?}: the isolated leader to stop naming itself leader"),
        notice_within(),
        || async {
            let (_, lead) = fc.cluster.status(leader).await?;
            (lead != leader_id).then_some(())
        },
    )
    .await;
    let mut fresh = require_leader_client(&endpoint).await;
    let refused = fresh
        .get("cq/k", Some(GetOptions::new().with_serializable()))
        .await;
    assert!(
        refused.is_err(),
        "{kind:?}: a require-leader read on the isolated leader was served: {refused:?}"
    );

    // Healed, the old leader follows the new one and serves require-leader requests again.
    fc.proxies.heal();
    wait_until_async(
        &format!("{kind:?}: the old leader to serve require-leader reads again"),
        notice_within(),
        || async {
            let mut c = require_leader_client(&endpoint).await;
            c.get("cq/k", Some(GetOptions::new().with_serializable()))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_no_leader_minietcd() {
    tokio::time::timeout(
        SCENARIO_TIMEOUT,
        isolated_leader_is_no_leader(ServerKind::Minietcd),
    )
    .await
    .expect("within the scenario time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_no_leader_etcd() {
    tokio::time::timeout(
        SCENARIO_TIMEOUT,
        isolated_leader_is_no_leader(ServerKind::Etcd),
    )
    .await
    .expect("within the scenario time limit");
}
