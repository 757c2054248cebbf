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

#[test]
fn garbled_database_is_refused_not_emptied() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, p) = (free_port(), free_port());
    let base = urls(c.port, p.port);
    let dir = tmp.path().join("d");
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend(["--data-dir", dir.to_str().unwrap()]);
    {
        let mut node = ChildGuard::spawn(
            "minietcd",
            Command::new(minietcd_bin())
                .args(&args)
                .stderr(std::process::Stdio::null()),
        );
        // A write answered means the data dir and its database are fully there.
        let etcdctl = crate::support::require_program("etcdctl");
        wait_until("a write to succeed", Duration::from_secs(20), || {
            Command::new(&etcdctl)
                .env("ETCDCTL_API", "3")
                .args([
                    &format!("--endpoints=127.0.0.1:{}", c.port),
                    "put",
                    "k",
                    "v",
                ])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| ())
        });
        node.stop(Duration::from_secs(10));
    }
    // Overwrite the start of sled's data file.
    let db_file = dir.join("db").join("db");
    let mut bytes = std::fs::read(&db_file).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&db_file, bytes).unwrap();
    let err = fails(tmp.path(), &args);
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
