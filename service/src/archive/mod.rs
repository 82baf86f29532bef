//! The archive a re-index fetches instances from again (issue #13): records without a usable
//! kept frame — indexed with `[index] keep_frames` off, or a new bundle that pre-processes
//! differently — are re-encoded from their instance, fetched by UID from the archive named in
//! the `[archive]` section of the configuration ([`ArchiveConfig`]).
//!
//! | module | what it is for |
//! |---|---|
//! | [`cget`] | [`CGetFetcher`]: one instance by C-GET at IMAGE level, into memory |
//! | [`wado`] | [`WadoFetcher`]: one instance by WADO-RS |
//! | [`dicomweb`] | [`dicomweb::DicomWeb`]: the DICOMweb client (plain HTTP, bounded answers) |
//! | [`qido`] | QIDO-RS study search, for a backfill from a DICOMweb archive |
//!
//! C-MOVE cannot serve here: the archive would send the instance to diptych's listener, which
//! indexes it, not to the re-index that asked for it.

pub mod cget;
pub mod dicomweb;
pub mod qido;
pub mod wado;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cget::CGetFetcher;
pub use wado::WadoFetcher;

use crate::backfill::{Archive, Method};
use crate::index::SourceFetcher;

/// The `[archive]` section: where a re-index fetches instances it cannot re-encode from a kept
/// frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// The archive's DICOM node, `AE@HOST:PORT`, for `c-get`; diptych calls it with
    /// `dicom.ae_title`.
    pub dicom: Option<String>,
    /// The archive's DICOMweb base URL, `http://HOST:PORT/PATH`, for `wado-rs`.
    pub url: Option<String>,
    /// How instances are fetched: `c-get` or `wado-rs`.
    #[serde(default = "default_method")]
    pub method: Method,
    /// Longest wait for the archive's next message (C-GET) or answer (WADO-RS) while one
    /// instance is fetched, in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn default_method() -> Method {
    Method::CGet
}

fn default_timeout_s() -> u64 {
    120
}

/// What is wrong with an `[archive]` section: the key and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArchiveConfigError {
    /// `archive.dicom` is missing or not `AE@HOST:PORT`.
    #[error("archive.dicom: {0}")]
    Dicom(String),
    /// `archive.url` is missing or unusable.
    #[error("archive.url: {0}")]
    Url(String),
    /// C-MOVE was asked for.
    #[error(
        "archive.method = \"c-move\" cannot serve a re-index: the archive would send the instances \
         to diptych's DICOM listener, not back to the re-index; use \"c-get\" or \"wado-rs\""
    )]
    Move,
    /// A zero timeout.
    #[error("archive.timeout_s must be at least 1 second")]
    Timeout,
}

impl ArchiveConfig {
    /// Checks the section without connecting to anything.
    pub fn check(&self) -> Result<(), ArchiveConfigError> {
        if self.timeout_s == 0 {
            return Err(ArchiveConfigError::Timeout);
        }
        match self.method {
            Method::CMove => Err(ArchiveConfigError::Move),
            Method::CGet => self.dicom_node().map(|_| ()),
            Method::WadoRs => {
                let url = self.url.as_deref().ok_or_else(|| {
                    ArchiveConfigError::Url(
                        "method \"wado-rs\" needs the DICOMweb base URL, e.g. \
                         url = \"http://pacs:8042/dicom-web\""
                            .into(),
                    )
                })?;
                dicomweb::check_url(url).map_err(|e| ArchiveConfigError::Url(e.to_string()))
            }
        }
    }

    fn dicom_node(&self) -> Result<Archive, ArchiveConfigError> {
        let text = self.dicom.as_deref().ok_or_else(|| {
            ArchiveConfigError::Dicom(
                "method \"c-get\" needs the archive's DICOM node, e.g. dicom = \"PACS@10.0.0.7:104\""
                    .into(),
            )
        })?;
        Archive::parse(text).map_err(|e| ArchiveConfigError::Dicom(e.to_string()))
    }

    /// The fetcher this section names; `calling_ae` is diptych's AE title, `limits` the bounds
    /// checked on every instance fetched by C-GET.
    pub fn fetcher(
        &self,
        calling_ae: &str,
        limits: diptych_dicom_adapter::Limits,
    ) -> Result<Arc<dyn SourceFetcher>, ArchiveConfigError> {
        self.check()?;
        let timeout = Duration::from_secs(self.timeout_s);
        Ok(match self.method {
            Method::WadoRs => Arc::new(
                WadoFetcher::new(self.url.as_deref().unwrap_or_default(), timeout)
                    .map_err(|e| ArchiveConfigError::Url(e.to_string()))?,
            ),
            _ => Arc::new(CGetFetcher::new(
                self.dicom_node()?,
                calling_ae.to_string(),
                timeout,
                limits,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_checked_and_move_is_refused_with_the_reason() {
        let mut section: ArchiveConfig = toml::from_str("dicom = \"PACS@10.0.0.7:104\"").unwrap();
        assert_eq!(section.method, Method::CGet);
        assert_eq!(section.timeout_s, 120);
        section.check().unwrap();
        section.method = Method::CMove;
        assert!(section.check().unwrap_err().to_string().contains("c-get"));
        section.method = Method::WadoRs;
        assert!(
            section
                .check()
                .unwrap_err()
                .to_string()
                .contains("archive.url")
        );
        section.url = Some("http://pacs:8042/dicom-web".into());
        section.check().unwrap();
        section.method = Method::CGet;
        section.dicom = Some("PACS".into());
        assert!(
            section
                .check()
                .unwrap_err()
                .to_string()
                .contains("AE@HOST:PORT")
        );
    }
}
