//! kill -9 in the middle of a stream of puts, restart from the data dir: every acknowledged
//! put is there, and revisions continue from where they were.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;

use crate::cluster_basic::client_on;
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::kv::connect;
use crate::support::wait_until_async;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_put() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut cl = connect(&c).await;
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("crash/{w}/{i:06}");
                match cl.put(key.clone(), format!("v{i}"), None).await {
                    Ok(r) => acked
                        .lock()
                        .unwrap()
                        .push((key, r.header().unwrap().revision())),
                    Err(_) => return,
                }
            }
        }));
    }
    wait_until_async("300 acknowledged puts", Duration::from_secs(60), || {
        let n = acked.lock().unwrap().len();
        async move { (n >= 300).then_some(()) }
    })
    .await;
    c.kill(0);
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let acked = acked.lock().unwrap().clone();

    c.restart(0);
    c.wait_ready().await;
    let mut cl = connect(&c).await;
    let all = cl
        .get("crash/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let present: std::collections::HashMap<Vec<u8>, i64> = all
        .kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.mod_revision()))
        .collect();
    for (key, rev) in &acked {
        assert_eq!(
            present.get(key.as_bytes()),
            Some(rev),
            "acknowledged put {key} at revision {rev} lost after kill -9"
        );
    }
    // Writes are grouped into shared Raft entries: none may be applied twice or skipped when
    // the node died between two writes of one entry.
    assert!(
        all.kvs().iter().all(|kv| kv.version() == 1),
        "a put was applied twice"
    );
    let mut revs: Vec<i64> = present.values().copied().collect();
    revs.sort_unstable();
    let first = revs[0];
    assert_eq!(
        revs,
        (first..first + revs.len() as i64).collect::<Vec<_>>(),
        "revisions have a gap"
    );
    let max_acked = acked.iter().map(|(_, r)| *r).max().unwrap();
    let next = cl.put("after", "x", None).await.unwrap();
    assert!(next.header().unwrap().revision() > max_acked);
}

/// A storage failure stops Raft for good; the member then exits non-zero with one line
/// instead of serving frozen reads forever. The failure is real: the WAL directory is removed
/// under the running member, so the next segment cannot be put in place once the current
/// 16 MiB segment is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_storage_error_stops_the_member_with_an_error() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let mut cl = connect(&c).await;
    cl.put("before", "1", None).await.unwrap();
    std::fs::remove_dir_all(c.dir().join("m0").join("wal")).unwrap();
    let value = vec![b'x'; 1 << 20];
    for i in 0..40 {
        if cl
            .put(format!("big/{i}"), value.clone(), None)
            .await
            .is_err()
        {
            break;
        }
        if c.exited(0).is_some() {
            break;
        }
    }
    let status = wait_until_async("the member to exit", Duration::from_secs(30), || {
        let s = c.exited(0);
        async move { s }
    })
    .await;
    assert!(!status.success(), "exit status {status:?}");
    let log = c.log(0);
    assert!(
        log.lines()
            .any(|l| l.contains("minietcd: raft: stopped after a fatal error")),
        "no one-line error in the log:\n{log}"
    );
}

/// A one-member cluster whose first start died after the data dir was complete but before
/// Raft persisted its initial membership (emulated: `member.json` and an empty database with
/// its format marker, no log) forms its cluster on the next start instead of never electing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_killed_before_raft_init_elects_on_restart() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    c.stop(0);
    let dir = c.dir().join("m0");
    std::fs::remove_dir_all(dir.join("db")).unwrap();
    std::fs::remove_dir_all(dir.join("wal")).unwrap();
    std::fs::create_dir_all(dir.join("wal")).unwrap();
    {
        // What DataDir::open leaves before Raft starts: the format marker only.
        let db = sled::open(dir.join("db")).unwrap();
        db.insert(b"minietcd/format", &b"minietcd/3"[..]).unwrap();
        db.flush().unwrap();
    }
    c.restart(0);
    let leader = tokio::time::timeout(Duration::from_secs(30), c.wait_ready())
        .await
        .unwrap_or_else(|_| panic!("no leader after the restart; logs in {}", c.dir().display()));
    assert_eq!(leader, 0);
    let mut cl = connect(&c).await;
    cl.put("after", "1", None).await.unwrap();
}

/// kill -9 of a follower while it removes compacted history in the background (many small
/// steps, so the kill lands in the middle): the restart finishes the removal, and the
/// follower then answers every read at and above the compaction as the leader does, refuses
/// reads below it, and hashes its store as the other members do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_during_a_background_compaction_recovers_a_correct_store() {
    use etcd_client::{Txn, TxnOp};
    const KEYS: usize = 6000;
    const PER_TXN: usize = 100;
    let mut c = Cluster::start_ready(
        ClusterConfig::new(ServerKind::Minietcd, 3).arg("--experimental-compaction-batch-limit=10"),
    )
    .await;
    let leader = c.wait_ready().await;
    let victim = (leader + 1) % 3;
    let mut cl = client_on(&c, leader).await;
    let key = |n: usize| format!("hist/{n:05}");
    // A history to drop: every key put twice, a third of them deleted, half put again after
    // the compaction revision.
    let op = |round: usize, n: usize| match round {
        0 => Some(TxnOp::put(key(n), format!("a{n}"), None)),
        1 => Some(TxnOp::put(key(n), format!("b{n}"), None)),
        2 => n.is_multiple_of(3).then(|| TxnOp::delete(key(n), None)),
        _ => n
            .is_multiple_of(2)
            .then(|| TxnOp::put(key(n), format!("c{n}"), None)),
    };
    let mut compact_at = 0;
    for round in 0..4 {
        let ops: Vec<TxnOp> = (0..KEYS).filter_map(|n| op(round, n)).collect();
        for chunk in ops.chunks(PER_TXN) {
            let r = cl.txn(Txn::new().and_then(chunk.to_vec())).await.unwrap();
            if round == 2 {
                compact_at = r.header().unwrap().revision();
            }
        }
    }
    let log_len = c.log(victim).len();
    cl.compact(compact_at, None).await.unwrap();
    wait_until_async(
        "the follower removes compacted history",
        Duration::from_secs(30),
        || async {
            c.log(victim)[log_len..]
                .contains("removing compacted history")
                .then_some(())
        },
    )
    .await;
    c.kill(victim);
    assert!(
        !c.log(victim)[log_len..].contains("compacted history removed"),
        "the removal ended before the kill; the test needs a longer one"
    );
    let rev = cl
        .put("after", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let log_len = c.log(victim).len();
    c.restart(victim);
    crate::cluster_basic::wait_local_value(&c, victim, "after", b"1", Duration::from_secs(40))
        .await;
    // The compaction's record is in the store once sled has written it back (the log is
    // the source of truth, as etcd's WAL is for its backend): the restart finishes the
    // interrupted deletion from that record, or, killed before it was written, applies the
    // compaction again from the log. Either way the compaction runs to its end, which the
    // reads and hashes below check.
    let restarted = &c.log(victim)[log_len..];
    assert!(
        restarted.contains("finishing an interrupted compaction")
            || restarted.contains("removing compacted history"),
        "the restart did not finish the compaction; logs in {}",
        c.dir().display()
    );

    let mut on_victim = client_on(&c, victim).await;
    let below = on_victim
        .get(
            "hist/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_revision(compact_at - 1)
                    .with_serializable(),
            ),
        )
        .await
        .expect_err("a read below the compaction");
    assert!(
        below
            .to_string()
            .contains("required revision has been compacted"),
        "{below}"
    );
    for at in [compact_at, rev] {
        let deleted = KEYS.div_ceil(3);
        let live = if at == compact_at {
            KEYS - deleted
        } else {
            KEYS - deleted + KEYS.div_ceil(6)
        };
        let n = crate::snapshot_scale::same_prefix_at(&mut on_victim, &mut cl, "hist/", at).await;
        assert_eq!(n, live, "at revision {at}");
    }
    let mut hashes = Vec::new();
    for i in 0..3 {
        crate::cluster_basic::wait_local_value(&c, i, "after", b"1", Duration::from_secs(20)).await;
        let mut m = client_on(&c, i).await.maintenance_client();
        let h = m.hash_kv(rev).await.unwrap();
        hashes.push((h.hash(), h.compact_version()));
    }
    assert_eq!(hashes[0].1, compact_at);
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "members hash their stores differently after the restart: {hashes:?}"
    );
}

/// All three members killed under writes and restarted: a member's serializable reads
/// never answer from a revision older than one it served before the kill (its store on
/// disk lags the writes it applied; the restart replays them before serving such reads, as
/// etcd applies its publish entry before it serves). Found by a fault soak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_do_not_go_back_after_every_member_is_killed() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = c.wait_ready().await;
    let follower = (leader + 1) % 3;
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut cl = client_on(&c, leader).await;
        writers.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..60 {
                let r = cl.put(format!("w/{w}/{i}"), "v", None).await.unwrap();
                last = r.header().unwrap().revision();
            }
            last
        }));
    }
    let mut last = 0;
    for w in writers {
        last = last.max(w.await.unwrap());
    }
    // The writes stopped: the follower learns that the last ones are committed from a
    // heartbeat, applies them and serves them, while neither its WAL's commit record nor
    // its store has reached the disk yet. Killed right then.
    let serializable = || Some(GetOptions::new().with_serializable());
    let on_follower = client_on(&c, follower).await;
    let served = wait_until_async(
        "the follower serves the last write",
        Duration::from_secs(10),
        || {
            let mut cl = on_follower.clone();
            async move {
                let r = cl.get("w/0/0", serializable()).await.ok()?;
                let rev = r.header()?.revision();
                (rev >= last).then_some(rev)
            }
        },
    )
    .await;
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.restart(i);
    }
    let after = wait_until_async(
        "a serializable read on the restarted follower",
        Duration::from_secs(40),
        || async {
            let mut cl = client_on(&c, follower).await;
            let r = cl.get("w/0/0", serializable()).await.ok()?;
            Some(r.header()?.revision())
        },
    )
    .await;
    assert!(
        after >= served,
        "the follower served revision {served} before the kill and {after} after it; logs in {}",
        c.dir().display()
    );
}
