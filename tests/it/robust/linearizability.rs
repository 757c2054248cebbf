//! Linearizability of a KV history, checked key by key with a Wing-Gong search (Lowe's
//! memoised variant, as porcupine does it), plus one global property: revisions agree with
//! real time.
//!
//! The model of one key is a pure function (state, op) -> possible next states. A write with
//! an unknown outcome has two: it happened (at a revision nobody saw yet) or it never did;
//! its return time is "never", so it may take effect any time after its invocation.
//!
//! Serializable reads are not linearizable by design and are left to
//! [`crate::robust::watch_check`], which compares them with the committed history.

use std::collections::HashSet;

use crate::robust::history::{by_key, Input, Kv, Op, Output};

/// A key's state in the model. `mod_rev` is `None` after a write whose revision is not known
/// (an unknown-outcome put); a later read that shows it fills it in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KeyState {
    /// `(value, mod_rev, version)` while the key exists.
    pub kv: Option<(String, Option<i64>, i64)>,
}

impl KeyState {
    fn put(&self, value: &str, rev: Option<i64>) -> KeyState {
        let version = self.kv.as_ref().map_or(1, |(_, _, v)| v + 1);
        KeyState {
            kv: Some((value.to_string(), rev, version)),
        }
    }

    fn mod_rev(&self) -> Option<i64> {
        self.kv.as_ref().and_then(|(_, r, _)| *r)
    }

    fn value(&self) -> Option<&str> {
        self.kv.as_ref().map(|(v, _, _)| v.as_str())
    }

    /// Whether a read that returned `seen` is explained by this state; if so, the state with
    /// its revision filled in.
    fn read(&self, seen: &Option<Kv>) -> Option<KeyState> {
        match (&self.kv, seen) {
            (None, None) => Some(self.clone()),
            (Some((v, r, ver)), Some(kv)) => {
                let same =
                    *v == kv.value && *ver == kv.version && r.is_none_or(|r| r == kv.mod_rev);
                same.then(|| KeyState {
                    kv: Some((v.clone(), Some(kv.mod_rev), *ver)),
                })
            }
            _ => None,
        }
    }

    /// A write at a known revision must come after the key's last known revision.
    fn rev_after(&self, rev: i64) -> bool {
        self.mod_rev().is_none_or(|r| rev > r)
    }
}

/// The states `op` may lead to from `s` (none: the op cannot happen in `s`).
pub fn step(s: &KeyState, op: &Op) -> Vec<KeyState> {
    match (&op.input, &op.output) {
        (Input::Put { value }, Output::Put { rev }) => {
            if s.rev_after(*rev) {
                vec![s.put(value, Some(*rev))]
            } else {
                vec![]
            }
        }
        // Unknown outcomes: only "it happened" is a step; "it never happened" is the op left
        // out, which the search allows by letting unknown ops stay unplaced at the end.
        (Input::Put { value }, Output::Unknown) => vec![s.put(value, None)],
        (Input::Get { .. }, Output::Get { kv, .. }) => s.read(kv).into_iter().collect(),
        (Input::Delete, Output::Delete { deleted, rev }) => match (&s.kv, *deleted) {
            (None, 0) => vec![s.clone()],
            (Some(_), 1) if s.rev_after(*rev) => vec![KeyState::default()],
            _ => vec![],
        },
        (Input::Delete, Output::Unknown) => vec![KeyState::default()],
        (
            Input::Cas { expect, value },
            Output::Cas {
                succeeded,
                rev,
                current,
            },
        ) => {
            if s.value() == Some(expect.as_str()) {
                if *succeeded && s.rev_after(*rev) {
                    vec![s.put(value, Some(*rev))]
                } else {
                    vec![]
                }
            } else if *succeeded {
                vec![]
            } else {
                s.read(current).into_iter().collect()
            }
        }
        (Input::Cas { expect, value }, Output::Unknown) => {
            if s.value() == Some(expect.as_str()) {
                vec![s.put(value, None)]
            } else {
                vec![]
            }
        }
        // An answer of the wrong shape cannot be explained.
        _ => vec![],
    }
}

/// Fills in unknown outcomes from the committed history the watches revealed, as etcd's
/// robustness tests do: an unknown put (or CAS) whose unique value appears in the history
/// happened, at that revision; one whose value never appears did not happen and is left out
/// (a CAS that did not happen is a read, and leaving out a read is always allowed). The return
/// time stays unknown. Unknown deletes carry no value to match: on a key whose every DELETE
/// event is explained by an acknowledged delete they did nothing visible and are left out;
/// elsewhere they stay unknown. Only
/// sound when the committed history is complete, which `watch_check` verifies separately.
pub fn patch_unknowns(ops: &[Op], committed: &crate::robust::watch_check::Committed) -> Vec<Op> {
    let mut put_rev: std::collections::HashMap<(&str, &str), i64> =
        std::collections::HashMap::new();
    for (rev, evs) in committed {
        for ev in evs.iter().filter(|e| e.put) {
            put_rev.insert((ev.key.as_str(), ev.kv.value.as_str()), *rev);
        }
    }
    // Keys with a DELETE event no acknowledged delete accounts for.
    let acked_deletes: HashSet<(&str, i64)> = ops
        .iter()
        .filter_map(|o| match o.acked_write() {
            Some((None, rev)) => Some((o.key.as_str(), rev)),
            _ => None,
        })
        .collect();
    let unexplained_deletes: HashSet<&str> = committed
        .iter()
        .flat_map(|(rev, evs)| evs.iter().map(move |e| (*rev, e)))
        .filter(|(rev, e)| !e.put && !acked_deletes.contains(&(e.key.as_str(), *rev)))
        .map(|(_, e)| e.key.as_str())
        .collect();
    let revokes = attribute_lease_deletions(ops, committed, &acked_deletes);
    ops.iter()
        .enumerate()
        .filter_map(|(i, op)| {
            if let Input::Revoke { .. } = op.input {
                // A revoke (or expiry) is the DELETE it caused, or nothing.
                let mut op = op.clone();
                op.input = Input::Delete;
                match revokes.get(&i)? {
                    LeaseDeletion::At {
                        rev,
                        invoke_ns,
                        return_ns,
                    } => {
                        op.output = Output::Delete {
                            deleted: 1,
                            rev: *rev,
                        };
                        op.invoke_ns = *invoke_ns;
                        op.return_ns = *return_ns;
                    }
                    LeaseDeletion::AfterTheHistory => {
                        op.output = Output::Unknown;
                        op.return_ns = u64::MAX;
                    }
                }
                return Some(op);
            }
            if op.output != Output::Unknown {
                return Some(op.clone());
            }
            if op.input == Input::Delete && !unexplained_deletes.contains(op.key.as_str()) {
                return None;
            }
            let mut op = op.clone();
            match &op.input {
                Input::Put { value } => {
                    op.output = Output::Put {
                        rev: *put_rev.get(&(op.key.as_str(), value.as_str()))?,
                    };
                }
                Input::Cas { value, .. } => {
                    op.output = Output::Cas {
                        succeeded: true,
                        rev: *put_rev.get(&(op.key.as_str(), value.as_str()))?,
                        current: None,
                    };
                }
                _ => {}
            }
            Some(op)
        })
        .collect()
}

/// What a revoke (or expiry) op did to its key.
enum LeaseDeletion {
    /// Deleted it at revision `rev`, some time between the two instants.
    At {
        rev: i64,
        invoke_ns: u64,
        return_ns: u64,
    },
    /// The lease's put is the key's last watched event: the deletion, if any, came after
    /// the watched history (a lease expiring after the final write).
    AfterTheHistory,
}

/// Which revoke (or expiry) op deleted its key, and at which revision: op index -> revision.
///
/// The workload attaches each lease to one put on one key, of a value ending in
/// [`lease_suffix`]. If the committed history has that put, and the key's next event is a
/// DELETE no acknowledged delete accounts for, the lease deleted it: a revoke acknowledged at
/// that revision, a revoke with an unknown outcome or the lease's expiry (whose invocation is
/// the grant plus the TTL, so the search rejects an expiry that readers saw earlier), no
/// earlier than the first of them was invoked. Every other revoke op did nothing. If
/// the lease's put is the key's last event, every revoke op of the lease may have deleted it
/// after the watched history ended.
fn attribute_lease_deletions(
    ops: &[Op],
    committed: &crate::robust::watch_check::Committed,
    acked_deletes: &HashSet<(&str, i64)>,
) -> std::collections::HashMap<usize, LeaseDeletion> {
    use crate::robust::history::lease_suffix;
    let mut by_lease: std::collections::BTreeMap<(&str, i64), Vec<usize>> = Default::default();
    for (i, op) in ops.iter().enumerate() {
        if let Input::Revoke { lease, .. } = op.input {
            by_lease
                .entry((op.key.as_str(), lease))
                .or_default()
                .push(i);
        }
    }
    let mut out = std::collections::HashMap::new();
    for ((key, lease), idx) in by_lease {
        let suffix = lease_suffix(lease);
        let mut events = committed
            .iter()
            .flat_map(|(rev, evs)| evs.iter().map(move |e| (*rev, e)))
            .filter(|(_, e)| e.key == key)
            .skip_while(|(_, e)| !(e.put && e.kv.value.ends_with(&suffix)));
        if events.next().is_none() {
            continue;
        }
        let Some((rev, next)) = events.next() else {
            for i in idx {
                out.insert(i, LeaseDeletion::AfterTheHistory);
            }
            continue;
        };
        if next.put || acked_deletes.contains(&(key, rev)) {
            continue;
        }
        // The ops that may have done it: a revoke acknowledged at that revision, a revoke
        // with an unknown outcome, the expiry. It happened after the earliest of their
        // invocations, and before the acknowledged revoke's return if there is one.
        let could: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|i| match &ops[*i].output {
                Output::Revoke { rev: r } => *r == rev,
                Output::Unknown => true,
                _ => false,
            })
            .collect();
        let Some(&first) = could.iter().min_by_key(|i| ops[**i].invoke_ns) else {
            continue;
        };
        let by = could
            .iter()
            .map(|i| ops[*i].return_ns)
            .min()
            .unwrap_or(u64::MAX);
        out.insert(
            first,
            LeaseDeletion::At {
                rev,
                invoke_ns: ops[first].invoke_ns,
                return_ns: by,
            },
        );
    }
    out
}

/// Most search steps per key before the check gives up (a give-up is reported as a
/// violation: a history the checker cannot decide is not a pass).
pub const MAX_STEPS_PER_KEY: u64 = 5_000_000;

/// Why a key's history is not linearizable.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: String,
    pub reason: String,
}

/// Checks every key's linearizable operations (serializable gets are skipped).
pub fn check_linearizable(ops: &[Op]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (key, ops) in by_key(ops) {
        let ops: Vec<&Op> = ops
            .into_iter()
            .filter(|o| !matches!(o.input, Input::Get { serializable: true }))
            .collect();
        // Fast path: leave out unknown writes whose value no read ever saw (choosing "never
        // happened" for them is always allowed); only if that fails, search with all of them.
        let seen: HashSet<&str> = ops
            .iter()
            .flat_map(|o| match &o.output {
                Output::Get { kv, .. } | Output::Cas { current: kv, .. } => kv.as_ref(),
                _ => None,
            })
            .map(|kv| kv.value.as_str())
            .collect();
        let observed: Vec<&Op> = ops
            .iter()
            .copied()
            .filter(|o| {
                o.output != Output::Unknown
                    || match &o.input {
                        Input::Put { value } | Input::Cas { value, .. } => {
                            seen.contains(value.as_str())
                        }
                        _ => true,
                    }
            })
            .collect();
        if observed.len() < ops.len() && check_key(&observed).is_ok() {
            continue;
        }
        if let Err(reason) = check_key(&ops) {
            out.push(Violation {
                key: key.to_string(),
                reason,
            });
        }
    }
    out
}

/// One event of the search's list: an op's call or its return.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
    /// The matching return's index (calls only).
    ret: usize,
    prev: usize,
    next: usize,
}

/// Wing-Gong search over one key's operations, starting from an absent key.
fn check_key(ops: &[&Op]) -> Result<(), String> {
    let n = ops.len();
    if n == 0 {
        return Ok(());
    }
    // Calls sort before returns at equal times: touching ops count as concurrent.
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoke_ns, false, i));
        order.push((op.return_ns, true, i));
    }
    order.sort();
    // Index 0 is the head sentinel; list entries are 1..=2n.
    let mut e = vec![
        Entry {
            op: usize::MAX,
            call: false,
            ret: 0,
            prev: 0,
            next: 1,
        };
        2 * n + 1
    ];
    let mut ret_of = vec![0usize; n];
    for (pos, (_, is_ret, i)) in order.iter().enumerate() {
        let idx = pos + 1;
        e[idx] = Entry {
            op: *i,
            call: !is_ret,
            ret: 0,
            prev: idx - 1,
            next: if idx == 2 * n { usize::MAX } else { idx + 1 },
        };
        if *is_ret {
            ret_of[*i] = idx;
        }
    }
    for idx in 1..=2 * n {
        if e[idx].call {
            e[idx].ret = ret_of[e[idx].op];
        }
    }
    let words = n.div_ceil(64);
    let mut done = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, KeyState)> = HashSet::new();
    // (call entry, state before it, alternative taken)
    let mut stack: Vec<(usize, KeyState, usize)> = Vec::new();
    let mut state = KeyState::default();
    let mut cur = e[0].next;
    let mut first_alt = 0usize;
    let mut steps = 0u64;
    let mut deepest = 0usize;

    fn lift(e: &mut [Entry], i: usize) {
        for j in [i, e[i].ret] {
            let (p, nx) = (e[j].prev, e[j].next);
            e[p].next = nx;
            if nx != usize::MAX {
                e[nx].prev = p;
            }
        }
    }
    fn unlift(e: &mut [Entry], i: usize) {
        for j in [e[i].ret, i] {
            let (p, nx) = (e[j].prev, e[j].next);
            e[p].next = j;
            if nx != usize::MAX {
                e[nx].prev = j;
            }
        }
    }

    loop {
        if e[0].next == usize::MAX {
            return Ok(());
        }
        steps += 1;
        if steps > MAX_STEPS_PER_KEY {
            return Err(format!("undecided after {MAX_STEPS_PER_KEY} search steps"));
        }
        if cur != usize::MAX && !e[cur].call && ops[e[cur].op].return_ns == u64::MAX {
            // Only unknown-outcome ops are left: they never happened.
            return Ok(());
        }
        if cur != usize::MAX && e[cur].call {
            let op = ops[e[cur].op];
            let alts = step(&state, op);
            let mut taken = None;
            for (k, next) in alts.into_iter().enumerate().skip(first_alt) {
                let mut bits = done.clone();
                bits[e[cur].op / 64] |= 1 << (e[cur].op % 64);
                if cache.insert((bits.clone(), next.clone())) {
                    taken = Some((k, next, bits));
                    break;
                }
            }
            first_alt = 0;
            if let Some((k, next, bits)) = taken {
                stack.push((cur, std::mem::replace(&mut state, next), k));
                done = bits;
                lift(&mut e, cur);
                deepest = deepest.max(stack.len());
                cur = e[0].next;
            } else {
                cur = e[cur].next;
            }
        } else {
            // A return reached (or the list's end): some op that must have taken effect by
            // now cannot be placed. Undo the last choice and try the next one.
            let Some((call, before, k)) = stack.pop() else {
                let stuck = if cur == usize::MAX {
                    None
                } else {
                    Some(ops[e[cur].op])
                };
                return Err(format!(
                    "no linearization; at most {deepest} of {n} ops placed; first op that \
                     cannot be placed: {stuck:?}"
                ));
            };
            state = before;
            done[e[call].op / 64] &= !(1 << (e[call].op % 64));
            unlift(&mut e, call);
            cur = call;
            first_alt = k + 1;
        }
    }
}

/// Revisions agree with real time: if op a returned before op b was invoked, b's header
/// revision is not below a's, and a write b that changed the store gets a revision above
/// a's. Writes that changed the store never share a revision. Serializable reads are left
/// out (a member may serve them from behind).
pub fn check_revisions_real_time(ops: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    let mut done: Vec<&Op> = ops
        .iter()
        .filter(|o| !matches!(o.input, Input::Get { serializable: true }))
        .filter(|o| o.header_rev().is_some())
        .collect();
    let mut by_invoke = done.clone();
    done.sort_by_key(|o| o.return_ns);
    by_invoke.sort_by_key(|o| o.invoke_ns);
    let mut i = 0;
    let mut max_before: Option<&Op> = None;
    for b in by_invoke {
        while i < done.len() && done[i].return_ns < b.invoke_ns {
            if max_before.is_none_or(|m| done[i].header_rev() > m.header_rev()) {
                max_before = Some(done[i]);
            }
            i += 1;
        }
        let Some(a) = max_before else { continue };
        let (ra, rb) = (a.header_rev().unwrap_or(0), b.header_rev().unwrap_or(0));
        let strict = b.acked_write().is_some();
        if rb < ra || (strict && rb == ra) {
            out.push(format!(
                "revision went back in real time: {a:?} returned at revision {ra} before {b:?} \
                 was invoked, which got revision {rb}"
            ));
        }
    }
    let mut seen: std::collections::HashMap<i64, &Op> = std::collections::HashMap::new();
    for op in ops {
        if let Some((_, rev)) = op.acked_write() {
            if let Some(other) = seen.insert(rev, op) {
                // The parts of one multi-key txn share its revision.
                if other.txn.is_none() || other.txn != op.txn {
                    out.push(format!(
                        "two writes at revision {rev}: {other:?} and {op:?}"
                    ));
                }
            }
        }
    }
    out
}

/// Every multi-key txn took effect whole, at one revision, or not at all: in `patched`
/// (unknown outcomes resolved from the committed history) its parts are all present with
/// one revision, or all gone. `original` has every part.
pub fn check_txns_atomic(original: &[Op], patched: &[Op]) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut parts: BTreeMap<u64, usize> = BTreeMap::new();
    for op in original {
        if let Some(t) = op.txn {
            *parts.entry(t).or_default() += 1;
        }
    }
    let mut revs: BTreeMap<u64, Vec<Option<i64>>> = BTreeMap::new();
    for op in patched {
        if let Some(t) = op.txn {
            revs.entry(t).or_default().push(op.header_rev());
        }
    }
    let mut out = Vec::new();
    for (t, n) in parts {
        let got = revs.remove(&t).unwrap_or_default();
        let whole = got.len() == n && got.windows(2).all(|w| w[0] == w[1]) && got[0].is_some();
        if !got.is_empty() && !whole {
            out.push(format!(
                "txn {t} not atomic: {} of its {n} puts took effect, at revisions {got:?}",
                got.len()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, input: Input, output: Output, inv: u64, ret: Option<u64>) -> Op {
        Op {
            txn: None,
            client: 0,
            member: 0,
            key: key.into(),
            input,
            output,
            invoke_ns: inv,
            return_ns: ret.unwrap_or(u64::MAX),
        }
    }
    fn put(v: &str, rev: i64, inv: u64, ret: u64) -> Op {
        op(
            "k",
            Input::Put { value: v.into() },
            Output::Put { rev },
            inv,
            Some(ret),
        )
    }
    fn put_unknown(v: &str, inv: u64) -> Op {
        op(
            "k",
            Input::Put { value: v.into() },
            Output::Unknown,
            inv,
            None,
        )
    }
    fn kv(v: &str, rev: i64, create: i64, version: i64) -> Option<Kv> {
        Some(Kv {
            value: v.into(),
            mod_rev: rev,
            create_rev: create,
            version,
        })
    }
    fn get(seen: Option<Kv>, rev: i64, inv: u64, ret: u64) -> Op {
        op(
            "k",
            Input::Get {
                serializable: false,
            },
            Output::Get { kv: seen, rev },
            inv,
            Some(ret),
        )
    }

    #[test]
    fn sequential_history_passes() {
        let h = vec![
            put("a", 2, 0, 10),
            get(kv("a", 2, 2, 1), 2, 20, 30),
            put("b", 3, 40, 50),
            get(kv("b", 3, 2, 2), 3, 60, 70),
            op(
                "k",
                Input::Delete,
                Output::Delete { deleted: 1, rev: 4 },
                80,
                Some(90),
            ),
            get(None, 4, 100, 110),
        ];
        assert!(check_linearizable(&h).is_empty());
        assert!(check_revisions_real_time(&h).is_empty());
    }

    #[test]
    fn stale_read_fails() {
        // b is acknowledged before the read starts, yet the read returns a.
        let h = vec![
            put("a", 2, 0, 10),
            put("b", 3, 20, 30),
            get(kv("a", 2, 2, 1), 3, 40, 50),
        ];
        let v = check_linearizable(&h);
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let h = vec![
            put("a", 2, 0, 10),
            put("b", 3, 20, 60),
            get(kv("a", 2, 2, 1), 2, 30, 40),
            get(kv("b", 3, 2, 2), 3, 45, 50),
        ];
        assert!(check_linearizable(&h).is_empty());
        // Seeing b and then a again, both inside the put, is not linearizable.
        let h = vec![
            put("a", 2, 0, 10),
            put("b", 3, 20, 60),
            get(kv("b", 3, 2, 2), 3, 30, 40),
            get(kv("a", 2, 2, 1), 2, 45, 50),
        ];
        assert_eq!(check_linearizable(&h).len(), 1);
    }

    #[test]
    fn lost_write_fails() {
        // b acknowledged, then a later read finds the key as a left it.
        let h = vec![
            put("a", 2, 0, 10),
            put("b", 3, 20, 30),
            get(kv("a", 2, 2, 1), 2, 40, 50),
        ];
        assert_eq!(check_linearizable(&h).len(), 1);
    }

    #[test]
    fn unknown_write_may_or_may_not_happen() {
        let applied = vec![
            put("a", 2, 0, 10),
            put_unknown("b", 20),
            get(kv("b", 3, 2, 2), 3, 40, 50),
            get(kv("b", 3, 2, 2), 3, 60, 70),
        ];
        assert!(check_linearizable(&applied).is_empty());
        let not_applied = vec![
            put("a", 2, 0, 10),
            put_unknown("b", 20),
            get(kv("a", 2, 2, 1), 2, 40, 50),
        ];
        assert!(check_linearizable(&not_applied).is_empty());
        // Late: seen after a read that did not see it; fine, it took effect late.
        let late = vec![
            put("a", 2, 0, 10),
            put_unknown("b", 20),
            get(kv("a", 2, 2, 1), 2, 40, 50),
            get(kv("b", 3, 2, 2), 3, 60, 70),
        ];
        assert!(check_linearizable(&late).is_empty());
        // Seen, then gone without any other write: not linearizable.
        let flicker = vec![
            put("a", 2, 0, 10),
            put_unknown("b", 20),
            get(kv("b", 3, 2, 2), 3, 40, 50),
            get(kv("a", 2, 2, 1), 3, 60, 70),
        ];
        assert_eq!(check_linearizable(&flicker).len(), 1);
    }

    #[test]
    fn write_never_made_cannot_be_read() {
        let h = vec![put("a", 2, 0, 10), get(kv("z", 3, 2, 2), 3, 20, 30)];
        assert_eq!(check_linearizable(&h).len(), 1);
    }

    #[test]
    fn cas_follows_the_value() {
        let cas = |expect: &str, value: &str, out: Output, inv, ret| {
            op(
                "k",
                Input::Cas {
                    expect: expect.into(),
                    value: value.into(),
                },
                out,
                inv,
                Some(ret),
            )
        };
        let ok = vec![
            put("a", 2, 0, 10),
            cas(
                "a",
                "b",
                Output::Cas {
                    succeeded: true,
                    rev: 3,
                    current: None,
                },
                20,
                30,
            ),
            cas(
                "a",
                "c",
                Output::Cas {
                    succeeded: false,
                    rev: 3,
                    current: kv("b", 3, 2, 2),
                },
                40,
                50,
            ),
        ];
        assert!(check_linearizable(&ok).is_empty());
        // Two CAS from the same value both succeeding, one after the other: lost update.
        let double = vec![
            put("a", 2, 0, 10),
            cas(
                "a",
                "b",
                Output::Cas {
                    succeeded: true,
                    rev: 3,
                    current: None,
                },
                20,
                30,
            ),
            cas(
                "a",
                "c",
                Output::Cas {
                    succeeded: true,
                    rev: 4,
                    current: None,
                },
                40,
                50,
            ),
        ];
        assert_eq!(check_linearizable(&double).len(), 1);
    }

    #[test]
    fn revisions_going_back_in_real_time_fail() {
        let mut b = put("b", 2, 20, 30);
        b.key = "other".into();
        let h = vec![put("a", 3, 0, 10), b];
        // Each key alone is fine, but b started after a returned and got a lower revision.
        assert!(check_linearizable(&h).is_empty());
        assert_eq!(check_revisions_real_time(&h).len(), 1);
        let stale_header = vec![put("a", 3, 0, 10), get(kv("a", 3, 3, 1), 2, 20, 30)];
        assert_eq!(check_revisions_real_time(&stale_header).len(), 1);
    }

    #[test]
    fn many_concurrent_unknowns_stay_decidable() {
        let mut h = vec![put("a", 2, 0, 10)];
        for i in 0..40 {
            h.push(put_unknown(&format!("u{i}"), 20 + i));
        }
        h.push(get(kv("u7", 9, 2, 2), 9, 1000, 1010));
        h.push(put("z", 10, 1020, 1030));
        h.push(get(kv("z", 10, 2, 3), 10, 1040, 1050));
        assert!(check_linearizable(&h).is_empty());
    }

    #[test]
    fn unknown_writes_are_resolved_from_the_committed_history() {
        use crate::robust::history::Event;
        let ev = |v: &str, rev: i64, version: i64| Event {
            put: true,
            key: "k".into(),
            kv: Kv {
                value: v.into(),
                mod_rev: rev,
                create_rev: 2,
                version,
            },
            prev: None,
        };
        let committed: crate::robust::watch_check::Committed =
            [(2, vec![ev("a", 2, 1)]), (3, vec![ev("b", 3, 2)])]
                .into_iter()
                .collect();
        let h = vec![
            put("a", 2, 0, 10),
            put_unknown("b", 20),
            put_unknown("never", 25),
            get(kv("b", 3, 2, 2), 3, 40, 50),
        ];
        let patched = patch_unknowns(&h, &committed);
        assert_eq!(patched.len(), 3, "the put that never committed is left out");
        assert_eq!(patched[1].output, Output::Put { rev: 3 });
        assert!(check_linearizable(&patched).is_empty());
        // A read of a value that never committed cannot be explained once the write is
        // known not to have happened.
        let dirty = vec![
            put("a", 2, 0, 10),
            put_unknown("never", 25),
            get(kv("never", 3, 2, 2), 3, 40, 50),
        ];
        assert!(
            check_linearizable(&dirty).is_empty(),
            "alone, the unknown write explains it"
        );
        assert_eq!(
            check_linearizable(&patch_unknowns(&dirty, &committed)).len(),
            1
        );
    }

    #[test]
    fn txn_parts_share_a_revision_and_take_effect_together() {
        use crate::robust::history::Event;
        let part = |key: &str, v: &str, out: Output| {
            let mut o = op(key, Input::Put { value: v.into() }, out, 0, Some(10));
            if o.output == Output::Unknown {
                o.return_ns = u64::MAX;
            }
            o.txn = Some(7);
            o
        };
        let ev = |key: &str, v: &str, rev: i64| Event {
            put: true,
            key: key.into(),
            kv: Kv {
                value: v.into(),
                mod_rev: rev,
                create_rev: rev,
                version: 1,
            },
            prev: None,
        };
        // Acknowledged: both parts at revision 2, not "two writes at one revision".
        let acked = vec![
            part("a", "t1", Output::Put { rev: 2 }),
            part("b", "t1", Output::Put { rev: 2 }),
        ];
        assert!(check_revisions_real_time(&acked).is_empty());
        assert!(check_txns_atomic(&acked, &acked).is_empty());
        // Two writes of different txns (or none) at one revision still fail.
        let mut other = acked.clone();
        other[1].txn = Some(8);
        assert_eq!(check_revisions_real_time(&other).len(), 1);
        // Unknown, and both committed at one revision: whole.
        let unknown = vec![
            part("a", "t1", Output::Unknown),
            part("b", "t1", Output::Unknown),
        ];
        let both: crate::robust::watch_check::Committed =
            [(2, vec![ev("a", "t1", 2), ev("b", "t1", 2)])]
                .into_iter()
                .collect();
        let patched = patch_unknowns(&unknown, &both);
        assert!(check_txns_atomic(&unknown, &patched).is_empty());
        // Unknown, and nothing committed: none took effect, also fine.
        let none = patch_unknowns(&unknown, &Default::default());
        assert!(none.is_empty());
        assert!(check_txns_atomic(&unknown, &none).is_empty());
        // Only one part committed: not atomic.
        let half: crate::robust::watch_check::Committed =
            [(2, vec![ev("a", "t1", 2)])].into_iter().collect();
        let v = check_txns_atomic(&unknown, &patch_unknowns(&unknown, &half));
        assert!(v.iter().any(|v| v.contains("not atomic")), "{v:?}");
        // Parts at two revisions: not atomic.
        let split: crate::robust::watch_check::Committed =
            [(2, vec![ev("a", "t1", 2)]), (3, vec![ev("b", "t1", 3)])]
                .into_iter()
                .collect();
        let v = check_txns_atomic(&unknown, &patch_unknowns(&unknown, &split));
        assert!(v.iter().any(|v| v.contains("not atomic")), "{v:?}");
    }

    #[test]
    fn a_lease_expiry_seen_before_its_ttl_fails() {
        use crate::robust::history::{lease_suffix, Event};
        let value = format!("v{}", lease_suffix(5));
        let committed: crate::robust::watch_check::Committed = [
            (
                2,
                vec![Event {
                    put: true,
                    key: "k".into(),
                    kv: Kv {
                        value: value.clone(),
                        mod_rev: 2,
                        create_rev: 2,
                        version: 1,
                    },
                    prev: None,
                }],
            ),
            (
                3,
                vec![Event {
                    put: false,
                    key: "k".into(),
                    kv: Kv {
                        value: String::new(),
                        mod_rev: 3,
                        create_rev: 0,
                        version: 0,
                    },
                    prev: None,
                }],
            ),
        ]
        .into_iter()
        .collect();
        let expiry = |at: u64| {
            let mut o = op(
                "k",
                Input::Revoke {
                    lease: 5,
                    expiry: true,
                },
                Output::Unknown,
                at,
                None,
            );
            o.txn = None;
            o
        };
        // Put at 2 (ack by 10), expiry possible from 100; the key read absent at 150.
        let ok = vec![put(&value, 2, 0, 10), expiry(100), get(None, 3, 150, 160)];
        let patched = patch_unknowns(&ok, &committed);
        assert!(
            patched
                .iter()
                .any(|o| o.output == Output::Delete { deleted: 1, rev: 3 }),
            "the expiry is the delete at 3: {patched:?}"
        );
        assert!(check_linearizable(&patched).is_empty());
        // The same deletion seen at 50, before the TTL was up: the lease expired early.
        let early = vec![put(&value, 2, 0, 10), expiry(100), get(None, 3, 40, 50)];
        assert_eq!(
            check_linearizable(&patch_unknowns(&early, &committed)).len(),
            1
        );
        // An acknowledged revoke at 3 takes the deletion instead of the expiry: seen at 50 is
        // then fine.
        let mut revoke = op(
            "k",
            Input::Revoke {
                lease: 5,
                expiry: false,
            },
            Output::Revoke { rev: 3 },
            20,
            Some(30),
        );
        revoke.txn = None;
        let revoked = vec![
            put(&value, 2, 0, 10),
            expiry(100),
            revoke,
            get(None, 3, 40, 50),
        ];
        assert!(check_linearizable(&patch_unknowns(&revoked, &committed)).is_empty());
    }
}
