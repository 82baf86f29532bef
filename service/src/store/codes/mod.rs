//! The compact code store in `<data_dir>/codes/`: every record's normal and abnormal code as
//! one byte per grid position, and its [`RecordEntry`], in memory-mapped files.
//!
//! | file | content |
//! |---|---|
//! | `normal.u8` | records × positions bytes: the normal code of each record, contiguous |
//! | `abnormal.u8` | the same for the abnormal code |
//! | `records.bin` | one 48-byte [`RecordEntry`] per record: keys, abnormality, flags |
//! | `store.json` | the [`ModelStamp`], the format version and the committed record count |
//!
//! Files are extended in large steps (sparsely) and mapped, so opening reads only the header,
//! and resident memory is the touched pages of the code and record files. Only records before
//! the last [`CodeStore::sync`] survive a crash; the caller keeps the WAL entries after that
//! point and replays them.
//!
//! The store is synchronous and not internally locked: the caller holds it in a `RwLock`
//! (`view` under the read lock, `append`/`tombstone`/`sync`/`truncate` under the write lock).

mod entry;
mod header;

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::column::Column;
use entry::ENTRY_BYTES;
pub use entry::RecordEntry;
use header::Header;

use super::{StoreError, folder};
use crate::record::{RecordId, RecordKeys};

/// The model a store's codes come from: codes of different stamps are never mixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelStamp {
    /// The model bundle's id (its manifest's `model_id`).
    pub model_id: String,
    /// Grid positions per code (grid h × w).
    pub positions: usize,
    /// Codes per codebook (K), at most 256 so that one index fits a byte.
    pub codebook_size: usize,
}

/// A record to append: its two codes (one index per grid position) and what identifies it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRecord {
    /// Normal code: `positions` indices below K.
    pub normal: Vec<u8>,
    /// Abnormal code: `positions` indices below K.
    pub abnormal: Vec<u8>,
    /// Keys of the record's patient, study, series, instance and its frame.
    pub keys: RecordKeys,
    /// The slice's abnormality score.
    pub abnormality: f32,
}

/// Sentinel of `CodeStore::deleted`: not counted since open or truncate.
const UNKNOWN: usize = usize::MAX;

/// The memory-mapped code store of one data folder.
pub struct CodeStore {
    dir: PathBuf,
    stamp: ModelStamp,
    normal: Column,
    abnormal: Column,
    records: Column,
    /// Records in the store (committed or not).
    len: usize,
    /// Records committed by the header.
    synced: usize,
    /// First row changed since the last sync.
    dirty_from: usize,
    /// Deleted records among the first `len`, counted on first use.
    deleted: AtomicUsize,
    _lock: File,
}

impl CodeStore {
    /// Opens (or creates) the store in `dir` for `stamp`'s codes; refuses a store written by
    /// another model or geometry, and K > 256. Reads only the header: no per-record work.
    pub fn open(dir: impl AsRef<Path>, stamp: ModelStamp) -> Result<CodeStore, StoreError> {
        let dir = dir.as_ref().to_owned();
        if stamp.codebook_size == 0 || stamp.codebook_size > 256 {
            return Err(StoreError::UnsupportedModel {
                path: dir,
                model: stamp.model_id,
                reason: format!(
                    "its codebooks have K = {} codes and the store keeps one byte per code (K from 1 to 256)",
                    stamp.codebook_size
                ),
            });
        }
        if stamp.positions == 0 {
            return Err(StoreError::UnsupportedModel {
                path: dir,
                model: stamp.model_id,
                reason: "its grid has no positions".into(),
            });
        }
        let lock = folder::create_and_lock(&dir)?;
        let committed = match Header::read(&dir)? {
            Some(h) => {
                if h.model_id != stamp.model_id
                    || h.positions != stamp.positions
                    || h.codebook_size != stamp.codebook_size
                {
                    return Err(StoreError::ModelMismatch {
                        path: dir,
                        stored_model: h.model_id,
                        stored_positions: h.positions,
                        stored_codebook_size: h.codebook_size,
                        model: stamp.model_id,
                        positions: stamp.positions,
                        codebook_size: stamp.codebook_size,
                    });
                }
                usize::try_from(h.records).map_err(|_| StoreError::CorruptStore {
                    path: dir.join(header::HEADER_FILE),
                    reason: format!("a record count of {}", h.records),
                })?
            }
            None => {
                Header::new(&stamp, 0).write(&dir)?;
                0
            }
        };
        let normal = Column::open(&dir.join("normal.u8"), stamp.positions, committed)?;
        let abnormal = Column::open(&dir.join("abnormal.u8"), stamp.positions, committed)?;
        let records = Column::open(&dir.join("records.bin"), ENTRY_BYTES, committed)?;
        Ok(CodeStore {
            dir,
            stamp,
            normal,
            abnormal,
            records,
            len: committed,
            synced: committed,
            dirty_from: committed,
            deleted: AtomicUsize::new(UNKNOWN),
            _lock: lock,
        })
    }

    /// Appends records (all or none: each is validated first) and returns their ids. They are
    /// visible to [`CodeStore::view`] at once and durable after the next [`CodeStore::sync`].
    pub fn append(&mut self, records: &[NewRecord]) -> Result<Range<RecordId>, StoreError> {
        for (index, record) in records.iter().enumerate() {
            self.check(record).map_err(|reason| StoreError::BadRecord {
                path: self.dir.clone(),
                index,
                reason,
            })?;
        }
        let start = self.len;
        let end = start + records.len();
        if end > RecordId::MAX as usize {
            return Err(StoreError::OutOfRange {
                path: self.dir.clone(),
                reason: format!(
                    "{end} records exceed the {} a record id can address",
                    RecordId::MAX
                ),
            });
        }
        self.normal.reserve(end)?;
        self.abnormal.reserve(end)?;
        self.records.reserve(end)?;
        let p = self.stamp.positions;
        let normal = self.normal.rows_mut(start, end);
        for (row, record) in normal.chunks_exact_mut(p).zip(records) {
            row.copy_from_slice(&record.normal);
        }
        let abnormal = self.abnormal.rows_mut(start, end);
        for (row, record) in abnormal.chunks_exact_mut(p).zip(records) {
            row.copy_from_slice(&record.abnormal);
        }
        for (entry, record) in self.entries_mut(start, end).iter_mut().zip(records) {
            *entry = RecordEntry::new(record.keys, record.abnormality);
        }
        self.len = end;
        Ok(start as RecordId..end as RecordId)
    }

    fn check(&self, record: &NewRecord) -> Result<(), String> {
        let (p, k) = (self.stamp.positions, self.stamp.codebook_size);
        for (name, code) in [("normal", &record.normal), ("abnormal", &record.abnormal)] {
            if code.len() != p {
                return Err(format!(
                    "its {name} code has {} indices where model `{}` has {p} grid positions",
                    code.len(),
                    self.stamp.model_id
                ));
            }
            if let Some(&bad) = code.iter().find(|&&c| c as usize >= k) {
                return Err(format!(
                    "its {name} code holds index {bad} but model `{}` has K = {k} codes",
                    self.stamp.model_id
                ));
            }
        }
        if !record.abnormality.is_finite() {
            return Err(format!(
                "its abnormality is {} (not a finite number)",
                record.abnormality
            ));
        }
        Ok(())
    }

    /// Deletes records: sets their deleted flag and zeroes their codes and keys. Returns how
    /// many were live; ids already deleted are skipped. Durable after the next sync.
    pub fn tombstone(&mut self, ids: &[RecordId]) -> Result<usize, StoreError> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.len) {
            return Err(StoreError::OutOfRange {
                path: self.dir.clone(),
                reason: format!("record {bad} does not exist ({} records)", self.len),
            });
        }
        let mut newly = 0;
        for &id in ids {
            let id = id as usize;
            let entry = &mut self.entries_mut(id, id + 1)[0];
            if entry.is_deleted() {
                continue;
            }
            *entry = RecordEntry::tombstone();
            self.normal.rows_mut(id, id + 1).fill(0);
            self.abnormal.rows_mut(id, id + 1).fill(0);
            self.dirty_from = self.dirty_from.min(id);
            newly += 1;
        }
        let deleted = self.deleted.get_mut();
        if *deleted != UNKNOWN {
            *deleted += newly;
        }
        Ok(newly)
    }

    /// Makes every change durable: flushes the mapped pages changed since the last sync, then
    /// commits the record count in the header. After a crash the store reopens with exactly
    /// the records of the last sync.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let from = self.dirty_from.min(self.len);
        self.normal.flush(from, self.len)?;
        self.abnormal.flush(from, self.len)?;
        self.records.flush(from, self.len)?;
        if self.len != self.synced {
            Header::new(&self.stamp, self.len as u64).write(&self.dir)?;
            self.synced = self.len;
        }
        self.dirty_from = self.len;
        Ok(())
    }

    /// Drops every record from `len` on (used on restart to return to the catalog's
    /// checkpoint): their bytes are zeroed and the new length is committed before returning.
    pub fn truncate(&mut self, len: usize) -> Result<(), StoreError> {
        if len > self.len {
            return Err(StoreError::OutOfRange {
                path: self.dir.clone(),
                reason: format!("cannot truncate {} records to {len}", self.len),
            });
        }
        let old = self.len;
        self.normal.rows_mut(len, old).fill(0);
        self.abnormal.rows_mut(len, old).fill(0);
        self.records.rows_mut(len, old).fill(0);
        self.len = len;
        *self.deleted.get_mut() = UNKNOWN;
        self.sync()
    }

    /// Records in the store, deleted ones included (the next record id).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records not deleted. The first call after open or truncate reads every record's flags.
    pub fn live_len(&self) -> usize {
        let mut deleted = self.deleted.load(Ordering::Relaxed);
        if deleted == UNKNOWN {
            deleted = self.entries().iter().filter(|e| e.is_deleted()).count();
            self.deleted.store(deleted, Ordering::Relaxed);
        }
        self.len - deleted
    }

    /// Records committed by the last sync (what a crash now would keep).
    pub fn synced_len(&self) -> usize {
        self.synced
    }

    /// The model the store's codes come from.
    pub fn stamp(&self) -> &ModelStamp {
        &self.stamp
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Borrowed, zero-copy access to every record's codes and entry, for search.
    pub fn view(&self) -> CodesView<'_> {
        CodesView {
            normal: self.normal.rows(self.len),
            abnormal: self.abnormal.rows(self.len),
            records: self.entries(),
            positions: self.stamp.positions,
        }
    }

    fn entries(&self) -> &[RecordEntry] {
        // SAFETY: the records map is page-aligned (≥ RecordEntry's alignment of 8), holds at
        // least `len` rows of ENTRY_BYTES (= size_of::<RecordEntry>()), and every bit pattern
        // is a valid RecordEntry (plain integers and a float). The borrow ties it to `&self`,
        // and the map only changes through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.records.as_ptr().cast::<RecordEntry>(), self.len) }
    }

    fn entries_mut(&mut self, start: usize, end: usize) -> &mut [RecordEntry] {
        let bytes = self.records.rows_mut(start, end);
        // SAFETY: as in `entries`; rows start at multiples of 48 bytes from a page-aligned
        // base, so the pointer is 8-aligned; the borrow is exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<RecordEntry>(), end - start)
        }
    }
}

/// A read-only view of the store: codes contiguous by record, in record-id order.
#[derive(Clone, Copy)]
pub struct CodesView<'a> {
    normal: &'a [u8],
    abnormal: &'a [u8],
    records: &'a [RecordEntry],
    positions: usize,
}

impl<'a> CodesView<'a> {
    /// Every normal code: `len() × positions()` indices, record after record.
    pub fn normal(&self) -> &'a [u8] {
        self.normal
    }

    /// Every abnormal code, laid out as [`CodesView::normal`].
    pub fn abnormal(&self) -> &'a [u8] {
        self.abnormal
    }

    /// Every record's entry (keys, abnormality, deleted flag).
    pub fn records(&self) -> &'a [RecordEntry] {
        self.records
    }

    /// One record's normal code.
    pub fn normal_code(&self, id: RecordId) -> &'a [u8] {
        let p = self.positions;
        &self.normal[id as usize * p..(id as usize + 1) * p]
    }

    /// One record's abnormal code.
    pub fn abnormal_code(&self, id: RecordId) -> &'a [u8] {
        let p = self.positions;
        &self.abnormal[id as usize * p..(id as usize + 1) * p]
    }

    /// Grid positions per code.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Records in the view, deleted ones included.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the view holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests;
