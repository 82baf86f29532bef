//! [`ApplyError`]: why applying accepted work failed — what the apply worker logs, reports as
//! the index's fault while failures persist, and answers a delete's caller with. None of it
//! holds patient data.

use crate::catalog::CatalogError;
use crate::encoder::BatchError;
use crate::store::StoreError;

use super::faults::FaultPoint;

/// Why applying accepted work (encoding, storing, cataloguing, checkpointing, deleting) failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The encoder failed on an accepted frame.
    #[error("encoding an accepted frame failed: {0}")]
    Encode(#[source] BatchError),
    /// An encoding or checkpoint task ended without an answer (it panicked or was cancelled).
    #[error("{task} task failed: {message}")]
    Task {
        /// Which task: "an encoding", "a checkpoint".
        task: &'static str,
        /// The runtime's message.
        message: String,
    },
    /// Reading entries back from the write-ahead log failed.
    #[error("reading {what} back from the write-ahead log: {source}")]
    Reread {
        /// What was read: "a sequence gap", "the work after the last checkpoint".
        what: &'static str,
        /// The log's error.
        source: Box<StoreError>,
    },
    /// The code store failed.
    #[error("{action} the code store: {source}")]
    Store {
        /// What was done: "appending codes to", "syncing", "truncating".
        action: &'static str,
        /// The store's error.
        source: Box<StoreError>,
    },
    /// The catalog failed.
    #[error("{action} the catalog: {source}")]
    Catalog {
        /// What was done: "adding entries to", "committing", "rolling back".
        action: &'static str,
        /// The catalog's error.
        source: Box<CatalogError>,
    },
    /// The log failed after a delete's commit (closing its segment, pruning it).
    #[error("{action} the write-ahead log after a delete: {source}")]
    Log {
        /// What was done: "rotating", "pruning".
        action: &'static str,
        /// The log's error.
        source: Box<StoreError>,
    },
    /// A delete's request reached the worker after the worker had read the delete back from the
    /// log and applied it, and what it removed is no longer known.
    #[error(
        "the delete was applied, read back from the write-ahead log before this request reached \
         the index; how many records it removed is no longer known (search to confirm)"
    )]
    AppliedFromLog,
    /// A failure injected by a test ([`super::Faults`]).
    #[error("{0:?}: an injected failure")]
    Injected(FaultPoint),
    /// Rolling back to the last checkpoint failed after an earlier failure.
    #[error("rolling back to the last checkpoint after \"{first}\": {source}")]
    RollBack {
        /// The failure that made the worker roll back.
        first: String,
        /// Why the roll-back failed.
        source: Box<ApplyError>,
    },
}

impl ApplyError {
    /// A code-store error while `action`.
    pub(crate) fn store(action: &'static str) -> impl FnOnce(StoreError) -> ApplyError {
        move |source| ApplyError::Store {
            action,
            source: Box::new(source),
        }
    }

    /// A catalog error while `action`.
    pub(crate) fn catalog(action: &'static str) -> impl FnOnce(CatalogError) -> ApplyError {
        move |source| ApplyError::Catalog {
            action,
            source: Box::new(source),
        }
    }

    /// A log read-back error while reading `what`.
    pub(crate) fn reread(what: &'static str) -> impl FnOnce(StoreError) -> ApplyError {
        move |source| ApplyError::Reread {
            what,
            source: Box::new(source),
        }
    }
}
