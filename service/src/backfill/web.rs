//! A backfill from a DICOMweb archive: the studies it holds by QIDO-RS
//! ([`crate::archive::qido`]), then each study by WADO-RS (`GET {base}/studies/{uid}`), read part
//! by part as the answer arrives and handed, instance by instance, to the sink the C-GET path
//! feeds (the C-STORE path: checked, written, fsynced). An instance counts as pulled only once
//! the sink says it is durable; one refused here is counted with its reason.

use std::time::Duration;

use diptych_dicom_adapter::Uid;
use diptych_dicom_adapter::output::{FoundStudies, StudyQuery};
use diptych_dicom_adapter::scp::{StoreOutcome, check_part10};

use super::job::JobContext;
use super::position::Finished;
use crate::archive::dicomweb::{DicomWeb, WebError};

/// Largest instance read from a WADO-RS answer.
const MAX_INSTANCE_BYTES: usize = 1 << 30;

/// The DICOMweb archive at `url`, waiting at most `timeout` for each answer's headers (and for
/// a whole QIDO-RS page).
pub fn archive(url: &str, timeout: Duration) -> Result<DicomWeb, WebError> {
    DicomWeb::new(url, timeout)
}

/// The studies the archive holds that match `query`.
pub async fn search(web: &DicomWeb, query: &StudyQuery) -> Result<FoundStudies, WebError> {
    crate::archive::qido::search_studies(web, query).await
}

/// Pulls the study `uid` by WADO-RS into `context`'s sink; the archive may pause at most
/// `idle` between two pieces of its answer.
pub async fn retrieve(web: &DicomWeb, context: &JobContext, uid: &Uid, idle: Duration) -> Finished {
    let mut answer = match web
        .stream_instances(&format!("/studies/{uid}"), idle, MAX_INSTANCE_BYTES)
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            return Finished::Failed {
                reason: e.to_string(),
            };
        }
    };
    let source = web.authority();
    let (mut stored, mut refused) = (0u32, Vec::new());
    loop {
        let part = match answer.next().await {
            Ok(Some(part)) => part,
            Ok(None) => break,
            Err(e) => {
                return Finished::Failed {
                    reason: format!(
                        "{e}; {stored} of its instances were indexed before, the rest are pulled \
                         again on the next run"
                    ),
                };
            }
        };
        let (limits, source) = (context.limits, source.clone());
        let checked =
            tokio::task::spawn_blocking(move || check_part10(Vec::from(part), &source, &limits))
                .await;
        let instance = match checked {
            Ok(Ok(instance)) => instance,
            Ok(Err(refusal)) => {
                refused.push(refusal.to_string());
                continue;
            }
            Err(e) => {
                refused.push(format!("checking it failed: {e}"));
                continue;
            }
        };
        match context.sink.store(instance).await {
            StoreOutcome::Stored | StoreOutcome::NonImage => stored += 1,
            StoreOutcome::OutOfResources(why) => {
                refused.push(format!("status 0xA700: {why}"));
            }
            StoreOutcome::CannotUnderstand(why) => {
                refused.push(format!("status 0xC000: {why}"));
            }
        }
    }
    match refused.first() {
        Some(first) => Finished::Failed {
            reason: format!(
                "{} of its instances were refused here (first: {first}); the rest ({stored}) are \
                 indexed",
                refused.len()
            ),
        },
        None if stored == 0 => Finished::Failed {
            reason: "the archive answered the WADO-RS request with no instance; check that it \
                     still holds the study"
                .into(),
        },
        None => Finished::Indexed { instances: stored },
    }
}
