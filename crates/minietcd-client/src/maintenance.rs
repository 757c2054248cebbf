//! Maintenance requests: member status, hashes, defragmentation, alarms, leadership
//! transfer and snapshots.

use std::future::Future;
use std::sync::Arc;

use tonic::transport::Channel;

use crate::pb::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_client::MaintenanceClient as PbMaintenanceClient,
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    HashKvRequest, HashKvResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};

use super::endpoints::{request, MAX_RECV_MSG_BYTES};
use super::{call_overrides, CallOverrides, ClientError, ClientInner};

/// Options of maintenance requests.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceOptions {
    call: CallOverrides,
}

call_overrides!(MaintenanceOptions);

impl MaintenanceOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Maintenance requests of a [`super::Client`]. They go to the current member only, never
/// failing over: a status or snapshot is about one member in particular.
#[derive(Clone)]
pub struct MaintenanceClient {
    inner: Arc<ClientInner>,
}

/// The chunks of a snapshot, in order.
pub struct SnapshotStream {
    stream: tonic::Streaming<SnapshotResponse>,
}

impl SnapshotStream {
    /// The next chunk; `Ok(None)` after the last one.
    pub async fn message(&mut self) -> Result<Option<SnapshotResponse>, ClientError> {
        self.stream
            .message()
            .await
            .map_err(|s| ClientError::from_status(&s))
    }
}

fn pb(channel: tonic::transport::Channel) -> PbMaintenanceClient<tonic::transport::Channel> {
    PbMaintenanceClient::new(channel).max_decoding_message_size(MAX_RECV_MSG_BYTES)
}

impl MaintenanceClient {
    pub(crate) fn new(inner: Arc<ClientInner>) -> Self {
        MaintenanceClient { inner }
    }

    /// One unary call to the current member, bounded by the request timeout.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        opts: MaintenanceOptions,
        msg: Req,
        f: F,
    ) -> Result<Resp, ClientError>
    where
        F: FnOnce(PbMaintenanceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let call = self.inner.call_options(opts.call);
        let (_, member) = self.inner.endpoints.current();
        let req = request(msg, &call);
        match tokio::time::timeout(call.timeout, f(pb(member.channel), req)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(ClientError::from_status(&status)),
            Err(_) => Err(ClientError::Timeout(call.timeout)),
        }
    }

    /// The current member's status (version, db size, leader, raft index and term).
    pub async fn status(&self, opts: MaintenanceOptions) -> Result<StatusResponse, ClientError> {
        self.unary(opts, StatusRequest {}, |mut c, r| async move {
            c.status(r).await
        })
        .await
    }

    /// The hash of the current member's key-value history up to `revision` (0: all of it).
    pub async fn hash_kv(
        &self,
        revision: i64,
        opts: MaintenanceOptions,
    ) -> Result<HashKvResponse, ClientError> {
        self.unary(opts, HashKvRequest { revision }, |mut c, r| async move {
            c.hash_kv(r).await
        })
        .await
    }

    /// Defragments the current member's backend.
    pub async fn defragment(
        &self,
        opts: MaintenanceOptions,
    ) -> Result<DefragmentResponse, ClientError> {
        self.unary(opts, DefragmentRequest {}, |mut c, r| async move {
            c.defragment(r).await
        })
        .await
    }

    /// Every active alarm of the cluster.
    pub async fn alarm_list(&self, opts: MaintenanceOptions) -> Result<AlarmResponse, ClientError> {
        let req = AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: AlarmType::None as i32,
        };
        self.unary(opts, req, |mut c, r| async move { c.alarm(r).await })
            .await
    }

    /// Disarms `alarm` raised by `member_id` (0 and `AlarmType::None`: every alarm, as
    /// clientv3's `AlarmDisarm` with an empty member does); answers the alarms disarmed.
    pub async fn alarm_disarm(
        &self,
        alarm: AlarmMember,
        opts: MaintenanceOptions,
    ) -> Result<AlarmResponse, ClientError> {
        if alarm.member_id == 0 && alarm.alarm == AlarmType::None as i32 {
            // clientv3 lists the alarms and disarms each one; its answer has no header.
            let listed = self.alarm_list(opts.clone()).await?;
            let mut out = AlarmResponse::default();
            for a in listed.alarms {
                let resp = self.deactivate(a, opts.clone()).await?;
                out.alarms.extend(resp.alarms);
            }
            return Ok(out);
        }
        self.deactivate(alarm, opts).await
    }

    async fn deactivate(
        &self,
        alarm: AlarmMember,
        opts: MaintenanceOptions,
    ) -> Result<AlarmResponse, ClientError> {
        let req = AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: alarm.member_id,
            alarm: alarm.alarm,
        };
        self.unary(opts, req, |mut c, r| async move { c.alarm(r).await })
            .await
    }

    /// Asks the current member, which must lead, to hand leadership to `target_id`.
    pub async fn move_leader(
        &self,
        target_id: u64,
        opts: MaintenanceOptions,
    ) -> Result<MoveLeaderResponse, ClientError> {
        self.unary(
            opts,
            MoveLeaderRequest { target_id },
            |mut c, r| async move { c.move_leader(r).await },
        )
        .await
    }

    /// Streams a snapshot of the current member's backend. The deadline covers opening the
    /// stream only, since a large snapshot may take longer than any request.
    pub async fn snapshot(&self, opts: MaintenanceOptions) -> Result<SnapshotStream, ClientError> {
        let call = self.inner.call_options(opts.call);
        let (_, member) = self.inner.endpoints.current();
        let mut req = tonic::Request::new(SnapshotRequest {});
        super::auth::add_token(&mut req, call.login.as_deref());
        if call.require_leader {
            req.metadata_mut().insert(
                super::endpoints::REQUIRE_LEADER_KEY,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        match tokio::time::timeout(call.timeout, pb(member.channel).snapshot(req)).await {
            Ok(Ok(resp)) => Ok(SnapshotStream {
                stream: resp.into_inner(),
            }),
            Ok(Err(status)) => Err(ClientError::from_status(&status)),
            Err(_) => Err(ClientError::Timeout(call.timeout)),
        }
    }
}
