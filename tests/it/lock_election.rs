//! Locks and elections against real etcd 3.4 and minietcd, side by side: etcdctl's `lock` and
//! `elect` (which build on KV, leases and watch), and the Lock and Election gRPC services
//! through the `etcd-client` crate's lock and election clients. Each scenario runs on a
//! one-member etcd and a one-member minietcd; what they print or answer is compared after
//! masking lease ids (which differ between runs).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{Client, Error, LeaderKey, LockOptions, ProclaimOptions, ResignOptions};

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::{require_program, ChildGuard};

/// How long a whole scenario may take on one server.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a lock or leadership that should be granted may take to arrive.
const GRANT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a waiter is watched to show that it does not get a held lock.
const STILL_WAITING: Duration = Duration::from_millis(1500);
/// The session TTL of the etcdctl lock holder that is killed: its lock goes when it expires.
const KILLED_HOLDER_TTL_SECS: u64 = 2;

/// A long-running etcdctl (`lock`, `elect`) whose output lines arrive on a channel.
struct LiveCtl {
    guard: ChildGuard,
    lines: mpsc::Receiver<String>,
}

impl LiveCtl {
    fn spawn(endpoint: &str, args: &[&str]) -> LiveCtl {
        let mut cmd = Command::new(require_program("etcdctl"));
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut guard = ChildGuard::spawn("etcdctl", &mut cmd);
        let stdout = guard
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("etcdctl stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LiveCtl { guard, lines }
    }

    /// The next line, waiting up to `timeout`.
    fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next `n` lines; panics if they do not come within [`GRANT_TIMEOUT`].
    fn lines(&self, n: usize, what: &str) -> Vec<String> {
        (0..n)
            .map(|_| {
                self.line(GRANT_TIMEOUT)
                    .unwrap_or_else(|| panic!("etcdctl printed nothing: {what}"))
            })
            .collect()
    }

    /// Sends SIGINT (etcdctl then releases its lock or resigns) and waits for the exit.
    fn interrupt(&mut self) {
        if let Some(pid) = self.guard.pid() {
            // SAFETY: signalling the etcdctl child we started, by its pid.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
        }
        crate::support::wait_until("etcdctl to exit", GRANT_TIMEOUT, || self.guard.try_wait());
    }
}

/// `name/<hex>` with the hex masked: lease ids differ between servers and runs.
fn mask(line: &str) -> String {
    match line.rsplit_once('/') {
        Some((name, id)) if !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()) => {
            format!("{name}/<lease>")
        }
        _ => line.to_string(),
    }
}

/// The lease id in a `name/<hex>` line.
fn lease_of(line: &str) -> String {
    line.rsplit_once('/')
        .map(|(_, id)| id.to_string())
        .unwrap_or_default()
}

/// Runs etcdctl to completion; its stdout.
fn ctl(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new(require_program("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What one server showed in the etcdctl scenario, masked.
fn etcdctl_scenario(c: &Cluster) -> Vec<String> {
    let ep = c.endpoint(0);
    let mut seen = Vec::new();
    // A lock around a command: the command's output.
    seen.push(ctl(&ep, &["lock", "job", "echo", "locked"]));

    // Mutual exclusion; the holder dies; its lease expires and the waiter gets the lock.
    let ttl = format!("--ttl={KILLED_HOLDER_TTL_SECS}");
    let mut a = LiveCtl::spawn(&ep, &["lock", &ttl, "L"]);
    seen.extend(a.lines(1, "first holder").iter().map(|l| mask(l)));
    let b = LiveCtl::spawn(&ep, &["lock", "L"]);
    assert_eq!(b.line(STILL_WAITING), None, "two holders of one lock");
    a.guard.kill();
    let b_key = b.lines(1, "waiter after the holder died").remove(0);
    seen.push(mask(&b_key));

    // The holder's lease is revoked: the next waiter gets the lock.
    let c2 = LiveCtl::spawn(&ep, &["lock", "L"]);
    assert_eq!(c2.line(STILL_WAITING), None, "two holders of one lock");
    ctl(&ep, &["lease", "revoke", &lease_of(&b_key)]);
    seen.extend(
        c2.lines(1, "waiter after the revoke")
            .iter()
            .map(|l| mask(l)),
    );

    // Elections: an observer sees every leader in order.
    let observer = LiveCtl::spawn(&ep, &["elect", "-l", "E"]);
    let mut p1 = LiveCtl::spawn(&ep, &["elect", "E", "p1"]);
    seen.extend(p1.lines(2, "first leader").iter().map(|l| mask(l)));
    let p2 = LiveCtl::spawn(&ep, &["elect", "E", "p2"]);
    assert_eq!(p2.line(STILL_WAITING), None, "two leaders of one election");
    p1.interrupt();
    seen.extend(p2.lines(2, "second leader").iter().map(|l| mask(l)));
    seen.extend(
        observer
            .lines(4, "observed leaders")
            .iter()
            .map(|l| mask(l)),
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_elect_behave_as_on_etcd() {
    let mut outputs = Vec::new();
    for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
        let c = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
        let seen = tokio::time::timeout(
            SCENARIO_TIMEOUT,
            tokio::task::spawn_blocking(move || etcdctl_scenario(&c)),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: scenario timed out"))
        .expect("scenario");
        outputs.push(seen);
    }
    assert_eq!(
        outputs[0],
        vec![
            "locked\n",
            "L/<lease>",
            "L/<lease>",
            "L/<lease>",
            "E/<lease>",
            "p1",
            "E/<lease>",
            "p2",
            "E/<lease>",
            "p1",
            "E/<lease>",
            "p2",
        ],
        "etcd's own output changed"
    );
    assert_eq!(outputs[1], outputs[0], "minietcd differs from etcd");
}

/// An error as (gRPC code, message).
fn status_of(e: Error) -> (tonic::Code, String) {
    match e {
        Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a gRPC status: {other}"),
    }
}

/// What one server answered through the Lock service.
async fn lock_scenario(client: &Client) -> Vec<String> {
    let mut seen = Vec::new();
    let mut lock = client.lock_client();
    let mut lease = client.lease_client();
    let l1 = lease.grant(60, None).await.expect("grant").id();
    let l2 = lease.grant(60, None).await.expect("grant").id();
    let l3 = lease.grant(60, None).await.expect("grant").id();

    let k1 = lock
        .lock("n", Some(LockOptions::new().with_lease(l1)))
        .await
        .expect("uncontended lock");
    assert_eq!(k1.key(), format!("n/{l1:x}").as_bytes());
    // The same lease locking again gets its own key back at once.
    let again = lock
        .lock("n", Some(LockOptions::new().with_lease(l1)))
        .await
        .expect("relock with the same lease");
    assert_eq!(again.key(), k1.key());

    tracing::info!("phase: abandoned waiter");
    // A second lease waits; a waiter that gives up leaves no key behind.
    let gave_up = tokio::time::timeout(
        STILL_WAITING,
        lock.lock("n", Some(LockOptions::new().with_lease(l2))),
    )
    .await;
    assert!(gave_up.is_err(), "a held lock was granted to another lease");
    let mut kv = client.kv_client();
    crate::support::wait_until_async("the abandoned waiter's key to go", GRANT_TIMEOUT, || {
        let mut kv = kv.clone();
        async move {
            let r = kv
                .get("n/", Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .ok()?;
            (r.count() == 1).then_some(())
        }
    })
    .await;

    tracing::info!("phase: unlock hands over");
    // Unlock hands the lock to the waiter.
    let mut waiter_client = client.lock_client();
    let waiter = tokio::spawn(async move {
        waiter_client
            .lock("n", Some(LockOptions::new().with_lease(l2)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "a held lock was granted to another lease"
    );
    lock.unlock(k1.key()).await.expect("unlock");
    let k2 = tokio::time::timeout(GRANT_TIMEOUT, waiter)
        .await
        .expect("waiter granted after unlock")
        .expect("task")
        .expect("lock");
    assert_eq!(k2.key(), format!("n/{l2:x}").as_bytes());

    tracing::info!("phase: revoke");
    // Revoking the holder's lease releases the lock.
    lease.revoke(l2).await.expect("revoke");
    let k3 = tokio::time::timeout(
        GRANT_TIMEOUT,
        lock.lock("n", Some(LockOptions::new().with_lease(l3))),
    )
    .await
    .expect("lock after the holder's lease was revoked")
    .expect("lock");
    assert_eq!(k3.key(), format!("n/{l3:x}").as_bytes());
    let got = kv.get(k3.key(), None).await.expect("get");
    seen.push(format!(
        "holder key lease matches: {}",
        got.kvs().first().map(|kv| kv.lease()) == Some(l3)
    ));

    tracing::info!("phase: missing lease");
    // A lease that does not exist.
    let e = lock
        .lock("n", Some(LockOptions::new().with_lease(0x1234)))
        .await
        .expect_err("lock on a missing lease");
    seen.push(format!("{:?}", status_of(e)));
    // Unlocking a key that is not held is no error.
    lock.unlock("n/nope").await.expect("unlock of a free key");
    seen
}

/// A leader key's fields that do not depend on the lease id.
fn leader_shape(k: &LeaderKey) -> String {
    format!(
        "name={} key_is_name_slash_lease={}",
        String::from_utf8_lossy(k.name()),
        k.key() == format!("{}/{:x}", String::from_utf8_lossy(k.name()), k.lease()).as_bytes()
    )
}

/// What one server answered through the Election service.
async fn election_scenario(client: &Client) -> Vec<String> {
    let mut seen = Vec::new();
    let mut el = client.election_client();
    let mut lease = client.lease_client();
    let l1 = lease.grant(60, None).await.expect("grant").id();
    let l2 = lease.grant(60, None).await.expect("grant").id();

    tracing::info!("phase: election");
    let e = el
        .leader("e")
        .await
        .expect_err("leader of an empty election");
    seen.push(format!("{:?}", status_of(e)));

    let c1 = el.campaign("e", "v1", l1).await.expect("campaign");
    // etcd sends an Observe stream's headers with its first leader: the call returns once
    // there is one.
    let mut observe = el.observe("e").await.expect("observe");
    let lead1 = c1.leader().expect("leader key").clone();
    seen.push(leader_shape(&lead1));
    assert_eq!(lead1.lease(), l1);
    let now = el.leader("e").await.expect("leader");
    seen.push(format!(
        "leader value={}",
        String::from_utf8_lossy(now.kv().map(|kv| kv.value()).unwrap_or_default())
    ));
    el.proclaim(
        "v1b",
        Some(ProclaimOptions::new().with_leader(lead1.clone())),
    )
    .await
    .expect("proclaim");

    tracing::info!("phase: second candidate");
    // A second candidate waits until the leader resigns.
    let mut el2 = client.election_client();
    let second = tokio::spawn(async move { el2.campaign("e", "v2", l2).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "two leaders of one election");
    el.resign(Some(ResignOptions::new().with_leader(lead1.clone())))
        .await
        .expect("resign");
    let c2 = tokio::time::timeout(GRANT_TIMEOUT, second)
        .await
        .expect("second candidate elected after the resign")
        .expect("task")
        .expect("campaign");
    seen.push(leader_shape(c2.leader().expect("leader key")));

    // The old leadership can no longer proclaim.
    let e = el
        .proclaim("stale", Some(ProclaimOptions::new().with_leader(lead1)))
        .await
        .expect_err("proclaim by a resigned leader");
    seen.push(format!("{:?}", status_of(e)));
    let e = el
        .resign(None)
        .await
        .expect_err("resign without a leader key");
    seen.push(format!("{:?}", status_of(e)));

    tracing::info!(?seen, "phase: observer");
    // The observer saw every proclamation, in order.
    let mut values = Vec::new();
    while values.len() < 3 {
        let msg = tokio::time::timeout(GRANT_TIMEOUT, observe.message())
            .await
            .expect("observed leader")
            .expect("observe stream")
            .expect("observe stream ended");
        let kv = msg.kv().expect("leader kv");
        values.push(String::from_utf8_lossy(kv.value()).into_owned());
    }
    seen.push(format!("observed {values:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_services_answer_as_etcd() {
    let mut outputs = Vec::new();
    for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
        let c = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
        let client = Client::connect([c.endpoint(0)], None)
            .await
            .expect("connect");
        let seen = tokio::time::timeout(SCENARIO_TIMEOUT, async {
            let mut seen = lock_scenario(&client).await;
            seen.extend(election_scenario(&client).await);
            seen
        })
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: scenario timed out"));
        outputs.push(seen);
    }
    assert_eq!(outputs[1], outputs[0], "minietcd differs from etcd");
}

/// On a three-member cluster: the lock held through one member, waited for through another;
/// the release through the first wakes the waiter on the second (its wait watches the
/// follower's own store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiter_on_another_member_is_woken() {
    for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
        let c = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
        let a = Client::connect([c.endpoint(0)], None)
            .await
            .expect("connect");
        let b = Client::connect([c.endpoint(1)], None)
            .await
            .expect("connect");
        tokio::time::timeout(SCENARIO_TIMEOUT, async {
            let l1 = a.lease_client().grant(60, None).await.expect("grant").id();
            let l2 = b.lease_client().grant(60, None).await.expect("grant").id();
            let held = a
                .lock_client()
                .lock("m", Some(LockOptions::new().with_lease(l1)))
                .await
                .expect("lock");
            let mut waiter_client = b.lock_client();
            let waiter = tokio::spawn(async move {
                waiter_client
                    .lock("m", Some(LockOptions::new().with_lease(l2)))
                    .await
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(!waiter.is_finished(), "{kind:?}: two holders of one lock");
            a.lock_client().unlock(held.key()).await.expect("unlock");
            let got = tokio::time::timeout(GRANT_TIMEOUT, waiter)
                .await
                .unwrap_or_else(|_| {
                    panic!("{kind:?}: the waiter on another member never got the lock")
                })
                .expect("task")
                .expect("lock");
            assert_eq!(got.key(), format!("m/{l2:x}").as_bytes());
        })
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: scenario timed out"));
    }
}

/// A member that stops ends its Observe streams with etcd's `etcdserver: server stopped`
/// rather than leaving them open until the shutdown's grace period cuts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_streams_end_when_the_member_stops() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let client = Client::connect([c.endpoint(0)], None)
        .await
        .expect("connect");
    let lease = client
        .lease_client()
        .grant(60, None)
        .await
        .expect("grant")
        .id();
    let mut el = client.election_client();
    el.campaign("s", "v", lease).await.expect("campaign");
    let mut observe = el.observe("s").await.expect("observe");
    let first = tokio::time::timeout(GRANT_TIMEOUT, observe.message())
        .await
        .expect("leader")
        .expect("observe")
        .expect("leader message");
    assert_eq!(first.kv().map(|kv| kv.value()), Some(&b"v"[..]));
    let stopping = tokio::task::spawn_blocking(move || {
        c.terminate(0, Duration::from_secs(10));
        c
    });
    let end = tokio::time::timeout(GRANT_TIMEOUT, observe.message())
        .await
        .expect("the observe stream stayed open after the member stopped");
    match end {
        Err(Error::GRpcStatus(s)) => assert_eq!(s.message(), "etcdserver: server stopped"),
        other => panic!("the observe stream ended with {other:?}"),
    }
    let _c = stopping.await.expect("terminate");
}
