//! Loopback TCP proxies between peers, one per member: each member advertises its proxy's
//! port as its peer URL (`--initial-advertise-peer-urls`, `--initial-cluster`) and listens on
//! its real peer port behind it. All members share one `--initial-cluster` (etcd derives
//! member and cluster ids from it, so every member must see the same one), so a proxy cannot
//! tell senders apart by the address they dial; it tells them apart by who owns the
//! connecting socket: the connection's source port is looked up in `/proc/net/tcp`, and its
//! socket inode among the open files of each member's process. That gives each accepted
//! connection a directed link (source member -> destination member), and every link can be
//! faulted on its own.
//!
//! A fault applies to connections *opened by* the source towards the destination, in both
//! byte directions (requests and the answers that come back on them): a member that dials
//! out for every message it sends (minietcd's gRPC channel, etcd's pipeline and streams)
//! then loses exactly the links the test names.
//!
//! Faults:
//! - `Blackhole`: bytes stop moving (kept, not dropped, like a TCP peer that has gone
//!   silent); new connections are accepted and held; everything resumes on heal;
//! - `Cut`: open connections are closed and new ones closed at once;
//! - `Delay(d)`: every chunk is forwarded `d` after it was read, in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What happens to one directed link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFault {
    Blackhole,
    Cut,
    Delay(Duration),
}

/// Directed link (source member, destination member) -> its fault; absent = healthy.
type Faults = HashMap<(usize, usize), LinkFault>;

/// Bytes read per chunk.
const CHUNK_BYTES: usize = 16 << 10;
/// Chunks queued per direction of a connection before reading stops (back-pressure).
const QUEUED_CHUNKS: usize = 64;

/// The proxies of one cluster; dropping it stops them and closes their connections.
pub struct PeerProxies {
    faults: watch::Sender<Faults>,
    /// Member index -> the pid of its current process (connections are attributed by it).
    pids: Arc<Mutex<Vec<Option<u32>>>>,
    /// Connections whose source could not be attributed to a member (closed at once).
    pub unattributed: Arc<AtomicUsize>,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl PeerProxies {
    /// One proxy per member: `routes[i] = (port member i's peers dial, member i's real peer
    /// port)`.
    pub async fn start(routes: &[(u16, u16)]) -> PeerProxies {
        let (faults, _) = watch::channel(Faults::new());
        let pids = Arc::new(Mutex::new(vec![None; routes.len()]));
        let unattributed = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for (dst, &(listen, upstream)) in routes.iter().enumerate() {
            let listener = TcpListener::bind(("127.0.0.1", listen))
                .await
                .unwrap_or_else(|e| panic!("proxy for member {dst} on port {listen}: {e}"));
            let ctx = Ctx {
                faults: faults.clone(),
                pids: pids.clone(),
                unattributed: unattributed.clone(),
                dst,
                listen,
                upstream,
            };
            let accepted = accepted.clone();
            tasks.push(tokio::spawn(async move {
                // Connection tasks are kept with the accept loop: aborting it drops them.
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((sock, from)) = r else { continue };
                            accepted.fetch_add(1, Ordering::Relaxed);
                            conns.spawn(ctx.clone().serve(sock, from.port()));
                        }
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
            }));
        }
        PeerProxies {
            faults,
            pids,
            unattributed,
            accepted,
            tasks,
        }
    }

    /// Tells the proxies which process member `i` runs as now.
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        self.pids.lock().unwrap()[i] = pid;
    }

    /// Faults the directed link `src -> dst` (`None` heals it).
    pub fn set(&self, src: usize, dst: usize, fault: Option<LinkFault>) {
        self.faults.send_modify(|f| {
            match fault {
                Some(x) => f.insert((src, dst), x),
                None => f.remove(&(src, dst)),
            };
        });
    }

    /// Faults both directions between `a` and `b`.
    pub fn set_pair(&self, a: usize, b: usize, fault: Option<LinkFault>) {
        self.set(a, b, fault);
        self.set(b, a, fault);
    }

    /// Separates the members into `groups`: every link between two groups gets `fault`.
    pub fn partition(&self, groups: &[&[usize]], fault: LinkFault) {
        for (gi, g) in groups.iter().enumerate() {
            for h in &groups[gi + 1..] {
                for &a in g.iter() {
                    for &b in h.iter() {
                        self.set_pair(a, b, Some(fault));
                    }
                }
            }
        }
    }

    /// Heals every link.
    pub fn heal(&self) {
        self.faults.send_modify(|f| f.clear());
    }

    /// Members, as many as there are proxies.
    pub fn len(&self) -> usize {
        self.pids.lock().unwrap().len()
    }
}

impl Drop for PeerProxies {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What one proxy's connections need.
#[derive(Clone)]
struct Ctx {
    faults: watch::Sender<Faults>,
    pids: Arc<Mutex<Vec<Option<u32>>>>,
    unattributed: Arc<AtomicUsize>,
    dst: usize,
    listen: u16,
    upstream: u16,
}

/// A connection's view of its link's fault.
#[derive(Clone)]
struct LinkView {
    rx: watch::Receiver<Faults>,
    link: Option<(usize, usize)>,
}

impl LinkView {
    fn now(&self) -> Option<LinkFault> {
        let link = self.link?;
        self.rx.borrow().get(&link).copied()
    }

    /// Waits while the link is blackholed; false once it is cut (or the proxy is gone).
    async fn wait_passable(&mut self) -> bool {
        loop {
            match self.now() {
                Some(LinkFault::Cut) => return false,
                Some(LinkFault::Blackhole) => {
                    if self.rx.changed().await.is_err() {
                        return false;
                    }
                }
                _ => return true,
            }
        }
    }

    /// Returns once the link is cut.
    async fn cut(&mut self) {
        loop {
            if self.now() == Some(LinkFault::Cut) {
                return;
            }
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn delay(&self) -> Duration {
        match self.now() {
            Some(LinkFault::Delay(d)) => d,
            _ => Duration::ZERO,
        }
    }
}

impl Ctx {
    async fn serve(self, inbound: TcpStream, from_port: u16) {
        let src = attribute(from_port, self.listen, self.pids.clone()).await;
        if src.is_none() {
            // Its owner is gone (a member killed while dialing) or unknown: closing it is
            // safe (the dialer retries) and never lets unfaulted traffic through.
            self.unattributed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut view = LinkView {
            rx: self.faults.subscribe(),
            link: src.map(|s| (s, self.dst)),
        };
        if !view.wait_passable().await {
            return;
        }
        let Ok(up) = TcpStream::connect(("127.0.0.1", self.upstream)).await else {
            return;
        };
        let _ = inbound.set_nodelay(true);
        let _ = up.set_nodelay(true);
        let (ri, wi) = inbound.into_split();
        let (ru, wu) = up.into_split();
        let mut cut = view.clone();
        tokio::select! {
            _ = async { tokio::join!(pump(ri, wu, view.clone()), pump(ru, wi, view.clone())) } => {}
            _ = cut.cut() => {}
        }
    }
}

/// Copies one direction, through a queue so that a delay keeps chunks in order without
/// slowing reads down.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, view: LinkView) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUED_CHUNKS);
    let reader_view = view.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = Instant::now() + reader_view.delay();
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let mut writer_view = view;
    let writer = async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if !writer_view.wait_passable().await {
                return;
            }
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Which member owns the socket connected from 127.0.0.1:`from_port` to our `listen` port.
async fn attribute(
    from_port: u16,
    listen: u16,
    pids: Arc<Mutex<Vec<Option<u32>>>>,
) -> Option<usize> {
    for _ in 0..5 {
        let pids: Vec<Option<u32>> = pids.lock().unwrap().clone();
        let found = tokio::task::spawn_blocking(move || {
            let inode = socket_inode(from_port, listen)?;
            pids.iter()
                .position(|p| p.is_some_and(|p| process_has_socket(p, inode)))
        })
        .await
        .ok()
        .flatten();
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The inode of the IPv4 socket 127.0.0.1:`local` -> 127.0.0.1:`remote`.
fn socket_inode(local: u16, remote: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want_local = format!("0100007F:{local:04X}");
    let want_remote = format!("0100007F:{remote:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// Whether process `pid` has socket `inode` open.
fn process_has_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::free_port;

    /// An echo server on `port`.
    async fn echo(port: u16) -> JoinHandle<()> {
        let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        })
    }

    /// Sends `msg` and reads it back within `within`.
    async fn round_trip(s: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxy_blackholes_delays_and_cuts_one_link() {
        let (up, listen) = (free_port(), free_port());
        let _echo = echo(up.port).await;
        let p = PeerProxies::start(&[(listen.port, up.port)]).await;
        // This test process plays member 0 dialing member 0's proxy: link (0, 0).
        p.set_pid(0, Some(std::process::id()));
        let mut s = TcpStream::connect(("127.0.0.1", listen.port))
            .await
            .unwrap();
        let second = Duration::from_secs(2);
        assert_eq!(
            round_trip(&mut s, b"a", second).await.as_deref(),
            Some(&b"a"[..])
        );

        p.set(0, 0, Some(LinkFault::Blackhole));
        assert_eq!(
            round_trip(&mut s, b"b", Duration::from_millis(300)).await,
            None
        );
        p.set(0, 0, None);
        let mut buf = [0u8; 1];
        tokio::time::timeout(second, s.read_exact(&mut buf))
            .await
            .expect("held bytes delivered on heal")
            .unwrap();
        assert_eq!(&buf, b"b");

        p.set(0, 0, Some(LinkFault::Delay(Duration::from_millis(150))));
        let t = Instant::now();
        assert!(round_trip(&mut s, b"c", second).await.is_some());
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "delayed both ways: {:?}",
            t.elapsed()
        );

        p.set(0, 0, Some(LinkFault::Cut));
        let closed = tokio::time::timeout(second, s.read(&mut buf))
            .await
            .expect("closed");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        let mut s2 = TcpStream::connect(("127.0.0.1", listen.port))
            .await
            .unwrap();
        assert_eq!(
            round_trip(&mut s2, b"d", Duration::from_millis(500)).await,
            None
        );
        p.heal();
        let mut s3 = TcpStream::connect(("127.0.0.1", listen.port))
            .await
            .unwrap();
        assert!(round_trip(&mut s3, b"e", second).await.is_some());

        // A connection no member owns is closed, never forwarded unfaulted.
        p.set_pid(0, None);
        let mut s4 = TcpStream::connect(("127.0.0.1", listen.port))
            .await
            .unwrap();
        assert_eq!(round_trip(&mut s4, b"f", second).await, None);
        assert!(p.unattributed.load(Ordering::Relaxed) >= 1);
    }
}
