//! The encoder role: the model's encoder graph on ONNX Runtime (CUDA on GPU nodes), served to
//! routers and shards whose `[encoder] remote_url` names it (`diptych.internal.v1.
//! EncoderService`, docs/CLUSTER.md). Stateless: no data folder, no DICOM listener; as many
//! replicas as the encode load needs behind one Service.
//!
//! A batch from a caller is split into its slices and each is submitted to the local batcher,
//! so the batches of several callers merge into the session's batches as single requests do.

use std::future::Future;
use std::sync::Arc;

use diptych::api::internal::v1::encoder_service_server::{EncoderService, EncoderServiceServer};
use diptych::api::internal::v1::{EncodeBatchRequest, EncodeBatchResponse, EncodedSlice};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use super::RoleError;
use crate::bundle::Bundle;
use crate::config::Config;
use crate::encoder::{BatchError, Engine, runtime};

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
                BatchError::QueueFull { .. } | BatchError::Stopped => {
                    Status::unavailable(format!("{error}"))
                }
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

/// Runs an encoder role until `shutdown` completes: loads the bundle, warms the engine up, then
/// serves `EncoderService` and gRPC health on `[grpc] addr`, behind the same TLS and tokens as
/// any other role (the service needs role admin, or loopback without tokens).
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
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in ["", "diptych.internal.v1.EncoderService"] {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let options = crate::server::engine_options(&config);
    let engine = tokio::task::spawn_blocking(move || Engine::start(bundle, env, options))
        .await
        .map_err(|e| start(e.to_string()))??;
    let took = engine.warm_up().await?;
    tracing::info!(
        addr = %listener.local_addr().unwrap_or(addr),
        model_id = %engine.manifest().model_id,
        provider = ?engine.provider(),
        warm_up_ms = took.as_secs_f64() * 1e3,
        "encoder: gRPC listening; SERVING"
    );
    for name in ["", "diptych.internal.v1.EncoderService"] {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let max = config.grpc.max_message_bytes;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = security.tls {
        server = server.tls_config(tls)?;
    }
    server
        .layer(crate::auth::AuthLayer::new(security.policy))
        .add_service(health)
        .add_service(
            EncoderServiceServer::new(EncoderApi::new(Arc::new(engine)))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(
            // Nagle off, as in `grpc::serve` (a delayed ACK per call otherwise).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    tracing::info!("encoder stopped");
    Ok(())
}
