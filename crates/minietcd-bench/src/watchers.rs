//! What the watch workloads share: opening streams full of watchers (timing each creation),
//! stamping puts with send and acknowledgement times, and receiver tasks that turn event
//! arrivals into latencies.
//!
//! Each put's value carries its sequence number ([`keys::value_with_seq`]); the put path
//! stores when that put was sent and acknowledged in a [`PutTimes`] table indexed by sequence
//! number, and a receiver looks the numbers up when the event arrives. No lock is taken on
//! either path.

use super::keys;
use super::report::Recorder;
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest, WatchResponse};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::transport::Channel;

/// Watch requests queued per stream before the sender waits; creation sends one at a time.
const WATCH_REQUEST_QUEUE: usize = 16;
/// How long to wait, after the last put, for the events still in flight.
pub const EVENT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the driver checks whether every expected event has arrived.
const DRAIN_POLL_MS: u64 = 5;

/// When each put was sent and acknowledged, as nanoseconds after `base` plus one (0 = not yet).
#[derive(Debug)]
pub struct PutTimes {
    base: Instant,
    sent_ns: Vec<AtomicU64>,
    acked_ns: Vec<AtomicU64>,
    /// Arrival of the latest event, in the same units, to measure the fan-out phase's length.
    last_event_ns: AtomicU64,
}

impl PutTimes {
    /// A table for puts numbered `0..puts`.
    pub fn new(puts: u64) -> PutTimes {
        let n = usize::try_from(puts).unwrap_or(0);
        PutTimes {
            base: Instant::now(),
            sent_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            acked_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            last_event_ns: AtomicU64::new(0),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn instant(&self, stamp: u64) -> Option<Instant> {
        (stamp != 0).then(|| self.base + Duration::from_nanos(stamp - 1))
    }

    /// Put `seq` is about to be sent.
    pub fn sent(&self, seq: u64) {
        if let Some(slot) = usize::try_from(seq).ok().and_then(|i| self.sent_ns.get(i)) {
            slot.store(self.stamp(Instant::now()), Ordering::Release);
        }
    }

    /// Put `seq` was acknowledged.
    pub fn acked(&self, seq: u64) {
        if let Some(slot) = usize::try_from(seq).ok().and_then(|i| self.acked_ns.get(i)) {
            slot.store(self.stamp(Instant::now()), Ordering::Release);
        }
    }

    fn lookup(&self, seq: u64) -> Option<(Option<Instant>, Option<Instant>)> {
        let i = usize::try_from(seq).ok()?;
        let sent = self.sent_ns.get(i)?.load(Ordering::Acquire);
        let acked = self.acked_ns.get(i)?.load(Ordering::Acquire);
        Some((self.instant(sent), self.instant(acked)))
    }

    fn event_arrived(&self, at: Instant) {
        self.last_event_ns
            .fetch_max(self.stamp(at), Ordering::Relaxed);
    }

    /// When the latest event arrived, if any did.
    pub fn last_event(&self) -> Option<Instant> {
        self.instant(self.last_event_ns.load(Ordering::Relaxed))
    }
}

/// A watch stream whose watchers are all created.
pub struct OpenStream {
    /// Kept open: dropping it half-closes the stream, which ends it on the server.
    tx: mpsc::Sender<WatchRequest>,
    rx: Streaming<WatchResponse>,
}

/// Opens one stream per entry of `per_stream` (the keys of that stream's watchers), all at
/// once, stream `i` on connection `i`; returns the streams and their creation latencies.
pub async fn open_streams(
    conns: &super::conn::Connections,
    per_stream: Vec<Vec<Vec<u8>>>,
    prev_kv: bool,
) -> super::error::Result<(Vec<OpenStream>, Recorder)> {
    use super::error::BenchError;
    let opening: Vec<_> = per_stream
        .into_iter()
        .enumerate()
        .map(|(s, keys)| {
            let channel = conns.channel(s);
            tokio::spawn(async move {
                let mut rec = Recorder::new();
                let stream = open_stream(channel, &keys, prev_kv, &mut rec).await;
                (stream, rec)
            })
        })
        .collect();
    let mut create = Recorder::new();
    let mut streams = Vec::with_capacity(opening.len());
    for task in opening {
        let (stream, rec) = task
            .await
            .map_err(|e| BenchError::Setup(format!("watch creation task: {e}")))?;
        create.merge(&rec);
        streams.push(stream.map_err(|e| BenchError::Setup(format!("creating watchers: {e}")))?);
    }
    Ok((streams, create))
}

/// Opens a stream on `channel` and creates one watcher per key, one at a time, recording
/// each creation's round trip (request sent to `created` response) in `rec`.
pub async fn open_stream(
    channel: Channel,
    keys: &[Vec<u8>],
    prev_kv: bool,
    rec: &mut Recorder,
) -> Result<OpenStream, tonic::Status> {
    let create = |key: &Vec<u8>| WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key.clone(),
                prev_kv,
                ..Default::default()
            },
        )),
    };
    let Some(first) = keys.first() else {
        return Err(tonic::Status::invalid_argument(
            "a watch stream needs at least one watcher",
        ));
    };
    let (tx, rx_req) = mpsc::channel(WATCH_REQUEST_QUEUE);
    // A gRPC server may hold back a stream's response headers until it has a message to send,
    // so the call completes only after a first request: queue the first creation before it.
    let mut t = Instant::now();
    tx.send(create(first))
        .await
        .map_err(|_| tonic::Status::cancelled("watch stream closed"))?;
    let mut rx = WatchClient::new(channel)
        .watch(ReceiverStream::new(rx_req))
        .await?
        .into_inner();
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            t = Instant::now();
            tx.send(create(key))
                .await
                .map_err(|_| tonic::Status::cancelled("watch stream closed"))?;
        }
        loop {
            match rx.message().await? {
                Some(resp) if resp.created && resp.canceled => {
                    return Err(tonic::Status::failed_precondition(format!(
                        "watch refused: {}",
                        resp.cancel_reason
                    )));
                }
                Some(resp) if resp.created => {
                    rec.ok(t.elapsed());
                    break;
                }
                Some(_) => continue,
                None => {
                    return Err(tonic::Status::cancelled(
                        "watch stream ended during creation",
                    ))
                }
            }
        }
    }
    Ok(OpenStream { tx, rx })
}

/// What one receiver measured.
#[derive(Debug, Default)]
pub struct Received {
    /// Event arrival minus the put's acknowledgement (zero when the event came first).
    pub after_ack: Recorder,
    /// Event arrival minus the moment the put was sent: the end-to-end delay.
    pub after_send: Recorder,
    /// Events that arrived before their put's acknowledgement reached the putter.
    pub before_ack: u64,
    /// Events whose value did not come from this run (another writer on the key).
    pub foreign: u64,
}

impl Received {
    fn merge(&mut self, other: &Received) {
        self.after_ack.merge(&other.after_ack);
        self.after_send.merge(&other.after_send);
        self.before_ack += other.before_ack;
        self.foreign += other.foreign;
    }
}

/// Receivers of a set of streams, counting events as they arrive.
pub struct Receivers {
    tasks: Vec<tokio::task::JoinHandle<Received>>,
    events: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl Receivers {
    /// Starts one receiver task per stream.
    pub fn start(streams: Vec<OpenStream>, times: Arc<PutTimes>) -> Receivers {
        let events = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let tasks = streams
            .into_iter()
            .map(|s| {
                tokio::spawn(receive(
                    s,
                    Arc::clone(&times),
                    Arc::clone(&events),
                    stop_rx.clone(),
                ))
            })
            .collect();
        Receivers {
            tasks,
            events,
            stop,
        }
    }

    /// Waits until `expected` events have arrived (or [`EVENT_DRAIN_TIMEOUT`] passes), stops the
    /// receivers and merges what they measured. Events that never came are counted as errors.
    pub async fn finish(self, expected: u64) -> Received {
        let deadline = Instant::now() + EVENT_DRAIN_TIMEOUT;
        while self.events.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(DRAIN_POLL_MS)).await;
        }
        let _ = self.stop.send(true);
        let mut all = Received::default();
        for t in self.tasks {
            match t.await {
                Ok(r) => all.merge(&r),
                Err(e) => all.after_ack.error(format!("receiver task failed: {e}")),
            }
        }
        let got = self.events.load(Ordering::Relaxed);
        for _ in got..expected {
            let kind = format!(
                "event not received within {}s of the last put",
                EVENT_DRAIN_TIMEOUT.as_secs()
            );
            all.after_ack.error(kind.clone());
            all.after_send.error(kind);
        }
        all
    }
}

async fn receive(
    mut s: OpenStream,
    times: Arc<PutTimes>,
    events: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut r = Received::default();
    loop {
        let msg = tokio::select! {
            msg = s.rx.message() => msg,
            _ = stop.changed() => break,
        };
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                r.after_ack.error("watch stream ended");
                break;
            }
            Err(status) => {
                r.after_ack.status(&status);
                break;
            }
        };
        let now = Instant::now();
        times.event_arrived(now);
        for ev in &resp.events {
            let seq = ev.kv.as_ref().and_then(|kv| keys::seq_of(&kv.value));
            let Some((sent, acked)) = seq.and_then(|seq| times.lookup(seq)) else {
                r.foreign += 1;
                continue;
            };
            if let Some(sent) = sent {
                r.after_send.ok(now.saturating_duration_since(sent));
            }
            match acked {
                Some(a) if a <= now => r.after_ack.ok(now - a),
                _ => {
                    r.before_ack += 1;
                    r.after_ack.ok(Duration::ZERO);
                }
            }
            events.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(s.tx);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_times_round_trip_and_unknown_seqs_are_none() {
        let t = PutTimes::new(4);
        assert_eq!(t.lookup(2), Some((None, None)));
        t.sent(2);
        t.acked(2);
        let (sent, acked) = t.lookup(2).expect("in range");
        assert!(sent.expect("sent") <= acked.expect("acked"));
        assert_eq!(t.lookup(4), None);
        t.sent(99);
        assert_eq!(t.last_event(), None);
        t.event_arrived(Instant::now());
        assert!(t.last_event().is_some());
    }
}
