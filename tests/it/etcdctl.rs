//! etcdctl 3.4 (Debian's etcd-client) against a minietcd node: the outputs etcd gives for
//! the same commands on a fresh store (revisions start at 1 on both).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::require_program;

struct Ctl {
    endpoints: String,
}

impl Ctl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(require_program("etcdctl"));
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn etcdctl");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("write stdin");
        drop(input);
        child.wait_with_output().expect("etcdctl output")
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs a command that must fail and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(!out.status.success(), "etcdctl {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_session() {
    let c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let ctl = Ctl {
        endpoints: c.endpoint(0),
    };
    assert_eq!(ctl.ok(&["put", "foo", "bar"]), "OK\n");
    assert_eq!(ctl.ok(&["put", "foo2", "baz"]), "OK\n");
    assert_eq!(ctl.ok(&["put", "foo", "bar2"]), "OK\n");
    assert_eq!(
        ctl.ok(&["get", "foo", "--prefix"]),
        "foo\nbar2\nfoo2\nbaz\n"
    );
    assert_eq!(ctl.ok(&["get", "foo", "--rev=2"]), "foo\nbar\n");
    assert_eq!(
        ctl.ok(&[
            "get",
            "foo",
            "--prefix",
            "--sort-by=VALUE",
            "--order=DESCEND"
        ]),
        "foo2\nbaz\nfoo\nbar2\n"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["get", "foo", "--prefix", "--limit=1", "-w", "json"]))
            .expect("json output");
    assert_eq!(json["header"]["revision"], 4);
    assert!(json["header"]["cluster_id"].as_u64().unwrap() != 0);
    assert!(json["header"]["member_id"].as_u64().unwrap() != 0);
    assert!(json["header"]["raft_term"].as_u64().unwrap() >= 1);
    assert_eq!(json["more"], true);
    assert_eq!(json["count"], 2);
    assert_eq!(
        json["kvs"],
        serde_json::json!([{"key":"Zm9v","create_revision":2,"mod_revision":4,"version":2,"value":"YmFyMg=="}])
    );

    assert_eq!(ctl.ok(&["del", "foo2", "--prev-kv"]), "1\nfoo2\nbaz\n");

    let txn = "value(\"foo\") = \"bar2\"\n\nput foo txn1\nget foo\n\nput foo nope\n\n";
    assert_eq!(
        ctl.ok_with(&["txn"], Some(txn)),
        "SUCCESS\n\nOK\n\nfoo\ntxn1\n"
    );
    let txn = "mod(\"foo\") > \"0\"\n\nput foo t2\n\n\n";
    assert_eq!(
        ctl.ok_with(&["txn", "-i"], Some(txn)),
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n"
    );
    let txn = "value(\"foo\") = \"zzz\"\n\nput foo never\n\nget foo\n\n";
    let json: serde_json::Value =
        serde_json::from_str(&ctl.ok_with(&["txn", "-w", "json"], Some(txn))).expect("json");
    assert_eq!(json["header"]["revision"], 7);
    assert_eq!(
        json["succeeded"],
        serde_json::Value::Null,
        "false is omitted, as etcd does"
    );
    assert_eq!(
        json["responses"][0]["Response"]["ResponseRange"]["kvs"][0]["value"],
        "dDI="
    );

    assert_eq!(ctl.ok(&["compaction", "3"]), "compacted revision 3\n");
    let err = ctl.fails(&["compaction", "3"]);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    let err = ctl.fails(&["get", "foo", "--rev=2"]);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    assert_eq!(ctl.ok(&["get", "foo"]), "foo\nt2\n");
    assert_eq!(ctl.ok(&["get", "foo", "--rev=3"]), "foo\nbar\n");
}
