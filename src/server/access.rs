//! etcd 3.4's access controller in front of the client port's HTTP side (`/health`,
//! `/version`, `/metrics`, the JSON gateway, and the 404 of any other path); gRPC calls pass
//! untouched, as etcd routes them to its gRPC server before this check.
//!
//! - `--host-whitelist`: on a plaintext listener, a request whose Host (without the port) is
//!   not listed is refused with 421 and etcd's DNS-rebinding text (CVE-2018-5702). Empty or
//!   `*` allows every host; a TLS listener allows every host.
//! - `--cors`: with `*` (the default) or an empty list every response carries
//!   `Access-Control-Allow-Origin: *`; otherwise only a request whose `Origin` is listed gets
//!   its origin back. An `OPTIONS` request (a preflight) is answered 200 with no body, on any
//!   path, as etcd does.
//!
//! Example, `--cors=http://a.example:80 --host-whitelist=localhost`: `GET /health` with
//! `Host: localhost:2379` and `Origin: http://a.example:80` is answered with that origin in
//! `Access-Control-Allow-Origin`; the same with `Host: 127.0.0.1:2379` gets 421.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The methods etcd lists in `Access-Control-Allow-Methods`.
const ALLOW_METHODS: &str = "POST, GET, OPTIONS, PUT, DELETE";
/// The headers etcd lists in `Access-Control-Allow-Headers`.
const ALLOW_HEADERS: &str = "accept, content-type, authorization";

/// `--cors` and `--host-whitelist` as one listener applies them.
#[derive(Debug, Clone)]
pub struct AccessControl {
    /// Allowed origins; `None`: every origin (`*` or empty).
    origins: Option<Arc<BTreeSet<String>>>,
    /// Allowed host names; `None`: every host (`*` or empty).
    hosts: Option<Arc<BTreeSet<String>>>,
    /// A TLS listener: the host check does not apply (etcd checks plaintext requests only).
    secure: bool,
}

impl AccessControl {
    /// From the flags' comma-separated lists (etcd: empty or `*` allows all).
    pub fn new(cors: &[String], host_whitelist: &[String], secure: bool) -> AccessControl {
        AccessControl {
            origins: allow_list(cors),
            hosts: allow_list(host_whitelist),
            secure,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.as_ref().is_none_or(|h| h.contains(host))
    }

    /// The value of `Access-Control-Allow-Origin` for a request from `origin`, if any.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            None => Some(HeaderValue::from_static("*")),
            Some(list) => {
                let origin = origin?;
                list.contains(origin.to_str().ok()?).then(|| origin.clone())
            }
        }
    }
}

fn allow_list(values: &[String]) -> Option<Arc<BTreeSet<String>>> {
    let set: BTreeSet<String> = values
        .iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    (!set.is_empty() && !set.contains("*")).then(|| Arc::new(set))
}

/// The middleware (axum `from_fn_with_state`).
pub async fn check(State(ac): State<AccessControl>, req: Request, next: Next) -> Response {
    if is_grpc(&req) {
        return next.run(req).await;
    }
    if !ac.secure {
        let host = hostname(&req);
        if !ac.host_allowed(&host) {
            tracing::warn!(host = %host, "rejecting HTTP request to prevent DNS rebinding attacks");
            return rebinding_refusal(&host);
        }
    }
    let allow = ac.allow_origin(req.headers().get(header::ORIGIN));
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    if let Some(origin) = allow {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
    }
    resp
}

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Go's `req.Host` without its port (etcd's `GetHostname`): the authority of an HTTP/2
/// request or an absolute URI, else the Host header; empty when there is none.
fn hostname(req: &Request) -> String {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    strip_port(&host).to_string()
}

/// `net.SplitHostPort`'s host, or the whole string when it has no port.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((inner, port)) = rest.split_once("]:") {
            if !port.contains(':') {
                return inner;
            }
        }
        return host;
    }
    match host.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h,
        _ => host,
    }
}

/// etcd's 421 answer to a Host not in `--host-whitelist` (Go's `http.Error` of its text).
fn rebinding_refusal(host: &str) -> Response {
    let body = format!(
        "\netcd received your request, but the Host header was unrecognized.\n\n\
         To fix this, choose one of the following options:\n\
         - Enable TLS, then any HTTPS request will be allowed.\n\
         - Add the hostname you want to use to the whitelist in settings.\n  \
         - e.g. etcd --host-whitelist {host:?}\n\n\
         This requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).\n\n"
    );
    (
        StatusCode::MISDIRECTED_REQUEST,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_as_in_go() {
        assert_eq!(strip_port("localhost:2379"), "localhost");
        assert_eq!(strip_port("localhost"), "localhost");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn empty_or_star_allows_everything() {
        let all = AccessControl::new(&["*".into()], &[], false);
        assert!(all.host_allowed("anything"));
        assert_eq!(all.allow_origin(None), Some(HeaderValue::from_static("*")));
        let some = AccessControl::new(&["http://a:80".into()], &["localhost".into()], false);
        assert!(some.host_allowed("localhost"));
        assert!(!some.host_allowed("LOCALHOST"));
        let a = HeaderValue::from_static("http://a:80");
        assert_eq!(some.allow_origin(Some(&a)), Some(a.clone()));
        let b = HeaderValue::from_static("http://b:80");
        assert_eq!(some.allow_origin(Some(&b)), None);
        assert_eq!(some.allow_origin(None), None);
    }
}
