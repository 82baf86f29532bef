//! The encoder role: the model's encoder graph on ONNX Runtime (CUDA on GPU nodes), served to
//! routers and shards whose `[encoder] remote_url` names it (`diptych.internal.v1.
//! EncoderService`, docs/CLUSTER.md). Stateless: no data folder, no DICOM listener; as many
//! replicas as the encode load needs behind one Service.
//!
//! Its HTTP port (`[http] addr`) serves the single node's `/metrics` (the encoder graph's queue
//! and compute durations, batch sizes, queue depth and failures, and the gRPC layer's calls:
//! what an autoscaler reads, docs/CLUSTER.md), `/healthz` and `/readyz`.
//!
//! A batch from a caller is split into its slices and each is submitted to the local batcher,
//! so the batches of several callers merge into the session's batches as single requests do.

use std::future::Future;
use std::sync::Arc;

use diptych::api::internal::v1::encoder_service_server::{EncoderService, EncoderServiceServer};
use diptych::api::internal::v1::{EncodeBatchRequest, EncodeBatchResponse, EncodedSlice};
use tonic::{Request, Response, Status};

use super::RoleError;
use crate::bundle::Bundle;
use crate::config::Config;
use crate::encoder::{BatchError, Engine, runtime};
use crate::grpc::ServiceState;
use crate::http::{self, Metrics, Readiness, Ready};

/// The most slices one call may carry.
pub const MAX_SLICES_PER_CALL: u32 = 4096;

/// The internal `EncoderService` over this process's engine.
pub struct EncoderApi {
    engine: Arc<Engine>,
}

impl EncoderApi {
    /// Serves `engine`'s encoder graph.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl EncoderService for EncoderApi {
    async fn encode_batch(
        &self,
        request: Request<EncodeBatchRequest>,
    ) -> Result<Response<EncodeBatchResponse>, Status> {
        let request = request.into_inner();
        let model_id = &self.engine.manifest().model_id;
        if &request.model_id != model_id {
            return Err(Status::failed_precondition(format!(
                "this encoder serves model {model_id:?}, the caller's bundle is {:?}; give every \
                 router, shard and encoder the same bundle (codes of two models are never mixed)",
                request.model_id
            )));
        }
        if request.slices == 0 || request.slices > MAX_SLICES_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "slices is {}; send 1..={MAX_SLICES_PER_CALL} slices per call",
                request.slices
            )));
        }
        let pixels = self.engine.geometry().pixels();
        let expected = request.slices as usize * pixels * 4;
        if request.pixels.len() != expected {
            return Err(Status::invalid_argument(format!(
                "pixels holds {} bytes; {} slices of {pixels} float32 values need {expected}",
                request.pixels.len(),
                request.slices
            )));
        }
        let slices = request.pixels.chunks_exact(pixels * 4).map(|bytes| {
            bytes
                .chunks_exact(4)
                .map(|v| f32::from_le_bytes([v[0], v[1], v[2], v[3]]))
                .collect::<Vec<f32>>()
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (i, slice) in slices.enumerate() {
            let engine = self.engine.clone();
            tasks.spawn(async move { (i, engine.encode(slice).await) });
        }
        let mut codes = vec![None; request.slices as usize];
        while let Some(done) = tasks.join_next().await {
            let (i, code) = done.map_err(|e| Status::internal(e.to_string()))?;
            codes[i] = Some(code.map_err(|error| match error {
                BatchError::QueueFull { .. }
                | BatchError::Stopped
                | BatchError::Unavailable { .. } => Status::unavailable(format!("{error}")),
                other => Status::internal(other.to_string()),
            })?);
        }
        let slices = codes
            .into_iter()
            .map(|code| {
                let code = code.expect("every slice answered");
                EncodedSlice {
                    normal: code.normal,
                    abnormal: code.abnormal,
                    abnormal_distance: code.abnormal_distance,
                    abnormality: code.abnormality,
                }
            })
            .collect();
        Ok(Response::new(EncodeBatchResponse {
            model_id: model_id.clone(),
            slices,
        }))
    }
}

/// How long a caller's connection lives before the encoder asks it (HTTP/2 GOAWAY, in-flight
/// batches answered) to reconnect. Each caller keeps one connection, so behind a Kubernetes
/// Service its batches go to one pod; reconnecting every so often spreads the callers again
/// over the pods there are now, which is how pods the autoscaler adds get their share.
pub const MAX_CONNECTION_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// The gRPC health names of the encoder role: the process and its one service.
const HEALTH_NAMES: [&str; 2] = ["", "diptych.internal.v1.EncoderService"];

/// Runs an encoder role until `shutdown` completes: loads the bundle, binds the gRPC and HTTP
/// ports (`/metrics`, `/healthz`, `/readyz`: the single node's, with the engine's families and
/// no data folder), warms the engine up, then serves `EncoderService` and gRPC health on
/// `[grpc] addr`, behind the same TLS and tokens as any other role (the service needs role
/// admin, or loopback without tokens), each call observed as a single node's are. Readiness
/// (gRPC health and `/readyz`) is SERVING once the model is warm, NOT_SERVING again from the
/// shutdown signal on; the HTTP port stops last.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RoleError> {
    let start = |e: String| RoleError::Config(e);
    let security = crate::grpc::security::Security::from_config(&config.grpc, &config.auth, |n| {
        std::env::var(n).ok()
    })
    .map_err(|e| start(e.to_string()))?;
    let library = runtime::locate_library(config.encoder.ort_library.as_deref(), |name| {
        std::env::var(name).ok()
    })?;
    let env = runtime::environment(&library.path)?;
    let model_dir = config.model.clone();
    let bundle = tokio::task::spawn_blocking(move || Bundle::load(model_dir))
        .await
        .map_err(|e| start(e.to_string()))??;
    let addr = config.grpc.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RoleError::Bind { addr, source })?;
    let http_listener = http::bind(config.http.addr).await?;
    let http_bound = http_listener.local_addr().unwrap_or(config.http.addr);
    let (readiness, health) =
        Readiness::start_of(&HEALTH_NAMES, "starting: the model is warming up").await;
    // The single node's exporter over a state that only ever holds the engine.
    let state = Arc::new(ServiceState::new(
        config.images,
        config.grpc.max_message_bytes,
        None,
    ));
    let metrics = Arc::new(Metrics::for_engine(state.clone(), readiness.clone()));
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(http::serve(
        http_listener,
        metrics.clone(),
        readiness.clone(),
        None,
        axum::Router::new(),
        async move {
            let _ = http_stopped.await;
        },
    ));
    tracing::info!(addr = %http_bound, "encoder: HTTP listening: /metrics, /healthz, /readyz");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let stopping = readiness.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("encoder stopping: answering the batches in flight");
        stopping.stopping().await;
        let _ = stop_tx.send(true);
    });

    let options = crate::server::engine_options(&config);
    let warm = async {
        let engine = tokio::task::spawn_blocking(move || Engine::start(bundle, env, options))
            .await
            .map_err(|e| start(e.to_string()))??;
        let took = engine.warm_up().await?;
        Ok::<_, RoleError>((Arc::new(engine), took))
    };
    let mut stopped_early = stop_rx.clone();
    let warmed = tokio::select! {
        warmed = warm => warmed,
        _ = stopped_early.wait_for(|stop| *stop) => {
            let _ = http_stop.send(());
            let _ = http_task.await;
            tracing::info!("encoder stopped before it was warm");
            return Ok(());
        }
    };
    let (engine, took) = match warmed {
        Ok(warmed) => warmed,
        Err(error) => {
            let _ = http_stop.send(());
            let _ = http_task.await;
            return Err(error);
        }
    };
    state.set_engine(engine.clone());
    readiness.set(Ready::Serving).await;
    tracing::info!(
        addr = %listener.local_addr().unwrap_or(addr),
        model_id = %engine.manifest().model_id,
        provider = ?engine.provider(),
        warm_up_ms = took.as_secs_f64() * 1e3,
        "encoder: gRPC listening; SERVING"
    );
    let max = config.grpc.max_message_bytes;
    // No max_connection_age_grace: with one, tonic 0.14 skips the graceful GOAWAY and only
    // cuts the connection once age and grace have passed.
    let mut server = tonic::transport::Server::builder().max_connection_age(MAX_CONNECTION_AGE);
    if let Some(tls) = security.tls {
        server = server.tls_config(tls)?;
    }
    let served = server
        .layer(crate::grpc::observe::ObserveLayer::new(metrics.rpc()))
        .layer(crate::auth::AuthLayer::new(security.policy))
        .add_service(health)
        .add_service(
            EncoderServiceServer::new(EncoderApi::new(engine))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(
            // Nagle off, as in `grpc::serve` (a delayed ACK per call otherwise).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            },
        )
        .await;
    // The HTTP port stops last: `/readyz` says "stopping" while the batches in flight finish.
    let _ = http_stop.send(());
    let _ = http_task.await;
    served?;
    tracing::info!("encoder stopped");
    Ok(())
}
