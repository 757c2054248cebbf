//! Auto compaction (`--auto-compaction-mode`, `--auto-compaction-retention`), as etcd 3.4's
//! `v3compactor`: the leader alone proposes a Compact through Raft, like a client's; followers
//! pause.
//!
//! - **periodic** (retention R, a duration): every R/10 (at most 6 minutes) the current
//!   revision is sampled into a window of R/(R/10)+1 samples, so the window's oldest sample is
//!   the revision of about R ago. The first compaction waits R; later ones come every R (at
//!   most every hour), each at the window's oldest revision: history of the last R is kept.
//!   Example, R = 1h: samples every 6 min; at 1h compact to the revision of 0h; at 2h to the
//!   revision of 1h; and so on.
//! - **revision** (retention N revisions): every 5 minutes, compact to current revision - N
//!   unless that is not positive or was already done.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use crate::config::AutoCompaction;
use crate::pb::etcdserverpb::CompactionRequest;
use crate::pb::minietcdpb::internal_request::Request as Write;

use super::{ApiError, ServerContext};

/// etcd's `revInterval`: how often the revision compactor looks.
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// etcd's cap on the periodic compactor's interval.
const MAX_COMPACT_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// etcd's `retryDivisor`: samples per compaction interval.
const RETRY_DIVISOR: u32 = 10;

/// The smallest sampling interval, so a tiny retention does not spin.
const MIN_RETRY_INTERVAL: Duration = Duration::from_millis(1);

/// What a compactor acts on: the member's revision and leadership, and the Compact proposal.
pub trait Compactable: Send + Sync {
    /// The store's current revision.
    fn rev(&self) -> i64;
    /// Whether this member leads (followers pause).
    fn leads(&self) -> bool;
    /// Proposes a compaction at `rev`.
    fn compact(&self, rev: i64) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// The member's own store and Raft.
pub struct Member {
    pub ctx: ServerContext,
    /// The leader as this member sees it.
    pub leader: watch::Receiver<Option<u64>>,
}

impl Compactable for Member {
    fn rev(&self) -> i64 {
        self.ctx.store.current_revision()
    }

    fn leads(&self) -> bool {
        *self.leader.borrow() == Some(self.ctx.header.member_id())
    }

    async fn compact(&self, rev: i64) -> Result<(), ApiError> {
        let req = CompactionRequest {
            revision: rev,
            physical: false,
        };
        self.ctx.propose(Write::Compaction(req)).await.map(|_| ())
    }
}

/// Runs the compactor `mode` asks for until the future is dropped.
pub async fn run(mode: AutoCompaction, c: impl Compactable) {
    match mode {
        AutoCompaction::Periodic(period) => periodic(period, &c).await,
        AutoCompaction::Revision(retention) => revision(retention, &c).await,
    }
}

/// Proposes one compaction; whether it counts as done (a revision already compacted does).
async fn compact_once(c: &impl Compactable, rev: i64, mode: &'static str) -> bool {
    tracing::info!(rev, mode, "starting auto compaction");
    match c.compact(rev).await {
        Ok(()) | Err(ApiError::Compacted) => {
            tracing::info!(rev, mode, "completed auto compaction");
            true
        }
        Err(e) => {
            tracing::warn!(rev, mode, error = %e, "failed auto compaction");
            false
        }
    }
}

async fn periodic(period: Duration, c: &impl Compactable) {
    let capped = period.min(MAX_COMPACT_INTERVAL);
    let retry = (capped / RETRY_DIVISOR).max(MIN_RETRY_INTERVAL);
    let retentions = (period.as_nanos() / retry.as_nanos()) as usize + 1;
    let mut revs: VecDeque<i64> = VecDeque::with_capacity(retentions + 1);
    let mut last_success = Instant::now();
    // The first compaction waits a whole period; later ones come every capped period.
    let mut base = period;
    loop {
        revs.push_back(c.rev());
        if revs.len() > retentions {
            revs.pop_front();
        }
        tokio::time::sleep(retry).await;
        if !c.leads() || last_success.elapsed() < base {
            continue;
        }
        base = capped;
        let Some(&rev) = revs.front() else { continue };
        if compact_once(c, rev, "periodic").await {
            last_success = Instant::now();
        }
    }
}

async fn revision(retention: i64, c: &impl Compactable) {
    let mut prev = 0;
    loop {
        tokio::time::sleep(REVISION_CHECK_INTERVAL).await;
        if !c.leads() {
            continue;
        }
        let rev = c.rev().saturating_sub(retention);
        if rev <= 0 || rev == prev {
            continue;
        }
        if compact_once(c, rev, "revision").await {
            prev = rev;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A store whose revision the test sets, recording compactions.
    #[derive(Default)]
    struct Fake {
        rev: AtomicI64,
        follower: AtomicBool,
        compacted: Mutex<Vec<i64>>,
    }

    impl Compactable for Arc<Fake> {
        fn rev(&self) -> i64 {
            self.rev.load(Ordering::SeqCst)
        }
        fn leads(&self) -> bool {
            !self.follower.load(Ordering::SeqCst)
        }
        async fn compact(&self, rev: i64) -> Result<(), ApiError> {
            self.compacted.lock().unwrap().push(rev);
            Ok(())
        }
    }

    /// Advances paused time in `step`s, `n` times, setting the revision to the step number.
    async fn tick(fake: &Fake, step: Duration, n: i64) {
        for _ in 0..n {
            tokio::time::sleep(step).await;
            fake.rev.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_keeps_one_period_of_history() {
        let fake = Arc::new(Fake::default());
        fake.rev.store(1, Ordering::SeqCst);
        let task = tokio::spawn(run(
            AutoCompaction::Periodic(Duration::from_secs(10)),
            fake.clone(),
        ));
        // One revision a second: nothing before 10 s, then each 10 s the revision of 10 s
        // before.
        tick(&fake, Duration::from_secs(1), 9).await;
        assert!(fake.compacted.lock().unwrap().is_empty());
        tick(&fake, Duration::from_secs(1), 32).await;
        // At 10, 20, 30 and 40 s.
        let done = fake.compacted.lock().unwrap().clone();
        assert_eq!(done.len(), 4, "{done:?}");
        for pair in done.windows(2) {
            assert!((9..=11).contains(&(pair[1] - pair[0])), "{done:?}");
        }
        assert!(
            done[0] <= 2,
            "the first compaction is at the start revision: {done:?}"
        );
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn revision_keeps_n_revisions_and_followers_pause() {
        let fake = Arc::new(Fake::default());
        fake.rev.store(100, Ordering::SeqCst);
        let task = tokio::spawn(run(AutoCompaction::Revision(30), fake.clone()));
        tokio::time::sleep(REVISION_CHECK_INTERVAL + Duration::from_secs(1)).await;
        assert_eq!(*fake.compacted.lock().unwrap(), vec![70]);
        // Nothing new: no second compaction at the same revision.
        tokio::time::sleep(REVISION_CHECK_INTERVAL).await;
        assert_eq!(*fake.compacted.lock().unwrap(), vec![70]);
        // A follower does not compact.
        fake.follower.store(true, Ordering::SeqCst);
        fake.rev.store(200, Ordering::SeqCst);
        tokio::time::sleep(REVISION_CHECK_INTERVAL).await;
        assert_eq!(*fake.compacted.lock().unwrap(), vec![70]);
        fake.follower.store(false, Ordering::SeqCst);
        tokio::time::sleep(REVISION_CHECK_INTERVAL).await;
        assert_eq!(*fake.compacted.lock().unwrap(), vec![70, 170]);
        task.abort();
    }
}
