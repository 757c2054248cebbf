//! Model-based property test: random operation lists (puts, deletes, txns with compares and
//! nested txns, compactions, lease grants and revokes, restarts, snapshot installs into a
//! fresh db, reads at random past revisions) run against the store and against a plain
//! in-memory model that keeps every revision forever; every answer must match.
//!
//! The model is deliberately naive: per key the full list of changes, reads replay it, and
//! compaction only moves the "compacted" floor. That checks what compaction keeps, too.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

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

#[derive(Debug, Clone)]
enum TOp {
    Put {
        key: usize,
        value: u8,
        lease: i64,
        prev: bool,
    },
    Del {
        key: usize,
        span: Span,
        prev: bool,
    },
    Get {
        key: usize,
        span: Span,
    },
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
    Put {
        key: usize,
        value: u8,
        lease: i64,
        prev: bool,
    },
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
        3 => (0..KEYS.len(), 0..3u8, lease_s(), any::<bool>()).prop_map(|(key, value, lease, prev)| TOp::Put { key, value, lease, prev }),
        1 => (0..KEYS.len(), span_s(), any::<bool>()).prop_map(|(key, span, prev)| TOp::Del { key, span, prev }),
        2 => (0..KEYS.len(), span_s()).prop_map(|(key, span)| TOp::Get { key, span }),
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
        8 => (0..KEYS.len(), 0..3u8, lease_s(), any::<bool>()).prop_map(|(key, value, lease, prev)| Step::Put { key, value, lease, prev }),
        3 => (0..KEYS.len(), span_s(), any::<bool>()).prop_map(|(key, span, prev)| Step::Del { key, span, prev }),
        4 => txn_s(true).prop_map(Step::Txn),
        1 => (-1..6i64).prop_map(|back| Step::Compact { back }),
        2 => (1..4i64).prop_map(|id| Step::Grant { id }),
        1 => (1..4i64).prop_map(|id| Step::Revoke { id }),
        1 => Just(Step::Restart),
        1 => Just(Step::Snapshot),
        6 => read.prop_map(Step::Read),
    ]
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

/// The model: every change of every key, forever.
#[derive(Debug, Default)]
struct Model {
    hist: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    current: i64,
    compacted: i64,
    leases: BTreeMap<i64, BTreeSet<Vec<u8>>>,
    events: BTreeMap<i64, Vec<Event>>,
}

/// One write txn of the model.
struct MTxn<'m> {
    m: &'m Model,
    changes: BTreeMap<Vec<u8>, Option<KeyValue>>,
    events: Vec<Event>,
    leases: BTreeMap<i64, BTreeSet<Vec<u8>>>,
}

impl Model {
    fn new() -> Self {
        Model {
            current: 1,
            ..Model::default()
        }
    }

    fn at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        self.hist
            .get(key)?
            .iter()
            .rev()
            .find(|(m, _)| *m <= rev)
            .and_then(|(_, kv)| kv.clone())
    }

    fn kvs(&self, key: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.hist
            .keys()
            .filter(|k| in_range(k, key, end))
            .filter_map(|k| self.at(k, rev))
            .collect()
    }

    fn range(
        &self,
        req: &RangeRequest,
        cur: i64,
        kvs_at: impl Fn(i64) -> Vec<KeyValue>,
    ) -> Result<RangeResponse, StorageError> {
        if req.revision > cur {
            return Err(StorageError::FutureRevision);
        }
        let at = if req.revision <= 0 { cur } else { req.revision };
        if at < self.compacted {
            return Err(StorageError::Compacted);
        }
        let mut all = kvs_at(at);
        let count = all.len() as i64;
        // etcd quirk: with order NONE (even when a non-KEY target makes it sort ascending)
        // and no filters, only the first limit + 1 keys by key order are sorted.
        let filtered = req.min_mod_revision != 0 || req.max_create_revision != 0;
        if req.sort_order == 0 && !filtered && req.limit > 0 {
            all.truncate(req.limit as usize + 1);
        }
        let mut kvs: Vec<KeyValue> = all
            .into_iter()
            .filter(|kv| req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            .filter(|kv| {
                req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision
            })
            .collect();
        let order = if req.sort_target != 0 && req.sort_order == 0 {
            1
        } else {
            req.sort_order
        };
        let field = |kv: &KeyValue| -> (i64, Vec<u8>) {
            match req.sort_target {
                0 => (0, kv.key.clone()),
                1 => (kv.version, Vec::new()),
                2 => (kv.create_revision, Vec::new()),
                3 => (kv.mod_revision, Vec::new()),
                _ => (0, kv.value.clone()),
            }
        };
        if order == 1 {
            kvs.sort_by_key(field);
        } else if order == 2 {
            kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv)));
        }
        if req.count_only {
            kvs.clear();
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }
}

impl MTxn<'_> {
    fn view(&self, key: &[u8]) -> Option<KeyValue> {
        match self.changes.get(key) {
            Some(c) => c.clone(),
            None => self.m.at(key, self.m.current),
        }
    }

    fn view_kvs(&self, key: &[u8], end: &[u8]) -> Vec<KeyValue> {
        let keys: BTreeSet<&Vec<u8>> = self
            .m
            .hist
            .keys()
            .chain(self.changes.keys())
            .filter(|k| in_range(k, key, end))
            .collect();
        keys.into_iter().filter_map(|k| self.view(k)).collect()
    }

    fn rev(&self) -> i64 {
        self.m.current + 1
    }

    fn put(&mut self, key: &[u8], value: &[u8], lease: i64, prev: bool) -> PutResponse {
        let old = self.view(key);
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: old.as_ref().map_or(self.rev(), |o| o.create_revision),
            mod_revision: self.rev(),
            version: old.as_ref().map_or(1, |o| o.version + 1),
            value: value.to_vec(),
            lease,
        };
        if let Some(o) = &old {
            if let Some(ks) = self.leases.get_mut(&o.lease) {
                ks.remove(key);
            }
        }
        if let Some(ks) = self.leases.get_mut(&lease) {
            ks.insert(key.to_vec());
        }
        let prev_kv = if kv.create_revision == kv.mod_revision {
            None
        } else {
            self.m.at(key, self.m.current)
        };
        self.events.push(Event {
            r#type: 0,
            kv: Some(kv.clone()),
            prev_kv,
        });
        self.changes.insert(key.to_vec(), Some(kv));
        PutResponse {
            header: None,
            prev_kv: if prev { old } else { None },
        }
    }

    fn delete(&mut self, key: &[u8], end: &[u8], prev: bool) -> DeleteRangeResponse {
        let olds = self.view_kvs(key, end);
        for o in &olds {
            if let Some(ks) = self.leases.get_mut(&o.lease) {
                ks.remove(&o.key);
            }
            let tomb = KeyValue {
                key: o.key.clone(),
                mod_revision: self.rev(),
                ..KeyValue::default()
            };
            self.events.push(Event {
                r#type: 1,
                kv: Some(tomb),
                prev_kv: self.m.at(&o.key, self.m.current),
            });
            self.changes.insert(o.key.clone(), None);
        }
        DeleteRangeResponse {
            header: None,
            deleted: olds.len() as i64,
            prev_kvs: if prev { olds } else { Vec::new() },
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs = self.m.kvs(&c.key, &c.range_end, self.m.current);
        if kvs.is_empty() && c.target == 3 {
            return false;
        }
        let check = |kv: &KeyValue| {
            let ord = match (&c.target_union, c.target) {
                (Some(TargetUnion::Version(v)), 0) => kv.version.cmp(v),
                (Some(TargetUnion::CreateRevision(v)), 1) => kv.create_revision.cmp(v),
                (Some(TargetUnion::ModRevision(v)), 2) => kv.mod_revision.cmp(v),
                (Some(TargetUnion::Value(v)), 3) => kv.value.cmp(v),
                (Some(TargetUnion::Lease(v)), 4) => kv.lease.cmp(v),
                _ => unreachable!("the test builds matching unions"),
            };
            match c.result {
                0 => ord.is_eq(),
                1 => ord.is_gt(),
                2 => ord.is_lt(),
                _ => ord.is_ne(),
            }
        };
        if kvs.is_empty() {
            return check(&KeyValue::default());
        }
        kvs.iter().all(check)
    }

    fn path(&self, t: &TxnRequest, out: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| self.compare(c));
        out.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(Op::RequestTxn(n)) = &op.request {
                self.path(n, out);
            }
        }
    }

    fn leases_ok(&self, t: &TxnRequest, path: &[bool], pos: &mut usize) -> bool {
        let ok = path[*pos];
        *pos += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(Op::RequestPut(p))
                    if p.lease != 0 && !self.m.leases.contains_key(&p.lease) =>
                {
                    return false
                }
                Some(Op::RequestTxn(n)) if !self.leases_ok(n, path, pos) => return false,
                _ => {}
            }
        }
        true
    }

    fn exec(&mut self, t: &TxnRequest, path: &[bool], pos: &mut usize) -> TxnResponse {
        let ok = path[*pos];
        *pos += 1;
        let mut responses = Vec::new();
        for op in if ok { &t.success } else { &t.failure } {
            let r = match &op.request {
                Some(Op::RequestPut(p)) => {
                    OpResp::ResponsePut(self.put(&p.key, &p.value, p.lease, p.prev_kv))
                }
                Some(Op::RequestDeleteRange(d)) => {
                    OpResp::ResponseDeleteRange(self.delete(&d.key, &d.range_end, d.prev_kv))
                }
                Some(Op::RequestRange(r)) => {
                    let cur = if self.events.is_empty() {
                        self.m.current
                    } else {
                        self.rev()
                    };
                    let resp = self
                        .m
                        .range(r, cur, |_| self.view_kvs(&r.key, &r.range_end));
                    OpResp::ResponseRange(resp.unwrap_or_default())
                }
                Some(Op::RequestTxn(n)) => OpResp::ResponseTxn(self.exec(n, path, pos)),
                None => continue,
            };
            responses.push(ResponseOp { response: Some(r) });
        }
        TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        }
    }
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
        TOp::Put {
            key,
            value,
            lease,
            prev,
        } => Op::RequestPut(PutRequest {
            key: KEYS[*key].into(),
            value: vec![b'0' + value],
            lease: *lease,
            prev_kv: *prev,
            ..Default::default()
        }),
        TOp::Del { key, span, prev } => {
            let (key, range_end) = bounds(*key, span);
            Op::RequestDeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: *prev,
            })
        }
        TOp::Get { key, span } => {
            let (key, range_end) = bounds(*key, span);
            Op::RequestRange(RangeRequest {
                key,
                range_end,
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

/// Removes headers everywhere (they are checked by unit tests; the model ignores them).
fn strip(r: &mut Response) {
    fn strip_txn(t: &mut TxnResponse) {
        t.header = None;
        for op in &mut t.responses {
            match &mut op.response {
                Some(OpResp::ResponseRange(x)) => x.header = None,
                Some(OpResp::ResponsePut(x)) => x.header = None,
                Some(OpResp::ResponseDeleteRange(x)) => x.header = None,
                Some(OpResp::ResponseTxn(x)) => strip_txn(x),
                None => {}
            }
        }
    }
    match r {
        Response::Put(x) => x.header = None,
        Response::DeleteRange(x) => x.header = None,
        Response::Txn(x) => strip_txn(x),
        Response::Compaction(x) => x.header = None,
        Response::LeaseGrant(x) => x.header = None,
        Response::LeaseRevoke(x) => x.header = None,
    }
}

/// Applies a write to the model: (error code, response without headers, events).
fn model_write(m: &mut Model, req: &Request) -> (i32, Option<Response>) {
    let mut t = MTxn {
        m,
        changes: BTreeMap::new(),
        events: Vec::new(),
        leases: m.leases.clone(),
    };
    let result: Result<Response, ApplyError> = match req {
        Request::Put(p) => {
            if p.lease != 0 && !m.leases.contains_key(&p.lease) {
                Err(ApplyError::LeaseNotFound)
            } else {
                Ok(Response::Put(t.put(&p.key, &p.value, p.lease, p.prev_kv)))
            }
        }
        Request::DeleteRange(d) => Ok(Response::DeleteRange(t.delete(
            &d.key,
            &d.range_end,
            d.prev_kv,
        ))),
        Request::Txn(x) => {
            let mut path = Vec::new();
            t.path(x, &mut path);
            if !t.leases_ok(x, &path, &mut 0) {
                Err(ApplyError::LeaseNotFound)
            } else {
                Ok(Response::Txn(t.exec(x, &path, &mut 0)))
            }
        }
        Request::LeaseGrant(g) => {
            if m.leases.contains_key(&g.id) {
                Err(ApplyError::LeaseExists)
            } else {
                t.leases.insert(g.id, BTreeSet::new());
                Ok(Response::LeaseGrant(LeaseGrantResponse {
                    header: None,
                    id: g.id,
                    ttl: g.ttl,
                    error: String::new(),
                }))
            }
        }
        Request::LeaseRevoke(r) => match m.leases.get(&r.id) {
            None => Err(ApplyError::LeaseNotFound),
            Some(keys) => {
                for k in keys {
                    t.delete(k, &[], false);
                }
                t.leases.remove(&r.id);
                Ok(Response::LeaseRevoke(LeaseRevokeResponse::default()))
            }
        },
        Request::Compaction(c) => {
            if c.revision <= m.compacted {
                Err(ApplyError::Compacted)
            } else if c.revision > m.current {
                Err(ApplyError::FutureRevision)
            } else {
                Ok(Response::Compaction(CompactionResponse::default()))
            }
        }
    };
    match result {
        Err(e) => (e as i32, None),
        Ok(resp) => {
            let MTxn {
                changes: _,
                events,
                leases,
                ..
            } = t;
            if let Request::Compaction(c) = req {
                m.compacted = c.revision;
            }
            m.leases = leases;
            if !events.is_empty() {
                m.current += 1;
                for ev in &events {
                    let kv = ev.kv.clone().unwrap_or_default();
                    let entry = if ev.r#type == 1 {
                        None
                    } else {
                        Some(kv.clone())
                    };
                    m.hist.entry(kv.key).or_default().push((m.current, entry));
                }
                m.events.insert(m.current, events);
            }
            (ApplyError::ApplyOk as i32, Some(resp))
        }
    }
}

fn check_all(f: &Fixture, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(f.store.current_revision(), m.current);
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
    if m.compacted > 0 {
        prop_assert!(matches!(
            f.store.events(m.compacted, m.current, 1),
            Err(StorageError::Compacted)
        ));
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

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut f = fixture();
    let mut m = Model::new();
    for (n, step) in steps.iter().enumerate() {
        let req = match step {
            Step::Put {
                key,
                value,
                lease,
                prev,
            } => Some(Request::Put(PutRequest {
                key: KEYS[*key].into(),
                value: vec![b'0' + value],
                lease: *lease,
                prev_kv: *prev,
                ..Default::default()
            })),
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
                None
            }
            Step::Snapshot => {
                let snap = f
                    .store
                    .snapshot()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let g = fixture();
                g.store
                    .install_snapshot(&snap)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                f = g;
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
            prop_assert_eq!(&out.events, &want_events, "step {}", n);
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
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec(step_s(), 1..60)) {
        run(steps)?;
    }
}
