//! `diptych.v1.ImageService`: Encode and Decompose.

use std::sync::Arc;
use std::time::Instant;

use diptych::api::v1::image_service_server::ImageService;
use diptych::api::v1::{
    DecomposeRequest, DecomposeResponse, EncodeRequest, EncodeResponse, ImageFormat,
};
use diptych::preprocess::Preprocessed;
use tonic::{Request, Response, Status};

use super::{ServiceState, input, output, status};
use crate::encoder::{CodePair, Engine};
use crate::render;
use crate::slice::{self, SliceSource};

/// The ImageService handlers.
pub struct ImageApi {
    state: Arc<ServiceState>,
}

impl ImageApi {
    /// Handlers over the shared state.
    pub fn new(state: Arc<ServiceState>) -> Self {
        Self { state }
    }

    /// Decodes and pre-processes the slice on a blocking thread (DICOM codecs are CPU-bound).
    async fn prepare(&self, engine: &Engine, source: SliceSource) -> Result<Preprocessed, Status> {
        let params = engine.manifest().preprocess;
        let limits = self.state.limits;
        tokio::task::spawn_blocking(move || slice::prepare(&source, &params, &limits))
            .await
            .map_err(|e| Status::internal(format!("pre-processing stopped: {e}")))?
            .map_err(status::slice)
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn encode(
        &self,
        request: Request<EncodeRequest>,
    ) -> Result<Response<EncodeResponse>, Status> {
        let started = Instant::now();
        let engine = self.state.engine()?;
        let source = input::slice_source(request.into_inner().image)?;
        let prepared = self.prepare(&engine, source).await?;
        let code = engine
            .encode(prepared.pixels)
            .await
            .map_err(|e| status::batch(&e))?;
        let geometry = engine.geometry();
        tracing::debug!(elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "Encode");
        Ok(Response::new(EncodeResponse {
            codes: Some(output::slice_codes(
                &code,
                &geometry,
                &engine.manifest().model_id,
            )),
            abnormality: code.abnormality,
            abnormal_distance: code.abnormal_distance,
        }))
    }

    async fn decompose(
        &self,
        request: Request<DecomposeRequest>,
    ) -> Result<Response<DecomposeResponse>, Status> {
        let started = Instant::now();
        let engine = self.state.engine()?;
        let request = request.into_inner();
        let format = input::image_format(request.format)?;
        let source = input::slice_source(request.image)?;
        let prepared = self.prepare(&engine, source).await?;
        let code = engine
            .encode(prepared.pixels.clone())
            .await
            .map_err(|e| status::batch(&e))?;
        let decoded = engine
            .decode(CodePair {
                normal: code.normal.clone(),
                abnormal: code.abnormal.clone(),
            })
            .await
            .map_err(|e| status::batch(&e))?;
        let geometry = engine.geometry();
        let model_id = engine.manifest().model_id.clone();
        // PNG encoding of four images is CPU work: off the async threads.
        let response = tokio::task::spawn_blocking(move || {
            let size = geometry.size;
            let labels = render::argmax_labels(&decoded.segmentation, geometry.labels, size * size);
            DecomposeResponse {
                codes: Some(output::slice_codes(&code, &geometry, &model_id)),
                abnormality: code.abnormality,
                input: Some(output::image(&prepared.pixels, size, format)),
                segmentation: Some(output::label_map(&labels, size, format)),
                reconstruction: Some(output::image(&decoded.reconstruction, size, format)),
                normal_appearing: Some(output::image(&decoded.normal_appearing, size, format)),
            }
        })
        .await
        .map_err(|e| Status::internal(format!("rendering stopped: {e}")))?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            png = format == ImageFormat::Png,
            "Decompose"
        );
        Ok(Response::new(response))
    }
}
