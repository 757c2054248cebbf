//! `--experimental-initial-corrupt-check`: a member whose data differs from its peers' at the
//! same revision refuses to start, with etcd's "found data inconsistency with peers".
//! `--experimental-corrupt-check-time`: the leader finds such a member while the cluster runs,
//! raises the CORRUPT alarm, and writes then fail with etcd's "etcdserver: corrupt cluster".

use std::process::Command;
use std::time::Duration;

use crate::cluster_basic::client_on;
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::{output_within, require_program, wait_until, wait_until_async};

const VALUE: &[u8] = b"checked-value-1";
const ALTERED: &[u8] = b"checked-value-2";

/// Rewrites every row of the member's key database holding `VALUE` to hold `ALTERED`: the
/// same shape, other bytes, as a disk that flipped a bit would.
fn alter_rows(mvcc_dir: &std::path::Path) -> usize {
    let db = sled::Config::new().path(mvcc_dir).open().unwrap();
    let mut changed = 0;
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let rows: Vec<_> = tree.iter().map(Result::unwrap).collect();
        for (k, v) in rows {
            if let Some(at) = v.windows(VALUE.len()).position(|w| w == VALUE) {
                let mut new = v.to_vec();
                new[at..at + ALTERED.len()].copy_from_slice(ALTERED);
                tree.insert(k, new).unwrap();
                changed += 1;
            }
        }
    }
    db.flush().unwrap();
    drop(db);
    crate::support::wait_sled_unlocked(mvcc_dir);
    changed
}

/// Waits until every member of `c` serves `checked` from its own store: their hashes then agree
/// at the same revision.
async fn wait_applied_everywhere(c: &Cluster) {
    for i in 0..c.members.len() {
        wait_until_async(
            "the write on every member",
            Duration::from_secs(10),
            || async move {
                let mut cl = client_on(c, i).await;
                let opts = etcd_client::GetOptions::new().with_serializable();
                let r = cl.get("checked", Some(opts)).await.ok()?;
                (!r.kvs().is_empty()).then_some(())
            },
        )
        .await;
    }
}

/// The root user's credentials when a test turns auth on.
const ROOT: &str = "root:corrupt-check";

/// etcdctl 3.4 on `endpoint`: (success, stdout, stderr).
fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    etcdctl_as(None, endpoint, args)
}

/// [`etcdctl`] as `user` (`name:password`), if given.
fn etcdctl_as(user: Option<&str>, endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(require_program("etcdctl"));
    if let Some(user) = user {
        cmd.arg(format!("--user={user}"));
    }
    let out = output_within(
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg("--command-timeout=5s")
            .args(args),
        "",
        Duration::from_secs(15),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_corrupt_check_raises_the_corrupt_alarm_and_writes_fail() {
    periodic_check(false).await;
}

/// With auth on, members still compare hashes: they ask each other over the peer port, which
/// needs no client credentials (as etcd's peers do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_corrupt_check_works_with_auth_on() {
    periodic_check(true).await;
}

async fn periodic_check(auth: bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        let config = ClusterConfig::new(ServerKind::Minietcd, 3)
            .arg("--experimental-corrupt-check-time=300ms");
        let mut c = Cluster::start_ready(config).await;
        let leader = c.wait_ready().await;
        let mut cl = client_on(&c, leader).await;
        cl.put("checked", VALUE, None).await.unwrap();
        wait_applied_everywhere(&c).await;
        let victim = (leader + 1) % 3;
        let victim_id = c.status(victim).await.expect("victim status").0;
        let user = auth.then_some(ROOT);
        if auth {
            let ep = c.endpoint(leader);
            let pw = ROOT.split_once(':').map_or("", |(_, p)| p);
            let (ok, _, err) = etcdctl(&ep, &["user", "add", "root", "--new-user-password", pw]);
            assert!(ok, "{err}");
            let (ok, _, err) = etcdctl(&ep, &["auth", "enable"]);
            assert!(ok, "{err}");
            let (ok, _, err) = etcdctl(&ep, &["put", "anonymous", "x"]);
            assert!(!ok, "auth is on: an anonymous put is refused ({err})");
        }
        let etcdctl = |ep: &str, args: &[&str]| etcdctl_as(user, ep, args);
        // A healthy cluster raises nothing for a few passes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (ok, alarms, err) = etcdctl(&c.endpoint(leader), &["alarm", "list"]);
        assert!(ok, "{err}");
        assert_eq!(alarms, "", "alarms of a healthy cluster");

        c.stop(victim);
        let mvcc = c.members[victim].data_dir.join("mvcc");
        assert_eq!(alter_rows(&mvcc), 1);
        // Without the initial check: the member starts and serves its altered data.
        c.restart(victim);
        let want = format!("memberID:{victim_id} alarm:CORRUPT \n");
        let alarms = wait_until("the CORRUPT alarm", Duration::from_secs(30), || {
            let (ok, out, _) = etcdctl(&c.endpoint(leader), &["alarm", "list"]);
            (ok && !out.is_empty()).then_some(out)
        });
        assert_eq!(alarms, want);
        assert!(c.log(leader).contains("CORRUPT alarm raised"));
        // Every member refuses writes with etcd's error; reads go on.
        for i in 0..3 {
            let (ok, _, err) = etcdctl(&c.endpoint(i), &["put", "after", "x"]);
            assert!(!ok, "member {i} accepted a write");
            assert!(
                err.contains("etcdserver: corrupt cluster"),
                "member {i}: {err}"
            );
            let (ok, out, err) = etcdctl(&c.endpoint(i), &["get", "checked", "--print-value-only"]);
            assert!(ok, "member {i}: {err}");
            assert!(!out.is_empty(), "member {i} read nothing");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_corrupt_check_refuses_a_member_whose_data_differs_from_its_peers() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let config =
            ClusterConfig::new(ServerKind::Minietcd, 3).arg("--experimental-initial-corrupt-check");
        let mut c = Cluster::start_ready(config).await;
        let leader = c.wait_ready().await;
        let mut cl = client_on(&c, leader).await;
        cl.put("checked", VALUE, None).await.unwrap();
        let victim = (leader + 1) % 3;
        // Every member has applied the write (their hashes agree at the same revision).
        wait_applied_everywhere(&c).await;
        // A member with intact data passes the check and serves again.
        let intact = (leader + 2) % 3;
        c.stop(intact);
        c.restart(intact);
        c.wait_ready().await;
        wait_until(
            "the intact member to pass the check",
            Duration::from_secs(30),
            || {
                c.log(intact)
                    .contains("initial corruption checking passed")
                    .then_some(())
            },
        );

        c.stop(victim);
        let mvcc = c.members[victim].data_dir.join("mvcc");
        assert_eq!(alter_rows(&mvcc), 1);
        c.restart(victim);
        let status = wait_until(
            "the altered member to exit",
            Duration::from_secs(60),
            || c.exited(victim),
        );
        assert!(!status.success());
        let log = c.log(victim);
        let last = log
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            last.contains("found data inconsistency with peers"),
            "last line: {last}"
        );
    })
    .await
    .expect("test timed out");
}
