//! The Maintenance service, etcd's operator calls: Status (`etcdctl endpoint status` and
//! `health`), Hash and HashKV (`endpoint hashkv`), Alarm (`alarm list|disarm`, and the
//! NOSPACE alarm the space quota raises, see [`super::quota`]), Defragment (`defrag`),
//! Snapshot (`snapshot save`: etcd's bbolt file, see [`crate::storage::snapshot_file`]) and MoveLeader (`move-leader`, see `admin::move_leader`).
//! Downgrade (etcd 3.5) answers Unimplemented. The work is the store's; this layer
//! validates, delegates and fills headers.

use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};

use super::admin::members_of;
use super::admin::Admin;
use super::{ApiError, ServerContext};
use crate::pb::minietcdpb::internal_request::Request as Write;
use crate::pb::minietcdpb::internal_response::Response as Applied;
use crate::raft::state_machine::AppliedState;
use crate::storage::snapshot_file::{self, ExportInfo, ExportMember, SnapshotFileError};
use crate::storage::{MvccStore, StorageError};
use tokio::io::AsyncReadExt;

/// Bytes per Snapshot message (etcd sends 32 KiB chunks).
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

/// The etcd release whose v3 API minietcd serves; clients read it from Status.
pub const ETCD_API_VERSION: &str = "3.4.23";

/// The Maintenance gRPC service.
pub struct MaintenanceService {
    ctx: ServerContext,
    /// MoveLeader runs on the leader's admin.
    admin: Admin,
    /// The leader as clients should see it (see [`Self::new`]).
    leader: tokio::sync::watch::Receiver<Option<u64>>,
}

impl MaintenanceService {
    /// Status reports the leader `leader` shows (etcd's CheckQuorum: a leader that lost its
    /// quorum names no leader), not openraft's own view.
    pub fn new(
        ctx: ServerContext,
        admin: Admin,
        leader: tokio::sync::watch::Receiver<Option<u64>>,
    ) -> Self {
        MaintenanceService { ctx, admin, leader }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

/// Runs blocking store work (whole-store scans) off the runtime's worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| Status::from(ApiError::from(e))),
        Err(e) => Err(Status::from(ApiError::Internal(e.to_string()))),
    }
}

/// Names scratch files of snapshots being sent apart.
static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes the store as etcd's snapshot file (see [`snapshot_file`]) into an unnamed scratch
/// file in the data dir: its name is removed at once, so the file goes when the stream that
/// reads it ends, whatever way it ends, and nothing is left after a crash. The rows are read
/// under the store's apply lock (one consistent state); only the file, not the snapshot,
/// is in memory. Returns the file at its start, its size and the snapshot's revision.
fn write_snapshot(
    store: &MvccStore,
    info: &ExportInfo,
) -> Result<(std::fs::File, u64, i64), SnapshotFileError> {
    let dir = store
        .data_dir()
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    let seq = SNAPSHOT_SEQ.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("snapshot-{}-{seq}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    let (size, rev) = store.with_rows(|rows| {
        let rev = store.current_revision();
        let size = snapshot_file::write_etcd(&mut file, rows, info)?;
        Ok::<_, SnapshotFileError>((size, rev))
    })?;
    file.seek(SeekFrom::Start(0))?;
    Ok((file, size, rev))
}

/// The Raft index the store's `applied` blob names: etcd's consistent index.
fn applied_index(blob: &[u8]) -> u64 {
    crate::raft::codec::decode::<AppliedState>("applied state", blob)
        .ok()
        .and_then(|a| a.last_applied)
        .map_or(0, |l| l.index)
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented by minietcd yet"))
}

/// An alarm as etcd's Status lists it: gogoproto's compact text form of an AlarmMember,
/// trailing space included.
fn alarm_text(member_id: u64, alarm: i32) -> String {
    let name = AlarmType::try_from(alarm)
        .map_or_else(|_| alarm.to_string(), |a| a.as_str_name().to_string());
    if alarm == 0 {
        format!("memberID:{member_id} ")
    } else {
        format!("memberID:{member_id} alarm:{name} ")
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let m = self.ctx.header.metrics();
        let me = self.ctx.header.member_id();
        let is_learner = !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == me);
        let db_size = i64::try_from(self.ctx.quota.db_size_now()).unwrap_or(i64::MAX);
        let store = self.ctx.store.clone();
        let in_use = blocking(move || store.size_in_use()).await?;
        // sled's file holds more than the rows (its own pages and log); never report more in
        // use than the file's size.
        let db_size_in_use = i64::try_from(in_use).unwrap_or(i64::MAX).min(db_size);
        let leader = *self.leader.borrow();
        let mut errors = Vec::new();
        if leader.is_none() {
            errors.push("etcdserver: no leader".to_string());
        }
        // etcd lists each active alarm in its protobuf text form.
        let alarms = self.ctx.store.alarms().map_err(ApiError::from)?;
        errors.extend(alarms.into_iter().map(|(id, a)| alarm_text(id, a)));
        Ok(Response::new(StatusResponse {
            header: Some(self.ctx.header.at(self.ctx.store.current_revision())),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            errors,
            db_size_in_use,
            is_learner,
        }))
    }

    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        // Every action goes through Raft, GET included, as in etcd: the answer reflects
        // every alarm committed before it.
        match self.ctx.propose(Write::Alarm(req.into_inner())).await? {
            // etcd 3.4 answers alarms without a header (etcdctl's `-w json` prints `{}`).
            (Applied::Alarm(mut resp), _) => {
                resp.header = None;
                Ok(Response::new(resp))
            }
            _ => Err(Status::internal("alarm: unexpected apply response")),
        }
    }

    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.ctx.check_admin_unconverted(req.metadata())?;
        let store = self.ctx.store.clone();
        let d = blocking(move || store.defragment()).await?;
        tracing::info!(
            before_bytes = d.before_bytes,
            after_bytes = d.after_bytes,
            "finished defragmenting"
        );
        // The next quota check measures the new size.
        self.ctx.quota.db_size_now();
        Ok(Response::new(DefragmentResponse {
            header: Some(self.ctx.header.at(self.ctx.store.current_revision())),
        }))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.ctx.check_admin_unconverted(req.metadata())?;
        let store = self.ctx.store.clone();
        let (hash, rev) = blocking(move || store.hash()).await?;
        Ok(Response::new(HashResponse {
            header: Some(self.ctx.header.at(rev)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.ctx.check_admin_unconverted(req.metadata())?;
        let rev = req.get_ref().revision;
        let store = self.ctx.store.clone();
        let h = blocking(move || store.hash_kv(rev)).await?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.ctx.header.at(h.current)),
            hash: h.hash,
            compact_revision: h.compacted,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.ctx.check_admin_unconverted(req.metadata())?;
        let store = self.ctx.store.clone();
        let membership = self.ctx.header.metrics().membership_config;
        let info = ExportInfo {
            members: members_of(membership.membership())
                .into_iter()
                .map(|m| ExportMember {
                    id: m.id,
                    name: m.name,
                    peer_urls: m.peer_ur_ls,
                    client_urls: m.client_ur_ls,
                })
                .collect(),
            applied_index,
        };
        let written = tokio::task::spawn_blocking(move || write_snapshot(&store, &info)).await;
        let (file, total, rev) = match written {
            Ok(Ok(w)) => w,
            Ok(Err(SnapshotFileError::Store(e))) => return Err(ApiError::from(e).into()),
            Ok(Err(e)) => return Err(ApiError::Internal(format!("snapshot: {e}")).into()),
            Err(e) => return Err(ApiError::Internal(e.to_string()).into()),
        };
        let header = self.ctx.header.at(rev);
        tracing::info!(bytes = total, rev, "sending a snapshot");
        let file = tokio::fs::File::from_std(file);
        let chunks = futures::stream::unfold(Some((file, total)), move |state| async move {
            let (mut file, remaining) = state?;
            if remaining == 0 {
                return None;
            }
            let n = usize::try_from(remaining)
                .unwrap_or(SNAPSHOT_CHUNK_BYTES)
                .min(SNAPSHOT_CHUNK_BYTES);
            let mut blob = vec![0u8; n];
            match file.read_exact(&mut blob).await {
                Ok(_) => {
                    let left = remaining - n as u64;
                    let msg = SnapshotResponse {
                        header: Some(header),
                        remaining_bytes: left,
                        blob,
                    };
                    Some((Ok(msg), Some((file, left))))
                }
                Err(e) => Some((
                    Err(Status::internal(format!("reading the snapshot file: {e}"))),
                    None,
                )),
            }
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.admin.move_leader(req.get_ref().target_id).await?;
        // etcd 3.4's answer carries no header either.
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
