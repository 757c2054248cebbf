//! All integration tests compile into this one binary; each module drives real processes.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

mod support;
mod watch_etcdctl;
mod watch_grpc;
mod watch_node;
