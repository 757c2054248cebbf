//! etcd 3.4's plain HTTP endpoints, served beside gRPC on the client port (and alone on
//! `--listen-metrics-urls`): `GET /health`, `GET /version`, `GET /metrics`.
//!
//! Bodies and status codes are etcd 3.4.23's: `/health` answers `{"health":"true"}` (200)
//! once a linearizable read succeeds, and `{"health":"false"}` with 503 when the member has
//! no leader or the read fails; `/version` answers
//! `{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::MetricsSource;
use crate::raft::proposer::Proposer;
use crate::server::maintenance::ETCD_API_VERSION;

/// The cluster version etcd 3.4 reports on `/version`: major.minor of the lowest member.
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// For the linearizable read `/health` makes, as etcd's QGET does.
    pub proposer: Proposer,
    /// How long `/health`'s read may take (etcd: its request timeout).
    pub health_timeout: Duration,
    /// The metrics' state.
    pub metrics: MetricsSource,
}

/// `/health`, `/version` and `/metrics`: what the client port serves beside gRPC.
pub fn client_routes(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// What a path nobody serves gets: gRPC's Unimplemented for a gRPC call, Go's 404 page for
/// anything else (as etcd answers `curl host:2379/nope`).
pub async fn not_found(req: axum::extract::Request) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        tonic::Status::unimplemented(format!("unknown method {}", req.uri().path()))
            .into_http::<axum::body::Body>()
    } else {
        go_http_error(StatusCode::NOT_FOUND, "404 page not found")
    }
}

/// What Go's `http.Error` writes: plain text, `nosniff`, the message and a newline.
fn go_http_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{message}\n"),
    )
        .into_response()
}

/// `/health` and `/metrics` alone: what `--listen-metrics-urls` serves.
pub fn metrics_routes(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
        .fallback(not_found)
}

async fn health(State(s): State<HttpState>) -> Response {
    let healthy = s.metrics.has_leader()
        && matches!(
            tokio::time::timeout(s.health_timeout, s.proposer.read_index()).await,
            Ok(Ok(()))
        );
    if healthy {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            r#"{"health":"true"}"#,
        )
            .into_response()
    } else {
        go_http_error(StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
    }
}

async fn version() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"etcdserver":"{ETCD_API_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}"}}"#),
    )
        .into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let body = tokio::task::spawn_blocking(move || s.metrics.gather())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
