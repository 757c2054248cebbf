//! `watch-latency`: `--streams` x `--watchers-per-stream` watchers on one key, then one putter
//! writes that key `--put-total` times at `--put-rate`. The headline latency is event arrival
//! minus put acknowledgement, as in etcd's benchmark; the end-to-end delay (arrival minus the
//! moment the put was sent) is reported beside it because on a fast server most events beat
//! the acknowledgement, which makes the first figure mostly zeros.

use super::cli::WatchLatencyArgs;
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
pub async fn watch_latency(
    conns: &Connections,
    args: &WatchLatencyArgs,
) -> Result<(Vec<PhaseReport>, Vec<String>)> {
    if args.streams == 0 || args.watchers_per_stream == 0 {
        return Err(BenchError::InvalidArgs(
            "--streams and --watchers-per-stream must be at least 1".into(),
        ));
    }
    let key = keys::random_key("bench-watch-latency/", args.key_size);
    let watchers = args.streams * args.watchers_per_stream;

    let created_at = Instant::now();
    let per_stream = vec![vec![key.clone(); args.watchers_per_stream]; args.streams];
    let (streams, create) = open_streams(conns, per_stream, args.prevkv).await?;
    let create_report = create.report("watch-create", "watchers", created_at.elapsed());

    let times = Arc::new(PutTimes::new(args.put_total));
    let receivers = Receivers::start(streams, Arc::clone(&times));
    let ok_puts = Arc::new(AtomicU64::new(0));
    let kv = KvClient::new(conns.channel(0));
    let (val_size, t2, ok2) = (args.val_size, Arc::clone(&times), Arc::clone(&ok_puts));
    let puts_started = Instant::now();
    let put_report = run_closed_loop("put", 1, args.put_total, args.put_rate, move |_, seq| {
        let mut kv = kv.clone();
        let times = Arc::clone(&t2);
        let ok = Arc::clone(&ok2);
        let req = PutRequest {
            key: key.clone(),
            value: keys::value_with_seq(seq, val_size),
            ..Default::default()
        };
        async move {
            times.sent(seq);
            kv.put(req).await?;
            times.acked(seq);
            ok.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    })
    .await;

    let expected = ok_puts.load(Ordering::Relaxed) * watchers as u64;
    let received = receivers.finish(expected).await;
    let events_secs = times
        .last_event()
        .map(|t| t.saturating_duration_since(puts_started))
        .unwrap_or_default();
    let mut notes = vec![format!(
        "{} of {} events arrived before their put was acknowledged (counted as 0 ms after the ack)",
        received.before_ack,
        received.after_ack.ok_count()
    )];
    if received.foreign > 0 {
        notes.push(format!(
            "{} events came from another writer on the watched key and were ignored",
            received.foreign
        ));
    }
    Ok((
        vec![
            create_report,
            put_report,
            received
                .after_ack
                .report("watch-latency (event after put ack)", "events", events_secs),
            received.after_send.report(
                "watch-latency (event after put sent)",
                "events",
                events_secs,
            ),
        ],
        notes,
    ))
}
