//! The Watch service end to end in one process: a real MvccStore on a temp dir, the
//! watchable store fed by store.apply + notify (what the state machine does), a tonic server
//! on a loopback port serving only Watch, and the `etcd-client` crate (or the generated
//! client, where etcd-client hides a field) watching. Every event is checked against the
//! write history with the guarantee checker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, WatchFilterType, WatchOptions, WatchStream};
use minietcd::pb::etcdserverpb::{
    compare, request_op, watch_client::WatchClient, watch_request::RequestUnion,
    watch_server::WatchServer, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RequestOp, ResponseHeader, TxnRequest, WatchCreateRequest, WatchRequest,
};
use minietcd::pb::minietcdpb::{internal_request::Request as Write, InternalRequest};
use minietcd::pb::mvccpb::{Event, KeyValue};
use minietcd::raft::types::ApplyObserver;
use minietcd::server::watch::{WatchConfig, WatchService};
use minietcd::storage::MvccStore;
use minietcd::watch::checker::{check_watch, WatchSpec};
use minietcd::watch::{WatchLoops, WatchTarget, WatchableStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

const CLUSTER_ID: u64 = 0xC1;
const MEMBER_ID: u64 = 0xA1;

/// One in-process node: store, watch layer, Watch server.
pub(crate) struct Node {
    store: Arc<MvccStore>,
    watch: Arc<WatchableStore>,
    /// Every write, revision -> events (prev_kv filled), as the store reported them.
    log: Arc<Mutex<BTreeMap<i64, Vec<Event>>>>,
    /// Serialises apply + notify, as the state machine does.
    apply_lock: Arc<Mutex<()>>,
    leader: watch::Sender<Option<u64>>,
    pub(crate) endpoint: String,
    _loops: WatchLoops,
    server: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Node {
    pub(crate) async fn start(config: WatchConfig) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = Arc::new(MvccStore::open(&db).unwrap());
        let watch_store = WatchableStore::new(store.clone());
        let loops = watch_store.start();
        let (leader, leader_rx) = watch::channel(Some(MEMBER_ID));
        let header = {
            let store = store.clone();
            move |rev: i64| ResponseHeader {
                cluster_id: CLUSTER_ID,
                member_id: MEMBER_ID,
                revision: if rev > 0 {
                    rev
                } else {
                    store.current_revision()
                },
                raft_term: 2,
            }
        };
        let service = WatchService::new(watch_store.clone(), Arc::new(header), leader_rx, config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(WatchServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Node {
            store,
            watch: watch_store,
            log: Arc::new(Mutex::new(BTreeMap::new())),
            apply_lock: Arc::new(Mutex::new(())),
            leader,
            endpoint,
            _loops: loops,
            server,
            _dir: dir,
        }
    }

    async fn client(&self, require_leader: bool) -> Client {
        let opts = ConnectOptions::new().with_require_leader(require_leader);
        Client::connect([self.endpoint.as_str()], Some(opts))
            .await
            .unwrap()
    }

    fn writer(&self) -> impl Fn(Write) -> i64 + Send + Sync + 'static {
        let (store, watch, log, lock) = (
            self.store.clone(),
            self.watch.clone(),
            self.log.clone(),
            self.apply_lock.clone(),
        );
        move |w: Write| {
            let _g = lock.lock().unwrap();
            let out = store
                .apply(&InternalRequest { request: Some(w) }, b"")
                .unwrap();
            watch.notify(out.revision, &out.events);
            if !out.events.is_empty() {
                log.lock().unwrap().insert(out.revision, out.events.clone());
            }
            out.revision
        }
    }

    pub(crate) fn apply(&self, w: Write) -> i64 {
        (self.writer())(w)
    }

    pub(crate) fn put(&self, key: &str, value: &str) -> i64 {
        self.apply(put(key, value))
    }

    pub(crate) fn rev(&self) -> i64 {
        self.store.current_revision()
    }

    pub(crate) fn check(&self, spec: &WatchSpec, responses: &[Vec<Event>], keep_prev: bool) {
        let log: BTreeMap<i64, Vec<Event>> = self
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|(r, evs)| (*r, evs.iter().map(|e| norm(e, keep_prev)).collect()))
            .collect();
        let responses: Vec<Vec<Event>> = responses
            .iter()
            .map(|r| r.iter().map(|e| norm(e, keep_prev)).collect())
            .collect();
        check_watch(&log, spec, &responses, self.rev()).unwrap();
    }
}

pub(crate) fn put(key: &str, value: &str) -> Write {
    Write::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

pub(crate) fn delete(key: &str, end: &str) -> Write {
    Write::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    })
}

pub(crate) fn txn_puts(kvs: &[(&str, String)]) -> Write {
    Write::Txn(TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Version as i32,
            key: b"never-written".to_vec(),
            ..Default::default()
        }],
        success: vec![],
        failure: kvs
            .iter()
            .map(|(k, v)| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: k.as_bytes().to_vec(),
                    value: v.as_bytes().to_vec(),
                    ..Default::default()
                })),
            })
            .collect(),
    })
}

/// An event as compared: prev_kv kept only when the watcher asked for it.
fn norm(e: &Event, keep_prev: bool) -> Event {
    Event {
        r#type: e.r#type,
        kv: e.kv.clone(),
        prev_kv: if keep_prev { e.prev_kv.clone() } else { None },
    }
}

fn from_client(e: &etcd_client::Event) -> Event {
    let kv = |k: &etcd_client::KeyValue| KeyValue {
        key: k.key().to_vec(),
        create_revision: k.create_revision(),
        mod_revision: k.mod_revision(),
        version: k.version(),
        value: k.value().to_vec(),
        lease: k.lease(),
    };
    Event {
        r#type: match e.event_type() {
            EventType::Put => 0,
            EventType::Delete => 1,
        },
        kv: e.kv().map(kv),
        prev_kv: e.prev_kv().map(kv),
    }
}

async fn next(stream: &mut WatchStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no watch response in time")
        .unwrap()
        .expect("watch stream ended")
}

/// Reads responses until every watch id in `ids` has seen revision `until`; returns the
/// event lists per watch id.
async fn collect(
    stream: &mut WatchStream,
    ids: &[i64],
    until: i64,
) -> BTreeMap<i64, Vec<Vec<Event>>> {
    collect_diag(stream, ids, until, String::new).await
}

/// [`collect`], with `diag` describing the server side if the watchers stall.
async fn collect_diag(
    stream: &mut WatchStream,
    ids: &[i64],
    until: i64,
    diag: impl Fn() -> String,
) -> BTreeMap<i64, Vec<Vec<Event>>> {
    let mut got: BTreeMap<i64, Vec<Vec<Event>>> = ids.iter().map(|i| (*i, Vec::new())).collect();
    let done = |got: &BTreeMap<i64, Vec<Vec<Event>>>| {
        got.values().all(|rs| {
            rs.iter()
                .flatten()
                .any(|e| e.kv.as_ref().unwrap().mod_revision >= until)
        })
    };
    while !done(&got) {
        let Ok(r) = tokio::time::timeout(Duration::from_secs(10), stream.message()).await else {
            let last: Vec<(i64, i64)> = got
                .iter()
                .map(|(id, rs)| {
                    let rev = rs
                        .iter()
                        .flatten()
                        .map(|e| e.kv.as_ref().unwrap().mod_revision)
                        .max();
                    (*id, rev.unwrap_or(0))
                })
                .collect();
            panic!(
                "watchers stalled before revision {until}: last revision per watch id {last:?}; {}",
                diag()
            );
        };
        let r = r.unwrap().expect("watch stream ended");
        assert!(!r.canceled(), "unexpected cancel {:?}", r.cancel_reason());
        if r.events().is_empty() {
            continue;
        }
        let h = r.header().unwrap();
        assert_eq!((h.cluster_id(), h.member_id()), (CLUSTER_ID, MEMBER_ID));
        got.get_mut(&r.watch_id())
            .expect("events for an unknown watch id")
            .push(r.events().iter().map(from_client).collect());
    }
    got
}

async fn create(stream: &mut WatchStream, key: &str, opts: WatchOptions) -> i64 {
    stream.watch(key, Some(opts)).await.unwrap();
    let r = next(stream).await;
    assert!(
        r.created() && !r.canceled(),
        "create refused: {}",
        r.cancel_reason()
    );
    r.watch_id()
}

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
