//! A set of watchers indexed for event matching (etcd's `watcherGroup`): single-key watchers
//! in a hash map, range watchers in an interval tree, so that matching an event costs a hash
//! lookup plus a stab query, never a scan of every watcher.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::interval_tree::IntervalTree;
use super::watcher::{WatchTarget, WatcherId};

/// Watchers indexed by key and by range.
#[derive(Default)]
pub struct WatcherGroup {
    /// Single-key watchers.
    keys: HashMap<Arc<[u8]>, Ids>,
    /// Range watchers; equal ranges share one node.
    ranges: IntervalTree<Ids>,
    /// Number of watchers in the group.
    len: usize,
}

impl WatcherGroup {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of watchers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the group is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The group's own copy of `key` when a watcher of it is in the group, for a new watcher
    /// of the same key to share instead of keeping its own.
    pub fn shared_key(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.keys.get_key_value(key).map(|(k, _)| k.clone())
    }

    /// Adds `id` watching `target`.
    pub fn add(&mut self, id: WatcherId, target: &WatchTarget) {
        match target {
            WatchTarget::Key(k) => self.keys.entry(k.clone()).or_default().insert(id),
            WatchTarget::Range(ivl) => match self.ranges.get_mut(ivl) {
                Some(ids) => ids.insert(id),
                None => {
                    let mut ids = Ids::default();
                    ids.insert(id);
                    self.ranges.insert((**ivl).clone(), ids);
                }
            },
        }
        self.len += 1;
    }

    /// Removes `id` watching `target`; false if it was not there.
    pub fn remove(&mut self, id: WatcherId, target: &WatchTarget) -> bool {
        let removed = match target {
            WatchTarget::Key(k) => match self.keys.get_mut(&k[..]) {
                Some(ids) => {
                    let found = ids.remove(id);
                    if ids.is_empty() {
                        self.keys.remove(&k[..]);
                    }
                    found
                }
                None => false,
            },
            WatchTarget::Range(ivl) => match self.ranges.get_mut(ivl) {
                Some(ids) => {
                    let found = ids.remove(id);
                    if ids.is_empty() {
                        self.ranges.remove(ivl);
                    }
                    found
                }
                None => false,
            },
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` for every watcher whose target contains `key`.
    pub fn for_each_match(&self, key: &[u8], mut f: impl FnMut(WatcherId)) {
        if let Some(ids) = self.keys.get(key) {
            ids.for_each(&mut f);
        }
        if !self.ranges.is_empty() {
            self.ranges.stab(key, |_, ids| ids.for_each(&mut f));
        }
    }
}

/// How many watchers of one key or range a plain list holds before it becomes a hash set.
const FEW_IDS: usize = 16;

/// The watchers of one key or range: a list while they are few (most keys have one or a
/// few, and a list is small), a hash set once they are many, so that removing one of 100,000
/// watchers of the same key does not scan the other 99,999.
#[derive(Debug)]
enum Ids {
    Few(Vec<WatcherId>),
    Many(HashSet<WatcherId>),
}

impl Default for Ids {
    fn default() -> Self {
        Ids::Few(Vec::new())
    }
}

impl Ids {
    fn insert(&mut self, id: WatcherId) {
        match self {
            Ids::Few(ids) if ids.len() < FEW_IDS => ids.push(id),
            Ids::Few(ids) => {
                let mut set: HashSet<WatcherId> = ids.drain(..).collect();
                set.insert(id);
                *self = Ids::Many(set);
            }
            Ids::Many(set) => {
                set.insert(id);
            }
        }
    }

    fn remove(&mut self, id: WatcherId) -> bool {
        match self {
            Ids::Few(ids) => match ids.iter().position(|x| *x == id) {
                Some(pos) => {
                    ids.swap_remove(pos);
                    if ids.capacity() > 4 * ids.len().max(1) {
                        ids.shrink_to_fit();
                    }
                    true
                }
                None => false,
            },
            Ids::Many(set) => {
                let found = set.remove(&id);
                if set.len() < FEW_IDS / 2 {
                    *self = Ids::Few(set.drain().collect());
                } else if set.capacity() > 4 * set.len() {
                    set.shrink_to_fit();
                }
                found
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Ids::Few(ids) => ids.is_empty(),
            Ids::Many(set) => set.is_empty(),
        }
    }

    fn for_each(&self, f: &mut impl FnMut(WatcherId)) {
        match self {
            Ids::Few(ids) => ids.iter().copied().for_each(f),
            Ids::Many(set) => set.iter().copied().for_each(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn target() -> impl Strategy<Value = WatchTarget> {
        let key = prop::collection::vec(0u8..4, 1..3);
        let end = prop_oneof![
            Just(Vec::new()),
            Just(vec![0u8]),
            prop::collection::vec(0u8..4, 1..3)
        ];
        (key, end).prop_map(|(k, e)| WatchTarget::new(&k, &e))
    }

    proptest! {
        #[test]
        fn matches_brute_force(
            // Enough watchers that some keys and ranges have more than FEW_IDS of them.
            adds in prop::collection::vec(target(), 1..300),
            removes in prop::collection::vec(any::<prop::sample::Index>(), 0..250),
            probes in prop::collection::vec(prop::collection::vec(0u8..4, 1..4), 1..20),
        ) {
            let mut g = WatcherGroup::new();
            let mut model: BTreeMap<WatcherId, WatchTarget> = BTreeMap::new();
            for (i, t) in adds.into_iter().enumerate() {
                let id = WatcherId(i as u64 + 1);
                g.add(id, &t);
                model.insert(id, t);
            }
            for r in removes {
                let ids: Vec<WatcherId> = model.keys().copied().collect();
                if ids.is_empty() { break; }
                let id = ids[r.index(ids.len())];
                let t = model.remove(&id).unwrap();
                prop_assert!(g.remove(id, &t));
                prop_assert!(!g.remove(id, &t));
            }
            prop_assert_eq!(g.len(), model.len());
            for p in probes {
                let mut got = Vec::new();
                g.for_each_match(&p, |id| got.push(id));
                got.sort();
                let want: Vec<WatcherId> =
                    model.iter().filter(|(_, t)| t.matches(&p)).map(|(id, _)| *id).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn many_watchers_of_one_key_come_and_go() {
        let mut g = WatcherGroup::new();
        let key = WatchTarget::new(b"k", b"");
        let range = WatchTarget::new(b"a", b"z");
        let n = 10 * FEW_IDS as u64;
        for i in 0..n {
            g.add(WatcherId(i), &key);
            g.add(WatcherId(n + i), &range);
        }
        for i in (0..n).step_by(2) {
            assert!(g.remove(WatcherId(i), &key));
            assert!(g.remove(WatcherId(n + i), &range));
        }
        let mut got = Vec::new();
        g.for_each_match(b"k", |id| got.push(id.0));
        got.sort_unstable();
        let want: Vec<u64> = (0..n)
            .filter(|i| i % 2 == 1)
            .chain((0..n).filter(|i| i % 2 == 1).map(|i| n + i))
            .collect();
        assert_eq!(got, want);
        for i in (1..n).step_by(2) {
            assert!(g.remove(WatcherId(i), &key));
            assert!(g.remove(WatcherId(n + i), &range));
        }
        assert!(g.is_empty());
        let mut none = Vec::new();
        g.for_each_match(b"k", |id| none.push(id));
        assert!(none.is_empty());
    }
}
