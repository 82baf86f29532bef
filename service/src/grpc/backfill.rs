//! AdminService.Backfill: the request checked and turned into a [`JobSpec`] and a [`Pace`], the
//! job started (or followed), and its progress streamed until it ends. The job itself lives in
//! [`crate::backfill`]; nothing there sees a protobuf message.

use diptych::api::v1 as pb;
use diptych_dicom_adapter::output::StudyQuery;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::backfill::{Archive, Backfills, JobContext, JobSpec, Method, Pace, Progress};

/// The stream of progress messages.
pub type ProgressStream = ReceiverStream<Result<pb::BackfillProgress, Status>>;

/// The job's spec and pace from a request; INVALID_ARGUMENT names the field and the fix.
pub fn spec_of(request: &pb::BackfillRequest) -> Result<(JobSpec, Pace), Status> {
    let invalid =
        |field: &str, e: &dyn std::fmt::Display| Status::invalid_argument(format!("{field}: {e}"));
    let archive = Archive::parse(request.archive.trim()).map_err(|e| invalid("archive", &e))?;
    let optional = |text: &str| {
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    };
    let query = StudyQuery {
        date_from: optional(&request.date_from),
        date_to: optional(&request.date_to),
        modality: optional(&request.modality),
        description: optional(&request.description),
    };
    query.check().map_err(|e| invalid("query", &e))?;
    let method = match pb::BackfillMethod::try_from(request.method) {
        Ok(pb::BackfillMethod::CGet) => Method::CGet,
        Ok(pb::BackfillMethod::CMove) => Method::CMove,
        Err(_) => {
            return Err(invalid(
                "method",
                &"unknown; use BACKFILL_METHOD_C_GET or BACKFILL_METHOD_C_MOVE",
            ));
        }
    };
    let pace = Pace::new(
        request.concurrency,
        request.studies_per_minute,
        &request.off_hours,
    )
    .map_err(|e| invalid("pace", &e))?;
    Ok((
        JobSpec {
            archive,
            query,
            method,
        },
        pace,
    ))
}

/// Starts (or follows) the job and streams its progress: a message on every change, the last
/// one with the final state and every failure.
pub fn start(
    backfills: &Backfills,
    context: JobContext,
    request: pb::BackfillRequest,
) -> Result<ProgressStream, Status> {
    let (spec, pace) = spec_of(&request)?;
    let mut progress = backfills
        .start_or_follow(context, spec, pace)
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let current = progress.borrow_and_update().clone();
            let last = current.state.is_final();
            if tx.send(Ok(message_of(&current))).await.is_err() || last {
                // The caller went away (the job goes on), or the job ended.
                return;
            }
            if wait_change(&mut progress).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Waits for the next change, at most one message per 100 ms.
async fn wait_change(progress: &mut watch::Receiver<Progress>) -> Result<(), ()> {
    progress.changed().await.map_err(|_| ())?;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok(())
}

fn message_of(progress: &Progress) -> pb::BackfillProgress {
    pb::BackfillProgress {
        state: progress.state.name().to_string(),
        studies_total: progress.studies_total,
        studies_indexed: progress.studies_indexed,
        studies_skipped: progress.studies_skipped,
        studies_failed: progress.studies_failed,
        instances_stored: progress.instances_stored,
        resumed_studies: progress.resumed_studies,
        elapsed_s: progress.elapsed.as_secs_f64(),
        failures: progress
            .failures
            .iter()
            .map(|f| pb::BackfillFailure {
                study_instance_uid: f.study_instance_uid.clone(),
                reason: f.reason.clone(),
            })
            .collect(),
        message: progress.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_request_names_the_field_and_the_fix() {
        let request = |archive: &str, date_from: &str, concurrency: u32| pb::BackfillRequest {
            archive: archive.into(),
            date_from: date_from.into(),
            concurrency,
            ..Default::default()
        };
        let ok = spec_of(&request("PACS@127.0.0.1:104", "20240101", 2)).unwrap();
        assert_eq!(ok.0.query.date_from.as_deref(), Some("20240101"));
        assert_eq!(ok.1.concurrency, 2);
        for (bad, field) in [
            (request("PACS", "", 0), "archive"),
            (request("PACS@h:104", "2024", 0), "YYYYMMDD"),
            (request("PACS@h:104", "", 99), "concurrency"),
        ] {
            let status = spec_of(&bad).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(field), "{}", status.message());
        }
    }
}
