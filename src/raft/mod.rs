//! openraft glue, no etcd semantics: types, the sled log store, the state machine over the
//! MVCC store, the peer network (outbound) and service (inbound), the proposer, and the
//! leader's group commit (`batcher`: concurrent writes share one entry, so one log flush) and
//! shared read index rounds (`read_batcher`).
//!
//! [`start`] wires them: it opens the log store and state machine in the node's sled
//! database, starts openraft with etcd's timing (heartbeat 100 ms, election 1000 ms, a
//! snapshot every `snapshot_count` applied writes), initializes a brand-new cluster, and hands back
//! a [`RaftNode`] whose [`Proposer`] the gRPC servers use and whose peer service the node
//! mounts on its peer URL.

pub mod batcher;
pub mod codec;
pub mod force_new_cluster;
pub mod log_store;
pub mod network;
pub mod proposer;
pub mod read_batcher;
pub mod retry;
pub mod service;
pub mod snapshot;
pub mod snapshot_transfer;
pub mod state_machine;
pub mod types;
pub mod wal;

use openraft::async_runtime::watch::WatchReceiver;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};

use crate::pb::minietcdpb::raft_peer_server::RaftPeerServer;
use crate::storage::MvccStore;
pub use batcher::WriteBatcher;
pub use log_store::LogStore;
pub use network::{PeerChannels, PeerNetworkFactory, SNAPSHOT_CHUNK_BYTES};
pub use proposer::{ProposeError, Proposer, ProposerTimeouts};
pub use service::PeerService;
pub use state_machine::StateMachine;
use types::{ApplyObserver, MemberNode, NodeId, TypeConfig};

/// This member's openraft instance.
pub type RaftHandle = openraft::Raft<TypeConfig, StateMachine>;

/// etcd's default election timeout.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;
/// etcd's default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// etcd's default `--snapshot-count`.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// Entries kept after a snapshot so that a slightly lagging follower catches up from the
/// log rather than a snapshot (etcd's `SnapshotCatchUpEntries`).
pub const DEFAULT_SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;
/// Entries per AppendEntries (openraft's default); bounds one peer message.
pub const DEFAULT_MAX_PAYLOAD_ENTRIES: u64 = 300;
/// How long one chunk of a snapshot may take to go out (or to come in, on the receiver);
/// a snapshot as a whole takes as long as its chunks do (see [`snapshot_transfer`]).
pub const DEFAULT_SNAPSHOT_TIMEOUT_MS: u64 = 30_000;
/// A request waits for a leader for this many election timeouts before "no leader": a
/// follower notices a dead leader after `[1, 4/3)` timeouts (see
/// [`RaftSettings::election_timeout_ms`]), a split vote costs another, and the slack covers
/// a slow machine.
pub const LEADER_WAIT_ELECTIONS: u32 = 5;
/// etcd's request timeout: 5 s plus two election timeouts.
const REQUEST_TIMEOUT_BASE: Duration = Duration::from_secs(5);

/// What the Raft layer needs to know about this member and the cluster (the etcd flags).
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// This member's id.
    pub node_id: NodeId,
    /// The initial cluster (`--initial-cluster`), this member included.
    pub members: BTreeMap<NodeId, MemberNode>,
    /// Whether to form a new cluster from `members` if this member has no Raft state yet
    /// (`--initial-cluster-state new` on an empty data dir); ignored once state exists.
    pub initialize: bool,
    /// Leader heartbeat period (`--heartbeat-interval`).
    pub heartbeat_interval_ms: u64,
    /// Election timeout (`--election-timeout`). A follower whose leader went quiet starts an
    /// election after `[t, 4t/3)`, within etcd's `[t, 2t)`: openraft waits a leader
    /// lease (its `election_timeout_max`) plus a timeout drawn from
    /// `[election_timeout_min, election_timeout_max)`, so those are set to `[t/3, 2t/3)`.
    /// With openraft's `[t, 2t)` and its lease of `2t`, a follower waited 3 to 4 timeouts
    /// (measured: first write 3.6-3.8 s after a leader's SIGKILL, etcd 1.0-2.1 s).
    pub election_timeout_ms: u64,
    /// Applied entries between snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Where the Raft log's segment files live (`<data dir>/wal`).
    pub wal_dir: std::path::PathBuf,
    /// Where snapshot files live (`<data dir>/snap`; by default beside `wal_dir`).
    pub snapshot_dir: std::path::PathBuf,
    /// sled's data file (`<sled dir>/db`), fdatasync'ed after sled's flush before a snapshot
    /// covers the state machine (the log below it may then be purged); `None` leaves that to
    /// sled's flush.
    pub sled_data_file: Option<std::path::PathBuf>,
    /// Ask for a Pre-Vote before each election (`--pre-vote`).
    pub pre_vote: bool,
    /// How to dial `https://` peer URLs (`--peer-cert-file`, ...); `None`: plaintext only.
    pub peer_tls: Option<minietcd_client::tls::TlsConnector>,
    /// `--force-new-cluster`: before starting, make this member the only voter of its
    /// cluster (see [`force_new_cluster`]).
    pub force_new_cluster: bool,
}

impl RaftSettings {
    /// Settings with etcd's defaults for member `node_id` of `members`, forming a new
    /// cluster.
    pub fn new(
        node_id: NodeId,
        members: BTreeMap<NodeId, MemberNode>,
        wal_dir: std::path::PathBuf,
    ) -> RaftSettings {
        RaftSettings {
            snapshot_dir: wal_dir.with_file_name(snapshot::SNAP_DIR),
            wal_dir,
            node_id,
            members,
            initialize: true,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            sled_data_file: None,
            pre_vote: false,
            peer_tls: None,
            force_new_cluster: false,
        }
    }

    fn openraft_config(&self, tuning: &RaftTuning) -> Result<Config, RaftError> {
        let config = Config {
            cluster_name: "minietcd".to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_ms / 3,
            election_timeout_max: self.election_timeout_ms * 2 / 3,
            install_snapshot_timeout: tuning.snapshot_timeout_ms,
            max_payload_entries: tuning.max_payload_entries,
            // `--snapshot-count` counts applied writes, as etcd's does; the state machine
            // counts them and asks for snapshots (see `state_machine::SnapshotTrigger`).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: tuning.snapshot_catchup_entries,
            // The state machine is not flushed per apply and the committed id is saved
            // lazily: a restarted leader must win an election again rather than resume with a
            // state machine that may be behind what it acknowledged.
            enable_leader_restore: Some(false),
            // Followers get a new entry as soon as it is handed to the log, while the leader
            // is still flushing it (Raft thesis 10.2.1, as etcd does).
            broadcast_submitted_on_append: Some(true),
            enable_pre_vote: Some(self.pre_vote),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| RaftError::Config(e.to_string()))
    }

    fn proposer_timeouts(&self) -> ProposerTimeouts {
        let election = Duration::from_millis(self.election_timeout_ms);
        ProposerTimeouts {
            request: REQUEST_TIMEOUT_BASE + election * 2,
            leader_wait: election * LEADER_WAIT_ELECTIONS,
        }
    }
}

/// Knobs etcd does not expose as flags; [`Default`] is what a node uses, tests shrink them.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    /// Entries kept in the log after a snapshot.
    pub snapshot_catchup_entries: u64,
    /// Entries per AppendEntries message.
    pub max_payload_entries: u64,
    /// Snapshot bytes per streamed chunk.
    pub snapshot_chunk_bytes: usize,
    /// Deadline of each snapshot chunk, sent or received.
    pub snapshot_timeout_ms: u64,
    /// The Raft log's segment size.
    pub wal: wal::WalOptions,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            snapshot_catchup_entries: DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
            max_payload_entries: DEFAULT_MAX_PAYLOAD_ENTRIES,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
            snapshot_timeout_ms: DEFAULT_SNAPSHOT_TIMEOUT_MS,
            wal: wal::WalOptions::default(),
        }
    }
}

/// Starting or stopping Raft failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The settings are not a valid openraft configuration.
    #[error("raft config: {0}")]
    Config(String),
    /// Opening the log store or state machine failed.
    #[error("raft storage: {0}")]
    Storage(String),
    /// openraft refused to start or to initialize.
    #[error("raft: {0}")]
    Raft(String),
}

/// A running Raft member.
pub struct RaftNode {
    /// This member's id.
    id: NodeId,
    /// The openraft handle (metrics, membership changes).
    raft: RaftHandle,
    /// Writes and linearizable reads for the gRPC servers.
    proposer: Proposer,
    /// Channels to the peers (also used by the proposer).
    channels: Arc<PeerChannels>,
    /// The leader's group commit, shared by local writes and the peer Forward RPC so that
    /// both fill the same entries.
    writes: WriteBatcher,
    /// Where received snapshots go.
    snapshots: service::SnapshotInbox,
}

impl RaftNode {
    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft handle (metrics for headers, membership changes).
    pub fn raft(&self) -> RaftHandle {
        self.raft.clone()
    }

    /// The proposer the gRPC servers use.
    pub fn proposer(&self) -> Proposer {
        self.proposer.clone()
    }

    /// The shared peer channels.
    pub fn channels(&self) -> Arc<PeerChannels> {
        self.channels.clone()
    }

    /// The peer gRPC service, to mount on the peer listener.
    pub fn peer_service(&self) -> RaftPeerServer<PeerService> {
        PeerService::new(
            self.id,
            self.raft.clone(),
            self.writes.clone(),
            self.snapshots.clone(),
        )
        .into_server()
    }

    /// The peer service answering Admin requests with `admin`.
    pub fn peer_service_with_admin(
        &self,
        admin: Arc<dyn service::AdminHandler>,
    ) -> RaftPeerServer<PeerService> {
        PeerService::new(
            self.id,
            self.raft.clone(),
            self.writes.clone(),
            self.snapshots.clone(),
        )
        .with_admin(admin)
        .into_server()
    }

    /// Resolves with the error once Raft has stopped on a fatal error (a storage failure:
    /// the WAL or the state machine could not write); never while Raft runs.
    pub async fn fatal(&self) -> String {
        // A fatal error stops Raft's core, which closes the server metrics channel; waiting
        // on that channel (and not on the full metrics, sent at every write) costs nothing
        // while Raft runs.
        let mut server = self.raft.server_metrics();
        loop {
            if let Err(e) = &self.raft.metrics().borrow_watched().running_state {
                return e.to_string();
            }
            if server.changed().await.is_err() {
                return match &self.raft.metrics().borrow_watched().running_state {
                    Err(e) => e.to_string(),
                    Ok(()) => "raft stopped".to_string(),
                };
            }
        }
    }

    /// Stops Raft (its tasks end; peers see this member as down). A failure to stop cleanly
    /// is logged: the member is going away either way.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
    }
}

/// Starts this member's Raft over the node's sled database and MVCC store.
pub async fn start(
    cfg: RaftSettings,
    db: sled::Db,
    store: Arc<MvccStore>,
    observer: Arc<dyn ApplyObserver>,
) -> Result<RaftNode, RaftError> {
    start_tuned(cfg, RaftTuning::default(), db, store, observer).await
}

/// [`start`] with non-default [`RaftTuning`]. `_db`, the node's shared sled database, is
/// no longer used by Raft (its log has its own WAL, its snapshots are files in
/// `cfg.snapshot_dir`); it stays in the signature for the callers' sake.
#[tracing::instrument(level = "info", skip_all, fields(id = cfg.node_id))]
pub async fn start_tuned(
    cfg: RaftSettings,
    tuning: RaftTuning,
    _db: sled::Db,
    store: Arc<MvccStore>,
    observer: Arc<dyn ApplyObserver>,
) -> Result<RaftNode, RaftError> {
    let config = Arc::new(cfg.openraft_config(&tuning)?);
    let wal_opts = tuning.wal.clone();
    let wal_dir = cfg.wal_dir.clone();
    let mut log_store = tokio::task::spawn_blocking(move || LogStore::open(&wal_dir, wal_opts))
        .await
        .map_err(|e| RaftError::Storage(e.to_string()))?
        .map_err(|e| RaftError::Storage(e.to_string()))?;
    let mut state_machine = StateMachine::open(&cfg.snapshot_dir, store, observer)
        .map_err(|e| RaftError::Storage(e.to_string()))?
        .with_snapshot_count(cfg.snapshot_count);
    let snapshot_trigger = state_machine.snapshot_trigger();
    let serve_snapshots = state_machine.serve_snapshots();
    let snapshots = service::SnapshotInbox {
        dir: state_machine.snapshot_dir(),
        chunk_timeout: Duration::from_millis(tuning.snapshot_timeout_ms),
    };
    if let Some(path) = &cfg.sled_data_file {
        state_machine = state_machine
            .with_data_file(path)
            .map_err(|e| RaftError::Storage(format!("{}: {e}", path.display())))?;
    }
    if cfg.force_new_cluster {
        force_new_cluster::rewrite(&mut log_store, &mut state_machine, cfg.node_id).await?;
    }
    let channels = Arc::new(PeerChannels::with_tls(cfg.peer_tls.clone()));
    let network =
        PeerNetworkFactory::new(cfg.node_id, channels.clone(), tuning.snapshot_chunk_bytes);
    let raft = RaftHandle::new(cfg.node_id, config, network, log_store, state_machine)
        .await
        .map_err(|e| RaftError::Raft(e.to_string()))?;
    serve_snapshots.start();

    tokio::spawn(ask_for_snapshots(
        raft.clone(),
        snapshot_trigger,
        channels.clone(),
    ));

    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| RaftError::Raft(e.to_string()))?;
    if cfg.initialize && !initialized {
        // Every founding member initializes with the same membership, which openraft allows:
        // they all write the same first entry, and whoever wins the first election leads.
        match raft.initialize(cfg.members.clone()).await {
            Ok(()) => tracing::info!(members = cfg.members.len(), "cluster initialized"),
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(e),
            )) => {
                tracing::info!(error = %e, "already initialized")
            }
            Err(e) => return Err(RaftError::Raft(e.to_string())),
        }
    } else if initialized && is_sole_voter(&raft, cfg.node_id) {
        // A restarted single-member cluster need not wait out an election timeout.
        raft.trigger()
            .elect(false)
            .await
            .map_err(|e| RaftError::Raft(e.to_string()))?;
    }

    let writes = WriteBatcher::start(raft.clone());
    let proposer = Proposer::new(
        cfg.node_id,
        raft.clone(),
        channels.clone(),
        cfg.proposer_timeouts(),
        writes.clone(),
    );
    Ok(RaftNode {
        id: cfg.node_id,
        raft,
        proposer,
        channels,
        writes,
        snapshots,
    })
}

/// How often a snapshot request openraft dropped (one was being built) is repeated.
const SNAPSHOT_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Asks openraft for a snapshot each time `--snapshot-count` writes were applied since the
/// last one, but not while a snapshot is being sent (see
/// [`PeerChannels::snapshots_not_sending`]); ends when Raft shuts down.
async fn ask_for_snapshots(
    raft: RaftHandle,
    trigger: Arc<state_machine::SnapshotTrigger>,
    channels: Arc<PeerChannels>,
) {
    let mut server = raft.server_metrics();
    loop {
        tokio::select! {
            () = trigger.wait_due() => {}
            changed = server.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        if channels.is_sending_snapshot() {
            tracing::info!(
                writes = trigger.since_last(),
                "snapshot-count reached; skip the snapshot since one is being sent"
            );
            let shut_down = async { while server.changed().await.is_ok() {} };
            tokio::select! {
                () = channels.snapshots_not_sending() => {}
                () = shut_down => return,
            }
            tracing::info!("the snapshot was sent; building the snapshot that was due");
        }
        let mut attempt = 0u32;
        while trigger.pending() {
            if attempt == 0 {
                tracing::info!(
                    writes = trigger.since_last(),
                    "snapshot-count reached; building a snapshot"
                );
            } else {
                // A build was running: openraft dropped the request.
                tracing::debug!(attempt, "asking for the snapshot again");
            }
            attempt += 1;
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::debug!(error = %e, "raft stopped; no more snapshots");
                return;
            }
            tokio::time::sleep(SNAPSHOT_RETRY_INTERVAL).await;
        }
    }
}

fn is_sole_voter(raft: &RaftHandle, id: NodeId) -> bool {
    let m = raft.metrics();
    let m = m.borrow_watched();
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    voters == [id]
}

#[cfg(test)]
mod cluster_tests;
