//! Tests of the watchable store driven through an in-memory history: notify, victims,
//! unsynced catch-up, compaction, restore, and a randomized run checked for etcd's
//! guarantees.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::sync::mpsc;

use super::checker::{check_watch, WatchSpec};
use super::event_batch::EventBatch;
use super::*;
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};
use crate::raft::types::ApplyObserver;

/// A writer that keeps the history, the store and a record of every write in step.
struct Writer {
    hist: Arc<MemoryHistory>,
    store: Arc<WatchableStore>,
    log: BTreeMap<i64, Vec<Event>>,
}

impl Writer {
    fn new() -> Self {
        let hist = Arc::new(MemoryHistory::new());
        let store = WatchableStore::new(hist.clone());
        Writer {
            hist,
            store,
            log: BTreeMap::new(),
        }
    }

    /// One revision touching `keys` (a txn when several); deletes when `delete`.
    fn write(&mut self, keys: &[&[u8]], delete: bool) -> i64 {
        let rev = self.hist.next_revision();
        let events: Vec<Event> = keys
            .iter()
            .map(|k| Event {
                r#type: if delete {
                    EventType::Delete as i32
                } else {
                    EventType::Put as i32
                },
                kv: Some(KeyValue {
                    key: k.to_vec(),
                    mod_revision: rev,
                    value: format!("v{rev}").into_bytes(),
                    ..Default::default()
                }),
                prev_kv: Some(KeyValue {
                    key: k.to_vec(),
                    ..Default::default()
                }),
            })
            .collect();
        self.hist.append(rev, events.clone());
        self.log.insert(rev, events.clone());
        self.store.notify(rev, &events);
        rev
    }

    fn put(&mut self, key: &str) -> i64 {
        self.write(&[key.as_bytes()], false)
    }
}

fn drain(rx: &mut mpsc::Receiver<Delivery>) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Ok(d) = rx.try_recv() {
        out.push(d);
    }
    out
}

fn events_of(ds: &[Delivery]) -> Vec<Vec<Event>> {
    ds.iter()
        .filter(|d| !d.events.is_empty())
        .map(|d| d.events.to_events(true))
        .collect()
}

async fn recv_until(
    rx: &mut mpsc::Receiver<Delivery>,
    got: &mut Vec<Delivery>,
    done: impl Fn(&[Delivery]) -> bool,
) {
    let wait = async {
        while !done(got) {
            match rx.recv().await {
                Some(d) => got.push(d),
                None => return,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("watcher did not receive everything in time");
}

fn last_rev(ds: &[Delivery]) -> i64 {
    ds.iter()
        .flat_map(|d| d.events.iter())
        .map(event_batch::event_rev)
        .max()
        .unwrap_or(0)
}

#[test]
fn synced_watchers_get_matching_events_filters_and_future_starts() {
    let mut w = Writer::new();
    let (tx, mut rx) = mpsc::channel(CHAN_BUF_LEN);
    let key = w.store.watch(
        WatchTarget::new(b"a", b""),
        0,
        Filters::default(),
        1,
        tx.clone(),
    );
    let prefix = w.store.watch(
        WatchTarget::new(b"p/", b"p0"),
        0,
        Filters::default(),
        2,
        tx.clone(),
    );
    let _noput = w.store.watch(
        WatchTarget::new(b"a", b""),
        0,
        Filters::NO_PUT,
        3,
        tx.clone(),
    );
    let future = w
        .store
        .watch(WatchTarget::new(b"\0", b"\0"), 5, Filters::default(), 4, tx);
    assert_ne!(key, prefix);
    assert_ne!(prefix, future);
    w.put("a"); // 2
    w.write(&[b"p/1", b"p/2", b"q"], false); // 3
    w.put("zzz"); // 4
    w.write(&[b"a"], true); // 5
    let got = drain(&mut rx);
    let summary: Vec<(i64, i64, usize)> = got
        .iter()
        .map(|d| (d.watch_id, d.revision, d.events.len()))
        .collect();
    assert_eq!(
        summary,
        vec![(1, 2, 1), (2, 3, 2), (1, 5, 1), (3, 5, 1), (4, 5, 1)]
    );
    assert_eq!(w.store.counts(), (4, 0, 0));
}

#[tokio::test]
async fn slow_consumer_becomes_victim_without_holding_back_others() {
    let mut w = Writer::new();
    let _loops = w.store.start();
    let (slow_tx, mut slow_rx) = mpsc::channel(1);
    let (fast_tx, mut fast_rx) = mpsc::channel(CHAN_BUF_LEN);
    let target = || WatchTarget::new(b"k", b"l");
    w.store.watch(target(), 0, Filters::default(), 1, slow_tx);
    w.store.watch(target(), 0, Filters::default(), 2, fast_tx);
    let start = w.hist.next_revision();
    let mut fast = Vec::new();
    for i in 0..300 {
        w.put(&format!("k{i}"));
        // The fast consumer keeps up while the slow one reads nothing.
        fast.extend(drain(&mut fast_rx));
    }
    let end = w.hist.current_revision();
    assert_eq!(fast.len(), 300, "fast watcher held back");
    let (_, _, victims) = w.store.counts();
    assert_eq!(victims, 1, "the slow watcher should be a victim");
    let mut slow = Vec::new();
    recv_until(&mut slow_rx, &mut slow, |g| last_rev(g) >= end).await;
    let spec = WatchSpec {
        target: target(),
        start_rev: start,
    };
    check_watch(&w.log, &spec, &events_of(&slow), end).unwrap();
    check_watch(&w.log, &spec, &events_of(&fast), end).unwrap();
    // Once drained it is synced again and receives new events directly.
    tokio::time::timeout(Duration::from_secs(5), async {
        while w.store.counts() != (2, 0, 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("slow watcher never synced again");
    let rev = w.put("k-late");
    let d = slow_rx.recv().await.unwrap();
    assert_eq!(last_rev(&[d]), rev);
}

#[tokio::test]
async fn unsynced_catch_up_spans_several_batches_and_writes_during_catch_up() {
    let mut w = Writer::new();
    let first = w.hist.next_revision();
    for i in 0..(2 * WATCH_BATCH_MAX_REVS + 500) {
        w.put(&format!("h{}", i % 7));
    }
    let (tx, mut rx) = mpsc::channel(CHAN_BUF_LEN);
    let target = WatchTarget::new(b"h", b"i");
    w.store
        .watch(target.clone(), first, Filters::default(), 9, tx);
    assert_eq!(w.store.counts(), (0, 1, 0));
    let _loops = w.store.start();
    let mut got = Vec::new();
    for i in 0..200 {
        w.put(&format!("h{i}"));
        got.extend(drain(&mut rx));
        tokio::task::yield_now().await;
    }
    let end = w.hist.current_revision();
    recv_until(&mut rx, &mut got, |g| last_rev(g) >= end).await;
    let spec = WatchSpec {
        target,
        start_rev: first,
    };
    check_watch(&w.log, &spec, &events_of(&got), end).unwrap();
    let max_revs_per_response = got
        .iter()
        .map(|d| {
            let mut revs: Vec<i64> = d.events.iter().map(event_batch::event_rev).collect();
            revs.dedup();
            revs.len()
        })
        .max()
        .unwrap();
    assert!(got.len() >= 3, "catch-up should take several batches");
    assert!(max_revs_per_response <= WATCH_BATCH_MAX_REVS + GAP_MAX_REVS);
}

#[tokio::test]
async fn a_watcher_far_behind_does_not_hold_back_one_nearly_caught_up() {
    let mut w = Writer::new();
    let first = w.hist.next_revision();
    for i in 0..(5 * WATCH_BATCH_MAX_REVS) {
        w.put(&format!("d{}", i % 7));
    }
    let end = w.hist.current_revision();
    let (deep_tx, mut deep_rx) = mpsc::channel(CHAN_BUF_LEN);
    let (near_tx, mut near_rx) = mpsc::channel(CHAN_BUF_LEN);
    w.store.watch(
        WatchTarget::new(b"d", b"e"),
        first,
        Filters::default(),
        1,
        deep_tx,
    );
    w.store.watch(
        WatchTarget::new(b"d", b"e"),
        end - 3,
        Filters::default(),
        2,
        near_tx,
    );
    assert_eq!(w.store.counts(), (0, 2, 0));
    // One round: the near watcher gets its four revisions and is synced; the deep one gets
    // its first window only.
    w.store.sync_watchers().await;
    let near = drain(&mut near_rx);
    assert_eq!(last_rev(&near), end);
    assert_eq!(w.store.counts(), (1, 1, 0));
    let deep = drain(&mut deep_rx);
    assert!(
        last_rev(&deep) < end,
        "the deep watcher read past one window"
    );
}

#[test]
fn a_catch_up_batch_keeps_only_the_events_it_delivers() {
    let all: Arc<[Event]> = (0..100)
        .map(|i| Event {
            kv: Some(KeyValue {
                key: format!("k{i}").into_bytes(),
                mod_revision: i + 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let few = EventBatch::picked(all.clone(), vec![3, 50]);
    assert_eq!(few.len(), 2);
    // Copied out: the batch does not keep the other 98 events alive.
    assert_eq!(Arc::strong_count(&all), 1);
    let keys: Vec<_> = few
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.clone())
        .collect();
    assert_eq!(keys, [b"k3".to_vec(), b"k50".to_vec()]);
    // Most of the window: shared.
    let most = EventBatch::picked(all.clone(), (0..80).collect());
    assert_eq!(most.len(), 80);
    assert_eq!(Arc::strong_count(&all), 2);
}

#[tokio::test]
async fn compacted_watcher_gets_compact_revision_and_is_canceled() {
    let mut w = Writer::new();
    for _ in 0..10 {
        w.put("c");
    }
    w.hist.compact(8);
    let (tx, mut rx) = mpsc::channel(CHAN_BUF_LEN);
    let id = w.store.watch(
        WatchTarget::new(b"c", b""),
        3,
        Filters::default(),
        5,
        tx.clone(),
    );
    // Exactly at the compaction revision is still readable, as etcd.
    w.store
        .watch(WatchTarget::new(b"c", b""), 8, Filters::default(), 6, tx);
    w.store.sync_watchers().await;
    let got = drain(&mut rx);
    let compacted: Vec<_> = got.iter().filter(|d| d.compact_revision != 0).collect();
    assert_eq!(compacted.len(), 1);
    assert_eq!(
        (compacted[0].watch_id, compacted[0].compact_revision),
        (5, 8)
    );
    assert!(!w.store.cancel(id), "compacted watcher must be gone");
    let ok: Vec<i64> = got
        .iter()
        .filter(|d| d.watch_id == 6)
        .flat_map(|d| d.events.iter().map(event_batch::event_rev))
        .collect();
    assert_eq!(ok, vec![8, 9, 10, 11]);
}

#[tokio::test]
async fn restore_replays_from_history_without_duplicates() {
    let mut w = Writer::new();
    let (tx, mut rx) = mpsc::channel(CHAN_BUF_LEN);
    let first = w.hist.next_revision();
    w.store
        .watch(WatchTarget::new(b"r", b""), 0, Filters::default(), 1, tx);
    w.put("r");
    w.put("r");
    let mut got = drain(&mut rx);
    // A snapshot brings revisions the store was never notified of.
    let rev = w.hist.next_revision();
    let ev = Event {
        kv: Some(KeyValue {
            key: b"r".to_vec(),
            mod_revision: rev,
            ..Default::default()
        }),
        ..Default::default()
    };
    w.hist.append(rev, vec![ev.clone()]);
    w.log.insert(rev, vec![ev]);
    w.store.restored(rev);
    assert_eq!(w.store.counts(), (0, 1, 0));
    w.store.sync_watchers().await;
    got.extend(drain(&mut rx));
    assert_eq!(w.store.counts(), (1, 0, 0));
    let end = w.put("r");
    got.extend(drain(&mut rx));
    let spec = WatchSpec {
        target: WatchTarget::new(b"r", b""),
        start_rev: first,
    };
    check_watch(&w.log, &spec, &events_of(&got), end).unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<u8>, bool),
    Watch {
        key: u8,
        range: bool,
        back: i64,
        cap: usize,
    },
    Drain(prop::sample::Index),
    Cancel(prop::sample::Index),
    Sync,
    Victims,
    Compact(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::collection::vec(0u8..5, 1..3), any::<bool>()).prop_map(|(k, d)| Op::Write(k, d)),
        2 => (0u8..5, any::<bool>(), 0i64..30, 1usize..4)
            .prop_map(|(key, range, back, cap)| Op::Watch { key, range, back, cap }),
        2 => any::<prop::sample::Index>().prop_map(Op::Drain),
        1 => any::<prop::sample::Index>().prop_map(Op::Cancel),
        2 => Just(Op::Sync),
        2 => Just(Op::Victims),
        1 => (0i64..10).prop_map(Op::Compact),
    ]
}

struct Probe {
    spec: WatchSpec,
    rx: mpsc::Receiver<Delivery>,
    got: Vec<Delivery>,
    id: WatcherId,
    canceled: bool,
}

async fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w = Writer::new();
    let mut probes: Vec<Probe> = Vec::new();
    for op in ops {
        match op {
            Op::Write(keys, delete) => {
                let keys: Vec<Vec<u8>> = keys.iter().map(|k| vec![b'a' + k]).collect();
                let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                w.write(&refs, delete);
            }
            Op::Watch {
                key,
                range,
                back,
                cap,
            } => {
                let k = [b'a' + key];
                let target = if range {
                    WatchTarget::new(&k, &[b'a' + key + 2])
                } else {
                    WatchTarget::new(&k, b"")
                };
                let cur = w.hist.current_revision();
                let start = (cur + 1 - back).max(1);
                let (tx, rx) = mpsc::channel(cap);
                let id = w.store.watch(
                    target.clone(),
                    start,
                    Filters::default(),
                    probes.len() as i64,
                    tx,
                );
                probes.push(Probe {
                    spec: WatchSpec {
                        target,
                        start_rev: start,
                    },
                    rx,
                    got: Vec::new(),
                    id,
                    canceled: false,
                });
            }
            Op::Drain(i) => {
                if !probes.is_empty() {
                    let n = probes.len();
                    let p = &mut probes[i.index(n)];
                    p.got.extend(drain(&mut p.rx));
                }
            }
            Op::Cancel(i) => {
                if !probes.is_empty() {
                    let n = probes.len();
                    let p = &mut probes[i.index(n)];
                    w.store.cancel(p.id);
                    p.canceled = true;
                }
            }
            Op::Sync => {
                w.store.sync_watchers().await;
            }
            Op::Victims => {
                w.store.sync_victims();
            }
            Op::Compact(back) => {
                let rev = (w.hist.current_revision() - back).max(w.hist.compact_revision());
                w.hist.compact(rev);
            }
        }
    }
    // Let every live watcher catch up.
    let end = w.hist.current_revision();
    for _ in 0..10_000 {
        for p in probes.iter_mut() {
            p.got.extend(drain(&mut p.rx));
        }
        let (_, unsynced, victims) = w.store.counts();
        if unsynced == 0 && victims == 0 {
            break;
        }
        w.store.sync_victims();
        w.store.sync_watchers().await;
    }
    for p in probes.iter_mut() {
        p.got.extend(drain(&mut p.rx));
    }
    prop_assert_eq!(w.store.counts().1 + w.store.counts().2, 0);
    for p in &probes {
        let compacted = p.got.iter().any(|d| d.compact_revision != 0);
        if compacted {
            // Nothing follows a compaction notice, and it came only because history was gone.
            prop_assert!(p.got.last().is_some_and(|d| d.compact_revision != 0));
            prop_assert!(p.spec.start_rev < w.hist.compact_revision());
            continue;
        }
        let until = if p.canceled { last_rev(&p.got) } else { end };
        let res = check_watch(&w.log, &p.spec, &events_of(&p.got), until);
        if p.canceled {
            // A canceled watcher may stop anywhere, but what it got is a correct prefix.
            prop_assert!(res.is_ok(), "{:?}", res);
        } else {
            prop_assert!(res.is_ok(), "{:?} for {:?}", res, p.spec);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn random_runs_keep_watch_guarantees(ops in prop::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_ops(ops))?;
    }
}

#[tokio::test]
async fn stream_progress_waits_until_every_watcher_is_synced() {
    let mut w = Writer::new();
    for _ in 0..5 {
        w.put("p");
    }
    let (tx, mut rx) = mpsc::channel(CHAN_BUF_LEN);
    let synced = w.store.watch(
        WatchTarget::new(b"p", b""),
        0,
        Filters::default(),
        1,
        tx.clone(),
    );
    let behind = w.store.watch(
        WatchTarget::new(b"p", b""),
        2,
        Filters::default(),
        2,
        tx.clone(),
    );
    assert!(w.store.is_synced(synced) && !w.store.is_synced(behind));
    assert!(!w.store.progress_all(&[synced, behind], &tx));
    assert!(
        !w.store.progress(behind),
        "no progress for an unsynced watcher"
    );
    w.store.sync_watchers().await;
    assert!(w.store.progress_all(&[synced, behind], &tx));
    let got = drain(&mut rx);
    let last = got.last().unwrap();
    // The answer comes after the replayed events, at the current revision.
    assert_eq!(
        (last.watch_id, last.revision),
        (-1, w.hist.current_revision())
    );
    assert_eq!(last_rev(&got[..got.len() - 1]), w.hist.current_revision());
}

/// Watchers of one key share the key's bytes (the group's copy), and a target is 16 bytes, so
/// that a hundred thousand watchers of a few keys cost no allocation each for their key.
#[test]
fn watchers_of_one_key_share_it() {
    let w = Writer::new();
    let (tx, _rx) = mpsc::channel(16);
    let watch = |key: &[u8], watch_id| {
        w.store.watch(
            WatchTarget::new(key, b""),
            0,
            Filters::default(),
            watch_id,
            tx.clone(),
        )
    };
    let (a, b, other) = (watch(b"k", 1), watch(b"k", 2), watch(b"j", 3));
    let inner = w.store.lock();
    let key = |id: &WatcherId| match &inner.watchers[id].target {
        WatchTarget::Key(k) => k.clone(),
        WatchTarget::Range(_) => panic!("a key watcher became a range"),
    };
    assert!(Arc::ptr_eq(&key(&a), &key(&b)));
    assert!(!Arc::ptr_eq(&key(&a), &key(&other)));
    assert_eq!(&key(&other)[..], b"j");
    assert_eq!(std::mem::size_of::<WatchTarget>(), 16);
}
