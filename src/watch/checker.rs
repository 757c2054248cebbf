//! Checks etcd's watch guarantees for one watcher against the history of writes:
//!
//! - ordered: events arrive in (revision, position in the revision) order;
//! - unique: no event arrives twice;
//! - reliable: no gap: every matching event from the start revision to the last revision the
//!   watcher must have seen has arrived;
//! - atomic: all matching events of one revision arrive in one response;
//! - resumable: a watch from revision r starts exactly at r (nothing before, nothing missing).
//!
//! Used by tests that run concurrent writers and watchers: record the writes as
//! `revision -> events` and each watcher's responses (fragments merged), then call
//! [`check_watch`].

use std::collections::BTreeMap;

use super::event_batch::{event_key, event_rev};
use super::watcher::WatchTarget;
use crate::pb::mvccpb::Event;

/// A broken guarantee, with where it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// An event arrived after a later one.
    #[error("out of order: revision {got} after {after}")]
    Unordered {
        /// Revision of the late event.
        got: i64,
        /// The revision seen before it.
        after: i64,
    },
    /// The same event arrived twice.
    #[error("duplicate event at revision {rev}")]
    Duplicate {
        /// Its revision.
        rev: i64,
    },
    /// An event arrived that the history does not have for this watcher.
    #[error("unexpected event at revision {rev}")]
    Unexpected {
        /// Its revision.
        rev: i64,
    },
    /// An event of the history never arrived.
    #[error("missing event at revision {rev}")]
    Missing {
        /// The first revision with a missing event.
        rev: i64,
    },
    /// The events of one revision were split over responses.
    #[error("revision {rev} split across responses")]
    Split {
        /// The split revision.
        rev: i64,
    },
}

/// What one watcher asked for.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// Watched keys.
    pub target: WatchTarget,
    /// First revision it must see.
    pub start_rev: i64,
}

/// The events of `history` (revision -> events in order) this watcher must see, by revision.
fn expected(history: &BTreeMap<i64, Vec<Event>>, spec: &WatchSpec, until: i64) -> Vec<Event> {
    if until < spec.start_rev {
        return Vec::new();
    }
    history
        .range(spec.start_rev..=until)
        .flat_map(|(_, evs)| evs.iter())
        .filter(|e| spec.target.matches(event_key(e)))
        .cloned()
        .collect()
}

/// Checks one watcher's `responses` (each a list of events; fragments already merged)
/// against `history`; `until` is the last revision the watcher must have received (use the
/// last revision written once the watcher has had time to catch up).
pub fn check_watch(
    history: &BTreeMap<i64, Vec<Event>>,
    spec: &WatchSpec,
    responses: &[Vec<Event>],
    until: i64,
) -> Result<(), Violation> {
    // Atomic: a revision appears in exactly one response, with all its matching events.
    let mut resp_of_rev: BTreeMap<i64, usize> = BTreeMap::new();
    for (i, resp) in responses.iter().enumerate() {
        for ev in resp {
            let rev = event_rev(ev);
            if let Some(prev) = resp_of_rev.insert(rev, i) {
                if prev != i {
                    // Either a split revision or a revision sent twice.
                    let dup = responses
                        .get(prev)
                        .is_some_and(|p| p.iter().any(|e| e == ev));
                    return Err(if dup {
                        Violation::Duplicate { rev }
                    } else {
                        Violation::Split { rev }
                    });
                }
            }
        }
    }
    let got: Vec<&Event> = responses.iter().flatten().collect();
    let mut last = i64::MIN;
    for ev in &got {
        let rev = event_rev(ev);
        if rev < last {
            return Err(Violation::Unordered {
                got: rev,
                after: last,
            });
        }
        last = rev;
    }
    let want = expected(history, spec, until.max(last));
    let mut wi = want.iter();
    for ev in &got {
        match wi.next() {
            Some(w) if w == *ev => {}
            Some(w) => {
                // Either ours is extra (duplicate / unexpected) or theirs is missing.
                let rev = event_rev(ev);
                if want.iter().filter(|x| x == ev).count() == 1
                    && got.iter().filter(|x| **x == *ev).count() > 1
                {
                    return Err(Violation::Duplicate { rev });
                }
                if want.iter().any(|x| x == *ev) {
                    return Err(Violation::Missing { rev: event_rev(w) });
                }
                return Err(Violation::Unexpected { rev });
            }
            None => return Err(Violation::Unexpected { rev: event_rev(ev) }),
        }
    }
    if let Some(w) = wi.next() {
        return Err(Violation::Missing { rev: event_rev(w) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb::KeyValue;

    fn put(key: &str, rev: i64) -> Event {
        Event {
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn history() -> BTreeMap<i64, Vec<Event>> {
        let mut h = BTreeMap::new();
        h.insert(2, vec![put("a", 2)]);
        h.insert(3, vec![put("a", 3), put("b", 3)]);
        h.insert(4, vec![put("c", 4)]);
        h.insert(5, vec![put("a", 5)]);
        h
    }

    fn spec(start: i64) -> WatchSpec {
        WatchSpec {
            target: WatchTarget::new(b"a", b"c"),
            start_rev: start,
        }
    }

    #[test]
    fn accepts_a_correct_run_and_names_each_violation() {
        let h = history();
        let ok = vec![
            vec![put("a", 2)],
            vec![put("a", 3), put("b", 3)],
            vec![put("a", 5)],
        ];
        assert_eq!(check_watch(&h, &spec(2), &ok, 5), Ok(()));
        // Resumed from 3: starts exactly there.
        let resumed = vec![vec![put("a", 3), put("b", 3), put("a", 5)]];
        assert_eq!(check_watch(&h, &spec(3), &resumed, 5), Ok(()));
        assert_eq!(
            check_watch(&h, &spec(2), &ok[..2], 5),
            Err(Violation::Missing { rev: 5 })
        );
        let split = vec![
            vec![put("a", 2), put("a", 3)],
            vec![put("b", 3), put("a", 5)],
        ];
        assert_eq!(
            check_watch(&h, &spec(2), &split, 5),
            Err(Violation::Split { rev: 3 })
        );
        let dup = vec![vec![put("a", 2)], vec![put("a", 2)]];
        assert_eq!(
            check_watch(&h, &spec(2), &dup, 2),
            Err(Violation::Duplicate { rev: 2 })
        );
        let unordered = vec![vec![put("a", 3), put("b", 3)], vec![put("a", 2)]];
        assert!(matches!(
            check_watch(&h, &spec(2), &unordered, 3),
            Err(Violation::Unordered { got: 2, after: 3 })
        ));
        let gap = vec![vec![put("a", 2)], vec![put("a", 5)]];
        assert_eq!(
            check_watch(&h, &spec(2), &gap, 5),
            Err(Violation::Missing { rev: 3 })
        );
        let early = vec![vec![put("a", 2)], vec![put("a", 3), put("b", 3)]];
        assert_eq!(
            check_watch(&h, &spec(3), &early, 3),
            Err(Violation::Unexpected { rev: 2 })
        );
    }
}
