//! Watch benchmarks, minietcd's watch layer against etcd 3.4 on the same machine in the
//! same run:
//! - event latency p50/p99 with N watchers on one key spread over streams (as etcd's
//!   `benchmark watch-latency`), measured from the put's acknowledgement and from its issue;
//! - watchers created per second;
//! - memory per idle watcher at M watchers on distinct keys (server RSS growth; for
//!   minietcd also the heap of the watch structures alone, from a counting allocator);
//! - the cost of notify() on the apply path with M idle watchers.
//!
//! minietcd's side is this binary re-run with `--serve` as a separate process: a Watch-only
//! gRPC server over a sled store whose writes are applied as the state machine does (no Raft
//! round trip); etcd is started from `--etcd-bin` on loopback ports with a temp data dir
//! (single member, so its put includes Raft and fsync). Both are killed at the end.
//!
//! `cargo run --release --example watch_bench -- [--watchers 10000] [--streams 100]
//!  [--puts 200] [--put-interval-ms 50] [--idle 100000] [--etcd-bin /usr/bin/etcd]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::Client;
use minietcd::pb::etcdserverpb::{
    watch_server::WatchServer, PutRequest, ResponseHeader, WatchCreateRequest,
};
use minietcd::pb::minietcdpb::{internal_request::Request, InternalRequest};
use minietcd::pb::mvccpb::{Event, KeyValue};
use minietcd::raft::types::ApplyObserver;
use minietcd::server::watch::{WatchConfig, WatchService};
use minietcd::storage::MvccStore;
use minietcd::watch::stream::StreamWatchers;
use minietcd::watch::{MemoryHistory, WatchableStore, CHAN_BUF_LEN};
use tokio::io::AsyncBufReadExt;
use tokio_stream::wrappers::TcpListenerStream;

/// Live heap bytes, for the idle-watcher measurement.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Args {
    watchers: usize,
    streams: usize,
    puts: usize,
    put_interval_ms: u64,
    idle: usize,
    etcd_bin: String,
}

fn args() -> (Option<String>, Args) {
    let mut a = Args {
        watchers: 10_000,
        streams: 100,
        puts: 200,
        put_interval_ms: 50,
        idle: 100_000,
        etcd_bin: "/usr/bin/etcd".into(),
    };
    let mut v: Vec<String> = std::env::args().skip(1).collect();
    let mode = (v.first().map(String::as_str) == Some("--serve")).then(|| v.remove(0));
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--watchers" => a.watchers = val.parse().unwrap(),
            "--streams" => a.streams = val.parse().unwrap(),
            "--puts" => a.puts = val.parse().unwrap(),
            "--put-interval-ms" => a.put_interval_ms = val.parse().unwrap(),
            "--idle" => a.idle = val.parse().unwrap(),
            "--etcd-bin" => a.etcd_bin = val,
            other => panic!("unknown flag {other}"),
        }
    }
    (mode, a)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

fn pct(sorted: &[i128], p: f64) -> Duration {
    let v = sorted[((sorted.len() as f64 - 1.0) * p) as usize];
    Duration::from_nanos(v.max(0) as u64)
}

/// The server side of minietcd in its own process: a Watch-only server over a sled store.
/// Prints its endpoint, then on each stdin line "put N MS" performs N puts of bench/k every
/// MS milliseconds (applied as the state machine does) and prints "rev issued_ns acked_ns".
async fn serve() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let store = Arc::new(MvccStore::open(&db).unwrap());
    let ws = WatchableStore::new(store.clone());
    let _loops = ws.start();
    let (_leader, leader_rx) = tokio::sync::watch::channel(Some(1));
    let header = |rev: i64| ResponseHeader {
        revision: rev,
        ..Default::default()
    };
    let service = WatchService::new(
        ws.clone(),
        Arc::new(header),
        leader_rx,
        WatchConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WatchServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        let mut tick = tokio::time::interval(Duration::from_millis(parts[1]));
        for i in 0..parts[0] {
            tick.tick().await;
            let issued = now_ns();
            let (store, ws) = (store.clone(), ws.clone());
            let rev = tokio::task::spawn_blocking(move || {
                let req = InternalRequest {
                    caller: None,
                    request: Some(Request::Put(PutRequest {
                        key: b"bench/k".to_vec(),
                        value: format!("v{i}").into_bytes(),
                        ..Default::default()
                    })),
                };
                let out = store.apply(&req, b"").unwrap();
                ws.notify(out.revision, &out.events);
                out.revision
            })
            .await
            .unwrap();
            println!("{rev} {issued} {}", now_ns());
        }
        println!("done");
    }
}

/// Creates `n` watchers on `key` over `streams` streams spread over 10 connections.
async fn create_watchers(
    clients: &[Client],
    key: &str,
    n: usize,
    streams: usize,
) -> (Duration, Vec<etcd_client::WatchStream>) {
    let started = Instant::now();
    let per = n / streams;
    let mut tasks = Vec::new();
    for i in 0..streams {
        let mut c = clients[i % clients.len()].clone();
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let mut s = c.watch(key.clone(), None).await.unwrap();
            for _ in 1..per {
                s.watch(key.clone(), None).await.unwrap();
            }
            let mut created = 0;
            while created < per {
                if s.message().await.unwrap().unwrap().created() {
                    created += 1;
                }
            }
            s
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    (started.elapsed(), out)
}

/// Reads every event of `puts` puts on every stream; returns (mod_revision, arrival ns).
fn spawn_readers(
    streams: Vec<etcd_client::WatchStream>,
    per_stream: usize,
) -> Vec<tokio::task::JoinHandle<Vec<(i64, i128)>>> {
    streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut local = Vec::with_capacity(per_stream);
                while local.len() < per_stream {
                    let r = s.message().await.unwrap().unwrap();
                    let now = now_ns();
                    for e in r.events() {
                        local.push((e.kv().unwrap().mod_revision(), now));
                    }
                }
                local
            })
        })
        .collect()
}

fn report(
    name: &str,
    a: &Args,
    acks: &HashMap<i64, (i128, i128)>,
    arrivals: Vec<(i64, i128)>,
    rate: f64,
) {
    let mut from_ack: Vec<i128> = arrivals.iter().map(|(r, at)| at - acks[r].1).collect();
    let mut from_issue: Vec<i128> = arrivals.iter().map(|(r, at)| at - acks[r].0).collect();
    from_ack.sort();
    from_issue.sort();
    println!(
        "{name}: watchers={} streams={} puts={} every {} ms: event latency from put ack p50={:?} p99={:?}, from put issue p50={:?} p99={:?}; {:.0} watchers created/s",
        a.watchers, a.streams, a.puts, a.put_interval_ms,
        pct(&from_ack, 0.5), pct(&from_ack, 0.99), pct(&from_issue, 0.5), pct(&from_issue, 0.99), rate
    );
}

async fn connect(ep: &str, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Client::connect([ep], None).await.unwrap());
    }
    out
}

/// RSS growth of `pid` per watcher after `n` idle watchers on distinct keys, 100 per stream.
async fn idle_rss(
    clients: &[Client],
    pid: u32,
    n: usize,
) -> (usize, Vec<etcd_client::WatchStream>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(pid);
    let mut idle = Vec::new();
    for s in 0..n / 100 {
        let mut c = clients[s % clients.len()].clone();
        let mut st = c.watch(format!("idle/{s}/0"), None).await.unwrap();
        for i in 1..100 {
            st.watch(format!("idle/{s}/{i}"), None).await.unwrap();
        }
        let mut created = 0;
        while created < 100 {
            if st.message().await.unwrap().unwrap().created() {
                created += 1;
            }
        }
        idle.push(st);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes(pid);
    (after.saturating_sub(before) / n, idle)
}

fn rss_bytes(pid: u32) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Proc(Child, #[allow(dead_code)] Option<tempfile::TempDir>);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn bench_minietcd(a: &Args) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let proc_ = Proc(child, None);
    let mut ep = String::new();
    out.read_line(&mut ep).unwrap();
    let ep = ep.trim().to_string();
    let clients = connect(&ep, 10).await;
    let (took, streams) = create_watchers(&clients, "bench/k", a.watchers, a.streams).await;
    let rate = a.watchers as f64 / took.as_secs_f64();
    let readers = spawn_readers(streams, a.puts * (a.watchers / a.streams));
    writeln!(stdin, "put {} {}", a.puts, a.put_interval_ms).unwrap();
    let acks = tokio::task::spawn_blocking(move || {
        let mut acks = HashMap::new();
        loop {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            if line.trim() == "done" || line.is_empty() {
                return acks;
            }
            let v: Vec<i128> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            acks.insert(v[0] as i64, (v[1], v[2]));
        }
    })
    .await
    .unwrap();
    let mut arrivals = Vec::new();
    for r in readers {
        arrivals.extend(r.await.unwrap());
    }
    report("minietcd", a, &acks, arrivals, rate);
    let (per, _idle) = idle_rss(&clients, proc_.0.id(), a.idle).await;
    println!(
        "minietcd: {} idle watchers: {per} bytes of server RSS per watcher",
        a.idle
    );

    // The watch structures alone, counted by the allocator (no gRPC buffers).
    let idle_store = WatchableStore::new(Arc::new(MemoryHistory::new()));
    let before = LIVE.load(Ordering::SeqCst);
    let mut streams = Vec::new();
    for s in 0..a.idle / 100 {
        let (tx, rx) = tokio::sync::mpsc::channel::<minietcd::watch::Delivery>(CHAN_BUF_LEN);
        let mut sw = StreamWatchers::new(idle_store.clone(), tx);
        for i in 0..100 {
            sw.create(WatchCreateRequest {
                key: format!("idle/{s}/{i}").into_bytes(),
                ..Default::default()
            });
        }
        streams.push((sw, rx));
    }
    let after = LIVE.load(Ordering::SeqCst);
    println!(
        "minietcd: {} idle watchers: {} bytes of watch-structure heap per watcher",
        a.idle,
        (after - before) as usize / a.idle
    );
    // notify() with every watcher idle: one event matching nobody, one matching one watcher.
    let ev = |key: &str, rev: i64| Event {
        kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            mod_revision: rev,
            ..Default::default()
        }),
        ..Default::default()
    };
    const WRITES: i64 = 100_000;
    for (label, key) in [("no watcher", "other"), ("one watcher", "idle/7/7")] {
        let base = idle_store.rev();
        let started = Instant::now();
        for r in 1..=WRITES {
            idle_store.notify(base + r, &[ev(key, base + r)]);
            if r % 64 == 0 {
                for (_, rx) in streams.iter_mut() {
                    while rx.try_recv().is_ok() {}
                }
            }
        }
        println!(
            "minietcd: notify() with {} idle watchers, event matching {label}: {:?} per write",
            a.idle,
            started.elapsed() / WRITES as u32
        );
    }
}

async fn bench_etcd(a: &Args) {
    let cport = free_port();
    let pport = free_port();
    let edir = tempfile::tempdir().unwrap();
    let child = Command::new(&a.etcd_bin)
        .args(["--data-dir", edir.path().to_str().unwrap()])
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{cport}")])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{cport}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{pport}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{pport}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{pport}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let etcd = Proc(child, Some(edir));
    let ep = format!("http://127.0.0.1:{cport}");
    loop {
        if let Ok(mut c) = Client::connect([ep.as_str()], None).await {
            if c.status().await.is_ok() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clients = connect(&ep, 10).await;
    let (took, streams) = create_watchers(&clients, "bench/k", a.watchers, a.streams).await;
    let rate = a.watchers as f64 / took.as_secs_f64();
    let readers = spawn_readers(streams, a.puts * (a.watchers / a.streams));
    let mut kv = clients[0].clone();
    let mut acks = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(a.put_interval_ms));
    for i in 0..a.puts {
        tick.tick().await;
        let issued = now_ns();
        let rev = kv
            .put("bench/k", format!("v{i}"), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        acks.insert(rev, (issued, now_ns()));
    }
    let mut arrivals = Vec::new();
    for r in readers {
        arrivals.extend(r.await.unwrap());
    }
    report("etcd 3.4", a, &acks, arrivals, rate);
    let (per, _idle) = idle_rss(&clients, etcd.0.id(), a.idle).await;
    println!(
        "etcd 3.4: {} idle watchers: {per} bytes of server RSS per watcher",
        a.idle
    );
}

#[tokio::main]
async fn main() {
    let (mode, a) = args();
    if mode.is_some() {
        serve().await;
        return;
    }
    bench_minietcd(&a).await;
    bench_etcd(&a).await;
}
