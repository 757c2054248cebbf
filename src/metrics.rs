//! The member's Prometheus metrics, under etcd's names, served on `/metrics`.
//!
//! Counters and histograms that code paths move (WAL fsync, backend commit, proposals, gRPC
//! calls) are process-wide and updated by one-line calls of the functions below, so that
//! raft and storage code stays free of metric plumbing. Gauges that describe the member's
//! state (leader, applied index, db size, watchers) are read when `/metrics` is scraped, by
//! [`MetricsSource::gather`].

use openraft::async_runtime::watch::WatchReceiver;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokio::sync::watch;

use crate::watch::WatchableStore;

/// Every metric this member exports.
struct Metrics {
    registry: Registry,
    has_leader: IntGauge,
    leader_changes: IntCounter,
    proposals_committed: IntGauge,
    proposals_applied: IntGauge,
    proposals_pending: IntGauge,
    proposals_failed: IntCounter,
    db_total_size: IntGauge,
    wal_fsync: Histogram,
    backend_commit: Histogram,
    watchers: IntGauge,
    grpc_started: IntCounterVec,
    grpc_handled: IntCounterVec,
    peer_rtt: HistogramVec,
}

/// etcd's buckets for disk latencies: 1 ms to 8 s, doubling.
fn disk_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 14).unwrap_or_default()
}

/// etcd's buckets for peer round trips: 0.1 ms to 3.2768 s, doubling.
fn rtt_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn histogram(name: &str, help: &str) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(disk_buckets()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            leader_changes: counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            db_total_size: gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            wal_fsync: histogram(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
            ),
            backend_commit: histogram(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
            ),
            watchers: gauge(
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            ),
            grpc_started: counter_vec(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                &["grpc_type", "grpc_service", "grpc_method"],
            ),
            grpc_handled: counter_vec(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            ),
            peer_rtt: HistogramVec::new(
                HistogramOpts::new(
                    "etcd_network_peer_round_trip_time_seconds",
                    "Round-Trip-Time histogram between peers",
                )
                .buckets(rtt_buckets()),
                &["To"],
            )
            .unwrap_or_else(|e| panic!("metric etcd_network_peer_round_trip_time_seconds: {e}")),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.has_leader.clone()),
            Box::new(m.leader_changes.clone()),
            Box::new(m.proposals_committed.clone()),
            Box::new(m.proposals_applied.clone()),
            Box::new(m.proposals_pending.clone()),
            Box::new(m.proposals_failed.clone()),
            Box::new(m.db_total_size.clone()),
            Box::new(m.wal_fsync.clone()),
            Box::new(m.backend_commit.clone()),
            Box::new(m.watchers.clone()),
            Box::new(m.grpc_started.clone()),
            Box::new(m.grpc_handled.clone()),
            Box::new(m.peer_rtt.clone()),
        ];
        for c in collectors {
            // Names are distinct constants: a clash is a programming error caught by tests.
            if let Err(e) = m.registry.register(c) {
                tracing::error!(error = %e, "metric not registered");
            }
        }
        m
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Runs the WAL's fdatasync `f` and records how long it took.
pub fn wal_fsync<T>(f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    metrics().wal_fsync.observe(started.elapsed().as_secs_f64());
    out
}

/// Runs a backend (sled) commit `f` and records how long it took.
pub fn backend_commit<T>(f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    metrics()
        .backend_commit
        .observe(started.elapsed().as_secs_f64());
    out
}

/// A proposal waiting to be committed and applied: counted in `proposals_pending` while it
/// lives; counted as failed unless [`Proposal::finish`]ed with success.
pub struct Proposal {
    done: bool,
}

/// Starts counting one proposal.
pub fn proposal() -> Proposal {
    metrics().proposals_pending.inc();
    Proposal { done: false }
}

impl Proposal {
    /// Ends the proposal with its result, which is passed through.
    pub fn finish<T, E>(mut self, r: Result<T, E>) -> Result<T, E> {
        self.done = r.is_ok();
        r
    }
}

impl Drop for Proposal {
    fn drop(&mut self) {
        let m = metrics();
        m.proposals_pending.dec();
        if !self.done {
            m.proposals_failed.inc();
        }
    }
}

/// Records a round trip to peer `to` (labelled with its id in hex, as etcd's `types.ID`).
pub fn peer_round_trip(to: u64, rtt: std::time::Duration) {
    metrics()
        .peer_rtt
        .with_label_values(&[&format!("{to:x}")])
        .observe(rtt.as_secs_f64());
}

/// Counts a gRPC call that started.
pub fn grpc_started(kind: &str, service: &str, method: &str) {
    metrics()
        .grpc_started
        .with_label_values(&[kind, service, method])
        .inc();
}

/// Counts a gRPC call that ended with `code` (Go's spelling, e.g. `OK`, `Unavailable`).
pub fn grpc_handled(kind: &str, service: &str, method: &str, code: &str) {
    metrics()
        .grpc_handled
        .with_label_values(&[kind, service, method, code])
        .inc();
}

/// Counts leader changes as this member sees them (a new leader after none or another), until
/// the leader channel closes.
pub fn watch_leader_changes(
    mut leader: watch::Receiver<Option<u64>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = *leader.borrow_and_update();
            if let Some(l) = now {
                if last != Some(l) {
                    metrics().leader_changes.inc();
                    last = Some(l);
                }
            }
            if leader.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Where the state gauges are read from at each scrape.
#[derive(Clone)]
pub struct MetricsSource {
    /// The leader this member knows of.
    pub leader: watch::Receiver<Option<u64>>,
    /// Raft's indexes.
    pub raft: crate::raft::types::MetricsReceiver,
    /// The MVCC store, for its database's size on disk.
    pub store: Arc<crate::storage::MvccStore>,
    /// The watchers.
    pub watchable: Arc<WatchableStore>,
}

impl MetricsSource {
    /// Whether this member knows a leader that is one (see
    /// [`effective_leader`](crate::server::watch::effective_leader)).
    pub fn has_leader(&self) -> bool {
        self.leader.borrow().is_some()
    }

    /// Refreshes the state gauges and renders every metric in Prometheus' text format.
    pub fn gather(&self) -> String {
        let m = metrics();
        m.has_leader.set(i64::from(self.has_leader()));
        let (applied, committed) = {
            let r = self.raft.borrow_watched();
            let index = |l: Option<&crate::raft::types::LogId>| {
                i64::try_from(l.map_or(0, |l| l.index)).unwrap_or(i64::MAX)
            };
            (
                index(r.last_applied.as_ref()),
                index(r.local_committed.as_ref()),
            )
        };
        m.proposals_applied.set(applied);
        // The commit index this member knows (etcd's raft commit index).
        m.proposals_committed.set(committed.max(applied));
        let size = self.store.size_on_disk().unwrap_or(0);
        m.db_total_size.set(i64::try_from(size).unwrap_or(i64::MAX));
        let watchers = self.watchable.watcher_count();
        m.watchers.set(i64::try_from(watchers).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
