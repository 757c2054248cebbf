//! One test per fault, on minietcd and on etcd 3.4: a three-member cluster behind peer
//! proxies, the workload and watchers running, the fault injected and healed, then every
//! checker run on the recorded history. Passing on etcd shows the checkers are not too
//! strict; passing on minietcd is the point.
//!
//! A run: workload until it has done some operations; the fault (a few election timeouts
//! long); heal (restart what was killed); wait until the cluster has a leader again and the
//! clients have done more operations (the cluster recovered); stop the clients; one final
//! write that every watcher must reach; a linearizable read of every key; check.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::etcd_cluster::ServerKind;
use crate::robust::fault_cluster::{inject, Fault, FaultCluster};
use crate::robust::history::{History, Input, Output};
use crate::robust::linearizability::{
    check_linearizable, check_revisions_real_time, check_txns_atomic, patch_unknowns,
};
use crate::robust::watch_check::{check_all, committed_history};
use crate::robust::workload::{self, Recorder, WatcherKind, WorkloadConfig, PREFIX, SENTINEL};
use crate::support::wait_until_async;

/// How long a whole scenario may take.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);
/// Successful operations before the fault, and again after it (proof of recovery).
const OPS_BEFORE: usize = 40;
const OPS_AFTER: usize = 40;
/// How long the clients may take to do [`OPS_AFTER`] operations once healed.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the watchers may take to reach the final write.
const WATCH_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);

/// Successful (non-unknown) operations recorded so far.
fn done_ops(rec: &Recorder) -> usize {
    let (h, _) = rec.history();
    h.ops.iter().filter(|o| o.output != Output::Unknown).count()
}

/// Every checker on one history; the violations found. Unknown writes are resolved from the
/// committed history before the linearizability search.
pub fn check_history(h: &History, expect_through: &[Option<i64>]) -> Vec<String> {
    let mut violations = check_all(&h.ops, &h.watches, expect_through);
    let mut ignored = Vec::new();
    let committed = committed_history(&h.watches, &mut ignored);
    let patched = patch_unknowns(&h.ops, &committed);
    for v in check_linearizable(&patched) {
        violations.push(format!("not linearizable on {}: {}", v.key, v.reason));
    }
    violations.extend(check_revisions_real_time(&patched));
    violations.extend(check_txns_atomic(&h.ops, &patched));
    violations
}

/// Writes [`SENTINEL`] through a client of every member until one put is acknowledged
/// (each attempt recorded); its revision.
async fn final_write(fc: &FaultCluster, rec: &Recorder) -> i64 {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2));
    let mut attempt = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "no final write acknowledged within {RECOVERY_TIMEOUT:?}"
        );
        let Ok(mut cl) =
            etcd_client::Client::connect(fc.cluster.endpoints(), Some(opts.clone())).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        attempt += 1;
        let value = format!("end-{attempt}");
        let input = Input::Put {
            value: value.clone(),
        };
        workload::do_op(
            rec,
            &mut cl,
            usize::MAX,
            0,
            SENTINEL,
            input,
            Duration::from_secs(3),
        )
        .await;
        let (h, _) = rec.history();
        let acked = h
            .ops
            .iter()
            .rev()
            .find_map(|o| match (&o.input, &o.output) {
                (Input::Put { value: v }, Output::Put { rev })
                    if o.key == SENTINEL && *v == value =>
                {
                    Some(*rev)
                }
                _ => None,
            });
        if let Some(rev) = acked {
            return rev;
        }
    }
}

/// Workload + `fault` + checkers on a fresh cluster of `kind`.
pub async fn run_scenario(kind: ServerKind, fault: Fault) {
    let run = record_run(kind, &fault.flags(kind), |round| {
        (round == 0).then_some(fault)
    })
    .await;
    check_run(kind, run).await;
}

/// Runs every checker on `run`; on a violation keeps the cluster's dir, writes the history
/// there and panics with every violation.
pub async fn check_run(kind: ServerKind, run: Run) {
    let Run {
        fc,
        h,
        expect,
        final_rev,
        fault_to_heal,
        recovered_in,
        started,
        seed,
        faults,
    } = run;
    let check_started = Instant::now();
    let checked = h.clone();
    let violations = tokio::task::spawn_blocking(move || check_history(&checked, &expect))
        .await
        .expect("checkers");
    let unknown = h.ops.iter().filter(|o| o.output == Output::Unknown).count();
    let leases = h
        .ops
        .iter()
        .filter(|o| matches!(o.input, Input::Revoke { expiry: true, .. }))
        .count();
    let revoked = h
        .ops
        .iter()
        .filter(|o| matches!(o.output, Output::Revoke { .. }))
        .count();
    let txns = h.ops.iter().filter_map(|o| o.txn).max().unwrap_or(0);
    let events: usize = h.watches.iter().map(|s| s.events().count()).sum();
    let progress: usize = h
        .watches
        .iter()
        .flat_map(|s| s.responses.iter())
        .filter(|r| r.events.is_empty())
        .count();
    tracing::info!(
        ?kind,
        ?faults,
        seed,
        ops = h.ops.len(),
        unknown,
        leases,
        revoked,
        txns,
        sessions = h.watches.len(),
        events,
        progress,
        final_rev,
        ?fault_to_heal,
        ?recovered_in,
        check = ?check_started.elapsed(),
        total = ?started.elapsed(),
        unattributed = fc.proxies.unattributed.load(Ordering::Relaxed),
        "scenario done"
    );
    if !violations.is_empty() {
        let mut fc = fc;
        let dir = fc.cluster.keep_dir();
        let path = dir.join("history.txt");
        let mut text = String::new();
        for op in &h.ops {
            text.push_str(&format!("{op:?}\n"));
        }
        for (i, w) in h.watches.iter().enumerate() {
            text.push_str(&format!("session {i}: {w:?}\n"));
        }
        let _ = std::fs::write(&path, text);
        eprintln!("history written to {}", path.display());
        panic!(
            "{kind:?} {faults:?} (ROBUST_SEED={seed}): {} violations:\n{}",
            violations.len(),
            violations.join("\n")
        );
    }
}

/// What one run recorded.
pub struct Run {
    /// The cluster, still running (its dir is kept if the caller panics).
    pub fc: FaultCluster,
    pub h: History,
    /// Per watch session, the revision it must have reached.
    pub expect: Vec<Option<i64>>,
    /// Revision of the final write.
    pub final_rev: i64,
    /// Time spent injecting and healing faults.
    pub fault_to_heal: Duration,
    /// The faults injected, in order.
    pub faults: Vec<Fault>,
    /// From a heal to [`OPS_AFTER`] more operations done, the longest.
    pub recovered_in: Duration,
    pub started: Instant,
    /// The workload's seed.
    pub seed: u64,
}

/// Starts a cluster of `kind`, runs the workload and watchers, injects the faults `next_fault`
/// hands out (round 0, 1, ... until it returns `None`), healing each and waiting for the
/// cluster to recover before the next; finishes with the final write and reads; returns the
/// history unchecked.
pub async fn record_run(
    kind: ServerKind,
    extra: &[String],
    mut next_fault: impl FnMut(usize) -> Option<Fault>,
) -> Run {
    let started = Instant::now();
    let mut fc = FaultCluster::start(kind, extra).await;
    let cfg = WorkloadConfig::default();
    let rec = Recorder::new();
    fc.recorder = Some(rec.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let target = Arc::new(AtomicI64::new(0));
    let give_up = Arc::new(AtomicBool::new(false));
    let n = fc.n();

    let mut watchers = Vec::new();
    for m in 0..n {
        let kinds = WatcherKind::ALL;
        for (j, kind) in kinds.into_iter().enumerate() {
            let w = kinds.len() * m + j;
            watchers.push(tokio::spawn(workload::run_watcher(
                rec.clone(),
                w,
                m,
                fc.cluster.endpoint(m),
                kind,
                target.clone(),
                give_up.clone(),
            )));
        }
    }
    let clients: Vec<_> = (0..cfg.clients)
        .map(|id| {
            let member = id % n;
            tokio::spawn(workload::run_client(
                rec.clone(),
                cfg.clone(),
                id,
                member,
                fc.cluster.endpoint(member),
                stop.clone(),
            ))
        })
        .collect();

    wait_until_async("operations before the fault", RECOVERY_TIMEOUT, || {
        let d = done_ops(&rec);
        async move { (d >= OPS_BEFORE).then_some(()) }
    })
    .await;
    let mut fault_to_heal = Duration::ZERO;
    let mut recovered_in = Duration::ZERO;
    let mut faults = Vec::new();
    for round in 0.. {
        let fault_at = Instant::now();
        if let Some(fault) = next_fault(round) {
            inject(&mut fc, fault).await;
            faults.push(fault);
        } else if round > 0 {
            break;
        }
        let healed_at = Instant::now();
        fault_to_heal += healed_at - fault_at;
        let before = done_ops(&rec);
        wait_until_async("operations after the fault", RECOVERY_TIMEOUT, || {
            let d = done_ops(&rec);
            async move { (d >= before + OPS_AFTER).then_some(()) }
        })
        .await;
        recovered_in = recovered_in.max(healed_at.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }

    // The final write every watcher must reach, through any member.
    let final_rev = final_write(&fc, &rec).await;
    target.store(final_rev, Ordering::Relaxed);
    let caught_up = tokio::time::timeout(WATCH_CATCH_UP_TIMEOUT, async {
        for w in watchers.iter_mut() {
            let _ = w.await;
        }
    })
    .await;
    if caught_up.is_err() {
        give_up.store(true, Ordering::Relaxed);
        for w in watchers {
            let _ = w.await;
        }
    }

    // A linearizable read of every key on every member.
    for m in 0..n {
        if let Some(mut cl) =
            workload::client_on(&fc.cluster.endpoint(m), Duration::from_secs(3)).await
        {
            let keys = (0..cfg.keys)
                .map(|k| format!("{PREFIX}k{k}"))
                .chain((0..cfg.clients).map(workload::lease_key));
            for key in keys {
                let input = Input::Get {
                    serializable: false,
                };
                workload::do_op(
                    &rec,
                    &mut cl,
                    usize::MAX - 1,
                    m,
                    &key,
                    input,
                    Duration::from_secs(3),
                )
                .await;
            }
        }
    }

    let (h, last) = rec.history();
    let expect: Vec<Option<i64>> = last.iter().map(|l| l.then_some(final_rev)).collect();
    Run {
        fc,
        h,
        expect,
        final_rev,
        fault_to_heal,
        faults,
        recovered_in,
        started,
        seed: cfg.seed,
    }
}

/// One scenario as two tests, on minietcd and on etcd 3.4, each within [`SCENARIO_TIMEOUT`].
macro_rules! scenario {
    ($fault:ident, $minietcd:ident, $etcd:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $minietcd() {
            tokio::time::timeout(
                SCENARIO_TIMEOUT,
                run_scenario(ServerKind::Minietcd, Fault::$fault),
            )
            .await
            .expect("scenario within its time limit");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $etcd() {
            tokio::time::timeout(
                SCENARIO_TIMEOUT,
                run_scenario(ServerKind::Etcd, Fault::$fault),
            )
            .await
            .expect("scenario within its time limit");
        }
    };
}

scenario!(IsolateLeader, isolate_leader_minietcd, isolate_leader_etcd);
scenario!(
    IsolateFollower,
    isolate_follower_minietcd,
    isolate_follower_etcd
);
scenario!(MovingSplit, moving_split_minietcd, moving_split_etcd);
scenario!(FlappingLink, flapping_link_minietcd, flapping_link_etcd);
scenario!(PauseLeader, pause_leader_minietcd, pause_leader_etcd);
scenario!(PauseFollower, pause_follower_minietcd, pause_follower_etcd);
scenario!(
    IsolateFollowerPastSnapshot,
    isolate_follower_past_snapshot_minietcd,
    isolate_follower_past_snapshot_etcd
);
scenario!(KillFollower, kill_follower_minietcd, kill_follower_etcd);
scenario!(KillLeader, kill_leader_minietcd, kill_leader_etcd);
scenario!(KillAll, kill_all_minietcd, kill_all_etcd);
scenario!(
    RemoveAndReAddFollower,
    remove_and_re_add_follower_minietcd,
    remove_and_re_add_follower_etcd
);

/// The checkers are not vacuous on real data: a fault-free minietcd history passes, and each
/// violation planted in a copy of it is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_violations_in_a_recorded_history_are_found() {
    let run = tokio::time::timeout(
        SCENARIO_TIMEOUT,
        record_run(ServerKind::Minietcd, &[], |_| None),
    )
    .await
    .expect("run within its time limit");
    let (h, expect) = (run.h, run.expect);
    let clean = check_history(&h, &expect);
    assert!(clean.is_empty(), "{clean:?}");
    let mut ignored = Vec::new();
    let committed = committed_history(&h.watches, &mut ignored);
    let found = |bad: &History, what: &str| {
        let v = check_history(bad, &expect);
        assert!(
            v.iter().any(|v| v.contains(what)),
            "planted violation not reported as {what:?}: {v:?}"
        );
    };

    // A stale read: a final read answers with an earlier state of its key.
    let (f, earlier) = h
        .ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.client == usize::MAX - 1)
        .find_map(|(i, o)| {
            let Output::Get { kv: Some(kv), .. } = &o.output else {
                return None;
            };
            let earlier = committed
                .range(..kv.mod_rev)
                .rev()
                .flat_map(|(_, evs)| evs.iter())
                .find(|e| e.put && e.key == o.key)?;
            Some((i, earlier.kv.clone()))
        })
        .expect("a final read of a key written twice");
    let mut stale = h.clone();
    if let Output::Get { kv, .. } = &mut stale.ops[f].output {
        *kv = Some(earlier);
    }
    found(&stale, "not linearizable");

    // A gap: one response missing from the middle of one watch session.
    let s = (0..h.watches.len())
        .max_by_key(|s| h.watches[*s].responses.len())
        .unwrap();
    let mut gap = h.clone();
    let mid = gap.watches[s].responses.len() / 2;
    gap.watches[s].responses.remove(mid);
    found(&gap, "not reliable");

    // A lost write: an acknowledged put's event gone from every watch.
    let (_, rev) = h
        .ops
        .iter()
        .filter(|o| o.client < usize::MAX - 1 && matches!(o.input, Input::Put { .. }))
        .find_map(|o| o.acked_write())
        .expect("an acknowledged put");
    let mut lost = h.clone();
    for w in &mut lost.watches {
        for r in &mut w.responses {
            r.events.retain(|e| e.rev() != rev);
        }
        w.responses.retain(|r| !r.events.is_empty());
    }
    found(&lost, "acknowledged write lost");

    // A wrong prev_kv.
    let mut prev = h.clone();
    let ev = prev
        .watches
        .iter_mut()
        .filter(|w| w.prev_kv)
        .flat_map(|w| w.responses.iter_mut())
        .flat_map(|r| r.events.iter_mut())
        .find(|e| e.prev.is_some())
        .expect("an event with prev_kv");
    ev.prev = None;
    found(&prev, "prev_kv");

    // Half a txn: both puts of an acknowledged two-key txn made unknown, and the second
    // one's event taken out of every watch, as if only the first had taken effect.
    let txn = h
        .ops
        .iter()
        .find(|o| o.txn.is_some() && o.acked_write().is_some())
        .and_then(|o| o.txn)
        .expect("an acknowledged two-key txn");
    let mut half = h.clone();
    let parts: Vec<usize> = (0..half.ops.len())
        .filter(|i| half.ops[*i].txn == Some(txn))
        .collect();
    assert_eq!(parts.len(), 2, "a two-key txn is recorded as two ops");
    let (second_key, rev) = (
        half.ops[parts[1]].key.clone(),
        half.ops[parts[1]].header_rev().unwrap_or(0),
    );
    for &i in &parts {
        half.ops[i].output = Output::Unknown;
        half.ops[i].return_ns = u64::MAX;
    }
    for w in &mut half.watches {
        for r in &mut w.responses {
            r.events
                .retain(|e| !(e.rev() == rev && e.key == second_key));
        }
    }
    found(&half, "not atomic");

    // A revoke acknowledged at a revision where its key still held the value put with the
    // lease: a lease put of the run, and a revoke of that lease claiming that revision.
    let (put_op, lease, rev) = h
        .ops
        .iter()
        .find_map(|o| match (&o.input, &o.output) {
            (Input::Put { value }, Output::Put { rev }) => {
                let lease = i64::from_str_radix(value.rsplit_once("@L")?.1, 16).ok()?;
                Some((o.clone(), lease, *rev))
            }
            _ => None,
        })
        .expect("an acknowledged put with a lease attached");
    let mut early = h.clone();
    early.ops.push(crate::robust::history::Op {
        input: Input::Revoke {
            lease,
            expiry: false,
        },
        output: Output::Revoke { rev },
        ..put_op
    });
    found(&early, "still holds");

    // A PUT through a NOPUT filter.
    let put_ev = h
        .watches
        .iter()
        .flat_map(|w| w.events())
        .find(|e| e.put)
        .cloned()
        .expect("a put event");
    let mut leaky = h.clone();
    let noput = leaky
        .watches
        .iter_mut()
        .find(|w| w.no_put && w.events().count() > 0)
        .expect("a NOPUT session that saw deletes");
    noput.responses.insert(
        0,
        crate::robust::history::WatchResponse {
            header_rev: put_ev.rev(),
            events: vec![put_ev],
        },
    );
    found(&leaky, "filter not respected: PUT");
}

/// A random sequence of faults, chosen by `ROBUST_SEED` among the kinds `ROBUST_FAULTS` names
/// (comma-separated: `partition`, `pause`, `kill`; all by default), injected one after the
/// other (each healed and recovered from) for `ROBUST_TORTURE_SECS` seconds (10 by default;
/// `scripts/torture.sh` runs long soaks this way).
async fn torture(kind: ServerKind) {
    let secs: u64 = std::env::var("ROBUST_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let kinds =
        std::env::var("ROBUST_FAULTS").unwrap_or_else(|_| "partition,pause,kill,membership".into());
    let mut pool = Vec::new();
    for k in kinds.split(',').map(str::trim) {
        match k {
            "partition" => pool.extend([
                Fault::IsolateLeader,
                Fault::IsolateFollower,
                Fault::MovingSplit,
                Fault::FlappingLink,
            ]),
            "pause" => pool.extend([Fault::PauseLeader, Fault::PauseFollower]),
            "kill" => pool.extend([Fault::KillFollower, Fault::KillLeader, Fault::KillAll]),
            "membership" => pool.push(Fault::RemoveAndReAddFollower),
            other => panic!("ROBUST_FAULTS: unknown fault kind {other:?}"),
        }
    }
    let seed = WorkloadConfig::default().seed;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let run = tokio::time::timeout(
        Duration::from_secs(secs) + SCENARIO_TIMEOUT,
        record_run(kind, &[], move |_| {
            (Instant::now() < deadline).then(|| pool[rand::Rng::gen_range(&mut rng, 0..pool.len())])
        }),
    )
    .await
    .expect("run within its time limit");
    tracing::info!(faults = run.faults.len(), "torture run done");
    check_run(kind, run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_minietcd() {
    torture(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_etcd() {
    torture(ServerKind::Etcd).await;
}
