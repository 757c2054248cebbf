//! The one place that wires storage, Raft, watch and the gRPC servers into a running member.
//!
//! [`run`] is a member's whole life as a list of steps, one function each. The links those
//! steps make are the two paths of the crate map (lib.rs):
//!
//! - **A write** (`Put`, `DeleteRange`, `Txn`, `LeaseGrant`, ...) arrives on a client listener
//!   at `server::kv::KvService` (`client_routes`), which validates it and proposes it through
//!   the proposer of the Raft node (`start_raft`); openraft replicates and commits it;
//!   `raft::state_machine` applies it to the [`MvccStore`] (`open_store`) in one sled batch,
//!   then calls its `ApplyObserver`, which `start_raft` sets to the [`WatchableStore`]; only
//!   after that notification is the client answered.
//! - **A watch** arrives on the same listener at `server::watch::WatchService`
//!   (`client_routes`), which registers its watchers in that same [`WatchableStore`]. The
//!   apply step above notifies it with each batch of events, and the service streams them to
//!   the client; a watcher that starts in the past, or falls behind, is caught up from the
//!   store by the watch loops `run` keeps alive beside the store.
//!
//! Peers reach the Raft node through the peer listeners (`serve_peers`); publishing the
//! member's client URLs and lease expiry run beside it (`start_background`).

use openraft::async_runtime::watch::WatchReceiver;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::Router;
use tracing::info;

use crate::config::{ClusterState, Config};
use crate::data_dir::{DataDir, DataDirError, Identity};
use crate::lessor::Lessor;
use crate::logging::lifecycle;
use crate::metrics::MetricsSource;
use crate::pb::etcdserverpb::auth_server::AuthServer;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::pb::v3lockpb::lock_server::LockServer;
use crate::raft::types::{ApplyObserver, MemberNode};
use crate::raft::{RaftNode, RaftSettings, RaftTuning};
use crate::server::access::{self, AccessControl};
use crate::server::admin::Admin;
use crate::server::auth::AuthService;
use crate::server::authority_fix::AuthorityFix;
use crate::server::cluster::ClusterService;
use crate::server::concurrency::LocalClient;
use crate::server::election::ElectionService;
use crate::server::grpc_metrics::GrpcMetricsLayer;
use crate::server::http::{self, HttpState};
use crate::server::kv::KvService;
use crate::server::lease::LeaseService;
use crate::server::lock::LockService;
use crate::server::maintenance::MaintenanceService;
use crate::server::quota::SpaceQuota;
use crate::server::watch::{check_require_leader, leader_from_metrics, WatchConfig, WatchService};
use crate::server::write_batching::WriteBatching;
use crate::server::{HeaderSource, ServerContext};
use crate::storage::MvccStore;
use crate::storage::StorageError;
use crate::tls::MemberTls;
use crate::watch::WatchableStore;

/// gRPC adds framing around a request; etcd allows this much on top of --max-request-bytes
/// before the transport refuses a message, so that the request-size check answers first.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The running gRPC servers, peer and client; each ends with its listener's result.
type Servers = JoinSet<Result<(), tonic::transport::Error>>;

/// Why a node could not start or had to stop: each one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot open the store: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot start the compactor thread: {0}")]
    Compactor(std::io::Error),
    #[error(transparent)]
    Corrupt(#[from] crate::server::corrupt::CorruptError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot join the cluster: {0}")]
    Join(#[from] crate::server::admin::JoinError),
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
}

/// Runs a member until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
    // Certificates, then sockets: bad files and ports in use are the most common start-up
    // failures and must leave nothing behind (no data dir created).
    let tls = MemberTls::load(&cfg)?;
    let listeners = Listeners::bind(&cfg).await?;
    let data_dir = open_data_dir(&cfg, &tls).await?;
    let (store, watchable) = open_store(&data_dir)?;
    store.set_compaction_batch_limit(cfg.compaction_batch_limit);
    // Catch-up of unsynced watchers and victim retries; they stop when this guard drops.
    let _watch_loops = watchable.start();
    let raft = start_raft(&cfg, &data_dir, &tls, store.clone(), watchable.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let services = Services::new(&cfg, &data_dir, store, watchable, &raft, &stop_rx);

    let mut background = start_background(&cfg, &data_dir, &services, &raft, &stop_rx);
    let mut servers = JoinSet::new();
    let peer_tls = tls.peer_listeners(&cfg);
    serve_peers(
        &mut servers,
        listeners.peer,
        peer_tls,
        &raft,
        &services,
        &stop_rx,
    );
    background.wait_for_publish(&cfg).await;
    if cfg.initial_corrupt_check {
        let ctx = &services.ctx;
        let peers =
            crate::server::admin::members_of(ctx.header.metrics().membership_config.membership());
        if let Err(e) = crate::server::corrupt::check_initial(
            &ctx.store,
            ctx.header.member_id(),
            &peers,
            &services.admin,
        )
        .await
        {
            stop(stop_tx, servers, background, &raft, &data_dir).await;
            return Err(NodeError::Corrupt(e));
        }
    }
    let client_tls = tls.client_listeners(&cfg);
    serve_clients(
        &mut servers,
        listeners.client,
        client_tls,
        &services,
        &stop_rx,
    );
    serve_metrics(&mut servers, listeners.metrics, &services, &stop_rx);

    let result = run_until_stopped(shutdown, &cfg, &services.admin, &raft, &mut servers).await;
    stop(stop_tx, servers, background, &raft, &data_dir).await;
    // The store's own database (the shared one is flushed by `stop`): a restart then has
    // nothing to replay.
    let store = services.ctx.store.clone();
    match tokio::task::spawn_blocking(move || store.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "final flush of the store failed"),
        Err(e) => tracing::warn!(error = %e, "final flush of the store failed"),
    }
    result
}

/// The member's sockets, bound before anything else is created.
struct Listeners {
    /// `--listen-client-urls`: the etcd v3 API.
    client: Vec<TcpListener>,
    /// `--listen-peer-urls`: Raft and membership traffic from the other members.
    peer: Vec<TcpListener>,
    /// `--listen-metrics-urls`: `/metrics` and `/health` alone.
    metrics: Vec<TcpListener>,
}

impl Listeners {
    async fn bind(cfg: &Config) -> Result<Listeners, NodeError> {
        Ok(Listeners {
            client: bind_all(&cfg.listen_client_addrs).await?,
            peer: bind_all(&cfg.listen_peer_addrs).await?,
            metrics: bind_all(&cfg.listen_metrics_addrs).await?,
        })
    }
}

async fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, NodeError> {
    let mut out = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Listen { addr, source })?;
        out.push(l);
    }
    Ok(out)
}

/// Streams a peer may reset before the server accepted them, on one peer connection.
const PEER_MAX_RESET_STREAMS: usize = 10_000;

/// How long a starting member waits to publish its attributes before serving clients.
fn publish_gate(election_timeout_ms: u64) -> Duration {
    crate::server::admin::request_timeout(election_timeout_ms)
}

/// Accepted connections with Nagle's algorithm off: gRPC writes small frames and waits for
/// the answer, and Nagle plus delayed ACKs would hold each of them for ~40 ms.
fn incoming(l: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true))
}

/// This member's id and its cluster's: from the flags, except for a member added to a running
/// cluster, whose ids come from the cluster (the flags cannot know the time-salted id
/// MemberAdd gave it).
async fn member_identity(
    cfg: &Config,
    tls: &MemberTls,
    existing: bool,
) -> Result<(u64, u64), NodeError> {
    if existing && DataDir::is_new(&cfg.data_dir)? {
        let others: Vec<Vec<String>> = cfg
            .initial_cluster
            .iter()
            .filter(|(id, _)| **id != cfg.member_id)
            .map(|(_, m)| m.peer_urls.clone())
            .collect();
        let dialer = tls.peer_dialer();
        Ok(
            crate::server::admin::discover_join_identity(&cfg.advertise_peer_urls, &others, dialer)
                .await?,
        )
    } else {
        Ok((cfg.member_id, cfg.cluster_id()))
    }
}

/// Opens the data dir, creating it (with this member's identity) on a first start.
async fn open_data_dir(cfg: &Config, tls: &MemberTls) -> Result<DataDir, NodeError> {
    let existing = cfg.initial_cluster_state == ClusterState::Existing;
    let (member_id, cluster_id) = member_identity(cfg, tls, existing).await?;
    let identity = Identity::new(&cfg.name, member_id, cluster_id, &cfg.initial_cluster_token);
    let data_dir = {
        let path = cfg.data_dir.clone();
        let wal = cfg.wal_dir.clone();
        tokio::task::spawn_blocking(move || {
            DataDir::open_with_wal(&path, identity, !existing, wal.as_deref())
        })
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))??
    };
    let identity = &data_dir.identity;
    info!(
        name = %identity.name,
        member_id = %format!("{:x}", identity.member_id),
        cluster_id = %format!("{:x}", identity.cluster_id),
        data_dir = %data_dir.path.display(),
        wal_dir = %data_dir.wal_dir().display(),
        "starting member"
    );
    Ok(data_dir)
}

/// The MVCC store, and the watchable store that wraps it: the state machine writes the first
/// and notifies the second.
fn open_store(data_dir: &DataDir) -> Result<(Arc<MvccStore>, Arc<WatchableStore>), NodeError> {
    let store = MvccStore::open_dir(&data_dir.path, &data_dir.db).map_err(|e| match e {
        // What sled or the rows say about the key database: the data dir is damaged.
        StorageError::Sled(_) | StorageError::Corrupt(_) => {
            NodeError::DataDir(DataDirError::Damaged {
                path: data_dir.path.clone(),
                reason: format!("its key database: {e}"),
            })
        }
        other => NodeError::Storage(other),
    })?;
    let store = Arc::new(store);
    MvccStore::spawn_compactor(&store).map_err(NodeError::Compactor)?;
    let watchable = WatchableStore::new(store.clone());
    // Apply events carry prev_kv only while a watcher wants it: a put then need not read
    // its key's old row.
    store.fill_prev_kv_on_demand(watchable.prev_kv_demand().clone());
    Ok((store, watchable))
}

/// What Raft needs to know from the flags and the data dir.
fn raft_settings(cfg: &Config, data_dir: &DataDir, tls: &MemberTls) -> RaftSettings {
    let members = cfg
        .initial_cluster
        .iter()
        .map(|(id, m)| {
            let node = MemberNode {
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                // Every founding member must initialize with the same membership; client
                // URLs arrive when each member publishes them.
                client_urls: Vec::new(),
            };
            (*id, node)
        })
        .collect();
    let mut settings = RaftSettings::new(data_dir.identity.member_id, members, data_dir.wal_dir());
    // Not only on a fresh dir: a first start that died after creating the dir but before
    // Raft persisted its initial membership must still form the cluster on the next start.
    // Raft skips this once it has any state, so a restarted member never re-initializes.
    settings.initialize = cfg.initial_cluster_state == ClusterState::New;
    settings.heartbeat_interval_ms = cfg.heartbeat_interval_ms;
    settings.election_timeout_ms = cfg.election_timeout_ms;
    settings.snapshot_count = cfg.snapshot_count;
    settings.sled_data_file = Some(data_dir.sled_data_file());
    settings.snapshot_dir = data_dir.snapshot_dir();
    settings.pre_vote = cfg.pre_vote;
    settings.peer_tls = tls.peer_dialer();
    settings.force_new_cluster = cfg.force_new_cluster;
    settings
}

/// Starts the Raft node: its log, its state machine applying to `store` and notifying
/// `watchable`, and its outbound network.
async fn start_raft(
    cfg: &Config,
    data_dir: &DataDir,
    tls: &MemberTls,
    store: Arc<MvccStore>,
    watchable: Arc<WatchableStore>,
) -> Result<RaftNode, NodeError> {
    let observer: Arc<dyn ApplyObserver> = watchable;
    let tuning = RaftTuning {
        snapshot_catchup_entries: cfg.snapshot_catchup_entries,
        ..RaftTuning::default()
    };
    crate::raft::start_tuned(
        raft_settings(cfg, data_dir, tls),
        tuning,
        data_dir.db.clone(),
        store,
        observer,
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))
}

/// What the gRPC services of a member share.
struct Services {
    /// Store, proposer, header and limits: every client service's view of the member.
    ctx: ServerContext,
    /// Lease expiry (on the leader) and keep-alives.
    lessor: Arc<Lessor>,
    /// Membership changes, publish, and the peer-side admin requests.
    admin: Admin,
    /// Where watch streams register their watchers (and apply notifies them).
    watchable: Arc<WatchableStore>,
    /// Response headers of watch streams.
    watch_header: Arc<dyn crate::server::watch::HeaderSource>,
    /// Settings of every watch stream.
    watch_config: WatchConfig,
    /// The leader this member knows of, for RequireLeader requests and streams.
    leader: watch::Receiver<Option<u64>>,
    /// The largest request message a client service decodes.
    max_msg_bytes: usize,
    /// What the HTTP endpoints (`/health`, `/version`, `/metrics`) read.
    http: HttpState,
    /// HTTP/2 settings of the client listeners (`--max-concurrent-streams`,
    /// `--grpc-keepalive-*`).
    client_http2: ClientHttp2,
    /// `--logger`: which of etcd's wordings the lifecycle lines take.
    logger: crate::config::Logger,
    /// `--bcrypt-cost` for the Auth service.
    auth: crate::server::auth::AuthConfig,
    /// `--cors` and `--host-whitelist`, applied to the client port's HTTP requests.
    cors: Vec<String>,
    host_whitelist: Vec<String>,
}

/// HTTP/2 settings of a client listener, etcd's gRPC server options.
#[derive(Clone, Copy)]
struct ClientHttp2 {
    max_concurrent_streams: u32,
    keepalive_interval: Option<Duration>,
    keepalive_timeout: Duration,
}

impl Services {
    fn new(
        cfg: &Config,
        data_dir: &DataDir,
        store: Arc<MvccStore>,
        watchable: Arc<WatchableStore>,
        raft: &RaftNode,
        stop_rx: &watch::Receiver<bool>,
    ) -> Services {
        let identity = &data_dir.identity;
        store.set_auth_token_ttl(cfg.auth_token_ttl);
        let ctx = ServerContext {
            store: store.clone(),
            proposer: raft.proposer(),
            header: HeaderSource::new(identity.cluster_id, identity.member_id, raft.raft()),
            max_request_bytes: cfg.max_request_bytes,
            max_txn_ops: cfg.max_txn_ops,
            quota: Arc::new(SpaceQuota::new(store.clone(), cfg.quota_backend_bytes)),
        };
        let lessor = Lessor::with_checkpoints(
            store,
            raft.raft(),
            identity.member_id,
            cfg.heartbeat_interval_ms,
            cfg.election_timeout_ms,
            cfg.lease_checkpoint_interval,
        );
        let admin = Admin::new(
            identity.member_id,
            identity.cluster_id,
            &identity.cluster_token,
            raft,
            lessor.clone(),
            crate::server::admin::request_timeout(cfg.election_timeout_ms),
        )
        .with_strict_reconfig_check(cfg.strict_reconfig_check)
        .with_store(ctx.store.clone());
        let header = ctx.header.clone();
        let watch_config = WatchConfig {
            progress_interval: Duration::from_millis(cfg.progress_notify_interval_ms),
            max_request_bytes: cfg.max_request_bytes,
            // etcd 3.4 closes a require-leader stream after three leaderless election checks.
            election_timeout: Duration::from_millis(3 * cfg.election_timeout_ms),
            stopping: Some(stop_rx.clone()),
        };
        let leader = leader_from_metrics(
            raft.raft().server_metrics(),
            raft.raft().metrics(),
            Duration::from_millis(cfg.election_timeout_ms),
        );
        let http = HttpState {
            proposer: ctx.proposer.clone(),
            health_timeout: crate::server::admin::request_timeout(cfg.election_timeout_ms),
            metrics: MetricsSource {
                leader: leader.clone(),
                raft: raft.raft().metrics(),
                store: ctx.store.clone(),
                watchable: watchable.clone(),
            },
        };
        crate::metrics::watch_leader_changes(leader.clone());
        Services {
            ctx,
            lessor,
            admin,
            watchable,
            watch_header: Arc::new(move |rev| header.at(rev)),
            watch_config,
            leader,
            max_msg_bytes: cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
            http,
            client_http2: ClientHttp2 {
                max_concurrent_streams: cfg.max_concurrent_streams,
                keepalive_interval: cfg.grpc_keepalive_interval,
                keepalive_timeout: cfg.grpc_keepalive_timeout,
            },
            logger: cfg.logger,
            auth: crate::server::auth::AuthConfig {
                bcrypt_cost: cfg.bcrypt_cost,
            },
            cors: cfg.cors.clone(),
            host_whitelist: cfg.host_whitelist.clone(),
        }
    }
}

/// The member's own tasks beside the servers; they end when the stop signal is sent.
struct Background {
    /// etcd's publish: makes this member's name and client URLs known to the cluster. `None`
    /// once it has finished.
    publish: Option<JoinHandle<()>>,
    /// The leader's lease expiry loop.
    lessor: JoinHandle<()>,
    /// etcd's leader-change lines.
    leader_log: JoinHandle<()>,
}

/// Logs each change of the leader this member knows of, as etcd's raft does.
async fn log_leader_changes(
    me: u64,
    mut metrics: crate::raft::types::ServerMetricsReceiver,
    mut stop: watch::Receiver<bool>,
) {
    let mut leader = None;
    loop {
        let (now, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader, crate::raft::types::term_of(&m))
        };
        if now != leader {
            lifecycle::leader_changed(me, leader, now, term);
            leader = now;
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn start_background(
    cfg: &Config,
    data_dir: &DataDir,
    services: &Services,
    raft: &RaftNode,
    stop_rx: &watch::Receiver<bool>,
) -> Background {
    let publishing = services.admin.clone().publish(
        cfg.name.clone(),
        cfg.advertise_client_urls.clone(),
        data_dir.fresh,
        stop_rx.clone(),
    );
    let (logger, name, urls) = (
        cfg.logger,
        cfg.name.clone(),
        cfg.advertise_client_urls.clone(),
    );
    let (member_id, cluster_id) = (data_dir.identity.member_id, data_dir.identity.cluster_id);
    let stopped = stop_rx.clone();
    let proposer = services.ctx.proposer.clone();
    let publish = tokio::spawn(async move {
        publishing.await;
        // As etcd applies its publish entry before it serves: the store catches up with
        // everything committed before this start.
        proposer.catch_up(stopped.clone()).await;
        if !*stopped.borrow() {
            lifecycle::published(logger, &name, &urls, member_id, cluster_id);
        }
    });
    let leader_log = tokio::spawn(log_leader_changes(
        member_id,
        raft.raft().server_metrics(),
        stop_rx.clone(),
    ));
    let lessor = tokio::spawn(
        services
            .lessor
            .clone()
            .run(services.ctx.proposer.clone(), stop_rx.clone()),
    );
    {
        let probing = services.admin.clone().probe_peers();
        let stop = self::stopped(stop_rx);
        tokio::spawn(async move {
            tokio::select! {
                () = probing => {}
                () = stop => {}
            }
        });
    }
    if let Some(mode) = cfg.auto_compaction {
        let member = crate::server::compactor::Member {
            ctx: services.ctx.clone(),
            leader: services.leader.clone(),
        };
        let stop = self::stopped(stop_rx);
        tokio::spawn(async move {
            tokio::select! {
                () = crate::server::compactor::run(mode, member) => {}
                () = stop => {}
            }
        });
    }
    if let Some(every) = cfg.corrupt_check_time {
        let check = crate::server::corrupt::monitor(
            services.ctx.clone(),
            services.admin.clone(),
            services.leader.clone(),
            every,
        );
        let stop = self::stopped(stop_rx);
        tokio::spawn(async move {
            tokio::select! {
                () = check => {}
                () = stop => {}
            }
        });
    }
    Background {
        publish: Some(publish),
        lessor,
        leader_log,
    }
}

impl Background {
    /// Waits, bounded, for the member to publish: etcd serves clients only once it has, so
    /// that every member a client can reach is listed with its client URLs; bounded, so that
    /// a member without quorum still answers serializable reads and status.
    async fn wait_for_publish(&mut self, cfg: &Config) {
        let Some(publish) = self.publish.as_mut() else {
            return;
        };
        if tokio::time::timeout(publish_gate(cfg.election_timeout_ms), publish)
            .await
            .is_ok()
        {
            self.publish = None;
        } else {
            tracing::warn!("member attributes not published yet; serving clients anyway");
        }
    }
}

/// Serves the peer service (Raft messages, membership admin) on every peer listener, over
/// TLS where `tls` (in listener order) has a configuration.
fn serve_peers(
    servers: &mut Servers,
    listeners: Vec<TcpListener>,
    tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    raft: &RaftNode,
    services: &Services,
    stop_rx: &watch::Receiver<bool>,
) {
    for (l, tls) in listeners.into_iter().zip(tls) {
        let admin = Arc::new(services.admin.clone());
        // A follower busy installing a large snapshot leaves the leader's appends waiting;
        // the leader gives up on each after its timeout and resets the stream. hyper's
        // default of 20 such resets closes the whole connection, the snapshot's answer with
        // it, and the leader would send the snapshot again.
        let router = tonic::transport::Server::builder()
            .http2_max_pending_accept_reset_streams(Some(PEER_MAX_RESET_STREAMS))
            .add_service(raft.peer_service_with_admin(admin));
        spawn_server(servers, router, l, tls, stop_rx, services.logger, "peer");
    }
}

/// Serves etcd's v3 API on every client listener: KV, Lease, Cluster and Maintenance refuse
/// RequireLeader calls while there is no leader; Watch streams check it themselves. Over TLS
/// where `tls` (in listener order) has a configuration.
fn serve_clients(
    servers: &mut Servers,
    listeners: Vec<TcpListener>,
    tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    services: &Services,
    stop_rx: &watch::Receiver<bool>,
) {
    for (l, tls) in listeners.into_iter().zip(tls) {
        let secure = tls.is_some();
        spawn_client_server(
            servers,
            client_routes(services, secure),
            l,
            tls,
            stop_rx,
            services.client_http2,
            services.logger,
        );
    }
}

/// `--listen-metrics-urls`: `/metrics` and `/health` over HTTP/1.1 (and HTTP/2).
fn serve_metrics(
    servers: &mut Servers,
    listeners: Vec<TcpListener>,
    services: &Services,
    stop_rx: &watch::Receiver<bool>,
) {
    for l in listeners {
        let routes = Routes::from(http::metrics_routes(services.http.clone()));
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(routes);
        spawn_server(
            servers,
            router,
            l,
            None,
            stop_rx,
            services.logger,
            "metrics",
        );
    }
}

/// The client-facing gRPC services of one listener (`secure`: a TLS one), and etcd's HTTP
/// endpoints beside them behind `--cors` and `--host-whitelist`.
fn client_routes(s: &Services, secure: bool) -> Routes {
    // clientv3's WithRequireLeader on unary calls: refused while there is no leader.
    let leader_rx = s.leader.clone();
    let store = s.ctx.store.clone();
    let require_leader = move |mut req: tonic::Request<()>| {
        check_require_leader(req.metadata(), &leader_rx)?;
        crate::server::auth_check::mark_cert_user(&mut req, store.auth_enabled());
        Ok(req)
    };
    let max_msg = s.max_msg_bytes;
    // The Lock and Election services call the member's own KV, lease and watch services.
    let local = LocalClient::new(
        s.ctx.clone(),
        s.lessor.clone(),
        s.admin.clone(),
        s.watchable.clone(),
        s.watch_config.stopping.clone(),
    );
    let mut grpc = RoutesBuilder::default();
    grpc.add_service(InterceptedService::new(
        KvServer::new(KvService::new(s.ctx.clone()))
            .max_decoding_message_size(max_msg)
            .max_encoding_message_size(usize::MAX),
        require_leader.clone(),
    ))
    .add_service(InterceptedService::new(
        LeaseServer::new(LeaseService::new(
            s.ctx.clone(),
            s.lessor.clone(),
            s.admin.clone(),
        ))
        .max_decoding_message_size(max_msg),
        require_leader.clone(),
    ))
    .add_service(InterceptedService::new(
        ClusterServer::new(ClusterService::new(s.ctx.clone(), s.admin.clone())),
        require_leader.clone(),
    ))
    .add_service(InterceptedService::new(
        MaintenanceServer::new(MaintenanceService::new(
            s.ctx.clone(),
            s.admin.clone(),
            s.leader.clone(),
        )),
        require_leader.clone(),
    ))
    .add_service(InterceptedService::new(
        AuthServer::new(AuthService::new(s.ctx.clone(), s.auth)),
        require_leader.clone(),
    ))
    .add_service(InterceptedService::new(
        LockServer::new(LockService::new(local.clone())).max_decoding_message_size(max_msg),
        require_leader.clone(),
    ))
    .add_service(InterceptedService::new(
        ElectionServer::new(ElectionService::new(local)).max_decoding_message_size(max_msg),
        require_leader,
    ))
    .add_service(
        WatchServer::new(
            WatchService::new(
                s.watchable.clone(),
                s.watch_header.clone(),
                s.leader.clone(),
                s.watch_config.clone(),
            )
            .with_auth(s.ctx.store.clone()),
        )
        .max_decoding_message_size(max_msg),
    );
    let grpc = grpc.routes();
    let mut all = grpc
        .clone()
        .into_axum_router()
        .merge(http::client_routes(s.http.clone()));
    // The JSON gateway calls the gRPC services above in-process.
    match crate::server::gateway::routes(grpc) {
        Ok(gateway) => all = all.merge(gateway),
        Err(e) => {
            tracing::error!(error = %e, "the JSON gateway's descriptors do not load; serving without it")
        }
    }
    let access = AccessControl::new(&s.cors, &s.host_whitelist, secure);
    Routes::from(
        all.fallback(http::not_found)
            .layer(axum::middleware::from_fn_with_state(access, access::check)),
    )
}

/// Serves `router` on `l` until the stop signal; over TLS when `tls` is given.
fn spawn_server(
    servers: &mut Servers,
    router: Router,
    l: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop_rx: &watch::Receiver<bool>,
    logger: crate::config::Logger,
    what: &'static str,
) {
    let addr = l.local_addr().ok();
    let stopped = stopped(stop_rx);
    servers.spawn(async move {
        match what {
            "peer" => lifecycle::serving_peers(logger, addr),
            _ => info!(?addr, "serving {what}"),
        }
        let r = match tls {
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(crate::tls::incoming::incoming(l, tls), stopped)
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(incoming(l), stopped)
                    .await
            }
        };
        lifecycle::stopped_serving(logger, what, addr);
        r
    });
}

/// Serves the client API on `l` until the stop signal, over TLS when `tls` is given.
/// Connections (decrypted, with TLS) pass through [`AuthorityFix`] so that Go clients'
/// `http://` and `https://` endpoints are accepted.
fn spawn_client_server(
    servers: &mut Servers,
    routes: Routes,
    l: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop_rx: &watch::Receiver<bool>,
    h2: ClientHttp2,
    logger: crate::config::Logger,
) {
    let addr = l.local_addr().ok();
    let stopped = stopped(stop_rx);
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(h2.max_concurrent_streams)
        .http2_keepalive_interval(h2.keepalive_interval)
        .http2_keepalive_timeout(Some(h2.keepalive_timeout))
        .layer(GrpcMetricsLayer)
        .add_routes(routes);
    servers.spawn(async move {
        lifecycle::serving_clients(logger, addr);
        let r = match tls {
            Some(tls) => {
                let conns = crate::tls::incoming::incoming(l, tls)
                    .map(|c| c.map(|io| AuthorityFix::new(WriteBatching::new(io))));
                router.serve_with_incoming_shutdown(conns, stopped).await
            }
            None => {
                let conns =
                    incoming(l).map(|c| c.map(|io| AuthorityFix::new(WriteBatching::new(io))));
                router.serve_with_incoming_shutdown(conns, stopped).await
            }
        };
        lifecycle::stopped_serving(logger, "client", addr);
        r
    });
}

/// Resolves once the stop signal is sent.
fn stopped(stop_rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop_rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Waits for the first reason to stop: the shutdown signal, this member's removal from the
/// cluster, a fatal Raft error, or a server that ended.
async fn run_until_stopped(
    shutdown: impl Future<Output = ()> + Send,
    cfg: &Config,
    admin: &Admin,
    raft: &RaftNode,
    servers: &mut Servers,
) -> Result<(), NodeError> {
    let removed = admin
        .clone()
        .removed_from_cluster(Duration::from_millis(cfg.election_timeout_ms));
    tokio::select! {
        _ = shutdown => Ok(()),
        _ = removed => Err(NodeError::Removed),
        // A storage failure stops Raft for good: the member must not go on serving frozen
        // reads; it exits non-zero so that a supervisor restarts it (etcd exits too).
        fatal = raft.fatal() => Err(NodeError::Raft(format!("stopped after a fatal error: {fatal}"))),
        Some(r) = servers.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Serve(e)),
            Err(e) => Err(NodeError::Raft(format!("server task failed: {e}"))),
        },
    }
}

/// How long a stopping member waits for requests in flight before closing their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Stops the servers and background tasks, then Raft, then flushes the store.
async fn stop(
    stop_tx: watch::Sender<bool>,
    mut servers: Servers,
    background: Background,
    raft: &RaftNode,
    data_dir: &DataDir,
) {
    info!("stopping member");
    let _ = stop_tx.send(true);
    // Servers finish the requests in flight (watch streams end at the stop signal); what
    // is still open after the grace period is cut.
    let drained = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the grace period; closing them");
        servers.abort_all();
        while servers.join_next().await.is_some() {}
    }
    let _ = background.lessor.await;
    let _ = background.leader_log.await;
    if let Some(publish) = background.publish {
        let _ = publish.await;
    }
    raft.shutdown().await;
    if let Err(e) = data_dir.db.flush_async().await {
        tracing::warn!(error = %e, "final flush failed");
    }
}
