//! `diptych.v1.InfoService`: the model card, index statistics and server capabilities.

use std::sync::Arc;

use diptych::api::v1::info_service_server::InfoService;
use diptych::api::v1::{
    Capabilities, GetCapabilitiesRequest, GetIndexStatsRequest, GetModelCardRequest, IndexStats,
    ModelCard,
};
use tonic::{Request, Response, Status};

use super::ServiceState;

/// The InfoService handlers.
pub struct InfoApi {
    state: Arc<ServiceState>,
}

impl InfoApi {
    /// Handlers over the shared state.
    pub fn new(state: Arc<ServiceState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl InfoService for InfoApi {
    async fn get_model_card(
        &self,
        _request: Request<GetModelCardRequest>,
    ) -> Result<Response<ModelCard>, Status> {
        let engine = self.state.engine()?;
        let m = engine.manifest();
        Ok(Response::new(ModelCard {
            model_id: m.model_id.clone(),
            input_size: m.input_size() as u32,
            grid_rows: m.grid.rows as u32,
            grid_columns: m.grid.cols as u32,
            codebook_size: m.codebook_size as u32,
            code_dim: m.code_dim as u32,
            normal_labels: m.normal_labels.clone(),
            abnormal_labels: m.abnormal_labels.clone(),
            abnormality_margin: m.abnormality_margin,
            preprocess_json: serde_json::to_string(&m.preprocess)
                .map_err(|e| Status::internal(e.to_string()))?,
            training_json: m.training.to_string(),
            encoder_sha256: m.encoder.sha256.clone(),
            decoder_sha256: m.decoder.sha256.clone(),
        }))
    }

    /// The store and catalog arrive with issue #3; until then the index is empty.
    async fn get_index_stats(
        &self,
        _request: Request<GetIndexStatsRequest>,
    ) -> Result<Response<IndexStats>, Status> {
        let model_id = self
            .state
            .engine()
            .map(|e| e.manifest().model_id.clone())
            .unwrap_or_default();
        Ok(Response::new(IndexStats {
            model_id,
            ..IndexStats::default()
        }))
    }

    /// Answers before warm-up too, with an empty execution provider and model id.
    async fn get_capabilities(
        &self,
        _request: Request<GetCapabilitiesRequest>,
    ) -> Result<Response<Capabilities>, Status> {
        let engine = self.state.engine().ok();
        Ok(Response::new(Capabilities {
            version: env!("CARGO_PKG_VERSION").to_string(),
            execution_provider: engine
                .as_ref()
                .map(|e| e.provider().name().to_string())
                .unwrap_or_default(),
            // Search, filters, grouping and the DICOM listener arrive with issues #3 and #4.
            modes: Vec::new(),
            groupings: Vec::new(),
            filter_fields: Vec::new(),
            max_top_k: 0,
            max_message_bytes: self.state.max_message_bytes as u64,
            exact_search: false,
            dicom_ae_title: String::new(),
            dicom_port: 0,
            transfer_syntaxes: Vec::new(),
            model_id: engine
                .map(|e| e.manifest().model_id.clone())
                .unwrap_or_default(),
        }))
    }
}
