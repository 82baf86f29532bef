//! `store.json`: the code store's stamp, format version and committed record count, replaced
//! atomically (write a temporary file, fsync, rename, fsync the folder).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelStamp;
use crate::store::{StoreError, folder};

/// File name of the header.
pub(super) const HEADER_FILE: &str = "store.json";
/// The format this code writes and reads.
pub(super) const FORMAT_VERSION: u32 = 1;

/// The header's content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct Header {
    /// Layout version of the files.
    pub format_version: u32,
    /// Model that wrote every code.
    pub model_id: String,
    /// Grid positions per code.
    pub positions: usize,
    /// Codes per codebook (K).
    pub codebook_size: usize,
    /// Records that survive a crash: those before the last sync.
    pub records: u64,
}

impl Header {
    /// A header for `stamp` with `records` committed.
    pub fn new(stamp: &ModelStamp, records: u64) -> Header {
        Header {
            format_version: FORMAT_VERSION,
            model_id: stamp.model_id.clone(),
            positions: stamp.positions,
            codebook_size: stamp.codebook_size,
            records,
        }
    }

    /// Reads the header of the store in `dir`, or `None` when there is none yet.
    pub fn read(dir: &Path) -> Result<Option<Header>, StoreError> {
        let path = dir.join(HEADER_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        let header: Header =
            serde_json::from_slice(&text).map_err(|e| StoreError::CorruptStore {
                path: path.clone(),
                reason: format!("its header is not valid JSON: {e}"),
            })?;
        if header.format_version != FORMAT_VERSION {
            return Err(StoreError::CorruptStore {
                path,
                reason: format!(
                    "format version {} where this diptych reads version {FORMAT_VERSION}",
                    header.format_version
                ),
            });
        }
        Ok(Some(header))
    }

    /// Replaces the header of the store in `dir` atomically and durably.
    pub fn write(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(HEADER_FILE);
        let temp = dir.join(format!("{HEADER_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).expect("a header serialises");
        let mut file =
            std::fs::File::create(&temp).map_err(|e| StoreError::io("create", &temp, e))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io("write", &temp, e))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(|e| StoreError::io("rename", &temp, e))?;
        folder::sync_dir(dir)
    }
}
