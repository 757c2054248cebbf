//! The gRPC Watch service (etcd's `v3rpc/watch.go`): one task per stream multiplexes the
//! client's requests, the store's deliveries and the timers, so that a created or canceled
//! response is always written before any event of that watcher, with no pending buffer.
//!
//! Stream life: create / cancel / progress requests are applied to the stream's
//! [`StreamWatchers`]; deliveries from the store become responses (prev_kv stripped unless
//! asked, fragmented when asked); progress_notify watchers get an empty response after a
//! quiet `progress_interval`; the stream ends when the client goes away or its requests fail
//! (every watcher is then removed; a half-close alone keeps the stream, as in etcd) or, for
//! a `hasleader: true` stream, when the member has been without a leader for an election
//! timeout.

use openraft::async_runtime::watch::WatchReceiver;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{ResponseHeader, WatchRequest, WatchResponse};
use crate::watch::stream::{fill_missing_prev_kvs, fragment, to_response, StreamWatchers};
use crate::watch::watcher::WatcherId;
use crate::watch::{Delivery, WatchableStore, CHAN_BUF_LEN};

/// gRPC metadata key of clientv3's `WithRequireLeader`.
pub const REQUIRE_LEADER_KEY: &str = "hasleader";

/// etcd's error for a member without a leader.
pub const NO_LEADER: &str = "etcdserver: no leader";
/// etcd's error for requests and streams cut short by the member stopping.
pub const SERVER_STOPPED: &str = "etcdserver: server stopped";

/// Responses buffered between a stream's task and tonic; beyond it the task waits, its
/// delivery channel fills and its watchers become victims (the store never waits).
pub const OUT_BUF_LEN: usize = 16;

/// How often a pending WatchProgressRequest re-checks whether the stream's watchers are all
/// synced.
pub const PROGRESS_RETRY: Duration = Duration::from_millis(50);

/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

/// etcd's default `--max-request-bytes` (1.5 MiB), the fragment threshold.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Fills response headers: cluster id, member id and raft term come from the node, the
/// revision from the store.
pub trait HeaderSource: Send + Sync + 'static {
    /// A header reporting `revision`.
    fn header(&self, revision: i64) -> ResponseHeader;
}

impl<F> HeaderSource for F
where
    F: Fn(i64) -> ResponseHeader + Send + Sync + 'static,
{
    fn header(&self, revision: i64) -> ResponseHeader {
        self(revision)
    }
}

/// Tunables of the Watch service.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Quiet period after which a progress_notify watcher gets a progress response.
    pub progress_interval: Duration,
    /// Responses above this size are fragmented for watchers that asked.
    pub max_request_bytes: usize,
    /// How long a require-leader stream survives without a leader. etcd 3.4 samples the
    /// leader once per election timeout and cancels after 3 leaderless samples; pass
    /// `3 * election timeout` for that, or one election timeout to fail faster.
    pub election_timeout: Duration,
    /// Turns true when the member stops: every stream then ends with etcd's
    /// `etcdserver: server stopped` (Unavailable), so that clients resume elsewhere and the
    /// server's graceful shutdown is not held up by streams that never end.
    pub stopping: Option<watch::Receiver<bool>>,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            election_timeout: Duration::from_millis(1000),
            stopping: None,
        }
    }
}

/// The Watch service.
pub struct WatchService {
    /// The watchers' home.
    store: Arc<WatchableStore>,
    /// Header maker.
    header: Arc<dyn HeaderSource>,
    /// The current leader as this member sees it (None: no leader).
    leader: watch::Receiver<Option<u64>>,
    /// Tunables.
    config: WatchConfig,
    /// The auth store, when creates are checked (see [`super::watch_auth`]).
    auth: Option<Arc<crate::storage::MvccStore>>,
}

impl WatchService {
    /// Checks every create against `store`'s users and permissions.
    pub fn with_auth(mut self, store: Arc<crate::storage::MvccStore>) -> Self {
        self.auth = Some(store);
        self
    }

    /// A service over `store`; `leader` tracks the member's view of the leader.
    pub fn new(
        store: Arc<WatchableStore>,
        header: Arc<dyn HeaderSource>,
        leader: watch::Receiver<Option<u64>>,
        config: WatchConfig,
    ) -> Self {
        WatchService {
            store,
            header,
            leader,
            config,
            auth: None,
        }
    }
}

/// Whether the request carries clientv3's `WithRequireLeader` metadata.
pub fn requires_leader(md: &MetadataMap) -> bool {
    md.get(REQUIRE_LEADER_KEY)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "true")
}

/// The check etcd applies to every request carrying `hasleader: true` (unary ones too):
/// refused with "etcdserver: no leader" while the member has no leader.
pub fn check_require_leader(
    md: &MetadataMap,
    leader: &watch::Receiver<Option<u64>>,
) -> Result<(), Status> {
    if requires_leader(md) && leader.borrow().is_none() {
        return Err(Status::unavailable(NO_LEADER));
    }
    Ok(())
}

/// The leader a member's metrics show, as etcd sees it with CheckQuorum: a leader of several
/// voters that has heard from no quorum for `election_timeout` (or not yet since it was
/// elected) is no leader. openraft keeps such a leader in place but refuses it new writes.
pub fn effective_leader(
    m: &openraft::RaftMetrics<crate::raft::types::TypeConfig>,
    election_timeout: Duration,
) -> Option<u64> {
    let leader = m.current_leader?;
    if leader != m.id || m.membership_config.membership().voter_ids().count() <= 1 {
        return Some(leader);
    }
    let acked = m.last_quorum_acked.as_ref()?;
    (openraft::Instant::elapsed(&**acked) <= election_timeout).then_some(leader)
}

/// The leader as a member sees it (see [`effective_leader`]): what [`WatchService`] takes.
/// Re-evaluated on every change of the leader or membership (`server`) and every tenth of
/// `election_timeout` (a leader cut off from its quorum sees no change), reading the full
/// `metrics`, which change at every write and so are only read, never waited on. The
/// forwarding task ends when the server metrics channel closes (Raft shut down), after
/// publishing "no leader".
pub fn leader_from_metrics(
    mut server: crate::raft::types::ServerMetricsReceiver,
    metrics: crate::raft::types::MetricsReceiver,
    election_timeout: Duration,
) -> watch::Receiver<Option<u64>> {
    let (tx, rx) = watch::channel(effective_leader(
        &metrics.borrow_watched(),
        election_timeout,
    ));
    let mut tick = tokio::time::interval((election_timeout / 10).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = server.changed() => if changed.is_err() { break },
                _ = tick.tick() => {}
            }
            let leader = effective_leader(&metrics.borrow_watched(), election_timeout);
            tx.send_if_modified(|cur| {
                let changed = *cur != leader;
                *cur = leader;
                changed
            });
        }
        tx.send_replace(None);
    });
    rx
}

/// Resolves once the member is stopping; never without a stop signal.
async fn member_stopping(stopping: &mut Option<watch::Receiver<bool>>) {
    match stopping {
        Some(rx) => {
            if rx.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        mut request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        check_require_leader(request.metadata(), &self.leader)?;
        let auth_enabled = self.auth.as_ref().is_some_and(|store| store.auth_enabled());
        super::auth_check::mark_cert_user(&mut request, auth_enabled);
        let leader = requires_leader(request.metadata()).then(|| self.leader.clone());
        let (out_tx, out_rx) = mpsc::channel(OUT_BUF_LEN);
        let (tx, rx) = mpsc::channel(CHAN_BUF_LEN);
        let stream = WatchStreamTask {
            watchers: StreamWatchers::new(self.store.clone(), tx),
            deliveries: rx,
            out: out_tx,
            header: self.header.clone(),
            config: self.config.clone(),
            leader,
            auth: self
                .auth
                .clone()
                .map(|s| super::watch_auth::WatchAuth::new(s, request.metadata())),
        };
        tokio::spawn(
            stream
                .run(request.into_inner())
                .instrument(tracing::debug_span!("watch_stream")),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

/// Why a stream task stopped.
enum Stop {
    /// The client went away (or its request stream failed).
    Client,
    /// The member lost its leader for too long.
    NoLeader,
    /// The member is stopping.
    Server,
}

/// One stream's task state.
struct WatchStreamTask {
    /// The stream's watchers (dropped with the task: every watcher goes with the stream).
    watchers: StreamWatchers,
    /// Deliveries from the store.
    deliveries: mpsc::Receiver<Delivery>,
    /// Responses to tonic.
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    /// Header maker.
    header: Arc<dyn HeaderSource>,
    /// Tunables.
    config: WatchConfig,
    /// Present for require-leader streams.
    leader: Option<watch::Receiver<Option<u64>>>,
    /// Checks creates against the caller's permissions.
    auth: Option<super::watch_auth::WatchAuth>,
}

impl WatchStreamTask {
    async fn run(mut self, mut inbound: Streaming<WatchRequest>) {
        let mut progress = tokio::time::interval_at(
            Instant::now() + self.config.progress_interval,
            self.config.progress_interval,
        );
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When a pending WatchProgressRequest is next re-checked (an absolute deadline, so a
        // busy stream cannot postpone it forever).
        let mut progress_retry_at: Option<Instant> = None;
        let mut no_leader_since: Option<Instant> = None;
        // A client that half-closes keeps its stream: as in etcd, its watchers go on
        // delivering until the client goes away; only new requests are no longer read.
        let mut inbound_open = true;
        let stop = loop {
            let leaderless_deadline = no_leader_since.map(|t| t + self.config.election_timeout);
            tokio::select! {
                biased;
                req = inbound.next(), if inbound_open => match req {
                    Some(Ok(req)) => {
                        if !self.handle_request(req, &mut progress_retry_at).await {
                            break Stop::Client;
                        }
                    }
                    Some(Err(status)) => {
                        tracing::debug!(%status, "watch stream receive error");
                        break Stop::Client;
                    }
                    None => {
                        tracing::debug!("watch stream half-closed by the client");
                        inbound_open = false;
                    }
                },
                Some(d) = self.deliveries.recv() => {
                    if !self.deliver(d).await {
                        break Stop::Client;
                    }
                }
                _ = progress.tick() => self.watchers.progress_tick(),
                _ = sleep_until_opt(progress_retry_at) => {
                    progress_retry_at = retry_progress(self.watchers.progress_all());
                }
                changed = changed_leader(&mut self.leader) => match changed {
                    Some(Some(_)) => no_leader_since = None,
                    Some(None) => {
                        no_leader_since.get_or_insert_with(Instant::now);
                    }
                    None => {}
                },
                _ = sleep_until_opt(leaderless_deadline) => break Stop::NoLeader,
                _ = member_stopping(&mut self.config.stopping) => break Stop::Server,
                _ = self.out.closed() => break Stop::Client,
            }
        };
        match stop {
            Stop::NoLeader => {
                tracing::info!("closing require-leader watch stream: no leader");
                let _ = self.out.send(Err(Status::unavailable(NO_LEADER))).await;
            }
            Stop::Server => {
                tracing::debug!("closing watch stream: member stopping");
                let _ = self
                    .out
                    .send(Err(Status::unavailable(SERVER_STOPPED)))
                    .await;
            }
            Stop::Client => {}
        }
        // Dropping `self.watchers` cancels every watcher of the stream.
    }

    /// Applies one client request; false when the client is gone.
    async fn handle_request(
        &mut self,
        req: WatchRequest,
        progress_retry_at: &mut Option<Instant>,
    ) -> bool {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => {
                if let Some(reason) = self.auth.as_ref().and_then(|a| a.refusal(&c)) {
                    let resp = WatchResponse {
                        header: Some(self.header.header(self.watchers.store().rev())),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: reason,
                        ..Default::default()
                    };
                    return self.send(resp).await;
                }
                let mut resp = self.watchers.create(c);
                tracing::debug!(
                    watch_id = resp.watch_id,
                    canceled = resp.canceled,
                    "watch created"
                );
                self.fill_header(&mut resp);
                self.send(resp).await
            }
            Some(RequestUnion::CancelRequest(c)) => {
                if !self.watchers.cancel(c.watch_id) {
                    return true;
                }
                tracing::debug!(watch_id = c.watch_id, "watch canceled");
                let resp = WatchResponse {
                    header: Some(self.header.header(self.watchers.store().rev())),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..Default::default()
                };
                self.send(resp).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                *progress_retry_at = retry_progress(self.watchers.progress_all());
                true
            }
            None => true,
        }
    }

    /// Sends a delivery from the store; false when the client is gone.
    async fn deliver(&mut self, d: Delivery) -> bool {
        // A stream-wide progress answer is told apart by its store-level watcher, not by its
        // watch id: a client may choose -1 as a watch id, which etcd 3.4 accepts and serves
        // as any other.
        if d.watcher == WatcherId::STREAM.0 {
            let resp = WatchResponse {
                header: Some(self.header.header(d.revision)),
                watch_id: -1,
                ..Default::default()
            };
            return self.send(resp).await;
        }
        let Some(opts) = self.watchers.accept(&d) else {
            // A canceled watcher's leftovers.
            return true;
        };
        let mut resp = to_response(&d, opts.prev_kv);
        if opts.prev_kv {
            fill_missing_prev_kvs(&mut resp, self.watchers.store());
        }
        self.fill_header(&mut resp);
        if opts.fragment {
            for part in fragment(resp, self.config.max_request_bytes) {
                if !self.send(part).await {
                    return false;
                }
            }
            true
        } else {
            self.send(resp).await
        }
    }

    fn fill_header(&self, resp: &mut WatchResponse) {
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = Some(self.header.header(rev));
    }

    async fn send(&self, resp: WatchResponse) -> bool {
        self.out.send(Ok(resp)).await.is_ok()
    }
}

/// The next leader change of a require-leader stream (never, for other streams).
async fn changed_leader(leader: &mut Option<watch::Receiver<Option<u64>>>) -> Option<Option<u64>> {
    match leader {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The next re-check of a progress request, unless it was just answered.
fn retry_progress(answered: bool) -> Option<Instant> {
    (!answered).then(|| Instant::now() + PROGRESS_RETRY)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_leader_metadata_is_refused_only_without_leader() {
        let (tx, rx) = watch::channel(Some(7));
        let mut md = MetadataMap::new();
        assert!(check_require_leader(&md, &rx).is_ok());
        md.insert(REQUIRE_LEADER_KEY, "true".parse().unwrap());
        assert!(requires_leader(&md));
        assert!(check_require_leader(&md, &rx).is_ok());
        tx.send_replace(None);
        let err = check_require_leader(&md, &rx).unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (tonic::Code::Unavailable, NO_LEADER)
        );
        let plain = MetadataMap::new();
        assert!(check_require_leader(&plain, &rx).is_ok());
    }

    /// The server metrics a Raft with full metrics `m` publishes beside them.
    fn server_of(
        m: &openraft::RaftMetrics<crate::raft::types::TypeConfig>,
    ) -> openraft::metrics::RaftServerMetrics<crate::raft::types::TypeConfig> {
        openraft::metrics::RaftServerMetrics {
            id: m.id,
            vote: m.vote,
            state: m.state,
            current_leader: m.current_leader,
            membership_config: m.membership_config.clone(),
            committed_membership_config: m.membership_config.clone(),
        }
    }

    #[tokio::test]
    async fn leader_follows_raft_metrics() {
        use openraft::async_runtime::watch::WatchSender;
        use openraft::type_config::TypeConfigExt;
        let initial = openraft::RaftMetrics::<crate::raft::types::TypeConfig>::new_initial(1);
        let (stx, srx) = crate::raft::types::TypeConfig::watch_channel(server_of(&initial));
        let (mtx, mrx) = crate::raft::types::TypeConfig::watch_channel(initial);
        // As openraft does: the full metrics change, then the server metrics follow.
        let set_leader = |leader: Option<u64>| {
            mtx.send_if_modified(|m| {
                m.current_leader = leader;
                true
            });
            let server = server_of(&mtx.borrow_watched());
            stx.send_if_modified(|s| {
                *s = server;
                true
            });
        };
        let mut leader = leader_from_metrics(srx, mrx, Duration::from_secs(1));
        assert_eq!(*leader.borrow(), None);
        set_leader(Some(3));
        leader.changed().await.unwrap();
        assert_eq!(*leader.borrow_and_update(), Some(3));
        set_leader(None);
        leader.changed().await.unwrap();
        assert_eq!(*leader.borrow_and_update(), None);
        set_leader(Some(2));
        leader.changed().await.unwrap();
        drop(stx);
        leader.changed().await.unwrap();
        assert_eq!(*leader.borrow(), None, "no leader once Raft is gone");
    }

    /// etcd's CheckQuorum: a leader of three voters counts as leader only while a quorum
    /// acknowledged it within an election timeout; the check runs without metrics changes.
    #[tokio::test]
    async fn a_leader_without_a_recent_quorum_ack_is_no_leader() {
        use openraft::type_config::TypeConfigExt;
        use std::collections::{BTreeMap, BTreeSet};
        let mut m = openraft::RaftMetrics::<crate::raft::types::TypeConfig>::new_initial(1);
        let nodes: BTreeMap<u64, crate::raft::types::MemberNode> =
            (1..=3).map(|i| (i, Default::default())).collect();
        let membership = openraft::Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).unwrap();
        m.membership_config =
            std::sync::Arc::new(openraft::StoredMembership::new(None, membership));
        m.current_leader = Some(1);
        let timeout = Duration::from_millis(200);
        assert_eq!(effective_leader(&m, timeout), None, "never acknowledged");
        m.last_quorum_acked = Some(openraft::metrics::SerdeInstant::new(
            crate::raft::types::TypeConfig::now(),
        ));
        assert_eq!(effective_leader(&m, timeout), Some(1));
        let mut follower = m.clone();
        follower.id = 2;
        follower.last_quorum_acked = None;
        assert_eq!(
            effective_leader(&follower, timeout),
            Some(1),
            "a follower trusts its leader"
        );

        let (stx, srx) = crate::raft::types::TypeConfig::watch_channel(server_of(&m));
        let (mtx, mrx) = crate::raft::types::TypeConfig::watch_channel(m);
        let mut leader = leader_from_metrics(srx, mrx, timeout);
        assert_eq!(*leader.borrow_and_update(), Some(1));
        // No metrics change: the acknowledgement just grows old.
        tokio::time::timeout(Duration::from_secs(5), leader.changed())
            .await
            .expect("re-evaluated without a metrics change")
            .unwrap();
        assert_eq!(*leader.borrow(), None);
        drop((stx, mtx));
    }
}
