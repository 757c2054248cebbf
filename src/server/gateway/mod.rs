//! etcd's gRPC JSON gateway on the client port: `POST /v3/<path>` (and the `/v3beta/` alias)
//! with a JSON body calls the gRPC method etcd maps that path to, and answers its response as
//! JSON ([`json`]). As etcd's gateway dials its own gRPC server, this one calls the member's
//! gRPC services in-process through the same routes that serve gRPC clients, so every answer
//! and error is the service's own.
//!
//! Unary methods answer one JSON object; a gRPC error becomes
//! `{"error":msg,"message":msg,"code":n}` under grpc-gateway's HTTP status for the code.
//! Streams (`watch`, `lease/keepalive`, `election/observe`, `maintenance/snapshot`) read
//! requests as consecutive JSON objects from the body and write each response as a line
//! `{"result":{...}}`.

pub mod codec;
pub mod json;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::uri::PathAndQuery;
use prost_reflect::{MessageDescriptor, MethodDescriptor};
use tonic::client::Grpc;
use tonic::service::Routes;
use tonic::{Code, Status};

use tower_layer::Layer;

use self::codec::RawCodec;
use self::json::{request_from_json, response_to_json, Descriptors};
use super::grpc_metrics::{GrpcMetrics, GrpcMetricsLayer};

/// Gateway paths (after `/v3` or `/v3beta`) and the gRPC method each calls: etcd 3.4's
/// `google.api.http` annotations.
const ROUTES: &[(&str, &str, &str)] = &[
    ("/kv/range", "etcdserverpb.KV", "Range"),
    ("/kv/put", "etcdserverpb.KV", "Put"),
    ("/kv/deleterange", "etcdserverpb.KV", "DeleteRange"),
    ("/kv/txn", "etcdserverpb.KV", "Txn"),
    ("/kv/compaction", "etcdserverpb.KV", "Compact"),
    ("/watch", "etcdserverpb.Watch", "Watch"),
    ("/lease/grant", "etcdserverpb.Lease", "LeaseGrant"),
    ("/lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
    ("/kv/lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
    ("/lease/keepalive", "etcdserverpb.Lease", "LeaseKeepAlive"),
    ("/lease/timetolive", "etcdserverpb.Lease", "LeaseTimeToLive"),
    (
        "/kv/lease/timetolive",
        "etcdserverpb.Lease",
        "LeaseTimeToLive",
    ),
    ("/lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
    ("/kv/lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
    ("/cluster/member/add", "etcdserverpb.Cluster", "MemberAdd"),
    (
        "/cluster/member/remove",
        "etcdserverpb.Cluster",
        "MemberRemove",
    ),
    (
        "/cluster/member/update",
        "etcdserverpb.Cluster",
        "MemberUpdate",
    ),
    ("/cluster/member/list", "etcdserverpb.Cluster", "MemberList"),
    (
        "/cluster/member/promote",
        "etcdserverpb.Cluster",
        "MemberPromote",
    ),
    ("/maintenance/alarm", "etcdserverpb.Maintenance", "Alarm"),
    ("/maintenance/status", "etcdserverpb.Maintenance", "Status"),
    (
        "/maintenance/defragment",
        "etcdserverpb.Maintenance",
        "Defragment",
    ),
    ("/maintenance/hash", "etcdserverpb.Maintenance", "Hash"),
    ("/maintenance/hashkv", "etcdserverpb.Maintenance", "HashKV"),
    (
        "/maintenance/snapshot",
        "etcdserverpb.Maintenance",
        "Snapshot",
    ),
    (
        "/maintenance/transfer-leadership",
        "etcdserverpb.Maintenance",
        "MoveLeader",
    ),
    ("/auth/enable", "etcdserverpb.Auth", "AuthEnable"),
    ("/auth/disable", "etcdserverpb.Auth", "AuthDisable"),
    ("/auth/authenticate", "etcdserverpb.Auth", "Authenticate"),
    ("/auth/user/add", "etcdserverpb.Auth", "UserAdd"),
    ("/auth/user/get", "etcdserverpb.Auth", "UserGet"),
    ("/auth/user/list", "etcdserverpb.Auth", "UserList"),
    ("/auth/user/delete", "etcdserverpb.Auth", "UserDelete"),
    (
        "/auth/user/changepw",
        "etcdserverpb.Auth",
        "UserChangePassword",
    ),
    ("/auth/user/grant", "etcdserverpb.Auth", "UserGrantRole"),
    ("/auth/user/revoke", "etcdserverpb.Auth", "UserRevokeRole"),
    ("/auth/role/add", "etcdserverpb.Auth", "RoleAdd"),
    ("/auth/role/get", "etcdserverpb.Auth", "RoleGet"),
    ("/auth/role/list", "etcdserverpb.Auth", "RoleList"),
    ("/auth/role/delete", "etcdserverpb.Auth", "RoleDelete"),
    (
        "/auth/role/grant",
        "etcdserverpb.Auth",
        "RoleGrantPermission",
    ),
    (
        "/auth/role/revoke",
        "etcdserverpb.Auth",
        "RoleRevokePermission",
    ),
    ("/lock/lock", "v3lockpb.Lock", "Lock"),
    ("/lock/unlock", "v3lockpb.Lock", "Unlock"),
    ("/election/campaign", "v3electionpb.Election", "Campaign"),
    ("/election/proclaim", "v3electionpb.Election", "Proclaim"),
    ("/election/leader", "v3electionpb.Election", "Leader"),
    ("/election/observe", "v3electionpb.Election", "Observe"),
    ("/election/resign", "v3electionpb.Election", "Resign"),
];

/// The largest unary request body the gateway reads.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The member's gRPC services as the gateway calls them: counted in the gRPC metrics, as
/// etcd's gateway calls are (they go through its gRPC server).
type GrpcRoutes = GrpcMetrics<Routes>;

/// What the gateway's handler needs.
#[derive(Clone)]
pub struct Gateway {
    /// The member's gRPC services, called in-process.
    grpc: GrpcRoutes,
    /// The API's message and method descriptors.
    descriptors: Descriptors,
}

/// The gateway's routes, calling the gRPC services of `grpc`.
pub fn routes(grpc: Routes) -> Result<axum::Router, json::JsonError> {
    let gateway = Gateway {
        grpc: GrpcMetricsLayer.layer(grpc),
        descriptors: Descriptors::load()?,
    };
    Ok(axum::Router::new()
        .route("/v3/{*path}", any(handle))
        .route("/v3beta/{*path}", any(handle))
        .with_state(gateway))
}

async fn handle(State(g): State<Gateway>, req: Request) -> Response {
    let path = req.uri().path();
    let rest = path
        .strip_prefix("/v3beta")
        .or_else(|| path.strip_prefix("/v3"))
        .unwrap_or(path);
    let Some(&(_, service, name)) = ROUTES.iter().find(|(p, _, _)| *p == rest) else {
        return plain(StatusCode::NOT_FOUND, "Not Found");
    };
    if req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let Some(method) = g.descriptors.method(service, name) else {
        return error_response(&Status::unimplemented(format!("unknown method {name}")));
    };
    let grpc_path = format!("/{service}/{name}");
    let Ok(grpc_path) = PathAndQuery::try_from(grpc_path) else {
        return error_response(&Status::internal("bad method path"));
    };
    let body = req.into_body();
    match call(g.grpc, &method, grpc_path, body).await {
        Ok(resp) => resp,
        Err(status) => error_response(&status),
    }
}

/// Calls `method` with the request(s) in `body`; the HTTP response.
async fn call(
    grpc: GrpcRoutes,
    method: &MethodDescriptor,
    path: PathAndQuery,
    body: Body,
) -> Result<Response, Status> {
    let mut client = Grpc::new(grpc)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let input = method.input();
    let output = method.output();
    if method.is_client_streaming() {
        let requests = json_requests(body, input);
        let resp = client
            .streaming(tonic::Request::new(requests), path, RawCodec)
            .await?;
        return Ok(stream_response(resp.into_inner(), output));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let req = first_request(&bytes, &input)?;
    if method.is_server_streaming() {
        let resp = client
            .server_streaming(tonic::Request::new(req), path, RawCodec)
            .await?;
        return Ok(stream_response(resp.into_inner(), output));
    }
    let resp = client
        .unary(tonic::Request::new(req), path, RawCodec)
        .await?;
    let json = response_to_json(&output, resp.into_inner())
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut resp = json_response(StatusCode::OK, json);
    forward_grpc_content_type(&mut resp);
    Ok(resp)
}

/// The first JSON object of a unary request's body (an empty body is an empty request; what
/// follows the first object is ignored, as etcd's gateway does).
fn first_request(body: &[u8], input: &MessageDescriptor) -> Result<Bytes, Status> {
    let value = match serde_json::Deserializer::from_slice(body)
        .into_iter::<serde_json::Value>()
        .next()
    {
        None => serde_json::Value::Object(serde_json::Map::new()),
        Some(v) => v.map_err(|e| Status::invalid_argument(e.to_string()))?,
    };
    request_from_json(input, value).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The requests of a client stream: consecutive JSON objects in the body, each sent as soon
/// as it is complete. The stream ends (the client's half-close) with the body, or at the
/// first request that is not a valid message.
fn json_requests(body: Body, input: MessageDescriptor) -> impl Stream<Item = Bytes> + Send {
    struct State {
        body: axum::body::BodyDataStream,
        buf: Vec<u8>,
        ended: bool,
        input: MessageDescriptor,
    }
    let state = State {
        body: body.into_data_stream(),
        buf: Vec::new(),
        ended: false,
        input,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            let mut values = serde_json::Deserializer::from_slice(&s.buf).into_iter();
            match values.next() {
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    s.buf.drain(..used);
                    match request_from_json(&s.input, value) {
                        Ok(req) => return Some((req, s)),
                        Err(e) => {
                            tracing::debug!(error = %e, "gateway stream request refused");
                            return None;
                        }
                    }
                }
                Some(Err(e)) if !e.is_eof() || s.ended => {
                    tracing::debug!(error = %e, "gateway stream request refused");
                    return None;
                }
                None if s.ended => return None,
                _ => {}
            }
            match s.body.next().await {
                Some(Ok(chunk)) => s.buf.extend_from_slice(&chunk),
                _ => s.ended = true,
            }
        }
    })
}

/// A response stream as lines of `{"result":...}`; an error ends it with grpc-gateway's
/// stream error object.
fn stream_response(stream: tonic::Streaming<Bytes>, output: MessageDescriptor) -> Response {
    let lines = stream.map(move |item| {
        let line = match item {
            Ok(msg) => match response_to_json(&output, msg) {
                Ok(json) => {
                    let mut line = b"{\"result\":".to_vec();
                    line.extend_from_slice(&json);
                    line.extend_from_slice(b"}\n");
                    line
                }
                Err(e) => stream_error(&Status::internal(e.to_string())),
            },
            Err(status) => stream_error(&status),
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    let mut resp = Response::new(Body::from_stream(lines));
    set_gateway_headers(&mut resp, "application/json");
    forward_grpc_content_type(&mut resp);
    resp
}

/// grpc-gateway forwards the gRPC response's headers as `Grpc-Metadata-*`.
fn forward_grpc_content_type(resp: &mut Response) {
    resp.headers_mut().insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
}

/// grpc-gateway v1's error object inside a stream.
fn stream_error(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{},\"http_status\":{}}}}}\n",
        status.code() as i32,
        http.as_u16(),
        json_string(status.message()),
        json_string(http.canonical_reason().unwrap_or_default()),
    )
    .into_bytes()
}

/// A gRPC error as etcd's gateway answers it.
fn error_response(status: &Status) -> Response {
    let msg = json_string(status.message());
    let body = format!(
        "{{\"error\":{msg},\"message\":{msg},\"code\":{}}}",
        status.code() as i32
    );
    json_response(http_status(status.code()), body.into_bytes())
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    set_gateway_headers(&mut resp, "application/json");
    resp
}

/// Go's `http.Error` text, as etcd's gateway answers unknown paths and methods.
fn plain(status: StatusCode, message: &str) -> Response {
    let mut resp = (status, format!("{message}\n")).into_response();
    set_gateway_headers(&mut resp, "text/plain; charset=utf-8");
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The content type of a gateway answer (the CORS headers and preflights are
/// `server::access`'s, for every HTTP path of the client port).
fn set_gateway_headers(resp: &mut Response, content_type: &'static str) {
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
}

/// grpc-gateway v1's `HTTPStatusFromCode`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}
