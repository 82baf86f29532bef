//! [`CGetFetcher`]: fetches one instance again by C-GET at IMAGE level (Study Root, the study,
//! series and SOP Instance UIDs as keys), with the adapter's C-GET client
//! ([`diptych_dicom_adapter::output::fetch`]) handing the instance to an in-memory sink instead of
//! the index.

use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use diptych_dicom_adapter::output::{Destination, FetchOptions, FetchTarget, RetrieveError, fetch};
use diptych_dicom_adapter::scp::{ReceivedInstance, StoreOutcome, StoreSink};
use diptych_dicom_adapter::{Limits, Uid};

use crate::backfill::Archive;
use crate::index::{FetchError, FetchFuture, InstanceRef, SourceFetcher};

/// Fetches instances from a DICOM archive by C-GET, one association per instance.
#[derive(Debug)]
pub struct CGetFetcher {
    archive: Archive,
    calling_ae: String,
    options: FetchOptions,
}

impl CGetFetcher {
    /// Fetches from `archive`, calling it as `calling_ae`; waits at most `idle_timeout` for each
    /// of its messages and checks every instance against `limits`, as the listener does.
    pub fn new(
        archive: Archive,
        calling_ae: String,
        idle_timeout: Duration,
        limits: Limits,
    ) -> CGetFetcher {
        CGetFetcher {
            archive,
            calling_ae,
            options: FetchOptions {
                idle_timeout,
                limits,
                ..FetchOptions::default()
            },
        }
    }

    async fn fetch_one(&self, instance: &InstanceRef) -> Result<Vec<u8>, FetchError> {
        let uid = |text: &str, what: &str| {
            Uid::parse(text).map_err(|e| FetchError::Refused(format!("the record's {what}: {e}")))
        };
        let target = FetchTarget::Instance {
            study: uid(&instance.study_instance_uid, "Study Instance UID")?,
            series: uid(&instance.series_instance_uid, "Series Instance UID")?,
            instance: uid(&instance.sop_instance_uid, "SOP Instance UID")?,
        };
        let addr = self
            .archive
            .resolve()
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let destination = Destination {
            addr,
            called_ae: self.archive.ae_title.clone(),
            calling_ae: self.calling_ae.clone(),
        };
        let sink = Capture::new(&instance.sop_instance_uid);
        let report = fetch(&destination, &target, &sink, self.options)
            .await
            .map_err(|e| match e {
                RetrieveError::Associate { .. } | RetrieveError::Timeout { .. } => {
                    FetchError::Unreachable(e.to_string())
                }
                // It failed before sending anything (Orthanc answers 0xC000 for a UID it does
                // not hold).
                RetrieveError::Failed {
                    status, comment, ..
                } => FetchError::NotFound(if comment.is_empty() {
                    format!("it answered the C-GET with status 0x{status:04X}")
                } else {
                    format!("it answered the C-GET with status 0x{status:04X}: {comment}")
                }),
                other => FetchError::Refused(other.to_string()),
            })?;
        if let Some(bytes) = sink.take() {
            return Ok(bytes);
        }
        match report.refused.first() {
            Some(refused) => Err(FetchError::Refused(format!(
                "the instance it sent was refused here with status 0x{:04X}: {}",
                refused.status, refused.comment
            ))),
            None if report.archive_counts.failed > 0 => Err(FetchError::Refused(format!(
                "the archive ended the C-GET with status 0x{:04X} and a failed sub-operation \
                 (an instance of a SOP class diptych does not fetch, or the archive's own failure)",
                report.status
            ))),
            None => Err(FetchError::NotFound(format!(
                "it ended the C-GET with status 0x{:04X} and no instance",
                report.status
            ))),
        }
    }
}

impl SourceFetcher for CGetFetcher {
    fn fetch<'a>(&'a self, instance: &'a InstanceRef) -> FetchFuture<'a> {
        Box::pin(self.fetch_one(instance))
    }
}

/// Keeps the one instance asked for; anything else the archive sends is refused.
struct Capture {
    wanted: String,
    bytes: Mutex<Option<Vec<u8>>>,
}

impl Capture {
    fn new(sop_instance_uid: &str) -> Capture {
        Capture {
            wanted: sop_instance_uid.to_string(),
            bytes: Mutex::new(None),
        }
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.bytes.lock().expect("capture lock poisoned").take()
    }
}

impl StoreSink for Capture {
    fn store(
        &self,
        instance: ReceivedInstance,
    ) -> Pin<Box<dyn Future<Output = StoreOutcome> + Send + '_>> {
        Box::pin(async move {
            if instance.sop_instance_uid != self.wanted {
                return StoreOutcome::CannotUnderstand(
                    "not the instance the C-GET asked for".into(),
                );
            }
            let mut slot = self.bytes.lock().expect("capture lock poisoned");
            if slot.is_some() {
                return StoreOutcome::CannotUnderstand("the instance was sent twice".into());
            }
            *slot = Some(instance.part10);
            StoreOutcome::Stored
        })
    }
}
