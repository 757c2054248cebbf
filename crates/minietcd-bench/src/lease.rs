//! `lease-keepalive`: each worker grants one lease, opens one LeaseKeepAlive stream and times
//! request/response round trips on it, as a client library keeping a session alive does.

use super::cli::LeaseKeepaliveArgs;
use super::conn::Connections;
use super::error::{BenchError, Result};
use super::report::PhaseReport;
use super::runner::run_closed_loop;
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;

/// TTL of the benchmark's leases: long enough never to expire during a run, short enough that
/// leases left by an interrupted run go away by themselves.
const LEASE_TTL_SECS: i64 = 60;
/// Keep-alive requests queued per stream; a worker has at most one in flight.
const KEEPALIVE_QUEUE: usize = 4;

/// One worker's lease stream: requests go in through `tx`, answers come out of `rx`.
struct KeepAliveStream {
    lease_id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    rx: Streaming<LeaseKeepAliveResponse>,
}

impl KeepAliveStream {
    async fn round_trip(&mut self) -> Result<(), tonic::Status> {
        self.tx
            .send(LeaseKeepAliveRequest { id: self.lease_id })
            .await
            .map_err(|_| tonic::Status::cancelled("keep-alive stream closed"))?;
        match self.rx.message().await? {
            Some(resp) if resp.ttl > 0 => Ok(()),
            Some(_) => Err(tonic::Status::not_found(
                "etcdserver: requested lease not found",
            )),
            None => Err(tonic::Status::cancelled("keep-alive stream ended")),
        }
    }
}

/// Runs the workload; grants before timing and revokes after.
pub async fn lease_keepalive(
    conns: &Connections,
    clients: usize,
    args: &LeaseKeepaliveArgs,
) -> Result<PhaseReport> {
    let mut streams = Vec::with_capacity(clients);
    let mut lease_clients = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut lc = LeaseClient::new(conns.channel(i));
        let grant = lc
            .lease_grant(LeaseGrantRequest {
                ttl: LEASE_TTL_SECS,
                id: 0,
            })
            .await
            .map_err(|e| BenchError::Setup(format!("lease grant: {e}")))?
            .into_inner();
        let (tx, rx_req) = mpsc::channel(KEEPALIVE_QUEUE);
        // A gRPC server may hold back the response headers of a stream until it has a message
        // to send, so the call only completes after a first request: queue one before calling.
        tx.send(LeaseKeepAliveRequest { id: grant.id })
            .await
            .map_err(|_| BenchError::Setup("lease keep-alive queue closed".into()))?;
        let mut rx = lc
            .lease_keep_alive(ReceiverStream::new(rx_req))
            .await
            .map_err(|e| BenchError::Setup(format!("lease keep-alive stream: {e}")))?
            .into_inner();
        rx.message()
            .await
            .map_err(|e| BenchError::Setup(format!("first lease keep-alive: {e}")))?
            .ok_or_else(|| BenchError::Setup("lease keep-alive stream ended at once".into()))?;
        streams.push(Arc::new(Mutex::new(KeepAliveStream {
            lease_id: grant.id,
            tx,
            rx,
        })));
        lease_clients.push((lc, grant.id));
    }
    let streams = Arc::new(streams);
    let s2 = Arc::clone(&streams);
    let report = run_closed_loop(
        "lease-keepalive",
        clients,
        args.total,
        args.rate,
        move |worker, _| {
            let stream = Arc::clone(&s2[worker]);
            async move { stream.lock().await.round_trip().await }
        },
    )
    .await;
    drop(streams);
    for (mut lc, id) in lease_clients {
        if let Err(e) = lc.lease_revoke(LeaseRevokeRequest { id }).await {
            tracing::warn!(lease_id = id, error = %e, "revoking the benchmark lease failed");
        }
    }
    Ok(report)
}
