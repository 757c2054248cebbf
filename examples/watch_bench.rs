//! Watch benchmarks, minietcd's watch layer against etcd 3.4 in the same run:
//! - event latency p50/p99 from put acknowledgement to event arrival with N watchers on one
//!   key (spread over streams, as etcd's `benchmark watch-latency`);
//! - watchers created per second;
//! - memory per idle watcher at M watchers on distinct keys: minietcd's server-side watch
//!   structures counted by a counting allocator; etcd's process RSS growth.
//!
//! minietcd runs in process (sled store + watch layer + a Watch-only gRPC server, writes
//! applied directly as the state machine does, so no Raft round trip in the put); etcd is
//! started from `--etcd-bin` on loopback ports with a temp data dir and killed at the end.
//!
//! `cargo run --release --example watch_bench -- [--watchers 10000] [--streams 100]
//!  [--puts 200] [--idle 100000] [--etcd-bin /usr/bin/etcd]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::Client;
use minietcd::pb::etcdserverpb::{
    watch_server::WatchServer, PutRequest, ResponseHeader, WatchCreateRequest,
};
use minietcd::pb::minietcdpb::{internal_request::Request, InternalRequest};
use minietcd::raft::types::ApplyObserver;
use minietcd::server::watch::{WatchConfig, WatchService};
use minietcd::storage::MvccStore;
use minietcd::watch::stream::StreamWatchers;
use minietcd::watch::{MemoryHistory, WatchableStore, CHAN_BUF_LEN};
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

type PutFn = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = i64> + Send>> + Send + Sync>;

struct Args {
    watchers: usize,
    streams: usize,
    puts: usize,
    idle: usize,
    etcd_bin: String,
}

fn args() -> Args {
    let mut a = Args {
        watchers: 10_000,
        streams: 100,
        puts: 200,
        idle: 100_000,
        etcd_bin: "/usr/bin/etcd".into(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--watchers" => a.watchers = val.parse().unwrap(),
            "--streams" => a.streams = val.parse().unwrap(),
            "--puts" => a.puts = val.parse().unwrap(),
            "--idle" => a.idle = val.parse().unwrap(),
            "--etcd-bin" => a.etcd_bin = val,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

/// Creates `n` watchers on `key` over `streams` streams; returns (creation time, streams).
async fn create_watchers(
    client: &Client,
    key: &str,
    n: usize,
    streams: usize,
) -> (Duration, Vec<etcd_client::WatchStream>) {
    let started = Instant::now();
    let per = n / streams;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut c = client.clone();
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let mut s = c.watch(key.clone(), None).await.unwrap();
            for _ in 1..per {
                s.watch(key.clone(), None).await.unwrap();
            }
            let mut created = 0;
            while created < per {
                let r = s.message().await.unwrap().unwrap();
                if r.created() {
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

/// Event latency over every (put, watcher) pair: (p50, p99) from the put's acknowledgement,
/// (p50, p99) from the put's issue, and the watcher creation rate.
async fn latency(client: &Client, put: PutFn, a: &Args, key: &str) -> ([Duration; 4], f64) {
    let (took, streams) = create_watchers(client, key, a.watchers, a.streams).await;
    let rate = a.watchers as f64 / took.as_secs_f64();
    let acks: Arc<Mutex<HashMap<i64, (Instant, Instant)>>> = Arc::new(Mutex::new(HashMap::new()));
    let arrivals: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let expected = a.puts * (a.watchers / a.streams) * a.streams;
    let mut readers = Vec::new();
    for mut s in streams {
        let arrivals = arrivals.clone();
        let per_stream = a.puts * (a.watchers / a.streams);
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            let mut local = Vec::with_capacity(per_stream);
            while seen < per_stream {
                let r = s.message().await.unwrap().unwrap();
                let now = Instant::now();
                for e in r.events() {
                    local.push((e.kv().unwrap().mod_revision(), now));
                    seen += 1;
                }
            }
            arrivals.lock().unwrap().extend(local);
        }));
    }
    for i in 0..a.puts {
        let issued = Instant::now();
        let rev = put(format!("v{i}")).await;
        acks.lock().unwrap().insert(rev, (issued, Instant::now()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for r in readers {
        r.await.unwrap();
    }
    let acks = acks.lock().unwrap();
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), expected);
    let mut lat: Vec<Duration> = arrivals
        .iter()
        .map(|(rev, at)| at.saturating_duration_since(acks[rev].1))
        .collect();
    lat.sort();
    let mut from_issue: Vec<Duration> = arrivals
        .iter()
        .map(|(rev, at)| at.saturating_duration_since(acks[rev].0))
        .collect();
    from_issue.sort();
    (
        [
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&from_issue, 0.5),
            pct(&from_issue, 0.99),
        ],
        rate,
    )
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

struct Etcd(Child, #[allow(dead_code)] tempfile::TempDir);
impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let a = args();

    // minietcd, in process.
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
    let ep = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WatchServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let put: PutFn = {
        let (store, ws) = (store.clone(), ws.clone());
        Arc::new(move |v: String| {
            let (store, ws) = (store.clone(), ws.clone());
            Box::pin(async move {
                let req = InternalRequest {
                    request: Some(Request::Put(PutRequest {
                        key: b"bench/k".to_vec(),
                        value: v.into_bytes(),
                        ..Default::default()
                    })),
                };
                let out = store.apply(&req, b"").unwrap();
                ws.notify(out.revision, &out.events);
                out.revision
            })
        })
    };
    let client = Client::connect([ep.as_str()], None).await.unwrap();
    let (l, rate) = latency(&client, put, &a, "bench/k").await;
    println!("minietcd  watchers={} streams={} puts={}: from ack p50={:?} p99={:?}; from issue p50={:?} p99={:?}; created {:.0} watchers/s", a.watchers, a.streams, a.puts, l[0], l[1], l[2], l[3], rate);

    // Idle watchers: server-side watch structures only.
    let idle_store = WatchableStore::new(Arc::new(MemoryHistory::new()));
    let before = LIVE.load(Ordering::SeqCst);
    let mut streams = Vec::new();
    let mut rxs = Vec::new();
    for s in 0..a.idle / 100 {
        let (tx, rx) = tokio::sync::mpsc::channel(CHAN_BUF_LEN);
        let mut sw = StreamWatchers::new(idle_store.clone(), tx);
        for i in 0..100 {
            sw.create(WatchCreateRequest {
                key: format!("idle/{s}/{i}").into_bytes(),
                ..Default::default()
            });
        }
        streams.push(sw);
        rxs.push(rx);
    }
    let after = LIVE.load(Ordering::SeqCst);
    println!("minietcd  idle watchers={}: {} bytes per watcher (heap of watch structures, 100 per stream)", a.idle, (after - before) as usize / a.idle);
    drop(streams);

    // etcd 3.4, same machine, same run.
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
    let etcd = Etcd(child, edir);
    let eep = format!("http://127.0.0.1:{cport}");
    let eclient = loop {
        if let Ok(mut c) = Client::connect([eep.as_str()], None).await {
            if c.status().await.is_ok() {
                break c;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let eput: PutFn = {
        let c = eclient.clone();
        Arc::new(move |v: String| {
            let mut c = c.clone();
            Box::pin(async move {
                c.put("bench/k", v, None)
                    .await
                    .unwrap()
                    .header()
                    .unwrap()
                    .revision()
            })
        })
    };
    let (l, rate) = latency(&eclient, eput, &a, "bench/k").await;
    println!("etcd 3.4  watchers={} streams={} puts={}: from ack p50={:?} p99={:?}; from issue p50={:?} p99={:?}; created {:.0} watchers/s", a.watchers, a.streams, a.puts, l[0], l[1], l[2], l[3], rate);
    let pid = etcd.0.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(pid);
    let mut idle = Vec::new();
    for s in 0..a.idle / 100 {
        let mut c = eclient.clone();
        let mut st = c.watch(format!("idle/{s}/0"), None).await.unwrap();
        for i in 1..100 {
            st.watch(format!("idle/{s}/{i}"), None).await.unwrap();
        }
        idle.push(st);
    }
    for st in idle.iter_mut() {
        let mut created = 0;
        while created < 100 {
            if st.message().await.unwrap().unwrap().created() {
                created += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes(pid);
    println!(
        "etcd 3.4  idle watchers={}: {} bytes per watcher (process RSS growth, 100 per stream)",
        a.idle,
        after.saturating_sub(before) / a.idle
    );
    drop(etcd);
}
