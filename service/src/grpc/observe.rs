//! The tower layer in front of every gRPC service: each call gets a request id (the caller's
//! `x-request-id` when it is a sane token, else a new UUID), echoed in the response headers
//! and carried by a `grpc` span around the handler, so its log lines can be found together;
//! and [`RpcMetrics`] count it by outcome and gRPC status and time it to its end — the status in
//! the trailers, or in the headers of a trailers-only answer; a stream's duration is its life.
//!
//! Labels are bounded: a path that names no method of the API, the cluster's internal services,
//! health or reflection counts as `unknown`, whatever a client sends.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing::Instrument;

/// The header a request id comes in and goes back in.
pub const REQUEST_ID: &str = "x-request-id";

/// Labels of one RPC.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Fully qualified service, e.g. `diptych.v1.SearchService`, or `unknown`.
    pub service: String,
    /// Method, e.g. `Search`, or `unknown`.
    pub method: String,
}

/// Labels of one RPC's finished calls.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Fully qualified service.
    pub service: String,
    /// Method.
    pub method: String,
    /// `success` (status OK) or `failure` (any other status).
    pub outcome: &'static str,
    /// The gRPC status name, e.g. `OK`, `INVALID_ARGUMENT`, `UNAVAILABLE`.
    pub code: &'static str,
}

type HistogramMaker = fn() -> Histogram;

/// Per-RPC counters and durations of the gRPC server.
#[derive(Debug)]
pub struct RpcMetrics {
    /// Finished calls by outcome and status.
    pub requests: Family<OutcomeLabels, Counter>,
    /// Seconds from a call's arrival to its status.
    pub duration: Family<RpcLabels, Histogram, HistogramMaker>,
    /// Calls under way.
    pub in_flight: Family<RpcLabels, Gauge>,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        fn buckets() -> Histogram {
            // 0.5 ms to about 65 s.
            Histogram::new(exponential_buckets(0.0005, 2.0, 18))
        }
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(buckets),
            in_flight: Family::default(),
        }
    }
}

impl RpcMetrics {
    /// Registers the families as `diptych_grpc_requests_total`,
    /// `diptych_grpc_request_duration_seconds` and `diptych_grpc_requests_in_flight`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "diptych_grpc_requests",
            "gRPC calls finished, by service, method, outcome (success: status OK) and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "diptych_grpc_request_duration",
            "Seconds from a gRPC call's arrival to its status (a stream's whole life)",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            "diptych_grpc_requests_in_flight",
            "gRPC calls under way",
            self.in_flight.clone(),
        );
    }
}

/// Every `service/method` the server answers; anything else is labelled `unknown`.
static KNOWN: LazyLock<HashSet<(String, String)>> = LazyLock::new(|| {
    use prost::Message as _;
    let mut known = HashSet::new();
    for set in [
        diptych::api::FILE_DESCRIPTOR_SET,
        diptych::api::INTERNAL_FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set)
            .expect("the embedded descriptor sets are valid");
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = format!("{package}.{}", service.name.unwrap_or_default());
                for method in service.method {
                    known.insert((name.clone(), method.name.unwrap_or_default()));
                }
            }
        }
    }
    for reflection in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        known.insert((reflection.to_string(), "ServerReflectionInfo".to_string()));
    }
    known
});

/// The RPC a request path names: `/package.Service/Method`, or `unknown` twice.
pub fn rpc_of(path: &str) -> RpcLabels {
    if let Some((service, method)) = path.trim_start_matches('/').split_once('/')
        && KNOWN.contains(&(service.to_string(), method.to_string()))
    {
        return RpcLabels {
            service: service.to_string(),
            method: method.to_string(),
        };
    }
    RpcLabels {
        service: "unknown".to_string(),
        method: "unknown".to_string(),
    }
}

/// The caller's request id when it is a plain token (1 to 128 letters, digits, `-_.:`), else
/// a new UUID: a header never puts arbitrary text into the logs.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The canonical name of a gRPC status code (`OK`, `INVALID_ARGUMENT`, …).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status in a header map (headers of a trailers-only answer, or trailers).
fn status_in(headers: &HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
}

/// The layer: wrap the gRPC routes with [`Observe`].
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    metrics: Arc<RpcMetrics>,
}

impl ObserveLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<RpcMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`ObserveLayer`] makes.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

/// A call under way: recorded once, when its status is known (or it is dropped).
struct Call {
    metrics: Arc<RpcMetrics>,
    rpc: RpcLabels,
    started: Instant,
    span: tracing::Span,
}

impl Call {
    fn finish(self, code: tonic::Code) {
        let RpcLabels { service, method } = self.rpc.clone();
        let elapsed = self.started.elapsed();
        self.metrics
            .requests
            .get_or_create(&OutcomeLabels {
                service,
                method,
                outcome: if code == tonic::Code::Ok {
                    "success"
                } else {
                    "failure"
                },
                code: code_name(code),
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&self.rpc)
            .observe(elapsed.as_secs_f64());
        self.metrics.in_flight.get_or_create(&self.rpc).dec();
        tracing::debug!(
            parent: &self.span,
            code = code_name(code),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            "gRPC call finished"
        );
    }
}

impl<S, B> tower::Service<Request<tonic::body::Body>> for Observe<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = Response<ObservedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        let rpc = rpc_of(request.uri().path());
        let id = request_id(request.headers());
        let header = HeaderValue::from_str(&id).expect("request ids are plain tokens");
        request.headers_mut().insert(REQUEST_ID, header.clone());
        let span = tracing::info_span!(
            "grpc",
            request_id = %id,
            rpc = %format_args!("{}/{}", rpc.service, rpc.method)
        );
        self.metrics.in_flight.get_or_create(&rpc).inc();
        let call = Call {
            metrics: self.metrics.clone(),
            rpc,
            started: Instant::now(),
            span: span.clone(),
        };
        // The clone that was made ready is the one that is called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            match inner.call(request).instrument(span).await {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    parts.headers.insert(REQUEST_ID, header);
                    let call = match status_in(&parts.headers) {
                        // Trailers-only: the status is already known.
                        Some(code) => {
                            call.finish(code);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(Response::from_parts(
                        parts,
                        ObservedBody { inner: body, call },
                    ))
                }
                Err(error) => {
                    call.finish(tonic::Code::Unknown);
                    Err(error)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the status arrives in the trailers, when it
    /// ends without one (UNKNOWN), or when it is dropped before (CANCELLED: the client left).
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(tonic::Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| status_in(trailers).unwrap_or(tonic::Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(tonic::Code::Internal),
            Poll::Ready(None) => Some(tonic::Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request id this layer gave a call (its `x-request-id`), as a handler sees it.
pub fn request_id_of<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .metadata()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_api_are_unknown() {
        let search = rpc_of("/diptych.v1.SearchService/Search");
        assert_eq!(
            (search.service.as_str(), search.method.as_str()),
            ("diptych.v1.SearchService", "Search")
        );
        let health = rpc_of("/grpc.health.v1.Health/Check");
        assert_eq!(health.method, "Check");
        // The internal services of the cluster's roles are named too.
        let batch = rpc_of("/diptych.internal.v1.EncoderService/EncodeBatch");
        assert_eq!(
            (batch.service.as_str(), batch.method.as_str()),
            ("diptych.internal.v1.EncoderService", "EncodeBatch")
        );
        for path in [
            "/diptych.v1.SearchService/Nope",
            "/x.Y/Search",
            "/",
            "",
            "/diptych.v1.SearchService",
        ] {
            assert_eq!(rpc_of(path).service, "unknown", "{path}");
        }
    }

    #[test]
    fn request_ids_are_taken_only_when_they_are_plain_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(request_id(&headers), "abc-123_x.y:z");
        headers.insert(
            REQUEST_ID,
            HeaderValue::from_static("a b\\nforged log line"),
        );
        let made = request_id(&headers);
        assert_eq!(made.len(), 36, "a new UUID: {made}");
        headers.insert(REQUEST_ID, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(request_id(&headers).len(), 36);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }
}
