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

/// Key, value, create, mod revision and version of a key.
pub type KvSummary = (Vec<u8>, Vec<u8>, i64, i64, i64);

/// Reads `prefix` at revision `at` serializably from both clients' members: they must hold
/// the same key-values there. Returns how many.
pub async fn same_prefix_at(
    theirs: &mut Client,
    ours: &mut Client,
    prefix: &str,
    at: i64,
) -> usize {
    let opts = || {
        Some(
            etcd_client::GetOptions::new()
                .with_prefix()
                .with_revision(at)
                .with_serializable(),
        )
    };
    let a = theirs.get(prefix, opts()).await.unwrap();
    let b = ours.get(prefix, opts()).await.unwrap();
    assert_eq!(summary(&a), summary(&b), "at revision {at}");
    a.kvs().len()
}

/// What a range answered, key by key, without the header: two members' answers compare
/// equal when they hold the same data.
pub fn summary(r: &etcd_client::GetResponse) -> Vec<KvSummary> {
    r.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect()
}

/// A three-member cluster that snapshots every 50 writes and keeps 5 entries past a
/// snapshot, with member `lagging` killed; returns it and the leader.
async fn cluster_with_a_dead_follower() -> (Cluster, usize, usize) {
    let mut c = Cluster::start_ready(
        ClusterConfig::new(ServerKind::Minietcd, 3)
            .arg("--snapshot-count=50")
            .arg("--experimental-snapshot-catchup-entries=5"),
    )
    .await;
    let leader = c.wait_ready().await;
    let lagging = (leader + 1) % 3;
    c.kill(lagging);
    (c, leader, lagging)
}

/// Waits until the leader purged its log behind a snapshot, so that the dead follower can
/// only come back through one.
async fn wait_purged(c: &Cluster, leader: usize) {
    wait_until_async(
        "the leader purged its log",
        Duration::from_secs(30),
        || async {
            let log = c.log(leader);
            (log.contains("snapshot built") && log.contains("raft log purged")).then_some(())
        },
    )
    .await;
}

/// The `field: value` number of the first line of `log` containing `line`.
fn logged_number(log: &str, line: &str, field: &str) -> Option<u64> {
    let l = log.lines().find(|l| l.contains(line))?;
    let at = l.find(&format!(" {field}: "))? + field.len() + 3;
    l[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_many_chunks_streams_and_installs_with_bounded_follower_memory() {
    const VALUE_BYTES: usize = 256 << 10;
    const VALUES: usize = 160;
    let (mut c, leader, lagging) = cluster_with_a_dead_follower().await;
    let cl = client_on(&c, leader).await;
    // 40 MiB of values: a snapshot of about 40 chunks.
    put_concurrently(&cl, "big", VALUES, 4, &[b'x'; VALUE_BYTES]).await;
    wait_purged(&c, leader).await;

    // Writes go on while the follower catches up.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (mut cl, stop) = (cl.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                cl.put("live", n.to_string(), None).await.unwrap();
                n += 1;
            }
            n
        })
    };
    c.restart(lagging);
    let pid = c.pid(lagging).unwrap();
    wait_until_async(
        "the follower installed a snapshot",
        Duration::from_secs(40),
        || async { c.log(lagging).contains("snapshot installed").then_some(()) },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.await.unwrap() - 1;
    assert!(last > 0, "no write went through while the snapshot moved");
    crate::cluster_basic::wait_local_value(
        &c,
        lagging,
        "live",
        last.to_string().as_bytes(),
        Duration::from_secs(20),
    )
    .await;

    let log = c.log(lagging);
    // The leader builds no snapshot while one is on its way, so the entries after it are
    // still in its log when the install is done: one snapshot, however long it took.
    assert_eq!(
        log.matches("snapshot received").count(),
        1,
        "the follower was sent more than one snapshot; logs in {}",
        c.dir().display()
    );
    let bytes = logged_number(&log, "snapshot received", "bytes").unwrap();
    let chunks = logged_number(&log, "snapshot received", "chunks").unwrap();
    // (The leader may have snapshotted before the last values were in.)
    assert!(
        chunks > 16 && bytes > (VALUES * VALUE_BYTES / 2) as u64,
        "{bytes} bytes in {chunks} chunks"
    );
    // The follower's peak memory against that of the other follower, which holds the same
    // store but got it from the log: the install may cost a fraction of the snapshot on
    // top (a chunk, a batch of rows, the file's page cache is not counted), where holding
    // the stream and the decoded rows at once cost twice the snapshot.
    let peer = 3 - leader - lagging;
    let peak = proc_status_kib(pid, "VmHWM") * 1024;
    let peer_peak = proc_status_kib(c.pid(peer).unwrap(), "VmHWM") * 1024;
    eprintln!(
        "follower peak RSS {peak} bytes, its peer's {peer_peak}, for a snapshot of {bytes} \
         bytes; snapshots the leader skipped while sending: {}",
        c.log(leader)
            .matches("skip the snapshot since one is being sent")
            .count()
    );
    assert!(
        peak < peer_peak + bytes / 2,
        "follower peak RSS {peak} bytes (its peer's {peer_peak}) for a snapshot of {bytes} \
         bytes; logs in {}",
        c.dir().display()
    );
    let mut on_follower = client_on(&c, lagging).await;
    let got = on_follower
        .get(
            "big/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_serializable()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(got.kvs().len(), VALUES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_while_installing_a_snapshot_recovers_a_correct_store() {
    use etcd_client::{Txn, TxnOp};
    const TXNS: usize = 120;
    const PUTS_PER_TXN: usize = 100;
    let (mut c, leader, lagging) = cluster_with_a_dead_follower().await;
    let mut cl = client_on(&c, leader).await;
    // Many small rows, so that the install takes a while: 6 000 keys (and a history, as
    // each is written twice).
    for round in 0..2 {
        for t in 0..TXNS / 2 {
            let ops: Vec<TxnOp> = (0..PUTS_PER_TXN)
                .map(|p| {
                    TxnOp::put(
                        format!("row/{t:04}/{p:03}"),
                        format!("{round}-{:0200}", p),
                        None,
                    )
                })
                .collect();
            cl.txn(Txn::new().and_then(ops)).await.unwrap();
        }
    }
    let rev = cl
        .put("last", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    wait_purged(&c, leader).await;

    c.restart(lagging);
    // Killed as soon as the snapshot is in: the install is under way.
    wait_until_async(
        "the follower received the snapshot",
        Duration::from_secs(40),
        || async { c.log(lagging).contains("snapshot received").then_some(()) },
    )
    .await;
    c.kill(lagging);
    let interrupted = !c.log(lagging).contains("snapshot installed");
    let log_len = c.log(lagging).len();
    c.restart(lagging);
    crate::cluster_basic::wait_local_value(&c, lagging, "last", b"1", Duration::from_secs(40))
        .await;
    if interrupted {
        // The restart found its store (the old one: the copy being written was never
        // switched in) behind the kept snapshot and installed the snapshot again (or, had the
        // kill come before the snapshot was kept, got it from the leader again).
        let after = &c.log(lagging)[log_len..];
        assert!(
            after.contains("snapshot installed"),
            "no install after the restart; logs in {}",
            c.dir().display()
        );
    }
    eprintln!("install interrupted by the kill: {interrupted}");
    // Every key and its history, as on the leader.
    let mut on_follower = client_on(&c, lagging).await;
    for at in [rev, rev - (TXNS as i64) / 2] {
        let n = same_prefix_at(&mut on_follower, &mut cl, "row/", at).await;
        assert_eq!(n, TXNS / 2 * PUTS_PER_TXN);
    }
}
