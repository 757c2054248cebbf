//! Identity across restarts, refused data dirs and joins, and lease keep-alives through a
//! follower, on real minietcd processes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::PutOptions;

use crate::cluster_basic::client_on;
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::{minietcd_bin, wait_until, ChildGuard};

/// Runs minietcd with `args`, expects it to exit non-zero by itself, and returns its stderr.
fn fails(dir: &std::path::Path, args: &[String]) -> String {
    let out_path = dir.join("refused-stderr.txt");
    let err = std::fs::File::create(&out_path).unwrap();
    let mut guard = ChildGuard::spawn(
        "minietcd-refused",
        Command::new(minietcd_bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(err),
    );
    let status = wait_until("minietcd to exit", Duration::from_secs(25), || {
        guard.try_wait()
    });
    assert!(!status.success(), "minietcd {args:?} should fail");
    let stderr = std::fs::read_to_string(&out_path).unwrap();
    assert!(!stderr.contains("panicked"), "panic on {args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

/// The flags the harness gives member `i`, with `initial_cluster`, `state` and `token`.
fn member_args(
    c: &Cluster,
    i: usize,
    initial_cluster: &str,
    state: &str,
    token: &str,
) -> Vec<String> {
    let m = &c.members[i];
    vec![
        format!("--name={}", m.name),
        format!("--data-dir={}", m.data_dir.display()),
        format!(
            "--listen-client-urls=http://127.0.0.1:{}",
            m.client_port.port
        ),
        format!(
            "--advertise-client-urls=http://127.0.0.1:{}",
            m.client_port.port
        ),
        format!("--listen-peer-urls=http://127.0.0.1:{}", m.peer_port.port),
        format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{}",
            m.peer_port.port
        ),
        format!("--initial-cluster={initial_cluster}"),
        format!("--initial-cluster-state={state}"),
        format!("--initial-cluster-token={token}"),
    ]
}

fn initial_cluster(c: &Cluster) -> String {
    c.members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port.port))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_member_restarts_with_its_identity_and_foreign_data_is_refused() {
    let mut c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    c.wait_ready().await;
    let mut cl = client_on(&c, 0).await;
    let before = cl.member_list().await.unwrap();
    let mut ids: Vec<(String, u64)> = before
        .members()
        .iter()
        .map(|m| (m.name().to_string(), m.id()))
        .collect();
    ids.sort();
    let cluster_id = before.header().unwrap().cluster_id();

    // Restarted from its data dir: same member id, same cluster.
    c.stop(2);
    c.restart(2);
    c.wait_ready().await;
    let mut on2 = client_on(&c, 2).await;
    let st = on2.status().await.unwrap();
    let header = st.header().unwrap();
    assert_eq!(header.cluster_id(), cluster_id);
    assert_eq!(
        Some(&("m2".to_string(), header.member_id())),
        ids.iter().find(|(n, _)| n == "m2")
    );
    let after = on2.member_list().await.unwrap();
    let mut ids_after: Vec<(String, u64)> = after
        .members()
        .iter()
        .map(|m| (m.name().to_string(), m.id()))
        .collect();
    ids_after.sort();
    assert_eq!(ids_after, ids);

    // The same data dir under flags of another cluster (another token): refused.
    c.stop(2);
    let init = initial_cluster(&c);
    let err = fails(
        &c.dir(),
        &member_args(&c, 2, &init, "new", "some-other-cluster"),
    );
    assert!(
        err.contains("belongs to cluster") && err.contains("--initial-cluster-token"),
        "{err}"
    );

    // A member that was never added cannot join.
    let (stranger, _) = c.reserve_member();
    let init = initial_cluster(&c);
    let token = format!("test-{}", std::process::id());
    let err = fails(
        &c.dir(),
        &member_args(&c, stranger, &init, "existing", &token),
    );
    assert!(
        err.contains("cannot join the cluster") && err.contains("member add"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keep_alive_through_a_follower_renews_on_the_leader() {
    let c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let leader = c.wait_ready().await;
    let follower = (leader + 1) % 3;
    let mut on_leader = client_on(&c, leader).await;
    let lease = on_leader.lease_grant(2, None).await.unwrap().id();
    on_leader
        .put("leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();

    // Renewed only through the follower, for three TTLs: the leader must not expire it.
    let mut on_follower = client_on(&c, follower).await;
    let (mut keeper, mut responses) = on_follower.lease_keep_alive(lease).await.unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        keeper.keep_alive().await.unwrap();
        let r = responses.message().await.unwrap().unwrap();
        assert_eq!(r.id(), lease);
        assert!(r.ttl() > 0, "renewal answered TTL {}", r.ttl());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = on_leader.get("leased", None).await.unwrap();
    assert_eq!(r.kvs().len(), 1, "the lease expired despite keep-alives");

    // Without renewals the leader expires it.
    drop(keeper);
    drop(responses);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if on_leader
            .get("leased", None)
            .await
            .unwrap()
            .kvs()
            .is_empty()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
