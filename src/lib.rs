//! minietcd: an etcd-compatible, Raft-replicated key-value store.
//!
//! The path of a write, one module per stage:
//! `server::kv` (validate, translate) -> `raft::proposer` (forward to the leader, propose)
//! -> openraft (replicate, commit) -> `raft::state_machine` (apply) -> `storage::MvccStore`
//! (one sled batch) -> `watch` (notify watchers) -> `server::watch` -> client.
//!
//! - [`client`]: the etcd v3 client library (failover, resilient watch) behind minietcdctl.
//! - [`pb`]: generated protobuf code (etcd's v3 API and minietcd's internal messages).
//! - [`storage`]: the MVCC store on sled.
//! - [`raft`]: openraft storage, network and proposer.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod data_dir;
pub mod lessor;
pub mod node;
pub mod pb;
pub mod raft;
pub mod server;
pub mod storage;
pub mod watch;
