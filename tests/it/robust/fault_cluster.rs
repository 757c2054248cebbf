//! The cluster under test and the faults injected into it: three members of minietcd or etcd
//! 3.4 whose peer links go through [`PeerProxies`], and each [`Fault`] as a small piece that
//! injects itself, waits until it shows (a new leader, a member falling behind), holds, and
//! heals.

use std::time::{Duration, Instant};

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind, TEST_ELECTION_TIMEOUT_MS};
use crate::robust::proxy::{LinkFault, PeerProxies};
use crate::robust::workload::{self, Recorder, PREFIX};
use crate::support::wait_until_async;

/// How long a fault lasts: several election timeouts.
pub const FAULT_MS: u64 = 5 * TEST_ELECTION_TIMEOUT_MS;
/// Progress notification interval of the members (etcd's default is 10 minutes).
pub const PROGRESS_NOTIFY_MS: u64 = 300;
/// How long a fault may take to show (a new leader, a member falling behind).
pub const FAULT_EFFECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a member added back empty may take to catch up (it replays the whole history,
/// which grows with a long soak).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// A three-member cluster whose peer links go through [`PeerProxies`].
pub struct FaultCluster {
    pub cluster: Cluster,
    pub proxies: PeerProxies,
    /// Members stopped with SIGSTOP and not yet continued.
    paused: Vec<usize>,
    /// Member ids, by index.
    ids: Vec<u64>,
    /// Told when a member is removed and added back (its ops count as a new member's).
    pub recorder: Option<std::sync::Arc<Recorder>>,
}

impl FaultCluster {
    /// Starts three members of `kind`, each with `extra` flags besides the harness's.
    pub async fn start(kind: ServerKind, extra: &[String]) -> FaultCluster {
        let mut config = ClusterConfig::new(kind, 3).proxied_peers().arg(format!(
            "--experimental-watch-progress-notify-interval={PROGRESS_NOTIFY_MS}ms"
        ));
        for a in extra {
            config = config.arg(a.clone());
        }
        let cluster = Cluster::start(config);
        let routes: Vec<(u16, u16)> = cluster
            .members
            .iter()
            .map(|m| {
                let adv = m.advertised_peer_port.as_ref().expect("proxied peer port");
                (adv.port, m.peer_port.port)
            })
            .collect();
        let proxies = PeerProxies::start(&routes).await;
        for i in 0..routes.len() {
            proxies.set_pid(i, cluster.pid(i));
        }
        cluster.wait_ready().await;
        let mut ids = Vec::new();
        for i in 0..routes.len() {
            ids.push(cluster.status(i).await.expect("member status").0);
        }
        FaultCluster {
            cluster,
            proxies,
            paused: Vec::new(),
            ids,
            recorder: None,
        }
    }

    pub fn n(&self) -> usize {
        self.cluster.members.len()
    }

    pub fn kill(&mut self, i: usize) {
        self.cluster.kill(i);
        self.proxies.set_pid(i, None);
    }

    pub fn restart(&mut self, i: usize) {
        self.cluster.restart(i);
        self.proxies.set_pid(i, self.cluster.pid(i));
    }

    fn signal(&self, i: usize, sig: i32) {
        let pid = self.cluster.pid(i).expect("member running") as i32;
        // SAFETY: signalling a child process this test started and has not reaped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// SIGSTOP member `i`.
    pub fn pause(&mut self, i: usize) {
        tracing::info!(member = i, "SIGSTOP");
        self.signal(i, libc::SIGSTOP);
        self.paused.push(i);
    }

    /// SIGCONT member `i`.
    pub fn resume(&mut self, i: usize) {
        tracing::info!(member = i, "SIGCONT");
        self.signal(i, libc::SIGCONT);
        self.paused.retain(|p| *p != i);
    }

    /// The current leader (waits for one every running member agrees on).
    pub async fn leader(&self) -> usize {
        self.cluster.wait_ready().await
    }

    /// Waits until member `at` follows a leader other than `old`: the fault took effect.
    pub async fn expect_new_leader(&self, at: usize, old: usize) {
        let old_id = self.ids[old];
        wait_until_async(
            &format!("member {at} to follow a leader other than {old}"),
            FAULT_EFFECT_TIMEOUT,
            || async move {
                let (_, lead) = self.cluster.status(at).await?;
                (lead != 0 && lead != old_id).then_some(())
            },
        )
        .await;
    }

    /// Member `i`'s revision, read serializably from it.
    async fn local_rev(&self, i: usize) -> Option<i64> {
        let mut cl = workload::client_on(&self.cluster.endpoint(i), Duration::from_secs(1)).await?;
        let opts = etcd_client::GetOptions::new().with_serializable();
        let r = cl.get(PREFIX, Some(opts)).await.ok()?;
        Some(r.header()?.revision())
    }

    /// Waits until member `ahead` is at least `by` revisions past member `behind`: `behind`
    /// no longer receives the log.
    pub async fn expect_falling_behind(&self, behind: usize, ahead: usize, by: i64) {
        wait_until_async(
            &format!("member {behind} to fall {by} revisions behind member {ahead}"),
            FAULT_EFFECT_TIMEOUT,
            || async move {
                let b = self.local_rev(behind).await?;
                let a = self.local_rev(ahead).await?;
                (a >= b + by).then_some(())
            },
        )
        .await;
    }

    /// Removes member `i` through member `via` (a client there), waits until the removed
    /// member has stopped (etcd 3.4 and minietcd exit once they learn they were removed; it is
    /// killed if it has not after a few seconds), wipes its data dir, adds it back under
    /// its old name and peer URL and starts it empty with `--initial-cluster-state
    /// existing`; returns once it has caught up with `via`.
    pub async fn remove_and_re_add(&mut self, i: usize, via: usize) {
        let old_id = self.ids[i];
        let ep = self.cluster.endpoint(via);
        wait_until_async(
            &format!("member {i} removed through member {via}"),
            FAULT_EFFECT_TIMEOUT,
            || {
                let ep = ep.clone();
                async move {
                    let mut cl = workload::client_on(&ep, Duration::from_secs(3)).await?;
                    cl.member_remove(old_id).await.ok().map(drop)
                }
            },
        )
        .await;
        tracing::info!(member = i, "removed");
        let stopped = Instant::now() + Duration::from_secs(10);
        while self.cluster.exited(i).is_none() && Instant::now() < stopped {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let exited_by_itself = self.cluster.exited(i).is_some();
        tracing::info!(member = i, exited_by_itself, "removed member stopped");
        self.kill(i);
        let dir = self.cluster.members[i].data_dir.clone();
        std::fs::remove_dir_all(&dir).expect("wipe the removed member's data dir");
        if let Some(rec) = &self.recorder {
            rec.new_incarnation(i);
        }
        let url = self.cluster.members[i].advertised_peer_url();
        let new_id = wait_until_async(
            &format!("member {i} added back through member {via}"),
            FAULT_EFFECT_TIMEOUT,
            || {
                let (ep, url) = (ep.clone(), url.clone());
                async move {
                    let mut cl = workload::client_on(&ep, Duration::from_secs(3)).await?;
                    let r = cl.member_add([url.as_str()], None).await.ok()?;
                    r.member().map(|m| m.id())
                }
            },
        )
        .await;
        self.ids[i] = new_id;
        self.cluster.spawn_joining(i);
        self.proxies.set_pid(i, self.cluster.pid(i));
        tracing::info!(member = i, id = %format!("{new_id:x}"), "added back, started empty");
        // Caught up: its own (serializable) revision reaches the one `via` had now.
        let me = &*self;
        let target = wait_until_async("a revision to catch up to", FAULT_EFFECT_TIMEOUT, || {
            me.local_rev(via)
        })
        .await;
        wait_until_async(
            &format!("the re-added member {i} to catch up to revision {target}"),
            CATCH_UP_TIMEOUT,
            || async move { (me.local_rev(i).await? >= target).then_some(()) },
        )
        .await;
    }

    /// A follower other than `not`.
    pub fn other(&self, not: &[usize]) -> usize {
        (0..self.n())
            .find(|i| !not.contains(i))
            .expect("a member left")
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        for i in self.paused.clone() {
            self.resume(i);
        }
        if std::thread::panicking() {
            let dir = self.cluster.keep_dir();
            eprintln!("member logs kept in {}", dir.display());
        }
    }
}

/// The faults, one scenario each.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The leader loses every peer link (blackholed) for [`FAULT_MS`].
    IsolateLeader,
    /// One follower loses every peer link.
    IsolateFollower,
    /// Majority/minority: the leader keeps one follower and loses the other (links cut), then
    /// the split moves so the leader is alone in the minority.
    MovingSplit,
    /// The link leader <-> one follower goes down and up every 200 ms; the other follower's
    /// links to the leader are slowed by 20 ms.
    FlappingLink,
    /// SIGSTOP the leader for [`FAULT_MS`], then SIGCONT.
    PauseLeader,
    /// SIGSTOP a follower for [`FAULT_MS`], then SIGCONT: it must catch up.
    PauseFollower,
    /// kill -9 a follower, restart it after [`FAULT_MS`].
    KillFollower,
    /// kill -9 the leader, restart it after [`FAULT_MS`].
    KillLeader,
    /// kill -9 every member, restart them all.
    KillAll,
    /// Remove a follower from the membership (through the leader), wipe it, add it back
    /// and start it empty: it catches up from the others while the clients keep going.
    RemoveAndReAddFollower,
    /// One follower loses every peer link until the others are [`PAST_SNAPSHOT_REVS`]
    /// revisions ahead, with members snapshotting often: minietcd (which keeps only
    /// `--experimental-snapshot-catchup-entries` behind a snapshot) must send it a snapshot,
    /// and its watchers must come through it without a gap or a repeat. etcd 3.4 keeps 5000
    /// entries, so there the follower catches up from the log.
    IsolateFollowerPastSnapshot,
}

/// How far the isolated follower falls behind in [`Fault::IsolateFollowerPastSnapshot`].
const PAST_SNAPSHOT_REVS: i64 = 100;

impl Fault {
    /// Flags the scenario's members need.
    pub fn flags(self, kind: ServerKind) -> Vec<String> {
        match (self, kind) {
            (Fault::IsolateFollowerPastSnapshot, ServerKind::Minietcd) => vec![
                "--snapshot-count=20".into(),
                "--experimental-snapshot-catchup-entries=5".into(),
            ],
            (Fault::IsolateFollowerPastSnapshot, ServerKind::Etcd) => {
                vec!["--snapshot-count=20".into()]
            }
            _ => Vec::new(),
        }
    }
}

/// Injects `fault` and heals it; returns when the cluster is whole again.
pub async fn inject(fc: &mut FaultCluster, fault: Fault) {
    let leader = fc.leader().await;
    let follower = fc.other(&[leader]);
    let third = fc.other(&[leader, follower]);
    let hold = Duration::from_millis(FAULT_MS);
    tracing::info!(?fault, leader, follower, third, "injecting");
    match fault {
        Fault::IsolateLeader => {
            fc.proxies
                .partition(&[&[leader], &[follower, third]], LinkFault::Blackhole);
            fc.expect_new_leader(follower, leader).await;
            tokio::time::sleep(hold).await;
        }
        Fault::IsolateFollower => {
            fc.proxies
                .partition(&[&[follower], &[leader, third]], LinkFault::Blackhole);
            fc.expect_falling_behind(follower, leader, 5).await;
            tokio::time::sleep(hold).await;
        }
        Fault::IsolateFollowerPastSnapshot => {
            fc.proxies
                .partition(&[&[follower], &[leader, third]], LinkFault::Blackhole);
            fc.expect_falling_behind(follower, leader, PAST_SNAPSHOT_REVS)
                .await;
        }
        Fault::MovingSplit => {
            fc.proxies
                .partition(&[&[leader, follower], &[third]], LinkFault::Cut);
            fc.expect_falling_behind(third, leader, 5).await;
            tokio::time::sleep(hold / 2).await;
            fc.proxies.heal();
            fc.proxies
                .partition(&[&[leader], &[follower, third]], LinkFault::Cut);
            fc.expect_new_leader(third, leader).await;
            tokio::time::sleep(hold / 2).await;
        }
        Fault::FlappingLink => {
            fc.proxies.set_pair(
                leader,
                third,
                Some(LinkFault::Delay(Duration::from_millis(20))),
            );
            let end = Instant::now() + hold;
            let mut down = false;
            while Instant::now() < end {
                down = !down;
                fc.proxies
                    .set_pair(leader, follower, down.then_some(LinkFault::Blackhole));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Fault::PauseLeader => {
            fc.pause(leader);
            fc.expect_new_leader(follower, leader).await;
            tokio::time::sleep(hold).await;
            fc.resume(leader);
        }
        Fault::PauseFollower => {
            fc.pause(follower);
            tokio::time::sleep(hold).await;
            fc.resume(follower);
        }
        Fault::KillFollower => {
            fc.kill(follower);
            tokio::time::sleep(hold).await;
            fc.restart(follower);
        }
        Fault::KillLeader => {
            fc.kill(leader);
            fc.expect_new_leader(follower, leader).await;
            tokio::time::sleep(hold).await;
            fc.restart(leader);
        }
        Fault::RemoveAndReAddFollower => {
            fc.remove_and_re_add(follower, leader).await;
        }
        Fault::KillAll => {
            for i in 0..fc.n() {
                fc.kill(i);
            }
            tokio::time::sleep(hold / 2).await;
            for i in 0..fc.n() {
                fc.restart(i);
            }
        }
    }
    fc.proxies.heal();
    tracing::info!(?fault, "healed");
    fc.leader().await;
}
