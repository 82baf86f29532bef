//! `diptych.v1.ImageService`: Encode and Decompose. Each call is an `image` event of the audit
//! trail (who, which method, and the patient and UIDs of a DICOM input; never pixels), written
//! before the answer goes out.

use std::sync::Arc;
use std::time::Instant;

use diptych::api::v1::image_service_server::ImageService;
use diptych::api::v1::{
    DecomposeRequest, DecomposeResponse, EncodeRequest, EncodeResponse, ImageFormat, ImageInput,
    image_input,
};
use diptych::preprocess::Preprocessed;
use tonic::{Request, Response, Status};

use super::audited::CallRecord;
use super::{ServiceState, input, output, status};
use crate::audit::What;
use crate::encoder::{CodePair, Engine};
use crate::render;
use crate::slice::{self, SliceIdentity, SliceSource};

/// The ImageService handlers.
pub struct ImageApi {
    state: Arc<ServiceState>,
}

impl ImageApi {
    /// Handlers over the shared state.
    pub fn new(state: Arc<ServiceState>) -> Self {
        Self { state }
    }

    /// Decodes and pre-processes the slice on a blocking thread (DICOM codecs are CPU-bound);
    /// who a DICOM slice belongs to goes into `identity`.
    async fn prepare(
        &self,
        engine: &Engine,
        source: SliceSource,
        identity: &mut Option<SliceIdentity>,
    ) -> Result<Preprocessed, Status> {
        let params = engine.manifest().preprocess;
        let limits = self.state.limits;
        let (who, prepared) = tokio::task::spawn_blocking(move || {
            slice::prepare_identified(&source, &params, &limits)
        })
        .await
        .map_err(|e| Status::internal(format!("pre-processing stopped: {e}")))?;
        *identity = who;
        prepared.map_err(status::slice)
    }

    /// Records the call's `image` event and waits until it is written, then gives `result` back.
    async fn audited<T>(
        &self,
        record: CallRecord,
        what: What,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        self.state
            .audit()
            .confirm(record.event(what, &result))
            .await;
        result
    }
}

/// The kind of an image input (`dicom`, `raw` or `none`) and its frame.
fn input_kind(image: Option<&ImageInput>) -> (&'static str, u32) {
    let input = match image.and_then(|i| i.source.as_ref()) {
        Some(image_input::Source::Dicom(_)) => "dicom",
        Some(image_input::Source::Raw(_)) => "raw",
        None => "none",
    };
    (input, image.map_or(0, |i| i.frame))
}

/// The `image` event of `method` on an input of `kind` (see [`input_kind`]), with who a DICOM
/// input belongs to (identifiers its header lacks are left out).
fn image_event(method: &str, (input, frame): (&str, u32), identity: Option<SliceIdentity>) -> What {
    let identity = identity.unwrap_or_default();
    let given = |text: String| Some(text).filter(|t| !t.is_empty());
    What::Image {
        method: method.to_string(),
        input: input.to_string(),
        frame,
        patient_id: given(identity.patient_id),
        study_instance_uid: given(identity.study_instance_uid),
        sop_instance_uid: given(identity.sop_instance_uid),
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn encode(
        &self,
        request: Request<EncodeRequest>,
    ) -> Result<Response<EncodeResponse>, Status> {
        let record = CallRecord::of(&request);
        let image = request.into_inner().image;
        let kind = input_kind(image.as_ref());
        let mut identity = None;
        let result = self.encode_image(image, &mut identity).await;
        let what = image_event("encode", kind, identity);
        self.audited(record, what, result).await
    }

    async fn decompose(
        &self,
        request: Request<DecomposeRequest>,
    ) -> Result<Response<DecomposeResponse>, Status> {
        let record = CallRecord::of(&request);
        let request = request.into_inner();
        let kind = input_kind(request.image.as_ref());
        let mut identity = None;
        let result = self.decompose_image(request, &mut identity).await;
        let what = image_event("decompose", kind, identity);
        self.audited(record, what, result).await
    }
}

impl ImageApi {
    async fn encode_image(
        &self,
        image: Option<ImageInput>,
        identity: &mut Option<SliceIdentity>,
    ) -> Result<Response<EncodeResponse>, Status> {
        let started = Instant::now();
        let engine = self.state.engine()?;
        let source = input::slice_source(image)?;
        let prepared = self.prepare(&engine, source, identity).await?;
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

    async fn decompose_image(
        &self,
        request: DecomposeRequest,
        identity: &mut Option<SliceIdentity>,
    ) -> Result<Response<DecomposeResponse>, Status> {
        let started = Instant::now();
        let engine = self.state.engine()?;
        let format = input::image_format(request.format)?;
        let source = input::slice_source(request.image)?;
        let prepared = self.prepare(&engine, source, identity).await?;
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
