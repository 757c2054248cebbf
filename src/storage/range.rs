//! Reads: the key-range walk over the index (plus a write txn's own pending changes) and
//! etcd's Range request semantics on top of it (etcd 3.4 `etcdserver/apply.go` `Range` and
//! `mvcc/kvstore_txn.go` `rangeKeys`).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use super::backend::{load_kv, Overlay, State};
use super::error::StorageError;
use super::revision::Revision;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};

/// The changes a write txn has made so far, visible to its own later reads.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The txn's revision (its changes are visible to reads at this revision).
    pub rev: i64,
    /// The events so far; event `i` is sub revision `i`.
    pub events: Vec<Event>,
    /// key -> index in `events` of the key's latest change.
    pub latest: BTreeMap<Vec<u8>, usize>,
}

impl Pending {
    /// The txn's latest change of `key`: Some(Some(kv)) put, Some(None) deleted, None
    /// untouched.
    pub fn get(&self, key: &[u8]) -> Option<Option<&KeyValue>> {
        let ev = self.events.get(*self.latest.get(key)?)?;
        Some(if ev.r#type == EventType::Delete as i32 {
            None
        } else {
            ev.kv.as_ref()
        })
    }
}

/// A consistent read view: the state (under its lock), the tree, and optionally a write
/// txn's pending changes.
pub(crate) struct View<'a> {
    /// Index, leases, counters.
    pub state: &'a State,
    /// The rows.
    pub tree: &'a sled::Tree,
    /// Rows of earlier writes of a group not yet in the tree (see [`Overlay`]).
    pub overlay: Option<&'a Overlay>,
    /// A write txn's changes, seen by reads at the txn's revision.
    pub pending: Option<&'a Pending>,
}

/// Keys `[key, end)` as etcd reads them: empty end = the single key, `"\0"` = everything
/// from key on.
fn bounds<'k>(key: &'k [u8], end: &'k [u8]) -> (Bound<&'k [u8]>, Bound<&'k [u8]>) {
    if end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else {
        (Bound::Included(key), Bound::Excluded(end))
    }
}

/// The result of a raw range walk.
pub(crate) struct Found {
    /// The first `limit` matching kvs (none when counting only).
    pub kvs: Vec<KeyValue>,
    /// How many keys matched in total.
    pub count: i64,
}

/// A key a range walk matched: the row to load, or a write txn's own pending kv.
pub(crate) enum Hit {
    Row(Revision),
    Pending(KeyValue),
}

/// The result of a range walk over the index, before any row is loaded.
pub(crate) struct Hits {
    /// The first `limit` matches (none when counting only).
    pub hits: Vec<Hit>,
    /// How many keys matched in total.
    pub count: i64,
}

/// A Range decided from the index: what to load and how to shape the answer. The rows can
/// be loaded after the state's lock is released ([`RangePlan::finish`]).
pub(crate) struct RangePlan<'r> {
    req: &'r RangeRequest,
    /// The store's revision when the index was read (the header's revision).
    cur: i64,
    hits: Hits,
}

impl RangePlan<'_> {
    /// Loads the planned rows with `load` and applies etcd's filters, sort, limit and
    /// keys-only. `Ok(None)` when `load` found a row gone (a compaction ran after the plan
    /// was made; the caller plans again under the lock).
    pub fn finish(
        self,
        mut load: impl FnMut(Revision) -> Result<Option<KeyValue>, StorageError>,
    ) -> Result<Option<RangeResponse>, StorageError> {
        let req = self.req;
        let mut kvs = Vec::with_capacity(self.hits.hits.len());
        for hit in self.hits.hits {
            match hit {
                Hit::Pending(kv) => kvs.push(kv),
                Hit::Row(rev) => match load(rev)? {
                    Some(kv) => kvs.push(kv),
                    None => return Ok(None),
                },
            }
        }
        let sort_order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        let sort_target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        if filtered(req) {
            kvs.retain(|kv| {
                !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
                    || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
                    || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
                    || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
            });
        }
        // etcd: with a non-KEY target and order NONE, sort ascending (results are already
        // ascending by key, so KEY/NONE needs nothing).
        let order = if sort_target != SortTarget::Key && sort_order == SortOrder::None {
            SortOrder::Ascend
        } else {
            sort_order
        };
        if order != SortOrder::None {
            sort_kvs(&mut kvs, sort_target, order == SortOrder::Descend);
        }
        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit) {
            if limit > 0 && kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        Ok(Some(RangeResponse {
            header: Some(ResponseHeader {
                revision: self.cur,
                ..ResponseHeader::default()
            }),
            kvs,
            more,
            // etcd reports the count before filters and limit.
            count: self.hits.count,
        }))
    }
}

/// Whether a Range filters on mod or create revisions.
fn filtered(req: &RangeRequest) -> bool {
    req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

impl<'a> View<'a> {
    /// A view of the rows in the tree alone (no write group or txn in progress).
    pub fn committed(state: &'a State, tree: &'a sled::Tree) -> Self {
        View {
            state,
            tree,
            overlay: None,
            pending: None,
        }
    }

    /// The key as of main revision `at` (pending changes count when `at` is their revision).
    pub fn get(&self, key: &[u8], at: i64) -> Result<Option<KeyValue>, StorageError> {
        self.get_hit(key, at).map(|h| self.load(h)).transpose()
    }

    /// Where the key as of main revision `at` is, without loading it.
    fn get_hit(&self, key: &[u8], at: i64) -> Option<Hit> {
        if let Some(p) = self.pending.filter(|p| p.rev == at) {
            if let Some(kv) = p.get(key) {
                return kv.cloned().map(Hit::Pending);
            }
        }
        let k = self.state.index.get(key).and_then(|ki| ki.get(at))?;
        Some(Hit::Row(k.modified))
    }

    /// Loads a hit's kv (from this view's overlay or tree).
    fn load(&self, hit: Hit) -> Result<KeyValue, StorageError> {
        match hit {
            Hit::Pending(kv) => Ok(kv),
            Hit::Row(rev) => load_kv(self.tree, self.overlay, rev),
        }
    }

    /// Walks `[key, end)` at main revision `at` like [`View::walk_hits`] and loads the hits.
    pub fn walk(
        &self,
        key: &[u8],
        end: &[u8],
        at: i64,
        limit: usize,
        count_only: bool,
    ) -> Result<Found, StorageError> {
        let hits = self.walk_hits(key, end, at, limit, count_only);
        let kvs = hits
            .hits
            .into_iter()
            .map(|h| self.load(h))
            .collect::<Result<_, _>>()?;
        Ok(Found {
            kvs,
            count: hits.count,
        })
    }

    /// Walks `[key, end)` at main revision `at` over the index: counts every live key and
    /// keeps at most `limit` of them (0 = no limit), none when `count_only`.
    pub fn walk_hits(
        &self,
        key: &[u8],
        end: &[u8],
        at: i64,
        limit: usize,
        count_only: bool,
    ) -> Hits {
        let mut found = Hits {
            hits: Vec::new(),
            count: 0,
        };
        if end.is_empty() {
            if let Some(hit) = self.get_hit(key, at) {
                found.count = 1;
                if !count_only {
                    found.hits.push(hit);
                }
            }
            return found;
        }
        if end != [0] && end <= key {
            return found;
        }
        let pending = self.pending.filter(|p| p.rev == at);
        let mut base = self
            .state
            .index
            .range::<[u8], _>(bounds(key, end))
            .peekable();
        let mut mine = pending
            .map(|p| p.latest.range::<[u8], _>(bounds(key, end)))
            .into_iter()
            .flatten()
            .peekable();
        let want = |found: &Hits| !count_only && (limit == 0 || found.hits.len() < limit);
        loop {
            let order = match (base.peek(), mine.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((bk, _)), Some((mk, _))) => bk.as_slice().cmp(mk.as_slice()),
            };
            if order == Ordering::Less {
                let Some((_, ki)) = base.next() else { break };
                if let Some(k) = ki.get(at) {
                    found.count += 1;
                    if want(&found) {
                        found.hits.push(Hit::Row(k.modified));
                    }
                }
                continue;
            }
            if order == Ordering::Equal {
                base.next();
            }
            let Some((mk, _)) = mine.next() else { break };
            if let Some(Some(kv)) = pending.and_then(|p| p.get(mk)) {
                found.count += 1;
                if want(&found) {
                    found.hits.push(Hit::Pending(kv.clone()));
                }
            }
        }
        found
    }

    /// etcd's Range at a view whose latest revision is `cur` and compaction `compacted`.
    pub fn range(
        &self,
        req: &RangeRequest,
        cur: i64,
        compacted: i64,
    ) -> Result<RangeResponse, StorageError> {
        self.plan_range(req, cur, compacted)?
            .finish(|rev| load_kv(self.tree, self.overlay, rev).map(Some))?
            .ok_or_else(|| StorageError::Corrupt("a kv row went missing under a read".into()))
    }

    /// The index part of etcd's Range: checks the revision and finds the matching keys.
    pub fn plan_range<'r>(
        &self,
        req: &'r RangeRequest,
        cur: i64,
        compacted: i64,
    ) -> Result<RangePlan<'r>, StorageError> {
        if req.revision > cur {
            return Err(StorageError::FutureRevision);
        }
        let at = if req.revision <= 0 { cur } else { req.revision };
        // etcd: `rev < compactMainRev` is compacted; the compaction revision itself is
        // still readable (its latest values are exactly what compaction keeps).
        if at < compacted {
            return Err(StorageError::Compacted);
        }
        // etcd fetches everything when it must sort or filter, else limit + 1 to learn
        // `more`. Surprising but true in etcd 3.4 (checked): the test is on the REQUESTED
        // order, so a non-KEY target with order NONE sorts only the first limit + 1 keys
        // (by key), not the whole range.
        let sorted =
            SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None) != SortOrder::None;
        let fetch = if sorted || filtered(req) || req.limit <= 0 {
            0
        } else {
            usize::try_from(req.limit).unwrap_or(usize::MAX - 1) + 1
        };
        let hits = self.walk_hits(&req.key, &req.range_end, at, fetch, req.count_only);
        Ok(RangePlan { req, cur, hits })
    }
}

/// Sorts by `target`; ties keep ascending key order (etcd's sort is not stable, so any
/// order of ties is etcd-compatible; a stable one is deterministic).
fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, descend: bool) {
    let cmp = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    if descend {
        kvs.sort_by(|a, b| cmp(b, a));
    } else {
        kvs.sort_by(cmp);
    }
}
