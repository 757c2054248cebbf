//! A shared request-rate limit (`--rate`, `--put-rate`): requests are spaced evenly, one slot
//! every 1/rate seconds, whichever worker takes it. Slots missed while the server was slow are
//! not made up with a burst, so a slow server is not hit by a catch-up storm.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces requests `1/rate` apart across all workers; rate 0 means unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    /// Time between two slots; `None` when unlimited.
    interval: Option<Duration>,
    /// The next free slot; workers reserve slots under this lock, then sleep outside it.
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// A limiter for `per_second` requests per second (0 = unlimited).
    pub fn new(per_second: u64) -> RateLimiter {
        let interval = (per_second > 0).then(|| Duration::from_secs_f64(1.0 / per_second as f64));
        RateLimiter {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the caller's slot.
    pub async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = if *next < now { now } else { *next };
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_evenly() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.wait().await;
        }
        // Slots at 0, 100, 200, 300, 400 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_rate_never_waits() {
        let limiter = RateLimiter::new(0);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_is_not_made_up_with_a_burst() {
        let limiter = RateLimiter::new(10);
        limiter.wait().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let start = Instant::now();
        limiter.wait().await;
        limiter.wait().await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }
}
