//! `diptych.v1.IngestService`: not yet — the durable store and catalog arrive with issue #3.

use diptych::api::v1::ingest_service_server::IngestService;
use diptych::api::v1::{DeleteRequest, DeleteResponse, IngestRequest, IngestResponse};
use tonic::{Request, Response, Status, Streaming};

use super::status::not_yet;

/// IngestService handlers that answer UNIMPLEMENTED until issue #3 lands.
pub struct IngestApi;

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn ingest(
        &self,
        _request: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<IngestResponse>, Status> {
        Err(not_yet(
            "Ingest",
            "#3",
            "durable store, encoding queue and catalog",
        ))
    }

    async fn delete(
        &self,
        _request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        Err(not_yet("Delete", "#3", "durable store and catalog"))
    }
}
