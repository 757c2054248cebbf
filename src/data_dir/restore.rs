//! `snapshot restore`: a new member's data dir built from a snapshot file in etcd's format
//! (see [`crate::storage::snapshot_file`]), whether a real etcd 3.4 or minietcd wrote it, from
//! which a new cluster starts serving the snapshot's keys at the same revisions.
//!
//! The file is checked first as etcdctl checks it: the hash trailer must be there and match
//! (unless `--skip-hash-check`), and every page is read through the bbolt reader, which
//! refuses a damaged one.
//!
//! What it writes, in `--data-dir` (which must not exist, as with etcd):
//!
//! - `member.json`: format `minietcd/2`, the member's `--name`, its member id and the cluster
//!   id computed from `--initial-cluster`, `--initial-advertise-peer-urls` and
//!   `--initial-cluster-token` exactly as the member computes them when it starts (so its
//!   start with the same flags and `--initial-cluster-state new` accepts the dir);
//! - `db/` (sled, the member's shared database): the data dir's format marker; the tree of
//!   Raft's kept snapshot is left empty;
//! - `mvcc/` (sled, the store's own database): the `mvcc` tree holding the snapshot's
//!   buckets converted into the store's rows (kv history since the snapshot's compaction,
//!   a compaction the snapshot had scheduled finished as etcd would, leases with their
//!   granted TTLs, users, roles, the auth flag, alarms), installed with the store's own
//!   install; then its commit record's applied state is set: last applied log id
//!   `(term 0, node 0, index 1)` and, at that same log id, the membership of the new cluster
//!   (every `--initial-cluster` member a voter, with its name and peer URLs). The
//!   snapshot's own members and consistent index, from the cluster it was taken in, are
//!   dropped. Leases start afresh with their full TTL once a leader is elected, as etcd's do
//!   after a restore.
//! - `wal/` (or `--wal-dir`, recorded in `member.json`): empty. On start, Raft finds no log
//!   but a state machine that applied index 1; it treats the log as purged up to there,
//!   takes the membership from the state machine, and does not initialize a new cluster (it
//!   already has one). Every member restored with the same `--initial-cluster` holds the same
//!   state at the same log id, so the first election proceeds as in any cluster, and the
//!   leader's log continues at index 2.

use std::path::{Path, PathBuf};

use openraft::impls::leader_id_adv::LeaderId;

use crate::raft::types::{LogId, Membership, StoredMembership};

use super::{DataDir, DataDirError, Identity};
use crate::config::ConfigError;
use crate::raft::state_machine::AppliedState;
use crate::raft::types::MemberNode;
use crate::storage::snapshot_file::{self, SnapshotFileError, SnapshotStatus};
use crate::storage::{MvccStore, StorageError};

/// The log index a restored member's state machine starts at.
const RESTORED_INDEX: u64 = 1;

/// `snapshot restore`'s flags (etcd's names).
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// `--name`.
    pub name: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--skip-hash-check`: accept a file without the hash trailer (a database copied from
    /// a member's data dir).
    pub skip_hash_check: bool,
    /// `--wal-dir`: the Raft log's directory, created empty (the member must then start
    /// with the same `--wal-dir`); `None`: `wal/` in the data dir.
    pub wal_dir: Option<PathBuf>,
}

/// Why a restore failed, one line each.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// etcdctl's wording, which names no path.
    #[error("{source}")]
    Snapshot {
        path: PathBuf,
        source: SnapshotFileError,
    },
    #[error("data-dir {0:?} exists")]
    DataDirExists(PathBuf),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot write the store: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot encode the applied state: {0}")]
    Encode(String),
    #[error("cannot sync {path}: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a snapshot file's status as etcdctl does (what `snapshot status` shows).
pub fn snapshot_status(path: &Path) -> Result<SnapshotStatus, RestoreError> {
    snapshot_file::status(path).map_err(|source| RestoreError::Snapshot {
        path: path.to_path_buf(),
        source,
    })
}

/// Restores `snapshot` into a new data dir (see the module comment for what it writes).
pub fn restore(snapshot: &Path, opts: &RestoreOptions) -> Result<SnapshotStatus, RestoreError> {
    let file = snapshot_file::read_etcd(snapshot, opts.skip_hash_check).map_err(|source| {
        RestoreError::Snapshot {
            path: snapshot.to_path_buf(),
            source,
        }
    })?;
    if opts.data_dir.exists() {
        return Err(RestoreError::DataDirExists(opts.data_dir.clone()));
    }
    let (member_id, members) = crate::config::restore_membership(
        &opts.name,
        &opts.initial_cluster,
        &opts.initial_advertise_peer_urls,
        &opts.initial_cluster_token,
    )?;
    let cluster_id = crate::config::cluster_id(members.keys().copied());
    let identity = Identity::new(
        &opts.name,
        member_id,
        cluster_id,
        &opts.initial_cluster_token,
    );
    let dir = DataDir::open_with_wal(&opts.data_dir, identity, true, opts.wal_dir.as_deref())?;
    let store = MvccStore::open_dir(&dir.path, &dir.db)?;
    store.install_rows(file.rows)?;
    let log_id = LogId::new(
        LeaderId {
            term: 0,
            node_id: 0,
        },
        RESTORED_INDEX,
    );
    let voters = members.keys().copied().collect();
    let nodes = members.iter().map(|(id, m)| {
        (
            *id,
            MemberNode {
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                client_urls: Vec::new(),
            },
        )
    });
    let applied = AppliedState {
        last_applied: Some(log_id),
        last_membership: StoredMembership::new(
            Some(log_id),
            Membership::new(
                vec![voters],
                nodes.collect::<std::collections::BTreeMap<_, _>>(),
            )
            .map_err(|e| ConfigError::BadInitialCluster(e.to_string()))?,
        ),
        in_progress: None,
    };
    let blob = crate::raft::codec::encode("applied state", &applied)
        .map_err(|e| RestoreError::Encode(e.to_string()))?;
    store.set_applied(&blob)?;
    // Flushes and fsyncs the store's own database.
    store.flush()?;
    // sled's flush does not fdatasync its file; the member's first start must find it all.
    let data_file = dir.sled_data_file();
    std::fs::File::open(&data_file)
        .and_then(|f| f.sync_all())
        .map_err(|source| RestoreError::Sync {
            path: data_file,
            source,
        })?;
    tracing::info!(
        data_dir = %opts.data_dir.display(),
        member_id = %format!("{member_id:x}"),
        cluster_id = %format!("{cluster_id:x}"),
        rev = file.status.revision,
        "restored snapshot"
    );
    Ok(file.status)
}
