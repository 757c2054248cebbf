//! The in-memory history of one key: etcd's `keyIndex`.
//!
//! A key's life is a list of generations. A generation starts with the put that creates the
//! key (version 1) and ends with the delete (tombstone) that removes it; the next put starts
//! a new generation. Only the last generation can be open.
//!
//! Worked example (revisions written `main.sub`): key "foo" put at 1.0, 2.0, deleted at
//! 3.0, put at 4.0, 5.0, deleted at 6.0, put at 7.0, 8.0:
//!
//! ```text
//! generations:
//!     {created 7, ver 2, revs [7.0, 8.0]}              (open)
//!     {created 4, ver 3, revs [4.0, 5.0, 6.0(t)]}      (closed by the tombstone 6.0)
//!     {created 1, ver 3, revs [1.0, 2.0, 3.0(t)]}      (closed by the tombstone 3.0)
//! ```
//!
//! `get(5)` finds the second generation and answers 5.0 (version 2); `get(6)` lands on the
//! tombstone and answers "no key"; `get(8)` answers 8.0 (version 2).
//!
//! Compaction at 5 keeps, for every generation reaching 5, the newest revision at or below 5
//! and drops what is older, and drops closed generations whose tombstone is at or below 5:
//!
//! ```text
//!     {created 7, ver 2, revs [7.0, 8.0]}
//!     {created 4, ver 3, revs [5.0, 6.0(t)]}
//! ```
//!
//! The dropped revisions (1.0, 2.0, 3.0(t), 4.0) are returned so their rows can be deleted.
//! `ver` counts every revision of the generation, tombstone included (as etcd does), so the
//! version at position `i` is `ver - (len - 1 - i)` even after older revisions are gone.

use smallvec::{smallvec, SmallVec};

use super::revision::Revision;

/// A generation's revisions: most keys have one or two, kept inline (no allocation of
/// their own) for the common single one.
pub(crate) type Revs = SmallVec<[Revision; 1]>;

/// One generation of a key: from its creation to its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Generation {
    /// Main revision of the put that created the key (survives compaction of that put).
    pub created: i64,
    /// The version of the last revision in `revs`.
    pub ver: i64,
    /// The revisions still in the store, ascending.
    pub revs: Revs,
    /// Whether the last revision is a tombstone.
    pub closed: bool,
}

/// What a key looked like at a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyAt {
    /// The revision of the row holding the key's value.
    pub modified: Revision,
    /// Main revision of the key's creation.
    pub created: i64,
    /// The key's version at that revision.
    pub version: i64,
}

/// The generations of one key, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    /// Most keys have one generation: kept inline, so a key with one revision costs the
    /// index no allocation beyond its name. Measured over a million keys, a fifth of them
    /// overwritten: 200 bytes per key in the index, against 387 with plain vectors (which
    /// allocate room for four generations and four revisions at the first push).
    generations: SmallVec<[Generation; 1]>,
}

impl KeyIndex {
    /// Records a put at `rev`, starting a new generation if the key is not live.
    pub fn put(&mut self, rev: Revision) {
        match self.generations.last_mut() {
            Some(g) if !g.closed => {
                g.revs.push(rev);
                g.ver += 1;
            }
            _ => self.generations.push(Generation {
                created: rev.main,
                ver: 1,
                revs: smallvec![rev],
                closed: false,
            }),
        }
    }

    /// Rebuilds a generation from a row read back from disk whose older revisions may be
    /// compacted away: `created` and `version` come from the stored KeyValue.
    pub fn restore_put(&mut self, rev: Revision, created: i64, version: i64) {
        match self.generations.last_mut() {
            Some(g) if !g.closed => {
                g.revs.push(rev);
                g.ver = version;
            }
            _ => self.generations.push(Generation {
                created,
                ver: version,
                revs: smallvec![rev],
                closed: false,
            }),
        }
    }

    /// Records a delete at `rev`, closing the live generation. Returns false (and changes
    /// nothing) when the key is not live, which callers never do on purpose.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        match self.generations.last_mut() {
            Some(g) if !g.closed => {
                g.revs.push(rev);
                g.ver += 1;
                g.closed = true;
                true
            }
            _ => false,
        }
    }

    /// Rebuilds a tombstone read back from disk whose generation's puts are gone: a
    /// compaction interrupted between deleting a generation's put rows and its tombstone row
    /// leaves it. It becomes a generation of its own, closed, so that the next compaction
    /// removes its row.
    pub fn restore_lone_tombstone(&mut self, rev: Revision, created: i64, version: i64) {
        self.generations.push(Generation {
            created,
            ver: version,
            revs: smallvec![rev],
            closed: true,
        });
    }

    /// The key as of main revision `at`, or None if it did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        // The newest generation whose first revision is at or below `at`.
        let gi = self
            .generations
            .partition_point(|g| g.revs.first().is_some_and(|r| r.main <= at));
        let g = self.generations.get(gi.checked_sub(1)?)?;
        let n = g.revs.partition_point(|r| r.main <= at);
        let idx = n.checked_sub(1)?;
        if g.closed && idx + 1 == g.revs.len() {
            return None;
        }
        let modified = *g.revs.get(idx)?;
        let behind = i64::try_from(g.revs.len() - 1 - idx).unwrap_or(i64::MAX);
        Some(KeyAt {
            modified,
            created: g.created,
            version: g.ver - behind,
        })
    }

    /// The revision a compaction at `at` would keep for this key (etcd's `keyIndex.keep`):
    /// the newest revision at or below `at` in the first generation still live at `at`;
    /// None when the key did not exist at `at`. HashKV uses it to leave out rows that a
    /// compaction at the hashed revision would drop.
    pub fn keep(&self, at: i64) -> Option<Revision> {
        let g = self
            .generations
            .iter()
            .find(|g| !(g.closed && g.revs.last().is_some_and(|r| r.main <= at)))?;
        g.revs.iter().rev().find(|r| r.main <= at).copied()
    }

    /// Whether the key has no revisions left (it can be dropped from the index).
    pub fn is_empty(&self) -> bool {
        self.generations.is_empty()
    }

    /// Drops history made unreachable by a compaction at `at` (see the module comment).
    /// Appends every dropped revision, with its tombstone mark, to `removed`.
    pub fn compact(&mut self, at: i64, removed: &mut Vec<(Revision, bool)>) {
        let mut keep_from = 0;
        for (i, g) in self.generations.iter_mut().enumerate() {
            if g.revs.first().is_none_or(|r| r.main > at) {
                break;
            }
            let n = g.revs.partition_point(|r| r.main <= at);
            if g.closed && n == g.revs.len() {
                // The tombstone is at or below `at`: the whole generation goes.
                let last = g.revs.len() - 1;
                removed.extend(g.revs.iter().enumerate().map(|(j, r)| (*r, j == last)));
                keep_from = i + 1;
            } else {
                let drop = n.saturating_sub(1);
                removed.extend(g.revs.drain(..drop).map(|r| (r, false)));
            }
        }
        self.generations.drain(..keep_from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// The example of the module comment.
    fn foo() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(1));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        ki.put(r(4));
        ki.put(r(5));
        assert!(ki.tombstone(r(6)));
        ki.put(r(7));
        ki.put(r(8));
        ki
    }

    #[test]
    fn keep_is_what_a_compaction_at_the_revision_would_keep() {
        // etcd 3.4's keyIndex.keep on the same generations.
        let ki = foo();
        let keep = |at| ki.keep(at).map(|r| r.main);
        assert_eq!(keep(0), None);
        assert_eq!(keep(2), Some(2));
        // The tombstone's own revision: the generation is gone, nothing kept.
        assert_eq!(keep(3), None);
        assert_eq!(keep(5), Some(5));
        assert_eq!(keep(6), None);
        assert_eq!(keep(7), Some(7));
        assert_eq!(keep(100), Some(8));
    }

    #[test]
    fn get_walks_generations() {
        let ki = foo();
        assert_eq!(ki.get(0), None);
        let at = |rev| ki.get(rev).map(|k| (k.modified.main, k.created, k.version));
        assert_eq!(at(1), Some((1, 1, 1)));
        assert_eq!(at(2), Some((2, 1, 2)));
        assert_eq!(at(3), None);
        assert_eq!(at(4), Some((4, 4, 1)));
        assert_eq!(at(5), Some((5, 4, 2)));
        assert_eq!(at(6), None);
        assert_eq!(at(7), Some((7, 7, 1)));
        assert_eq!(at(100), Some((8, 7, 2)));
    }

    #[test]
    fn tombstone_on_dead_key_is_refused() {
        let mut ki = KeyIndex::default();
        assert!(!ki.tombstone(r(1)));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        assert!(!ki.tombstone(r(4)));
        assert_eq!(ki.get(4), None);
    }

    #[test]
    fn compact_keeps_latest_at_or_below() {
        let mut ki = foo();
        let mut removed = Vec::new();
        ki.compact(5, &mut removed);
        assert_eq!(
            removed,
            vec![(r(1), false), (r(2), false), (r(3), true), (r(4), false)]
        );
        // Reads at or above the compaction revision are unchanged.
        assert_eq!(ki.get(5).map(|k| k.version), Some(2));
        assert_eq!(ki.get(6), None);
        assert_eq!(ki.get(8).map(|k| (k.created, k.version)), Some((7, 2)));

        removed.clear();
        ki.compact(6, &mut removed);
        assert_eq!(removed, vec![(r(5), false), (r(6), true)]);
        removed.clear();
        ki.compact(100, &mut removed);
        assert_eq!(removed, vec![(r(7), false)]);
        assert_eq!(
            ki.get(100).map(|k| (k.modified, k.version)),
            Some((r(8), 2))
        );
    }

    #[test]
    fn compacting_a_deleted_key_empties_it() {
        let mut ki = KeyIndex::default();
        ki.put(r(2));
        ki.tombstone(r(4));
        let mut removed = Vec::new();
        ki.compact(3, &mut removed);
        assert!(removed.is_empty(), "2 is the newest revision <= 3: kept");
        ki.compact(4, &mut removed);
        assert_eq!(removed, vec![(r(2), false), (r(4), true)]);
        assert!(ki.is_empty());
    }

    #[test]
    fn sub_revisions_of_one_txn() {
        let mut ki = KeyIndex::default();
        ki.put(Revision::new(5, 0));
        ki.tombstone(Revision::new(5, 1));
        ki.put(Revision::new(5, 2));
        let k = ki.get(5).unwrap();
        assert_eq!(
            (k.modified, k.created, k.version),
            (Revision::new(5, 2), 5, 1)
        );
        let mut removed = Vec::new();
        ki.compact(5, &mut removed);
        assert_eq!(
            removed,
            vec![(Revision::new(5, 0), false), (Revision::new(5, 1), true)]
        );
    }

    #[test]
    fn restore_put_keeps_versions_of_compacted_history() {
        let mut ki = KeyIndex::default();
        ki.restore_put(r(9), 3, 4);
        ki.put(r(10));
        let k = ki.get(10).unwrap();
        assert_eq!((k.created, k.version), (3, 5));
        assert_eq!(ki.get(9).map(|k| k.version), Some(4));
        assert_eq!(ki.get(8), None);
    }

    #[test]
    fn a_key_with_one_revision_allocates_nothing_of_its_own() {
        let mut ki = KeyIndex::default();
        ki.put(r(1));
        assert!(!ki.generations.spilled());
        assert!(ki.generations.iter().all(|g| !g.revs.spilled()));
        // Small enough that a B-tree slot (name + index) stays within 80 bytes.
        assert!(
            std::mem::size_of::<KeyIndex>() <= 56,
            "{}",
            std::mem::size_of::<KeyIndex>()
        );
        ki.put(r(2));
        assert_eq!(ki.get(2).map(|k| k.version), Some(2));
    }
}
