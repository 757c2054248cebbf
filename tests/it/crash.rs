//! kill -9 in the middle of a stream of puts, restart from the data dir: every acknowledged
//! put is there, and revisions continue from where they were.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;

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
