//! The etcd v3 facade: validate, translate, delegate. One file per gRPC service; errors
//! become `tonic::Status` only in [`status`]; headers are filled only in [`header`].

pub mod access;
pub mod admin;
pub mod auth;
pub mod auth_check;
pub mod authority_fix;
pub mod cluster;
pub mod compactor;
pub mod concurrency;
pub mod corrupt;
pub mod election;
pub mod gateway;
pub mod grpc_metrics;
pub mod header;
pub mod http;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod quota;
pub mod status;
pub mod txn_check;
pub mod watch;
pub mod watch_auth;
pub mod write_batching;

use std::sync::Arc;

use crate::raft::proposer::Proposer;
use crate::storage::MvccStore;

pub use header::HeaderSource;
pub use status::ApiError;

/// What every client-facing service shares.
#[derive(Clone)]
pub struct ServerContext {
    /// The local MVCC store: reads are served from it.
    pub store: Arc<MvccStore>,
    /// Writes and read barriers go through Raft.
    pub proposer: Proposer,
    /// Fills response headers (cluster, member, revision, term).
    pub header: HeaderSource,
    /// `--max-request-bytes`: a write whose Raft entry is larger is refused.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--quota-backend-bytes`, and the database size it is checked against.
    pub quota: Arc<quota::SpaceQuota>,
}
