//! All integration tests compile into this one binary; each module drives real processes.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

mod client_kv;
mod client_watch;
mod client_watch_fake;
mod ctl_etcdctl;
mod etcd_cluster;
mod support;
mod kv;
mod errors;
mod crash;
mod etcdctl;
mod lease;
mod startup;
