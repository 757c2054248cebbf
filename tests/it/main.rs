//! All integration tests compile into this one binary; each module drives real processes.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

mod client_watch;
mod etcd_cluster;
mod support;
