//! The leader's deadlines on tokio's paused clock.

use std::time::Duration;

use tokio::time::{advance, Instant};

use super::*;

const MAX: usize = MAX_REVOKES_PER_CHECK;

fn leading(term: u64, leases: &[(i64, i64)]) -> Deadlines {
    let mut d = Deadlines::default();
    d.lead(term, leases, Instant::now());
    d
}

#[test]
fn min_ttl_is_one_and_a_half_elections_in_whole_heartbeats_rounded_up() {
    // etcd's defaults: 100 ms heartbeat, 1 s election: 15 heartbeats = 1.5 s -> 2 s.
    assert_eq!(min_lease_ttl_secs(100, 1000), 2);
    // The tests' 50 ms / 500 ms: 0.75 s -> 1 s.
    assert_eq!(min_lease_ttl_secs(50, 500), 1);
    // (3 * 3) / 2 = 4 whole heartbeats of 1 s, not 4.5 s.
    assert_eq!(min_lease_ttl_secs(1000, 3000), 4);
    // 21 ticks -> 31 heartbeats = 3.1 s -> 4 s.
    assert_eq!(min_lease_ttl_secs(100, 2100), 4);
    assert_eq!(min_lease_ttl_secs(0, 1000), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lease_expires_after_its_ttl_and_is_revoked_once() {
    let mut d = leading(1, &[(7, 5)]);
    advance(Duration::from_millis(4900)).await;
    assert!(d.take_expired(Instant::now(), MAX).is_empty());
    assert_eq!(d.remaining(7, 5, Instant::now()), 1);
    advance(Duration::from_millis(100)).await;
    assert_eq!(d.take_expired(Instant::now(), MAX), vec![7]);
    // Its revoke is under way: not proposed again at the next check.
    advance(Duration::from_millis(250)).await;
    d.lead(1, &[(7, 5)], Instant::now());
    assert!(d.take_expired(Instant::now(), MAX).is_empty());
    // Revoked: gone from the store, forgotten here.
    d.lead(1, &[], Instant::now());
    assert!(d.by_id.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_renewal_restarts_the_clock() {
    let mut d = leading(1, &[(7, 5)]);
    advance(Duration::from_secs(4)).await;
    assert_eq!(d.renew(7, 5, Instant::now()), Some(5));
    assert_eq!(d.remaining(7, 5, Instant::now()), 5);
    advance(Duration::from_secs(4)).await;
    assert!(d.take_expired(Instant::now(), MAX).is_empty());
    advance(Duration::from_secs(1)).await;
    assert_eq!(d.take_expired(Instant::now(), MAX), vec![7]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_not_renewed_before_or_during_its_revoke() {
    let mut d = leading(1, &[(7, 5), (8, 5)]);
    advance(Duration::from_secs(5)).await;
    // Past its deadline, before the expiry check saw it.
    assert_eq!(d.renew(7, 5, Instant::now()), None);
    assert_eq!(d.remaining(7, 5, Instant::now()), 0);
    let mut due = d.take_expired(Instant::now(), MAX);
    due.sort_unstable();
    assert_eq!(due, vec![7, 8]);
    // While the revoke is in flight.
    advance(Duration::from_millis(10)).await;
    assert_eq!(d.renew(8, 5, Instant::now()), None);
    assert_eq!(d.remaining(8, 5, Instant::now()), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_revoke_is_retried_after_three_seconds_not_a_full_ttl() {
    let mut d = leading(1, &[(7, 10)]);
    advance(Duration::from_secs(10)).await;
    assert_eq!(d.take_expired(Instant::now(), MAX), vec![7]);
    // The revoke failed: the lease is still in the store.
    advance(EXPIRED_LEASE_RETRY - Duration::from_millis(100)).await;
    d.lead(1, &[(7, 10)], Instant::now());
    assert!(d.take_expired(Instant::now(), MAX).is_empty());
    assert_eq!(d.renew(7, 10, Instant::now()), None);
    advance(Duration::from_millis(100)).await;
    d.lead(1, &[(7, 10)], Instant::now());
    assert_eq!(d.take_expired(Instant::now(), MAX), vec![7]);
}

#[tokio::test(start_paused = true)]
async fn many_leases_expiring_at_once_are_revoked_in_bounded_rounds() {
    let leases: Vec<(i64, i64)> = (1..=1200).map(|id| (id, 3)).collect();
    let mut d = leading(1, &leases);
    advance(Duration::from_secs(3)).await;
    let mut seen = std::collections::HashSet::new();
    for want in [MAX, MAX, 200, 0] {
        d.lead(1, &leases, Instant::now());
        let due = d.take_expired(Instant::now(), MAX);
        assert_eq!(due.len(), want);
        for id in due {
            assert!(seen.insert(id), "lease {id} proposed twice");
        }
        advance(Duration::from_millis(EXPIRY_CHECK_INTERVAL_MS)).await;
    }
    assert_eq!(seen.len(), 1200);
    assert!((1..=1200).all(|id| d.renew(id, 3, Instant::now()).is_none()));
}

#[tokio::test(start_paused = true)]
async fn a_leader_change_gives_every_lease_a_full_ttl() {
    let mut d = leading(1, &[(7, 5), (8, 5)]);
    advance(Duration::from_secs(6)).await;
    assert_eq!(d.take_expired(Instant::now(), MAX).len(), 2);
    // Leadership moves away: nothing is kept, renewals are not recorded.
    d.follow();
    assert!(d.by_id.is_empty());
    assert_eq!(d.renew(7, 5, Instant::now()), Some(5));
    assert!(d.by_id.is_empty());
    // And back, in a later term, before either revoke was applied: full TTLs again.
    advance(Duration::from_secs(1)).await;
    d.lead(3, &[(7, 5), (8, 5)], Instant::now());
    assert_eq!(d.remaining(8, 5, Instant::now()), 5);
    assert_eq!(d.renew(7, 5, Instant::now()), Some(5));
    advance(Duration::from_millis(4999)).await;
    assert!(d.take_expired(Instant::now(), MAX).is_empty());
    advance(Duration::from_millis(1)).await;
    assert_eq!(d.take_expired(Instant::now(), MAX).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_follower_keeps_no_deadlines() {
    let mut d = Deadlines::default();
    for id in 0..10_000 {
        assert_eq!(d.renew(id, 5, Instant::now()), Some(5));
    }
    assert!(d.by_id.is_empty());
    let mut d = leading(2, &[(7, 5)]);
    d.follow();
    assert!(d.by_id.is_empty());
    assert_eq!(d.leader_term, 0);
}

#[tokio::test(start_paused = true)]
async fn long_leases_are_checkpointed_every_interval_with_their_remaining_ttl() {
    let every = Duration::from_secs(10);
    // 60 s and 5 s leases: only the long one has more than an interval left.
    let mut d = leading(1, &[(7, 60), (8, 5)]);
    assert!(d.take_checkpoints(Instant::now(), every, 1000).is_empty());
    advance(Duration::from_secs(10)).await;
    assert_eq!(
        d.take_checkpoints(Instant::now(), every, 1000),
        vec![(7, 50)]
    );
    advance(Duration::from_secs(5)).await;
    assert!(d.take_checkpoints(Instant::now(), every, 1000).is_empty());
    advance(Duration::from_secs(5)).await;
    assert_eq!(
        d.take_checkpoints(Instant::now(), every, 1000),
        vec![(7, 40)]
    );
    // At most `max` a round; the rest wait for the next one.
    let mut d = leading(1, &[(1, 60), (2, 60), (3, 60)]);
    d.take_checkpoints(Instant::now(), every, 2);
    advance(every).await;
    assert_eq!(d.take_checkpoints(Instant::now(), every, 2).len(), 2);
    assert_eq!(d.take_checkpoints(Instant::now(), every, 2).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_starts_from_the_checkpointed_remainder() {
    let mut d = Deadlines::default();
    let remaining = HashMap::from([(7, 42)]);
    d.lead_from(2, &[(7, 60), (8, 60)], &remaining, Instant::now());
    assert_eq!(d.remaining(7, 60, Instant::now()), 42);
    assert_eq!(d.remaining(8, 60, Instant::now()), 60);
    // Within the same term the clocks run on; a checkpoint seen later changes nothing.
    advance(Duration::from_secs(2)).await;
    d.lead_from(
        2,
        &[(7, 60), (8, 60)],
        &HashMap::from([(8, 10)]),
        Instant::now(),
    );
    assert_eq!(d.remaining(8, 60, Instant::now()), 58);
}
