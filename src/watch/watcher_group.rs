//! A set of watchers indexed for event matching (etcd's `watcherGroup`): single-key watchers
//! in a hash map, range watchers in an interval tree, so that matching an event costs a hash
//! lookup plus a stab query, never a scan of every watcher.

use std::collections::HashMap;
use std::sync::Arc;

use super::interval_tree::IntervalTree;
use super::watcher::{WatchTarget, WatcherId};

/// Watchers indexed by key and by range.
#[derive(Default)]
pub struct WatcherGroup {
    /// Single-key watchers; a Vec per key because most keys have one or a few watchers.
    keys: HashMap<Arc<[u8]>, Vec<WatcherId>>,
    /// Range watchers; equal ranges share one node.
    ranges: IntervalTree<Vec<WatcherId>>,
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

    /// Adds `id` watching `target`.
    pub fn add(&mut self, id: WatcherId, target: &WatchTarget) {
        match target {
            WatchTarget::Key(k) => self.keys.entry(k.clone()).or_default().push(id),
            WatchTarget::Range(ivl) => match self.ranges.get_mut(ivl) {
                Some(ids) => ids.push(id),
                None => {
                    self.ranges.insert(ivl.clone(), vec![id]);
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
                    let found = remove_id(ids, id);
                    if ids.is_empty() {
                        self.keys.remove(&k[..]);
                    }
                    found
                }
                None => false,
            },
            WatchTarget::Range(ivl) => match self.ranges.get_mut(ivl) {
                Some(ids) => {
                    let found = remove_id(ids, id);
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
            ids.iter().copied().for_each(&mut f);
        }
        if !self.ranges.is_empty() {
            self.ranges
                .stab(key, |_, ids| ids.iter().copied().for_each(&mut f));
        }
    }
}

fn remove_id(ids: &mut Vec<WatcherId>, id: WatcherId) -> bool {
    match ids.iter().position(|x| *x == id) {
        Some(pos) => {
            ids.swap_remove(pos);
            if ids.capacity() > 4 * ids.len().max(1) {
                ids.shrink_to_fit();
            }
            true
        }
        None => false,
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
            adds in prop::collection::vec(target(), 1..60),
            removes in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
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
}
