//! The store's errors: each names the file or folder involved and what to do about it.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system call failed.
    #[error(
        "could not {action} {path}: {source}; check that the data folder exists, is writable by the service and its disk is not full"
    )]
    Io {
        /// What the store was doing (`open`, `write`, `fsync`, ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// Another process (or another store object in this one) holds the folder.
    #[error(
        "{path} is in use by another diptych process; stop it, or give this one another --data-dir"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// A single write-ahead-log entry is larger than the configured cap.
    #[error(
        "a write-ahead-log entry of {bytes} bytes exceeds the limit of {max} bytes of the log in {path}; reject the instance or raise the WAL entry limit"
    )]
    EntryTooLarge {
        /// The log's folder.
        path: PathBuf,
        /// The entry's encoded size.
        bytes: u64,
        /// The configured cap.
        max: u64,
    },

    /// A file in the log folder is not a segment of this log.
    #[error(
        "{path} is not a diptych write-ahead-log segment ({reason}); move it out of the wal folder"
    )]
    NotASegment {
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },

    /// An entry that was valid when the log was opened no longer reads back.
    #[error(
        "the write-ahead-log entry at byte {offset} of {path} is unreadable ({reason}); the disk may be failing: restart the service to skip it, and check the disk"
    )]
    CorruptEntry {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the entry.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// A write to the log failed (a full disk, an I/O error); nothing of it was acknowledged, and
    /// the log repairs itself and accepts writes again once the cause is gone.
    #[error(
        "the write-ahead log in {path} could not write ({reason}); nothing was kept, retry once there is space on the disk"
    )]
    WalFailed {
        /// The log's folder.
        path: PathBuf,
        /// The first failure.
        reason: String,
    },

    /// The log was closed while an append was in flight.
    #[error(
        "the write-ahead log in {path} is closed; the service is shutting down, retry after it restarts"
    )]
    WalClosed {
        /// The log's folder.
        path: PathBuf,
    },

    /// The code store holds codes of another model (or of another grid or codebook size).
    #[error(
        "the code store in {path} holds codes of model `{stored_model}` ({stored_positions} positions, K = {stored_codebook_size}) but the service runs model `{model}` ({positions} positions, K = {codebook_size}); codes of different models are never mixed: use another --data-dir for this model, or re-index (move {path} away and ingest again)"
    )]
    ModelMismatch {
        /// The code store's folder.
        path: PathBuf,
        /// The model id the store was written by.
        stored_model: String,
        /// Grid positions the store was written with.
        stored_positions: usize,
        /// Codebook size the store was written with.
        stored_codebook_size: usize,
        /// The model id asked for.
        model: String,
        /// Grid positions asked for.
        positions: usize,
        /// Codebook size asked for.
        codebook_size: usize,
    },

    /// The model's geometry cannot be stored (K > 256 does not fit one byte per code, or an empty grid).
    #[error(
        "the code store in {path} cannot hold codes of model `{model}`: {reason}; use a model with 1 to 256 codes per codebook and a non-empty grid"
    )]
    UnsupportedModel {
        /// The code store's folder.
        path: PathBuf,
        /// The model id.
        model: String,
        /// What is unsupported.
        reason: String,
    },

    /// The code store's files disagree with its header, or the header is unreadable.
    #[error(
        "the code store in {path} is damaged ({reason}); restore it from a backup, or move it away and re-index"
    )]
    CorruptStore {
        /// The file that is wrong.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A record given to the code store is malformed (the store is unchanged).
    #[error(
        "record {index} of the batch for {path} was refused: {reason}; encode it with the store's model"
    )]
    BadRecord {
        /// The code store's folder.
        path: PathBuf,
        /// Index of the record in the batch.
        index: usize,
        /// What is wrong.
        reason: String,
    },

    /// A record id or length is out of the store's range.
    #[error("{reason} in the code store {path}; pass ids and lengths below the store's length")]
    OutOfRange {
        /// The code store's folder.
        path: PathBuf,
        /// What is out of range.
        reason: String,
    },
}

impl StoreError {
    /// The error of an append that met a full disk (ENOSPC), for injected failures.
    pub fn injected_full_disk(path: impl Into<PathBuf>) -> Self {
        StoreError::io(
            "append to (injected failure)",
            path,
            std::io::Error::from_raw_os_error(28),
        )
    }

    /// An [`StoreError::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
