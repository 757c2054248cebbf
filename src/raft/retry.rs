//! Retrying a start-up step until it succeeds or the member stops.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Runs `attempt` until it succeeds, pausing `min`, then twice as long each time up to `max`,
/// between attempts, and telling `failed` of each error. Returns the success, or None once
/// `stop` turns true (also in the middle of an attempt or a pause).
pub async fn until_stopped<T, E, Fut>(
    mut stop: watch::Receiver<bool>,
    min: Duration,
    max: Duration,
    mut attempt: impl FnMut() -> Fut,
    failed: impl Fn(&E),
) -> Option<T>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = min;
    loop {
        let res = tokio::select! {
            r = attempt() => r,
            _ = stop.wait_for(|s| *s) => return None,
        };
        match res {
            Ok(v) => return Some(v),
            Err(e) => failed(&e),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
        backoff = (backoff * 2).min(max);
    }
}
