//! A router's public IngestService (docs/CLUSTER.md): Ingest examines every instance as a single
//! node does and publishes it to its study's shard, answering success only once JetStream has
//! stored it; Delete publishes the deletion on the subject of every shard that may hold what it
//! names, so every replica applies it in stream order, and answers with what the shards removed.

use diptych::api::v1::ingest_service_server::IngestService;
use diptych::api::v1::{
    DeleteRequest, DeleteResponse, IngestFailure, IngestRequest, IngestResponse,
};
use diptych::preprocess::PreprocessParams;
use diptych_dicom_adapter::Limits;
use tonic::{Request, Response, Status, Streaming};

use super::ingest_log::IngestLog;
use super::router::Shards;
use crate::grpc::ingest::{delete_target, read_ingest_stream};
use crate::grpc::input::invalid;
use crate::index::accept::{ExamineError, Examined, examine_with};
use crate::record::DeleteTarget;

/// The IngestService of a router.
pub struct RouterIngest {
    log: IngestLog,
    params: PreprocessParams,
    limits: Limits,
    shards: Shards,
}

impl RouterIngest {
    /// Publishing to `log` what passes the examination under `limits` and the bundle's
    /// pre-processing `params`; deletions confirmed by `shards`.
    pub fn new(log: IngestLog, params: PreprocessParams, limits: Limits, shards: Shards) -> Self {
        RouterIngest {
            log,
            params,
            limits,
            shards,
        }
    }
}

/// What became of one instance of an Ingest stream on a router.
enum Offered {
    /// Stored in the ingest log with this many frames.
    Published { slices: u32, duplicate: bool },
    /// A non-image object: counted, not published (a single node indexes nothing of it).
    NonImage,
    /// It cannot be indexed: the single node's reason.
    Refused(String),
}

/// Examines `dicom` as a single node does and publishes it when it is an image.
async fn offer(
    log: IngestLog,
    params: PreprocessParams,
    limits: Limits,
    dicom: Vec<u8>,
) -> Result<Offered, Status> {
    let examined = tokio::task::spawn_blocking(move || {
        let examined = diptych_dicom_adapter::parse(&dicom, &limits)
            .map_err(ExamineError::from)
            .and_then(|parsed| examine_with(&parsed, &params, |_| false));
        (examined, dicom)
    })
    .await
    .map_err(|e| Status::internal(format!("an ingest task failed: {e}")))?;
    let prepared = match examined {
        (Err(error), _) => return Ok(Offered::Refused(error.to_string())),
        (Ok(Examined::NonImage), _) => return Ok(Offered::NonImage),
        (Ok(Examined::Duplicate(_)), _) => {
            return Ok(Offered::Published {
                slices: 0,
                duplicate: true,
            });
        }
        (Ok(Examined::Image(prepared)), dicom) => (prepared, dicom),
    };
    let (prepared, dicom) = prepared;
    let slices = prepared.frames.len() as u32;
    let published = log
        .publish(
            &prepared.metadata.study_instance_uid,
            prepared.uids.sop_instance.as_str(),
            dicom,
        )
        .await
        .map_err(|error| {
            tracing::warn!(%error, "publish to the ingest log failed");
            Status::unavailable(format!(
                "{error}; retry the call: instances already stored are kept once"
            ))
        })?;
    Ok(Offered::Published {
        slices,
        duplicate: published.duplicate,
    })
}

/// Adds one instance's outcome to the answer; an instance that could not be stored fails the
/// whole call, as on a single node, so that the client retries it.
fn record(
    answer: &mut IngestResponse,
    done: Result<(u32, String, Result<Offered, Status>), tokio::task::JoinError>,
) -> Result<(), Status> {
    let (position, client_ref, offered) =
        done.map_err(|e| Status::internal(format!("an ingest task failed: {e}")))?;
    match offered? {
        Offered::Published {
            duplicate: true, ..
        } => answer.duplicates += 1,
        Offered::Published { slices, .. } => {
            answer.accepted += 1;
            answer.slices += slices;
        }
        Offered::NonImage => answer.non_image += 1,
        Offered::Refused(reason) => answer.failures.push(IngestFailure {
            position,
            client_ref,
            sop_instance_uid: String::new(),
            reason,
        }),
    }
    Ok(())
}

#[tonic::async_trait]
impl IngestService for RouterIngest {
    async fn ingest(
        &self,
        request: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<IngestResponse>, Status> {
        let mut stream = request.into_inner();
        let mut answer = IngestResponse::default();
        let mut position = 0u32;
        let (log, params, limits) = (self.log.clone(), self.params, self.limits);
        read_ingest_stream(
            &mut stream,
            &mut answer,
            &mut position,
            move |dicom| offer(log.clone(), params, limits, dicom),
            record,
        )
        .await?;
        answer.failures.sort_by_key(|f| f.position);
        Ok(Response::new(answer))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let (field, target) = delete_target(request.into_inner())?;
        if target.identifier().trim().is_empty() {
            return Err(invalid(field, "is empty; name what to delete"));
        }
        // A study lives on one shard; a patient, series or instance may be on any.
        let shards: Vec<u32> = match &target {
            DeleteTarget::Study(uid) => vec![self.log.map().shard_of(uid)],
            _ => (0..self.shards.count() as u32).collect(),
        };
        let mut publishing = tokio::task::JoinSet::new();
        for shard in shards {
            let (log, target) = (self.log.clone(), target.clone());
            publishing.spawn(async move { (shard, log.publish_delete(shard, &target).await) });
        }
        let mut published = Vec::new();
        while let Some(done) = publishing.join_next().await {
            let (shard, result) =
                done.map_err(|e| Status::internal(format!("a deletion task failed: {e}")))?;
            let at = result.map_err(|error| {
                Status::unavailable(format!(
                    "{error}; the deletion may be stored for some shards only: retry it, a \
                     repeated deletion is harmless"
                ))
            })?;
            published.push((shard as usize, at.sequence));
        }
        tracing::info!(
            level = target.level(),
            shards = published.len(),
            "deletion stored in the ingest log"
        );
        let mut confirming = tokio::task::JoinSet::new();
        for (shard, sequence) in published {
            let shards = self.shards.clone();
            confirming.spawn(async move { shards.deleted(shard, sequence).await });
        }
        let (mut answer, mut all_known) = (DeleteResponse::default(), true);
        while let Some(done) = confirming.join_next().await {
            let confirmed =
                done.map_err(|e| Status::internal(format!("a deletion task failed: {e}")))??;
            all_known &= confirmed.known;
            answer.records_deleted += confirmed.records_deleted;
            answer.instances_deleted += confirmed.instances_deleted;
        }
        if answer.records_deleted == 0 && all_known {
            return Err(Status::not_found(format!(
                "{field}: no indexed record matches; nothing was deleted"
            )));
        }
        Ok(Response::new(answer))
    }
}
