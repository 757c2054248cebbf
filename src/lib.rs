//! minietcd: an etcd-compatible, Raft-replicated key-value store. This crate is the server
//! (the `minietcd` binary); the workspace around it holds `minietcd-proto` (etcd's API types,
//! shared), `minietcd-client` (the client library) and the tools built on the client,
//! `minietcdctl` and `minietcd-bench`.
//!
//! The path of a write, one module per stage:
//! `server::kv` (validate, translate) -> `raft::proposer` (forward to the leader, propose)
//! -> openraft (replicate, commit) -> `raft::state_machine` (apply) -> `storage::MvccStore`
//! (one sled batch) -> `watch::WatchableStore` (notify watchers) -> the client's answer.
//!
//! The path of a watch: `server::watch` (one task per stream) -> `watch::WatchableStore`
//! (register the watcher: synced if it starts now, else caught up from `storage` by the
//! watch loops) -> events from each applied write -> `server::watch` -> the client's stream.
//!
//! [`node::run`] is where those links are made, step by step.
//!
//! - [`config`]: flags (etcd's names), validated once into a `Config`.
//! - [`data_dir`]: the member's identity file and the sled database on disk.
//! - [`logging`]: etcd 3.4's log formats (capnslog, zap JSON) and `--log-outputs`.
//! - [`node`]: wires storage, Raft, watch and the gRPC servers into a running member.
//! - [`paced`]: bulk file writes paced so that they do not stall the Raft log's fsyncs.
//! - [`server`]: the etcd v3 gRPC facade, one file per service; the one error -> status table.
//! - [`raft`]: openraft glue: log store, state machine, proposer, peer network and service.
//! - [`storage`]: the MVCC store on sled (imports neither raft nor watch nor gRPC).
//! - [`tls`]: TLS on the client and peer ports (`https://` URLs, etcd's TLS flags).
//! - [`watch`]: the watchable store: watcher groups, catch-up, the events of each write.
//! - [`lessor`]: lease deadlines; the leader proposes the revocation of expired leases.
//! - [`metrics`]: Prometheus metrics under etcd's names, for `/metrics`.
//! - [`pb`]: generated protobuf code (etcd's v3 API from `minietcd-proto`, and minietcd's
//!   internal Raft commands and peer service).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod background;
pub mod config;
pub mod data_dir;
pub mod lessor;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod paced;
pub mod pb;
pub mod raft;
pub mod server;
pub mod storage;
pub mod tls;
pub mod watch;
