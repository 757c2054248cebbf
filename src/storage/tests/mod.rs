//! Unit tests of the store. Behaviours marked "etcd 3.4" were checked against a real etcd
//! 3.4.23 with etcdctl and its JSON gateway.

mod auth;
mod compaction;
mod defrag;
mod groups;
mod install;
mod kv;
mod lifecycle;
mod reads;
mod sled_appends;
mod snapshot_file;
mod txn;

use super::*;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResp;
use crate::pb::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RequestOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;

pub(super) struct Fixture {
    pub dir: tempfile::TempDir,
    pub db: sled::Db,
    pub store: MvccStore,
}

/// Opens sled, polling while a dropped Db of the same directory still holds its lock (sled's
/// I/O threads release it a moment after the drop).
fn open_db(path: &std::path::Path) -> sled::Db {
    const ATTEMPTS: usize = 500;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match sled::Config::new().path(path).open() {
            Ok(db) => return db,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("sled did not reopen: {last:?}");
}

/// Runs the test `test` of this binary again as a child process, with `env` set (the child
/// side of a crash test: it prints "installing" and then installs until killed), waits until
/// it says "installing", lets it run a while longer that depends on `attempt`, and kills it
/// (SIGKILL).
pub(super) fn kill_child_while_installing(
    test: &str,
    env: [(&str, &std::path::Path); 2],
    attempt: u64,
) {
    kill_child_when(test, &env, "installing", attempt);
}

/// [`kill_child_while_installing`] for a child that prints `ready` once it is at work.
pub(super) fn kill_child_when(
    test: &str,
    env: &[(&str, &std::path::Path)],
    ready: &str,
    attempt: u64,
) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(ready) {
        line.clear();
        if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(5 + attempt * 37 % 200));
    child.kill().unwrap();
    child.wait().unwrap();
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let store = MvccStore::open(&db).unwrap();
    Fixture { dir, db, store }
}

impl Fixture {
    /// Drops the store and the db and opens both again from the same directory.
    pub fn restart(self) -> Fixture {
        let Fixture { dir, db, store } = self;
        drop(store);
        db.flush().unwrap();
        drop(db);
        let db = open_db(dir.path());
        let store = MvccStore::open(&db).unwrap();
        Fixture { dir, db, store }
    }
}

fn apply(s: &MvccStore, r: Request) -> ApplyOutcome {
    s.apply(
        &InternalRequest {
            caller: None,
            request: Some(r),
        },
        b"applied",
    )
    .unwrap()
}

fn put(s: &MvccStore, k: &str, v: &str) -> ApplyOutcome {
    apply(
        s,
        Request::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }),
    )
}

fn put_lease(s: &MvccStore, k: &str, v: &str, lease: i64) -> ApplyOutcome {
    apply(
        s,
        Request::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            lease,
            ..Default::default()
        }),
    )
}

fn del(s: &MvccStore, k: &str, end: &str) -> ApplyOutcome {
    apply(
        s,
        Request::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: true,
        }),
    )
}

fn txn(s: &MvccStore, t: TxnRequest) -> (ApplyOutcome, Option<TxnResponse>) {
    let out = apply(s, Request::Txn(t));
    let resp = match &out.response.response {
        Some(Response::Txn(t)) => Some(t.clone()),
        _ => None,
    };
    (out, resp)
}

fn get(s: &MvccStore, k: &str, rev: i64) -> Result<Option<KeyValue>, StorageError> {
    let r = s.range(&RangeRequest {
        key: k.into(),
        revision: rev,
        ..Default::default()
    })?;
    Ok(r.kvs.into_iter().next())
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn range(s: &MvccStore, k: &str, end: &str) -> RangeResponse {
    s.range(&RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    })
    .unwrap()
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(u),
    }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

fn op_get(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: k.into(),
            ..Default::default()
        })),
    }
}
