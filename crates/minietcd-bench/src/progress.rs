//! The progress bar: shown on stderr only when stderr is a terminal, so scripts, tests and
//! `--json` consumers see clean output. Workers bump an atomic counter; a ticker task copies it
//! into the bar a few times a second, so the hot path never touches the bar's lock.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the ticker redraws: often enough to look live, rarely enough to cost nothing.
const PROGRESS_TICK_MS: u64 = 200;

/// A progress display for one phase of a run.
pub struct Progress {
    /// Completed units of work, bumped by workers.
    done: Arc<AtomicU64>,
    /// The bar, when stderr is a terminal.
    bar: Option<ProgressBar>,
    /// The task that copies `done` into the bar.
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts a phase of `total` units named `label`.
    pub fn start(label: &str, total: u64) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        if !std::io::stderr().is_terminal() {
            return Progress {
                done,
                bar: None,
                ticker: None,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(label.to_string());
        let ticker = {
            let bar = bar.clone();
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(PROGRESS_TICK_MS));
                loop {
                    tick.tick().await;
                    bar.set_position(done.load(Ordering::Relaxed));
                }
            })
        };
        Progress {
            done,
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    /// The counter workers increment.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.done)
    }

    /// Stops the ticker and clears the bar.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.set_position(self.done.load(Ordering::Relaxed));
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}
