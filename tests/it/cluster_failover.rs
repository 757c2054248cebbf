//! Killing the leader of three real minietcd processes: under client load (the `etcd-client`
//! crate, one client per endpoint), and under etcdctl.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;

use crate::cluster_basic::client_on;
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind, TEST_ELECTION_TIMEOUT_MS};
use crate::support::{require_program, wait_until_async};

/// One acknowledged write.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    revision: i64,
    at: Instant,
}

/// Writes `load/<w>/<n>` through member `i` until `stop`, recording every acknowledged one
/// and counting it in `acked`.
async fn writer(
    c_endpoint: String,
    w: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Vec<Ack> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(10));
    let Ok(mut cl) = etcd_client::Client::connect([c_endpoint], Some(opts)).await else {
        return Vec::new();
    };
    let mut acks = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("load/{w}/{n:06}");
        n += 1;
        match cl.put(key.clone(), n.to_string(), None).await {
            Ok(r) => {
                acks.push(Ack {
                    key,
                    revision: r.header().map(|h| h.revision()).unwrap_or(0),
                    at: Instant::now(),
                });
                acked.fetch_add(1, Ordering::Relaxed);
            }
            // Failed or unknown outcome: not acknowledged, nothing to check.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acks
}

/// How many acknowledged writes each phase of the load waits for (before the kill, after
/// the new leader is elected).
const ACKS_PER_PHASE: usize = 50;

/// Waits until the writers together have `n` acknowledged writes.
async fn wait_for_acks(acked: &AtomicUsize, n: usize) {
    wait_until_async(
        &format!("{n} acknowledged writes"),
        Duration::from_secs(30),
        || async { (acked.load(Ordering::Relaxed) >= n).then_some(()) },
    )
    .await;
}

/// Every member's own copy of `load/`: key -> mod revision.
async fn load_on(c: &Cluster, i: usize, min_rev: i64) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut cl = client_on(c, i).await;
        let opts = GetOptions::new().with_prefix().with_serializable();
        if let Ok(r) = cl.get("load/", Some(opts)).await {
            if r.header().map(|h| h.revision()).unwrap_or(0) >= min_rev {
                return r
                    .kvs()
                    .iter()
                    .map(|kv| (kv.key_str().unwrap().to_string(), kv.mod_revision()))
                    .collect();
            }
        }
        assert!(
            Instant::now() < deadline,
            "member {i} did not reach revision {min_rev}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_leader_kill_under_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = c.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(writer(c.endpoint(w), w, stop.clone(), acked.clone())))
        .collect();

    // Under load before the kill: some writes acknowledged.
    wait_for_acks(&acked, ACKS_PER_PHASE).await;
    let killed_at = Instant::now();
    c.kill(leader);
    let new_leader = c.wait_ready().await;
    let elected_in = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    // "A few election timeouts": detection (up to 2) plus an election (up to 2), with slack.
    assert!(
        elected_in < Duration::from_millis(8 * TEST_ELECTION_TIMEOUT_MS),
        "new leader after {elected_in:?}"
    );
    // Writes go on being acknowledged after the failover.
    wait_for_acks(&acked, acked.load(Ordering::Relaxed) + ACKS_PER_PHASE).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for (w, h) in writers.into_iter().enumerate() {
        let acks = h.await.unwrap();
        // Each client's revisions strictly increase.
        for pair in acks.windows(2) {
            assert!(
                pair[1].revision > pair[0].revision,
                "writer {w}: {:?} then {:?}",
                pair[0],
                pair[1]
            );
        }
        all.extend(acks);
    }
    let first_after = all
        .iter()
        .filter(|a| a.at > killed_at)
        .map(|a| a.at - killed_at)
        .min();
    tracing::info!(
        ?elected_in,
        ?first_after,
        acks = all.len(),
        "leader killed under load"
    );
    assert!(
        first_after.is_some(),
        "no write acknowledged after the kill"
    );
    assert!(
        all.iter().any(|a| a.at < killed_at),
        "no write before the kill"
    );
    // Revisions are never reused: one put, one revision.
    let revisions: HashSet<i64> = all.iter().map(|a| a.revision).collect();
    assert_eq!(revisions.len(), all.len(), "a revision was given twice");

    // Every acknowledged write is on every member, at its acknowledged revision; the
    // killed leader too once restarted.
    c.restart(leader);
    c.wait_ready().await;
    let max_rev = all.iter().map(|a| a.revision).max().unwrap();
    for i in 0..3 {
        let have = load_on(&c, i, max_rev).await;
        for a in &all {
            assert_eq!(
                have.get(&a.key),
                Some(&a.revision),
                "member {i} lacks acknowledged {a:?}"
            );
        }
    }
}

fn etcdctl(endpoints: &str, args: &[&str]) -> std::process::Output {
    Command::new(require_program("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=15s")
        .arg("--dial-timeout=2s")
        .args(args)
        .output()
        .expect("run etcdctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_etcdctl_with_all_endpoints_survives_a_leader_kill() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let endpoints = c.endpoints().join(",");
    let out = etcdctl(&endpoints, &["put", "ctl", "before"]);
    assert!(out.status.success(), "{out:?}");

    let leader = c.wait_ready().await;
    c.kill(leader);
    // Straight after the kill, before any new leader is known.
    let out = etcdctl(&endpoints, &["put", "ctl", "after"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let out = etcdctl(&endpoints, &["get", "ctl", "--print-value-only"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "after");
    let out = etcdctl(&endpoints, &["member", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}
