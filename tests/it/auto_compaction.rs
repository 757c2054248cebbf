//! `--auto-compaction-mode=periodic --auto-compaction-retention=2s` on real etcd 3.4 and on
//! minietcd, under a steady write load: the first compaction comes after one retention
//! period, keeps about one period of history, and the compacted revision keeps advancing.
//! (Revision mode checks every 5 minutes, as etcd's does: its unit tests run on paused time.)

use std::time::Duration;

use etcd_client::{Client, GetOptions, WatchOptions};
use tokio::time::Instant;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};

/// The retention under test.
const RETENTION: Duration = Duration::from_secs(2);
/// One write every this long.
const WRITE_EVERY: Duration = Duration::from_millis(100);
/// How long the first and the next compaction may take to show.
const COMPACTION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the whole scenario may take on one server.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// The revision the store is compacted at (0: never), as a watch from revision 1 reports it.
async fn compacted_revision(client: &Client) -> i64 {
    let mut watch = client.watch_client();
    let Ok(mut stream) = watch
        .watch("k", Some(WatchOptions::new().with_start_revision(1)))
        .await
    else {
        return 0;
    };
    let mut rev = 0;
    // The created response, then either the events (not compacted) or the compaction notice.
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
            Ok(Ok(Some(resp))) => {
                rev = rev.max(resp.compact_revision());
                if !resp.events().is_empty() {
                    break;
                }
            }
            _ => break,
        }
    }
    rev
}

/// Waits until the compacted revision passes `above`; (compacted revision, current revision).
async fn wait_compaction_above(client: &Client, above: i64) -> (i64, i64) {
    let deadline = Instant::now() + COMPACTION_TIMEOUT;
    loop {
        let rev = compacted_revision(client).await;
        if rev > above {
            let mut kv = client.kv_client();
            let now = kv
                .get("k", Some(GetOptions::new().with_count_only()))
                .await
                .expect("get")
                .header()
                .map_or(0, |h| h.revision());
            return (rev, now);
        }
        assert!(
            Instant::now() < deadline,
            "no compaction above {above} within {COMPACTION_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario(c: &Cluster) {
    let client = Client::connect([c.endpoint(0)], None)
        .await
        .expect("connect");
    let mut writer = client.kv_client();
    let load = tokio::spawn(async move {
        let mut i = 0u64;
        loop {
            let _ = writer.put("k", i.to_string(), None).await;
            i += 1;
            tokio::time::sleep(WRITE_EVERY).await;
        }
    });
    let started = Instant::now();
    let (first, now) = wait_compaction_above(&client, 0).await;
    let took = started.elapsed();
    tracing::info!(kind = ?c.kind, first, now, ?took, "first auto compaction");
    assert!(
        took >= RETENTION - Duration::from_millis(500),
        "{:?}: compacted after {took:?}, before one retention period",
        c.kind
    );
    // About one period of history is kept: at 10 writes a second, well over 5 revisions.
    assert!(
        now - first >= 5,
        "{:?}: compacted at {first} with the store at {now}",
        c.kind
    );
    let (second, _) = wait_compaction_above(&client, first).await;
    tracing::info!(kind = ?c.kind, second, "next auto compaction");
    load.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_keeps_one_retention_of_history_as_etcd() {
    crate::etcd_cluster::init_test_logging();
    for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
        let config = ClusterConfig::new(kind, 1)
            .arg("--auto-compaction-mode=periodic")
            .arg(format!(
                "--auto-compaction-retention={}s",
                RETENTION.as_secs()
            ));
        let c = Cluster::start_ready(config).await;
        tokio::time::timeout(SCENARIO_TIMEOUT, scenario(&c))
            .await
            .unwrap_or_else(|_| panic!("{kind:?}: scenario timed out"));
    }
}
