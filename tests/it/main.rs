//! All integration tests compile into this one binary; each module drives real processes.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

mod auto_compaction;
mod bench_smoke;
mod client_kv;
mod client_watch;
mod client_watch_fake;
mod cluster_basic;
mod cluster_failover;
mod cluster_identity;
mod cluster_membership;
mod crash;
mod ctl_etcdctl;
mod errors;
mod etcd_cluster;
mod etcdctl;
mod flags;
mod gateway;
mod kv;
mod lease;
mod lock_election;
mod maint;
mod ops_http;
mod reconfig;
mod robust;
mod startup;
mod support;
mod watch_cluster;
mod watch_etcdctl;
mod watch_grpc;
mod watch_node;
