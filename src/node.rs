//! The one place that wires storage, Raft, watch and the gRPC servers into a running member.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tracing::info;

use crate::config::Config;
use crate::data_dir::{DataDir, DataDirError, Identity};
use crate::lessor::Lessor;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::raft::types::{ApplyObserver, MemberNode};
use crate::raft::RaftSettings;
use crate::server::admin::Admin;
use crate::server::cluster::ClusterService;
use crate::server::kv::KvService;
use crate::server::lease::LeaseService;
use crate::server::maintenance::MaintenanceService;
use crate::server::watch::{check_require_leader, leader_from_metrics, WatchConfig, WatchService};
use crate::server::{HeaderSource, ServerContext};
use crate::storage::MvccStore;
use crate::watch::WatchableStore;

/// gRPC adds framing around a request; etcd allows this much on top of --max-request-bytes
/// before the transport refuses a message, so that the request-size check answers first.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

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
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot join the cluster: {0}")]
    Join(#[from] crate::server::admin::JoinError),
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
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

/// How long a starting member waits to publish its attributes before serving clients.
fn publish_gate(election_timeout_ms: u64) -> Duration {
    crate::server::admin::request_timeout(election_timeout_ms)
}

/// Accepted connections with Nagle's algorithm off: gRPC writes small frames and waits for
/// the answer, and Nagle plus delayed ACKs would hold each of them for ~40 ms.
fn incoming(l: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true))
}

/// Runs a member until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
    // Bind first: a port in use is the most common start-up failure and must leave nothing
    // behind (no data dir created).
    let client_listeners = bind_all(&cfg.listen_client_addrs).await?;
    let peer_listeners = bind_all(&cfg.listen_peer_addrs).await?;

    let existing = cfg.initial_cluster_state == crate::config::ClusterState::Existing;
    let (member_id, cluster_id) = if existing && DataDir::is_new(&cfg.data_dir)? {
        // A member added to a running cluster: its id and the cluster's come from the
        // cluster (the flags cannot know the time-salted id MemberAdd gave it).
        let others: Vec<Vec<String>> = cfg
            .initial_cluster
            .iter()
            .filter(|(id, _)| **id != cfg.member_id)
            .map(|(_, m)| m.peer_urls.clone())
            .collect();
        crate::server::admin::discover_join_identity(&cfg.advertise_peer_urls, &others).await?
    } else {
        (cfg.member_id, cfg.cluster_id())
    };
    let identity = Identity::new(&cfg.name, member_id, cluster_id, &cfg.initial_cluster_token);
    let data_dir = {
        let path = cfg.data_dir.clone();
        tokio::task::spawn_blocking(move || DataDir::open(&path, identity, !existing))
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))??
    };
    let identity = data_dir.identity.clone();
    info!(
        name = %identity.name,
        member_id = %format!("{:x}", identity.member_id),
        cluster_id = %format!("{:x}", identity.cluster_id),
        data_dir = %data_dir.path.display(),
        "starting member"
    );

    let store = Arc::new(MvccStore::open(&data_dir.db)?);
    let watchable = WatchableStore::new(store.clone());
    let observer: Arc<dyn ApplyObserver> = watchable.clone();
    // Catch-up of unsynced watchers and victim retries; they stop when this guard drops.
    let _watch_loops = watchable.start();
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
    let mut settings = RaftSettings::new(identity.member_id, members, data_dir.wal_dir());
    settings.initialize =
        data_dir.fresh && cfg.initial_cluster_state == crate::config::ClusterState::New;
    settings.heartbeat_interval_ms = cfg.heartbeat_interval_ms;
    settings.election_timeout_ms = cfg.election_timeout_ms;
    settings.snapshot_count = cfg.snapshot_count;
    settings.sled_data_file = Some(data_dir.sled_data_file());
    let tuning = crate::raft::RaftTuning {
        snapshot_catchup_entries: cfg.snapshot_catchup_entries,
        ..crate::raft::RaftTuning::default()
    };
    let raft = crate::raft::start_tuned(
        settings,
        tuning,
        data_dir.db.clone(),
        store.clone(),
        observer,
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;

    let ctx = ServerContext {
        store: store.clone(),
        proposer: raft.proposer(),
        header: HeaderSource::new(identity.cluster_id, identity.member_id, raft.raft()),
        max_request_bytes: cfg.max_request_bytes,
        max_txn_ops: cfg.max_txn_ops,
    };
    let max_msg = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let lessor = Lessor::new(
        store.clone(),
        raft.raft(),
        identity.member_id,
        cfg.election_timeout_ms,
    );

    let admin = Admin::new(
        identity.member_id,
        identity.cluster_id,
        &identity.cluster_token,
        raft.raft(),
        raft.channels(),
        lessor.clone(),
        crate::server::admin::request_timeout(cfg.election_timeout_ms),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // etcd's publish: make this member's name and client URLs known to the cluster.
    let mut publish_task = tokio::spawn(admin.clone().publish(
        cfg.name.clone(),
        cfg.advertise_client_urls.clone(),
        data_dir.fresh,
        stop_rx.clone(),
    ));
    let lessor_task = tokio::spawn(lessor.clone().run(ctx.proposer.clone(), stop_rx.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    let leader = leader_from_metrics(raft.raft().metrics());
    let watch_config = WatchConfig {
        progress_interval: Duration::from_millis(cfg.progress_notify_interval_ms),
        max_request_bytes: cfg.max_request_bytes,
        // etcd 3.4 closes a require-leader stream after three leaderless election checks.
        election_timeout: Duration::from_millis(3 * cfg.election_timeout_ms),
    };
    let header = ctx.header.clone();
    let watch_header: Arc<dyn crate::server::watch::HeaderSource> =
        Arc::new(move |rev| header.at(rev));
    for l in peer_listeners {
        let addr = l.local_addr().ok();
        let router = tonic::transport::Server::builder()
            .add_service(raft.peer_service_with_admin(Arc::new(admin.clone())));
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            info!(?addr, "serving peers");
            router
                .serve_with_incoming_shutdown(incoming(l), async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        });
    }

    // etcd serves clients only once the member has published, so that every member a
    // client can reach is listed with its client URLs; bounded here, so that a member
    // without quorum still answers serializable reads and status.
    let publish_done =
        tokio::time::timeout(publish_gate(cfg.election_timeout_ms), &mut publish_task)
            .await
            .is_ok();
    if !publish_done {
        tracing::warn!("member attributes not published yet; serving clients anyway");
    }
    for l in client_listeners {
        let addr = l.local_addr().ok();
        // clientv3's WithRequireLeader on unary calls: refused while there is no leader.
        let leader_rx = leader.clone();
        let require_leader = move |req: tonic::Request<()>| {
            check_require_leader(req.metadata(), &leader_rx)?;
            Ok(req)
        };
        let router = tonic::transport::Server::builder()
            .add_service(InterceptedService::new(
                KvServer::new(KvService::new(ctx.clone()))
                    .max_decoding_message_size(max_msg)
                    .max_encoding_message_size(usize::MAX),
                require_leader.clone(),
            ))
            .add_service(InterceptedService::new(
                LeaseServer::new(LeaseService::new(
                    ctx.clone(),
                    lessor.clone(),
                    admin.clone(),
                ))
                .max_decoding_message_size(max_msg),
                require_leader.clone(),
            ))
            .add_service(InterceptedService::new(
                ClusterServer::new(ClusterService::new(ctx.clone(), admin.clone())),
                require_leader.clone(),
            ))
            .add_service(InterceptedService::new(
                MaintenanceServer::new(MaintenanceService::new(ctx.clone(), data_dir.db.clone())),
                require_leader,
            ))
            .add_service(
                WatchServer::new(WatchService::new(
                    watchable.clone(),
                    watch_header.clone(),
                    leader.clone(),
                    watch_config.clone(),
                ))
                .max_decoding_message_size(max_msg),
            );
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            info!(?addr, "serving client requests");
            router
                .serve_with_incoming_shutdown(incoming(l), async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        });
    }
    let removed = admin
        .clone()
        .removed_from_cluster(Duration::from_millis(cfg.election_timeout_ms));
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        _ = removed => Err(NodeError::Removed),
        Some(r) = tasks.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Serve(e)),
            Err(e) => Err(NodeError::Raft(format!("server task failed: {e}"))),
        },
    };
    info!("stopping member");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let _ = lessor_task.await;
    if !publish_done {
        let _ = publish_task.await;
    }
    raft.shutdown().await;
    if let Err(e) = data_dir.db.flush_async().await {
        tracing::warn!(error = %e, "final flush failed");
    }
    result
}
