//! The Election service (etcd's `v3election`, on clientv3 concurrency's `Election`).
//!
//! A candidate's key is `name/<lease hex>`, bound to its lease, its value the candidate's
//! proclamation. The leader is the candidate with the oldest key. Campaign puts the key (or
//! finds it, and proclaims the new value if it differs), then waits for the deletion of every
//! older candidate key. A leadership is identified by its [`LeaderKey`] (key and create
//! revision): Proclaim and Resign only act while that key still exists with that revision.
//! Observe follows the leader key: every put to it is a proclamation, its deletion passes the
//! watch on to the next leader.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{DeleteRangeRequest, RequestOp, ResponseHeader, TxnRequest};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};

use super::concurrency::{
    create_revision_is, first_created, get_op, go_error, lease_key, prefix_of, put_op, range_kvs,
    LocalClient,
};
use super::watch::SERVER_STOPPED;

/// etcd's `ErrMissingLeaderKey`.
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// concurrency's `ErrElectionNotLeader`.
const NOT_LEADER: &str = "election: not leader";
/// concurrency's `ErrElectionNoLeader`.
const NO_LEADER: &str = "election: no leader";

/// Leader responses buffered on one Observe stream; beyond it the observer waits (the watch
/// behind it then buffers in the store's watcher channel, as any slow watch stream).
const OBSERVE_BUFFER: usize = 16;

/// The Election gRPC service.
pub struct ElectionService {
    client: Arc<LocalClient>,
}

impl ElectionService {
    pub fn new(client: Arc<LocalClient>) -> Self {
        ElectionService { client }
    }
}

/// Resigns a candidacy whose Campaign request is dropped before it is elected (etcd's
/// Campaign resigns when its context ends while waiting).
struct CandidateGuard {
    client: Arc<LocalClient>,
    /// The candidate's key and its create revision; None once disarmed.
    key: Option<(Vec<u8>, i64)>,
}

impl CandidateGuard {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for CandidateGuard {
    fn drop(&mut self) {
        if let Some((key, rev)) = self.key.take() {
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = resign(&client, &key, rev).await {
                    tracing::debug!(error = %e, "resigning an abandoned candidacy");
                }
            });
        }
    }
}

/// Deletes `key` if it still has create revision `rev`; answers the txn's header.
async fn resign(c: &LocalClient, key: &[u8], rev: i64) -> Result<Option<ResponseHeader>, Status> {
    let delete = RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    };
    let resp = c
        .txn(TxnRequest {
            compare: vec![create_revision_is(key, rev)],
            success: vec![delete],
            failure: vec![],
        })
        .await?;
    Ok(resp.header)
}

/// Puts `value` on `key` (bound to `lease`) if it still has create revision `rev`.
async fn proclaim(
    c: &LocalClient,
    key: &[u8],
    rev: i64,
    lease: i64,
    value: &[u8],
) -> Result<Option<ResponseHeader>, Status> {
    let resp = c
        .txn(TxnRequest {
            compare: vec![create_revision_is(key, rev)],
            success: vec![put_op(key, value, lease)],
            failure: vec![],
        })
        .await?;
    if !resp.succeeded {
        return Err(go_error(NOT_LEADER));
    }
    Ok(resp.header)
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Election for ElectionService {
    #[instrument(skip_all, fields(lease = req.get_ref().lease))]
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let req = req.into_inner();
        let c = &self.client;
        let lease = c.session_lease(req.lease).await?;
        let prefix = prefix_of(&req.name);
        let key = lease_key(&prefix, lease);
        let resp = c
            .txn(TxnRequest {
                compare: vec![create_revision_is(&key, 0)],
                success: vec![put_op(&key, &req.value, lease)],
                failure: vec![get_op(&key)],
            })
            .await?;
        let mut rev = resp.header.as_ref().map_or(0, |h| h.revision);
        if !resp.succeeded {
            let existing = range_kvs(&resp, 0).first();
            rev = existing.map_or(0, |kv| kv.create_revision);
            if existing.is_some_and(|kv| kv.value != req.value) {
                if let Err(e) = proclaim(c, &key, rev, lease, &req.value).await {
                    let _ = resign(c, &key, rev).await;
                    return Err(e);
                }
            }
        }
        let guard = CandidateGuard {
            client: c.clone(),
            key: Some((key.clone(), rev)),
        };
        let waited = c.wait_deletes(&prefix, rev - 1).await;
        guard.disarm();
        waited?;
        Ok(Response::new(CampaignResponse {
            header: resp.header,
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev,
                lease,
            }),
        }))
    }

    #[instrument(skip_all)]
    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let req = req.into_inner();
        let leader = req.leader.ok_or_else(|| go_error(MISSING_LEADER_KEY))?;
        let lease = self.client.session_lease(leader.lease).await?;
        let header = proclaim(&self.client, &leader.key, leader.rev, lease, &req.value).await?;
        Ok(Response::new(ProclaimResponse { header }))
    }

    #[instrument(skip_all)]
    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let prefix = prefix_of(&req.into_inner().name);
        let resp = self.client.range(first_created(&prefix)).await?;
        let kv = resp
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| go_error(NO_LEADER))?;
        Ok(Response::new(LeaderResponse {
            header: resp.header,
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    #[instrument(skip_all)]
    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = prefix_of(&req.into_inner().name);
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
        let client = self.client.clone();
        tokio::spawn(async move {
            // The observer may leave while nothing happens: stop watching then too.
            tokio::select! {
                () = observe(&client, &prefix, &tx) => {}
                () = tx.closed() => {}
                () = client.stopped() => {
                    let _ = tx.send(Err(Status::unavailable(SERVER_STOPPED))).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all)]
    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let leader = req
            .into_inner()
            .leader
            .ok_or_else(|| go_error(MISSING_LEADER_KEY))?;
        // etcd opens a session on the leader's lease first (granting one if it is 0).
        self.client.session_lease(leader.lease).await?;
        let header = resign(&self.client, &leader.key, leader.rev).await?;
        Ok(Response::new(ResignResponse { header }))
    }
}

type ObserveTx = mpsc::Sender<Result<LeaderResponse, Status>>;

/// concurrency's `Election.observe`: sends the current leader's value, then every later value
/// of its key; when the key is deleted, starts over with the next leader. Ends (closing the
/// stream without error, as etcd's does) when the observer leaves or a read or watch fails.
async fn observe(c: &LocalClient, prefix: &[u8], tx: &ObserveTx) {
    loop {
        let Ok(resp) = c.range(first_created(prefix)).await else {
            return;
        };
        let (header, kv) = match resp.kvs.into_iter().next() {
            Some(kv) => (resp.header, kv),
            None => {
                let from = resp.header.as_ref().map_or(0, |h| h.revision);
                let Some(first) = first_put(c, prefix, from).await else {
                    return;
                };
                first
            }
        };
        let rev = header.as_ref().map_or(0, |h| h.revision);
        let key = kv.key.clone();
        if !send(tx, header, kv).await {
            return;
        }
        let mut watch = c.watch(&key, Vec::new(), rev + 1);
        'deleted: loop {
            let Some(d) = watch.next().await else { return };
            if d.compact_revision != 0 {
                return;
            }
            for ev in d.events.iter() {
                if ev.r#type == EventType::Delete as i32 {
                    break 'deleted;
                }
                let header = Some(c.header_at(d.revision));
                if !send(tx, header, ev.kv.clone().unwrap_or_default()).await {
                    return;
                }
            }
        }
    }
}

/// Waits for the first put under `prefix` from revision `from`; its header reports the
/// put's revision.
async fn first_put(
    c: &LocalClient,
    prefix: &[u8],
    from: i64,
) -> Option<(Option<ResponseHeader>, KeyValue)> {
    let mut watch = c.watch(prefix, minietcd_client::prefix_range_end(prefix), from);
    loop {
        let d = watch.next().await?;
        if d.compact_revision != 0 {
            return None;
        }
        let put = d
            .events
            .iter()
            .find(|ev| ev.r#type == EventType::Put as i32)
            .and_then(|ev| ev.kv.clone());
        if let Some(kv) = put {
            return Some((Some(c.header_at(kv.mod_revision)), kv));
        }
    }
}

/// Sends one leader response; false once the observer has gone.
async fn send(tx: &ObserveTx, header: Option<ResponseHeader>, kv: KeyValue) -> bool {
    let resp = LeaderResponse {
        header,
        kv: Some(kv),
    };
    tx.send(Ok(resp)).await.is_ok()
}
