//! A tonic client for the etcd v3 API (works against etcd 3.4+ and minietcd).
//!
//! - [`Client`]: the endpoints, failover between them and the services below.
//! - [`KvClient`] (get/put/delete/txn/compact), [`LeaseClient`] (grant/revoke/keep-alive/
//!   time-to-live/list), [`ClusterClient`] (members), [`MaintenanceClient`] (status, snapshot).
//! - [`WatchClient`]: clientv3's watch machinery: many watchers on one gRPC stream, resumed
//!   from the revision after their last event on another member when the stream breaks.
//! - [`ClientError`]: etcd's error meanings, mapped from gRPC statuses in one place.
//! - [`pb`]: etcd's generated API types; responses are returned as etcd sends them.
//! - [`tls`]: `https://` endpoints with etcdctl's TLS options ([`ClientOptions::tls`]).
//!
//! Every request takes builder-style options; `timeout` and `require_leader` are accepted by
//! all of them and default to the [`ClientOptions`] of the client.
//!
//! ```no_run
//! use minietcd_client::{Client, ClientOptions, GetOptions, PutOptions};
//!
//! # async fn example() -> Result<(), minietcd_client::ClientError> {
//! let client = Client::connect(["127.0.0.1:2379"], ClientOptions::new()).await?;
//! client.kv().put("greeting", "hello", PutOptions::new()).await?;
//! let resp = client.kv().get("greeting", GetOptions::new()).await?;
//! assert_eq!(resp.kvs[0].value, b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! The crate depends on no server code: only tonic, tokio, rustls and the generated etcd
//! types.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod auth;
mod cluster;
mod duration;
mod endpoints;
mod error;
mod kv;
mod lease;
mod maintenance;
pub mod tls;
mod txn;
mod watch;
mod watch_stream;

use std::sync::Arc;
use std::time::Duration;

pub use auth::AuthClient;
pub use cluster::{ClusterClient, MemberAddOptions};
pub use duration::parse_go_duration;
pub use error::ClientError;
pub use kv::{
    prefix_range_end, CompactOptions, DeleteOptions, GetOptions, KvClient, PutOptions, SortOrder,
    SortTarget,
};
pub use lease::{LeaseClient, LeaseKeepAliveStream, LeaseKeeper, LeaseOptions};
pub use maintenance::{MaintenanceClient, MaintenanceOptions, SnapshotStream};
pub use txn::{Compare, CompareOp, Txn, TxnOp};
pub use watch::{WatchBatch, WatchClient, WatchOptions, Watcher};

use endpoints::Endpoints;

/// etcd's v3 API as generated Rust (the `minietcd-proto` crate): the request and response
/// messages this client sends and returns, and the raw tonic clients.
pub use minietcd_proto as pb;

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Default time allowed to establish a connection (etcdctl's `--dial-timeout`).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Default deadline of one request (etcdctl's `--command-timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`Client`] connects and what its requests default to.
#[derive(Clone)]
pub struct ClientOptions {
    /// Time allowed to connect to one member.
    pub dial_timeout: Duration,
    /// Deadline of a request that does not set its own.
    pub request_timeout: Duration,
    /// Whether requests (and watch streams) ask the member to refuse while it has no leader.
    pub require_leader: bool,
    /// Whether to replace the endpoint list with the cluster's client URLs after connecting.
    pub discover_endpoints: bool,
    /// TLS for `https://` endpoints (and for endpoints given without a scheme, when set);
    /// without it an `https://` endpoint is dialled with the system's roots.
    pub tls: Option<tls::TlsOptions>,
    /// The user to log in as, and its password (etcdctl's `--user name:password`).
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("ClientOptions")
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("require_leader", &self.require_leader)
            .field("discover_endpoints", &self.discover_endpoints)
            .field("tls", &self.tls.is_some())
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            require_leader: false,
            discover_endpoints: false,
            tls: None,
            user: None,
        }
    }
}

impl ClientOptions {
    /// Options with etcdctl's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the dial timeout.
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }
    /// Sets the default request deadline.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
    /// Makes every request require a leader (gRPC metadata `hasleader: true`).
    pub fn require_leader(mut self, on: bool) -> Self {
        self.require_leader = on;
        self
    }
    /// Uses TLS with these options (etcdctl's `--cacert`, `--cert`, `--key`,
    /// `--insecure-skip-tls-verify`).
    pub fn tls(mut self, tls: tls::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Logs in as `name` when connecting, and again whenever the token expires.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }
    /// Discovers the other members' client URLs through MemberList after connecting.
    pub fn discover_endpoints(mut self, on: bool) -> Self {
        self.discover_endpoints = on;
        self
    }
}

/// The deadline and leader requirement of one call, resolved against the client defaults.
#[derive(Debug, Clone)]
pub(crate) struct CallOptions {
    /// Deadline of the whole call, failover included.
    pub(crate) timeout: Duration,
    /// Whether the call carries `hasleader: true`.
    pub(crate) require_leader: bool,
    /// The login whose token the call carries (read when each attempt is sent).
    pub(crate) login: Option<Arc<auth::Login>>,
}

/// Per-request overrides of the client defaults, shared by every options builder.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallOverrides {
    /// Deadline override.
    pub(crate) timeout: Option<Duration>,
    /// Leader requirement override (only ever turns it on).
    pub(crate) require_leader: bool,
}

/// Adds `timeout` and `require_leader` builder methods to an options struct with a
/// `call: CallOverrides` field.
macro_rules! call_overrides {
    ($ty:ty) => {
        impl $ty {
            /// Sets this request's deadline (failover included).
            pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
                self.call.timeout = Some(timeout);
                self
            }
            /// Asks the member to refuse this request while it has no leader.
            pub fn require_leader(mut self) -> Self {
                self.call.require_leader = true;
                self
            }
        }
    };
}
pub(crate) use call_overrides;

/// Adds the range builder methods (`prefix`, `from_key`, `range_end`) to an options struct
/// with a `range: RangeSpec` field.
macro_rules! range_setters {
    ($ty:ty) => {
        impl $ty {
            /// Every key with the given key as prefix.
            pub fn prefix(mut self) -> Self {
                self.range = $crate::kv::RangeSpec::Prefix;
                self
            }
            /// Every key >= the given key.
            pub fn from_key(mut self) -> Self {
                self.range = $crate::kv::RangeSpec::FromKey;
                self
            }
            /// Keys in `[key, end)`.
            pub fn range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
                self.range = $crate::kv::RangeSpec::End(end.into());
                self
            }
        }
    };
}
pub(crate) use range_setters;

/// The shared state behind every clone of a [`Client`].
pub(crate) struct ClientInner {
    /// Members and failover; shared with the watch stream tasks, which must not keep the
    /// client itself alive (the client's drop is what tells an idle stream task to end).
    pub(crate) endpoints: Arc<Endpoints>,
    /// Connection and request defaults.
    pub(crate) options: ClientOptions,
    /// The watch streams of this client (one per leader requirement).
    pub(crate) watch_hub: watch::WatchHub,
}

impl ClientInner {
    pub(crate) fn call_options(&self, overrides: CallOverrides) -> CallOptions {
        CallOptions {
            timeout: overrides.timeout.unwrap_or(self.options.request_timeout),
            require_leader: overrides.require_leader || self.options.require_leader,
            login: self.endpoints.login(),
        }
    }
}

/// An etcd v3 client; cheap to clone, all clones share connections and watch streams.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl Client {
    /// Connects to the first endpoint that answers within the dial timeout (trying them in
    /// order), optionally discovers the rest of the cluster, and returns the client.
    pub async fn connect<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.as_ref().to_string())
            .collect();
        let mut eps = Endpoints::with_tls(&endpoints, options.dial_timeout, options.tls.as_ref())?;
        if let Some((name, password)) = &options.user {
            eps = eps.with_login(auth::Login::new(name.clone(), password.clone()));
        }
        eps.dial_any().await?;
        eps.login_now().await?;
        let client = Client {
            inner: Arc::new(ClientInner {
                endpoints: Arc::new(eps),
                options,
                watch_hub: watch::WatchHub::default(),
            }),
        };
        if client.inner.options.discover_endpoints {
            client.sync_endpoints().await?;
        }
        Ok(client)
    }

    /// Replaces the endpoint list with the client URLs of the cluster's current members.
    pub async fn sync_endpoints(&self) -> Result<Vec<String>, ClientError> {
        let members = self.cluster().member_list().await?;
        let urls: Vec<String> = members
            .members
            .iter()
            .flat_map(|m| m.client_ur_ls.iter().cloned())
            .collect();
        self.inner.endpoints.replace(&urls)?;
        Ok(self.endpoints())
    }

    /// The endpoint URLs in use, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .members()
            .iter()
            .map(|m| m.url.clone())
            .collect()
    }

    /// The URL of the member requests currently go to first.
    pub fn current_endpoint(&self) -> String {
        self.inner.endpoints.current().1.url
    }

    /// Key-value requests.
    pub fn kv(&self) -> KvClient {
        KvClient::new(Arc::clone(&self.inner))
    }

    /// Lease requests.
    pub fn lease(&self) -> LeaseClient {
        LeaseClient::new(Arc::clone(&self.inner))
    }

    /// Watches.
    pub fn watch(&self) -> WatchClient {
        WatchClient::new(Arc::clone(&self.inner))
    }

    /// Membership requests.
    pub fn cluster(&self) -> ClusterClient {
        ClusterClient::new(Arc::clone(&self.inner))
    }

    /// Status and snapshot.
    pub fn maintenance(&self) -> MaintenanceClient {
        MaintenanceClient::new(Arc::clone(&self.inner))
    }

    /// Users, roles and permissions.
    pub fn auth(&self) -> AuthClient {
        AuthClient::new(Arc::clone(&self.inner))
    }
}
