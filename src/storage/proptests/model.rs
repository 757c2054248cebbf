//! The naive model the property test compares the store with.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

pub(super) fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
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
pub(super) struct Model {
    /// key -> every change: (main revision, value or None for a delete).
    pub hist: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    pub current: i64,
    pub compacted: i64,
    /// Whether any compaction succeeded: etcd's compacted revision starts at -1, so a first
    /// compaction at 0 succeeds.
    pub compacted_once: bool,
    /// lease id -> attached keys.
    pub leases: BTreeMap<i64, BTreeSet<Vec<u8>>>,
    /// revision -> its events.
    pub events: BTreeMap<i64, Vec<Event>>,
}

/// One write txn of the model.
struct MTxn<'m> {
    m: &'m Model,
    changes: BTreeMap<Vec<u8>, Option<KeyValue>>,
    events: Vec<Event>,
    leases: BTreeMap<i64, BTreeSet<Vec<u8>>>,
}

impl Model {
    pub(super) fn new() -> Self {
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

    pub(super) fn kvs(&self, key: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.hist
            .keys()
            .filter(|k| in_range(k, key, end))
            .filter_map(|k| self.at(k, rev))
            .collect()
    }

    pub(super) fn range(
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

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, ApplyError> {
        let (key, prev) = (&p.key[..], p.prev_kv);
        let old = self.view(key);
        if (p.ignore_value || p.ignore_lease) && old.is_none() {
            return Err(ApplyError::KeyNotFound);
        }
        let lease = match (&old, p.ignore_lease) {
            (Some(o), true) => o.lease,
            _ => p.lease,
        };
        let value = match (&old, p.ignore_value) {
            (Some(o), true) => &o.value[..],
            _ => &p.value[..],
        };
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
        Ok(PutResponse {
            header: None,
            prev_kv: if prev { old } else { None },
        })
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

    /// etcd's checkRequestRange over the chosen path.
    fn check_ranges(
        &self,
        t: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<(), ApplyError> {
        let ok = path[*pos];
        *pos += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(Op::RequestRange(r)) if r.revision > self.m.current => {
                    return Err(ApplyError::FutureRevision)
                }
                Some(Op::RequestRange(r)) if r.revision != 0 && r.revision < self.m.compacted => {
                    return Err(ApplyError::Compacted)
                }
                Some(Op::RequestTxn(n)) => self.check_ranges(n, path, pos)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// etcd's checkRequestPut over the chosen path, against the state before the txn.
    fn check_puts(&self, t: &TxnRequest, path: &[bool], pos: &mut usize) -> Result<(), ApplyError> {
        let ok = path[*pos];
        *pos += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(Op::RequestPut(p)) => {
                    // The key first, then the lease (etcd's checkRequestPut).
                    if (p.ignore_value || p.ignore_lease)
                        && self.m.at(&p.key, self.m.current).is_none()
                    {
                        return Err(ApplyError::KeyNotFound);
                    }
                    if p.lease != 0 && !self.m.leases.contains_key(&p.lease) {
                        return Err(ApplyError::LeaseNotFound);
                    }
                }
                Some(Op::RequestTxn(n)) => self.check_puts(n, path, pos)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn exec(
        &mut self,
        t: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<TxnResponse, ApplyError> {
        let ok = path[*pos];
        *pos += 1;
        let mut responses = Vec::new();
        for op in if ok { &t.success } else { &t.failure } {
            let r = match &op.request {
                Some(Op::RequestPut(p)) => OpResp::ResponsePut(self.put(p)?),
                Some(Op::RequestDeleteRange(d)) => {
                    OpResp::ResponseDeleteRange(self.delete(&d.key, &d.range_end, d.prev_kv))
                }
                Some(Op::RequestRange(r)) => {
                    let cur = if self.events.is_empty() {
                        self.m.current
                    } else {
                        self.rev()
                    };
                    let resp = self.m.range(r, cur, |at| {
                        if at == cur {
                            self.view_kvs(&r.key, &r.range_end)
                        } else {
                            self.m.kvs(&r.key, &r.range_end, at)
                        }
                    });
                    OpResp::ResponseRange(resp.unwrap_or_default())
                }
                Some(Op::RequestTxn(n)) => OpResp::ResponseTxn(self.exec(n, path, pos)?),
                None => continue,
            };
            responses.push(ResponseOp { response: Some(r) });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        })
    }
}

/// Removes headers everywhere (they are checked by unit tests; the model ignores them).
pub(super) fn strip(r: &mut Response) {
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
        Response::Alarm(x) => x.header = None,
        Response::Auth(_) => {}
    }
}

/// Applies a write to the model: (error code, response without headers, events).
pub(super) fn model_write(m: &mut Model, req: &Request) -> (i32, Option<Response>) {
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
                t.put(p).map(Response::Put)
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
            t.check_puts(x, &path, &mut 0)
                .and_then(|()| t.check_ranges(x, &path, &mut 0))
                .and_then(|()| t.exec(x, &path, &mut 0))
                .map(Response::Txn)
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
            if c.revision <= m.compacted && (c.revision != 0 || m.compacted_once) {
                Err(ApplyError::Compacted)
            } else if c.revision > m.current {
                Err(ApplyError::FutureRevision)
            } else {
                Ok(Response::Compaction(CompactionResponse::default()))
            }
        }
        // The generator makes no alarms.
        Request::Alarm(_) => Ok(Response::Alarm(Default::default())),
        // Nor auth calls.
        Request::Auth(_) => Ok(Response::Auth(Default::default())),
        // Nor lease checkpoints (they answer nothing).
        Request::LeaseCheckpoint(_) => unreachable!("the generator makes no lease checkpoints"),
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
                m.compacted_once = true;
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
