//! The clients and watchers of a run, recording into a [`History`].
//!
//! Clients (`etcd-client`, each on one member) issue random operations on a few keys: puts
//! with unique values, linearizable and serializable gets, deletes, txn compare-and-swaps on
//! the last value the client saw, txns putting two keys at once, and leases: a client grants
//! one (with an id of its own, TTL [`LEASE_TTL`]), puts its own lease key with it attached,
//! and at its next lease step revokes it or leaves it to expire; a third of the reads go to
//! the lease keys. A lease's expiry is recorded as an unknown revoke
//! invoked at the grant plus the TTL, so the checkers reject a lease that expired early. A write that errs or times out is
//! recorded as unknown; a read that fails is dropped (it changed nothing).
//!
//! Watchers: four per member on the whole key prefix from revision 1: one with prev_kv, one
//! with require-leader, one with the NODELETE filter and one with the NOPUT filter, both
//! with progress notifications. A watch that breaks is re-created on the same member from
//! the revision after the last event it saw, as a new session.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseGrantOptions, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::robust::history::{
    lease_suffix, Event, History, Input, Kv, Op, Output, WatchResponse, WatchSession,
};

/// Every key the workload touches starts with this.
pub const PREFIX: &str = "rb/";
/// The key of the final write every watcher must reach.
pub const SENTINEL: &str = "rb/~end";

/// TTL of the workload's leases: short, so that some expire during a run.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// Pause after an operation that failed or timed out, before the client reconnects.
pub const FAILED_OP_BACKOFF: Duration = Duration::from_millis(200);

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub clients: usize,
    pub keys: usize,
    /// Client-side bound of one operation; beyond it a write is unknown.
    pub op_timeout: Duration,
    pub seed: u64,
}

impl Default for WorkloadConfig {
    /// The suite's workload; `ROBUST_SEED` picks another seed (the default is 1).
    fn default() -> Self {
        let seed = std::env::var("ROBUST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        WorkloadConfig {
            clients: 6,
            keys: 5,
            op_timeout: Duration::from_secs(2),
            seed,
        }
    }
}

/// Ops on a member that was removed and added back are recorded as on member
/// `member + INCARNATION_STRIDE * n` after its `n`-th re-add: a new member with an empty
/// store, whose serializable reads start over.
pub const INCARNATION_STRIDE: usize = 1000;

/// Shared by everything that records.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    sessions: Mutex<Vec<(usize, WatchSession)>>,
    /// Member -> how many times it was removed and added back.
    incarnations: Mutex<std::collections::HashMap<usize, usize>>,
    /// Ids of multi-key txns.
    next_txn: std::sync::atomic::AtomicU64,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            ops: Mutex::default(),
            sessions: Mutex::default(),
            incarnations: Mutex::default(),
            next_txn: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Member `member` was removed and is about to be added back, empty.
    pub fn new_incarnation(&self, member: usize) {
        *self.incarnations.lock().unwrap().entry(member).or_default() += 1;
    }

    /// What ops on `member` are recorded as, now.
    fn member_now(&self, member: usize) -> usize {
        let n = self
            .incarnations
            .lock()
            .unwrap()
            .get(&member)
            .copied()
            .unwrap_or(0);
        member + INCARNATION_STRIDE * n
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Runs `f` as one recorded op: `f` returns the output, or `None` for a failed read.
    pub async fn record<F>(
        &self,
        client: usize,
        member: usize,
        key: &str,
        input: Input,
        timeout: Duration,
        f: F,
    ) where
        F: std::future::Future<Output = Option<Output>>,
    {
        let parts = vec![(key.to_string(), input)];
        let f = async move { f.await.map(|o| vec![o]) };
        self.record_parts(client, member, parts, None, timeout, f)
            .await;
    }

    /// Runs `f` as one recorded request touching several keys (`parts`: key and what was
    /// asked of it), each recorded as an op of its own; `f` returns one output per part.
    async fn record_parts<F>(
        &self,
        client: usize,
        member: usize,
        parts: Vec<(String, Input)>,
        txn: Option<u64>,
        timeout: Duration,
        f: F,
    ) where
        F: std::future::Future<Output = Option<Vec<Output>>>,
    {
        let invoke_ns = self.now_ns();
        let member_at_invoke = self.member_now(member);
        let out = tokio::time::timeout(timeout, f).await.ok().flatten();
        let return_ns = self.now_ns();
        let is_read = parts.iter().all(|(_, i)| matches!(i, Input::Get { .. }));
        // A read that spans a member's removal and re-add may have been served by either
        // incarnation: it is left out (it changed nothing).
        if is_read && member_at_invoke != self.member_now(member) {
            return;
        }
        let outputs = match out {
            Some(o) if o.len() == parts.len() => o.into_iter().map(|o| (o, return_ns)).collect(),
            _ if is_read => return,
            _ => vec![(Output::Unknown, u64::MAX); parts.len()],
        };
        let mut ops = self.ops.lock().unwrap();
        for ((key, input), (output, return_ns)) in parts.into_iter().zip(outputs) {
            ops.push(Op {
                client,
                member: member_at_invoke,
                key,
                input,
                output,
                invoke_ns,
                return_ns,
                txn,
            });
        }
    }

    /// Records the expiry of `lease`, attached to `key`: an unknown revoke invoked at
    /// `at_ns` (the grant's invocation plus the TTL: the lease cannot expire earlier).
    fn record_expiry(&self, client: usize, member: usize, key: &str, lease: i64, at_ns: u64) {
        let member = self.member_now(member);
        self.ops.lock().unwrap().push(Op {
            client,
            member,
            key: key.to_string(),
            input: Input::Revoke {
                lease,
                expiry: true,
            },
            output: Output::Unknown,
            invoke_ns: at_ns,
            return_ns: u64::MAX,
            txn: None,
        });
    }

    /// One lease step of client `id`: with a lease `held`, revoke it or leave it to expire;
    /// without one, grant a lease (an id of the client's own) and put `key` with it
    /// attached. Whether the step failed (the client should back off and reconnect).
    #[allow(clippy::too_many_arguments)]
    async fn lease_step(
        &self,
        cl: &mut etcd_client::Client,
        id: usize,
        member: usize,
        key: String,
        n: u64,
        held: &mut Option<(i64, String)>,
        revoke: bool,
        timeout: Duration,
    ) -> bool {
        if let Some((lease, key)) = held.take() {
            if !revoke {
                // Left to expire: its expiry was recorded at the grant.
                return false;
            }
            let input = Input::Revoke {
                lease,
                expiry: false,
            };
            let before = self.ops.lock().unwrap().len();
            do_op(self, cl, id, member, &key, input, timeout).await;
            return self.ops.lock().unwrap()[before..]
                .iter()
                .any(|o| o.client == id && o.output == Output::Unknown);
        }
        let lease = ((id as i64 + 1) << 32) | (n as i64 & 0xffff_ffff);
        let grant_ns = self.now_ns();
        let grant = cl.lease_grant(
            LEASE_TTL.as_secs() as i64,
            Some(LeaseGrantOptions::new().with_id(lease)),
        );
        let granted = tokio::time::timeout(timeout, grant).await;
        // Whatever the grant's outcome, the lease may exist.
        let ttl_ns = LEASE_TTL.as_nanos() as u64;
        self.record_expiry(id, member, &key, lease, grant_ns + ttl_ns);
        if !matches!(granted, Ok(Ok(_))) {
            return true;
        }
        let value = format!("c{id}-{n}{}", lease_suffix(lease));
        let input = Input::Put {
            value: value.clone(),
        };
        let k = key.clone();
        let before = self.ops.lock().unwrap().len();
        self.record(id, member, &key, input, timeout, async move {
            let opts = PutOptions::new().with_lease(lease);
            let r = cl.put(k, value, Some(opts)).await.ok()?;
            Some(Output::Put {
                rev: rev_of(r.header()),
            })
        })
        .await;
        *held = Some((lease, key));
        self.ops.lock().unwrap()[before..]
            .iter()
            .any(|o| o.client == id && o.output == Output::Unknown)
    }

    /// A txn putting `values[i]` to `keys[i]` unconditionally, recorded as one op per key.
    pub async fn multi_put(
        &self,
        cl: &mut etcd_client::Client,
        client: usize,
        member: usize,
        puts: Vec<(String, String)>,
        timeout: Duration,
    ) {
        let txn = self.next_txn.fetch_add(1, Ordering::Relaxed);
        let parts: Vec<(String, Input)> = puts
            .iter()
            .map(|(k, v)| (k.clone(), Input::Put { value: v.clone() }))
            .collect();
        let n = puts.len();
        let ops: Vec<TxnOp> = puts
            .into_iter()
            .map(|(k, v)| TxnOp::put(k, v, None))
            .collect();
        self.record_parts(client, member, parts, Some(txn), timeout, async move {
            let r = cl.txn(Txn::new().and_then(ops)).await.ok()?;
            let rev = rev_of(r.header());
            r.succeeded().then(|| vec![Output::Put { rev }; n])
        })
        .await;
    }

    /// The history so far, and for each watch session whether it is the last one of its
    /// watcher (those must reach the final write).
    pub fn history(&self) -> (History, Vec<bool>) {
        let ops = self.ops.lock().unwrap().clone();
        let sessions = self.sessions.lock().unwrap().clone();
        let last: Vec<bool> = sessions
            .iter()
            .enumerate()
            .map(|(i, (w, _))| !sessions[i + 1..].iter().any(|(w2, _)| w2 == w))
            .collect();
        (
            History {
                ops,
                watches: sessions.into_iter().map(|(_, s)| s).collect(),
            },
            last,
        )
    }
}

fn kv_of(kv: &etcd_client::KeyValue) -> Kv {
    Kv {
        value: kv.value_str().unwrap_or("<not utf-8>").to_string(),
        mod_rev: kv.mod_revision(),
        create_rev: kv.create_revision(),
        version: kv.version(),
    }
}

fn rev_of(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

/// A client on one endpoint, with the workload's per-op bound.
pub async fn client_on(endpoint: &str, op_timeout: Duration) -> Option<etcd_client::Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(op_timeout);
    etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .ok()
}

/// One operation of client `id` through `cl` on member `member`.
pub async fn do_op(
    rec: &Recorder,
    cl: &mut etcd_client::Client,
    id: usize,
    member: usize,
    key: &str,
    input: Input,
    timeout: Duration,
) {
    let k = key.to_string();
    let i2 = input.clone();
    rec.record(id, member, key, input, timeout, async move {
        match i2 {
            Input::Put { value } => {
                let r = cl.put(k, value, None).await.ok()?;
                Some(Output::Put {
                    rev: rev_of(r.header()),
                })
            }
            Input::Get { serializable } => {
                let opts = serializable.then(|| GetOptions::new().with_serializable());
                let r = cl.get(k, opts).await.ok()?;
                Some(Output::Get {
                    kv: r.kvs().first().map(kv_of),
                    rev: rev_of(r.header()),
                })
            }
            Input::Delete => {
                let r = cl.delete(k, None).await.ok()?;
                Some(Output::Delete {
                    deleted: r.deleted(),
                    rev: rev_of(r.header()),
                })
            }
            Input::Cas { expect, value } => {
                let txn = Txn::new()
                    .when([Compare::value(k.clone(), CompareOp::Equal, expect)])
                    .and_then([TxnOp::put(k.clone(), value, None)])
                    .or_else([TxnOp::get(k, None)]);
                let r = cl.txn(txn).await.ok()?;
                let current = if r.succeeded() {
                    None
                } else {
                    match r.op_responses().first() {
                        Some(TxnOpResponse::Get(g)) => g.kvs().first().map(kv_of),
                        _ => None,
                    }
                };
                Some(Output::Cas {
                    succeeded: r.succeeded(),
                    rev: rev_of(r.header()),
                    current,
                })
            }
            Input::Revoke { lease, .. } => {
                let r = cl.lease_revoke(lease).await.ok()?;
                Some(Output::Revoke {
                    rev: rev_of(r.header()),
                })
            }
        }
    })
    .await;
}

/// Client `id` on member `member`, until `stop`.
pub async fn run_client(
    rec: Arc<Recorder>,
    cfg: WorkloadConfig,
    id: usize,
    member: usize,
    endpoint: String,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(1000).wrapping_add(id as u64));
    // Last value this client saw per key: what its CAS expects.
    let mut last_seen: Vec<Option<String>> = vec![None; cfg.keys];
    // The lease this client holds, and the key it put with it attached.
    let mut lease: Option<(i64, String)> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut cl) = client_on(&endpoint, cfg.op_timeout).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let k = rng.gen_range(0..cfg.keys);
            let key = format!("{PREFIX}k{k}");
            n += 1;
            let value = format!("c{id}-{n}");
            let roll = rng.gen_range(0..100);
            if roll >= 92 && cfg.keys > 1 {
                // A txn putting two keys at one revision.
                let k2 = (k + rng.gen_range(1..cfg.keys)) % cfg.keys;
                let puts = vec![
                    (key.clone(), value.clone()),
                    (format!("{PREFIX}k{k2}"), value.clone()),
                ];
                let before = rec.ops.lock().unwrap().len();
                rec.multi_put(&mut cl, id, member, puts, cfg.op_timeout)
                    .await;
                let failed = remember(&rec, before, id, &mut last_seen[k2]);
                if !failed {
                    last_seen[k] = Some(value);
                    continue;
                }
                tokio::time::sleep(FAILED_OP_BACKOFF).await;
                break;
            }
            if (86..92).contains(&roll) {
                let revoke = rng.gen_bool(0.5);
                let failed = rec
                    .lease_step(
                        &mut cl,
                        id,
                        member,
                        lease_key(id),
                        n,
                        &mut lease,
                        revoke,
                        cfg.op_timeout,
                    )
                    .await;
                if failed {
                    tokio::time::sleep(FAILED_OP_BACKOFF).await;
                    break;
                }
                continue;
            }
            let input = match roll {
                0..30 => Input::Put {
                    value: value.clone(),
                },
                30..55 => Input::Get {
                    serializable: false,
                },
                55..68 => Input::Get { serializable: true },
                68..76 => Input::Delete,
                _ => match &last_seen[k] {
                    Some(expect) => Input::Cas {
                        expect: expect.clone(),
                        value: value.clone(),
                    },
                    None => Input::Put {
                        value: value.clone(),
                    },
                },
            };
            // A third of the reads go to a client's lease key (where leases expire).
            let mut scratch = None;
            let (key, seen) = match input {
                Input::Get { .. } if rng.gen_bool(0.3) => {
                    (lease_key(rng.gen_range(0..cfg.clients)), &mut scratch)
                }
                _ => (key, &mut last_seen[k]),
            };
            let before = rec.ops.lock().unwrap().len();
            do_op(&rec, &mut cl, id, member, &key, input, cfg.op_timeout).await;
            // Remember what this op showed about the key.
            let failed = remember(&rec, before, id, seen);
            if failed {
                // A member down answers at once; back off instead of piling up unknowns,
                // and reconnect.
                tokio::time::sleep(FAILED_OP_BACKOFF).await;
                break;
            }
        }
    }
}

/// The key client `id` attaches its leases to (only its lease puts write it, so that a lease
/// left to expire still holds it when it expires).
pub fn lease_key(id: usize) -> String {
    format!("{PREFIX}l{id}")
}

/// Notes what client `id`'s last op (recorded at or after `from`) showed about its key in
/// `last_seen`; whether the op failed (an unknown write, or a read that was not recorded).
fn remember(rec: &Recorder, from: usize, id: usize, last_seen: &mut Option<String>) -> bool {
    let ops = rec.ops.lock().unwrap();
    let Some(op) = ops[from..].iter().rev().find(|o| o.client == id) else {
        return true;
    };
    match (&op.input, &op.output) {
        (Input::Put { value }, Output::Put { .. }) => *last_seen = Some(value.clone()),
        (Input::Get { .. }, Output::Get { kv, .. }) => {
            *last_seen = kv.as_ref().map(|kv| kv.value.clone())
        }
        (
            Input::Cas { value, .. },
            Output::Cas {
                succeeded: true, ..
            },
        ) => *last_seen = Some(value.clone()),
        (_, Output::Cas { current, .. }) => {
            *last_seen = current.as_ref().map(|kv| kv.value.clone())
        }
        _ => {}
    }
    op.output == Output::Unknown
}

/// What a watcher asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherKind {
    /// prev_kv on every event.
    PrevKv,
    /// The stream carries `hasleader: true` (clientv3's WithRequireLeader).
    RequireLeader,
    /// NODELETE filter, progress notifications.
    PutsWithProgress,
    /// NOPUT filter, progress notifications (which show it reached the final write, a put).
    DeletesWithProgress,
}

impl WatcherKind {
    /// Every kind, one watcher each per member.
    pub const ALL: [WatcherKind; 4] = [
        WatcherKind::PrevKv,
        WatcherKind::RequireLeader,
        WatcherKind::PutsWithProgress,
        WatcherKind::DeletesWithProgress,
    ];

    fn progress(self) -> bool {
        matches!(
            self,
            WatcherKind::PutsWithProgress | WatcherKind::DeletesWithProgress
        )
    }
}

/// One watcher on member `member` until it has seen revision `target` (once set, > 0) or
/// `give_up` is set. Re-creates the watch after every break.
pub async fn run_watcher(
    rec: Arc<Recorder>,
    watcher: usize,
    member: usize,
    endpoint: String,
    kind: WatcherKind,
    target: Arc<AtomicI64>,
    give_up: Arc<AtomicBool>,
) {
    let mut next_rev = 1i64;
    let reached = |next: i64| {
        let t = target.load(Ordering::Relaxed);
        t > 0 && next > t
    };
    while !reached(next_rev) && !give_up.load(Ordering::Relaxed) {
        let prev_kv = kind == WatcherKind::PrevKv;
        let no_delete = kind == WatcherKind::PutsWithProgress;
        let no_put = kind == WatcherKind::DeletesWithProgress;
        let progress = kind.progress();
        let mut session = WatchSession {
            member,
            start_rev: next_rev,
            prev_kv,
            no_delete,
            no_put,
            responses: Vec::new(),
            ended: None,
        };
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_require_leader(kind == WatcherKind::RequireLeader);
        let Ok(mut cl) = etcd_client::Client::connect([endpoint.as_str()], Some(opts)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut wopts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(next_rev);
        if prev_kv {
            wopts = wopts.with_prev_key();
        }
        if no_delete {
            wopts = wopts.with_filters([WatchFilterType::NoDelete]);
        }
        if no_put {
            wopts = wopts.with_filters([WatchFilterType::NoPut]);
        }
        if progress {
            wopts = wopts.with_progress_notify();
        }
        let mut stream =
            match tokio::time::timeout(Duration::from_secs(2), cl.watch(PREFIX, Some(wopts))).await
            {
                Ok(Ok(s)) => s,
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
        loop {
            if reached(next_rev) {
                break;
            }
            if give_up.load(Ordering::Relaxed) {
                session.ended = Some("given up".into());
                break;
            }
            let msg = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await
            {
                Err(_) => continue,
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => {
                    session.ended = Some("stream ended".into());
                    break;
                }
                Ok(Err(e)) => {
                    session.ended = Some(format!("stream error: {e}"));
                    break;
                }
            };
            if msg.canceled() {
                session.ended = Some(format!("canceled: {}", msg.cancel_reason()));
                break;
            }
            if msg.created() || (msg.events().is_empty() && !progress) {
                continue;
            }
            if msg.events().is_empty() {
                // A progress notification: every event up to its revision has been sent, so
                // a re-created watch resumes after it (a bookmark).
                let rev = rev_of(msg.header());
                next_rev = next_rev.max(rev + 1);
                session.responses.push(WatchResponse {
                    header_rev: rev,
                    events: Vec::new(),
                });
                continue;
            }
            let events: Vec<Event> = msg
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    Some(Event {
                        put: e.event_type() == EventType::Put,
                        key: kv.key_str().unwrap_or("<not utf-8>").to_string(),
                        kv: kv_of(kv),
                        prev: e.prev_kv().map(kv_of),
                    })
                })
                .collect();
            if let Some(last) = events.iter().map(Event::rev).max() {
                next_rev = next_rev.max(last + 1);
            }
            session.responses.push(WatchResponse {
                header_rev: rev_of(msg.header()),
                events,
            });
        }
        let broke = session.ended.is_some();
        rec.sessions.lock().unwrap().push((watcher, session));
        if broke {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !reached(next_rev) {
        // Gave up while reconnecting: an empty last session makes the checker report it.
        rec.sessions.lock().unwrap().push((
            watcher,
            WatchSession {
                member,
                start_rev: next_rev,
                prev_kv: kind == WatcherKind::PrevKv,
                no_delete: kind == WatcherKind::PutsWithProgress,
                no_put: kind == WatcherKind::DeletesWithProgress,
                responses: Vec::new(),
                ended: Some("never reached the final write".into()),
            },
        ));
    }
}
