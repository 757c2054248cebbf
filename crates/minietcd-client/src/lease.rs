//! Lease requests: grant, revoke, keep-alive (a bidirectional stream), time-to-live, list.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::pb::etcdserverpb::{
    lease_client::LeaseClient as PbLeaseClient, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

use super::endpoints::{request, MAX_RECV_MSG_BYTES};
use super::{call_overrides, CallOverrides, ClientError, ClientInner};

/// Keep-alive requests queued ahead of the stream; a keeper that outpaces the server waits.
const KEEP_ALIVE_QUEUE: usize = 16;

/// Options of lease requests.
#[derive(Debug, Clone, Default)]
pub struct LeaseOptions {
    id: i64,
    keys: bool,
    call: CallOverrides,
}

call_overrides!(LeaseOptions);

impl LeaseOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Grant: asks for this lease id instead of a server-chosen one.
    pub fn id(mut self, id: i64) -> Self {
        self.id = id;
        self
    }
    /// Time-to-live: also lists the keys attached to the lease.
    pub fn with_keys(mut self) -> Self {
        self.keys = true;
        self
    }
}

/// Lease requests of a [`super::Client`].
#[derive(Clone)]
pub struct LeaseClient {
    inner: Arc<ClientInner>,
}

fn pb(channel: tonic::transport::Channel) -> PbLeaseClient<tonic::transport::Channel> {
    PbLeaseClient::new(channel).max_decoding_message_size(MAX_RECV_MSG_BYTES)
}

/// Sends keep-alive requests for one lease on its stream.
pub struct LeaseKeeper {
    /// The lease kept alive.
    id: i64,
    /// Requests towards the stream's send half.
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
}

impl LeaseKeeper {
    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }
    /// Sends one keep-alive; its answer arrives on the [`LeaseKeepAliveStream`].
    pub async fn keep_alive(&self) -> Result<(), ClientError> {
        self.tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| ClientError::Closed)
    }
}

/// The answers to a [`LeaseKeeper`]'s keep-alives.
pub struct LeaseKeepAliveStream {
    stream: tonic::Streaming<LeaseKeepAliveResponse>,
}

impl LeaseKeepAliveStream {
    /// The next answer; `Ok(None)` when the server closed the stream. An answer with a TTL of
    /// 0 or less means the lease expired or was revoked.
    pub async fn message(&mut self) -> Result<Option<LeaseKeepAliveResponse>, ClientError> {
        self.stream
            .message()
            .await
            .map_err(|s| ClientError::from_status(&s))
    }
}

impl LeaseClient {
    pub(crate) fn new(inner: Arc<ClientInner>) -> Self {
        LeaseClient { inner }
    }

    /// Grants a lease of `ttl` seconds.
    pub async fn grant(
        &self,
        ttl: i64,
        opts: LeaseOptions,
    ) -> Result<LeaseGrantResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        let req = LeaseGrantRequest { ttl, id: opts.id };
        self.inner
            .endpoints
            .call(&call, false, |ch| {
                let req = request(req, &call);
                async move { pb(ch).lease_grant(req).await }
            })
            .await
    }

    /// Revokes a lease, deleting its keys.
    pub async fn revoke(
        &self,
        id: i64,
        opts: LeaseOptions,
    ) -> Result<LeaseRevokeResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        let req = LeaseRevokeRequest { id };
        self.inner
            .endpoints
            .call(&call, false, |ch| {
                let req = request(req, &call);
                async move { pb(ch).lease_revoke(req).await }
            })
            .await
    }

    /// A lease's remaining and granted TTL (and keys, if asked).
    pub async fn time_to_live(
        &self,
        id: i64,
        opts: LeaseOptions,
    ) -> Result<LeaseTimeToLiveResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        let req = LeaseTimeToLiveRequest {
            id,
            keys: opts.keys,
        };
        self.inner
            .endpoints
            .call(&call, true, |ch| {
                let req = request(req, &call);
                async move { pb(ch).lease_time_to_live(req).await }
            })
            .await
    }

    /// Every live lease.
    pub async fn leases(&self, opts: LeaseOptions) -> Result<LeaseLeasesResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        self.inner
            .endpoints
            .call(&call, true, |ch| {
                let req = request(LeaseLeasesRequest {}, &call);
                async move { pb(ch).lease_leases(req).await }
            })
            .await
    }

    /// Opens a keep-alive stream for lease `id` and sends the first keep-alive.
    ///
    /// The first request is queued before the call is awaited: a gRPC server may hold back its
    /// response headers until it has something to send, and the call only completes once they
    /// arrive.
    pub async fn keep_alive(
        &self,
        id: i64,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream), ClientError> {
        let call = self.inner.call_options(CallOverrides::default());
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_QUEUE);
        tx.send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| ClientError::Closed)?;
        let (_, member) = self.inner.endpoints.current();
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        super::auth::add_token(&mut req, call.login.as_deref());
        if call.require_leader {
            req.metadata_mut().insert(
                super::endpoints::REQUIRE_LEADER_KEY,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        let mut client = pb(member.channel);
        let open = client.lease_keep_alive(req);
        let stream = match tokio::time::timeout(call.timeout, open).await {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => return Err(ClientError::from_status(&status)),
            Err(_) => return Err(ClientError::Timeout(call.timeout)),
        };
        Ok((LeaseKeeper { id, tx }, LeaseKeepAliveStream { stream }))
    }
}
