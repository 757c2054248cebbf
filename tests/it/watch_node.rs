//! An in-process node for watch tests: a real MvccStore on a temp dir, the watchable store
//! fed by store.apply + notify (what the state machine does), and a tonic server on a
//! loopback port serving only Watch; plus helpers to write, read watch streams and check
//! what arrived against the write history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, WatchOptions, WatchStream};
use minietcd::pb::etcdserverpb::{
    compare, request_op, watch_server::WatchServer, Compare, DeleteRangeRequest, PutRequest,
    RequestOp, ResponseHeader, TxnRequest,
};
use minietcd::pb::minietcdpb::{internal_request::Request as Write, InternalRequest};
use minietcd::pb::mvccpb::{Event, KeyValue};
use minietcd::raft::types::ApplyObserver;
use minietcd::server::watch::{WatchConfig, WatchService};
use minietcd::storage::MvccStore;
use minietcd::watch::checker::{check_watch, WatchSpec};
use minietcd::watch::{WatchLoops, WatchableStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

pub(crate) const CLUSTER_ID: u64 = 0xC1;
pub(crate) const MEMBER_ID: u64 = 0xA1;

/// One in-process node: store, watch layer, Watch server.
pub(crate) struct Node {
    pub(crate) store: Arc<MvccStore>,
    pub(crate) watch: Arc<WatchableStore>,
    /// Every write, revision -> events (prev_kv filled), as the store reported them.
    log: Arc<Mutex<BTreeMap<i64, Vec<Event>>>>,
    /// Serialises apply + notify, as the state machine does.
    apply_lock: Arc<Mutex<()>>,
    pub(crate) leader: watch::Sender<Option<u64>>,
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

    pub(crate) async fn client(&self, require_leader: bool) -> Client {
        let opts = ConnectOptions::new().with_require_leader(require_leader);
        Client::connect([self.endpoint.as_str()], Some(opts))
            .await
            .unwrap()
    }

    pub(crate) fn writer(&self) -> impl Fn(Write) -> i64 + Send + Sync + 'static {
        let (store, watch, log, lock) = (
            self.store.clone(),
            self.watch.clone(),
            self.log.clone(),
            self.apply_lock.clone(),
        );
        move |w: Write| {
            let _g = lock.lock().unwrap();
            let out = store
                .apply(
                    &InternalRequest {
                        caller: None,
                        request: Some(w),
                    },
                    b"",
                )
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
pub(crate) fn norm(e: &Event, keep_prev: bool) -> Event {
    Event {
        r#type: e.r#type,
        kv: e.kv.clone(),
        prev_kv: if keep_prev { e.prev_kv.clone() } else { None },
    }
}

pub(crate) fn from_client(e: &etcd_client::Event) -> Event {
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

pub(crate) async fn next(stream: &mut WatchStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no watch response in time")
        .unwrap()
        .expect("watch stream ended")
}

/// Reads responses until every watch id in `ids` has seen revision `until`; returns the
/// event lists per watch id.
pub(crate) async fn collect(
    stream: &mut WatchStream,
    ids: &[i64],
    until: i64,
) -> BTreeMap<i64, Vec<Vec<Event>>> {
    collect_diag(stream, ids, until, String::new).await
}

/// [`collect`], with `diag` describing the server side if the watchers stall.
pub(crate) async fn collect_diag(
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

pub(crate) async fn create(stream: &mut WatchStream, key: &str, opts: WatchOptions) -> i64 {
    stream.watch(key, Some(opts)).await.unwrap();
    let r = next(stream).await;
    assert!(
        r.created() && !r.canceled(),
        "create refused: {}",
        r.cancel_reason()
    );
    r.watch_id()
}
