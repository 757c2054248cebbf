//! The vendored sled splits a node that keys are appended past near its end instead of in its
//! middle (`vendor/sled/PATCHES.md`): the store's rows are keyed by revision, so almost every
//! write appends. This drives that path and the ordinary one together, against a model: runs
//! of appended rows long enough to split index nodes as well as leaves, inserts and removals
//! anywhere (the same key range and a range after it, as the meta rows sit after the kv rows),
//! and reopening the database from its files; every read must match. Runs of rows also go in
//! through `Tree::extend_ordered` (a patch of ours as well: a leaf written once per run of rows
//! that land in it), appended or among existing rows, overwriting some, a few out of order;
//! and runs of keys are deleted through `Tree::remove_ordered` (a leaf written once per run
//! of keys deleted from it), dense or sparse, some absent, some repeated, a few out of order.

use std::collections::BTreeMap;

use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// This many rows past the last row of the `k/` range.
    Append(u16),
    /// One row at a chosen place of the `k/` range (possibly between appended rows).
    Insert(u32),
    /// The `k/` row at or after a chosen place, if any.
    Remove(u32),
    /// A run of consecutive `k/` rows from the row at or after a chosen place.
    RemoveRun(u32, u16),
    /// A row of the range after `k/`.
    Meta(u8),
    /// A run through `extend_ordered`: appended (no place) or from a chosen place of the `k/`
    /// range with a stride chosen by the third field (landing among, and on, existing rows,
    /// across leaves); the third field also disorders it (see [`disorder`]).
    Extend(Option<u32>, u16, u8),
    /// A run through `remove_ordered`: from the `k/` row at or after a chosen place, every
    /// `1 + third field % 5`-th row (dense runs empty whole leaves) together with absent keys
    /// between them, disordered by the third field (see [`disorder`]).
    RemoveOrdered(u32, u16, u8),
    /// Flush, drop and reopen the database.
    Reopen,
}

fn step_s() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u16..6000).prop_map(Step::Append),
        3 => any::<u32>().prop_map(Step::Insert),
        2 => any::<u32>().prop_map(Step::Remove),
        1 => (any::<u32>(), 1u16..3000).prop_map(|(at, n)| Step::RemoveRun(at, n)),
        1 => any::<u8>().prop_map(Step::Meta),
        3 => (prop::option::of(any::<u32>()), 1u16..4000, any::<u8>())
            .prop_map(|(at, n, d)| Step::Extend(at, n, d)),
        2 => (any::<u32>(), 1u16..4000, any::<u8>())
            .prop_map(|(at, n, d)| Step::RemoveOrdered(at, n, d)),
        1 => Just(Step::Reopen),
    ]
}

/// A `k/` key: the place scaled into the key space, then a sequence number so that every
/// append sorts after every earlier key.
fn kv_key(place: u64) -> Vec<u8> {
    let mut k = b"k/".to_vec();
    k.extend_from_slice(&place.to_be_bytes());
    k
}

fn value(key: &[u8]) -> Vec<u8> {
    // Long enough to be stored outside sled's inline values, short enough to keep the test fast.
    let mut v = key.to_vec();
    v.resize(40 + key.len() % 7, b'v');
    v
}

/// Makes an ordered run less ordered, by `how`: most runs stay sorted; others get adjacent rows
/// swapped, a row repeated later with another value (the later one must win), or a stretch
/// reversed.
fn disorder(rows: &mut Vec<(Vec<u8>, Vec<u8>)>, how: u8) {
    let n = rows.len();
    if n < 2 {
        return;
    }
    let at = usize::from(how) * 7 % (n - 1);
    match how % 8 {
        0 => rows.swap(at, at + 1),
        1 => {
            let (k, mut v) = rows[at].clone();
            v[0] ^= 0x55;
            rows.insert((at + 3).min(n), (k, v));
        }
        2 => rows[at..].reverse(),
        _ => {}
    }
}

fn check(tree: &sled::Tree, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = tree
        .iter()
        .map(|r| {
            let (k, v) = r.expect("iterate");
            (k.to_vec(), v.to_vec())
        })
        .collect();
    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(rows.len(), expected.len(), "row count");
    assert!(rows == expected, "rows differ from the model");
    // Reverse iteration and point reads walk the tree differently from a forward scan.
    let back: Vec<Vec<u8>> = tree
        .iter()
        .rev()
        .map(|r| r.expect("iterate back").0.to_vec())
        .collect();
    assert!(back.iter().eq(model.keys().rev()), "reverse scan");
    for (k, v) in model.iter().step_by(97) {
        assert_eq!(tree.get(k).expect("get").as_deref(), Some(&v[..]));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn appended_and_scattered_rows_read_back_as_written(steps in prop::collection::vec(step_s(), 1..24)) {
        let dir = tempfile::tempdir().expect("tempdir");
        // Polls while the dropped database still holds its lock (its IO threads let go of it
        // a moment after the drop).
        let open = || super::open_db(dir.path());
        let mut db = open();
        let mut tree = db.open_tree("t").expect("tree");
        let mut model = BTreeMap::new();
        // Places of appended rows start high; scattered inserts land anywhere below and among them.
        let mut next_append: u64 = 1 << 40;
        for step in steps {
            match step {
                Step::Append(n) => {
                    for _ in 0..n {
                        let k = kv_key(next_append);
                        next_append += 1 + next_append % 3;
                        tree.insert(&k[..], value(&k)).expect("insert");
                        model.insert(k.clone(), value(&k));
                    }
                }
                Step::Insert(at) => {
                    let k = kv_key(u64::from(at) << 9);
                    tree.insert(&k[..], value(&k)).expect("insert");
                    model.insert(k.clone(), value(&k));
                }
                Step::Remove(at) | Step::RemoveRun(at, _) => {
                    let n = match step { Step::RemoveRun(_, n) => usize::from(n), _ => 1 };
                    let from = kv_key(u64::from(at) << 9);
                    let gone: Vec<Vec<u8>> = model
                        .range(from..)
                        .take_while(|(k, _)| k.starts_with(b"k/"))
                        .take(n)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in gone {
                        tree.remove(&k[..]).expect("remove");
                        model.remove(&k);
                    }
                }
                Step::Meta(m) => {
                    let k = vec![b'm', b'/', m];
                    tree.insert(&k[..], value(&k)).expect("insert");
                    model.insert(k.clone(), value(&k));
                }
                Step::Extend(at, n, how) => {
                    let mut rows = Vec::with_capacity(usize::from(n));
                    for i in 0..u64::from(n) {
                        let place = match at {
                            None => {
                                let p = next_append;
                                next_append += 1 + next_append % 3;
                                p
                            }
                            // From a place among the appended rows (even `at`: dense rows,
                            // whose leaves a run crosses) or anywhere (odd), with a stride of
                            // 1 to 1021 places: runs denser and sparser than the rows there.
                            Some(at) => {
                                let appended = next_append - (1 << 40) + 1;
                                let base = if at % 2 == 0 {
                                    (1 << 40) + u64::from(at) % appended
                                } else {
                                    u64::from(at) << 9
                                };
                                base + i * (1 + u64::from(how) * 4)
                            }
                        };
                        let k = kv_key(place);
                        let v = value(&k);
                        rows.push((k, v));
                    }
                    disorder(&mut rows, how);
                    for (k, v) in &rows {
                        model.insert(k.clone(), v.clone());
                    }
                    let rows = rows.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
                    tree.extend_ordered(rows).expect("extend");
                }
                Step::RemoveOrdered(at, n, how) => {
                    // Even places start among the appended rows, odd ones anywhere.
                    let from = if at % 2 == 0 {
                        let appended = next_append - (1 << 40) + 1;
                        kv_key((1 << 40) + u64::from(at) % appended)
                    } else {
                        kv_key(u64::from(at) << 9)
                    };
                    let stride = 1 + usize::from(how % 5);
                    let mut keys: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                    for (i, (k, _)) in model
                        .range(from..)
                        .take_while(|(k, _)| k.starts_with(b"k/"))
                        .step_by(stride)
                        .take(usize::from(n))
                        .enumerate()
                    {
                        keys.push((k.clone(), vec![0]));
                        if i % 3 == 0 {
                            // A key that is not there, just after this one.
                            let mut absent = k.clone();
                            absent.push(0);
                            keys.push((absent, vec![0]));
                        }
                    }
                    disorder(&mut keys, how);
                    let keys: Vec<Vec<u8>> = keys.into_iter().map(|(k, _)| k).collect();
                    let mut want = 0u64;
                    for k in &keys {
                        if let Some(v) = model.remove(k) {
                            want += (k.len() + v.len()) as u64;
                        }
                    }
                    let got = tree.remove_ordered(&keys).expect("remove_ordered");
                    prop_assert_eq!(got, want, "bytes removed");
                }
                Step::Reopen => {
                    db.flush().expect("flush");
                    drop(tree);
                    drop(db);
                    db = open();
                    tree = db.open_tree("t").expect("tree");
                }
            }
        }
        check(&tree, &model);
        db.flush().expect("flush");
        drop(tree);
        drop(db);
        let db = open();
        check(&db.open_tree("t").expect("tree"), &model);
    }
}
