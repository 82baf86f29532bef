//! Kept frames in `<data_dir>/frames/` (with `[index] keep_frames`): the model input of every
//! record — its frame after the image contract — so that a new model bundle can re-encode the
//! index without the DICOM instances, which the write-ahead log drops once they are indexed.
//!
//! | file | content |
//! |---|---|
//! | `frames.f32` | one row per record: input_size² little-endian `f32`, record after record |
//! | `frames.json` | the pre-processing the rows were made with, the first record kept, and the committed row count |
//!
//! Row `r` holds record `first_record + r`: records indexed before `keep_frames` was turned on
//! have no kept frame (a re-index fetches them from the archive). A row costs input_size² × 4
//! bytes: 64 KiB per slice at 128 × 128. Rows follow the code store: appended with the codes,
//! synced before the catalog's checkpoint (so they never hold fewer committed rows than the
//! catalog), truncated with it on restart or roll-back, and zeroed when a record is deleted —
//! a deleted patient's pixels leave the disk with the codes.

use std::io::Write;
use std::path::{Path, PathBuf};

use diptych::preprocess::PreprocessParams;
use serde::{Deserialize, Serialize};

use super::column::Column;
use super::{StoreError, folder};
use crate::record::RecordId;

/// File name of the header.
const HEADER_FILE: &str = "frames.json";
/// File name of the rows.
const ROWS_FILE: &str = "frames.f32";
/// The format this code writes and reads.
const FORMAT_VERSION: u32 = 1;
/// Rows a new file is created with (64 KiB each at 128 × 128); it grows by half as needed.
const INITIAL_ROWS: usize = 256;

/// `frames.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Header {
    format_version: u32,
    /// The image contract's parameters every row was made with.
    preprocess: PreprocessParams,
    /// The record id of row 0.
    first_record: u64,
    /// Rows that survive a crash: those before the last sync.
    rows: u64,
}

/// The kept frames of one data folder. Synchronous and not locked: the index holds it beside
/// the code store, under the same discipline (appends, truncation and zeroing by the apply
/// worker; reads by a re-index).
pub struct FrameStore {
    dir: PathBuf,
    preprocess: PreprocessParams,
    first_record: usize,
    rows: Column,
    /// Floats per row.
    pixels: usize,
    len: usize,
    synced: usize,
    dirty_from: usize,
    _lock: std::fs::File,
}

impl std::fmt::Debug for FrameStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameStore")
            .field("dir", &self.dir)
            .field("first_record", &self.first_record)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl FrameStore {
    /// Opens (or creates) the kept frames in `dir`. A new store starts at `next_record` (the
    /// code store's length). A store written with other pre-processing than `preprocess` is
    /// refused: its rows are not this model's input.
    pub fn open(
        dir: impl AsRef<Path>,
        preprocess: PreprocessParams,
        next_record: usize,
    ) -> Result<FrameStore, StoreError> {
        let dir = dir.as_ref().to_owned();
        let lock = folder::create_and_lock(&dir)?;
        let header = match read_header(&dir)? {
            Some(header) => {
                if header.preprocess != preprocess {
                    return Err(StoreError::CorruptStore {
                        path: dir.join(HEADER_FILE),
                        reason: format!(
                            "its frames were pre-processed with {:?}, the serving model wants \
                             {preprocess:?}; remove the folder (or turn [index] keep_frames off) \
                             to drop them",
                            header.preprocess
                        ),
                    });
                }
                header
            }
            None => {
                let header = Header {
                    format_version: FORMAT_VERSION,
                    preprocess,
                    first_record: next_record as u64,
                    rows: 0,
                };
                write_header(&dir, &header)?;
                header
            }
        };
        let pixels = preprocess.input_size * preprocess.input_size;
        let rows = usize::try_from(header.rows).map_err(|_| StoreError::CorruptStore {
            path: dir.join(HEADER_FILE),
            reason: format!("a row count of {}", header.rows),
        })?;
        let column =
            Column::open_growing_from(&dir.join(ROWS_FILE), pixels * 4, rows, INITIAL_ROWS)?;
        Ok(FrameStore {
            first_record: header.first_record as usize,
            dir,
            preprocess,
            rows: column,
            pixels,
            len: rows,
            synced: rows,
            dirty_from: rows,
            _lock: lock,
        })
    }

    /// The pre-processing every kept frame was made with.
    pub fn preprocess(&self) -> PreprocessParams {
        self.preprocess
    }

    /// The record id after the last kept frame (the code store's length when both agree).
    pub fn end_record(&self) -> usize {
        self.first_record + self.len
    }

    /// The first record with a kept frame: records before it were indexed without one.
    pub fn first_record(&self) -> usize {
        self.first_record
    }

    /// Appends the frames of records `end_record()..`, in order; each must hold input_size²
    /// values. Durable after the next [`FrameStore::sync`].
    pub fn append(&mut self, frames: &[&[f32]]) -> Result<(), StoreError> {
        let start = self.len;
        let end = start + frames.len();
        self.rows.reserve(end)?;
        let pixels = self.pixels;
        let rows = self.rows.rows_mut(start, end);
        for (row, frame) in rows.chunks_exact_mut(pixels * 4).zip(frames.iter()) {
            if frame.len() != pixels {
                return Err(StoreError::BadRecord {
                    path: self.dir.clone(),
                    index: 0,
                    reason: format!(
                        "a frame of {} values where the model input has {pixels}",
                        frame.len()
                    ),
                });
            }
            for (bytes, value) in row.chunks_exact_mut(4).zip(frame.iter()) {
                bytes.copy_from_slice(&value.to_le_bytes());
            }
        }
        self.len = end;
        Ok(())
    }

    /// The kept frame of `record`, `None` when it has none (indexed before frames were kept,
    /// or not yet appended).
    pub fn frame(&self, record: RecordId) -> Option<Vec<f32>> {
        let row = (record as usize).checked_sub(self.first_record)?;
        if row >= self.len {
            return None;
        }
        let bytes = &self.rows.rows(row + 1)[row * self.pixels * 4..];
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    /// Zeroes the kept frames of deleted records (those it holds). Durable after the next sync.
    pub fn zero(&mut self, records: &[RecordId]) {
        for &record in records {
            let Some(row) = (record as usize).checked_sub(self.first_record) else {
                continue;
            };
            if row < self.len {
                self.rows.rows_mut(row, row + 1).fill(0);
                self.dirty_from = self.dirty_from.min(row);
            }
        }
    }

    /// Makes every change durable: flushes the changed rows, then commits the row count.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let from = self.dirty_from.min(self.len);
        self.rows.flush(from, self.len)?;
        if self.len != self.synced {
            write_header(&self.dir, &self.header())?;
            self.synced = self.len;
        }
        self.dirty_from = self.len;
        Ok(())
    }

    /// Drops the kept frames of records from `end_record` on (back to the code store's length
    /// after a restart or a roll-back); committed before returning.
    pub fn truncate_to_record(&mut self, end_record: usize) -> Result<(), StoreError> {
        let len = end_record.saturating_sub(self.first_record);
        if len >= self.len {
            return Ok(());
        }
        let old = self.len;
        self.rows.rows_mut(len, old).fill(0);
        self.len = len;
        self.sync()
    }

    fn header(&self) -> Header {
        Header {
            format_version: FORMAT_VERSION,
            preprocess: self.preprocess,
            first_record: self.first_record as u64,
            rows: self.len as u64,
        }
    }

    /// Bytes one kept frame costs on disk.
    pub fn bytes_per_frame(&self) -> usize {
        self.pixels * 4
    }
}

fn read_header(dir: &Path) -> Result<Option<Header>, StoreError> {
    let path = dir.join(HEADER_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read", &path, e)),
    };
    let header: Header = serde_json::from_slice(&text).map_err(|e| StoreError::CorruptStore {
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

/// Replaces the header atomically and durably (temporary file, fsync, rename, fsync folder).
fn write_header(dir: &Path, header: &Header) -> Result<(), StoreError> {
    let path = dir.join(HEADER_FILE);
    let temp = dir.join(format!("{HEADER_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(header).expect("a header serialises");
    let mut file = std::fs::File::create(&temp).map_err(|e| StoreError::io("create", &temp, e))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("write", &temp, e))?;
    drop(file);
    std::fs::rename(&temp, &path).map_err(|e| StoreError::io("rename", &temp, e))?;
    folder::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> PreprocessParams {
        PreprocessParams {
            input_size: 4,
            ..PreprocessParams::default()
        }
    }

    #[test]
    fn frames_survive_a_reopen_up_to_the_last_sync_and_follow_truncation_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let frame = |v: f32| vec![v; 16];
        {
            let mut store = FrameStore::open(dir.path(), params(), 3).unwrap();
            let (a, b, c) = (frame(1.0), frame(2.0), frame(3.0));
            store.append(&[a.as_slice(), b.as_slice()]).unwrap();
            store.sync().unwrap();
            store.append(&[c.as_slice()]).unwrap();
            assert_eq!(store.frame(5), Some(frame(3.0)));
            // Not synced: lost on reopen.
        }
        let mut store = FrameStore::open(dir.path(), params(), 99).unwrap();
        assert_eq!((store.first_record(), store.end_record()), (3, 5));
        assert_eq!(store.frame(2), None, "before the first kept record");
        assert_eq!(store.frame(3), Some(frame(1.0)));
        assert_eq!(store.frame(4), Some(frame(2.0)));
        assert_eq!(store.frame(5), None);
        store.zero(&[4]);
        store.sync().unwrap();
        assert_eq!(store.frame(4), Some(frame(0.0)));
        store.truncate_to_record(4).unwrap();
        assert_eq!(store.end_record(), 4);
        drop(store);
        let other = PreprocessParams {
            low_percentile: 1.0,
            ..params()
        };
        let refused = FrameStore::open(dir.path(), other, 0).unwrap_err();
        assert!(refused.to_string().contains("keep_frames"), "{refused}");
    }
}
