//! `diptych.v1.IngestService`: DICOM instances into the index (acknowledged once durable) and
//! deletes by patient, study, series or instance.

use std::sync::Arc;

use diptych::api::v1::ingest_service_server::IngestService;
use diptych::api::v1::{
    DeleteRequest, DeleteResponse, IngestFailure, IngestRequest, IngestResponse, dicom_ref,
};
use tonic::{Request, Response, Status, Streaming};

use super::ServiceState;
use super::input::{invalid, uid};
use crate::index::{AcceptOutcome, IndexError, Refusal};
use crate::record::DeleteTarget;

/// The IngestService handlers.
pub struct IngestApi {
    state: Arc<ServiceState>,
}

impl IngestApi {
    /// Handlers over the shared state.
    pub fn new(state: Arc<ServiceState>) -> Self {
        Self { state }
    }
}

/// UNAVAILABLE when the index is stopping, INTERNAL otherwise.
pub fn index_error(error: IndexError) -> Status {
    match error {
        IndexError::Stopped => Status::unavailable(error.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// Instances of one Ingest stream examined and logged at the same time.
const MAX_IN_FLIGHT: usize = 16;

type Accepted = (u32, String, Result<AcceptOutcome, IndexError>);

/// Adds one instance's outcome to the answer.
fn record(
    answer: &mut IngestResponse,
    done: Result<Accepted, tokio::task::JoinError>,
) -> Result<(), Status> {
    let (position, client_ref, outcome) =
        done.map_err(|e| Status::internal(format!("an ingest task failed: {e}")))?;
    match outcome.map_err(index_error)? {
        AcceptOutcome::Accepted { slices, .. } => {
            answer.accepted += 1;
            answer.slices += slices;
        }
        AcceptOutcome::Duplicate { .. } => answer.duplicates += 1,
        AcceptOutcome::NonImage => answer.non_image += 1,
        // The index takes nothing now: the whole call fails so the client retries it (what was
        // accepted before is then answered as a duplicate).
        AcceptOutcome::Refused {
            refusal: Refusal::Unavailable(m),
            ..
        } => return Err(Status::unavailable(m)),
        AcceptOutcome::Refused {
            refusal: Refusal::DiskFull(m),
            ..
        } => return Err(Status::resource_exhausted(m)),
        AcceptOutcome::Refused {
            sop_instance_uid,
            refusal,
        } => answer.failures.push(IngestFailure {
            position,
            client_ref,
            sop_instance_uid: sop_instance_uid.unwrap_or_default(),
            reason: refusal.to_string(),
        }),
    }
    Ok(())
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn ingest(
        &self,
        request: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<IngestResponse>, Status> {
        let index = self.state.index()?;
        match index.refuses_work(0) {
            Some(Refusal::DiskFull(m)) => return Err(Status::resource_exhausted(m)),
            Some(refusal) => return Err(Status::unavailable(refusal.to_string())),
            None => {}
        }
        let mut stream = request.into_inner();
        let mut answer = IngestResponse::default();
        // Instances of one stream are examined and logged concurrently (group commit shares the
        // fsyncs); the answer still reports each by its position in the stream.
        let mut in_flight = tokio::task::JoinSet::new();
        let mut position = 0u32;
        while let Some(message) = stream.message().await? {
            let client_ref = message.client_ref;
            if message.dicom.is_empty() {
                answer.failures.push(IngestFailure {
                    position,
                    client_ref,
                    sop_instance_uid: String::new(),
                    reason: "dicom: is empty; send a DICOM Part-10 file".into(),
                });
            } else {
                let index = index.clone();
                let dicom = message.dicom;
                in_flight.spawn(async move { (position, client_ref, index.accept(dicom).await) });
                while in_flight.len() >= MAX_IN_FLIGHT {
                    if let Some(done) = in_flight.join_next().await {
                        record(&mut answer, done)?;
                    }
                }
            }
            position += 1;
        }
        while let Some(done) = in_flight.join_next().await {
            record(&mut answer, done)?;
        }
        answer.failures.sort_by_key(|f| f.position);
        Ok(Response::new(answer))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let index = self.state.index()?;
        let caller = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let target = match request.into_inner().target.and_then(|t| t.level) {
            None => {
                return Err(invalid(
                    "target",
                    "is required; set one of patient_id, study_instance_uid, \
                     series_instance_uid, sop_instance_uid",
                ));
            }
            Some(dicom_ref::Level::PatientId(id)) => {
                ("target.patient_id", DeleteTarget::Patient(id))
            }
            // UIDs are checked against the UID rule; the patient ID is any text.
            Some(dicom_ref::Level::StudyInstanceUid(id)) => {
                let field = "target.study_instance_uid";
                (field, DeleteTarget::Study(uid(field, &id)?.into_string()))
            }
            Some(dicom_ref::Level::SeriesInstanceUid(id)) => {
                let field = "target.series_instance_uid";
                (field, DeleteTarget::Series(uid(field, &id)?.into_string()))
            }
            Some(dicom_ref::Level::SopInstanceUid(id)) => {
                let field = "target.sop_instance_uid";
                (
                    field,
                    DeleteTarget::Instance(uid(field, &id)?.into_string()),
                )
            }
        };
        let (field, target) = target;
        if target.identifier().trim().is_empty() {
            return Err(invalid(field, "is empty; name what to delete"));
        }
        let level = target.level();
        let counts = index.delete(target).await.map_err(index_error)?;
        // The audit trail: who deleted at which level, and how much; never the identifier.
        tracing::info!(
            target: "audit",
            %caller,
            level,
            records = counts.records,
            instances = counts.instances,
            "delete"
        );
        if counts.records == 0 {
            return Err(Status::not_found(format!(
                "{field}: no indexed record matches; nothing was deleted"
            )));
        }
        Ok(Response::new(DeleteResponse {
            records_deleted: counts.records,
            instances_deleted: counts.instances,
        }))
    }
}
