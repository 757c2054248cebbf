//! The Watch service end to end in one process (see `watch_node`), watched through the
//! `etcd-client` crate (or the generated client, where etcd-client hides a field). Every
//! event is checked against the write history with the guarantee checker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{WatchFilterType, WatchOptions};
use minietcd::pb::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, CompactionRequest, WatchCreateRequest,
    WatchRequest,
};
use minietcd::pb::minietcdpb::{internal_request::Request as Write, InternalRequest};
use minietcd::pb::mvccpb::Event;
use minietcd::server::watch::WatchConfig;
use minietcd::storage::MvccStore;
use minietcd::watch::checker::{check_watch, WatchSpec};
use minietcd::watch::{WatchTarget, WatchableStore};
use tokio::task::JoinHandle;

use super::watch_node::*;

#[tokio::test]
async fn watch_grpc_events_match_write_history() {
    let node = Node::start(WatchConfig::default()).await;
    node.put("seed", "0");
    let mut client = node.client(false).await;
    let first = node.rev() + 1;
    let mut stream = client
        .watch("a/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let r = next(&mut stream).await;
    assert!(r.created());
    assert_eq!(r.watch_id(), 0, "automatic ids start at 0 as in etcd");
    assert_eq!(r.header().unwrap().revision(), first - 1);
    let key = create(&mut stream, "k", WatchOptions::new()).await;
    let range = create(&mut stream, "r1", WatchOptions::new().with_range("r5")).await;
    let from_key = create(&mut stream, "z", WatchOptions::new().with_from_key()).await;
    assert_eq!((key, range, from_key), (1, 2, 3));
    for i in 0..20 {
        node.put(&format!("a/{}", i % 4), &i.to_string());
        node.put("k", &i.to_string());
        node.put(&format!("r{}", i % 7), "x");
        node.put(&format!("zz{i}"), "y");
        if i % 5 == 0 {
            node.apply(delete("a/", "a0")); // a prefix delete: one revision, several events
            node.apply(delete("k", ""));
        }
        if i % 6 == 0 {
            node.apply(txn_puts(&[
                ("a/t", i.to_string()),
                ("r2", i.to_string()),
                ("k", "t".into()),
            ]));
        }
    }
    // A last revision that every watcher matches, so "seen the end" is observable.
    let end = node.apply(txn_puts(&[
        ("a/end", "e".into()),
        ("k", "e".into()),
        ("r1", "e".into()),
        ("zz", "e".into()),
    ]));
    let got = collect(&mut stream, &[0, key, range, from_key], end).await;
    let specs = [
        (0, WatchTarget::new(b"a/", b"a0")),
        (key, WatchTarget::new(b"k", b"")),
        (range, WatchTarget::new(b"r1", b"r5")),
        (from_key, WatchTarget::new(b"z", b"\0")),
    ];
    for (id, target) in specs {
        node.check(
            &WatchSpec {
                target,
                start_rev: first,
            },
            &got[&id],
            false,
        );
    }
}

#[tokio::test]
async fn watch_from_past_revision_resumes_exactly_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut log = BTreeMap::new();
    {
        let db = sled::open(&path).unwrap();
        let store = MvccStore::open(&db).unwrap();
        for i in 0..1_500 {
            let out = store
                .apply(
                    &InternalRequest {
                        caller: None,
                        request: Some(put(&format!("p{}", i % 3), "v")),
                    },
                    b"",
                )
                .unwrap();
            log.insert(out.revision, out.events);
        }
        store.flush().unwrap();
    }
    // "Restart": a new store over the same files, a fresh watch layer with no watcher. sled
    // releases its file lock from a background thread, so the reopen may have to wait.
    let db = super::support::wait_until("sled reopen", Duration::from_secs(10), || {
        sled::open(&path).ok()
    });
    let store = Arc::new(MvccStore::open(&db).unwrap());
    let ws = WatchableStore::new(store.clone());
    let _loops = ws.start();
    let (tx, mut rx) = tokio::sync::mpsc::channel(minietcd::watch::CHAN_BUF_LEN);
    let start = 20;
    ws.watch(
        WatchTarget::new(b"p", b"q"),
        start,
        Default::default(),
        0,
        tx,
    );
    let end = store.current_revision();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while got
            .iter()
            .flatten()
            .all(|e: &Event| e.kv.as_ref().unwrap().mod_revision < end)
        {
            let d = rx.recv().await.unwrap();
            got.push(d.events.to_events(true));
        }
    })
    .await
    .expect("catch-up from sled did not finish");
    assert!(got.len() >= 2, "1,500 revisions take more than one batch");
    check_watch(
        &log,
        &WatchSpec {
            target: WatchTarget::new(b"p", b"q"),
            start_rev: start,
        },
        &got,
        end,
    )
    .unwrap();
}

#[tokio::test]
async fn past_revision_watch_over_grpc_starts_at_that_revision() {
    let node = Node::start(WatchConfig::default()).await;
    for i in 0..50 {
        node.put("h", &i.to_string());
    }
    let mut client = node.client(false).await;
    let mut stream = client
        .watch(
            "h",
            Some(WatchOptions::new().with_start_revision(20).with_prev_key()),
        )
        .await
        .unwrap();
    assert!(next(&mut stream).await.created());
    node.put("h", "last");
    let got = collect(&mut stream, &[0], node.rev()).await;
    let first_rev = got[&0][0][0].kv.as_ref().unwrap().mod_revision;
    assert_eq!(first_rev, 20);
    node.check(
        &WatchSpec {
            target: WatchTarget::new(b"h", b""),
            start_rev: 20,
        },
        &got[&0],
        true,
    );
}

#[tokio::test]
async fn compaction_cancels_lagging_watcher_with_compact_revision() {
    let node = Node::start(WatchConfig::default()).await;
    for i in 0..20 {
        node.put("c", &i.to_string());
    }
    node.apply(Write::Compaction(CompactionRequest {
        revision: 15,
        physical: true,
    }));
    let mut client = node.client(false).await;
    let mut stream = client
        .watch("c", Some(WatchOptions::new().with_start_revision(5)))
        .await
        .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created() && !created.canceled());
    let r = next(&mut stream).await;
    assert!(r.canceled());
    assert_eq!(r.compact_revision(), 15);
    assert!(r.events().is_empty());
    // Just above the compaction revision history is complete. (etcd 3.4 also serves a watch
    // from the compaction revision itself; the store refuses that one as compacted.)
    stream
        .watch("c", Some(WatchOptions::new().with_start_revision(16)))
        .await
        .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created());
    let got = collect(&mut stream, &[created.watch_id()], node.rev()).await;
    let revs: Vec<i64> = got[&created.watch_id()]
        .iter()
        .flatten()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, (16..=21).collect::<Vec<_>>());
}

#[tokio::test]
async fn filters_and_prev_kv() {
    let node = Node::start(WatchConfig::default()).await;
    let mut client = node.client(false).await;
    let mut stream = client
        .watch(
            "f",
            Some(WatchOptions::new().with_filters([WatchFilterType::NoPut])),
        )
        .await
        .unwrap();
    assert!(next(&mut stream).await.created());
    let nodel = create(
        &mut stream,
        "f",
        WatchOptions::new().with_filters([WatchFilterType::NoDelete]),
    )
    .await;
    let prev = create(&mut stream, "f", WatchOptions::new().with_prev_key()).await;
    let plain = create(&mut stream, "f", WatchOptions::new()).await;
    let first = node.rev() + 1;
    node.put("f", "1");
    node.put("f", "2");
    node.apply(delete("f", ""));
    node.put("f", "3");
    let end = node.rev();
    // The NOPUT watcher only ever sees the delete; collect up to it for that one.
    let mut got: BTreeMap<i64, Vec<Vec<Event>>> = BTreeMap::new();
    while got.values().flatten().count() < 1 + 4 + 4 + 3 {
        let r = next(&mut stream).await;
        got.entry(r.watch_id())
            .or_default()
            .push(r.events().iter().map(from_client).collect());
    }
    let types = |id: i64| -> Vec<i32> { got[&id].iter().flatten().map(|e| e.r#type).collect() };
    assert_eq!(types(0), vec![1]);
    assert_eq!(types(nodel), vec![0, 0, 0]);
    let with_prev: Vec<bool> = got[&prev]
        .iter()
        .flatten()
        .map(|e| e.prev_kv.is_some())
        .collect();
    assert_eq!(
        with_prev,
        vec![false, true, true, false],
        "prev_kv on all but creations"
    );
    assert!(got[&plain].iter().flatten().all(|e| e.prev_kv.is_none()));
    let spec = WatchSpec {
        target: WatchTarget::new(b"f", b""),
        start_rev: first,
    };
    node.check(&spec, &got[&prev], true);
    node.check(&spec, &got[&plain], false);
    assert_eq!(end, first + 3);
}

#[tokio::test]
async fn progress_request_and_progress_notify() {
    let node = Node::start(WatchConfig {
        progress_interval: Duration::from_millis(200),
        ..WatchConfig::default()
    })
    .await;
    node.put("x", "1");
    let mut client = node.client(false).await;
    let mut stream = client
        .watch("quiet", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    assert!(next(&mut stream).await.created());
    node.put("x", "2");
    stream.request_progress().await.unwrap();
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), -1);
    assert!(r.events().is_empty() && !r.created() && !r.canceled());
    assert_eq!(r.header().unwrap().revision(), node.rev());
    // A quiet progress_notify watcher hears from the server every interval.
    node.put("x", "3");
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), 0);
    assert!(r.events().is_empty());
    assert_eq!(r.header().unwrap().revision(), node.rev());
}

#[tokio::test]
async fn large_responses_are_fragmented_when_asked() {
    let node = Node::start(WatchConfig {
        max_request_bytes: 2_000,
        ..WatchConfig::default()
    })
    .await;
    let mut raw = WatchClient::connect(node.endpoint.clone()).await.unwrap();
    let (req_tx, req_rx) = tokio::sync::mpsc::channel(4);
    let create = |fragment: bool, id: i64| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            fragment,
            watch_id: id,
            ..Default::default()
        })),
    };
    req_tx.send(create(true, 10)).await.unwrap();
    req_tx.send(create(false, 11)).await.unwrap();
    let mut resp = raw
        .watch(tokio_stream::wrappers::ReceiverStream::new(req_rx))
        .await
        .unwrap()
        .into_inner();
    for id in [10, 11] {
        let r = resp.message().await.unwrap().unwrap();
        assert!(r.created && r.watch_id == id);
    }
    let kvs: Vec<(String, String)> = (0..10)
        .map(|i| (format!("big/{i}"), "v".repeat(500)))
        .collect();
    let refs: Vec<(&str, String)> = kvs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let rev = node.apply(txn_puts(&refs));
    let mut parts = Vec::new();
    let mut whole = None;
    while whole.is_none()
        || parts
            .last()
            .is_none_or(|p: &minietcd::pb::etcdserverpb::WatchResponse| p.fragment)
    {
        let r = tokio::time::timeout(Duration::from_secs(10), resp.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if r.watch_id == 10 {
            parts.push(r);
        } else {
            whole = Some(r);
        }
    }
    assert!(parts.len() >= 3, "{} fragments", parts.len());
    assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
    let merged: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
    let whole = whole.unwrap();
    assert!(!whole.fragment);
    assert_eq!(merged.len(), 10);
    assert_eq!(merged, whole.events);
    assert!(merged
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == rev));
    drop(req_tx);
}

#[tokio::test]
async fn chosen_ids_duplicates_empty_ranges_and_cancel() {
    let node = Node::start(WatchConfig::default()).await;
    let mut client = node.client(false).await;
    let mut stream = client
        .watch("d", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    let r = next(&mut stream).await;
    assert!(r.created() && r.watch_id() == 7);
    stream
        .watch("d", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    let r = next(&mut stream).await;
    assert!(r.created() && r.canceled());
    assert_eq!(r.watch_id(), -1);
    assert_eq!(
        r.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    stream
        .watch("e", Some(WatchOptions::new().with_range("a")))
        .await
        .unwrap();
    let r = next(&mut stream).await;
    assert!(r.created() && r.canceled());
    assert_eq!(r.cancel_reason(), "mvcc: watcher range is empty");
    // Automatic ids skip the ones clients chose.
    let auto = create(&mut stream, "d", WatchOptions::new()).await;
    assert_eq!(auto, 0);
    stream.cancel(7).await.unwrap();
    let r = next(&mut stream).await;
    assert!(r.canceled() && r.watch_id() == 7 && !r.created());
    let rev = node.put("d", "after-cancel");
    let r = next(&mut stream).await;
    assert_eq!(
        r.watch_id(),
        auto,
        "the canceled watcher must not get events"
    );
    assert_eq!(r.events()[0].kv().unwrap().mod_revision(), rev);
    assert_eq!(node.watch.counts(), (1, 0, 0));
    drop(stream);
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.watch.counts() != (0, 0, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream end left watchers behind"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn require_leader_streams_fail_without_leader_plain_ones_stay() {
    let node = Node::start(WatchConfig {
        election_timeout: Duration::from_millis(300),
        ..WatchConfig::default()
    })
    .await;
    node.leader.send_replace(None);
    let mut strict = node.client(true).await;
    let Err(err) = strict.watch("l", None).await else {
        panic!("a require-leader watch must be refused without a leader");
    };
    assert!(err.to_string().contains("etcdserver: no leader"), "{err}");
    node.leader.send_replace(Some(MEMBER_ID));
    let mut strict_stream = strict.watch("l", None).await.unwrap();
    assert!(next(&mut strict_stream).await.created());
    let mut plain = node.client(false).await;
    let mut plain_stream = plain.watch("l", None).await.unwrap();
    assert!(next(&mut plain_stream).await.created());
    node.leader.send_replace(None);
    let started = tokio::time::Instant::now();
    let Err(err) = tokio::time::timeout(Duration::from_secs(10), strict_stream.message())
        .await
        .unwrap()
    else {
        panic!("require-leader stream must be closed with an error");
    };
    assert!(err.to_string().contains("etcdserver: no leader"), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before an election timeout"
    );
    let rev = node.put("l", "still-open");
    let r = next(&mut plain_stream).await;
    assert_eq!(r.events()[0].kv().unwrap().mod_revision(), rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_watchers_keep_every_guarantee() {
    let node = Node::start(WatchConfig::default()).await;
    let write = Arc::new(node.writer());
    let keys = ["a", "b", "c", "d", "e"];
    let writers: Vec<JoinHandle<()>> = (0..3)
        .map(|w| {
            let write = write.clone();
            tokio::spawn(async move {
                for i in 0..300usize {
                    let k = keys[(i * 7 + w) % keys.len()];
                    match i % 10 {
                        3 => write(delete(k, "")),
                        7 => write(txn_puts(&[(k, i.to_string()), ("e", "t".into())])),
                        _ => write(put(k, &format!("{w}-{i}"))),
                    };
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let targets = [
        WatchTarget::new(b"a", b""),
        WatchTarget::new(b"b", b"d"),
        WatchTarget::new(b"\0", b"\0"),
        WatchTarget::new(b"c", b"\0"),
    ];
    let mut runs = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let mut client = node.client(false).await;
        let (key, end) = match t {
            WatchTarget::Key(k) => (k.to_vec(), Vec::new()),
            WatchTarget::Range(ivl) => (
                ivl.begin.to_vec(),
                match &ivl.end {
                    minietcd::watch::interval_tree::RangeEnd::Key(k) => k.to_vec(),
                    minietcd::watch::interval_tree::RangeEnd::Unbounded => vec![0],
                },
            ),
        };
        // Some start now, some from a past revision.
        let start = if i % 2 == 0 {
            0
        } else {
            (node.rev() - 40).max(1)
        };
        let mut opts = WatchOptions::new().with_start_revision(start);
        if !end.is_empty() {
            opts = opts.with_range(end.clone());
        }
        let mut stream = client.watch(key.clone(), Some(opts)).await.unwrap();
        let created = next(&mut stream).await;
        let start = if start == 0 {
            created.header().unwrap().revision() + 1
        } else {
            start
        };
        runs.push((
            client,
            stream,
            WatchSpec {
                target: t.clone(),
                start_rev: start,
            },
            key,
            end,
        ));
    }
    for w in writers {
        w.await.unwrap();
    }
    let end_rev = node.apply(txn_puts(&[
        ("a", "end".into()),
        ("b", "end".into()),
        ("c", "end".into()),
    ]));
    for (i, (mut client, mut stream, spec, key, end)) in runs.into_iter().enumerate() {
        if i == 3 {
            // Resumable: stop half-way, resume on a new stream from the next revision.
            let mid = spec.start_rev + (end_rev - spec.start_rev) / 2;
            let first = collect(&mut stream, &[0], mid).await.remove(&0).unwrap();
            // The client stops after the revisions below `mid` (catch-up may have delivered
            // more in one response: those are dropped as if never processed) and resumes there.
            let mut first: Vec<Vec<Event>> = first
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .filter(|e| e.kv.as_ref().unwrap().mod_revision < mid)
                        .collect::<Vec<_>>()
                })
                .filter(|r| !r.is_empty())
                .collect();
            let last_seen = mid - 1;
            drop(stream);
            let mut opts = WatchOptions::new().with_start_revision(last_seen + 1);
            if !end.is_empty() {
                opts = opts.with_range(end.clone());
            }
            let mut resumed = client.watch(key, Some(opts)).await.unwrap();
            assert!(next(&mut resumed).await.created());
            let diag = || {
                format!(
                    "resumed watcher from {}, store (synced, unsynced, victims) {:?}",
                    last_seen + 1,
                    node.watch.counts()
                )
            };
            first.extend(
                collect_diag(&mut resumed, &[0], end_rev, diag)
                    .await
                    .remove(&0)
                    .unwrap(),
            );
            node.check(&spec, &first, false);
            continue;
        }
        let diag = || {
            format!(
                "watcher {i} {spec:?}, store (synced, unsynced, victims) {:?}",
                node.watch.counts()
            )
        };
        let got = collect_diag(&mut stream, &[0], end_rev, diag).await;
        node.check(&spec, &got[&0], false);
    }
}

/// Opens a raw watch stream on member 0 of `cluster` with `first` as its first request.
async fn raw_watch(
    cluster: &crate::etcd_cluster::Cluster,
    first: WatchCreateRequest,
) -> (
    tokio::sync::mpsc::Sender<WatchRequest>,
    tonic::Streaming<minietcd::pb::etcdserverpb::WatchResponse>,
) {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.endpoint(0)))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(first)),
    })
    .await
    .unwrap();
    let stream = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

async fn next_raw(
    stream: &mut tonic::Streaming<minietcd::pb::etcdserverpb::WatchResponse>,
) -> minietcd::pb::etcdserverpb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no response in time")
        .expect("stream error")
        .expect("stream ended")
}

/// A negative start revision and a client-chosen watch id of -1 (etcd's broadcast id) are
/// answered as etcd 3.4 answers them.
pub async fn bad_create_requests(kind: crate::etcd_cluster::ServerKind) {
    use crate::etcd_cluster::{Cluster, ClusterConfig};
    let cluster = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let client = cluster.client().await;
    for i in 0..3 {
        client
            .kv()
            .put("neg", format!("{i}"), minietcd_client::PutOptions::new())
            .await
            .unwrap();
    }
    let (tx, mut stream) = raw_watch(
        &cluster,
        WatchCreateRequest {
            key: b"neg".to_vec(),
            start_revision: -5,
            ..Default::default()
        },
    )
    .await;
    // etcd creates the watch, then cancels it as compacted: its store starts at compaction
    // revision -1, and a start below the compaction revision is compacted.
    let r = next_raw(&mut stream).await;
    assert!(r.created && !r.canceled, "{r:?}");
    let id = r.watch_id;
    let r = next_raw(&mut stream).await;
    assert_eq!(
        (r.watch_id, r.created, r.canceled, r.compact_revision),
        (id, false, true, -1),
        "{r:?}"
    );
    // A client-chosen id of -1 is an ordinary watch id to etcd 3.4: created, then its events
    // arrive under it (not mistaken for a progress notification).
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"neg".to_vec(),
            watch_id: -1,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let r = next_raw(&mut stream).await;
    assert_eq!(
        (r.watch_id, r.created, r.canceled),
        (-1, true, false),
        "{r:?}"
    );
    let put = client
        .kv()
        .put("neg", "x", minietcd_client::PutOptions::new())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let r = next_raw(&mut stream).await;
    assert_eq!(r.watch_id, -1, "{r:?}");
    assert_eq!(
        r.events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect::<Vec<_>>(),
        vec![put],
        "{r:?}"
    );
    // Once compacted, a negative start is canceled with the compaction revision.
    client
        .kv()
        .compact(put, minietcd_client::CompactOptions::new().physical())
        .await
        .unwrap();
    let (_tx, mut stream) = raw_watch(
        &cluster,
        WatchCreateRequest {
            key: b"neg".to_vec(),
            start_revision: -5,
            ..Default::default()
        },
    )
    .await;
    let r = next_raw(&mut stream).await;
    assert!(r.created && !r.canceled, "{r:?}");
    let r = next_raw(&mut stream).await;
    assert_eq!((r.canceled, r.compact_revision), (true, put), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_bad_create_requests() {
    bad_create_requests(crate::etcd_cluster::ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcd_bad_create_requests() {
    bad_create_requests(crate::etcd_cluster::ServerKind::Minietcd).await;
}
