//! All integration tests compile into this one binary; each module drives real processes.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

mod auth;
mod auto_compaction;
mod bench_smoke;
mod certs;
mod client_kv;
mod client_watch;
mod client_watch_fake;
mod cluster_basic;
mod cluster_failover;
mod cluster_identity;
mod cluster_membership;
mod corrupt_check;
mod crash;
mod ctl_etcdctl;
mod ctl_formats;
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
mod tls;
mod tls_peers;
mod watch_cluster;
mod watch_etcdctl;
mod watch_grpc;
mod watch_node;
