//! An interval tree over byte-string keys, for range watchers (etcd's `adt.IntervalTree`).
//!
//! An interval is `[begin, end)` where `end` may be [`RangeEnd::Unbounded`]: etcd's watch
//! layer turns a `range_end` of `"\0"` ("every key >= key") into an empty end, and its
//! `StringAffineComparable` treats the empty string as +infinity. We make that explicit.
//!
//! The tree is a treap (a binary search tree ordered by `(begin, end)` and a max-heap on random
//! priorities), so it stays balanced in expectation whatever the insertion order; every node
//! is augmented with the largest `end` in its subtree so that a stab query skips subtrees that
//! end before the point. Equal intervals share one node (the value is typically a set of
//! watchers), exactly as etcd keys its tree by interval.
//!
//! Worked example: intervals `[a,c) [b,+inf) [d,e)`, stab(`b`):
//! ```text
//!              [b,+inf) max=+inf
//!             /          \
//!   [a,c) max=c         [d,e) max=e
//! ```
//! The root contains `b`; the left subtree's max `c` > `b`, so it is visited and `[a,c)`
//! matches; the right subtree starts at `d` > `b`, so it is skipped without looking inside.

use std::cmp::Ordering;

/// The exclusive end of an interval.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RangeEnd {
    /// Every key strictly below this one.
    Key(Box<[u8]>),
    /// Every key: etcd's `range_end = "\0"`.
    Unbounded,
}

impl RangeEnd {
    /// Whether `point` lies below this end.
    fn above(&self, point: &[u8]) -> bool {
        match self {
            RangeEnd::Key(k) => point < &k[..],
            RangeEnd::Unbounded => true,
        }
    }
}

impl PartialOrd for RangeEnd {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RangeEnd {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (RangeEnd::Unbounded, RangeEnd::Unbounded) => Ordering::Equal,
            (RangeEnd::Unbounded, RangeEnd::Key(_)) => Ordering::Greater,
            (RangeEnd::Key(_), RangeEnd::Unbounded) => Ordering::Less,
            (RangeEnd::Key(a), RangeEnd::Key(b)) => a.cmp(b),
        }
    }
}

/// A key interval `[begin, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    /// First key in the interval.
    pub begin: Box<[u8]>,
    /// Exclusive end.
    pub end: RangeEnd,
}

impl Interval {
    /// `[begin, end)`; `end == b"\0"` means unbounded, as in etcd's watch API.
    pub fn new(begin: &[u8], end: &[u8]) -> Self {
        let end = if end == [0] {
            RangeEnd::Unbounded
        } else {
            RangeEnd::Key(end.into())
        };
        Interval {
            begin: begin.into(),
            end,
        }
    }

    /// Whether `point` is inside the interval.
    pub fn contains(&self, point: &[u8]) -> bool {
        &self.begin[..] <= point && self.end.above(point)
    }
}

type Link<V> = Option<Box<Node<V>>>;

struct Node<V> {
    ivl: Interval,
    value: V,
    /// Heap priority: a parent's priority is >= its children's.
    prio: u64,
    /// The largest `end` in this subtree (the augmentation that makes stabs cheap).
    max_end: RangeEnd,
    left: Link<V>,
    right: Link<V>,
}

impl<V> Node<V> {
    fn update(&mut self) {
        let mut m = self.ivl.end.clone();
        for child in [&self.left, &self.right].into_iter().flatten() {
            if child.max_end > m {
                m = child.max_end.clone();
            }
        }
        self.max_end = m;
    }
}

/// A balanced interval tree mapping distinct intervals to values.
pub struct IntervalTree<V> {
    root: Link<V>,
    len: usize,
    /// State of the splitmix64 generator for node priorities (deterministic, no global RNG).
    seed: u64,
}

impl<V> Default for IntervalTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> IntervalTree<V> {
    /// An empty tree.
    pub fn new() -> Self {
        IntervalTree {
            root: None,
            len: 0,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Number of distinct intervals.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no interval.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn next_prio(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The value stored for exactly `ivl`, if any.
    pub fn get_mut(&mut self, ivl: &Interval) -> Option<&mut V> {
        let mut cur = self.root.as_deref_mut();
        while let Some(n) = cur {
            match ivl.cmp(&n.ivl) {
                Ordering::Equal => return Some(&mut n.value),
                Ordering::Less => cur = n.left.as_deref_mut(),
                Ordering::Greater => cur = n.right.as_deref_mut(),
            }
        }
        None
    }

    /// Inserts `value` for `ivl`, returning the value it replaces.
    pub fn insert(&mut self, ivl: Interval, value: V) -> Option<V> {
        if let Some(v) = self.get_mut(&ivl) {
            return Some(std::mem::replace(v, value));
        }
        let prio = self.next_prio();
        let node = Box::new(Node {
            max_end: ivl.end.clone(),
            ivl,
            value,
            prio,
            left: None,
            right: None,
        });
        let root = self.root.take();
        let (l, r) = split(root, &node.ivl, false);
        self.root = merge(merge(l, Some(node)), r);
        self.len += 1;
        None
    }

    /// Removes `ivl`, returning its value.
    pub fn remove(&mut self, ivl: &Interval) -> Option<V> {
        let root = self.root.take();
        let (l, rest) = split(root, ivl, false);
        let (mid, r) = split(rest, ivl, true);
        self.root = merge(l, r);
        let node = mid?;
        self.len -= 1;
        Some(node.value)
    }

    /// Calls `f` for every interval containing `point`.
    pub fn stab<'a>(&'a self, point: &[u8], mut f: impl FnMut(&'a Interval, &'a V)) {
        stab_node(self.root.as_deref(), point, &mut f);
    }

    /// Calls `f` for every interval, in order.
    pub fn for_each<'a>(&'a self, mut f: impl FnMut(&'a Interval, &'a V)) {
        fn walk<'a, V>(n: Option<&'a Node<V>>, f: &mut impl FnMut(&'a Interval, &'a V)) {
            if let Some(n) = n {
                walk(n.left.as_deref(), f);
                f(&n.ivl, &n.value);
                walk(n.right.as_deref(), f);
            }
        }
        walk(self.root.as_deref(), &mut f);
    }

    /// Height of the tree (for balance checks).
    pub fn height(&self) -> usize {
        fn h<V>(n: Option<&Node<V>>) -> usize {
            n.map_or(0, |n| 1 + h(n.left.as_deref()).max(h(n.right.as_deref())))
        }
        h(self.root.as_deref())
    }
}

fn stab_node<'a, V>(
    mut n: Option<&'a Node<V>>,
    point: &[u8],
    f: &mut impl FnMut(&'a Interval, &'a V),
) {
    // Loop on the right spine, recurse on the left: recursion depth stays O(height).
    while let Some(node) = n {
        if !node.max_end.above(point) {
            return;
        }
        stab_node(node.left.as_deref(), point, f);
        if &node.ivl.begin[..] > point {
            // Every interval to the right starts after the point as well.
            return;
        }
        if node.ivl.end.above(point) {
            f(&node.ivl, &node.value);
        }
        n = node.right.as_deref();
    }
}

/// Splits `t` into (intervals < key, intervals >= key), or (<= key, > key) when `inclusive`.
fn split<V>(t: Link<V>, key: &Interval, inclusive: bool) -> (Link<V>, Link<V>) {
    match t {
        None => (None, None),
        Some(mut n) => {
            let goes_left = match n.ivl.cmp(key) {
                Ordering::Less => true,
                Ordering::Equal => inclusive,
                Ordering::Greater => false,
            };
            if goes_left {
                let (l, r) = split(n.right.take(), key, inclusive);
                n.right = l;
                n.update();
                (Some(n), r)
            } else {
                let (l, r) = split(n.left.take(), key, inclusive);
                n.left = r;
                n.update();
                (l, Some(n))
            }
        }
    }
}

/// Joins two treaps where every interval of `a` is below every interval of `b`.
fn merge<V>(a: Link<V>, b: Link<V>) -> Link<V> {
    match (a, b) {
        (None, b) => b,
        (a, None) => a,
        (Some(mut a), Some(mut b)) => {
            if a.prio >= b.prio {
                a.right = merge(a.right.take(), Some(b));
                a.update();
                Some(a)
            } else {
                b.left = merge(Some(a), b.left.take());
                b.update();
                Some(b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ivl(b: &[u8], e: &[u8]) -> Interval {
        Interval::new(b, e)
    }

    fn stabbed(t: &IntervalTree<u32>, p: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        t.stab(p, |_, v| out.push(*v));
        out.sort();
        out
    }

    #[test]
    fn stab_handles_prefix_unbounded_and_all_keys() {
        let mut t = IntervalTree::new();
        t.insert(ivl(b"a", b"c"), 1);
        t.insert(ivl(b"b", b"\0"), 2); // every key >= "b"
        t.insert(ivl(b"\0", b"\0"), 3); // every key
        t.insert(ivl(b"foo", b"fop"), 4); // prefix "foo"
        assert_eq!(stabbed(&t, b"a"), vec![1, 3]);
        assert_eq!(stabbed(&t, b"b"), vec![1, 2, 3]);
        assert_eq!(stabbed(&t, b"c"), vec![2, 3]);
        assert_eq!(stabbed(&t, b"foo/x"), vec![2, 3, 4]);
        assert_eq!(stabbed(&t, b"fop"), vec![2, 3]);
        assert_eq!(stabbed(&t, b"\x01"), vec![3]);
        assert_eq!(t.remove(&ivl(b"b", b"\0")), Some(2));
        assert_eq!(stabbed(&t, b"zzz"), vec![3]);
        assert_eq!(t.remove(&ivl(b"b", b"\0")), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn stays_balanced_under_sorted_inserts() {
        let mut t = IntervalTree::new();
        for i in 0u32..20_000 {
            let b = i.to_be_bytes();
            let e = (i + 1).to_be_bytes();
            t.insert(ivl(&b, &e), i);
        }
        assert_eq!(t.len(), 20_000);
        // A treap's expected height is ~3 log2(n) (~43 here); a degenerate tree would be 20000.
        assert!(t.height() < 80, "height {}", t.height());
        assert_eq!(stabbed(&t, &777u32.to_be_bytes()), vec![777]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>, Vec<u8>, u32),
        Remove(Vec<u8>, Vec<u8>),
        Stab(Vec<u8>),
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // A tiny alphabet so that intervals overlap and collide often.
        prop::collection::vec(0u8..4, 0..3)
    }

    fn end() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![Just(vec![0u8]), prop::collection::vec(0u8..4, 1..3)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (key(), end(), any::<u32>()).prop_map(|(b, e, v)| Op::Insert(b, e, v)),
            (key(), end()).prop_map(|(b, e)| Op::Remove(b, e)),
            key().prop_map(Op::Stab),
        ]
    }

    proptest! {
        #[test]
        fn matches_brute_force(ops in prop::collection::vec(op(), 1..200)) {
            let mut t = IntervalTree::new();
            let mut model: BTreeMap<Interval, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(b, e, v) => {
                        let i = ivl(&b, &e);
                        prop_assert_eq!(t.insert(i.clone(), v), model.insert(i, v));
                    }
                    Op::Remove(b, e) => {
                        let i = ivl(&b, &e);
                        prop_assert_eq!(t.remove(&i), model.remove(&i));
                    }
                    Op::Stab(p) => {
                        let mut want: Vec<u32> = model
                            .iter()
                            .filter(|(i, _)| i.contains(&p))
                            .map(|(_, v)| *v)
                            .collect();
                        want.sort();
                        prop_assert_eq!(stabbed(&t, &p), want);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            let mut all = Vec::new();
            t.for_each(|i, v| all.push((i.clone(), *v)));
            let want: Vec<(Interval, u32)> = model.into_iter().collect();
            prop_assert_eq!(all, want);
        }
    }
}
