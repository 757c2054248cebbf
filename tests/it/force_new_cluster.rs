//! `--force-new-cluster`: with every other member gone, one member restarts from its own data
//! as a one-member cluster that keeps the keys and revisions, lists itself alone, and takes
//! writes. Run against etcd 3.4 and minietcd alike.
//!
//! etcd drops the entries past the commit index its WAL recorded, so the last write a killed
//! follower applied may be lost there (it is, in practice); minietcd keeps every entry on the
//! member's disk. A last "barrier" write carries the commit of the others to the follower.

use std::time::Duration;

use crate::cluster_basic::client_on;
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::wait_until_async;

const KEYS: usize = 5;

async fn force_new_cluster_keeps_the_data_of_one_member(kind: ServerKind) {
    tokio::time::timeout(Duration::from_secs(55), async {
        let mut c = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
        let leader = c.wait_ready().await;
        let mut cl = client_on(&c, leader).await;
        let mut rev = 0;
        for k in 0..KEYS {
            rev = cl
                .put(format!("fnc/{k}"), format!("v{k}"), None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision();
        }
        let barrier = cl
            .put("barrier", "b", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        // A follower is forced: its log holds another leader's entries. It has applied
        // every write before the whole cluster goes down.
        let forced = (leader + 1) % 3;
        wait_until_async(
            "the forced member to apply the writes",
            Duration::from_secs(10),
            || {
                let c = &c;
                async move {
                    let mut cl = client_on(c, forced).await;
                    let opts = etcd_client::GetOptions::new().with_serializable();
                    let r = cl.get("barrier", Some(opts)).await.ok()?;
                    (!r.kvs().is_empty()).then_some(())
                }
            },
        )
        .await;
        let (me, _) = c.status(forced).await.expect("forced member status");
        for i in 0..3 {
            c.kill(i);
        }

        c.restart_with(forced, &["--force-new-cluster"]);
        assert_eq!(c.wait_ready().await, forced, "the forced member leads");
        let mut cl = client_on(&c, forced).await;
        let got = cl
            .get("fnc/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(got.kvs().len(), KEYS, "{got:?}");
        let now = got.header().unwrap().revision();
        if kind == ServerKind::Minietcd {
            assert_eq!(now, barrier, "no write the forced member applied is lost");
            assert!(c
                .log(forced)
                .contains("forcing a new one-member cluster from this member's data"));
        } else {
            assert!(now == rev || now == barrier, "revision {now}");
        }
        assert_eq!(
            got.kvs()[KEYS - 1].value(),
            format!("v{}", KEYS - 1).as_bytes()
        );
        let members = cl.member_list().await.unwrap();
        let ids: Vec<u64> = members.members().iter().map(|m| m.id()).collect();
        assert_eq!(ids, vec![me]);
        assert_eq!(members.members()[0].name(), format!("m{forced}"));
        let put = cl.put("fnc/after", "x", None).await.unwrap();
        assert_eq!(put.header().unwrap().revision(), now + 1);

        // A new member joins the one-member cluster and receives its data.
        let (new, url) = c.reserve_member();
        cl.member_add([url.as_str()], None).await.unwrap();
        c.spawn_joining_with(new, &[forced, new]);
        c.wait_ready().await;
        let members = cl.member_list().await.unwrap();
        assert_eq!(members.members().len(), 2);
        wait_until_async(
            "the new member to serve the data",
            Duration::from_secs(20),
            || {
                let c = &c;
                async move {
                    let mut cl = client_on(c, new).await;
                    let opts = etcd_client::GetOptions::new().with_serializable();
                    let r = cl.get("fnc/after", Some(opts)).await.ok()?;
                    (!r.kvs().is_empty()).then_some(())
                }
            },
        )
        .await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_keeps_the_data_of_one_member_minietcd() {
    force_new_cluster_keeps_the_data_of_one_member(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_keeps_the_data_of_one_member_etcd() {
    force_new_cluster_keeps_the_data_of_one_member(ServerKind::Etcd).await;
}
