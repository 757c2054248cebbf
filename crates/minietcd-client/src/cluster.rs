//! Membership requests: list, add, remove, update, promote.

use std::sync::Arc;

use crate::pb::etcdserverpb::{
    cluster_client::ClusterClient as PbClusterClient, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

use super::endpoints::{request, MAX_RECV_MSG_BYTES};
use super::{call_overrides, CallOverrides, ClientError, ClientInner};

/// Options of a member add.
#[derive(Debug, Clone, Default)]
pub struct MemberAddOptions {
    learner: bool,
    call: CallOverrides,
}

call_overrides!(MemberAddOptions);

impl MemberAddOptions {
    /// Default options (a voting member).
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds the member as a learner.
    pub fn learner(mut self) -> Self {
        self.learner = true;
        self
    }
}

/// Membership requests of a [`super::Client`].
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<ClientInner>,
}

fn pb(channel: tonic::transport::Channel) -> PbClusterClient<tonic::transport::Channel> {
    PbClusterClient::new(channel).max_decoding_message_size(MAX_RECV_MSG_BYTES)
}

impl ClusterClient {
    pub(crate) fn new(inner: Arc<ClientInner>) -> Self {
        ClusterClient { inner }
    }

    /// Lists the members.
    pub async fn member_list(&self) -> Result<MemberListResponse, ClientError> {
        let call = self.inner.call_options(CallOverrides::default());
        self.inner
            .endpoints
            .call(&call, true, |ch| {
                let req = request(
                    MemberListRequest {
                        linearizable: false,
                    },
                    &call,
                );
                async move { pb(ch).member_list(req).await }
            })
            .await
    }

    /// Adds a member with the given peer URLs.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        opts: MemberAddOptions,
    ) -> Result<MemberAddResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        let req = MemberAddRequest {
            peer_ur_ls: peer_urls,
            is_learner: opts.learner,
        };
        self.inner
            .endpoints
            .call(&call, false, |ch| {
                let req = request(req.clone(), &call);
                async move { pb(ch).member_add(req).await }
            })
            .await
    }

    /// Removes a member.
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse, ClientError> {
        let call = self.inner.call_options(CallOverrides::default());
        self.inner
            .endpoints
            .call(&call, false, |ch| {
                let req = request(MemberRemoveRequest { id }, &call);
                async move { pb(ch).member_remove(req).await }
            })
            .await
    }

    /// Changes a member's peer URLs.
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<MemberUpdateResponse, ClientError> {
        let call = self.inner.call_options(CallOverrides::default());
        let req = MemberUpdateRequest {
            id,
            peer_ur_ls: peer_urls,
        };
        self.inner
            .endpoints
            .call(&call, false, |ch| {
                let req = request(req.clone(), &call);
                async move { pb(ch).member_update(req).await }
            })
            .await
    }

    /// Promotes a learner to a voting member.
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse, ClientError> {
        let call = self.inner.call_options(CallOverrides::default());
        self.inner
            .endpoints
            .call(&call, false, |ch| {
                let req = request(MemberPromoteRequest { id }, &call);
                async move { pb(ch).member_promote(req).await }
            })
            .await
    }
}
