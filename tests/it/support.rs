//! What every integration test shares: ports that parallel tests never both take, temp dirs,
//! child processes killed by pid when the guard drops (also when a test panics), polling.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 reserved for this test process: a lock file under the temp dir is
/// held with `flock` for as long as the `Port` lives, so that another test process (cargo and
/// nextest both run tests in parallel) never picks it. The range sits below Linux's
/// ephemeral range so outgoing connections never take it either.
pub struct Port {
    pub port: u16,
    _lock: File,
}

const PORT_RANGE: std::ops::Range<u16> = 12000..32000;

/// Reserves a free port.
pub fn free_port() -> Port {
    let dir = std::env::temp_dir().join("minietcd-test-ports");
    std::fs::create_dir_all(&dir).expect("create port lock dir");
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..10_000 {
        let port = PORT_RANGE.start + (rand_u32() % span) as u16;
        if matches!(port, 22379 | 22380 | 32379 | 32380) {
            continue;
        }
        let path = dir.join(format!("{port}.lock"));
        let Ok(file) = OpenOptions::new().create(true).append(true).open(&path) else {
            continue;
        };
        // SAFETY: flock on a descriptor we own; the lock is released when `file` closes.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Port { port, _lock: file };
        }
    }
    panic!("no free port found in {PORT_RANGE:?}");
}

fn rand_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// A child process that is killed (SIGKILL, by pid) and reaped when dropped.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name}: {e}"));
        ChildGuard {
            child: Some(child),
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        self.terminate(grace);
    }

    /// SIGTERM, then wait up to `grace`: the exit status if the process ended by itself in
    /// time, `None` if it had to be killed (or was not running).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: signalling a child we spawned and have not reaped yet.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Whether the process has exited (and with what status).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async twin of [`wait_until`].
pub async fn wait_until_async<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// The path of an external program; panics when missing under CI (CI=true), otherwise too:
/// the test command installs it (scripts/test.sh), so a missing one is a set-up error.
pub fn require_program(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    for p in [format!("/usr/bin/{name}"), format!("/usr/local/bin/{name}")] {
        let p = PathBuf::from(p);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run scripts/test.sh, which installs it (apt-get install -y etcd-server etcd-client)");
}

/// The built `minietcd` binary of this workspace (cargo builds it for integration tests).
pub fn minietcd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_minietcd"))
}

/// A binary of another crate of this workspace (`minietcdctl`, `minietcd-bench`). Cargo
/// builds only this package's binaries for its tests, so the others are expected next to
/// `minietcd`, built by `cargo build --workspace --bins` (scripts/test.sh does that first). A
/// missing one fails the test: it is never a reason to skip.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = minietcd_bin()
        .parent()
        .expect("the minietcd binary is in a directory")
        .to_path_buf();
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace's binaries first (`cargo build --workspace --bins`, \
         as scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Waits until no process holds the lock of the sled database in `dir` (sled's threads let go
/// of it a moment after the database is dropped), so that a member started next finds it free.
pub fn wait_sled_unlocked(dir: &std::path::Path) {
    let file = File::open(dir.join("db")).expect("open sled's db file");
    wait_until("sled to release its lock", Duration::from_secs(10), || {
        // SAFETY: flock on a descriptor we own; closing `file` releases the lock.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        (rc == 0).then_some(())
    });
}

/// Runs `cmd` to completion with `stdin` written to it (none when empty), stdout and stderr
/// captured, and kills it by pid once `limit` has passed (its output then ends there).
pub fn output_within(cmd: &mut Command, stdin: &str, limit: Duration) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    cmd.stdin(if stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn a tool");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if wait.recv_timeout(limit).is_err() {
            // SAFETY: signalling the child we started, by its pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("a tool's output");
    let _ = done.send(());
    out
}
