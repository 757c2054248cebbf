//! The members a client may talk to, the one it currently uses, and failover between them.
//!
//! Like clientv3, the client talks to one member at a time and moves to the next one in the
//! list when the current one fails. Channels are lazy: a member that is down costs nothing
//! until it is tried, and a restarted one is reconnected by tonic on the next call.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use super::auth::{add_token, Login, MSG_INVALID_TOKEN};
use super::error::{never_sent, ClientError};
use super::tls::{tls_endpoint, TlsConnector, TlsOptions};
use super::CallOptions;

/// gRPC metadata key with which etcd's `WithRequireLeader` asks a member to refuse the request
/// while it has no leader.
pub(crate) const REQUIRE_LEADER_KEY: &str = "hasleader";

/// Largest response the client accepts; etcd's clients accept up to `math.MaxInt32` too, and a
/// large range or snapshot chunk must not fail on a client-side limit.
pub(crate) const MAX_RECV_MSG_BYTES: usize = i32::MAX as usize;

/// How often an idle connection is pinged so that a vanished member is noticed by a watch
/// stream that receives nothing (clientv3's `DialKeepAliveTime`).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a keep-alive ping may go unanswered before the connection is declared dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One member's address and its (lazy) channel.
#[derive(Clone)]
pub(crate) struct Member {
    /// The URL as normalised (`http://host:port`).
    pub(crate) url: String,
    /// The tonic channel; cheap to clone, reconnects by itself.
    pub(crate) channel: Channel,
}

/// The list of members and the index of the one in use.
pub(crate) struct Endpoints {
    /// Members in the order given (discovery may replace the list).
    members: RwLock<Arc<Vec<Member>>>,
    /// Index into `members` of the member requests go to first.
    current: AtomicUsize,
    /// Connect timeout for each member.
    dial_timeout: Duration,
    /// The TLS options given (etcdctl's defaults when none were).
    tls_options: TlsOptions,
    /// How `https://` members are dialled: made from `tls_options` when first needed (the
    /// system's roots are not read for a plaintext client).
    tls: OnceLock<TlsConnector>,
    /// Whether an endpoint without a scheme is dialled with TLS (TLS options were given).
    tls_by_default: bool,
    /// The user requests are made as, if any.
    login: Option<Arc<Login>>,
}

/// Turns `127.0.0.1:2379` or `http://127.0.0.1:2379` into a URL tonic can dial.
#[cfg(test)]
pub(crate) fn normalise(endpoint: &str) -> Result<String, ClientError> {
    normalise_with(endpoint, false)
}

/// Like [`normalise`]; a bare `host:port` becomes `https://` when `tls` is set.
pub(crate) fn normalise_with(endpoint: &str, tls: bool) -> Result<String, ClientError> {
    let trimmed = endpoint.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(ClientError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            reason: "empty".into(),
        });
    }
    let url = if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        trimmed.to_string()
    } else if tls {
        format!("https://{trimmed}")
    } else {
        format!("http://{trimmed}")
    };
    Ok(url)
}

impl Endpoints {
    /// Builds lazy channels for every endpoint; nothing is dialled yet.
    #[cfg(test)]
    pub(crate) fn new(endpoints: &[String], dial_timeout: Duration) -> Result<Self, ClientError> {
        Self::with_tls(endpoints, dial_timeout, None)
    }

    /// Like [`Endpoints::new`], with `tls` for `https://` endpoints (the system's roots when
    /// `None`).
    pub(crate) fn with_tls(
        endpoints: &[String],
        dial_timeout: Duration,
        tls: Option<&TlsOptions>,
    ) -> Result<Self, ClientError> {
        let tls_by_default = tls.is_some();
        let tls_options = tls.cloned().unwrap_or_default();
        if endpoints.is_empty() {
            return Err(ClientError::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no endpoints given".into(),
            });
        }
        let mut eps = Endpoints {
            members: RwLock::new(Arc::new(Vec::new())),
            current: AtomicUsize::new(0),
            dial_timeout,
            tls_options,
            tls: OnceLock::new(),
            tls_by_default,
            login: None,
        };
        let members = endpoints
            .iter()
            .map(|e| eps.member(e))
            .collect::<Result<Vec<_>, _>>()?;
        eps.members = RwLock::new(Arc::new(members));
        Ok(eps)
    }

    /// The TLS connector, made on first use.
    fn tls(&self) -> Result<&TlsConnector, ClientError> {
        if let Some(c) = self.tls.get() {
            return Ok(c);
        }
        let config = self
            .tls_options
            .client_config()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(self.tls.get_or_init(|| TlsConnector::new(config)))
    }

    /// The endpoint of `url` (normalised): an `https://` one dials through the TLS connector.
    fn endpoint(&self, url: &str) -> Result<Endpoint, ClientError> {
        let ep = if url.starts_with("https://") {
            tls_endpoint(url)
        } else {
            Endpoint::from_shared(url.to_string())
        };
        ep.map_err(|e| ClientError::InvalidEndpoint {
            endpoint: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// A lazy channel on `ep` (from [`Endpoints::endpoint`]).
    fn channel_lazy(&self, url: &str, ep: &Endpoint) -> Result<Channel, ClientError> {
        if url.starts_with("https://") {
            Ok(self.tls()?.channel_lazy(ep))
        } else {
            Ok(ep.connect_lazy())
        }
    }

    /// Makes every request as the user of `login`.
    pub(crate) fn with_login(mut self, login: Arc<Login>) -> Self {
        self.login = Some(login);
        self
    }

    /// The login requests carry, if any.
    pub(crate) fn login(&self) -> Option<Arc<Login>> {
        self.login.clone()
    }

    /// Logs in on the current member (when a user was given), so that a wrong password is
    /// an error of the connect, as in clientv3.
    pub(crate) async fn login_now(&self) -> Result<(), ClientError> {
        match &self.login {
            Some(l) => {
                let (_, member) = self.current();
                tokio::time::timeout(self.dial_timeout * 5, l.authenticate(member.channel))
                    .await
                    .map_err(|_| ClientError::Timeout(self.dial_timeout * 5))?
            }
            None => Ok(()),
        }
    }

    fn member(&self, endpoint: &str) -> Result<Member, ClientError> {
        let url = normalise_with(endpoint, self.tls_by_default)?;
        let dial_timeout = self.dial_timeout;
        let ep = self
            .endpoint(&url)?
            .connect_timeout(dial_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(Member {
            channel: self.channel_lazy(&url, &ep)?,
            url,
        })
    }

    /// A snapshot of the member list.
    pub(crate) fn members(&self) -> Arc<Vec<Member>> {
        match self.members.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The member in use and its index.
    pub(crate) fn current(&self) -> (usize, Member) {
        let members = self.members();
        let idx = self.current.load(Ordering::Acquire) % members.len().max(1);
        // The list is never empty: `new` refuses an empty list and `replace` keeps the old
        // list when discovery finds nothing.
        let member = members[idx].clone();
        (idx, member)
    }

    /// Moves on from member `failed` to the next one, unless another task already did.
    pub(crate) fn advance_from(&self, failed: usize) {
        let len = self.members().len().max(1);
        let next = (failed + 1) % len;
        if self
            .current
            .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            debug!(from = failed, to = next, "switching endpoint");
        }
    }

    /// Dials members in order, starting at the current one, until one connects within the
    /// dial timeout; that one becomes current.
    pub(crate) async fn dial_any(&self) -> Result<(), ClientError> {
        let members = self.members();
        let start = self.current.load(Ordering::Acquire);
        let mut failures = Vec::new();
        for step in 0..members.len() {
            let idx = (start + step) % members.len();
            let member = &members[idx];
            let ep = self
                .endpoint(&member.url)?
                .connect_timeout(self.dial_timeout);
            let tls = match member.url.starts_with("https://") {
                true => Some(self.tls()?),
                false => None,
            };
            let connect = async {
                match tls {
                    Some(tls) => tls.channel(&ep).await,
                    None => ep.connect().await,
                }
            };
            match tokio::time::timeout(self.dial_timeout, connect).await {
                Ok(Ok(_)) => {
                    self.current.store(idx, Ordering::Release);
                    return Ok(());
                }
                Ok(Err(e)) => {
                    use std::error::Error as _;
                    let cause = e.source().map(|s| s.to_string()).unwrap_or_default();
                    failures.push(format!("{} ({e}: {cause})", member.url));
                }
                Err(_) => failures.push(format!("{} (dial timeout)", member.url)),
            }
        }
        Err(ClientError::Unavailable(format!(
            "no endpoint answered within {:?}: {}",
            self.dial_timeout,
            failures.join(", ")
        )))
    }

    /// Replaces the member list (endpoint discovery), keeping the current member current when
    /// it is still listed.
    pub(crate) fn replace(&self, urls: &[String]) -> Result<(), ClientError> {
        if urls.is_empty() {
            return Ok(());
        }
        let (_, current) = self.current();
        let members = urls
            .iter()
            .map(|u| self.member(u))
            .collect::<Result<Vec<_>, _>>()?;
        let idx = members
            .iter()
            .position(|m| m.url == current.url)
            .unwrap_or(0);
        match self.members.write() {
            Ok(mut guard) => *guard = Arc::new(members),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(members),
        }
        self.current.store(idx, Ordering::Release);
        Ok(())
    }

    /// Runs a unary call with failover.
    ///
    /// The call is tried on the current member, then on the next ones, at most once each. A
    /// failure moves on to the next member only when it says the member is unusable, and for
    /// a write only when the request cannot have reached a server (the connection was never
    /// made): a write that reached a member and timed out may have applied, and sending it
    /// again would apply it twice (clientv3 draws the same line in its retry interceptor).
    pub(crate) async fn call<T, F, Fut>(
        &self,
        opts: &CallOptions,
        idempotent: bool,
        mut f: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = opts.timeout;
        let attempts = async {
            let tries = self.members().len().max(1);
            let mut last = ClientError::Unavailable("no endpoint tried".into());
            let mut relogged = false;
            let mut attempt = 0;
            while attempt < tries {
                attempt += 1;
                let (idx, member) = self.current();
                match f(member.channel.clone()).await {
                    Ok(resp) => return Ok(resp.into_inner()),
                    Err(status) if status.message() == MSG_INVALID_TOKEN && !relogged => {
                        // The token expired (or the member restarted): log in again and
                        // repeat the request once; the refused request was not applied.
                        let Some(login) = &opts.login else {
                            return Err(ClientError::from_status(&status));
                        };
                        relogged = true;
                        debug!(endpoint = %member.url, "token refused; logging in again");
                        login.authenticate(member.channel).await?;
                        attempt -= 1;
                    }
                    Err(status) => {
                        let err = ClientError::from_status(&status);
                        let retry =
                            never_sent(&status) || (idempotent && err.is_endpoint_failure());
                        debug!(endpoint = %member.url, code = ?status.code(), retry, "request failed");
                        if !retry {
                            return Err(err);
                        }
                        self.advance_from(idx);
                        last = err;
                    }
                }
            }
            Err(last)
        };
        match tokio::time::timeout(timeout, attempts).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }
}

/// Wraps a message in a request carrying the call's deadline, RequireLeader mark and token.
pub(crate) fn request<T>(msg: T, opts: &CallOptions) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(opts.timeout);
    add_token(&mut req, opts.login.as_deref());
    if opts.require_leader {
        req.metadata_mut().insert(
            REQUIRE_LEADER_KEY,
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised_to_urls() {
        assert_eq!(
            normalise("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            normalise("http://10.0.0.1:2379/").unwrap(),
            "http://10.0.0.1:2379"
        );
        assert!(normalise("").is_err());
        assert_eq!(normalise("https://x:1").unwrap(), "https://x:1");
        assert_eq!(normalise_with("x:1", true).unwrap(), "https://x:1");
    }

    #[tokio::test]
    async fn failover_moves_to_the_next_member_once() {
        let eps = Endpoints::new(
            &["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            Duration::from_millis(200),
        )
        .unwrap();
        assert_eq!(eps.current().0, 0);
        eps.advance_from(0);
        assert_eq!(eps.current().0, 1);
        // A second task that also saw member 0 fail must not skip member 1.
        eps.advance_from(0);
        assert_eq!(eps.current().0, 1);
        let err = eps.dial_any().await.unwrap_err();
        assert!(
            matches!(err, ClientError::Unavailable(ref m) if m.contains("127.0.0.1:2")),
            "{err}"
        );
    }
}
