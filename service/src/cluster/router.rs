//! The router role: the DICOM listener publishing to the ingest log, and the public search
//! answered by exact scatter-gather over the shards.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diptych::api::internal::v1::shard_service_client::ShardServiceClient;
use diptych::api::internal::v1::{DeletedRequest, DeletedResponse, ShardSearchResponse};
use diptych::api::v1::image_service_client::ImageServiceClient;
use diptych::api::v1::image_service_server::ImageServiceServer;
use diptych::api::v1::info_service_server::InfoServiceServer;
use diptych::api::v1::ingest_service_server::IngestServiceServer;
use diptych::api::v1::search_service_server::{SearchService, SearchServiceServer};
use diptych::api::v1::{
    self as pb, SearchRequest, SearchResponse, SliceRef, WatchEvent, WatchRequest, query,
};
use diptych::preprocess::PreprocessParams;
use diptych_dicom_adapter::scp::{self, ReceivedInstance, StoreOutcome, StoreSink};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use super::RoleError;
use super::ingest_log::{self, IngestLog};
use super::merge::{RankKey, merge_top_k};
use super::router_info::{RouterImage, RouterInfo, RouterListener};
use super::router_ingest::RouterIngest;
use super::shard_map::ShardMap;
use crate::bundle::Bundle;
use crate::config::{ClusterConfig, Config};
use crate::dicom::DicomSettings;
use crate::index::accept::{Examined, examine_with};

/// The [`StoreSink`] of a router: examine as a single node does, publish to the study's
/// shard, answer 0x0000 once JetStream has acknowledged.
pub struct PublishSink {
    log: IngestLog,
    params: PreprocessParams,
}

impl PublishSink {
    /// A sink publishing to `log`, checking frames against the bundle's pre-processing.
    pub fn new(log: IngestLog, params: PreprocessParams) -> Self {
        PublishSink { log, params }
    }
}

impl StoreSink for PublishSink {
    fn store(
        &self,
        instance: ReceivedInstance,
    ) -> Pin<Box<dyn Future<Output = StoreOutcome> + Send + '_>> {
        Box::pin(async move {
            let examined = tokio::task::block_in_place(|| {
                examine_with(&instance.parsed, &self.params, |_| false)
            });
            let study = match examined {
                Err(error) => return StoreOutcome::CannotUnderstand(error.to_string()),
                Ok(Examined::NonImage) => return StoreOutcome::NonImage,
                Ok(Examined::Duplicate(_)) => return StoreOutcome::Stored,
                Ok(Examined::Image(prepared)) => prepared.metadata.study_instance_uid,
            };
            match self
                .log
                .publish(&study, &instance.sop_instance_uid, instance.part10)
                .await
            {
                Ok(published) => {
                    tracing::debug!(
                        shard = published.shard,
                        sequence = published.sequence,
                        duplicate = published.duplicate,
                        "instance in the ingest log"
                    );
                    StoreOutcome::Stored
                }
                Err(error) => {
                    tracing::warn!(%error, "publish to the ingest log failed");
                    StoreOutcome::OutOfResources(error.to_string())
                }
            }
        })
    }
}

/// The shards as a router reaches them: for each shard, its replicas' clients.
#[derive(Clone)]
pub struct Shards {
    replicas: Vec<Vec<ShardServiceClient<Channel>>>,
    channels: Vec<Vec<Channel>>,
    timeout: Duration,
}

/// Why the shard list of a router is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ShardsError {
    /// The list does not have one entry per shard.
    #[error(
        "[cluster] shard_addrs has {given} entries for {shards} shards ([cluster] shards): give \
         one entry per shard, in shard order, replicas separated by |"
    )]
    Count {
        /// Entries given.
        given: usize,
        /// Shards configured.
        shards: u32,
    },
    /// An address is not a URI.
    #[error(
        "[cluster] shard_addrs: {addr:?} is not an address like http://shard-0:50051 ({message})"
    )]
    Address {
        /// The address.
        addr: String,
        /// What is wrong.
        message: String,
    },
}

impl Shards {
    /// Lazy connections to every replica of every shard of `config`.
    pub fn from_config(config: &ClusterConfig) -> Result<Shards, ShardsError> {
        if config.shard_addrs.len() != config.shards as usize {
            return Err(ShardsError::Count {
                given: config.shard_addrs.len(),
                shards: config.shards,
            });
        }
        let timeout = Duration::from_secs_f64(config.shard_timeout_s.max(0.001));
        let channels = config
            .shard_addrs
            .iter()
            .map(|entry| {
                entry
                    .split('|')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(|addr| {
                        let endpoint = Endpoint::from_shared(addr.to_string()).map_err(|e| {
                            ShardsError::Address {
                                addr: addr.to_string(),
                                message: e.to_string(),
                            }
                        })?;
                        Ok(endpoint
                            .connect_timeout(timeout)
                            .timeout(timeout)
                            .connect_lazy())
                    })
                    .collect::<Result<Vec<_>, ShardsError>>()
            })
            .collect::<Result<Vec<Vec<Channel>>, ShardsError>>()?;
        let replicas = channels
            .iter()
            .map(|set| {
                set.iter()
                    .map(|c| ShardServiceClient::new(c.clone()).max_decoding_message_size(64 << 20))
                    .collect()
            })
            .collect();
        Ok(Shards {
            replicas,
            channels,
            timeout,
        })
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.channels.len()
    }

    /// The connections to the replicas of `shard`, in the order they are tried.
    pub fn replicas(&self, shard: usize) -> &[Channel] {
        &self.channels[shard]
    }

    /// How long one call to a replica may take (`[cluster] shard_timeout_s`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `call` on the replicas of `shard` in turn until one answers (or the request is at
    /// fault); UNAVAILABLE naming the shard when none answers.
    pub async fn on_replicas<T, F, Fut>(&self, shard: usize, call: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut last = Status::unavailable(format!("shard {shard} has no replica configured"));
        for channel in &self.channels[shard] {
            match call(channel.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(status) if is_callers_fault(&status) => return Err(status),
                Err(status) => last = status,
            }
        }
        Err(Status::unavailable(format!(
            "shard {shard} did not answer ({}: {}); retry later",
            last.code(),
            last.message()
        )))
    }

    /// `call` on every shard at once (each on its replicas in turn); the answers in shard order.
    pub async fn on_every_shard<T, F, Fut>(&self, call: F) -> Vec<Result<T, Status>>
    where
        T: Send + 'static,
        F: Fn(Channel) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
    {
        on_every_shard(self.count(), |shard| {
            let (all, call) = (self.clone(), call.clone());
            async move { all.on_replicas(shard, call).await }
        })
        .await
    }

    /// `call` on one shard after another (each on its replicas in turn) until one answers or
    /// the request is at fault: for what every shard answers alike (they serve the same model).
    pub async fn on_any_shard<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut + Clone,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut last = Status::unavailable("no shard is configured");
        for shard in 0..self.count() {
            match self.on_replicas(shard, call.clone()).await {
                Err(status) if status.code() == tonic::Code::Unavailable => last = status,
                other => return other,
            }
        }
        Err(Status::unavailable(format!(
            "no shard answered ({}); retry later",
            last.message()
        )))
    }

    /// Encodes an image on a shard: how a router, which has no encoder, turns a query image
    /// into codes.
    pub async fn encode(&self, image: pb::ImageInput) -> Result<pb::EncodeResponse, Status> {
        self.on_any_shard(move |channel| {
            let image = image.clone();
            async move {
                ImageServiceClient::new(channel)
                    .max_decoding_message_size(64 << 20)
                    .encode(pb::EncodeRequest { image: Some(image) })
                    .await
                    .map(Response::into_inner)
            }
        })
        .await
    }

    /// What `shard` removed for the deletion at stream `sequence`, once a replica of it has
    /// applied it; UNAVAILABLE when none has within `[cluster] shard_timeout_s` (the deletion
    /// stays in the stream and is applied when the shard catches up).
    pub async fn deleted(&self, shard: usize, sequence: u64) -> Result<DeletedResponse, Status> {
        let wait_ms = (self.timeout.as_millis() * 3 / 4).min(60_000) as u32;
        let mut last = String::from("no replica is configured");
        for client in &self.replicas[shard] {
            let asked = client
                .clone()
                .deleted(DeletedRequest { sequence, wait_ms })
                .await;
            match asked {
                Ok(answer) if answer.get_ref().applied => return Ok(answer.into_inner()),
                Ok(_) => last = "it has not reached the deletion yet".to_string(),
                Err(status) => last = status.message().to_string(),
            }
        }
        Err(Status::unavailable(format!(
            "the deletion is stored in the ingest log, but no replica of shard {shard} confirmed \
             it within [cluster] shard_timeout_s ({last}); the shard applies it when it catches \
             up; repeating the deletion is harmless"
        )))
    }

    /// One shard's answer: its replicas tried in turn until one answers.
    async fn search(
        &self,
        shard: usize,
        request: SearchRequest,
    ) -> Result<ShardSearchResponse, Status> {
        let mut last = Status::unavailable(format!("shard {shard} has no replica configured"));
        for client in &self.replicas[shard] {
            match client.clone().search(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                // The request itself is wrong: every replica would say the same.
                Err(status) if is_callers_fault(&status) => return Err(status),
                Err(status) => last = status,
            }
        }
        Err(Status::unavailable(format!(
            "shard {shard} did not answer ({}: {}); the search cannot be exact without it, \
             retry later",
            last.code(),
            last.message()
        )))
    }

    /// The codes of an indexed slice, and the shard that holds it. With `allow_partial`, a
    /// shard that does not answer matters only when no other holds the slice.
    async fn slice_codes(
        &self,
        slice: &SliceRef,
        allow_partial: bool,
    ) -> Result<Option<(usize, pb::SliceCodes)>, Status> {
        let answers = on_every_shard(self.replicas.len(), |shard| {
            let (clients, slice) = (self.replicas[shard].clone(), slice.clone());
            async move {
                let mut last =
                    Status::unavailable(format!("shard {shard} has no replica configured"));
                for mut client in clients {
                    match client.slice_codes(slice.clone()).await {
                        Ok(r) => return Ok(r.into_inner()),
                        Err(status) if is_callers_fault(&status) => return Err(status),
                        Err(status) => last = status,
                    }
                }
                Err(Status::unavailable(format!(
                    "shard {shard} did not answer ({}); retry later",
                    last.message()
                )))
            }
        })
        .await;
        let mut missing = None;
        for (shard, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(found) if found.found => return Ok(found.codes.map(|c| (shard, c))),
                Ok(_) => {}
                Err(status) if allow_partial && status.code() == tonic::Code::Unavailable => {
                    missing.get_or_insert(status);
                }
                Err(status) => return Err(status),
            }
        }
        match missing {
            // The slice may be on the shard that did not answer.
            Some(status) => Err(status),
            None => Ok(None),
        }
    }
}

/// Whether a status blames the request rather than the shard.
fn is_callers_fault(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::PermissionDenied
    )
}

/// Runs `task` for every shard at once; the outputs in shard order.
async fn on_every_shard<T, F, Fut>(count: usize, task: F) -> Vec<Result<T, Status>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, Status>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for shard in 0..count {
        let fut = task(shard);
        set.spawn(async move { (shard, fut.await) });
    }
    let mut out: Vec<Option<Result<T, Status>>> = (0..count).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((shard, result)) => out[shard] = Some(result),
            Err(error) => tracing::error!(%error, "a shard call panicked"),
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(shard, r)| {
            r.unwrap_or_else(|| {
                Err(Status::internal(format!(
                    "the call to shard {shard} failed"
                )))
            })
        })
        .collect()
}

/// A shard's status about a field of a request, named as the router's caller sent it: a
/// shard's `image.dicom: ...` is the caller's `query.image.dicom: ...`.
fn under(prefix: &str, status: Status) -> Status {
    if status.message().starts_with("image") {
        Status::new(status.code(), format!("{prefix}.{}", status.message()))
    } else {
        status
    }
}

/// The public SearchService of a router: scatter to every shard, exact merge.
pub struct RouterSearch {
    shards: Shards,
}

impl RouterSearch {
    /// The service over `shards`.
    pub fn new(shards: Shards) -> Self {
        RouterSearch { shards }
    }

    /// The codes of a composite query: each half from its source (an image encoded on a
    /// shard, an indexed slice's codes from the shard holding it, or a code as given).
    async fn composite_codes(
        &self,
        composite: &pb::CompositeQuery,
        allow_partial: bool,
    ) -> Result<pb::SliceCodes, Status> {
        let (normal, normal_model) = self
            .code_of(
                composite.normal_from.as_ref(),
                "query.composite.normal_from",
                true,
                allow_partial,
            )
            .await?;
        let (abnormal, abnormal_model) = self
            .code_of(
                composite.abnormal_from.as_ref(),
                "query.composite.abnormal_from",
                false,
                allow_partial,
            )
            .await?;
        Ok(pb::SliceCodes {
            normal: Some(normal),
            abnormal: Some(abnormal),
            model_id: if normal_model.is_empty() {
                abnormal_model
            } else {
                normal_model
            },
        })
    }

    /// One half (`normal` or abnormal) of a composite query, and the model it comes from
    /// (empty for a code given as it is).
    async fn code_of(
        &self,
        source: Option<&pb::CodeSource>,
        field: &str,
        normal: bool,
        allow_partial: bool,
    ) -> Result<(pb::Code, String), Status> {
        let pick = |codes: pb::SliceCodes| {
            let model = codes.model_id;
            let code = if normal { codes.normal } else { codes.abnormal };
            code.map(|c| (c, model)).ok_or_else(|| {
                Status::internal(format!("{field}: a shard answered without the code"))
            })
        };
        match source.and_then(|s| s.source.as_ref()) {
            None => Err(Status::invalid_argument(format!(
                "{field}: is required; set image, indexed or code"
            ))),
            Some(pb::code_source::Source::Code(code)) => Ok((code.clone(), String::new())),
            Some(pb::code_source::Source::Image(image)) => {
                let encoded = self
                    .shards
                    .encode(image.clone())
                    .await
                    .map_err(|s| under(field, s))?;
                pick(encoded.codes.unwrap_or_default())
            }
            Some(pb::code_source::Source::Indexed(slice)) => {
                match self.shards.slice_codes(slice, allow_partial).await? {
                    Some((_, codes)) => pick(codes),
                    None => Err(Status::not_found(format!(
                        "{field}.indexed: no shard holds this slice; check the SOP Instance UID \
                         and frame"
                    ))),
                }
            }
        }
    }
}

#[tonic::async_trait]
impl SearchService for RouterSearch {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let top_k = if r.top_k == 0 { 10 } else { r.top_k as usize };
        let shards = self.shards.replicas.len();
        let allow_partial = r.allow_partial;
        // Each shard's request: a query by an indexed slice goes as it is to the shard holding
        // it (which applies exclude_query) and as that slice's codes to the others; a query
        // image (or a composite query) is encoded on a shard and goes to all as codes.
        let mut requests = vec![r.clone(); shards];
        let by_codes = |requests: &mut Vec<SearchRequest>, codes: pb::SliceCodes| {
            for request in requests.iter_mut() {
                request.query = Some(pb::Query {
                    source: Some(query::Source::Codes(codes.clone())),
                });
                request.exclude_query = false;
            }
        };
        match r.query.as_ref().and_then(|q| q.source.as_ref()) {
            Some(query::Source::Indexed(slice)) => {
                let Some((holder, codes)) = self.shards.slice_codes(slice, allow_partial).await?
                else {
                    return Err(Status::not_found(
                        "query.indexed: no shard holds this slice; check the SOP Instance UID \
                         and frame",
                    ));
                };
                for (shard, request) in requests.iter_mut().enumerate() {
                    if shard != holder {
                        request.query = Some(pb::Query {
                            source: Some(query::Source::Codes(codes.clone())),
                        });
                        request.exclude_query = false;
                    }
                }
            }
            Some(query::Source::Codes(_)) | None => {}
            Some(query::Source::Image(image)) => {
                let encoded = self
                    .shards
                    .encode(image.clone())
                    .await
                    .map_err(|s| under("query", s))?;
                by_codes(&mut requests, encoded.codes.unwrap_or_default());
            }
            Some(query::Source::Composite(composite)) => {
                let codes = self.composite_codes(composite, allow_partial).await?;
                by_codes(&mut requests, codes);
            }
        }
        let timeout = self.shards.timeout;
        let answers = on_every_shard(shards, |shard| {
            let (all, request) = (self.shards.clone(), requests[shard].clone());
            async move {
                tokio::time::timeout(timeout * 2, all.search(shard, request))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Status::unavailable(format!(
                            "shard {shard} did not answer within {:?}; retry later",
                            timeout * 2
                        )))
                    })
            }
        })
        .await;
        let mut lists = Vec::with_capacity(shards);
        let (mut matched, mut total, mut exact) = (0u64, 0u64, true);
        let mut model_id = String::new();
        let mut answered = Vec::with_capacity(shards);
        let mut missing = None;
        for answer in answers {
            let answer = match answer {
                Ok(answer) => answer,
                // A partial answer was asked for: the others' records, marked as not exact.
                Err(status) if allow_partial && status.code() == tonic::Code::Unavailable => {
                    missing.get_or_insert(status);
                    continue;
                }
                Err(status) => return Err(status),
            };
            let shard = answer.shard;
            answered.push(shard);
            let response = answer.response.unwrap_or_default();
            if answer.stream_sequences.len() != response.hits.len() {
                return Err(Status::internal(format!(
                    "shard {shard} gave {} stream sequences for {} hits; every router and shard \
                     must run the same release",
                    answer.stream_sequences.len(),
                    response.hits.len()
                )));
            }
            if model_id.is_empty() {
                model_id = response.model_id.clone();
            } else if !response.model_id.is_empty() && response.model_id != model_id {
                return Err(Status::failed_precondition(format!(
                    "shard {shard} serves model {:?}, another shard {model_id:?}: codes of two \
                     models are never compared; finish the re-index on every shard",
                    response.model_id
                )));
            }
            matched += response.records_matched;
            total += response.records_total;
            exact &= response.exact;
            lists.push(
                response
                    .hits
                    .into_iter()
                    .zip(answer.stream_sequences)
                    .collect::<Vec<_>>(),
            );
        }
        if answered.is_empty() {
            return Err(missing.unwrap_or_else(|| Status::unavailable("no shard answered")));
        }
        if let Some(status) = &missing {
            tracing::warn!(
                answered = answered.len(),
                shards,
                reason = status.message(),
                "a partial answer: some shards did not answer"
            );
            exact = false;
        }
        let merged = merge_top_k(lists, top_k, |(hit, sequence)| RankKey {
            distance: hit.distance,
            stream_sequence: *sequence,
            frame: hit.slice.as_ref().map_or(0, |s| s.frame),
        })
        .map_err(|e| Status::internal(e.to_string()))?;
        let hits = merged
            .into_iter()
            .enumerate()
            .map(|(i, (mut hit, _))| {
                hit.rank = i as u32 + 1;
                hit
            })
            .collect();
        Ok(Response::new(SearchResponse {
            hits,
            model_id,
            records_matched: matched,
            records_total: total,
            exact,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            shards_answered: answered,
            shards_total: shards as u32,
        }))
    }

    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        super::router_watch::watch(self.shards.clone(), request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Runs a router until `shutdown` completes: the DICOM listener publishing to JetStream, and
/// the public Search, Ingest, Info and Image services over the ingest log and the shards.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RoleError> {
    let map = ShardMap::new(config.cluster.shards).map_err(|e| RoleError::Config(e.to_string()))?;
    let shards =
        Shards::from_config(&config.cluster).map_err(|e| RoleError::Config(e.to_string()))?;
    let security = crate::grpc::security::Security::from_config(&config.grpc, &config.auth, |n| {
        std::env::var(n).ok()
    })
    .map_err(|e| RoleError::Config(e.to_string()))?;
    let model_dir = config.model.clone();
    let bundle = tokio::task::spawn_blocking(move || Bundle::load(model_dir))
        .await
        .map_err(|e| RoleError::Config(e.to_string()))??;
    let params = bundle.manifest.preprocess;
    let js = ingest_log::connect(&config.cluster).await?;
    // A NATS cluster that is starting has no JetStream leader yet: wait for it a while.
    let mut tries = 0;
    loop {
        let ready = match ingest_log::ensure_stream(&js, config.cluster.stream_replicas).await {
            // Replicated: usable once its replicas have elected a leader.
            Ok(mut stream) => match stream.info().await {
                Ok(info) => match info.cluster.as_ref() {
                    Some(c) if c.leader.is_none() => Err(ingest_log::LogError::Stream(
                        "the stream's replicas have not elected a leader yet".into(),
                    )),
                    _ => Ok(()),
                },
                Err(e) => Err(ingest_log::LogError::Stream(e.to_string())),
            },
            Err(error) => Err(error),
        };
        match ready {
            Ok(()) => break,
            Err(error) if tries < 60 => {
                tracing::warn!(%error, "the ingest stream is not ready; retrying");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    let log = IngestLog::new(
        js,
        map,
        Duration::from_secs_f64(config.cluster.publish_timeout_s.max(0.001)),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let mut dicom_task = None;
    // The public API beside search (docs/CLUSTER.md): ingest and deletes through the ingest
    // log, statistics summed over the shards, image calls on a shard.
    let ingest = RouterIngest::new(log.clone(), params, config.images, shards.clone());
    let mut listening = RouterListener::default();
    if config.dicom.enabled {
        let dicom = DicomSettings::from_config(&config.dicom, &config.images)
            .map_err(|e| RoleError::Config(e.to_string()))?;
        let listener = scp::bind(dicom.scp.clone())
            .await
            .map_err(|e| RoleError::Config(e.to_string()))?;
        if let Some(addr) = listener.plain_addr() {
            tracing::info!(listener = "plain", %addr, ae_title = %dicom.scp.ae_title, "DICOM listening (plain) on {addr}; instances go to the ingest log");
        }
        listening = RouterListener {
            ae_title: dicom.scp.ae_title.clone(),
            port: listener.plain_addr().map_or(0, |a| a.port()),
            tls_port: listener.tls_addr().map_or(0, |a| a.port()),
        };
        let sink = Arc::new(PublishSink::new(log, params));
        let mut stop = stop_rx.clone();
        dicom_task = Some(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(error) = listener.serve(sink, stopped).await {
                tracing::error!(%error, "the DICOM listener stopped");
            }
        }));
    }

    let addr = config.grpc.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RoleError::Bind { addr, source })?;
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in [
        "",
        "diptych.v1.SearchService",
        "diptych.v1.IngestService",
        "diptych.v1.InfoService",
        "diptych.v1.ImageService",
    ] {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), shards = config.cluster.shards, "router: gRPC listening; SERVING");
    let max = config.grpc.max_message_bytes;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = security.tls {
        server = server.tls_config(tls)?;
    }
    let mut stop = stop_rx.clone();
    server
        .layer(crate::auth::AuthLayer::new(security.policy))
        .add_service(health)
        .add_service(
            SearchServiceServer::new(RouterSearch::new(shards.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            IngestServiceServer::new(ingest)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            InfoServiceServer::new(RouterInfo::new(shards.clone(), listening, max))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            ImageServiceServer::new(RouterImage::new(shards))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(
            // Nagle off, as in `grpc::serve` (a delayed ACK per call otherwise).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await?;
    if let Some(task) = dicom_task {
        let _ = task.await;
    }
    tracing::info!("router stopped");
    Ok(())
}
