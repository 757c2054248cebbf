//! Reads that must not hold the store's lock longer than the index walk, and must not block
//! a caller that cannot wait.

use super::*;

fn compact(s: &MvccStore, rev: i64) {
    let out = apply(
        s,
        Request::Compaction(CompactionRequest {
            revision: rev,
            ..Default::default()
        }),
    );
    assert_eq!(out.response.error, 0, "{out:?}");
}

#[test]
fn a_range_whose_rows_a_compaction_removed_is_planned_again_and_answers_compacted() {
    let f = fixture();
    put(&f.store, "a", "1");
    put(&f.store, "a", "2");
    put(&f.store, "a", "3");
    let req = RangeRequest {
        key: b"a".to_vec(),
        revision: 2,
        ..Default::default()
    };
    // The plan is made before the compaction, its rows loaded after: the row of revision 2
    // is gone, so the plan cannot finish.
    let plan = {
        let st = f.store.read_state().unwrap();
        let e = f.store.engine().unwrap();
        let view = View::committed(&st, &e.tree);
        let plan = view.plan_range(&req, st.current, st.compacted).unwrap();
        drop(st);
        compact(&f.store, 4);
        plan.finish(|rev| backend::find_kv(&e.tree, rev)).unwrap()
    };
    assert!(plan.is_none(), "a removed row was loaded: {plan:?}");
    // The store's own range plans again under the lock and answers as etcd does.
    assert!(matches!(f.store.range(&req), Err(StorageError::Compacted)));
    // At the compaction revision the latest value is still there.
    let now = f.store.range(&RangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    });
    assert_eq!(now.unwrap().kvs[0].value, b"3");
}

#[test]
fn a_range_does_not_wait_for_its_rows_under_the_lock() {
    let f = fixture();
    for i in 0..100 {
        put(&f.store, &format!("k{i:03}"), "v");
    }
    // A plan holds no lock: a writer can take the lock between the walk and the loads.
    let req = RangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        ..Default::default()
    };
    let e = f.store.engine().unwrap();
    let plan = {
        let st = f.store.read_state().unwrap();
        View::committed(&st, &e.tree)
            .plan_range(&req, st.current, st.compacted)
            .unwrap()
    };
    let writer = f.store.write_state().unwrap();
    let resp = plan
        .finish(|rev| backend::find_kv(&e.tree, rev))
        .unwrap()
        .unwrap();
    drop(writer);
    assert_eq!(resp.kvs.len(), 100);
    assert_eq!(resp.count, 100);
}

#[test]
fn try_range_gives_way_to_a_writer() {
    let f = fixture();
    put(&f.store, "a", "1");
    let req = RangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    };
    let got = f.store.try_range(&req).expect("lock free").unwrap();
    assert_eq!(got.kvs[0].value, b"1");
    let writer = f.store.write_state().unwrap();
    assert!(
        f.store.try_range(&req).is_none(),
        "read while a writer holds the lock"
    );
    drop(writer);
    assert!(f.store.try_range(&req).is_some());
}
