//! What can go wrong in the catalog, each message naming the thing and the fix.

use std::path::PathBuf;

/// An error of the metadata catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog folder could not be created.
    #[error(
        "cannot create the catalog folder {path}: {source}; check that the data folder exists \
         and is writable"
    )]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The catalog index could not be created or opened.
    #[error(
        "cannot open the catalog at {path}: {source}; check the folder's permissions, or move \
         it away so an empty catalog is created"
    )]
    Open {
        /// The catalog folder.
        path: PathBuf,
        /// Why it failed.
        source: tantivy::TantivyError,
    },
    /// Another writer (another diptych process) holds the catalog.
    #[error(
        "the catalog at {path} is in use by another process (its writer lock is held); stop \
         the other diptych that serves this data folder, or give this one another --data-dir"
    )]
    Locked {
        /// The catalog folder.
        path: PathBuf,
    },
    /// The catalog on disk was written with other fields than this version defines.
    #[error(
        "the catalog at {path} was written by another version of diptych (its fields differ \
         from this version's); move the folder away so a new catalog is built"
    )]
    SchemaMismatch {
        /// The catalog folder.
        path: PathBuf,
    },
    /// The payload of the last commit is not a [`super::Checkpoint`].
    #[error(
        "the catalog's last commit payload {payload:?} is not a checkpoint ({source}); the \
         catalog was not written by diptych, move its folder away so a new one is built"
    )]
    Checkpoint {
        /// The payload found.
        payload: String,
        /// Why it did not parse.
        source: serde_json::Error,
    },
    /// A filter string that does not parse or names an unknown field; the message says why
    /// and is meant for the user (INVALID_ARGUMENT).
    #[error("invalid filter: {0}")]
    Filter(String),
    /// A delete whose target names an empty identifier (it would match every record that
    /// lacks the identifier).
    #[error("a delete by {level} needs the {level}'s identifier; it was empty")]
    EmptyTarget {
        /// The level of the target (`patient`, `study`, `series`, `instance`).
        level: &'static str,
    },
    /// The index failed while doing something.
    #[error("the catalog could not {operation}: {source}")]
    Index {
        /// What it was doing, e.g. "commit".
        operation: &'static str,
        /// Why it failed.
        source: tantivy::TantivyError,
    },
}

impl CatalogError {
    /// Wraps an index error with what the catalog was doing.
    pub(crate) fn index(operation: &'static str) -> impl FnOnce(tantivy::TantivyError) -> Self {
        move |source| CatalogError::Index { operation, source }
    }
}
