//! A tower layer that counts gRPC calls as go-grpc-prometheus does for etcd:
//! `grpc_server_started_total` when a call arrives, `grpc_server_handled_total` with its
//! status code when it ends (the `grpc-status` of a trailers-only response, or of the
//! trailers at the end of the body; a body dropped before its trailers, such as a watch
//! stream the client went away from, counts as `Canceled`). Requests that are not gRPC
//! (HTTP `/health`, `/metrics`) pass uncounted.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use tower_layer::Layer;
use tower_service::Service;

/// The layer: wraps the client router.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

/// The service made by [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

/// Labels of one call: grpc_type, grpc_service, grpc_method.
#[derive(Debug, Clone)]
struct Call {
    kind: &'static str,
    service: String,
    method: String,
}

impl Call {
    /// `/etcdserverpb.KV/Range` with a gRPC content type -> the call's labels.
    fn of<B>(req: &Request<B>) -> Option<Call> {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc {
            return None;
        }
        let (service, method) = req.uri().path().strip_prefix('/')?.split_once('/')?;
        Some(Call {
            kind: call_type(service, method),
            service: service.to_string(),
            method: method.to_string(),
        })
    }

    fn handled(&self, code: &str) {
        crate::metrics::grpc_handled(self.kind, &self.service, &self.method, code);
    }
}

/// go-grpc-prometheus' grpc_type of etcd's methods.
fn call_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") => "server_stream",
        _ => "unary",
    }
}

/// Go's names of the gRPC status codes (codes.Code.String()).
fn code_name(code: &str) -> &'static str {
    match code.trim() {
        "0" => "OK",
        "1" => "Canceled",
        "2" => "Unknown",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "6" => "AlreadyExists",
        "7" => "PermissionDenied",
        "8" => "ResourceExhausted",
        "9" => "FailedPrecondition",
        "10" => "Aborted",
        "11" => "OutOfRange",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        "15" => "DataLoss",
        "16" => "Unauthenticated",
        _ => "Unknown",
    }
}

/// tonic refuses a request above the decoding limit with OutOfRange and a message of its own;
/// etcd (grpc-go) answers ResourceExhausted "grpc: received message larger than max (N vs.
/// M)", which clients match on. Rewrites the first into the second (a trailers-only
/// response: the status is in the headers).
fn etcd_size_status(headers: &mut HeaderMap) {
    const PREFIX: &str = "Error, decoded message length too large: found ";
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    if status.code() != tonic::Code::OutOfRange {
        return;
    }
    let Some(rest) = status.message().strip_prefix(PREFIX) else {
        return;
    };
    let mut numbers = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let (Some(found), Some(limit)) = (numbers.next(), numbers.next()) else {
        return;
    };
    let etcd = tonic::Status::resource_exhausted(format!(
        "grpc: received message larger than max ({found} vs. {limit})"
    ));
    if etcd.add_header(headers).is_err() {
        tracing::debug!("could not rewrite an oversized request's status");
    }
}

fn status_in(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(code_name)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let call = Call::of(&req);
        if let Some(c) = &call {
            crate::metrics::grpc_started(c.kind, &c.service, &c.method);
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = match fut.await {
                Ok(res) => res,
                Err(e) => {
                    if let Some(c) = &call {
                        c.handled("Unknown");
                    }
                    return Err(e);
                }
            };
            let mut res = res;
            etcd_size_status(res.headers_mut());
            // A trailers-only response carries its status in the headers.
            let call = match (call, status_in(res.headers())) {
                (Some(c), Some(code)) => {
                    c.handled(code);
                    None
                }
                (call, _) => call,
            };
            Ok(res.map(|body| CountedBody { inner: body, call }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its call as handled when the trailers go by.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        // The call still to be counted.
        call: Option<Call>,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(c) = this.project().call.take() {
                c.handled("Canceled");
            }
        }
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    if let Some(c) = this.call.take() {
                        c.handled(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(c) = this.call.take() {
                    c.handled("Unknown");
                }
            }
            Poll::Ready(None) => {
                if let Some(c) = this.call.take() {
                    c.handled("OK");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
