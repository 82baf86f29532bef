//! A router's InfoService and ImageService (docs/CLUSTER.md): index statistics summed over the
//! shards; the model card, capabilities and image calls answered by a shard (every shard serves
//! the same model), the capabilities with the router's own DICOM listener and message limit.

use diptych::api::v1::image_service_client::ImageServiceClient;
use diptych::api::v1::image_service_server::ImageService;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::info_service_server::InfoService;
use diptych::api::v1::{
    Capabilities, DecomposeRequest, DecomposeResponse, EncodeRequest, EncodeResponse,
    GetCapabilitiesRequest, GetIndexStatsRequest, GetModelCardRequest, IndexStats, ModelCard,
};
use tonic::{Request, Response, Status};

use super::router::Shards;

/// Largest answer a router takes from a shard (a Decompose answer holds four images).
const MAX_SHARD_ANSWER: usize = 64 << 20;

/// The router's DICOM listener, for the capabilities it reports.
#[derive(Debug, Clone, Default)]
pub struct RouterListener {
    /// Its AE title; empty when it is off.
    pub ae_title: String,
    /// Its plain port; 0 when it is off.
    pub port: u16,
    /// Its DICOM-TLS port; 0 when off.
    pub tls_port: u16,
}

/// The InfoService of a router.
pub struct RouterInfo {
    shards: Shards,
    listener: RouterListener,
    max_message_bytes: usize,
}

impl RouterInfo {
    /// Over `shards`, reporting the router's `listener` and `max_message_bytes`.
    pub fn new(shards: Shards, listener: RouterListener, max_message_bytes: usize) -> Self {
        RouterInfo {
            shards,
            listener,
            max_message_bytes,
        }
    }
}

/// Adds one shard's statistics to the cluster's.
fn add(total: &mut IndexStats, shard: IndexStats) {
    total.records += shard.records;
    total.instances += shard.instances;
    total.series += shard.series;
    total.studies += shard.studies;
    // A patient with studies on several shards counts once per shard (docs/CLUSTER.md).
    total.patients += shard.patients;
    total.code_bytes += shard.code_bytes;
    total.catalog_bytes += shard.catalog_bytes;
    total.pending += shard.pending;
    total.non_image += shard.non_image;
    if total.model_id.is_empty() {
        total.model_id = shard.model_id;
    }
}

#[tonic::async_trait]
impl InfoService for RouterInfo {
    async fn get_model_card(
        &self,
        _request: Request<GetModelCardRequest>,
    ) -> Result<Response<ModelCard>, Status> {
        let card = self
            .shards
            .on_any_shard(|channel| async move {
                InfoServiceClient::new(channel)
                    .get_model_card(GetModelCardRequest {})
                    .await
                    .map(Response::into_inner)
            })
            .await?;
        Ok(Response::new(card))
    }

    async fn get_index_stats(
        &self,
        _request: Request<GetIndexStatsRequest>,
    ) -> Result<Response<IndexStats>, Status> {
        let answers = self
            .shards
            .on_every_shard(|channel| async move {
                InfoServiceClient::new(channel)
                    .get_index_stats(GetIndexStatsRequest {})
                    .await
                    .map(Response::into_inner)
            })
            .await;
        let mut total = IndexStats::default();
        for answer in answers {
            add(&mut total, answer?);
        }
        Ok(Response::new(total))
    }

    async fn get_capabilities(
        &self,
        _request: Request<GetCapabilitiesRequest>,
    ) -> Result<Response<Capabilities>, Status> {
        let mut capabilities = self
            .shards
            .on_any_shard(|channel| async move {
                InfoServiceClient::new(channel)
                    .get_capabilities(GetCapabilitiesRequest {})
                    .await
                    .map(Response::into_inner)
            })
            .await?;
        // What a client of this router meets: its listener and its message limit.
        capabilities.dicom_ae_title = self.listener.ae_title.clone();
        capabilities.dicom_port = u32::from(self.listener.port);
        capabilities.dicom_tls_port = u32::from(self.listener.tls_port);
        if self.listener.port == 0 && self.listener.tls_port == 0 {
            capabilities.transfer_syntaxes.clear();
        }
        capabilities.max_message_bytes = self.max_message_bytes as u64;
        Ok(Response::new(capabilities))
    }
}

/// The ImageService of a router: each call answered by a shard's encoder.
pub struct RouterImage {
    shards: Shards,
}

impl RouterImage {
    /// Over `shards`.
    pub fn new(shards: Shards) -> Self {
        RouterImage { shards }
    }
}

#[tonic::async_trait]
impl ImageService for RouterImage {
    async fn encode(
        &self,
        request: Request<EncodeRequest>,
    ) -> Result<Response<EncodeResponse>, Status> {
        let image = request.into_inner().image.unwrap_or_default();
        Ok(Response::new(self.shards.encode(image).await?))
    }

    async fn decompose(
        &self,
        request: Request<DecomposeRequest>,
    ) -> Result<Response<DecomposeResponse>, Status> {
        let request = request.into_inner();
        let answer = self
            .shards
            .on_any_shard(move |channel| {
                let request = request.clone();
                async move {
                    ImageServiceClient::new(channel)
                        .max_decoding_message_size(MAX_SHARD_ANSWER)
                        .decompose(request)
                        .await
                        .map(Response::into_inner)
                }
            })
            .await?;
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_add_up_over_the_shards() {
        let shard = |records, model: &str| IndexStats {
            records,
            instances: records / 2,
            series: 1,
            studies: 1,
            patients: 1,
            model_id: model.to_string(),
            code_bytes: 10,
            catalog_bytes: 20,
            pending: 1,
            non_image: 2,
        };
        let mut total = IndexStats::default();
        add(&mut total, shard(8, "m"));
        add(&mut total, shard(4, "m"));
        assert_eq!(
            (
                total.records,
                total.instances,
                total.studies,
                total.code_bytes
            ),
            (12, 6, 2, 20)
        );
        assert_eq!((total.pending, total.non_image), (2, 4));
        assert_eq!(total.model_id, "m");
    }
}
