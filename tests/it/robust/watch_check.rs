//! Checks on watch sessions, and on everything that can be compared with the committed
//! history the watches reveal.
//!
//! The committed history is the union of every session's events, keyed by revision. The
//! workload writes only its own keys on a fresh cluster (one key per revision, or several
//! puts of one txn), so that history must be gap-free: every revision from the first write
//! to the last. A filtered session sees all or none of a revision's events (a txn only
//! puts), so sessions still agree on every revision they saw.
//!
//! Per session (etcd's watch guarantees, named as etcd's robustness validators name them):
//! - ordered: revisions never go down;
//! - unique: no (revision, key) twice;
//! - atomic: all events of one revision arrive in one response;
//! - reliable: no committed revision missing between the session's start and the last
//!   revision it saw, and sessions that were expected to reach a revision did;
//! - bookmarkable: after a progress notification at revision R, no event at or below R;
//! - filters respected: no DELETE event in a NODELETE session, no PUT in a NOPUT one (and
//!   reliability is judged against the filtered history);
//! - prev_kv: the state before the event, as the committed history has it;
//! - every event is the write that produced it: a put or delete some client issued on that
//!   key with that value, at the revision the client was told if it was told one.
//!
//! Against the client history: no acknowledged write is missing from the committed history,
//! and every read (linearizable or serializable) returned the key's committed state at its
//! header revision.

use std::collections::{BTreeMap, HashMap};

use crate::robust::history::{Event, Input, Kv, Op, Output, WatchSession};

/// The committed history, revision -> the events of that revision.
pub type Committed = BTreeMap<i64, Vec<Event>>;

/// Merges every session's events. Sessions that disagree on a revision are violations.
pub fn committed_history(sessions: &[WatchSession], out: &mut Vec<String>) -> Committed {
    let mut by_rev: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    let mut from: HashMap<i64, usize> = HashMap::new();
    for (s, session) in sessions.iter().enumerate() {
        let mut mine: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
        for ev in session.events() {
            let mut ev = ev.clone();
            // prev_kv depends on the watch's options; compare events without it.
            ev.prev = None;
            mine.entry(ev.rev()).or_default().push(ev);
        }
        for (rev, mut evs) in mine {
            evs.sort_by(|a, b| a.key.cmp(&b.key));
            match by_rev.get(&rev) {
                Some(known) if *known != evs => out.push(format!(
                    "sessions disagree on revision {rev}: session {} saw {known:?}, session {s} \
                     saw {evs:?}",
                    from[&rev]
                )),
                Some(_) => {}
                None => {
                    from.insert(rev, s);
                    by_rev.insert(rev, evs);
                }
            }
        }
    }
    by_rev
}

/// Every revision from the first to the last is present (the workload's writes are the only
/// writes, each one revision).
pub fn check_contiguous(committed: &Committed, out: &mut Vec<String>) {
    let (Some(first), Some(last)) = (committed.keys().next(), committed.keys().last()) else {
        return;
    };
    let missing: Vec<i64> = (*first..=*last)
        .filter(|r| !committed.contains_key(r))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "no watch saw revisions {missing:?} (history {first}..={last})"
        ));
    }
}

/// The state of every key after each revision, replayed from the committed history:
/// key -> [(revision, state after it)].
pub type Timeline = HashMap<String, Vec<(i64, Option<Kv>)>>;

/// Replays the committed history, checking that each event follows from the previous state
/// (version, create revision, a delete only of a present key).
pub fn replay(committed: &Committed, out: &mut Vec<String>) -> Timeline {
    let mut t: Timeline = HashMap::new();
    for (rev, evs) in committed {
        for ev in evs {
            let line = t.entry(ev.key.clone()).or_default();
            let before = line.last().and_then(|(_, s)| s.clone());
            if ev.kv.mod_rev != *rev {
                out.push(format!(
                    "event at revision {rev} has mod_revision {}",
                    ev.kv.mod_rev
                ));
            }
            if ev.put {
                let (version, create) = match &before {
                    Some(b) => (b.version + 1, b.create_rev),
                    None => (1, *rev),
                };
                if ev.kv.version != version || ev.kv.create_rev != create {
                    out.push(format!(
                        "put at revision {rev} on {}: version {} create {} but the history \
                         says version {version} create {create}",
                        ev.key, ev.kv.version, ev.kv.create_rev
                    ));
                }
                line.push((*rev, Some(ev.kv.clone())));
            } else {
                if before.is_none() {
                    out.push(format!("delete of absent key {} at revision {rev}", ev.key));
                }
                line.push((*rev, None));
            }
        }
    }
    t
}

/// The committed state of `key` at revision `rev`.
pub fn state_at(t: &Timeline, key: &str, rev: i64) -> Option<Kv> {
    let line = t.get(key)?;
    let i = line.partition_point(|(r, _)| *r <= rev);
    if i == 0 {
        None
    } else {
        line[i - 1].1.clone()
    }
}

/// The per-session properties, `expect_through[s]` being the revision session `s` must have
/// reached (the run's final write, for the sessions still open at the end).
pub fn check_sessions(
    sessions: &[WatchSession],
    committed: &Committed,
    t: &Timeline,
    expect_through: &[Option<i64>],
    out: &mut Vec<String>,
) {
    for (s, session) in sessions.iter().enumerate() {
        let name = format!("watch session {s} on member {}", session.member);
        let mut last: Option<i64> = None;
        let mut keys_at_rev: std::collections::HashSet<(i64, &str)> = Default::default();
        let mut response_of_rev: HashMap<i64, usize> = HashMap::new();
        let mut seen: Vec<i64> = Vec::new();
        let mut bookmark: Option<i64> = None;
        for (ri, resp) in session.responses.iter().enumerate() {
            if resp.events.is_empty() {
                bookmark = bookmark.max(Some(resp.header_rev));
                continue;
            }
            for ev in &resp.events {
                let rev = ev.rev();
                if bookmark.is_some_and(|b| rev <= b) {
                    out.push(format!(
                        "{name}: not bookmarkable: event at {rev} after a progress notification \
                         at {bookmark:?}"
                    ));
                }
                if session.no_delete && !ev.put {
                    out.push(format!("{name}: filter not respected: DELETE at {rev}"));
                }
                if session.no_put && ev.put {
                    out.push(format!("{name}: filter not respected: PUT at {rev}"));
                }
                if rev < session.start_rev {
                    out.push(format!(
                        "{name}: event at {rev} before its start {}",
                        session.start_rev
                    ));
                }
                if let Some(lr) = last {
                    if rev < lr {
                        out.push(format!("{name}: not ordered: revision {rev} after {lr}"));
                    }
                }
                // One txn's events come in the txn's order, not the keys'.
                if !keys_at_rev.insert((rev, ev.key.as_str())) {
                    out.push(format!("{name}: not unique: {} at {rev} twice", ev.key));
                }
                last = Some(rev);
                if let Some(prev_resp) = response_of_rev.insert(rev, ri) {
                    if prev_resp != ri {
                        out.push(format!(
                            "{name}: not atomic: revision {rev} split over responses {prev_resp} \
                             and {ri}"
                        ));
                    }
                }
                if seen.last() != Some(&rev) {
                    seen.push(rev);
                }
                if session.prev_kv && ev.kv.mod_rev > 0 {
                    let want = state_at(t, &ev.key, rev - 1);
                    if ev.prev != want {
                        out.push(format!(
                            "{name}: prev_kv of {} at {rev} is {:?}, history says {want:?}",
                            ev.key, ev.prev
                        ));
                    }
                } else if !session.prev_kv && ev.prev.is_some() {
                    out.push(format!(
                        "{name}: prev_kv sent without being asked for at {rev}"
                    ));
                }
            }
        }
        let through = expect_through.get(s).copied().flatten();
        // A progress notification at R shows every event up to R was sent: a filtered
        // session may see nothing at the revision it must reach.
        let reached = session.last_rev().max(bookmark);
        if let Some(want) = through {
            if reached.is_none_or(|r| r < want) {
                out.push(format!(
                    "{name}: ended at {reached:?} ({:?}) before revision {want}",
                    session.ended
                ));
            }
        }
        let end = reached.max(through);
        if let Some(end) = end {
            let missing: Vec<i64> = committed
                .range(session.start_rev..=end)
                .filter(|(_, evs)| !session.no_delete || evs.iter().any(|e| e.put))
                .filter(|(_, evs)| !session.no_put || evs.iter().any(|e| !e.put))
                .map(|(r, _)| *r)
                .filter(|r| seen.binary_search(r).is_err())
                .collect();
            if !missing.is_empty() {
                out.push(format!(
                    "{name}: not reliable: missed committed revisions {missing:?} between its \
                     start {} and {end}",
                    session.start_rev
                ));
            }
        }
    }
}

/// Every committed event is a write some client issued, at the revision it was told.
pub fn check_events_have_writes(committed: &Committed, ops: &[Op], out: &mut Vec<String>) {
    // (key, Some(value) / None for delete) -> ops that could have produced it.
    let mut writes: HashMap<(&str, Option<&str>), Vec<&Op>> = HashMap::new();
    for op in ops {
        let value = match &op.input {
            Input::Put { value } | Input::Cas { value, .. } => Some(value.as_str()),
            Input::Delete | Input::Revoke { .. } => None,
            Input::Get { .. } => continue,
        };
        writes.entry((op.key.as_str(), value)).or_default().push(op);
    }
    for (rev, evs) in committed {
        for ev in evs {
            let value = ev.put.then_some(ev.kv.value.as_str());
            let candidates = writes.get(&(ev.key.as_str(), value));
            let explained = candidates.is_some_and(|c| {
                c.iter().any(|op| match (&op.input, &op.output) {
                    (_, Output::Unknown) => true,
                    // Whether the revoke deleted this key is checked by `check_revokes`.
                    (_, Output::Revoke { rev: r }) => r == rev,
                    (_, _) => op.acked_write().is_some_and(|(_, r)| r == *rev),
                })
            });
            if !explained {
                out.push(format!(
                    "event {} {} at revision {rev} matches no write that could have made it \
                     (candidates {candidates:?})",
                    if ev.put { "PUT" } else { "DELETE" },
                    ev.key
                ));
            }
        }
    }
}

/// A revoke acknowledged at revision `rev` left no key attached to its lease: the value the
/// workload put with the lease is not the key's value at `rev`.
pub fn check_revokes(t: &Timeline, last_rev: i64, ops: &[Op], out: &mut Vec<String>) {
    for op in ops {
        let (Input::Revoke { lease, .. }, Output::Revoke { rev }) = (&op.input, &op.output) else {
            continue;
        };
        if *rev > last_rev {
            continue;
        }
        let suffix = crate::robust::history::lease_suffix(*lease);
        if let Some(kv) = state_at(t, &op.key, *rev) {
            if kv.value.ends_with(&suffix) {
                out.push(format!(
                    "lease revoke acknowledged at revision {rev}, but {} still holds {:?},                      attached to that lease: {op:?}",
                    op.key, kv.value
                ));
            }
        }
    }
}

/// No acknowledged write is missing from the committed history.
pub fn check_no_lost_writes(committed: &Committed, ops: &[Op], out: &mut Vec<String>) {
    for op in ops {
        let Some((value, rev)) = op.acked_write() else {
            continue;
        };
        let found = committed.get(&rev).is_some_and(|evs| {
            evs.iter().any(|ev| {
                ev.key == op.key
                    && ev.put == value.is_some()
                    && (!ev.put || Some(ev.kv.value.as_str()) == value)
            })
        });
        if !found {
            out.push(format!(
                "acknowledged write lost: {op:?} is not revision {rev} of the history ({:?})",
                committed.get(&rev)
            ));
        }
    }
}

/// Every read returned the key's committed state at the read's header revision. For
/// serializable reads this is what "a consistent, possibly stale snapshot" means.
pub fn check_reads_against_history(t: &Timeline, last_rev: i64, ops: &[Op], out: &mut Vec<String>) {
    for op in ops {
        let (kv, rev) = match &op.output {
            Output::Get { kv, rev } => (kv, *rev),
            Output::Cas {
                succeeded: false,
                rev,
                current,
            } => (current, *rev),
            _ => continue,
        };
        if rev > last_rev {
            // Beyond what the watches saw (a read after the final write): nothing to compare.
            continue;
        }
        let want = state_at(t, &op.key, rev);
        if *kv != want {
            out.push(format!(
                "read of {} at revision {rev} returned {kv:?}, history says {want:?}: {op:?}",
                op.key
            ));
        }
    }
}

/// Serializable reads on one member never go back in revision (per member, in real time).
pub fn check_serializable_monotonic(ops: &[Op], out: &mut Vec<String>) {
    let mut per_member: HashMap<usize, Vec<&Op>> = HashMap::new();
    for op in ops {
        if matches!(op.input, Input::Get { serializable: true }) && op.header_rev().is_some() {
            per_member.entry(op.member).or_default().push(op);
        }
    }
    for (member, mut reads) in per_member {
        reads.sort_by_key(|o| o.invoke_ns);
        let mut done: Vec<&Op> = reads.clone();
        done.sort_by_key(|o| o.return_ns);
        let mut i = 0;
        let mut max: Option<&Op> = None;
        for b in reads {
            while i < done.len() && done[i].return_ns < b.invoke_ns {
                if max.is_none_or(|m| done[i].header_rev() > m.header_rev()) {
                    max = Some(done[i]);
                }
                i += 1;
            }
            if let Some(a) = max {
                if b.header_rev() < a.header_rev() {
                    out.push(format!(
                        "serializable reads on member {member} went back: {a:?} then {b:?}"
                    ));
                }
            }
        }
    }
}

/// All watch and history checks; `expect_through` as in [`check_sessions`].
pub fn check_all(
    ops: &[Op],
    sessions: &[WatchSession],
    expect_through: &[Option<i64>],
) -> Vec<String> {
    let mut out = Vec::new();
    let committed = committed_history(sessions, &mut out);
    check_contiguous(&committed, &mut out);
    let t = replay(&committed, &mut out);
    check_sessions(sessions, &committed, &t, expect_through, &mut out);
    check_events_have_writes(&committed, ops, &mut out);
    check_no_lost_writes(&committed, ops, &mut out);
    let last = committed.keys().last().copied().unwrap_or(0);
    check_reads_against_history(&t, last, ops, &mut out);
    check_revokes(&t, last, ops, &mut out);
    check_serializable_monotonic(ops, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::robust::history::WatchResponse;

    fn kv(v: &str, rev: i64, create: i64, version: i64) -> Kv {
        Kv {
            value: v.into(),
            mod_rev: rev,
            create_rev: create,
            version,
        }
    }
    fn put_ev(key: &str, v: &str, rev: i64, create: i64, version: i64, prev: Option<Kv>) -> Event {
        Event {
            put: true,
            key: key.into(),
            kv: kv(v, rev, create, version),
            prev,
        }
    }
    fn del_ev(key: &str, rev: i64, prev: Option<Kv>) -> Event {
        Event {
            put: false,
            key: key.into(),
            kv: Kv {
                value: String::new(),
                mod_rev: rev,
                create_rev: 0,
                version: 0,
            },
            prev,
        }
    }
    fn session(member: usize, start: i64, evs: Vec<Event>) -> WatchSession {
        WatchSession {
            member,
            start_rev: start,
            prev_kv: true,
            no_delete: false,
            no_put: false,
            responses: evs
                .into_iter()
                .map(|e| WatchResponse {
                    header_rev: e.rev(),
                    events: vec![e],
                })
                .collect(),
            ended: None,
        }
    }
    fn op(key: &str, input: Input, output: Output, inv: u64, ret: u64) -> Op {
        Op {
            client: 0,
            member: 0,
            key: key.into(),
            input,
            output,
            invoke_ns: inv,
            return_ns: ret,
            txn: None,
        }
    }
    fn put(key: &str, v: &str, rev: i64) -> Op {
        op(
            key,
            Input::Put { value: v.into() },
            Output::Put { rev },
            0,
            1,
        )
    }

    /// a=1 at 2, b=1 at 3, a=2 at 4, delete b at 5.
    fn good() -> (Vec<Op>, Vec<Event>) {
        let ops = vec![
            put("a", "a1", 2),
            put("b", "b1", 3),
            put("a", "a2", 4),
            op(
                "b",
                Input::Delete,
                Output::Delete { deleted: 1, rev: 5 },
                0,
                1,
            ),
        ];
        let evs = vec![
            put_ev("a", "a1", 2, 2, 1, None),
            put_ev("b", "b1", 3, 3, 1, None),
            put_ev("a", "a2", 4, 2, 2, Some(kv("a1", 2, 2, 1))),
            del_ev("b", 5, Some(kv("b1", 3, 3, 1))),
        ];
        (ops, evs)
    }

    #[test]
    fn complete_watches_pass() {
        let (ops, evs) = good();
        let sessions = vec![session(0, 2, evs.clone()), session(1, 2, evs)];
        let v = check_all(&ops, &sessions, &[Some(5), Some(5)]);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn resumed_session_passes_and_gap_fails() {
        let (ops, evs) = good();
        let whole = session(0, 2, evs.clone());
        let first = session(1, 2, evs[..2].to_vec());
        let resumed = session(1, 4, evs[2..].to_vec());
        let v = check_all(
            &ops,
            &[whole.clone(), first, resumed],
            &[Some(5), None, Some(5)],
        );
        assert!(v.is_empty(), "{v:?}");
        // Resumed one revision too late: revision 4 never reaches member 1's watcher.
        let gap = session(1, 2, vec![evs[0].clone(), evs[1].clone(), evs[3].clone()]);
        let v = check_all(&ops, &[whole, gap], &[Some(5), Some(5)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("not reliable"), "{v:?}");
    }

    #[test]
    fn session_that_stops_early_fails() {
        let (ops, evs) = good();
        let v = check_all(
            &ops,
            &[session(0, 2, evs.clone()), session(1, 2, evs[..3].to_vec())],
            &[Some(5), Some(5)],
        );
        assert!(v.iter().any(|v| v.contains("before revision 5")), "{v:?}");
    }

    #[test]
    fn unordered_and_duplicated_events_fail() {
        let (ops, evs) = good();
        let swapped = session(
            0,
            2,
            vec![
                evs[1].clone(),
                evs[0].clone(),
                evs[2].clone(),
                evs[3].clone(),
            ],
        );
        let v = check_all(&ops, &[swapped], &[Some(5)]);
        assert!(v.iter().any(|v| v.contains("not ordered")), "{v:?}");
        let dup = session(
            0,
            2,
            vec![
                evs[0].clone(),
                evs[1].clone(),
                evs[1].clone(),
                evs[2].clone(),
                evs[3].clone(),
            ],
        );
        let v = check_all(&ops, &[dup], &[Some(5)]);
        assert!(v.iter().any(|v| v.contains("not unique")), "{v:?}");
    }

    #[test]
    fn filtered_session_with_progress_passes_and_violations_fail() {
        let (ops, evs) = good();
        let mut puts = session(0, 2, evs[..3].to_vec());
        puts.no_delete = true;
        puts.prev_kv = false;
        for r in &mut puts.responses {
            for e in &mut r.events {
                e.prev = None;
            }
        }
        // A progress notification at 3, after the events up to 3; the delete at 5 is
        // filtered out; the session is expected through 4 (its last put).
        puts.responses.insert(
            2,
            WatchResponse {
                header_rev: 3,
                events: vec![],
            },
        );
        let whole = session(1, 2, evs.clone());
        let v = check_all(&ops, &[whole.clone(), puts.clone()], &[Some(5), Some(4)]);
        assert!(v.is_empty(), "{v:?}");
        // A progress notification ahead of an event it should have covered.
        let mut ahead = puts.clone();
        ahead.responses[2].header_rev = 4;
        let v = check_all(&ops, &[whole.clone(), ahead], &[Some(5), Some(4)]);
        assert!(v.iter().any(|v| v.contains("not bookmarkable")), "{v:?}");
        // A DELETE through a NODELETE filter.
        let mut leaky = puts;
        leaky.responses.push(WatchResponse {
            header_rev: 5,
            events: vec![del_ev("b", 5, None)],
        });
        let v = check_all(&ops, &[whole, leaky], &[Some(5), Some(5)]);
        assert!(
            v.iter().any(|v| v.contains("filter not respected")),
            "{v:?}"
        );
    }

    #[test]
    fn noput_session_passes_and_a_put_through_it_fails() {
        let (ops, evs) = good();
        // Only the delete at 5 passes a NOPUT filter.
        let mut deletes = session(0, 2, vec![evs[3].clone()]);
        deletes.no_put = true;
        let whole = session(1, 2, evs.clone());
        let v = check_all(&ops, &[whole.clone(), deletes.clone()], &[Some(5), Some(5)]);
        assert!(v.is_empty(), "{v:?}");
        // A progress notification at 5 without the delete at 5 before it: not reliable,
        // even filtered.
        let mut missed = deletes.clone();
        missed.responses = vec![WatchResponse {
            header_rev: 5,
            events: vec![],
        }];
        let v = check_all(&ops, &[whole.clone(), missed], &[Some(5), Some(5)]);
        assert!(v.iter().any(|v| v.contains("not reliable")), "{v:?}");
        // A PUT through a NOPUT filter.
        let mut leaky = deletes;
        leaky.responses.insert(
            0,
            WatchResponse {
                header_rev: 4,
                events: vec![evs[2].clone()],
            },
        );
        let v = check_all(&ops, &[whole, leaky], &[Some(5), Some(5)]);
        assert!(
            v.iter().any(|v| v.contains("filter not respected: PUT")),
            "{v:?}"
        );
    }

    #[test]
    fn wrong_prev_kv_fails() {
        let (ops, mut evs) = good();
        evs[2].prev = Some(kv("b1", 3, 3, 1));
        let v = check_all(&ops, &[session(0, 2, evs)], &[Some(5)]);
        assert!(v.iter().any(|v| v.contains("prev_kv")), "{v:?}");
    }

    #[test]
    fn event_nobody_wrote_fails() {
        let (ops, mut evs) = good();
        evs[2].kv.value = "forged".into();
        let v = check_all(&ops, &[session(0, 2, evs)], &[Some(5)]);
        assert!(v.iter().any(|v| v.contains("matches no write")), "{v:?}");
    }

    #[test]
    fn lost_acknowledged_write_fails() {
        let (mut ops, evs) = good();
        // A put acknowledged at revision 6 that no watch ever saw, with nothing after it.
        ops.push(put("c", "c1", 6));
        let v = check_all(&ops, &[session(0, 2, evs)], &[Some(5)]);
        assert!(
            v.iter().any(|v| v.contains("acknowledged write lost")),
            "{v:?}"
        );
    }

    #[test]
    fn missing_revision_in_every_watch_fails() {
        let (ops, evs) = good();
        let holes = vec![evs[0].clone(), evs[1].clone(), evs[3].clone()];
        let v = check_all(
            &ops,
            &[session(0, 2, holes.clone()), session(1, 2, holes)],
            &[Some(5), Some(5)],
        );
        assert!(
            v.iter().any(|v| v.contains("no watch saw revisions [4]")),
            "{v:?}"
        );
    }

    #[test]
    fn stale_serializable_read_is_checked_against_its_revision() {
        let (mut ops, evs) = good();
        let read = |kv: Option<Kv>, rev: i64, inv: u64| Op {
            client: 1,
            member: 2,
            key: "a".into(),
            input: Input::Get { serializable: true },
            output: Output::Get { kv, rev },
            invoke_ns: inv,
            return_ns: inv + 1,
            txn: None,
        };
        // Stale but consistent: the state of revision 3.
        ops.push(read(Some(kv("a1", 2, 2, 1)), 3, 10));
        ops.push(read(Some(kv("a2", 4, 2, 2)), 4, 20));
        let sessions = vec![session(0, 2, evs)];
        assert!(check_all(&ops, &sessions, &[Some(5)]).is_empty());
        // Claims revision 4 but shows revision 3's value.
        let mut bad = ops.clone();
        bad.push(read(Some(kv("a1", 2, 2, 1)), 4, 30));
        let v = check_all(&bad, &sessions, &[Some(5)]);
        assert!(v.iter().any(|v| v.contains("history says")), "{v:?}");
        // Goes back in time on member 2.
        let mut back = ops.clone();
        back.push(read(Some(kv("a1", 2, 2, 1)), 3, 30));
        let v = check_all(&back, &sessions, &[Some(5)]);
        assert!(v.iter().any(|v| v.contains("went back")), "{v:?}");
    }
}
