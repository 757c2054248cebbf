//! One watch stream's bookkeeping (etcd's `watchStream` plus the per-id option maps of
//! `serverWatchStream`): the watch ids it has handed out, each id's options, and how a
//! [`Delivery`] becomes `WatchResponse`s (prev_kv stripped, fragments).

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;

use super::event_batch::Delivery;
use super::watcher::{Filters, WatchTarget, WatcherId};
use super::{History, WatchableStore};
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use crate::pb::mvccpb::Event;

/// Why a create request was refused (etcd's mvcc error strings, sent as `cancel_reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// `key >= range_end` with a bounded range end.
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    /// A client-chosen watch id already in use on this stream.
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
}

/// The options of one watch id on a stream.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// The store's watcher behind this id.
    pub watcher: WatcherId,
    /// Keep `prev_kv` on events.
    pub prev_kv: bool,
    /// Split large responses.
    pub fragment: bool,
    /// Send progress notifications when quiet.
    pub progress_notify: bool,
    /// Nothing was sent to this id since the last progress tick (etcd's `progress[id]`).
    pub quiet: bool,
}

/// The watchers of one stream.
pub struct StreamWatchers {
    /// The store.
    store: Arc<WatchableStore>,
    /// The stream's delivery channel, shared by all its watchers.
    tx: mpsc::Sender<Delivery>,
    /// watch id -> options.
    ids: HashMap<i64, WatchOptions>,
    /// Next automatic id candidate (etcd starts at 0 and skips ids in use).
    next_id: i64,
}

impl StreamWatchers {
    /// A stream with no watcher, delivering into `tx`.
    pub fn new(store: Arc<WatchableStore>, tx: mpsc::Sender<Delivery>) -> Self {
        StreamWatchers {
            store,
            tx,
            ids: HashMap::new(),
            next_id: 0,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<WatchableStore> {
        &self.store
    }

    /// Handles a create request as etcd 3.4's `recvLoop` does; returns the created response
    /// (its header left for the caller) for success and refusal alike.
    pub fn create(&mut self, mut req: WatchCreateRequest) -> WatchResponse {
        if req.key.is_empty() {
            // "\0" is the smallest key.
            req.key = vec![0];
        }
        let wsrev = self.store.rev();
        let start = if req.start_revision == 0 {
            wsrev + 1
        } else {
            req.start_revision
        };
        let (watch_id, err) = match self.register(&req, start) {
            Ok(id) => (id, None),
            Err(e) => (-1, Some(e)),
        };
        WatchResponse {
            header: Some(ResponseHeader {
                revision: wsrev,
                ..Default::default()
            }),
            watch_id,
            created: true,
            canceled: err.is_some(),
            cancel_reason: err.map(|e| e.to_string()).unwrap_or_default(),
            ..Default::default()
        }
    }

    fn register(&mut self, req: &WatchCreateRequest, start: i64) -> Result<i64, WatchError> {
        let bounded_end = !req.range_end.is_empty() && req.range_end != [0];
        if bounded_end && req.key >= req.range_end {
            return Err(WatchError::EmptyRange);
        }
        let id = if req.watch_id == 0 {
            while self.ids.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        } else if self.ids.contains_key(&req.watch_id) {
            return Err(WatchError::DuplicateId);
        } else {
            req.watch_id
        };
        let mut filters = Filters::default();
        for f in &req.filters {
            match FilterType::try_from(*f) {
                Ok(FilterType::Noput) => filters = filters.with(Filters::NO_PUT),
                Ok(FilterType::Nodelete) => filters = filters.with(Filters::NO_DELETE),
                Err(_) => {}
            }
        }
        let target = WatchTarget::new(&req.key, &req.range_end);
        if req.prev_kv {
            // Counted before the watcher exists, so every write it is notified of fills
            // prev_kv (a missing one is read back: see [`fill_missing_prev_kvs`]).
            self.store.prev_kv_demand().add();
        }
        let watcher = self
            .store
            .watch(target, start, filters, id, self.tx.clone());
        self.ids.insert(
            id,
            WatchOptions {
                watcher,
                prev_kv: req.prev_kv,
                fragment: req.fragment,
                progress_notify: req.progress_notify,
                quiet: true,
            },
        );
        Ok(id)
    }

    /// Cancels `watch_id`; false if the stream has no such watcher (etcd then answers
    /// nothing).
    pub fn cancel(&mut self, watch_id: i64) -> bool {
        match self.ids.remove(&watch_id) {
            Some(o) => {
                self.store.cancel(o.watcher);
                self.forget(&o);
                true
            }
            None => false,
        }
    }

    /// Takes a removed watcher out of the prev_kv count.
    fn forget(&self, o: &WatchOptions) {
        if o.prev_kv {
            self.store.prev_kv_demand().remove();
        }
    }

    /// The options of the watcher a delivery is for, or None when the delivery is stale (its
    /// watcher was canceled, maybe with the id reused since). Marks the id as not quiet.
    pub fn accept(&mut self, d: &Delivery) -> Option<WatchOptions> {
        let o = self.ids.get_mut(&d.watch_id)?;
        if o.watcher.0 != d.watcher {
            return None;
        }
        if !d.events.is_empty() {
            o.quiet = false;
        }
        let opts = *o;
        if d.compact_revision != 0 {
            // The store has dropped the watcher.
            self.ids.remove(&d.watch_id);
            self.forget(&opts);
        }
        Some(opts)
    }

    /// A progress tick: asks the store for a progress notification for every
    /// progress_notify watcher that was quiet since the previous tick.
    pub fn progress_tick(&mut self) {
        for o in self.ids.values_mut() {
            if !o.progress_notify {
                continue;
            }
            if o.quiet {
                self.store.progress(o.watcher);
            }
            o.quiet = true;
        }
    }

    /// A WatchProgressRequest: answered (through the delivery channel) once every watcher of
    /// the stream is synced. Returns whether it was answered now.
    pub fn progress_all(&self) -> bool {
        let ids: Vec<WatcherId> = self.ids.values().map(|o| o.watcher).collect();
        self.store.progress_all(&ids, &self.tx)
    }

    /// Number of watchers on the stream.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the stream has no watcher.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Drop for StreamWatchers {
    /// A stream's watchers all go when the stream ends, however it ends.
    fn drop(&mut self) {
        for o in self.ids.values() {
            self.store.cancel(o.watcher);
            self.forget(o);
        }
    }
}

/// The response for a delivery, header revision filled (the rest of the header is the
/// caller's), `prev_kv` kept only when asked.
pub fn to_response(d: &Delivery, prev_kv: bool) -> WatchResponse {
    WatchResponse {
        header: Some(ResponseHeader {
            revision: d.revision,
            ..Default::default()
        }),
        watch_id: d.watch_id,
        canceled: d.compact_revision != 0,
        compact_revision: d.compact_revision,
        events: d.events.to_events(prev_kv),
        ..Default::default()
    }
}

/// Fills the prev_kv of put events that lack one (written while no watcher wanted prev_kv,
/// see [`crate::storage::PrevKvDemand`]) from the store's history.
pub fn fill_missing_prev_kvs(resp: &mut WatchResponse, store: &WatchableStore) {
    fill_prev_kvs(&mut resp.events, store.history.as_ref());
}

/// Fills the prev_kv of each put event that lacks one by reading the key at the revision
/// before the event, as etcd's watch server fills every prev_kv: a create event (created at
/// its own revision, etcd's `IsCreateEvent`) has none, and a read that fails (compacted
/// meanwhile) leaves it out, as in etcd.
pub fn fill_prev_kvs(events: &mut [Event], history: &dyn History) {
    for ev in events {
        let Some(kv) = &ev.kv else { continue };
        let is_put = ev.r#type == crate::pb::mvccpb::event::EventType::Put as i32;
        if ev.prev_kv.is_some() || !is_put || kv.create_revision == kv.mod_revision {
            continue;
        }
        match history.kv_at(&kv.key, kv.mod_revision - 1) {
            Ok(prev) => ev.prev_kv = prev,
            Err(e) => tracing::debug!(error = %e, "prev_kv of a watch event not read"),
        }
    }
}

/// Splits a response larger than `max_bytes` into fragments as etcd's `sendFragments`: each
/// fragment holds as many events as fit (at least one), all but the last have `fragment`
/// set. A response below the limit or with fewer than two events goes whole.
pub fn fragment(resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < max_bytes || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut shell = resp;
    let events = std::mem::take(&mut shell.events);
    let mut out = Vec::new();
    let mut cur = WatchResponse {
        fragment: true,
        ..shell.clone()
    };
    for ev in events {
        cur.events.push(ev);
        if cur.events.len() > 1 && cur.encoded_len() >= max_bytes {
            let last = cur.events.pop();
            let next_events: Vec<_> = last.into_iter().collect();
            let full = std::mem::replace(
                &mut cur,
                WatchResponse {
                    fragment: true,
                    events: next_events,
                    ..shell.clone()
                },
            );
            out.push(full);
        }
    }
    cur.fragment = false;
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb::{Event, KeyValue};

    fn ev(i: usize, size: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: format!("k{i}").into_bytes(),
                value: vec![b'x'; size],
                mod_revision: 7,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fragments_keep_every_event_in_order_and_mark_all_but_last() {
        let resp = WatchResponse {
            watch_id: 3,
            events: (0..10).map(|i| ev(i, 100)).collect(),
            ..Default::default()
        };
        let parts = fragment(resp.clone(), 350);
        assert!(parts.len() > 3, "{} parts", parts.len());
        let (last, init) = parts.split_last().unwrap();
        assert!(init.iter().all(|p| p.fragment && p.watch_id == 3));
        assert!(!last.fragment);
        for p in &parts {
            assert!(p.encoded_len() < 350 || p.events.len() == 1);
        }
        let merged: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(merged, resp.events);
    }

    #[test]
    fn small_or_single_event_responses_are_not_fragmented() {
        let one = WatchResponse {
            events: vec![ev(0, 10_000)],
            ..Default::default()
        };
        assert_eq!(fragment(one.clone(), 100), vec![one]);
        let small = WatchResponse {
            events: vec![ev(0, 1), ev(1, 1)],
            ..Default::default()
        };
        assert_eq!(fragment(small.clone(), 1 << 20), vec![small]);
    }

    fn put_event(key: &str, value: &str, rev: i64, version: i64) -> Event {
        Event {
            kv: Some(KeyValue {
                key: key.into(),
                value: value.into(),
                create_revision: rev - version + 1,
                mod_revision: rev,
                version,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn watchers_with_prev_kv_are_counted_until_canceled_or_dropped() {
        let store = WatchableStore::new(Arc::new(crate::watch::MemoryHistory::new()));
        let demand = store.prev_kv_demand().clone();
        let (tx, _rx) = mpsc::channel(16);
        let mut ws = StreamWatchers::new(store.clone(), tx);
        let create = |prev_kv: bool| WatchCreateRequest {
            key: b"k".to_vec(),
            prev_kv,
            ..Default::default()
        };
        let plain = ws.create(create(false)).watch_id;
        assert!(!demand.wanted(), "a plain watcher wants no prev_kv");
        let a = ws.create(create(true)).watch_id;
        let b = ws.create(create(true)).watch_id;
        assert!(demand.wanted());
        assert!(ws.cancel(a));
        assert!(demand.wanted(), "one prev_kv watcher is left");
        assert!(ws.cancel(plain));
        assert!(!ws.cancel(a), "canceled twice");
        assert!(demand.wanted());
        drop(ws);
        assert!(
            !demand.wanted(),
            "the stream's end takes watcher {b} with it"
        );
    }

    #[test]
    fn missing_prev_kvs_are_read_from_the_revision_before() {
        let hist = Arc::new(crate::watch::MemoryHistory::new());
        hist.append(2, vec![put_event("k", "1", 2, 1)]);
        hist.append(3, vec![put_event("k", "2", 3, 2)]);
        hist.append(4, vec![put_event("j", "x", 4, 1)]);
        let store = WatchableStore::new(hist.clone());
        let mut resp = WatchResponse {
            events: vec![
                put_event("k", "2", 3, 2),
                put_event("j", "x", 4, 1),
                Event {
                    prev_kv: Some(KeyValue::default()),
                    ..put_event("k", "3", 5, 3)
                },
            ],
            ..Default::default()
        };
        fill_missing_prev_kvs(&mut resp, &store);
        let prevs: Vec<Option<&[u8]>> = resp
            .events
            .iter()
            .map(|e| e.prev_kv.as_ref().map(|kv| &kv.value[..]))
            .collect();
        // Filled from revision 2; a create has none; one already there is left alone.
        assert_eq!(prevs, vec![Some(&b"1"[..]), None, Some(&b""[..])]);
        // A key deleted and put twice in one txn: its second put (version 2) was created at
        // its own revision, so it is a create event to etcd and has no prev_kv either.
        let mut resp = WatchResponse {
            events: vec![Event {
                kv: Some(KeyValue {
                    create_revision: 5,
                    ..put_event("k", "4", 5, 2).kv.unwrap_or_default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        fill_missing_prev_kvs(&mut resp, &store);
        assert_eq!(resp.events[0].prev_kv, None);
        // Below the compaction it stays out, as in etcd.
        hist.compact(3);
        let mut resp = WatchResponse {
            events: vec![put_event("k", "2", 3, 2)],
            ..Default::default()
        };
        fill_missing_prev_kvs(&mut resp, &store);
        assert_eq!(resp.events[0].prev_kv, None);
    }
}
