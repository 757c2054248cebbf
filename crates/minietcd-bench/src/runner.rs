//! The closed-loop driver shared by the request/response workloads: `--clients` workers each
//! take the next request number from a shared counter, wait for the rate limiter, send, wait
//! for the answer and record its latency, until `--total` requests have been taken.
//!
//! SIGINT (Ctrl-C) during a loop stops it early: workers take no new request, the ones in
//! flight finish, and the report covers the requests sent. A script can so measure a load over
//! a window it decides on the fly (from the start of the load to the end of some event).
//!
//! With `--interval-ms`, a loop also prints a timeline on stderr: one JSON line per interval
//! (see [`IntervalReport`]), so a script can see which moment of an event slowed the load.

use super::limiter::RateLimiter;
use super::progress::Progress;
use super::report::{IntervalReport, PhaseReport, Recorder};
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Set when SIGINT arrived during a closed loop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// `--interval-ms`: how often a closed loop prints a line of its timeline (0: never).
static INTERVAL_MS: AtomicU64 = AtomicU64::new(0);

/// Has every closed loop of this process print a line of its timeline every `every` (zero:
/// none).
pub fn report_every(every: Duration) {
    let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
    INTERVAL_MS.store(ms, Ordering::Relaxed);
}

/// The samples of the current interval, shared by a loop's workers and its timeline task.
type IntervalRecorder = Arc<Mutex<Recorder>>;

/// Prints `line` as one JSON line on stderr.
fn print_interval(line: &IntervalReport) {
    if let Ok(json) = serde_json::to_string(line) {
        let _ = writeln!(std::io::stderr().lock(), "{json}");
    }
}

/// Takes the interval's samples, leaving an empty recorder for the next one.
fn take_interval(current: &IntervalRecorder) -> Recorder {
    let mut rec = current.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::take(&mut *rec)
}

/// The task printing a loop's timeline every `every` from `start`; its last, partial
/// interval is printed by the loop when it ends.
fn start_timeline(
    name: &str,
    every: Duration,
    start: Instant,
    current: IntervalRecorder,
) -> tokio::task::JoinHandle<()> {
    let name = name.to_string();
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::from_std(start) + every, every);
        // A stalled client prints one long interval, not a burst of empty ones.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            print_interval(&take_interval(&current).interval(&name, start.elapsed()));
        }
    })
}

/// Whether a closed loop of this process was stopped early by SIGINT.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Runs `total` requests over `clients` workers; `op(worker, seq)` sends request number `seq`.
///
/// Workers record into their own [`Recorder`]s, merged at the end. The phase lasts from the
/// first request to the last answer.
pub async fn run_closed_loop<F, Fut>(
    name: &str,
    clients: usize,
    total: u64,
    rate: u64,
    op: F,
) -> PhaseReport
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let limiter = Arc::new(RateLimiter::new(rate));
    let progress = Progress::start(name, total);
    let on_sigint = tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            INTERRUPTED.store(true, Ordering::Relaxed);
        }
    });
    let start = Instant::now();
    let every = Duration::from_millis(INTERVAL_MS.load(Ordering::Relaxed));
    let interval: Option<IntervalRecorder> =
        (!every.is_zero()).then(|| Arc::new(Mutex::new(Recorder::new())));
    let timeline = interval
        .as_ref()
        .map(|current| start_timeline(name, every, start, Arc::clone(current)));
    let mut workers = Vec::with_capacity(clients);
    for worker in 0..clients {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        let limiter = Arc::clone(&limiter);
        let done = progress.counter();
        let interval = interval.clone();
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            while !INTERRUPTED.load(Ordering::Relaxed) {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    break;
                }
                limiter.wait().await;
                let t = Instant::now();
                let result = op(worker, seq).await;
                let latency = t.elapsed();
                if let Some(current) = &interval {
                    let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
                    current.outcome(&result, latency);
                }
                rec.outcome(&result, latency);
                done.fetch_add(1, Ordering::Relaxed);
            }
            rec
        }));
    }
    let mut all = Recorder::new();
    for w in workers {
        match w.await {
            Ok(rec) => all.merge(&rec),
            Err(e) => all.error(format!("worker task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    if let (Some(timeline), Some(current)) = (timeline, &interval) {
        timeline.abort();
        // Ended before the last interval is taken, so that it is printed once, here.
        let _ = timeline.await;
        let last = take_interval(current);
        if last.ok_count() + last.error_count() > 0 {
            print_interval(&last.interval(name, elapsed));
        }
    }
    on_sigint.abort();
    progress.finish();
    all.report(name, "requests", elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn every_request_number_is_sent_once_and_errors_are_counted() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        let report = run_closed_loop("t", 7, 100, 0, move |_, seq| {
            let seen = Arc::clone(&seen2);
            async move {
                seen.lock()
                    .map_err(|_| tonic::Status::internal("poisoned"))?
                    .push(seq);
                if seq % 10 == 0 {
                    Err(tonic::Status::unavailable("etcdserver: no leader"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        let mut seen = seen.lock().expect("lock").clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(report.ok, 90);
        assert_eq!(report.errors, 10);
        assert_eq!(
            report
                .errors_by_kind
                .get("Unavailable: etcdserver: no leader"),
            Some(&10)
        );
    }
}
