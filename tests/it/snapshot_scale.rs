//! Raft snapshots at scale: `--snapshot-count` counts writes, snapshots stream between
//! members in chunks with bounded memory, and an install killed half-way recovers.

use std::time::Duration;

use etcd_client::Client;

use crate::cluster_basic::client_on;
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::wait_until_async;

/// Puts `count` keys `prefix/<n>` from `clients` concurrent tasks, so that the leader groups
/// them into few Raft entries.
async fn put_concurrently(cl: &Client, prefix: &str, count: usize, clients: usize, value: &[u8]) {
    let mut tasks = Vec::new();
    for t in 0..clients {
        let mut cl = cl.clone();
        let prefix = prefix.to_string();
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            for n in (t..count).step_by(clients) {
                cl.put(format!("{prefix}/{n:06}"), value.clone(), None)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// How many "snapshot built" lines member `i` logged.
fn snapshots_built(c: &Cluster, i: usize) -> usize {
    c.log(i).matches("snapshot built").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_count_counts_writes_not_raft_entries() {
    const COUNT: usize = 300;
    let c = Cluster::start_ready(
        ClusterConfig::new(ServerKind::Minietcd, 1).arg(format!("--snapshot-count={COUNT}")),
    )
    .await;
    let cl = client_on(&c, 0).await;
    // Fewer writes than the count: no snapshot. Every write is applied once answered, and
    // the count is checked as each write is applied, so none can be on its way.
    put_concurrently(&cl, "a", COUNT - 50, 32, b"v").await;
    assert_eq!(snapshots_built(&c, 0), 0, "logs in {}", c.dir().display());
    let before = cl.maintenance_client().status().await.unwrap().raft_index();
    // The writes crossing the count, still grouped: a snapshot follows.
    put_concurrently(&cl, "b", 60, 32, b"v").await;
    wait_until_async("a snapshot built", Duration::from_secs(20), || async {
        (snapshots_built(&c, 0) > 0).then_some(())
    })
    .await;
    let log = c.log(0);
    assert!(
        log.contains("snapshot-count reached"),
        "the snapshot was not asked for by the write count; logs in {}",
        c.dir().display()
    );
    // Grouping put the writes into fewer entries than writes: openraft's entry-counting
    // policy would not have snapshotted yet.
    assert!(
        before < COUNT as u64,
        "{} writes took {before} entries; the test needs grouped writes",
        COUNT - 50
    );
}
