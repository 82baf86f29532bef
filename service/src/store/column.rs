//! A memory-mapped file of fixed-size rows that grows in large steps: the file is extended
//! (its blocks reserved, see [`allocate`]) and remapped only when its capacity is exhausted.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::store::StoreError;

/// Rows a new column is created with.
const INITIAL_ROWS: usize = 4096;

/// One file of rows, mapped read-write.
pub(crate) struct Column {
    path: PathBuf,
    file: File,
    map: MmapMut,
    row_bytes: usize,
    capacity: usize,
}

impl Column {
    /// Opens (or creates) the file and maps it; it must already hold at least `rows` rows.
    pub fn open(path: &Path, row_bytes: usize, rows: usize) -> Result<Column, StoreError> {
        Column::open_growing_from(path, row_bytes, rows, INITIAL_ROWS)
    }

    /// [`Column::open`] with a new file created for `initial_rows` rows (for large rows, whose
    /// reserved blocks would otherwise cost much disk while the column is still small).
    pub fn open_growing_from(
        path: &Path,
        row_bytes: usize,
        rows: usize,
        initial_rows: usize,
    ) -> Result<Column, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("stat", path, e))?
            .len() as usize;
        let held = len / row_bytes;
        if held < rows {
            return Err(StoreError::CorruptStore {
                path: path.to_owned(),
                reason: format!("the file holds {held} rows but the header commits {rows}"),
            });
        }
        let capacity = held.max(initial_rows.max(1));
        if capacity > held {
            allocate(&file, path, (capacity * row_bytes) as u64)?;
        }
        Ok(Column {
            path: path.to_owned(),
            map: map(&file, path)?,
            file,
            row_bytes,
            capacity,
        })
    }

    /// Makes room for at least `rows` rows, growing by half the capacity or more.
    pub fn reserve(&mut self, rows: usize) -> Result<(), StoreError> {
        if rows <= self.capacity {
            return Ok(());
        }
        self.grow_to(rows.max(self.capacity + self.capacity / 2))
    }

    fn grow_to(&mut self, rows: usize) -> Result<(), StoreError> {
        let bytes = rows
            .checked_mul(self.row_bytes)
            .ok_or_else(|| StoreError::OutOfRange {
                path: self.path.clone(),
                reason: format!("{rows} rows of {} bytes overflow", self.row_bytes),
            })?;
        allocate(&self.file, &self.path, bytes as u64)?;
        self.map = map(&self.file, &self.path)?;
        self.capacity = rows;
        Ok(())
    }

    /// The first `rows` rows.
    pub fn rows(&self, rows: usize) -> &[u8] {
        &self.map[..rows * self.row_bytes]
    }

    /// Rows `start..end`, writable; within capacity.
    pub fn rows_mut(&mut self, start: usize, end: usize) -> &mut [u8] {
        &mut self.map[start * self.row_bytes..end * self.row_bytes]
    }

    /// Start of the map (page-aligned), for typed views.
    pub fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    /// Writes the dirty pages of rows `start..end` to disk.
    pub fn flush(&self, start: usize, end: usize) -> Result<(), StoreError> {
        if start >= end {
            return Ok(());
        }
        self.map
            .flush_range(start * self.row_bytes, (end - start) * self.row_bytes)
            .map_err(|e| StoreError::io("flush", &self.path, e))
    }
}

/// Extends the file to `bytes` with its blocks reserved on disk (not sparsely): rows written
/// through the map later can then never meet a full disk, which would kill the process with
/// SIGBUS instead of returning an error. A full disk fails here, as an error the caller retries.
fn allocate(file: &File, path: &Path, bytes: u64) -> Result<(), StoreError> {
    match fs4::fs_std::FileExt::allocate(file, bytes) {
        Ok(()) => Ok(()),
        // A file system without fallocate: extend sparsely, as before.
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => file
            .set_len(bytes)
            .map_err(|e| StoreError::io("extend", path, e)),
        Err(e) => Err(StoreError::io("reserve space for", path, e)),
    }
}

fn map(file: &File, path: &Path) -> Result<MmapMut, StoreError> {
    // SAFETY: the folder is locked by this process (`folder::create_and_lock`), so no other
    // diptych process writes the file while it is mapped; the map is only resized through
    // `&mut Column`, so no borrowed slice outlives it.
    unsafe { MmapMut::map_mut(file) }.map_err(|e| StoreError::io("map", path, e))
}
