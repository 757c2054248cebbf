//! Model-based property test: random operation lists (puts, deletes, txns with compares and
//! nested txns, compactions, lease grants and revokes, restarts, snapshot installs into a
//! fresh db, reads at random past revisions) run against the store and against a plain
//! in-memory model that keeps every revision forever; every answer must match.
//!
//! The model is deliberately naive: per key the full list of changes, reads replay it, and
//! compaction only moves the "compacted" floor. That checks what compaction keeps, too.

use proptest::prelude::*;

mod model;

use model::{model_write, strip, Model};

use super::tests::{fixture, Fixture};
use super::*;
use crate::pb::etcdserverpb::compare::TargetUnion;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResp;
use crate::pb::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, PutResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;

const KEYS: [&str; 5] = ["a", "ab", "b", "c", "d"];
const LEASE_TTL_SECS: i64 = 10;

#[derive(Debug, Clone)]
enum Span {
    One,
    To(usize),
    FromKey,
    All,
}

fn span_s() -> impl Strategy<Value = Span> {
    prop_oneof![
        3 => Just(Span::One),
        1 => (0..KEYS.len()).prop_map(Span::To),
        1 => Just(Span::FromKey),
        1 => Just(Span::All),
    ]
}

fn bounds(key: usize, span: &Span) -> (Vec<u8>, Vec<u8>) {
    let k = KEYS[key].as_bytes().to_vec();
    match span {
        Span::One => (k, Vec::new()),
        Span::To(j) => (k, KEYS[*j].as_bytes().to_vec()),
        Span::FromKey => (k, vec![0]),
        Span::All => (vec![0], vec![0]),
    }
}

#[derive(Debug, Clone)]
struct CmpSpec {
    key: usize,
    span: Span,
    target: i32,
    result: i32,
    int: i64,
    value: u8,
}

/// A put; `flags` bit 0 = ignore_value, bit 1 = ignore_lease.
#[derive(Debug, Clone)]
struct PutSpec {
    key: usize,
    value: u8,
    lease: i64,
    prev: bool,
    flags: u8,
}

impl PutSpec {
    fn req(&self) -> PutRequest {
        PutRequest {
            key: KEYS[self.key].into(),
            value: vec![b'0' + self.value],
            lease: self.lease,
            prev_kv: self.prev,
            ignore_value: self.flags & 1 != 0,
            ignore_lease: self.flags & 2 != 0,
        }
    }
}

fn put_s() -> impl Strategy<Value = PutSpec> {
    (
        0..KEYS.len(),
        0..3u8,
        lease_s(),
        any::<bool>(),
        prop_oneof![6 => Just(0u8), 1 => 1..4u8],
    )
        .prop_map(|(key, value, lease, prev, flags)| PutSpec {
            key,
            value,
            lease,
            prev,
            flags,
        })
}

#[derive(Debug, Clone)]
enum TOp {
    Put(PutSpec),
    Del { key: usize, span: Span, prev: bool },
    Get { key: usize, span: Span, rev: i64 },
    Txn(TxnSpec),
}

#[derive(Debug, Clone)]
struct TxnSpec {
    cmps: Vec<CmpSpec>,
    success: Vec<TOp>,
    failure: Vec<TOp>,
}

#[derive(Debug, Clone)]
struct ReadSpec {
    key: usize,
    span: Span,
    back: i64,
    limit: i64,
    order: i32,
    target: i32,
    keys_only: bool,
    count_only: bool,
    min_mod: i64,
    max_create: i64,
}

#[derive(Debug, Clone)]
enum Step {
    Put(PutSpec),
    Del {
        key: usize,
        span: Span,
        prev: bool,
    },
    Txn(TxnSpec),
    Compact {
        back: i64,
    },
    Grant {
        id: i64,
    },
    Revoke {
        id: i64,
    },
    Restart,
    Snapshot,
    Read(ReadSpec),
    /// events(current - back, current - back + len, max_revs)
    Events {
        back: i64,
        len: i64,
        max_revs: usize,
    },
}

fn cmp_s() -> impl Strategy<Value = CmpSpec> {
    (
        0..KEYS.len(),
        prop_oneof![3 => Just(Span::One), 1 => (0..KEYS.len()).prop_map(Span::To)],
        0..5i32,
        0..4i32,
        0..8i64,
        0..3u8,
    )
        .prop_map(|(key, span, target, result, int, value)| CmpSpec {
            key,
            span,
            target,
            result,
            int,
            value,
        })
}

fn lease_s() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(0i64), 1 => 1..4i64]
}

fn flat_op_s() -> impl Strategy<Value = TOp> {
    prop_oneof![
        3 => put_s().prop_map(TOp::Put),
        1 => (0..KEYS.len(), span_s(), any::<bool>()).prop_map(|(key, span, prev)| TOp::Del { key, span, prev }),
        2 => (0..KEYS.len(), span_s(), prop_oneof![4 => Just(0i64), 1 => -1..12i64]).prop_map(|(key, span, rev)| TOp::Get { key, span, rev }),
    ]
}

fn txn_s(nested: bool) -> BoxedStrategy<TxnSpec> {
    let op = if nested {
        prop_oneof![4 => flat_op_s(), 1 => txn_s(false).prop_map(TOp::Txn)].boxed()
    } else {
        flat_op_s().boxed()
    };
    (
        prop::collection::vec(cmp_s(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..3),
    )
        .prop_map(|(cmps, success, failure)| TxnSpec {
            cmps,
            success,
            failure,
        })
        .boxed()
}

fn step_s() -> impl Strategy<Value = Step> {
    let read = (
        0..KEYS.len(),
        span_s(),
        0..8i64,
        0..4i64,
        0..3i32,
        0..5i32,
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop_oneof![3 => Just(0i64), 1 => 1..12i64],
        prop_oneof![3 => Just(0i64), 1 => 1..12i64],
    )
        .prop_map(
            |(
                key,
                span,
                back,
                limit,
                order,
                target,
                keys_only,
                count_only,
                min_mod,
                max_create,
            )| ReadSpec {
                key,
                span,
                back,
                limit,
                order,
                target,
                keys_only,
                count_only,
                min_mod,
                max_create,
            },
        );
    prop_oneof![
        8 => put_s().prop_map(Step::Put),
        3 => (0..KEYS.len(), span_s(), any::<bool>()).prop_map(|(key, span, prev)| Step::Del { key, span, prev }),
        4 => txn_s(true).prop_map(Step::Txn),
        1 => (-1..6i64).prop_map(|back| Step::Compact { back }),
        2 => (1..4i64).prop_map(|id| Step::Grant { id }),
        1 => (1..4i64).prop_map(|id| Step::Revoke { id }),
        1 => Just(Step::Restart),
        1 => Just(Step::Snapshot),
        6 => read.prop_map(Step::Read),
        2 => (0..10i64, 0..6i64, 1..4usize).prop_map(|(back, len, max_revs)| Step::Events { back, len, max_revs }),
    ]
}

fn cmp_req(c: &CmpSpec) -> Compare {
    let (key, range_end) = bounds(c.key, &c.span);
    let target_union = Some(match c.target {
        0 => TargetUnion::Version(c.int),
        1 => TargetUnion::CreateRevision(c.int),
        2 => TargetUnion::ModRevision(c.int),
        3 => TargetUnion::Value(vec![b'0' + c.value]),
        _ => TargetUnion::Lease(c.int % 4),
    });
    Compare {
        result: c.result,
        target: c.target,
        key,
        range_end,
        target_union,
    }
}

fn op_req(op: &TOp) -> RequestOp {
    let request = match op {
        TOp::Put(p) => Op::RequestPut(p.req()),
        TOp::Del { key, span, prev } => {
            let (key, range_end) = bounds(*key, span);
            Op::RequestDeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: *prev,
            })
        }
        TOp::Get { key, span, rev } => {
            let (key, range_end) = bounds(*key, span);
            Op::RequestRange(RangeRequest {
                key,
                range_end,
                revision: *rev,
                ..Default::default()
            })
        }
        TOp::Txn(t) => Op::RequestTxn(txn_req(t)),
    };
    RequestOp {
        request: Some(request),
    }
}

fn txn_req(t: &TxnSpec) -> TxnRequest {
    TxnRequest {
        compare: t.cmps.iter().map(cmp_req).collect(),
        success: t.success.iter().map(op_req).collect(),
        failure: t.failure.iter().map(op_req).collect(),
    }
}

fn check_all(f: &Fixture, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(f.store.current_revision(), m.current);
    // The bytes in use as counted agree with the rows.
    let fail = |e: StorageError| TestCaseError::fail(e.to_string());
    prop_assert_eq!(
        f.store.size_in_use().map_err(fail)?,
        f.store.size_in_use_read().map_err(fail)?
    );
    prop_assert_eq!(f.store.compact_revision(), m.compacted);
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    let mut got = f
        .store
        .range(&all)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    got.header = None;
    let want = m
        .range(&all, m.current, |at| m.kvs(&[0], &[0], at))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(got, want);
    let from = m.compacted + 1;
    let hist = f
        .store
        .events(from.max(2), m.current, usize::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let want: Vec<(i64, Vec<Event>)> = m
        .events
        .range(from..)
        .map(|(r, e)| (*r, e.clone()))
        .collect();
    prop_assert_eq!(hist, want);
    if m.compacted > 1 {
        // Below the compaction: gone. At it: served, as etcd serves a watch from there.
        prop_assert!(matches!(
            f.store.events(m.compacted - 1, m.current, 1),
            Err(StorageError::Compacted)
        ));
        prop_assert!(f.store.events(m.compacted, m.current, 1).is_ok());
    }
    let ids = f
        .store
        .lease_ids()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(ids, m.leases.keys().copied().collect::<Vec<_>>());
    for (id, keys) in &m.leases {
        let info = f
            .store
            .lease_info(*id)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            info.map(|i| i.keys),
            Some(keys.iter().cloned().collect::<Vec<_>>())
        );
    }
    Ok(())
}

/// How a run's store fills prev_kv in apply events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrevKv {
    /// Always (a store without a demand count).
    Always,
    /// Only on demand, with nobody asking: a put reads no old row unless its request needs
    /// it, and the test fills a missing prev_kv as the watch server does.
    OnDemand,
}

/// A fresh store for a run.
fn fixture_for(prev: PrevKv) -> Fixture {
    let f = fixture();
    set_prev_mode(&f, prev);
    f
}

fn set_prev_mode(f: &Fixture, prev: PrevKv) {
    if prev == PrevKv::OnDemand {
        f.store.fill_prev_kv_on_demand(PrevKvDemand::default());
    }
}

fn run(steps: Vec<Step>, prev: PrevKv) -> Result<(), TestCaseError> {
    let mut f = fixture_for(prev);
    let mut m = Model::new();
    for (n, step) in steps.iter().enumerate() {
        let req = match step {
            Step::Put(p) => Some(Request::Put(p.req())),
            Step::Del { key, span, prev } => {
                let (key, range_end) = bounds(*key, span);
                Some(Request::DeleteRange(DeleteRangeRequest {
                    key,
                    range_end,
                    prev_kv: *prev,
                }))
            }
            Step::Txn(t) => Some(Request::Txn(txn_req(t))),
            Step::Compact { back } => Some(Request::Compaction(CompactionRequest {
                revision: m.current - back,
                physical: false,
            })),
            Step::Grant { id } => Some(Request::LeaseGrant(LeaseGrantRequest {
                ttl: LEASE_TTL_SECS,
                id: *id,
            })),
            Step::Revoke { id } => Some(Request::LeaseRevoke(LeaseRevokeRequest { id: *id })),
            Step::Restart => {
                f = f.restart();
                set_prev_mode(&f, prev);
                None
            }
            Step::Snapshot => {
                let snap = f
                    .store
                    .snapshot()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let g = fixture_for(prev);
                g.store
                    .install_snapshot(&snap)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                f = g;
                None
            }
            Step::Events {
                back,
                len,
                max_revs,
            } => {
                let from = m.current - back;
                let got = f.store.events(from, from + len, *max_revs);
                if m.compacted > 0 && from < m.compacted {
                    prop_assert!(matches!(got, Err(StorageError::Compacted)), "step {}", n);
                } else if m.compacted > 0 && from == m.compacted {
                    // Served (as etcd serves a watch from the compaction revision), but its
                    // deletes and prev_kvs went with the compaction: only the answer is checked.
                    prop_assert!(got.is_ok(), "step {}: {:?}", n, got);
                } else {
                    let want: Vec<(i64, Vec<Event>)> = m
                        .events
                        .range(from..=from + len)
                        .take(*max_revs)
                        .map(|(r, e)| (*r, e.clone()))
                        .collect();
                    prop_assert_eq!(got.map_err(|e| TestCaseError::fail(e.to_string()))?, want);
                }
                None
            }
            Step::Read(r) => {
                let (key, range_end) = bounds(r.key, &r.span);
                let req = RangeRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    limit: r.limit,
                    revision: if r.back == 0 {
                        0
                    } else {
                        m.current - r.back + 1
                    },
                    sort_order: r.order,
                    sort_target: r.target,
                    keys_only: r.keys_only,
                    count_only: r.count_only,
                    min_mod_revision: r.min_mod,
                    max_create_revision: r.max_create,
                    ..Default::default()
                };
                let got = f.store.range(&req).map(|mut g| {
                    g.header = None;
                    g
                });
                let want = m.range(&req, m.current, |at| m.kvs(&key, &range_end, at));
                match (got, want) {
                    (Ok(g), Ok(w)) => prop_assert_eq!(g, w, "step {}", n),
                    (Err(g), Err(w)) => prop_assert_eq!(g.to_string(), w.to_string()),
                    (g, w) => prop_assert!(false, "step {}: store {:?} model {:?}", n, g, w),
                }
                None
            }
        };
        if let Some(req) = req {
            let out = f
                .store
                .apply(
                    &InternalRequest {
                        caller: None,
                        request: Some(req.clone()),
                    },
                    format!("entry-{n}").as_bytes(),
                )
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (code, want) = model_write(&mut m, &req);
            let mut got = out.response.response.clone();
            if let Some(g) = &mut got {
                strip(g);
            }
            prop_assert_eq!(out.response.error, code, "step {}", n);
            prop_assert_eq!(got, want, "step {}", n);
            prop_assert_eq!(out.revision, m.current);
            let want_events = if code == 0 {
                m.events
                    .get(&out.revision)
                    .filter(|_| !out.events.is_empty())
                    .cloned()
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let mut got_events = out.events.clone();
            // Filled as the watch server fills what an on-demand apply left out.
            crate::watch::stream::fill_prev_kvs(&mut got_events, &f.store);
            if prev == PrevKv::Always {
                prop_assert_eq!(
                    &out.events,
                    &got_events,
                    "step {}: a prev_kv was missing",
                    n
                );
            }
            prop_assert_eq!(&got_events, &want_events, "step {}", n);
            prop_assert_eq!(
                f.store.applied().ok().flatten(),
                Some(format!("entry-{n}").into_bytes())
            );
        }
        check_all(&f, &m)?;
    }
    Ok(())
}

proptest! {
    // No persistence file: a shrunk failure becomes a named regression test instead.
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec(step_s(), 1..60)) {
        run(steps, PrevKv::Always)?;
    }

    #[test]
    fn store_matches_model_when_events_carry_prev_kv_on_demand(
        steps in prop::collection::vec(step_s(), 1..60)
    ) {
        run(steps, PrevKv::OnDemand)?;
    }
}
