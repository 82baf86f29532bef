//! [`WadoFetcher`]: fetches one instance again by WADO-RS,
//! `GET {base}/studies/{study}/series/{series}/instances/{instance}`.

use std::time::Duration;

use super::dicomweb::{DicomWeb, WebError};
use crate::index::{FetchError, FetchFuture, InstanceRef, SourceFetcher};

/// Fetches instances from a DICOMweb archive by WADO-RS, one request per instance.
#[derive(Debug)]
pub struct WadoFetcher {
    archive: DicomWeb,
}

impl WadoFetcher {
    /// Fetches from the DICOMweb archive at `base`, waiting at most `timeout` per instance.
    pub fn new(base: &str, timeout: Duration) -> Result<WadoFetcher, WebError> {
        Ok(WadoFetcher {
            archive: DicomWeb::new(base, timeout)?,
        })
    }

    async fn fetch_one(&self, instance: &InstanceRef) -> Result<Vec<u8>, FetchError> {
        for uid in [
            &instance.study_instance_uid,
            &instance.series_instance_uid,
            &instance.sop_instance_uid,
        ] {
            diptych_dicom_adapter::Uid::parse(uid)
                .map_err(|e| FetchError::Refused(format!("the record's UID: {e}")))?;
        }
        let path = format!(
            "/studies/{}/series/{}/instances/{}",
            instance.study_instance_uid, instance.series_instance_uid, instance.sop_instance_uid
        );
        let found = self.archive.instances(&path).await.map_err(|e| match e {
            WebError::NotFound { .. } => {
                FetchError::NotFound("it answered the WADO-RS request with 404".into())
            }
            WebError::Unreachable { .. } | WebError::Timeout { .. } => {
                FetchError::Unreachable(e.to_string())
            }
            other => FetchError::Refused(other.to_string()),
        })?;
        let mut found = found.into_iter();
        match (found.next(), found.next()) {
            (Some(bytes), None) => Ok(bytes.to_vec()),
            (None, _) => Err(FetchError::NotFound(
                "it answered the WADO-RS request with no instance".into(),
            )),
            (Some(_), Some(_)) => Err(FetchError::Refused(
                "it answered a request for one instance with several".into(),
            )),
        }
    }
}

impl SourceFetcher for WadoFetcher {
    fn fetch<'a>(&'a self, instance: &'a InstanceRef) -> FetchFuture<'a> {
        Box::pin(self.fetch_one(instance))
    }
}
