//! Watch on real minietcd processes (one or three members, `etcd_cluster` harness): history
//! replay after a restart and after a snapshot install, compaction of a lagging watcher, a
//! watch on a follower, WithRequireLeader on a member cut off from quorum, and the guarantee
//! checker over concurrent writers and watchers. Writers use the `etcd-client` crate; watchers
//! use raw gRPC streams so that every response is seen exactly as the server sent it (which the
//! atomicity check needs). Every watcher's events are checked with `check_watch` against the
//! write history rebuilt from the writers' acknowledgements.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{CompactionOptions, DeleteOptions, GetOptions, Txn, TxnOp};
use minietcd::pb::etcdserverpb::{
    watch_client::WatchClient, watch_request, WatchCreateRequest, WatchRequest, WatchResponse,
};
use minietcd::pb::mvccpb::{Event, KeyValue};
use minietcd::watch::checker::{check_watch, WatchSpec};
use minietcd::watch::WatchTarget;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::wait_until_async;

/// Longest a test waits for events, a leader, or a stream to end.
const WAIT: Duration = Duration::from_secs(20);

/// One acknowledged write.
#[derive(Debug, Clone)]
enum Op {
    /// Puts, in order, all at one revision (a put or a txn of puts).
    Put(Vec<(String, String)>),
    /// Deletes `[key, end)` (`end` empty: the key alone).
    Delete { key: String, end: String },
}

/// The write history as the writers' acknowledgements report it: revision -> write.
#[derive(Clone, Default)]
pub(crate) struct Writes(Arc<Mutex<BTreeMap<i64, Op>>>);

impl Writes {
    fn record(&self, rev: i64, op: Op) {
        let prev = self.0.lock().unwrap().insert(rev, op);
        assert!(prev.is_none(), "two acknowledged writes at revision {rev}");
    }

    /// The last acknowledged revision (1, a fresh store's, before any write).
    fn last(&self) -> i64 {
        self.0
            .lock()
            .unwrap()
            .keys()
            .next_back()
            .copied()
            .unwrap_or(1)
    }

    /// Replays the writes with etcd's MVCC rules (create revision, version, tombstones that
    /// carry only key and revision, prev_kv) into revision -> events. Every revision from 2
    /// on must have been acknowledged exactly once, so the history has no hole.
    fn history(&self) -> BTreeMap<i64, Vec<Event>> {
        let ops = self.0.lock().unwrap().clone();
        let mut state: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
        let mut out = BTreeMap::new();
        let mut expect = 2;
        for (rev, op) in ops {
            assert_eq!(rev, expect, "no acknowledged write at revision {expect}");
            expect = rev + 1;
            let mut evs = Vec::new();
            match op {
                Op::Put(kvs) => {
                    for (k, v) in kvs {
                        let key = k.into_bytes();
                        let prev = state.get(&key).cloned();
                        let kv = KeyValue {
                            key: key.clone(),
                            value: v.into_bytes(),
                            mod_revision: rev,
                            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                            version: prev.as_ref().map_or(1, |p| p.version + 1),
                            lease: 0,
                        };
                        state.insert(key, kv.clone());
                        evs.push(Event {
                            r#type: 0,
                            kv: Some(kv),
                            prev_kv: prev,
                        });
                    }
                }
                Op::Delete { key, end } => {
                    let keys: Vec<Vec<u8>> = if end.is_empty() {
                        state
                            .get_key_value(key.as_bytes())
                            .map(|(k, _)| k.clone())
                            .into_iter()
                            .collect()
                    } else {
                        state
                            .range(key.into_bytes()..end.into_bytes())
                            .map(|(k, _)| k.clone())
                            .collect()
                    };
                    for k in keys {
                        let prev = state.remove(&k);
                        evs.push(Event {
                            r#type: 1,
                            kv: Some(KeyValue {
                                key: k,
                                mod_revision: rev,
                                ..Default::default()
                            }),
                            prev_kv: prev,
                        });
                    }
                }
            }
            assert!(!evs.is_empty(), "revision {rev} changed nothing");
            out.insert(rev, evs);
        }
        out
    }
}

/// A writer through the `etcd-client` crate that records every acknowledged write.
#[derive(Clone)]
pub(crate) struct Writer {
    client: etcd_client::Client,
    writes: Writes,
}

impl Writer {
    async fn connect(endpoints: &[String], writes: &Writes) -> Writer {
        let eps: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
        Writer {
            client: etcd_client::Client::connect(eps, Some(opts))
                .await
                .expect("connect the writer"),
            writes: writes.clone(),
        }
    }

    async fn put(&mut self, key: &str, value: &str) -> i64 {
        let resp = self.client.put(key, value, None).await.expect("put");
        let rev = resp.header().expect("header").revision();
        self.writes
            .record(rev, Op::Put(vec![(key.to_string(), value.to_string())]));
        rev
    }

    async fn txn_puts(&mut self, kvs: &[(String, String)]) -> i64 {
        let ops: Vec<TxnOp> = kvs
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        let resp = self
            .client
            .txn(Txn::new().and_then(ops))
            .await
            .expect("txn");
        let rev = resp.header().expect("header").revision();
        self.writes.record(rev, Op::Put(kvs.to_vec()));
        rev
    }

    /// Deletes `[key, end)`; `None` when nothing was there (the revision does not move).
    async fn delete(&mut self, key: &str, end: &str) -> Option<i64> {
        let opts = (!end.is_empty()).then(|| DeleteOptions::new().with_range(end));
        let resp = self.client.delete(key, opts).await.expect("delete");
        if resp.deleted() == 0 {
            return None;
        }
        let rev = resp.header().expect("header").revision();
        self.writes.record(
            rev,
            Op::Delete {
                key: key.to_string(),
                end: end.to_string(),
            },
        );
        Some(rev)
    }

    /// A mixed workload on `prefix`: puts on a few keys, every 7th a txn of three puts,
    /// every 11th a delete of a sub-range.
    async fn mixed(&mut self, prefix: &str, n: usize, tag: &str) {
        for i in 0..n {
            let key = format!("{prefix}k{}", i % 5);
            if i % 7 == 6 {
                let kvs: Vec<(String, String)> = (0..3)
                    .map(|j| {
                        (
                            format!("{prefix}t{}", (i + j) % 4),
                            format!("{tag}-{i}-{j}"),
                        )
                    })
                    .collect();
                self.txn_puts(&kvs).await;
            } else if i % 11 == 10 {
                self.delete(&format!("{prefix}k1"), &format!("{prefix}k3"))
                    .await;
            } else {
                self.put(&key, &format!("{tag}-{i}")).await;
            }
        }
    }
}

/// What a raw watcher asks for.
#[derive(Debug, Clone, Default)]
struct WatchArgs {
    key: String,
    range_end: String,
    start_rev: i64,
    prev_kv: bool,
    require_leader: bool,
    /// Small HTTP/2 windows, so that a client that does not read holds the server back.
    small_window: bool,
}

impl WatchArgs {
    fn prefix(prefix: &str, start_rev: i64) -> WatchArgs {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        WatchArgs {
            key: prefix.to_string(),
            range_end: String::from_utf8(end).unwrap(),
            start_rev,
            ..Default::default()
        }
    }

    fn range(key: &str, end: &str, start_rev: i64) -> WatchArgs {
        WatchArgs {
            key: key.to_string(),
            range_end: end.to_string(),
            start_rev,
            ..Default::default()
        }
    }

    fn spec(&self) -> WatchSpec {
        WatchSpec {
            target: WatchTarget::new(self.key.as_bytes(), self.range_end.as_bytes()),
            start_rev: self.start_rev,
        }
    }
}

/// An open raw watch stream: the request sender (kept open) and the responses.
struct RawStream {
    _requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

/// Opens a Watch stream on `endpoint` and sends one create request.
async fn open(endpoint: &str, args: &WatchArgs) -> Result<RawStream, tonic::Status> {
    let mut ep = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2));
    if args.small_window {
        ep = ep
            .initial_stream_window_size(Some(65_535))
            .initial_connection_window_size(Some(65_535));
    }
    let channel = ep
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: args.key.as_bytes().to_vec(),
                range_end: args.range_end.as_bytes().to_vec(),
                start_revision: args.start_rev,
                prev_kv: args.prev_kv,
                ..Default::default()
            },
        )),
    })
    .await
    .expect("queue the create request");
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if args.require_leader {
        req.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    let responses = WatchClient::new(channel).watch(req).await?.into_inner();
    Ok(RawStream {
        _requests: tx,
        responses,
    })
}

/// A watcher whose responses a background task records until the stream ends, the watch
/// is canceled, or (if asked) enough events have arrived (then it drops the stream).
struct Recorder {
    args: WatchArgs,
    responses: Arc<Mutex<Vec<WatchResponse>>>,
    /// Why the stream ended, once it has.
    end: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(endpoint: &str, args: WatchArgs, stop_after: Option<usize>) -> Recorder {
        Recorder::try_start(endpoint, args, stop_after)
            .await
            .unwrap_or_else(|s| panic!("watch refused on {endpoint}: {s:?}"))
    }

    async fn try_start(
        endpoint: &str,
        args: WatchArgs,
        stop_after: Option<usize>,
    ) -> Result<Recorder, tonic::Status> {
        let stream = open(endpoint, &args).await?;
        let responses = Arc::new(Mutex::new(Vec::new()));
        let end = Arc::new(Mutex::new(None));
        let (r, e) = (responses.clone(), end.clone());
        let task = tokio::spawn(async move {
            // Keeps the request side open for the stream's life (no half-close).
            let _requests = stream._requests;
            let mut stream_responses = stream.responses;
            let mut events = 0;
            let why = loop {
                match stream_responses.message().await {
                    Ok(Some(resp)) => {
                        events += resp.events.len();
                        let canceled = resp.canceled;
                        let reason = resp.cancel_reason.clone();
                        r.lock().unwrap().push(resp);
                        if canceled {
                            break format!("canceled: {reason}");
                        }
                        if stop_after.is_some_and(|n| events >= n) {
                            break "stopped by the test".to_string();
                        }
                    }
                    Ok(None) => break "stream ended".to_string(),
                    Err(s) => break s.message().to_string(),
                }
            };
            *e.lock().unwrap() = Some(why);
        });
        Ok(Recorder {
            args,
            responses,
            end,
            task,
        })
    }

    /// The event lists of the responses that carried events.
    fn events(&self) -> Vec<Vec<Event>> {
        self.responses
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.events.is_empty())
            .map(|r| r.events.clone())
            .collect()
    }

    fn count(&self) -> usize {
        self.events().iter().map(Vec::len).sum()
    }

    fn ended(&self) -> Option<String> {
        self.end.lock().unwrap().clone()
    }

    /// Waits until `n` events have arrived (panics naming what came, or why the stream
    /// ended, on timeout).
    async fn wait_events(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.count() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "watcher {:?}: {} of {n} events after {WAIT:?} (last revision {:?}; ended: {:?})",
                self.args,
                self.count(),
                self.events().last().and_then(|r| r.last()).map(rev),
                self.ended()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for every event `history` has for this watcher, gives a duplicate or an extra
    /// event a moment to show up, and checks the lot.
    async fn wait_and_check(&self, history: &BTreeMap<i64, Vec<Event>>, last: i64) {
        let want = expected_count(history, &self.args.spec());
        self.wait_events(want).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        check(history, &self.args, &[self.events()], last);
    }
}

fn rev(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// How many events of `history` a watcher with `spec` must receive.
fn expected_count(history: &BTreeMap<i64, Vec<Event>>, spec: &WatchSpec) -> usize {
    history
        .range(spec.start_rev..)
        .flat_map(|(_, evs)| evs)
        .filter(|e| spec.target.matches(&e.kv.as_ref().unwrap().key))
        .count()
}

/// Checks the responses of one watcher (possibly resumed over several streams, given in
/// order) against the history; prev_kv compared only when the watcher asked for it.
fn check(
    history: &BTreeMap<i64, Vec<Event>>,
    args: &WatchArgs,
    parts: &[Vec<Vec<Event>>],
    until: i64,
) {
    let norm = |e: &Event| Event {
        prev_kv: if args.prev_kv {
            e.prev_kv.clone()
        } else {
            None
        },
        ..e.clone()
    };
    let history: BTreeMap<i64, Vec<Event>> = history
        .iter()
        .map(|(r, evs)| (*r, evs.iter().map(norm).collect()))
        .collect();
    let responses: Vec<Vec<Event>> = parts
        .iter()
        .flatten()
        .map(|r| r.iter().map(norm).collect())
        .collect();
    if let Err(v) = check_watch(&history, &args.spec(), &responses, until) {
        panic!("watcher {args:?} broke a guarantee: {v}");
    }
}

/// A member other than `leader`.
fn follower(cluster: &Cluster, leader: usize, nth: usize) -> usize {
    cluster
        .running()
        .into_iter()
        .filter(|i| *i != leader)
        .nth(nth)
        .expect("a follower")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_past_revision_after_restart_replays_history_from_sled() {
    let mut cluster = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let writes = Writes::default();
    let mut w = Writer::connect(&cluster.endpoints(), &writes).await;
    w.mixed("/r/", 60, "a").await;
    let mid = writes.last() - 20;
    cluster.restart(0);
    cluster.wait_ready().await;
    let mut w = Writer::connect(&cluster.endpoints(), &writes).await;
    w.mixed("/r/", 15, "b").await;
    let history = writes.history();
    let last = writes.last();
    let ep = cluster.endpoint(0);
    let all = Recorder::start(&ep, WatchArgs::prefix("/r/", 2), None).await;
    let from_mid = Recorder::start(&ep, WatchArgs::range("/r/k", "/r/t2", mid), None).await;
    let mut with_prev = WatchArgs::prefix("/r/t", 3);
    with_prev.prev_kv = true;
    let prev = Recorder::start(&ep, with_prev, None).await;
    for r in [&all, &from_mid, &prev] {
        r.wait_and_check(&history, last).await;
    }
    // The replayed watchers go on with live events.
    w.put("/r/t1", "live").await;
    let history = writes.history();
    for r in [&all, &from_mid, &prev] {
        r.wait_and_check(&history, writes.last()).await;
    }
}

/// A watcher whose client stops reading falls behind while a compaction passes its next
/// revision: it gets every event up to where it was, then a cancel carrying the compaction
/// revision, so that it can resume from there.
async fn compaction_cancels_a_lagging_watcher(kind: ServerKind) {
    const WRITES: usize = 500;
    const VALUE_BYTES: usize = 8 * 1024;
    let cluster = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let writes = Writes::default();
    let mut w = Writer::connect(&cluster.endpoints(), &writes).await;
    w.put("/c/first", "x").await;
    let mut args = WatchArgs::prefix("/c/", writes.last() + 1);
    args.small_window = true;
    let mut stream = open(&cluster.endpoint(0), &args).await.unwrap();
    let created = tokio::time::timeout(WAIT, stream.responses.message())
        .await
        .expect("created in time")
        .unwrap()
        .expect("created response");
    assert!(created.created && !created.canceled);
    // The client reads nothing more until the compaction is done.
    let value = "v".repeat(VALUE_BYTES);
    for i in 0..WRITES {
        w.put(&format!("/c/k{}", i % 20), &value).await;
    }
    let compact_rev = writes.last();
    w.client
        .compact(compact_rev, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    let mut responses = Vec::new();
    let cancel = loop {
        let resp = tokio::time::timeout(WAIT, stream.responses.message())
            .await
            .expect("a response in time")
            .expect("no stream error")
            .expect("the stream stays open until the cancel");
        if resp.canceled {
            break resp;
        }
        assert!(
            resp.events.iter().all(|e| rev(e) < compact_rev),
            "a lagging watcher got events at the compaction revision"
        );
        responses.push(resp.events);
    };
    assert_eq!(
        cancel.compact_revision,
        compact_rev,
        "cancel: {cancel:?}; events received up to {:?}",
        responses.iter().flatten().last().map(rev)
    );
    let got_until = responses
        .iter()
        .flatten()
        .last()
        .map_or(args.start_rev - 1, rev);
    assert!(
        got_until < compact_rev - 1,
        "the watcher did not lag (received up to {got_until})"
    );
    // What arrived before the cancel is the history's prefix, without gap or duplicate.
    check(&writes.history(), &args, &[responses], got_until);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_cancels_a_lagging_watcher_with_the_compaction_revision() {
    compaction_cancels_a_lagging_watcher(ServerKind::Minietcd).await;
}

/// The same scenario against etcd 3.4: the behaviour matched above is etcd's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_cancels_a_lagging_watcher_with_the_compaction_revision() {
    compaction_cancels_a_lagging_watcher(ServerKind::Etcd).await;
}

/// A client that half-closes its request side after creating a watch keeps receiving events
/// (etcd's recvLoop returns quietly on EOF and the stream lives until the client goes away).
async fn half_closed_stream_keeps_delivering(kind: ServerKind) {
    let cluster = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let writes = Writes::default();
    let mut w = Writer::connect(&cluster.endpoints(), &writes).await;
    w.put("/h/first", "x").await;
    let args = WatchArgs::prefix("/h/", writes.last() + 1);
    let RawStream {
        _requests: requests,
        mut responses,
    } = open(&cluster.endpoint(0), &args).await.unwrap();
    let created = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("created in time")
        .unwrap()
        .expect("created response");
    assert!(created.created);
    drop(requests);
    w.mixed("/h/", 20, "a").await;
    let history = writes.history();
    let want = expected_count(&history, &args.spec());
    let mut got = Vec::new();
    while got.iter().map(Vec::len).sum::<usize>() < want {
        let resp = tokio::time::timeout(WAIT, responses.message())
            .await
            .expect("events in time")
            .expect("no stream error")
            .expect("the half-closed stream stays open");
        got.push(resp.events);
    }
    check(&history, &args, &[got], writes.last());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_watch_stream_keeps_delivering() {
    half_closed_stream_keeps_delivering(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_half_closed_watch_stream_keeps_delivering() {
    half_closed_stream_keeps_delivering(ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_follower_sees_writes_made_through_the_leader() {
    let cluster = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = cluster.wait_ready().await;
    let writes = Writes::default();
    let mut w = Writer::connect(&[cluster.endpoint(leader)], &writes).await;
    w.put("/f/before", "x").await;
    let start = writes.last() + 1;
    let f0 = cluster.endpoint(follower(&cluster, leader, 0));
    let f1 = cluster.endpoint(follower(&cluster, leader, 1));
    let prefix = Recorder::start(&f0, WatchArgs::prefix("/f/", start), None).await;
    let mut key_args = WatchArgs::range("/f/k3", "", start);
    key_args.prev_kv = true;
    let key = Recorder::start(&f1, key_args, None).await;
    w.mixed("/f/", 120, "l").await;
    let history = writes.history();
    prefix.wait_and_check(&history, writes.last()).await;
    key.wait_and_check(&history, writes.last()).await;
}

/// A member that loses quorum closes its require-leader streams with "etcdserver: no leader"
/// and refuses new ones, while a plain watch on it stays open and gets events again once
/// quorum is back.
async fn require_leader_without_quorum(kind: ServerKind) {
    let mut cluster = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
    let leader = cluster.wait_ready().await;
    let lone = follower(&cluster, leader, 0);
    let ep = cluster.endpoint(lone);
    let writes = Writes::default();
    let mut w = Writer::connect(&cluster.endpoints(), &writes).await;
    w.put("/q/first", "x").await;
    let start = writes.last() + 1;
    let mut rl_args = WatchArgs::prefix("/q/", start);
    rl_args.require_leader = true;
    let require_leader = Recorder::start(&ep, rl_args.clone(), None).await;
    let plain = Recorder::start(&ep, WatchArgs::prefix("/q/", start), None).await;
    w.mixed("/q/", 10, "a").await;
    let history = writes.history();
    require_leader.wait_and_check(&history, writes.last()).await;
    plain.wait_and_check(&history, writes.last()).await;

    let others: Vec<usize> = (0..3).filter(|i| *i != lone).collect();
    for i in &others {
        cluster.kill(*i);
    }
    let why = wait_until_async("the require-leader stream to close", WAIT, || async {
        require_leader.ended()
    })
    .await;
    assert!(why.contains("etcdserver: no leader"), "closed with {why:?}");
    // A new require-leader watch is refused the same way.
    match Recorder::try_start(&ep, rl_args.clone(), None).await {
        Err(s) => assert!(s.message().contains("etcdserver: no leader"), "{s:?}"),
        Ok(r) => {
            let why = wait_until_async("the new require-leader stream to close", WAIT, || async {
                r.ended()
            })
            .await;
            assert!(why.contains("etcdserver: no leader"), "closed with {why:?}");
            assert_eq!(r.count(), 0, "a refused watch got events");
        }
    }
    assert_eq!(plain.ended(), None, "the plain watch must stay open");

    for i in &others {
        cluster.restart(*i);
    }
    cluster.wait_ready().await;
    let mut w = Writer::connect(&cluster.endpoints(), &writes).await;
    w.mixed("/q/", 10, "b").await;
    let history = writes.history();
    plain.wait_and_check(&history, writes.last()).await;
    assert_eq!(plain.ended(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_leader_watch_on_a_member_cut_off_from_quorum_gets_no_leader() {
    require_leader_without_quorum(ServerKind::Minietcd).await;
}

/// The same scenario against etcd 3.4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_require_leader_watch_on_a_member_cut_off_from_quorum_gets_no_leader() {
    require_leader_without_quorum(ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restored_from_a_snapshot_serves_history_from_an_old_revision() {
    const WRITERS: usize = 32;
    // A follower further behind than the entries a member keeps past its snapshot (etcd's
    // snapshot catch-up entries, 10 here) gets a snapshot. Concurrent writes share Raft
    // entries, so the write count is not the entry count: 1,200 writes are still hundreds of
    // entries, several snapshots' worth.
    const WRITES: usize = 1_200;
    let mut cluster = Cluster::start_ready(
        ClusterConfig::new(ServerKind::Minietcd, 3)
            .arg("--snapshot-count=100")
            .arg("--experimental-snapshot-catchup-entries=10"),
    )
    .await;
    let leader = cluster.wait_ready().await;
    let lagging = follower(&cluster, leader, 0);
    let writes = Writes::default();
    let w = Writer::connect(&[cluster.endpoint(leader)], &writes).await;
    let mut w0 = w.clone();
    w0.mixed("/s/", 30, "before").await;
    cluster.kill(lagging);
    let tasks: Vec<JoinHandle<()>> = (0..WRITERS)
        .map(|t| {
            let mut w = w.clone();
            tokio::spawn(async move {
                for i in 0..WRITES / WRITERS {
                    w.put(&format!("/s/w{t}/k{}", i % 3), &i.to_string()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // The leader purges its log behind a snapshot only while no replication reads it, and it
    // retries after progress: keep a trickle of writes going until it has purged past what
    // the lagging follower holds (at most the 30 writes before the kill, plus set-up entries).
    let leader_log = cluster.dir().join(format!("m{leader}.log"));
    let mut trickle = w.clone();
    let purged = wait_until_async("the leader to purge its log", WAIT, || {
        let leader_log = leader_log.clone();
        let mut trickle = trickle.clone();
        async move {
            let log = std::fs::read_to_string(&leader_log).unwrap_or_default();
            let furthest = log
                .lines()
                .filter(|l| l.contains("raft log purged"))
                .filter_map(|l| {
                    l.split("index: ")
                        .nth(1)?
                        .split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .max();
            if furthest.is_some_and(|i| i > 60) {
                return Some(());
            }
            trickle.put("/s/trickle", "x").await;
            None
        }
    });
    purged.await;
    trickle.put("/s/trickle", "y").await;
    let last = writes.last();
    cluster.restart(lagging);
    let ep = cluster.endpoint(lagging);
    let caught_up = wait_until_async("the restarted follower to catch up", WAIT, || async {
        let mut c = etcd_client::Client::connect([format!("http://{ep}")], None)
            .await
            .ok()?;
        let resp = c
            .get("/s/", Some(GetOptions::new().with_serializable()))
            .await
            .ok()?;
        (resp.header()?.revision() >= last).then_some(())
    });
    caught_up.await;
    let log =
        std::fs::read_to_string(cluster.dir().join(format!("m{lagging}.log"))).unwrap_or_default();
    // The members log at info unless RUST_LOG (which they inherit) says otherwise; the proof
    // that a snapshot was installed is its info line.
    let logs_at_info = std::env::var("RUST_LOG").map_or(true, |v| {
        ["info", "debug", "trace"].iter().any(|l| v.contains(l))
    });
    if logs_at_info && !log.contains("snapshot installed") {
        let snapshot_lines: Vec<String> = (0..3)
            .flat_map(|i| {
                std::fs::read_to_string(cluster.dir().join(format!("m{i}.log")))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("snapshot") || l.contains("purge"))
                    .map(|l| format!("m{i}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        panic!(
            "member {lagging} caught up without a snapshot install; snapshot lines: {snapshot_lines:#?}"
        );
    }
    let history = writes.history();
    let all = Recorder::start(&ep, WatchArgs::prefix("/s/", 2), None).await;
    let one = Recorder::start(&ep, WatchArgs::prefix("/s/w3/", 100), None).await;
    all.wait_and_check(&history, last).await;
    one.wait_and_check(&history, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_guarantees_hold_for_concurrent_writers_and_watchers_on_three_members() {
    const WRITERS: usize = 3;
    const OPS: usize = 150;
    const RESUME_AFTER: usize = 120;
    let cluster = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = cluster.wait_ready().await;
    let (f0, f1) = (
        cluster.endpoint(follower(&cluster, leader, 0)),
        cluster.endpoint(follower(&cluster, leader, 1)),
    );
    let writes = Writes::default();
    let w = Writer::connect(&cluster.endpoints(), &writes).await;
    w.clone().put("/g/start", "x").await;
    let start = writes.last() + 1;
    let all_f0 = Recorder::start(&f0, WatchArgs::prefix("/g/", start), None).await;
    let range_f1 = Recorder::start(&f1, WatchArgs::range("/g/w0/", "/g/w2/", start), None).await;
    let mut prev_args = WatchArgs::prefix("/g/", start);
    prev_args.prev_kv = true;
    let prev_leader = Recorder::start(&cluster.endpoint(leader), prev_args, None).await;
    let first_half =
        Recorder::start(&f0, WatchArgs::prefix("/g/", start), Some(RESUME_AFTER)).await;

    let tasks: Vec<JoinHandle<()>> = (0..WRITERS)
        .map(|t| {
            let mut w = w.clone();
            tokio::spawn(async move { w.mixed(&format!("/g/w{t}/"), OPS, &format!("w{t}")).await })
        })
        .collect();
    // Resumed: once the first stream has stopped, a watch on another member from the next
    // revision.
    wait_until_async("the first half to stop", WAIT, || async {
        first_half.ended()
    })
    .await;
    let first_events = first_half.events();
    let next = first_events.iter().flatten().last().map(rev).unwrap() + 1;
    let second_half = Recorder::start(&f1, WatchArgs::prefix("/g/", next), None).await;
    for t in tasks {
        t.await.unwrap();
    }
    let history = writes.history();
    let last = writes.last();
    for r in [&all_f0, &range_f1, &prev_leader, &second_half] {
        r.wait_and_check(&history, last).await;
    }
    let resumed = WatchArgs::prefix("/g/", start);
    check(
        &history,
        &resumed,
        &[first_events, second_half.events()],
        last,
    );
    // Atomic for real: some responses carried a txn's three events at one revision.
    assert!(all_f0
        .events()
        .iter()
        .any(|r| r.len() >= 3 && r.iter().all(|e| rev(e) == rev(&r[0]))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_against_a_minietcd_process() {
    use crate::watch_etcdctl::{collect_until, etcdctl_watch};
    let cluster = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let ep = cluster.endpoint(0);
    let writes = Writes::default();
    let mut w = Writer::connect(&cluster.endpoints(), &writes).await;
    w.put("pre/0", "x").await;
    w.put("pre/1", "x").await;
    let start = writes.last(); // a past revision: --rev replays from it
    w.put("pre/0", "y").await;
    w.delete("pre/1", "").await;
    let start_s = start.to_string();
    let (_prefix, prefix_rx) =
        etcdctl_watch(&ep, &["--prefix", "pre/", "--rev", &start_s, "--prev-kv"]);
    let (_range, range_rx) = etcdctl_watch(&ep, &["r1", "r5", "--rev", &start_s]);
    for i in 0..10 {
        w.put(&format!("pre/{}", i % 3), &i.to_string()).await;
        w.put(&format!("r{}", i % 7), "v").await;
        if i % 4 == 0 {
            w.delete("pre/", "pre0").await;
            w.delete("r1", "r3").await;
        }
    }
    let end = w
        .txn_puts(&[("pre/end".into(), "e".into()), ("r2".into(), "e".into())])
        .await;
    let got = tokio::task::spawn_blocking(move || {
        (
            collect_until(&prefix_rx, end),
            collect_until(&range_rx, end),
        )
    })
    .await
    .unwrap();
    let history = writes.history();
    let mut prefix_args = WatchArgs::prefix("pre/", start);
    prefix_args.prev_kv = true;
    check(&history, &prefix_args, std::slice::from_ref(&got.0), end);
    check(
        &history,
        &WatchArgs::range("r1", "r5", start),
        &[got.1],
        end,
    );
    assert!(
        got.0.iter().flatten().any(|e| e.r#type == 1),
        "deletes seen"
    );
}
