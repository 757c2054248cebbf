//! The KV workloads: `put`, `range` and `txn-put`, each a closed loop of unary calls.

use super::cli::{Consistency, PutArgs, RangeArgs, TxnPutArgs};
use super::conn::Connections;
use super::error::{BenchError, Result};
use super::keys;
use super::report::PhaseReport;
use super::runner::run_closed_loop;
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::Rng;
use std::sync::Arc;
use tonic::transport::Channel;

/// One KV client per worker, on the worker's connection.
fn kv_clients(conns: &Connections, clients: usize) -> Arc<Vec<KvClient<Channel>>> {
    Arc::new(
        (0..clients)
            .map(|i| KvClient::new(conns.channel(i)))
            .collect(),
    )
}

fn check_key_space(key_size: usize, key_space_size: u64) -> Result<()> {
    if key_size == 0 {
        return Err(BenchError::InvalidArgs(
            "--key-size must be at least 1".into(),
        ));
    }
    if key_space_size == 0 {
        return Err(BenchError::InvalidArgs(
            "--key-space-size must be at least 1".into(),
        ));
    }
    Ok(())
}

/// `put`: random (or sequential) keys from the key space, one value shared by every request.
pub async fn put(conns: &Connections, clients: usize, args: &PutArgs) -> Result<PhaseReport> {
    check_key_space(args.key_size, args.key_space_size)?;
    let kvs = kv_clients(conns, clients);
    let value = Arc::new(vec![b'v'; args.val_size]);
    let (key_size, space, sequential) = (args.key_size, args.key_space_size, args.sequential_keys);
    Ok(
        run_closed_loop("put", clients, args.total, args.rate, move |worker, seq| {
            let n = if sequential {
                seq % space
            } else {
                rand::thread_rng().gen_range(0..space)
            };
            let req = PutRequest {
                key: keys::key(n, key_size),
                value: value.as_ref().clone(),
                ..Default::default()
            };
            let mut kv = kvs[worker].clone();
            async move { kv.put(req).await.map(|_| ()) }
        })
        .await,
    )
}

/// `range`: the same range request `--total` times.
pub async fn range(
    conns: &Connections,
    clients: usize,
    consistency: Consistency,
    args: &RangeArgs,
) -> Result<PhaseReport> {
    let kvs = kv_clients(conns, clients);
    let req = RangeRequest {
        key: args.key.as_bytes().to_vec(),
        range_end: args
            .end
            .as_deref()
            .map(|e| e.as_bytes().to_vec())
            .unwrap_or_default(),
        serializable: consistency == Consistency::S,
        ..Default::default()
    };
    Ok(
        run_closed_loop("range", clients, args.total, args.rate, move |worker, _| {
            let mut kv = kvs[worker].clone();
            let req = req.clone();
            async move { kv.range(req).await.map(|_| ()) }
        })
        .await,
    )
}

/// `txn-put`: txns of `--txn-ops` puts on consecutive (hence distinct) keys of the key space.
pub async fn txn_put(
    conns: &Connections,
    clients: usize,
    args: &TxnPutArgs,
) -> Result<PhaseReport> {
    check_key_space(args.key_size, args.key_space_size)?;
    if args.txn_ops == 0 || args.txn_ops as u64 > args.key_space_size {
        return Err(BenchError::InvalidArgs(format!(
            "--txn-ops ({}) must be between 1 and --key-space-size ({}): a txn may not repeat a key",
            args.txn_ops, args.key_space_size
        )));
    }
    let kvs = kv_clients(conns, clients);
    let value = Arc::new(vec![b'v'; args.val_size]);
    let (key_size, space, ops) = (args.key_size, args.key_space_size, args.txn_ops as u64);
    Ok(run_closed_loop(
        "txn-put",
        clients,
        args.total,
        args.rate,
        move |worker, _| {
            let base = rand::thread_rng().gen_range(0..space);
            let success = (0..ops)
                .map(|j| RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: keys::key((base + j) % space, key_size),
                        value: value.as_ref().clone(),
                        ..Default::default()
                    })),
                })
                .collect();
            let req = TxnRequest {
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            };
            let mut kv = kvs[worker].clone();
            async move { kv.txn(req).await.map(|_| ()) }
        },
    )
    .await)
}
