//! etcdctl's `check perf`: writes at a model's rate through many clients for a while, then
//! judges throughput and latency with etcdctl's thresholds and PASS/FAIL lines.
//!
//! etcdctl's progress bar (drawn on stdout with carriage returns) is left out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use minietcd_client::{
    ClientError, CompactOptions, DeleteOptions, GetOptions, MaintenanceOptions, PutOptions,
};
use rand::Rng;
use tokio::sync::{mpsc, Mutex};

use crate::args::CheckPerfArgs;
use crate::fields::quote;
use crate::ops::{Failure, EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT};
use crate::{emit, single, Ctx};

/// One of etcdctl's workload models.
struct Model {
    /// Writes per second.
    rate_per_sec: u32,
    /// Concurrent clients.
    clients: usize,
    duration: Duration,
}

fn model(load: &str) -> Option<Model> {
    let (rate_per_sec, clients) = match load {
        "s" | "small" => (150, 50),
        "m" | "medium" => (1000, 200),
        "l" | "large" => (8000, 500),
        "xl" | "xLarge" => (15000, 1000),
        _ => return None,
    };
    Some(Model {
        rate_per_sec,
        clients,
        duration: Duration::from_secs(60),
    })
}

const KEY_BYTES: usize = 256;
const VALUE_BYTES: usize = 1024;
/// Thresholds etcdctl judges by.
const MIN_RATE_FRACTION: f64 = 0.9;
const MAX_SLOWEST_SECS: f64 = 0.5;
const MAX_STDDEV_SECS: f64 = 0.1;
/// The bound of etcdctl's clean-up requests.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The latencies and errors of the writes, as etcd's `report` package sums them up.
#[derive(Default)]
struct Stats {
    latencies: Vec<f64>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    /// (writes per second, slowest, population standard deviation), in seconds.
    fn summary(&self, total: Duration) -> (f64, f64, f64) {
        let n = self.latencies.len() as f64;
        let rps = n / total.as_secs_f64();
        let mean = self.latencies.iter().sum::<f64>() / n;
        let var = self
            .latencies
            .iter()
            .map(|l| (l - mean) * (l - mean))
            .sum::<f64>()
            / n;
        let slowest = self.latencies.iter().copied().fold(0.0, f64::max);
        (rps, slowest, var.sqrt())
    }
}

/// Go's `binary.PutVarint`: zig-zag, then 7 bits a byte; returns the bytes written.
fn put_varint(buf: &mut [u8], v: i64) -> usize {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    let mut i = 0;
    while u >= 0x80 {
        buf[i] = (u as u8) | 0x80;
        u >>= 7;
        i += 1;
    }
    buf[i] = u as u8;
    i + 1
}

pub async fn run(ctx: &Ctx, a: &CheckPerfArgs) -> Result<(), Failure> {
    let Some(mut m) = model(&a.load) else {
        return Err(Failure::new(
            EXIT_BAD_FEATURE,
            format!("unknown load option {}", a.load),
        ));
    };
    if let Some(d) = a.duration {
        m.duration = d;
    }
    let mut clients = Vec::with_capacity(m.clients);
    for _ in 0..m.clients {
        clients.push(ctx.client().await?);
    }
    let first = clients[0].clone();
    let existing = first
        .kv()
        .get(a.prefix.as_str(), GetOptions::new().prefix().limit(1))
        .await?;
    if !existing.kvs.is_empty() {
        return Err(Failure::new(
            EXIT_INVALID_INPUT,
            format!(
                "prefix {:?} has keys. Delete with etcdctl del --prefix {} first",
                a.prefix, a.prefix
            ),
        ));
    }

    let (requests, rx) = mpsc::channel::<Vec<u8>>(m.clients);
    let rx = Arc::new(Mutex::new(rx));
    let (results, mut collected) = mpsc::unbounded_channel::<(Result<(), ClientError>, Duration)>();
    let mut workers = Vec::with_capacity(clients.len());
    for c in clients {
        let rx = rx.clone();
        let results = results.clone();
        workers.push(tokio::spawn(async move {
            let value = vec![0u8; VALUE_BYTES];
            loop {
                let Some(key) = rx.lock().await.recv().await else {
                    return;
                };
                let start = Instant::now();
                let r = c.kv().put(key, value.clone(), PutOptions::new()).await;
                let _ = results.send((r.map(|_| ()), start.elapsed()));
            }
        }));
    }
    drop(results);

    let stats_start = Instant::now();
    let prefix = a.prefix.clone().into_bytes();
    let (rate, duration) = (m.rate_per_sec, m.duration);
    let producer = tokio::spawn(async move {
        // etcdctl reuses one key buffer: bytes past a short varint keep the last long one's.
        let mut key = [0u8; KEY_BYTES];
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = tokio::time::Instant::now() + duration;
        loop {
            tick.tick().await;
            if tokio::time::Instant::now() >= end {
                return;
            }
            let n: i64 = rand::thread_rng().gen_range(0..i64::MAX);
            put_varint(&mut key, n);
            let mut full = prefix.clone();
            full.extend_from_slice(&key);
            if requests.send(full).await.is_err() {
                return;
            }
        }
    });

    let mut stats = Stats::default();
    while let Some((r, took)) = collected.recv().await {
        match r {
            Ok(()) => stats.latencies.push(took.as_secs_f64()),
            Err(e) => *stats.errors.entry(Failure::from(e).message).or_default() += 1,
        }
    }
    let total = stats_start.elapsed();
    let _ = producer.await;
    for w in workers {
        let _ = w.await;
    }

    let deleted = first
        .kv()
        .delete(
            a.prefix.as_str(),
            DeleteOptions::new().prefix().timeout(CLEANUP_TIMEOUT),
        )
        .await?;
    let mut out = String::new();
    if a.auto_compact {
        let rev = deleted.header.as_ref().map_or(0, |h| h.revision);
        emit(&format!("Compacting with revision {rev}\n"))?;
        first
            .kv()
            .compact(rev, CompactOptions::new().physical())
            .await?;
        emit(&format!("Compacted with revision {rev}\n"))?;
    }
    if a.auto_defrag {
        for ep in &ctx.endpoints {
            emit(&format!("Defragmenting {}\n", quote(ep.as_bytes())))?;
            single(ctx, ep)
                .await?
                .maintenance()
                .defragment(MaintenanceOptions::new().timeout(CLEANUP_TIMEOUT))
                .await?;
            emit(&format!("Defragmented {}\n", quote(ep.as_bytes())))?;
        }
    }

    let (rps, slowest, stddev) = stats.summary(total);
    let mut ok = true;
    if !stats.errors.is_empty() {
        out.push_str("FAIL: too many errors\n");
        for (e, n) in &stats.errors {
            out.push_str(&format!("FAIL: ERROR({e}) -> {n}\n"));
        }
        ok = false;
    }
    let writes = rps as i64 + 1;
    if rps / f64::from(m.rate_per_sec) <= MIN_RATE_FRACTION {
        out.push_str(&format!("FAIL: Throughput too low: {writes} writes/s\n"));
        ok = false;
    } else {
        out.push_str(&format!("PASS: Throughput is {writes} writes/s\n"));
    }
    if slowest > MAX_SLOWEST_SECS {
        out.push_str(&format!("Slowest request took too long: {slowest:.6}s\n"));
        ok = false;
    } else {
        out.push_str(&format!("PASS: Slowest request took {slowest:.6}s\n"));
    }
    if stddev > MAX_STDDEV_SECS {
        out.push_str(&format!("Stddev too high: {stddev:.6}s\n"));
        ok = false;
    } else {
        out.push_str(&format!("PASS: Stddev is {stddev:.6}s\n"));
    }
    out.push_str(if ok { "PASS\n" } else { "FAIL\n" });
    emit(&out)?;
    if ok {
        Ok(())
    } else {
        Err(Failure::silent(EXIT_ERROR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_gos() {
        let mut b = [0u8; 10];
        assert_eq!(put_varint(&mut b, 1), 1);
        assert_eq!(b[0], 2);
        assert_eq!(put_varint(&mut b, -1), 1);
        assert_eq!(b[0], 1);
        assert_eq!(put_varint(&mut b, 300), 2);
        assert_eq!(&b[..2], &[0xd8, 0x04]);
    }

    #[test]
    fn unknown_loads_are_refused() {
        assert!(model("s").is_some());
        assert!(model("xLarge").is_some());
        assert!(model("huge").is_none());
    }
}
