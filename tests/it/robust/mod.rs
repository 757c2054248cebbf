//! Fault testing in the manner of etcd's robustness suite and Jepsen: a three-member cluster
//! whose peers talk through loopback proxies (so links can be cut), concurrent clients whose
//! every operation is recorded, watches on every member, faults injected while they run, and
//! checkers that read only the recorded history.
//!
//! - `history`: what is recorded;
//! - `linearizability`: the KV history, key by key (Wing-Gong search), and revisions against
//!   real time;
//! - `watch_check`: watch guarantees and reads against the committed history;
//! - `proxy`: the per-link TCP proxies between peers;
//! - `fault_cluster`: the cluster behind the proxies, and the faults;
//! - `workload`: the clients and watchers;
//! - `scenarios`: one test per fault, on minietcd and on etcd 3.4, and the torture run;
//! - `restart_reads`: reads after a restart of every member (a minietcd bug, reduced).

pub mod check_quorum;
pub mod fault_cluster;
pub mod history;
pub mod linearizability;
pub mod proxy;
pub mod restart_reads;
pub mod scenarios;
pub mod watch_check;
pub mod workload;
