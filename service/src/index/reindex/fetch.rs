//! Fetching an instance again from the archive, for records a re-index cannot re-encode from a
//! kept frame: indexed before `[index] keep_frames` was on, or when the new bundle's
//! pre-processing differs from the one the frames were made with.
//!
//! [`crate::archive`] implements it from the `[archive]` section of the configuration (C-GET by
//! UID); without one ([`super::super::IndexOptions::fetcher`] `None`), a re-index that needs it
//! is refused with a message that says why and what to do.

use std::future::Future;
use std::pin::Pin;

use thiserror::Error;

/// The UIDs that name one instance in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRef {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
}

/// Why an instance could not be fetched; never names patient data.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The archive sent nothing for the instance: it does not hold it (any more); what it
    /// answered.
    #[error(
        "the archive did not send the instance: it no longer holds it, or cannot send it ({0})"
    )]
    NotFound(String),
    /// The archive could not be asked or did not answer.
    #[error("the archive cannot be reached: {0}")]
    Unreachable(String),
    /// The archive answered with an error.
    #[error("the archive refused: {0}")]
    Refused(String),
}

/// What a boxed fetch returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, FetchError>> + Send + 'a>>;

/// Fetches one instance — its Part-10 bytes or bare data set — from the archive by UID.
pub trait SourceFetcher: Send + Sync {
    /// The instance that `instance` names.
    fn fetch<'a>(&'a self, instance: &'a InstanceRef) -> FetchFuture<'a>;
}
