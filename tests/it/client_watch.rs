//! The client's watch against real servers: member failures, many watchers, fragments,
//! compaction, cancellation. Each scenario takes the server kind so it can run against
//! minietcd as well.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use minietcd::pb::etcdserverpb::{
    watch_client::WatchClient as RawWatchClient, watch_request, WatchCreateRequest, WatchRequest,
};
use minietcd::pb::mvccpb::{event::EventType, Event};
use minietcd_client::{
    Client, ClientError, ClientOptions, CompactOptions, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions, Watcher,
};

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};

/// Longest a test waits for the events it expects.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// An event reduced to what a history comparison needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: i32,
    key: String,
    value: String,
    mod_revision: i64,
}

fn seen(e: &Event) -> Seen {
    let kv = e.kv.clone().unwrap_or_default();
    Seen {
        kind: e.r#type,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: String::from_utf8_lossy(&kv.value).into_owned(),
        mod_revision: kv.mod_revision,
    }
}

/// Receives until an event at or past `revision` has arrived; panics on errors and timeouts.
async fn collect_until_rev(w: &mut Watcher, revision: i64) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::new();
    let fut = async {
        while out.last().is_none_or(|e| e.mod_revision < revision) {
            match w.recv().await {
                Some(Ok(batch)) => out.extend(batch.events.iter().map(seen)),
                Some(Err(e)) => panic!("watch error after {} events: {e}", out.len()),
                None => panic!("watch ended after {} events", out.len()),
            }
        }
    };
    if tokio::time::timeout(EVENT_TIMEOUT, fut).await.is_err() {
        panic!(
            "timed out waiting for revision {revision}; got {} events up to {:?}",
            out.len(),
            out.last()
        );
    }
    out
}

/// Receives until `n` events have arrived.
async fn collect_n(w: &mut Watcher, n: usize) -> Vec<Seen> {
    let mut out = Vec::new();
    let fut = async {
        while out.len() < n {
            match w.recv().await {
                Some(Ok(batch)) => out.extend(batch.events.iter().map(seen)),
                Some(Err(e)) => panic!("watch error after {} events: {e}", out.len()),
                None => panic!("watch ended after {} events", out.len()),
            }
        }
    };
    if tokio::time::timeout(EVENT_TIMEOUT, fut).await.is_err() {
        panic!("timed out waiting for {n} events; got {}", out.len());
    }
    out
}

fn assert_strictly_increasing(events: &[Seen]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].mod_revision < pair[1].mod_revision,
            "out of order or duplicate: {pair:?}"
        );
    }
}

/// The store revision now.
async fn current_rev(client: &Client) -> i64 {
    client
        .kv()
        .get("x", GetOptions::new())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision
}

/// Puts until one is acknowledged, with a fresh value per attempt so that an attempt which
/// applied without an acknowledgement is told apart. Returns (value, revision).
async fn put_acked(client: &Client, key: &str, base: &str) -> (String, i64) {
    for attempt in 0..200 {
        let value = format!("{base}-a{attempt}");
        match client
            .kv()
            .put(
                key,
                value.clone(),
                PutOptions::new().timeout(Duration::from_secs(3)),
            )
            .await
        {
            Ok(resp) => return (value, resp.header.unwrap().revision),
            Err(e) => {
                tracing::info!(key, attempt, error = %e, "put failed, retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("put {key} never acknowledged");
}

pub async fn watch_through_leader_kill(kind: ServerKind) {
    const WRITES: usize = 300;
    const KILL_AFTER: usize = 100;
    let mut cluster = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
    let leader = cluster.wait_ready().await;
    // The watchers' stream goes to the leader first, so killing it breaks the stream.
    let mut order = vec![cluster.endpoint(leader)];
    order.extend((0..3).filter(|i| *i != leader).map(|i| cluster.endpoint(i)));
    let watch_client = Client::connect(order, ClientOptions::new()).await.unwrap();
    let base = current_rev(&watch_client).await;
    let mut prefix_watcher = watch_client
        .watch()
        .watch("/lk/", WatchOptions::new().prefix())
        .await
        .unwrap();
    let mut key_watcher = watch_client
        .watch()
        .watch("/lk/k3", WatchOptions::new())
        .await
        .unwrap();

    let writer = cluster.client().await;
    let done = Arc::new(AtomicUsize::new(0));
    let done_w = Arc::clone(&done);
    let write_task = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..WRITES {
            let key = format!("/lk/k{}", i % 10);
            let (value, rev) = put_acked(&writer, &key, &format!("v{i}")).await;
            acked.push((key, value, rev));
            done_w.fetch_add(1, Ordering::SeqCst);
        }
        acked
    });
    crate::support::wait_until_async("writes before the kill", EVENT_TIMEOUT, || {
        let done = Arc::clone(&done);
        async move { (done.load(Ordering::SeqCst) >= KILL_AFTER).then_some(()) }
    })
    .await;
    tracing::info!(leader, "killing the leader mid-stream");
    cluster.kill(leader);
    let acked = write_task.await.unwrap();
    let last_rev = acked.last().unwrap().2;

    let got = collect_until_rev(&mut prefix_watcher, last_rev).await;
    assert_ne!(
        watch_client.current_endpoint(),
        format!("http://{}", cluster.endpoint(leader)),
        "the watch stream should have moved off the killed leader"
    );

    // The server's own history of the prefix, read by a fresh watch on a survivor.
    let survivor = cluster.running()[0];
    let truth_client = cluster.client_for(survivor).await.unwrap();
    let mut truth_watcher = truth_client
        .watch()
        .watch(
            "/lk/",
            WatchOptions::new().prefix().start_revision(base + 1),
        )
        .await
        .unwrap();
    let truth = collect_until_rev(&mut truth_watcher, last_rev).await;

    assert_strictly_increasing(&got);
    assert_eq!(
        got.len(),
        truth.len(),
        "event count differs from the server's history"
    );
    assert_eq!(
        got, truth,
        "watcher events differ from the server's history"
    );
    for (key, value, rev) in &acked {
        assert!(
            truth
                .iter()
                .any(|e| &e.key == key && &e.value == value && e.mod_revision == *rev),
            "acknowledged write {key}={value}@{rev} missing from the history"
        );
    }
    let key_truth: Vec<Seen> = truth
        .iter()
        .filter(|e| e.key == "/lk/k3")
        .cloned()
        .collect();
    let key_last = key_truth.last().unwrap().mod_revision;
    let key_got = collect_until_rev(&mut key_watcher, key_last).await;
    assert_eq!(
        key_got, key_truth,
        "single-key watcher differs from the history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_through_leader_kill_misses_and_repeats_nothing() {
    watch_through_leader_kill(ServerKind::Etcd).await;
}

pub async fn watch_survives_restart(kind: ServerKind) {
    let mut cluster = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let client = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    let mut watcher = client
        .watch()
        .watch("/rs/", WatchOptions::new().prefix())
        .await
        .unwrap();
    // Created before the restart but sees its first event only after it: it must resume from
    // its creation revision, not from "now" on the restarted server.
    let mut quiet = client
        .watch()
        .watch("/quiet", WatchOptions::new())
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let key = format!("/rs/{i}");
        let rev = put_rev(&client, key.clone(), format!("a{i}")).await;
        expected.push((key, format!("a{i}"), rev));
    }
    let before = collect_n(&mut watcher, 20).await;
    cluster.kill(0);
    cluster.restart(0);
    cluster.wait_ready().await;
    // Written by another client as soon as the server is back, before the watcher's stream
    // has necessarily reconnected.
    let other = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    other
        .kv()
        .put("/quiet", "q", PutOptions::new())
        .await
        .unwrap();
    for i in 20..40 {
        let key = format!("/rs/{i}");
        let rev = put_rev(&other, key.clone(), format!("a{i}")).await;
        expected.push((key, format!("a{i}"), rev));
    }
    let after = collect_until_rev(&mut watcher, expected.last().unwrap().2).await;
    let got: Vec<(String, String, i64)> = before
        .iter()
        .chain(after.iter())
        .map(|e| (e.key.clone(), e.value.clone(), e.mod_revision))
        .collect();
    assert_eq!(got, expected);
    let q = collect_n(&mut quiet, 1).await;
    assert_eq!(q[0].value, "q");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_survives_restart_of_its_only_server() {
    watch_survives_restart(ServerKind::Etcd).await;
}

pub async fn thousand_watchers_on_one_stream(kind: ServerKind) {
    const WATCHERS: usize = 1000;
    const OPS_PER_TXN: usize = 100;
    let cluster = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let client = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    let keys: Vec<String> = (0..WATCHERS).map(|i| format!("/many/{i:04}")).collect();
    let started = std::time::Instant::now();
    let watch = client.watch();
    let created = futures::future::join_all(
        keys.iter()
            .map(|k| watch.watch(k.clone(), WatchOptions::new())),
    )
    .await;
    let mut watchers: Vec<Watcher> = created.into_iter().map(Result::unwrap).collect();
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "created {WATCHERS} watchers"
    );
    if kind == ServerKind::Etcd {
        assert_eq!(
            cluster.metric(0, "etcd_debugging_mvcc_watch_stream_total"),
            Some(1.0)
        );
        assert_eq!(
            cluster.metric(0, "etcd_debugging_mvcc_watcher_total"),
            Some(WATCHERS as f64)
        );
    }
    for round in 0..2 {
        for chunk in keys.chunks(OPS_PER_TXN) {
            let ops = chunk
                .iter()
                .map(|k| TxnOp::put(k.clone(), format!("{k}-r{round}"), PutOptions::new()));
            client.kv().txn(Txn::new().and_then(ops)).await.unwrap();
        }
    }
    for (key, w) in keys.iter().zip(watchers.iter_mut()) {
        let got = collect_n(w, 2).await;
        let values: Vec<&str> = got.iter().map(|e| e.value.as_str()).collect();
        assert_eq!(
            values,
            vec![format!("{key}-r0"), format!("{key}-r1")],
            "watcher of {key}"
        );
        assert!(got.iter().all(|e| &e.key == key));
    }
    drop(watchers);
    if kind == ServerKind::Etcd {
        // Dropping a watcher cancels it on the server.
        crate::support::wait_until("server-side watchers canceled", EVENT_TIMEOUT, || {
            (cluster.metric(0, "etcd_debugging_mvcc_watcher_total") == Some(0.0)).then_some(())
        });
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "1000 watchers took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_thousand_watchers_on_one_stream_each_get_exactly_their_events() {
    thousand_watchers_on_one_stream(ServerKind::Etcd).await;
}

pub async fn fragments_are_merged(kind: ServerKind) {
    // etcd fragments a watch response only above max-request-bytes plus its 512 KiB gRPC
    // overhead allowance, while each put must stay under max-request-bytes: so many small
    // puts, caught up in one batch by a watch from the past.
    const PUTS: usize = 700;
    const WRITERS: usize = 8;
    let cluster =
        Cluster::start_ready(ClusterConfig::new(kind, 1).arg("--max-request-bytes=1024")).await;
    let client = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    let first = current_rev(&client).await + 1;
    let writers = (0..WRITERS).map(|w| {
        let client = client.clone();
        async move {
            for i in (w..PUTS).step_by(WRITERS) {
                client
                    .kv()
                    .put(format!("/frag/{i:04}"), "x".repeat(900), PutOptions::new())
                    .await
                    .unwrap();
            }
        }
    });
    futures::future::join_all(writers).await;
    // The server really splits this catch-up batch: seen on a raw stream.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.endpoint(0)))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"/frag/".to_vec(),
                range_end: b"/frag0".to_vec(),
                start_revision: first,
                fragment: true,
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut raw = RawWatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let (mut fragments, mut raw_events) = (0, 0);
    while raw_events < PUTS {
        let resp = tokio::time::timeout(EVENT_TIMEOUT, raw.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        fragments += usize::from(resp.fragment);
        raw_events += resp.events.len();
    }
    assert!(
        fragments > 0,
        "server did not fragment; the test would prove nothing"
    );

    let mut w = client
        .watch()
        .watch("/frag/", WatchOptions::new().prefix().start_revision(first))
        .await
        .unwrap();
    let batch = tokio::time::timeout(EVENT_TIMEOUT, w.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        batch.events.len(),
        PUTS,
        "fragments were not merged into one batch"
    );
    let revs: Vec<i64> = batch
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, (first..first + PUTS as i64).collect::<Vec<_>>());
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_fragmented_responses_are_merged_before_delivery() {
    fragments_are_merged(ServerKind::Etcd).await;
}

pub async fn compaction_is_reported(kind: ServerKind) {
    let cluster = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let client = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(put_rev(&client, "/c/k", format!("{i}")).await);
    }
    let compact_at = revs[7];
    client
        .kv()
        .compact(compact_at, CompactOptions::new().physical())
        .await
        .unwrap();
    let err = match client
        .watch()
        .watch("/c/k", WatchOptions::new().start_revision(revs[1]))
        .await
    {
        Err(e) => e,
        Ok(mut w) => {
            let next = tokio::time::timeout(EVENT_TIMEOUT, w.recv()).await.unwrap();
            let err = next
                .expect("an error before the end")
                .expect_err("compacted watch delivered events");
            assert!(
                w.end_header().is_some_and(|h| h.member_id != 0),
                "the ending response's header is kept"
            );
            assert!(w.recv().await.is_none(), "a compacted watch ends");
            err
        }
    };
    assert_eq!(
        err,
        ClientError::Compacted {
            compact_revision: compact_at
        }
    );
    // Reads below the compaction keep etcd's meaning too.
    let read = client
        .kv()
        .get("/c/k", GetOptions::new().revision(revs[1]))
        .await
        .unwrap_err();
    assert!(matches!(read, ClientError::Compacted { .. }), "{read:?}");
    // A watch from the compacted revision itself is still served.
    let mut w = client
        .watch()
        .watch("/c/k", WatchOptions::new().start_revision(compact_at))
        .await
        .unwrap();
    let got = collect_until_rev(&mut w, revs[9]).await;
    assert_eq!(
        got.iter().map(|e| e.mod_revision).collect::<Vec<_>>(),
        revs[7..].to_vec()
    );
    assert!(got.iter().all(|e| e.kind == EventType::Put as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_reaches_the_watcher_with_the_compacted_revision() {
    compaction_is_reported(ServerKind::Etcd).await;
}

pub async fn progress_notifications(kind: ServerKind) {
    let config =
        ClusterConfig::new(kind, 1).arg("--experimental-watch-progress-notify-interval=200ms");
    let cluster = Cluster::start_ready(config).await;
    let client = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    let rev = put_rev(&client, "pn/a", "1").await;
    let mut plain = client
        .watch()
        .watch("pn/", WatchOptions::new().prefix())
        .await
        .unwrap();
    let mut notified = client
        .watch()
        .watch("other", WatchOptions::new().progress_notify())
        .await
        .unwrap();

    // A quiet watcher that asked for it gets periodic empty batches at the current revision.
    let batch = tokio::time::timeout(EVENT_TIMEOUT, notified.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(batch.is_progress_notify());
    assert_eq!(batch.revision(), rev);

    // A progress request reaches every watcher on the stream.
    client.watch().request_progress().await.unwrap();
    let batch = tokio::time::timeout(EVENT_TIMEOUT, plain.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(batch.is_progress_notify(), "{batch:?}");
    assert_eq!(batch.revision(), rev);
    let put = put_rev(&client, "pn/b", "2").await;
    let got = collect_until_rev(&mut plain, put).await;
    assert_eq!(
        got.iter().map(|e| e.mod_revision).collect::<Vec<_>>(),
        vec![put]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_progress_notifications_and_requests() {
    progress_notifications(ServerKind::Etcd).await;
}

pub async fn require_leader_watch_through_quorum_loss(kind: ServerKind) {
    let mut cluster = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
    let leader = cluster.wait_ready().await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    // The stream starts on a follower that is about to lose its leader.
    let mut order = vec![cluster.endpoint(follower)];
    order.extend(
        (0..3)
            .filter(|i| *i != follower)
            .map(|i| cluster.endpoint(i)),
    );
    let client = Client::connect(order, ClientOptions::new().require_leader(true))
        .await
        .unwrap();
    let mut watcher = client
        .watch()
        .watch("/rl/", WatchOptions::new().prefix())
        .await
        .unwrap();
    let writer = cluster.client().await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let (value, rev) = put_acked(&writer, &format!("/rl/{i}"), "before").await;
        expected.push((format!("/rl/{i}"), value, rev));
    }
    let before = collect_until_rev(&mut watcher, expected.last().unwrap().2).await;
    assert_eq!(before.len(), 5);

    // Quorum lost: the member closes RequireLeader streams; the client keeps retrying.
    let others: Vec<usize> = (0..3).filter(|i| *i != follower).collect();
    for i in &others {
        cluster.kill(*i);
    }
    crate::support::wait_until_async("the follower to lose its leader", EVENT_TIMEOUT, || {
        let c = cluster.status(follower);
        async move { c.await.is_some_and(|(_, lead)| lead == 0).then_some(()) }
    })
    .await;
    if kind == ServerKind::Etcd {
        // etcd closes RequireLeader streams after a few election timeouts without a leader,
        // and refuses new ones: the member then holds no watch stream at all.
        crate::support::wait_until(
            "the RequireLeader stream to be closed",
            EVENT_TIMEOUT,
            || {
                (cluster.metric(follower, "etcd_debugging_mvcc_watch_stream_total") == Some(0.0))
                    .then_some(())
            },
        );
    }
    for i in &others {
        cluster.restart(*i);
    }
    cluster.wait_ready().await;
    let writer = cluster.client().await;
    for i in 5..10 {
        let (value, rev) = put_acked(&writer, &format!("/rl/{i}"), "after").await;
        expected.push((format!("/rl/{i}"), value, rev));
    }
    let after = collect_until_rev(&mut watcher, expected.last().unwrap().2).await;
    let got: Vec<(String, String, i64)> = before
        .iter()
        .chain(after.iter())
        .map(|e| (e.key.clone(), e.value.clone(), e.mod_revision))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_require_leader_watch_resumes_after_quorum_loss() {
    require_leader_watch_through_quorum_loss(ServerKind::Etcd).await;
}

// The same scenarios against minietcd.
// once the server serves watch.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_watch_through_leader_kill_misses_and_repeats_nothing() {
    watch_through_leader_kill(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_watch_survives_restart_of_its_only_server() {
    watch_survives_restart(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_thousand_watchers_on_one_stream_each_get_exactly_their_events() {
    thousand_watchers_on_one_stream(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_fragmented_responses_are_merged_before_delivery() {
    fragments_are_merged(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_compaction_reaches_the_watcher_with_the_compacted_revision() {
    compaction_is_reported(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_progress_notifications_and_requests() {
    progress_notifications(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_require_leader_watch_resumes_after_quorum_loss() {
    require_leader_watch_through_quorum_loss(ServerKind::Minietcd).await;
}

/// Receives progress notifications until one reports `rev` or later.
async fn wait_progress(w: &mut Watcher, rev: i64) {
    loop {
        let batch = tokio::time::timeout(EVENT_TIMEOUT, w.recv())
            .await
            .expect("no progress notification")
            .unwrap()
            .unwrap();
        assert!(batch.is_progress_notify(), "{batch:?}");
        if batch.revision() >= rev {
            break;
        }
    }
}

/// Issue 10, item 15: a quiet watcher's resume point follows its progress notifications, so
/// resuming after a compaction above its creation revision is no `Compacted` error.
pub async fn progress_moves_resume_point_past_compaction(kind: ServerKind) {
    let config =
        ClusterConfig::new(kind, 1).arg("--experimental-watch-progress-notify-interval=200ms");
    let mut cluster = Cluster::start_ready(config).await;
    let client = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    // One watcher gets periodic notifications, the other answers to a progress request.
    let mut notified = client
        .watch()
        .watch("/pq/a", WatchOptions::new().progress_notify())
        .await
        .unwrap();
    let mut requested = client
        .watch()
        .watch("/pq/b", WatchOptions::new())
        .await
        .unwrap();
    let mut last = 0;
    for i in 0..10 {
        last = put_rev(&client, "/pq/other", format!("{i}")).await;
    }
    wait_progress(&mut notified, last).await;
    client.watch().request_progress().await.unwrap();
    wait_progress(&mut requested, last).await;
    client
        .kv()
        .compact(last, CompactOptions::new().physical())
        .await
        .unwrap();
    // The streams break and resume on the restarted server.
    cluster.kill(0);
    cluster.restart(0);
    cluster.wait_ready().await;
    let other = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    let ra = put_rev(&other, "/pq/a", "a").await;
    let rb = put_rev(&other, "/pq/b", "b").await;
    for (w, rev, value) in [(&mut notified, ra, "a"), (&mut requested, rb, "b")] {
        let got = collect_until_rev(w, rev).await;
        assert_eq!(
            got.iter()
                .map(|e| (e.value.as_str(), e.mod_revision))
                .collect::<Vec<_>>(),
            vec![(value, rev)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_progress_moves_resume_point_past_compaction() {
    progress_moves_resume_point_past_compaction(ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_progress_moves_resume_point_past_compaction() {
    progress_moves_resume_point_past_compaction(ServerKind::Minietcd).await;
}

/// Issue 10, item 16: a watcher nobody reads does not stop the stream's other watchers, nor
/// new watches; once read again it gets every event, in order, once.
pub async fn unread_watcher_blocks_nothing(kind: ServerKind) {
    const PUTS: usize = 200;
    let cluster = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let client = Client::connect(cluster.endpoints(), ClientOptions::new())
        .await
        .unwrap();
    let mut slow = client
        .watch()
        .watch("/slow/a", WatchOptions::new())
        .await
        .unwrap();
    let mut revs = Vec::new();
    for i in 0..PUTS {
        revs.push(put_rev(&client, "/slow/a", format!("{i}")).await);
    }
    let mut b = tokio::time::timeout(
        EVENT_TIMEOUT,
        client.watch().watch("/slow/b", WatchOptions::new()),
    )
    .await
    .expect("watch() hung behind an unread watcher")
    .unwrap();
    let rb = put_rev(&client, "/slow/b", "b").await;
    let got = collect_until_rev(&mut b, rb).await;
    assert_eq!(got.len(), 1);
    let last = *revs.last().unwrap();
    let got = collect_until_rev(&mut slow, last).await;
    assert_strictly_increasing(&got);
    assert_eq!(got.iter().map(|e| e.mod_revision).collect::<Vec<_>>(), revs);
    assert_eq!(got[PUTS - 1].value, format!("{}", PUTS - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unread_watcher_blocks_nothing() {
    unread_watcher_blocks_nothing(ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_unread_watcher_blocks_nothing() {
    unread_watcher_blocks_nothing(ServerKind::Minietcd).await;
}

/// Puts `key` = `value` and returns the put's revision.
async fn put_rev(client: &Client, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> i64 {
    client
        .kv()
        .put(key, value, PutOptions::new())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision
}
