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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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

/// Largest response a range may receive, as etcd's Go client allows (`math.MaxInt32`): a
/// range over many keys exceeds tonic's default of 4 MiB.
const MAX_RANGE_RESPONSE_BYTES: usize = i32::MAX as usize;

/// What the last range response carried, so that the report can show what was read.
#[derive(Debug, Default)]
struct LastResponse {
    seen: AtomicBool,
    kvs: AtomicU64,
    count: AtomicI64,
    more: AtomicBool,
}

/// The range request `args` describe.
fn range_request(consistency: Consistency, args: &RangeArgs) -> RangeRequest {
    let (key, range_end) = if args.from_key {
        // etcd reads [KEY, end of key space) when range_end is "\0"; an empty KEY starts at
        // the smallest key, as etcdctl's `get --from-key ''` does.
        let key = if args.key.is_empty() {
            vec![0]
        } else {
            args.key.as_bytes().to_vec()
        };
        (key, vec![0])
    } else {
        (
            args.key.as_bytes().to_vec(),
            args.end
                .as_deref()
                .map(|e| e.as_bytes().to_vec())
                .unwrap_or_default(),
        )
    };
    RangeRequest {
        key,
        range_end,
        limit: args.limit,
        count_only: args.count_only,
        serializable: consistency == Consistency::S,
        ..Default::default()
    }
}

/// `range`: the same range request `--total` times. The note says what the last response
/// held (key-values, count, more), so that a run shows how much each request read.
pub async fn range(
    conns: &Connections,
    clients: usize,
    consistency: Consistency,
    args: &RangeArgs,
) -> Result<(Vec<PhaseReport>, Vec<String>)> {
    if args.limit < 0 {
        return Err(BenchError::InvalidArgs(
            "--limit must not be negative".into(),
        ));
    }
    let kvs: Arc<Vec<KvClient<Channel>>> = Arc::new(
        kv_clients(conns, clients)
            .iter()
            .map(|kv| {
                kv.clone()
                    .max_decoding_message_size(MAX_RANGE_RESPONSE_BYTES)
            })
            .collect(),
    );
    let req = range_request(consistency, args);
    let last = Arc::new(LastResponse::default());
    let seen = Arc::clone(&last);
    let phase = run_closed_loop("range", clients, args.total, args.rate, move |worker, _| {
        let mut kv = kvs[worker].clone();
        let req = req.clone();
        let last = Arc::clone(&seen);
        async move {
            let resp = kv.range(req).await?.into_inner();
            last.kvs.store(resp.kvs.len() as u64, Ordering::Relaxed);
            last.count.store(resp.count, Ordering::Relaxed);
            last.more.store(resp.more, Ordering::Relaxed);
            last.seen.store(true, Ordering::Relaxed);
            Ok(())
        }
    })
    .await;
    let mut notes = Vec::new();
    if last.seen.load(Ordering::Relaxed) {
        notes.push(format!(
            "each range response: {} key-values, count {}, more {}",
            last.kvs.load(Ordering::Relaxed),
            last.count.load(Ordering::Relaxed),
            last.more.load(Ordering::Relaxed)
        ));
    }
    Ok((vec![phase], notes))
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
