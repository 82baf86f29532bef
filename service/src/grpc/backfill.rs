//! AdminService.Backfill: the request checked and turned into a [`JobSpec`] and a [`Pace`] (an
//! archive left empty comes from the server's `[archive]` section), the job started (or
//! followed), and its progress streamed until it ends. The job itself lives in
//! [`crate::backfill`]; nothing there sees a protobuf message.

use diptych::api::v1 as pb;
use diptych_dicom_adapter::output::StudyQuery;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::archive::ArchiveConfig;
use crate::backfill::{
    Archive, Backfills, JobContext, JobSpec, Method, Pace, Progress, Source, WebArchive,
};

/// The stream of progress messages.
pub type ProgressStream = ReceiverStream<Result<pb::BackfillProgress, Status>>;

/// The job's spec and pace from a request; INVALID_ARGUMENT names the field and the fix. An
/// empty `archive` or `archive_url` is taken from the server's `[archive]` section, `defaults`.
pub fn spec_of(
    request: &pb::BackfillRequest,
    defaults: Option<&ArchiveConfig>,
) -> Result<(JobSpec, Pace), Status> {
    let invalid =
        |field: &str, e: &dyn std::fmt::Display| Status::invalid_argument(format!("{field}: {e}"));
    let method = match pb::BackfillMethod::try_from(request.method) {
        Ok(pb::BackfillMethod::CGet) => Method::CGet,
        Ok(pb::BackfillMethod::CMove) => Method::CMove,
        Ok(pb::BackfillMethod::WadoRs) => Method::WadoRs,
        Err(_) => {
            return Err(invalid(
                "method",
                &"unknown; use BACKFILL_METHOD_C_GET, BACKFILL_METHOD_C_MOVE or \
                  BACKFILL_METHOD_WADO_RS",
            ));
        }
    };
    let (node, url) = (request.archive.trim(), request.archive_url.trim());
    let archive = match method {
        Method::WadoRs => {
            if !node.is_empty() {
                return Err(invalid(
                    "archive",
                    &"BACKFILL_METHOD_WADO_RS reads from archive_url (the DICOMweb base URL), \
                      not from a DICOM node; leave archive empty, or use BACKFILL_METHOD_C_GET",
                ));
            }
            let configured = defaults.and_then(|d| d.url.as_deref());
            let url = match (url, configured) {
                ("", Some(configured)) => configured,
                ("", None) => {
                    return Err(invalid(
                        "archive_url",
                        &"BACKFILL_METHOD_WADO_RS needs the archive's DICOMweb base URL, e.g. \
                          http://pacs:8042/dicom-web (or url in the server's [archive] section)",
                    ));
                }
                (url, _) => url,
            };
            Source::Web(WebArchive::parse(url).map_err(|e| invalid("archive_url", &e))?)
        }
        Method::CGet | Method::CMove => {
            if !url.is_empty() {
                return Err(invalid(
                    "archive_url",
                    &"a DICOMweb base URL is for BACKFILL_METHOD_WADO_RS; set that method, or \
                      give the archive's DICOM node as archive for C-GET and C-MOVE",
                ));
            }
            let configured = defaults.and_then(|d| d.dicom.as_deref());
            let node = match (node, configured) {
                ("", Some(configured)) => configured,
                ("", None) => {
                    return Err(invalid(
                        "archive",
                        &"empty: give the archive's DICOM node as AE@HOST:PORT, e.g. \
                          PACS@10.0.0.7:104 (or dicom in the server's [archive] section)",
                    ));
                }
                (node, _) => node,
            };
            Source::Dicom(Archive::parse(node).map_err(|e| invalid("archive", &e))?)
        }
    };
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
    defaults: Option<&ArchiveConfig>,
) -> Result<ProgressStream, Status> {
    let (spec, pace) = spec_of(&request, defaults)?;
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
        let ok = spec_of(&request("PACS@127.0.0.1:104", "20240101", 2), None).unwrap();
        assert_eq!(ok.0.query.date_from.as_deref(), Some("20240101"));
        assert_eq!(ok.1.concurrency, 2);
        for (bad, field) in [
            (request("PACS", "", 0), "archive"),
            (request("PACS@h:104", "2024", 0), "YYYYMMDD"),
            (request("PACS@h:104", "", 99), "concurrency"),
        ] {
            let status = spec_of(&bad, None).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(field), "{}", status.message());
        }
    }

    #[test]
    fn wado_rs_takes_a_url_from_the_request_or_the_archive_section() {
        let web = |archive: &str, url: &str| pb::BackfillRequest {
            archive: archive.into(),
            archive_url: url.into(),
            method: pb::BackfillMethod::WadoRs as i32,
            ..Default::default()
        };
        let (spec, _) = spec_of(&web("", "http://pacs:8042/dicom-web/"), None).unwrap();
        assert_eq!(spec.method, Method::WadoRs);
        assert_eq!(spec.archive.to_string(), "http://pacs:8042/dicom-web");
        let section: ArchiveConfig = toml::from_str(
            "dicom = \"PACS@10.0.0.7:104\"\nurl = \"http://archive:8042/dicom-web\"",
        )
        .unwrap();
        let (spec, _) = spec_of(&web("", ""), Some(&section)).unwrap();
        assert_eq!(spec.archive.to_string(), "http://archive:8042/dicom-web");
        let dimse = pb::BackfillRequest::default();
        let (spec, _) = spec_of(&dimse, Some(&section)).unwrap();
        assert_eq!(spec.archive.to_string(), "PACS@10.0.0.7:104");
        let mixed = pb::BackfillRequest {
            archive_url: "http://pacs:8042/dicom-web".into(),
            ..Default::default()
        };
        for (bad, field, fix) in [
            (web("", ""), "archive_url: ", "http://pacs:8042/dicom-web"),
            (
                web("", "https://pacs/dicom-web"),
                "archive_url: ",
                "http://HOST:PORT/PATH",
            ),
            (
                web("PACS@h:104", "http://pacs/"),
                "archive: ",
                "leave archive empty",
            ),
            (mixed, "archive_url: ", "BACKFILL_METHOD_WADO_RS"),
            (pb::BackfillRequest::default(), "archive: ", "AE@HOST:PORT"),
            (
                pb::BackfillRequest {
                    method: 7,
                    ..web("", "http://pacs/")
                },
                "method: ",
                "BACKFILL_METHOD_WADO_RS",
            ),
        ] {
            let status = spec_of(&bad, None).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{}", status.message());
            assert!(status.message().contains(fix), "{}", status.message());
        }
    }
}
