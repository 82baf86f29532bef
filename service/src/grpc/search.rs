//! `diptych.v1.SearchService`: not yet — search arrives with issue #3, the watch stream with #4.

use diptych::api::v1::search_service_server::SearchService;
use diptych::api::v1::{SearchRequest, SearchResponse, WatchEvent, WatchRequest};
use tonic::{Request, Response, Status};

use super::status::not_yet;

/// SearchService handlers that answer UNIMPLEMENTED until issues #3 and #4 land.
pub struct SearchApi;

#[tonic::async_trait]
impl SearchService for SearchApi {
    async fn search(
        &self,
        _request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        Err(not_yet(
            "Search",
            "#3",
            "exact code search with filters and grouping",
        ))
    }

    type WatchStream = tokio_stream::Empty<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        _request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(not_yet(
            "Watch",
            "#4",
            "similar studies of newly received DICOM studies",
        ))
    }
}
