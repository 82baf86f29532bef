//! The HTTP port (`[http] addr`, default 0.0.0.0:8080), for what is not gRPC:
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text 0.0.4 ([`metrics`]); OpenMetrics 1.0 when `Accept` asks for it |
//! | `/healthz` | liveness: 200 `ok` while the process serves HTTP at all |
//! | `/readyz` | readiness ([`readiness`]): 200 `SERVING`, or 503 `NOT_SERVING: <reason>` — what gRPC health says |
//! | `/` and its assets | the page ([`crate::web`]), unless `http.page = false` |
//! | `POST /dicomweb/studies` | STOW-RS ([`stow`]): DICOM instances stored through the C-STORE accept path, answered once durable |
//!
//! It is bound with the gRPC port, before warm-up (liveness answers, readiness says why not
//! yet), and stops last on SIGTERM, so `/readyz` reports `stopping` while the server drains.
//!
//! By role (`[cluster] role`, docs/CLUSTER.md): a single node and a shard serve all of it; the
//! encoder role serves
//! `/metrics` (the engine's families, the gRPC layer's, readiness; no index, disk or DICOM
//! families), `/healthz` and `/readyz` only; a router binds no HTTP port yet.

pub mod metrics;
pub mod multipart;
pub mod readiness;
pub mod stow;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use thiserror::Error;
use tokio::net::TcpListener;

pub use metrics::{Format, Metrics};
pub use readiness::{Readiness, Ready};

/// Why the HTTP port could not serve.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}; choose another --http-addr")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Binds the HTTP port.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// The routes of the HTTP port; STOW-RS when `stow` is given.
pub fn router(
    metrics: Arc<Metrics>,
    readiness: Readiness,
    stow: Option<stow::Stow>,
) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Shared { metrics, readiness })
        .merge(stow.map_or_else(axum::Router::new, stow::router))
}

/// Serves [`router`] and the `extra` routes (the page) on `listener` until `shutdown`
/// completes and open requests are answered.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    stow: Option<stow::Stow>,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    axum::serve(listener, router(metrics, readiness, stow).merge(extra))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(HttpError::Serve)
}

async fn scrape(State(shared): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::from_accept(
        headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok()),
    );
    // Reading the record counts takes the code store's lock: off the async workers.
    let metrics = shared.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.encode(format)).await {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("collecting the metrics failed: {error}\n"),
        )
            .into_response(),
    }
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.readiness.get() {
        Ready::Serving => (StatusCode::OK, "SERVING\n".to_string()),
        Ready::NotServing(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("NOT_SERVING: {reason}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::ServiceState;
    use diptych_dicom_adapter::Limits;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str, accept: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[tokio::test]
    async fn probes_follow_readiness_and_metrics_answer_in_both_formats() {
        let (readiness, _health) = Readiness::start().await;
        let state = Arc::new(ServiceState::new(Limits::default(), 1 << 20, None));
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new(
            state,
            readiness.clone(),
            dir.path().to_path_buf(),
            1 << 30,
        ));
        metrics.set_dicom(Arc::default());
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            metrics,
            readiness.clone(),
            None,
            axum::Router::new(),
            async {
                let _ = stopped.await;
            },
        ));

        assert_eq!(get(addr, "/healthz", "*/*").await.0, 200);
        let (status, _, body) = get(addr, "/readyz", "*/*").await;
        assert_eq!(status, 503);
        assert!(body.starts_with("NOT_SERVING: starting"), "{body}");
        readiness.set(Ready::Serving).await;
        let (status, _, body) = get(addr, "/readyz", "*/*").await;
        assert_eq!((status, body.as_str()), (200, "SERVING\n"));
        readiness
            .set(Ready::NotServing(
                "indexing keeps failing: disk full".into(),
            ))
            .await;
        let (status, _, body) = get(addr, "/readyz", "*/*").await;
        assert_eq!(
            (status, body.as_str()),
            (503, "NOT_SERVING: indexing keeps failing: disk full\n")
        );

        let (status, head, body) = get(addr, "/metrics", "text/plain").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            body.contains("# TYPE diptych_serving gauge\ndiptych_serving 0\n"),
            "{body}"
        );
        assert!(body.contains("diptych_data_disk_free_bytes "), "{body}");
        assert!(
            body.contains("diptych_dicom_associations_open 0\n"),
            "{body}"
        );
        assert!(!body.contains("# EOF"), "{body}");
        let (status, head, body) = get(
            addr,
            "/metrics",
            "application/openmetrics-text;version=1.0.0",
        )
        .await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(
            body.contains("# UNIT diptych_data_disk_free_bytes bytes"),
            "{body}"
        );
        assert_eq!(get(addr, "/nothing", "*/*").await.0, 404);

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
