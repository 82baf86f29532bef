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
use crate::audit::{AuditEvent, Outcome, What, Who};
use crate::auth::Caller;
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

/// FAILED_PRECONDITION on a cluster shard: what it holds comes only from the ingest stream, so
/// that every replica holds the same and a rebuilt one replays it (docs/CLUSTER.md).
fn refuse_on_shard(state: &ServiceState, what: &str) -> Result<(), Status> {
    if state.is_shard() {
        return Err(Status::failed_precondition(format!(
            "this server is a cluster shard: {what} through a router, which puts it in the \
             ingest stream for every replica"
        )));
    }
    Ok(())
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
        refuse_on_shard(&self.state, "send instances")?;
        let index = self.state.index()?;
        match index.refuses_work(0) {
            Some(Refusal::DiskFull(m)) => return Err(Status::resource_exhausted(m)),
            Some(refusal) => return Err(Status::unavailable(refusal.to_string())),
            None => {}
        }
        let who = Who::caller(request.extensions().get::<Caller>());
        let peer = request.remote_addr().map(|a| a.to_string());
        let call = super::observe::request_id_of(&request);
        let mut stream = request.into_inner();
        let mut answer = IngestResponse::default();
        let mut position = 0u32;
        let result = self
            .ingest_stream(&index, &mut stream, &mut answer, &mut position)
            .await;
        // The audit trail: who sent how many instances, and what became of them.
        let what = What::Ingest {
            instances: position,
            accepted: answer.accepted,
            duplicates: answer.duplicates,
            non_image: answer.non_image,
            failed: answer.failures.len() as u32,
        };
        let event = match &result {
            Ok(()) => AuditEvent::now(Outcome::Success, who, peer, what).with_request_id(call),
            Err(status) => AuditEvent::now(Outcome::Failure, who, peer, what)
                .with_request_id(call)
                .with_reason(status.message()),
        };
        self.state.audit().record(event);
        result?;
        answer.failures.sort_by_key(|f| f.position);
        Ok(Response::new(answer))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        refuse_on_shard(&self.state, "delete")?;
        let index = self.state.index()?;
        let who = Who::caller(request.extensions().get::<Caller>());
        let peer = request.remote_addr().map(|a| a.to_string());
        let call = super::observe::request_id_of(&request);
        let result = delete(&index, request.into_inner()).await;
        // The audit trail: who deleted what, and how much went.
        if let Some((level, identifier)) = &result.1 {
            let (records, instances) = match &result.0 {
                Ok(r) => (r.records_deleted, r.instances_deleted),
                Err(_) => (0, 0),
            };
            let what = What::Delete {
                level: level.to_string(),
                identifier: identifier.clone(),
                records,
                instances,
            };
            let event = match &result.0 {
                Ok(_) => AuditEvent::now(Outcome::Success, who, peer, what).with_request_id(call),
                Err(status) => AuditEvent::now(Outcome::Failure, who, peer, what)
                    .with_request_id(call)
                    .with_reason(status.message()),
            };
            self.state.audit().confirm(event).await;
        }
        result.0.map(Response::new)
    }
}

impl IngestApi {
    /// Reads the Ingest stream into `answer`, counting the messages in `position`.
    async fn ingest_stream(
        &self,
        index: &Arc<crate::index::Index>,
        stream: &mut Streaming<IngestRequest>,
        answer: &mut IngestResponse,
        position: &mut u32,
    ) -> Result<(), Status> {
        let index = index.clone();
        read_ingest_stream(
            stream,
            answer,
            position,
            move |dicom| {
                let index = index.clone();
                async move { index.accept(dicom).await }
            },
            record,
        )
        .await
    }
}

/// Reads an Ingest stream into `answer`, counting its messages in `position`: each non-empty
/// message's bytes go to `offer`, at most [`MAX_IN_FLIGHT`] at once (instances of one stream are
/// examined and logged concurrently, so group commit shares the fsyncs), and each outcome is
/// added by `record`, which may end the call; an empty message is a failure at its position.
/// The answer still reports each instance by its position in the stream. A single node's and
/// a cluster router's Ingest both read their streams with it.
pub(crate) async fn read_ingest_stream<T, Offer>(
    stream: &mut Streaming<IngestRequest>,
    answer: &mut IngestResponse,
    position: &mut u32,
    offer: impl Fn(Vec<u8>) -> Offer,
    record: impl Fn(
        &mut IngestResponse,
        Result<(u32, String, T), tokio::task::JoinError>,
    ) -> Result<(), Status>,
) -> Result<(), Status>
where
    Offer: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut in_flight = tokio::task::JoinSet::new();
    while let Some(message) = stream.message().await? {
        let at = *position;
        let client_ref = message.client_ref;
        if message.dicom.is_empty() {
            answer.failures.push(IngestFailure {
                position: at,
                client_ref,
                sop_instance_uid: String::new(),
                reason: "dicom: is empty; send a DICOM Part-10 file".into(),
            });
        } else {
            let offered = offer(message.dicom);
            in_flight.spawn(async move { (at, client_ref, offered.await) });
            while in_flight.len() >= MAX_IN_FLIGHT {
                if let Some(done) = in_flight.join_next().await {
                    record(answer, done)?;
                }
            }
        }
        *position += 1;
    }
    while let Some(done) = in_flight.join_next().await {
        record(answer, done)?;
    }
    Ok(())
}

/// A Delete: the answer, and the level and identifier named (None when the request named none).
type Deleted = (
    Result<DeleteResponse, Status>,
    Option<(&'static str, String)>,
);

/// What a Delete request names, and the request field that names it: INVALID_ARGUMENT when
/// it names nothing or a UID breaks the UID rule (an empty identifier is the caller's to check).
pub fn delete_target(request: DeleteRequest) -> Result<(&'static str, DeleteTarget), Status> {
    let target = match request.target.and_then(|t| t.level) {
        None => {
            return Err(invalid(
                "target",
                "is required; set one of patient_id, study_instance_uid, series_instance_uid, \
                 sop_instance_uid",
            ));
        }
        // UIDs are checked against the UID rule; the patient ID is any text.
        Some(dicom_ref::Level::PatientId(id)) => {
            ("target.patient_id", Ok(DeleteTarget::Patient(id)))
        }
        Some(dicom_ref::Level::StudyInstanceUid(id)) => {
            let field = "target.study_instance_uid";
            (
                field,
                uid(field, &id).map(|u| DeleteTarget::Study(u.into_string())),
            )
        }
        Some(dicom_ref::Level::SeriesInstanceUid(id)) => {
            let field = "target.series_instance_uid";
            (
                field,
                uid(field, &id).map(|u| DeleteTarget::Series(u.into_string())),
            )
        }
        Some(dicom_ref::Level::SopInstanceUid(id)) => {
            let field = "target.sop_instance_uid";
            (
                field,
                uid(field, &id).map(|u| DeleteTarget::Instance(u.into_string())),
            )
        }
    };
    let (field, target) = target;
    target.map(|target| (field, target))
}

/// Carries out a Delete request.
async fn delete(index: &crate::index::Index, request: DeleteRequest) -> Deleted {
    let (field, target) = match delete_target(request) {
        Ok(named) => named,
        Err(status) => return (Err(status), None),
    };
    let named = Some((target.level(), target.identifier().to_string()));
    if target.identifier().trim().is_empty() {
        return (Err(invalid(field, "is empty; name what to delete")), named);
    }
    let counts = match index.delete(target).await {
        Ok(counts) => counts,
        Err(error) => return (Err(index_error(error)), named),
    };
    if counts.records == 0 {
        return (
            Err(Status::not_found(format!(
                "{field}: no indexed record matches; nothing was deleted"
            ))),
            named,
        );
    }
    (
        Ok(DeleteResponse {
            records_deleted: counts.records,
            instances_deleted: counts.instances,
        }),
        named,
    )
}
