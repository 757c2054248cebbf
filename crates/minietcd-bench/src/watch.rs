//! `watch`: many watchers. First `--streams` x `--watch-per-stream` watchers are created (all
//! streams at once, one creation at a time per stream) and the creation rate is reported; then
//! `--clients` workers put `--put-total` values round-robin over `--watched-key-total` keys and
//! every event delivered to every watcher is counted: the fan-out throughput.

use super::cli::WatchArgs;
use super::conn::Connections;
use super::error::{BenchError, Result};
use super::keys;
use super::report::PhaseReport;
use super::runner::run_closed_loop;
use super::watchers::{open_streams, PutTimes, Receivers};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::PutRequest;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Phases and notes of the run.
pub async fn watch(
    conns: &Connections,
    clients: usize,
    args: &WatchArgs,
) -> Result<(Vec<PhaseReport>, Vec<String>)> {
    if args.streams == 0 || args.watch_per_stream == 0 || args.watched_key_total == 0 {
        return Err(BenchError::InvalidArgs(
            "--streams, --watch-per-stream and --watched-key-total must be at least 1".into(),
        ));
    }
    let watched: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.watched_key_total)
            .map(|_| keys::random_key("bench-watch/", args.key_size))
            .collect(),
    );
    // Watcher number w (over all streams) watches key w modulo the key count.
    let mut watchers_on_key = vec![0u64; watched.len()];
    let created_at = Instant::now();
    let per_stream: Vec<Vec<Vec<u8>>> = (0..args.streams)
        .map(|s| {
            (0..args.watch_per_stream)
                .map(|i| {
                    let k = (s * args.watch_per_stream + i) % watched.len();
                    watchers_on_key[k] += 1;
                    watched[k].clone()
                })
                .collect()
        })
        .collect();
    let (streams, create) = open_streams(conns, per_stream, false).await?;
    let create_report = create.report("watch-create", "watchers", created_at.elapsed());

    let times = Arc::new(PutTimes::new(args.put_total));
    let receivers = Receivers::start(streams, Arc::clone(&times));
    let ok_per_key: Arc<Vec<AtomicU64>> =
        Arc::new((0..watched.len()).map(|_| AtomicU64::new(0)).collect());
    let kvs: Arc<Vec<KvClient<_>>> = Arc::new(
        (0..clients)
            .map(|i| KvClient::new(conns.channel(i)))
            .collect(),
    );
    let (val_size, t2, ok2, w2) = (
        args.val_size,
        Arc::clone(&times),
        Arc::clone(&ok_per_key),
        Arc::clone(&watched),
    );
    let puts_started = Instant::now();
    let put_report = run_closed_loop(
        "put",
        clients,
        args.put_total,
        args.put_rate,
        move |worker, seq| {
            let k = usize::try_from(seq).unwrap_or(0) % w2.len();
            let mut kv = kvs[worker].clone();
            let times = Arc::clone(&t2);
            let ok = Arc::clone(&ok2);
            let req = PutRequest {
                key: w2[k].clone(),
                value: keys::value_with_seq(seq, val_size),
                ..Default::default()
            };
            async move {
                times.sent(seq);
                kv.put(req).await?;
                times.acked(seq);
                ok[k].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        },
    )
    .await;

    let expected: u64 = ok_per_key
        .iter()
        .zip(&watchers_on_key)
        .map(|(ok, w)| ok.load(Ordering::Relaxed) * w)
        .sum();
    let received = receivers.finish(expected).await;
    let events_secs = times
        .last_event()
        .map(|t| t.saturating_duration_since(puts_started))
        .unwrap_or_default();
    let mut notes = vec![format!(
        "{expected} events expected ({} watchers over {} keys)",
        args.streams * args.watch_per_stream,
        watched.len()
    )];
    if received.foreign > 0 {
        notes.push(format!(
            "{} events came from another writer on the watched keys and were ignored",
            received.foreign
        ));
    }
    Ok((
        vec![
            create_report,
            put_report,
            received
                .after_send
                .report("events (arrival after put sent)", "events", events_secs),
        ],
        notes,
    ))
}
