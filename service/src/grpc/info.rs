//! `diptych.v1.InfoService`: the model card, index statistics and server capabilities. Each
//! call is an `info` event of the audit trail (who asked what; the answers hold no patient data,
//! so nobody waits for the event).

use std::sync::Arc;

use diptych::api::v1::info_service_server::InfoService;
use std::sync::atomic::Ordering;

use diptych::api::v1::{
    Capabilities, FilterField, GetCapabilitiesRequest, GetIndexStatsRequest, GetModelCardRequest,
    Grouping, IndexStats, ModelCard, SearchMode,
};
use tonic::{Request, Response, Status};

use super::ServiceState;
use super::audited::CallRecord;
use crate::audit::What;
use crate::catalog::{Catalog, FieldKind};
use crate::search::MAX_TOP_K;

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
        request: Request<GetModelCardRequest>,
    ) -> Result<Response<ModelCard>, Status> {
        let result = self.model_card();
        self.audited(&request, "get_model_card", result)
    }

    async fn get_index_stats(
        &self,
        request: Request<GetIndexStatsRequest>,
    ) -> Result<Response<IndexStats>, Status> {
        let result = self.index_stats();
        self.audited(&request, "get_index_stats", result)
    }

    async fn get_capabilities(
        &self,
        request: Request<GetCapabilitiesRequest>,
    ) -> Result<Response<Capabilities>, Status> {
        let result = self.capabilities();
        self.audited(&request, "get_capabilities", result)
    }
}

impl InfoApi {
    /// Records the `info` event of `request` to `method`, answered with `result`.
    fn audited<R, T>(
        &self,
        request: &Request<R>,
        method: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let what = What::Info {
            method: method.to_string(),
        };
        self.state
            .audit()
            .record(CallRecord::of(request).event(what, &result));
        result
    }

    fn model_card(&self) -> Result<Response<ModelCard>, Status> {
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
            combined_balance: m.combined_balance,
        }))
    }

    /// Counts of the index; zeros (and the model id) while it is still opening.
    fn index_stats(&self) -> Result<Response<IndexStats>, Status> {
        let Ok(index) = self.state.index() else {
            let model_id = self
                .state
                .engine()
                .map(|e| e.manifest().model_id.clone())
                .unwrap_or_default();
            return Ok(Response::new(IndexStats {
                model_id,
                ..IndexStats::default()
            }));
        };
        // Pending first: the catalog reloads at each commit, so counts read after
        // `pending` reached zero include every acknowledged record; read the other
        // way round, a commit between the reads shows "0 records, 0 pending".
        let pending = index.counters.pending.load(Ordering::Relaxed);
        let counts = index
            .catalog()
            .counts()
            .map_err(|e| Status::internal(e.to_string()))?;
        let (code_bytes, catalog_bytes) = index.disk_bytes();
        Ok(Response::new(IndexStats {
            records: counts.records,
            instances: counts.instances,
            series: counts.series,
            studies: counts.studies,
            patients: counts.patients,
            model_id: index.engine().manifest().model_id.clone(),
            code_bytes,
            catalog_bytes,
            pending,
            non_image: index.counters.non_image.load(Ordering::Relaxed),
        }))
    }

    /// Answers before warm-up too, with an empty execution provider and model id.
    fn capabilities(&self) -> Result<Response<Capabilities>, Status> {
        let engine = self.state.engine().ok();
        Ok(Response::new(Capabilities {
            version: env!("CARGO_PKG_VERSION").to_string(),
            execution_provider: engine
                .as_ref()
                .map(|e| e.provider().name().to_string())
                .unwrap_or_default(),
            modes: vec![
                SearchMode::Normal as i32,
                SearchMode::Abnormal as i32,
                SearchMode::Combined as i32,
            ],
            groupings: vec![
                Grouping::Instance as i32,
                Grouping::Series as i32,
                Grouping::Study as i32,
            ],
            filter_fields: Catalog::fields()
                .into_iter()
                .map(|f| FilterField {
                    name: f.name.to_string(),
                    kind: kind_name(f.kind).to_string(),
                    description: f.description.to_string(),
                })
                .collect(),
            max_top_k: MAX_TOP_K as u32,
            max_message_bytes: self.state.max_message_bytes as u64,
            exact_search: true,
            dicom_ae_title: self
                .state
                .dicom()
                .map(|d| d.ae_title.clone())
                .unwrap_or_default(),
            dicom_port: self
                .state
                .dicom()
                .and_then(|d| d.plain_port)
                .map_or(0, u32::from),
            dicom_tls_port: self
                .state
                .dicom()
                .and_then(|d| d.tls_port)
                .map_or(0, u32::from),
            transfer_syntaxes: if self.state.dicom().is_some() {
                diptych_dicom_adapter::scp::decodable_transfer_syntaxes()
            } else {
                Vec::new()
            },
            model_id: engine
                .map(|e| e.manifest().model_id.clone())
                .unwrap_or_default(),
        }))
    }
}

/// The API's name of a catalog field kind (see FilterField.kind).
fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Text => "text",
        FieldKind::Keyword => "keyword",
        FieldKind::Integer => "integer",
        FieldKind::Float => "number",
        FieldKind::Date => "date",
    }
}
