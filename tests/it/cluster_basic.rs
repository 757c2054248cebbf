//! Three real minietcd processes: election, writes through every member, linearizable reads
//! on followers, a follower's kill and catch-up, quorum loss and recovery.

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use tonic::Code;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};

/// A client of the `etcd-client` crate talking to member `i` only.
pub async fn client_on(c: &Cluster, i: usize) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(15));
    Client::connect([c.endpoint(i)], Some(opts))
        .await
        .expect("connect to one member")
}

/// The value of `key` read serializably from member `i` (its own store, no leader asked).
pub async fn local_value(c: &Cluster, i: usize, key: &str) -> Option<Vec<u8>> {
    let mut cl = client_on(c, i).await;
    let r = cl
        .get(key, Some(GetOptions::new().with_serializable()))
        .await
        .ok()?;
    r.kvs().first().map(|kv| kv.value().to_vec())
}

/// Polls until member `i` serves `want` for `key` from its own store.
pub async fn wait_local_value(c: &Cluster, i: usize, key: &str, want: &[u8], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if local_value(c, i, key).await.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member {i} does not serve {key:?} = {:?} after {within:?}; logs in {}",
            String::from_utf8_lossy(want),
            c.dir().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_elects_serves_writes_everywhere_and_follower_reads_are_linearizable() {
    let c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = c.wait_ready().await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(client_on(&c, i).await);
    }

    // Every member lists all three, with names and client URLs (published attributes).
    let list = clients[1].member_list().await.unwrap();
    let mut names: Vec<String> = list
        .members()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["m0", "m1", "m2"]);
    for m in list.members() {
        assert_eq!(m.client_urls().len(), 1, "{m:?}");
        assert!(!m.is_learner());
    }

    // A write through each member is acknowledged with a fresh revision.
    let mut last_rev = 0;
    for (i, cl) in clients.iter_mut().enumerate() {
        let r = cl
            .put(format!("via/{i}"), format!("v{i}"), None)
            .await
            .unwrap();
        let rev = r.header().unwrap().revision();
        assert!(rev > last_rev, "revision {rev} after {last_rev}");
        last_rev = rev;
    }

    // A write acknowledged by the leader is seen at once by a linearizable read on either
    // follower, every time.
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for round in 0..30 {
        let value = format!("r{round}");
        clients[leader]
            .put("lin", value.clone(), None)
            .await
            .unwrap();
        let f = followers[round % 2];
        let got = clients[f].get("lin", None).await.unwrap();
        assert_eq!(
            got.kvs()[0].value(),
            value.as_bytes(),
            "follower {f} missed the write of round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_serving_without_a_follower_which_catches_up_after_restart() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = c.wait_ready().await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let mut cl = client_on(&c, leader).await;
    cl.put("k", "before", None).await.unwrap();
    wait_local_value(&c, follower, "k", b"before", Duration::from_secs(5)).await;

    c.kill(follower);
    for n in 0..50 {
        cl.put("k", format!("while-down-{n}"), None).await.unwrap();
    }
    let other = (0..3).find(|i| *i != leader && *i != follower).unwrap();
    let mut via_other = client_on(&c, other).await;
    via_other.put("k", "latest", None).await.unwrap();

    c.restart(follower);
    wait_local_value(&c, follower, "k", b"latest", Duration::from_secs(15)).await;
    // Its history came along too.
    let mut on_follower = client_on(&c, follower).await;
    let r = on_follower
        .get("k", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].version(), 52);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_without_quorum_fails_writes_in_bounded_time_and_recovers() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = c.wait_ready().await;
    let survivor = (leader + 1) % 3;
    let mut cl = client_on(&c, survivor).await;
    cl.put("q", "1", None).await.unwrap();

    for i in 0..3 {
        if i != survivor {
            c.kill(i);
        }
    }
    let started = Instant::now();
    let e = cl.put("q", "2", None).await.unwrap_err();
    let took = started.elapsed();
    match &e {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            assert!(
                [
                    "etcdserver: no leader",
                    "etcdserver: request timed out",
                    "etcdserver: leader changed"
                ]
                .contains(&s.message()),
                "{s:?}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // etcd's budget: 5 s plus two election timeouts (here 500 ms), with slack.
    assert!(took < Duration::from_secs(9), "failing took {took:?}");

    // Quorum back: writes succeed again.
    let back = (0..3).find(|i| *i != survivor).unwrap();
    c.restart(back);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match cl.put("q", "3", None).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "writes did not resume: {e:?}"),
        }
    }
    let r = cl.get("q", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"3");
}

/// Read-your-writes on the member a client talks to: a put through a follower is answered
/// only once that follower has applied it, so a serializable get right after sees it (etcd
/// answers after the local apply).
async fn follower_put_then_serializable_get_sees_it(kind: ServerKind) {
    let c = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
    let leader = c.wait_ready().await;
    let mut stale = Vec::new();
    for i in (0..3).filter(|&i| i != leader) {
        let mut cl = client_on(&c, i).await;
        for n in 0..100 {
            let key = format!("ryw-{i}-{n}");
            let put = cl.put(key.as_str(), n.to_string(), None).await.unwrap();
            let rev = put.header().unwrap().revision();
            let got = cl
                .get(key.as_str(), Some(GetOptions::new().with_serializable()))
                .await
                .unwrap();
            if got.kvs().first().map(|kv| kv.mod_revision()) != Some(rev) {
                stale.push((i, n));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{kind:?}: {} of 200 follower put-then-get pairs were stale: {stale:?}",
        stale.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_follower_put_then_serializable_get_sees_it() {
    follower_put_then_serializable_get_sees_it(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_follower_put_then_serializable_get_sees_it() {
    follower_put_then_serializable_get_sees_it(ServerKind::Etcd).await;
}
