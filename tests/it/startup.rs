//! Bad input at start-up: one clear line naming the problem and a non-zero exit, never a
//! panic, and nothing written to a data dir that is not ours.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::support::{free_port, minietcd_bin, wait_until, ChildGuard};

/// Runs minietcd with `args` (in `dir`), expects it to exit non-zero by itself, and returns
/// its stderr.
fn fails(dir: &std::path::Path, args: &[&str]) -> String {
    let out_path = dir.join("stderr.txt");
    let err = std::fs::File::create(&out_path).unwrap();
    let mut guard = ChildGuard::spawn(
        "minietcd",
        Command::new(minietcd_bin())
            .current_dir(dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(err),
    );
    let status = wait_until("minietcd to exit", Duration::from_secs(20), || {
        guard.try_wait()
    });
    assert!(!status.success(), "minietcd {args:?} should fail");
    let stderr = std::fs::read_to_string(&out_path).unwrap();
    assert!(!stderr.contains("panicked"), "panic on {args:?}: {stderr}");
    stderr
}

fn urls(client: u16, peer: u16) -> Vec<String> {
    vec![
        "--listen-client-urls".into(),
        format!("http://127.0.0.1:{client}"),
        "--advertise-client-urls".into(),
        format!("http://127.0.0.1:{client}"),
        "--listen-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
    ]
}

#[test]
fn bad_flags_and_urls_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, want) in [
        (
            vec!["--no-such-flag"],
            "unexpected argument '--no-such-flag'",
        ),
        (vec!["--heartbeat-interval", "abc"], "invalid value 'abc'"),
        (
            vec!["--listen-client-urls", "127.0.0.1:2379"],
            "--listen-client-urls",
        ),
        (
            vec!["--initial-cluster-state", "maybe"],
            "invalid value 'maybe'",
        ),
        (
            vec!["--initial-cluster", "x=http://127.0.0.1:1"],
            "does not name this member",
        ),
    ] {
        let err = fails(tmp.path(), &args);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("minietcd: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    assert!(
        std::fs::read_dir(tmp.path())
            .unwrap()
            .all(|e| e.unwrap().file_name() == "stderr.txt"),
        "no data dir is created for bad flags"
    );
}

#[test]
fn port_in_use_is_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, p) = (free_port(), free_port());
    let _taken = TcpListener::bind(("127.0.0.1", c.port)).unwrap();
    let args = urls(c.port, p.port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(tmp.path(), &args);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{}", c.port)),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn foreign_and_damaged_data_dirs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, p) = (free_port(), free_port());
    let base = urls(c.port, p.port);

    // A directory of something else: refused, left untouched.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend(["--data-dir", foreign.to_str().unwrap()]);
    let err = fails(tmp.path(), &args);
    assert!(err.contains("not a minietcd data dir"), "{err}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);

    // A data dir whose identity file is garbled.
    let damaged = tmp.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    std::fs::write(damaged.join("member.json"), "{garbage").unwrap();
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend(["--data-dir", damaged.to_str().unwrap()]);
    let err = fails(tmp.path(), &args);
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // A real data dir started under another name.
    let real = tmp.path().join("real");
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend(["--data-dir", real.to_str().unwrap()]);
    {
        let mut node = ChildGuard::spawn(
            "minietcd",
            Command::new(minietcd_bin())
                .args(&args)
                .stderr(std::process::Stdio::null()),
        );
        wait_until("member.json", Duration::from_secs(20), || {
            real.join("member.json").exists().then_some(())
        });
        // A second process on the same data dir while the first runs is refused.
        let (c2, p2) = (free_port(), free_port());
        let other = urls(c2.port, p2.port);
        let mut args2: Vec<&str> = other.iter().map(String::as_str).collect();
        args2.extend(["--data-dir", real.to_str().unwrap()]);
        let err = fails(tmp.path(), &args2);
        assert!(err.contains("in use by another minietcd process"), "{err}");
        node.stop(Duration::from_secs(10));
    }
    let init = format!("other=http://127.0.0.1:{}", p.port);
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend(["--data-dir", real.to_str().unwrap(), "--name", "other"]);
    args.extend(["--initial-cluster", &init]);
    let err = fails(tmp.path(), &args);
    assert!(err.contains("belongs to member \"default\""), "{err}");
}

/// The sled databases of a data dir: Raft's (`db/`) and the keys' (`mvcc/`).
const SLED_DIRS: [&str; 2] = ["db", "mvcc"];

/// Every file under `dir` (relative path -> bytes) outside its sled databases.
fn plain_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if SLED_DIRS.iter().any(|s| path.starts_with(dir.join(s))) {
                continue;
            }
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Every (tree, key, value) of the sled database in `dir` (sled rewrites its files whenever
/// it opens a database, so its contents are compared, not its bytes).
fn sled_contents(dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let db = sled::Config::new().path(dir).open().unwrap();
    let mut out = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        for row in tree.iter() {
            let (k, v) = row.unwrap();
            out.push((name.to_vec(), k.to_vec(), v.to_vec()));
        }
    }
    drop(db);
    crate::support::wait_sled_unlocked(dir);
    out
}

/// A member with one write, stopped; returns its start arguments.
fn member_with_a_write(dir: &std::path::Path, base: &[String]) -> Vec<String> {
    let mut args: Vec<String> = base.to_vec();
    args.extend(["--data-dir".to_string(), dir.display().to_string()]);
    let client = base[1].rsplit(':').next().unwrap().to_string();
    let mut node = ChildGuard::spawn(
        "minietcd",
        Command::new(minietcd_bin())
            .args(&args)
            .stderr(std::process::Stdio::null()),
    );
    // A write answered means the data dir and its databases are fully there.
    let etcdctl = crate::support::require_program("etcdctl");
    wait_until("a write to succeed", Duration::from_secs(20), || {
        Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .args([&format!("--endpoints=127.0.0.1:{client}"), "put", "k", "v"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| ())
    });
    node.stop(Duration::from_secs(10));
    args
}

/// A start on a data dir whose database file `which` (`db/db`: Raft's snapshot store,
/// `mvcc/db`: the keys) has its first 4 KiB overwritten is refused with one line, and leaves
/// every other file of the data dir exactly as it was (the log and the other database hold
/// what a repair needs).
fn garbled(which: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (c, p) = (free_port(), free_port());
    let base = urls(c.port, p.port);
    let dir = tmp.path().join("d");
    let args = member_with_a_write(&dir, &base);
    let db_file = dir.join(which);
    let mut bytes = std::fs::read(&db_file).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&db_file, bytes).unwrap();
    let garbled_db = db_file.parent().unwrap().to_path_buf();
    let other_db = SLED_DIRS
        .iter()
        .map(|d| dir.join(d))
        .find(|d| *d != garbled_db)
        .unwrap();
    let files = plain_files(&dir);
    assert!(
        files.keys().any(|f| f.starts_with("wal")),
        "{:?}",
        files.keys()
    );
    let rows = sled_contents(&other_db);
    assert!(!rows.is_empty());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(tmp.path(), &args);
    // One line says why (besides the startup log lines before it).
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("minietcd:")).collect();
    assert_eq!(errors.len(), 1, "{which}: {err}");
    assert!(errors[0].contains("damaged"), "{which}: {err}");
    assert_eq!(
        err.trim_end().lines().last(),
        Some(errors[0]),
        "{which}: {err}"
    );
    assert!(db_file.exists(), "{which} was removed");
    // The log, the identity and the other database are exactly as they were.
    let after = plain_files(&dir);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{which}: files of the data dir came or went"
    );
    for (name, bytes) in &files {
        assert!(after[name] == *bytes, "{which}: {name} changed");
    }
    assert!(
        sled_contents(&other_db) == rows,
        "{which}: the other database changed"
    );
}

#[test]
fn garbled_raft_database_is_refused_not_emptied() {
    garbled("db/db");
}

#[test]
fn garbled_key_database_is_refused_not_emptied() {
    garbled("mvcc/db");
}
