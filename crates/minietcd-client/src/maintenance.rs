//! Maintenance requests: member status and snapshots.

use std::sync::Arc;

use crate::pb::etcdserverpb::{
    maintenance_client::MaintenanceClient as PbMaintenanceClient, SnapshotRequest,
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

    /// The current member's status (version, db size, leader, raft index and term).
    pub async fn status(&self, opts: MaintenanceOptions) -> Result<StatusResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        let (_, member) = self.inner.endpoints.current();
        let req = request(StatusRequest {}, &call);
        match tokio::time::timeout(call.timeout, pb(member.channel).status(req)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(ClientError::from_status(&status)),
            Err(_) => Err(ClientError::Timeout(call.timeout)),
        }
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
