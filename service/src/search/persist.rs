//! [`PersistedIndex`]: the [`SearchIndex`] on disk, so that searches right after a restart are
//! pruned at once instead of scanning every record while the projections are fitted again.
//!
//! Two files in `<data_dir>/search/`:
//!
//! | file | content |
//! |---|---|
//! | `index.bin` | both projections (normal, then abnormal: P·256·[`DIMS`] f32 table, [`DIMS`] offsets, [`DIMS`] scales, slack; little-endian), then one [`SUMMARY_BYTES`]-byte summary per record, in record order |
//! | `header.bin` | magic, format version, the model id, a SHA-256 of both codebooks, P, K, D, [`DIMS`], the records the projections were fitted to, the records `index.bin` describes, a CRC-32 of the projections, a CRC-32 of those records' summaries, and a CRC-32 of the header itself |
//!
//! The header commits the file: it is replaced atomically (temporary file, fsync, rename, fsync
//! of the folder) after `index.bin` is synced, and nothing in `index.bin` beyond the header's
//! record count, or not matching its checksums, is read. A torn, corrupted or foreign file
//! (another model, other codebooks, another format) fails [`PersistedIndex::load`] with a reason
//! and is never trusted; the caller then fits the projections again, as without a file. A sample
//! of the loaded summaries is also recomputed from the store's codes and must agree to the bit,
//! which catches a file that belongs to another store of the same model. A file older than the
//! store is still right for the records it describes (stored codes never change, but for
//! deleted records', whose summaries the load recomputes); the caller summarises the rest.
//!
//! # Cost per save
//! Summaries are append-only like the code store: a save writes the summaries of the records
//! added since the last save ([`SUMMARY_BYTES`] bytes each) at the end of `index.bin`, syncs it,
//! and replaces the header (about 100 bytes): three fsyncs and the new rows, whatever the size
//! of the index; a save with nothing new writes nothing. (The index saves at checkpoints, at
//! most once a second unless a fit or a delete changed the summaries, see
//! [`crate::index::SAVE_SEARCH_INDEX_EVERY`].) Only a new fit of the projections (or the
//! first save, or one after a failed save) rewrites the whole file: 2·P·256·[`DIMS`]·4 bytes of
//! projections (12 MiB for the shipped 16×16 grid) and every summary, through a temporary file
//! renamed into place. Summaries changed in place (a deleted record's, see
//! [`SearchIndex::resummarise`]) are written where they lie, and then the summaries' checksum
//! is recomputed over all of them in memory. Measured on two cores with a million records of a
//! 16×16 grid: a save of 500 new records 1 ms, one with a rewritten summary 17 ms, a whole
//! rewrite 0.13 s, and [`PersistedIndex::load`] 55 ms (a fit and summaries from scratch: 2.6 s).
//!
//! The caller only ever saves records that a checkpoint has committed, so the file never
//! describes a record that a restart or a rollback removes from the store;
//! [`PersistedIndex::cap`] and the load's cap to the store's records hold that even against a
//! file written otherwise.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::index::{DIMS, Projection, SUMMARY_BYTES, Summary};
use super::tables::ROW;
use super::{DistanceTables, SearchIndex};
use crate::record::{RecordId, RecordSet};

/// Folder of the persisted index inside the data folder.
pub const FOLDER: &str = "search";
/// The format this code writes and reads; bump it whenever the layout or the meaning of the
/// projections or the summaries changes.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the header.
const HEADER_FILE: &str = "header.bin";
/// File name of the projections and summaries.
const INDEX_FILE: &str = "index.bin";
/// First bytes of the header.
const MAGIC: [u8; 8] = *b"DIPTSRCH";
/// Longest model id a header may name.
const MAX_MODEL_ID: usize = 1024;
/// Loaded summaries recomputed from the store's codes to check that they belong to it.
const VERIFY_SAMPLE: usize = 1024;
/// Summaries encoded per write or read.
const ROWS_PER_BLOCK: usize = 16 * 1024;

/// Why the persisted index could not be read or written.
#[derive(Debug, Error)]
pub enum PersistError {
    /// A file-system call failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done (`open`, `write`, `fsync`, ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The files are torn, stale, corrupted or made for another model or store.
    #[error("{path} is not a usable search index: {reason}")]
    Invalid {
        /// The file at fault.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
}

impl PersistError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> PersistError {
        PersistError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    fn invalid(path: &Path, reason: impl Into<String>) -> PersistError {
        PersistError::Invalid {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// What a persisted index must have been made for: the model, its grid and its codebooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The model bundle's id.
    pub model_id: String,
    /// Grid positions P per code.
    pub positions: usize,
    /// Codes per codebook K.
    pub codebook_size: usize,
    /// Dimension D of a codebook vector.
    pub code_dim: usize,
    /// SHA-256 of K, D and both codebooks' values.
    pub codebooks: [u8; 32],
}

impl Identity {
    /// The identity of indexes over `positions`-position codes of model `model_id` whose
    /// codebooks `tables` holds.
    pub fn new(model_id: &str, positions: usize, tables: &DistanceTables) -> Identity {
        let mut digest = Sha256::new();
        digest.update((tables.size() as u64).to_le_bytes());
        digest.update((tables.dim() as u64).to_le_bytes());
        for book in [tables.normal_codebook(), tables.abnormal_codebook()] {
            for value in book {
                digest.update(value.to_le_bytes());
            }
        }
        Identity {
            model_id: model_id.to_string(),
            positions,
            codebook_size: tables.size(),
            code_dim: tables.dim(),
            codebooks: digest.finalize().into(),
        }
    }

    /// Bytes of one projection in `index.bin`.
    fn projection_bytes(&self) -> u64 {
        (self.positions * ROW * DIMS * 4 + 2 * DIMS * 4 + 4) as u64
    }
}

/// The content of `header.bin`.
#[derive(Debug, Clone, PartialEq)]
struct Header {
    identity: Identity,
    trained_on: u64,
    records: u64,
    projection_crc: u32,
    rows_crc: u32,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let id = &self.identity;
        let mut out = Vec::with_capacity(128 + id.model_id.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for value in [
            DIMS,
            SUMMARY_BYTES,
            id.positions,
            id.codebook_size,
            id.code_dim,
        ] {
            out.extend_from_slice(&(value as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.trained_on.to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&self.projection_crc.to_le_bytes());
        out.extend_from_slice(&self.rows_crc.to_le_bytes());
        out.extend_from_slice(&id.codebooks);
        out.extend_from_slice(&(id.model_id.len() as u32).to_le_bytes());
        out.extend_from_slice(id.model_id.as_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a header and checks it against `expected`.
    fn decode(bytes: &[u8], expected: &Identity, path: &Path) -> Result<Header, PersistError> {
        let invalid = |reason: String| PersistError::invalid(path, reason);
        if bytes.len() < MAGIC.len() + 4 || !bytes.starts_with(&MAGIC) {
            return Err(invalid(
                "it does not start with the search index's magic".into(),
            ));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(invalid(
                "its checksum does not match (a torn or corrupted header)".into(),
            ));
        }
        let mut at = MAGIC.len();
        let mut take = |n: usize| -> Result<&[u8], PersistError> {
            let field = body
                .get(at..at + n)
                .ok_or_else(|| invalid("it is too short".into()))?;
            at += n;
            Ok(field)
        };
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        let version = u32_of(take(4)?);
        if version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format version {version} where this diptych reads version {FORMAT_VERSION}"
            )));
        }
        let mut shape = [0usize; 5];
        for s in &mut shape {
            *s = u32_of(take(4)?) as usize;
        }
        let [dims, summary_bytes, positions, codebook_size, code_dim] = shape;
        let trained_on = u64_of(take(8)?);
        let records = u64_of(take(8)?);
        let projection_crc = u32_of(take(4)?);
        let rows_crc = u32_of(take(4)?);
        let codebooks: [u8; 32] = take(32)?.try_into().expect("32 bytes");
        let id_len = u32_of(take(4)?) as usize;
        if id_len > MAX_MODEL_ID {
            return Err(invalid(format!("it names a model id of {id_len} bytes")));
        }
        let model_id = String::from_utf8(take(id_len)?.to_vec())
            .map_err(|_| invalid("its model id is not UTF-8".into()))?;
        if at != body.len() {
            return Err(invalid("it has bytes after the model id".into()));
        }
        if (dims, summary_bytes) != (DIMS, SUMMARY_BYTES) {
            return Err(invalid(format!(
                "it holds {dims}-dimensional summaries of {summary_bytes} bytes where this diptych uses {DIMS} and {SUMMARY_BYTES}"
            )));
        }
        let identity = Identity {
            model_id,
            positions,
            codebook_size,
            code_dim,
            codebooks,
        };
        if identity != *expected {
            return Err(invalid(format!(
                "it was made for model `{}` (P = {}, K = {}, D = {}, codebooks {}) where the store holds model `{}` (P = {}, K = {}, D = {}, codebooks {})",
                identity.model_id,
                identity.positions,
                identity.codebook_size,
                identity.code_dim,
                short_hex(&identity.codebooks),
                expected.model_id,
                expected.positions,
                expected.codebook_size,
                expected.code_dim,
                short_hex(&expected.codebooks),
            )));
        }
        Ok(Header {
            identity,
            trained_on,
            records,
            projection_crc,
            rows_crc,
        })
    }
}

/// The first bytes of a digest, in hex, for messages.
fn short_hex(digest: &[u8]) -> String {
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// What `index.bin` and `header.bin` hold, as this process last wrote or read them.
#[derive(Clone)]
struct OnDisk {
    /// The generation of the in-memory index whose projections the file holds.
    generation: u64,
    /// Records the header commits.
    records: usize,
    /// CRC-32 state over those records' summaries.
    rows: crc32fast::Hasher,
    /// CRC-32 of the projections.
    projection_crc: u32,
    /// Records the projections were fitted to.
    trained_on: usize,
}

/// A save prepared under the search lock, written without it by [`PersistedIndex::write`].
pub struct PendingSave {
    /// The projections and every summary, when the whole file is rewritten.
    full: Option<(Vec<u8>, Vec<Summary>)>,
    /// Summaries changed in place below the records on disk.
    changed: Vec<(usize, Summary)>,
    /// Summaries of records `from..records`, appended.
    appended: Vec<Summary>,
    /// First appended record.
    from: usize,
    /// What the files hold once written.
    after: OnDisk,
}

impl PendingSave {
    /// Records the save commits.
    pub fn records(&self) -> usize {
        self.after.records
    }

    /// Whether it rewrites the whole file (a new fit).
    pub fn is_full(&self) -> bool {
        self.full.is_some()
    }
}

/// The persisted search index of one data folder: reads it back on start, and writes what
/// changed at checkpoints.
pub struct PersistedIndex {
    dir: PathBuf,
    identity: Identity,
    on_disk: Option<OnDisk>,
}

impl std::fmt::Debug for PersistedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistedIndex")
            .field("dir", &self.dir)
            .field("records", &self.on_disk.as_ref().map(|d| d.records))
            .finish_non_exhaustive()
    }
}

impl PersistedIndex {
    /// The persisted index in folder `dir` (usually `<data_dir>/search`) for indexes of
    /// `identity`; touches no file.
    pub fn new(dir: impl Into<PathBuf>, identity: Identity) -> PersistedIndex {
        PersistedIndex {
            dir: dir.into(),
            identity,
            on_disk: None,
        }
    }

    /// The folder of the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the files commit, as this process last wrote or read them (`None` before the
    /// first load or save, and after a failed save).
    pub fn records_on_disk(&self) -> Option<usize> {
        self.on_disk.as_ref().map(|d| d.records)
    }

    /// Reads the index back for a store whose codes are `normal` and `abnormal` (N×P each) and
    /// whose deleted records are `deleted`. Returns `Ok(None)` when there is no file; the index
    /// summarises the first min(file's records, N) records (the caller summarises the rest, see
    /// [`SearchIndex::extend`]). A file describing more records than the store holds is capped
    /// on disk at once. Deleted records' summaries are recomputed from their zeroed codes
    /// (and rewritten at the next save).
    pub fn load(
        &mut self,
        normal: &[u8],
        abnormal: &[u8],
        deleted: &RecordSet,
    ) -> Result<Option<SearchIndex>, PersistError> {
        self.on_disk = None;
        let header_path = self.dir.join(HEADER_FILE);
        let bytes = match std::fs::read(&header_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PersistError::io("read", &header_path, e)),
        };
        let header = Header::decode(&bytes, &self.identity, &header_path)?;
        let p = self.identity.positions;
        let store = normal.len() / p;
        if normal.len() != abnormal.len() || normal.len() != store * p {
            return Err(PersistError::invalid(
                &header_path,
                "the store's codes are not whole records",
            ));
        }
        let path = self.dir.join(INDEX_FILE);
        let file = File::open(&path).map_err(|e| PersistError::io("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| PersistError::io("stat", &path, e))?
            .len();
        let projection_bytes = self.identity.projection_bytes();
        let needed = header
            .records
            .checked_mul(SUMMARY_BYTES as u64)
            .and_then(|rows| rows.checked_add(2 * projection_bytes));
        if needed.is_none_or(|needed| len < needed) {
            return Err(PersistError::invalid(
                &path,
                format!(
                    "it holds {len} bytes, fewer than the {} records its header commits need (a torn or truncated file)",
                    header.records
                ),
            ));
        }
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut projections = vec![0u8; 2 * projection_bytes as usize];
        reader
            .read_exact(&mut projections)
            .map_err(|e| PersistError::io("read", &path, e))?;
        if crc32fast::hash(&projections) != header.projection_crc {
            return Err(PersistError::invalid(
                &path,
                "its projections do not match their checksum",
            ));
        }
        let (normal_bytes, abnormal_bytes) = projections.split_at(projection_bytes as usize);
        let normal_projection = decode_projection(normal_bytes, p, "normal", &path)?;
        let abnormal_projection = decode_projection(abnormal_bytes, p, "abnormal", &path)?;
        let records = usize::try_from(header.records).unwrap_or(usize::MAX);
        let kept = records.min(store);
        let mut summaries = Vec::with_capacity(kept);
        let mut rows = crc32fast::Hasher::new();
        let mut kept_rows = crc32fast::Hasher::new();
        let mut block = vec![0u8; ROWS_PER_BLOCK * SUMMARY_BYTES];
        let mut read = 0;
        while read < records {
            let n = (records - read).min(ROWS_PER_BLOCK);
            let block = &mut block[..n * SUMMARY_BYTES];
            reader
                .read_exact(block)
                .map_err(|e| PersistError::io("read", &path, e))?;
            rows.update(block);
            let keep = &block[..kept.saturating_sub(read).min(n) * SUMMARY_BYTES];
            kept_rows.update(keep);
            summaries.extend(
                keep.chunks_exact(SUMMARY_BYTES)
                    .map(|row| Summary::from_bytes(row.try_into().expect("one row"))),
            );
            read += n;
        }
        if rows.clone().finalize() != header.rows_crc {
            return Err(PersistError::invalid(
                &path,
                "its summaries do not match their checksum",
            ));
        }
        let trained_on = usize::try_from(header.trained_on).unwrap_or(usize::MAX);
        let mut index = SearchIndex::from_parts(
            p,
            normal_projection,
            abnormal_projection,
            summaries,
            trained_on,
        );
        verify_sample(&index, normal, abnormal, deleted, &path)?;
        let mut on_disk = OnDisk {
            generation: index.generation(),
            records,
            rows,
            projection_crc: header.projection_crc,
            trained_on,
        };
        if records > kept {
            // The file describes records the store does not hold: it must not keep saying so
            // once the store grows again with other records.
            tracing::warn!(
                file = records,
                store = store,
                "the search index file describes more records than the store holds; capped"
            );
            let capped = Header {
                records: kept as u64,
                rows_crc: kept_rows.clone().finalize(),
                ..header
            };
            if let Err(error) = self.write_header(&capped) {
                let _ = std::fs::remove_file(&header_path);
                return Err(error);
            }
            on_disk.records = kept;
            on_disk.rows = kept_rows;
        }
        self.on_disk = Some(on_disk);
        let deleted: Vec<RecordId> = deleted.iter().filter(|&id| (id as usize) < kept).collect();
        index.resummarise(&deleted, normal, abnormal);
        Ok(Some(index))
    }

    /// Whether the index has changes that should not wait: a new fit, or summaries changed
    /// in place (a delete's, which must leave the disk).
    pub fn is_urgent(&self, index: &SearchIndex) -> bool {
        index.has_changed()
            || self
                .on_disk
                .as_ref()
                .is_none_or(|d| d.generation != index.generation())
    }

    /// Takes what a save of the first `records` summaries of `index` must write (call it under
    /// the lock that guards `index`, then [`PersistedIndex::write`] without it); `None` when the
    /// files already hold exactly that.
    pub fn prepare(&self, index: &mut SearchIndex, records: usize) -> Option<PendingSave> {
        let records = records.min(index.len());
        let changed = index.take_changed();
        let current = self
            .on_disk
            .as_ref()
            .filter(|d| d.generation == index.generation());
        let Some(disk) = current else {
            // A new fit (or nothing known on disk): the whole file.
            let (normal, abnormal) = index.projections();
            let mut projections = encode_projection(normal);
            projections.extend(encode_projection(abnormal));
            let summaries = index.summaries(0, records);
            let mut rows = crc32fast::Hasher::new();
            hash_rows(&mut rows, &summaries);
            let after = OnDisk {
                generation: index.generation(),
                records,
                rows,
                projection_crc: crc32fast::hash(&projections),
                trained_on: index.trained_on(),
            };
            return Some(PendingSave {
                full: Some((projections, summaries)),
                changed: Vec::new(),
                appended: Vec::new(),
                from: 0,
                after,
            });
        };
        let changed: Vec<(usize, Summary)> = changed
            .into_iter()
            .filter(|&id| id < disk.records.min(records))
            .map(|id| (id, index.summaries(id, id + 1)[0]))
            .collect();
        if changed.is_empty() && records == disk.records {
            return None;
        }
        let from = disk.records.min(records);
        let appended = index.summaries(from, records);
        let rows = if changed.is_empty() && records >= disk.records {
            let mut rows = disk.rows.clone();
            hash_rows(&mut rows, &appended);
            rows
        } else {
            let mut rows = crc32fast::Hasher::new();
            hash_rows(&mut rows, &index.summaries(0, records));
            rows
        };
        Some(PendingSave {
            full: None,
            changed,
            appended,
            from,
            after: OnDisk {
                records,
                rows,
                ..disk.clone()
            },
        })
    }

    /// Writes a prepared save durably: `index.bin` first (appended rows and rows changed in
    /// place, or the whole file through a temporary one), synced, then the header. On failure
    /// the next save rewrites the whole file.
    pub fn write(&mut self, pending: PendingSave) -> Result<(), PersistError> {
        let written = self.write_files(&pending);
        self.on_disk = match written {
            Ok(()) => Some(pending.after),
            Err(_) => None,
        };
        written
    }

    fn write_files(&self, pending: &PendingSave) -> Result<(), PersistError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| PersistError::io("create", &self.dir, e))?;
        let path = self.dir.join(INDEX_FILE);
        let projection_bytes = 2 * self.identity.projection_bytes();
        let row_at = |id: usize| projection_bytes + (id * SUMMARY_BYTES) as u64;
        match &pending.full {
            Some((projections, summaries)) => {
                let temp = self.dir.join(format!("{INDEX_FILE}.tmp"));
                let file = File::create(&temp).map_err(|e| PersistError::io("create", &temp, e))?;
                let mut out = BufWriter::with_capacity(1 << 20, file);
                out.write_all(projections)
                    .and_then(|()| write_rows(&mut out, summaries))
                    .and_then(|()| out.flush())
                    .map_err(|e| PersistError::io("write", &temp, e))?;
                let file = out
                    .into_inner()
                    .map_err(|e| PersistError::io("write", &temp, e.into_error()))?;
                file.sync_all()
                    .map_err(|e| PersistError::io("fsync", &temp, e))?;
                drop(file);
                std::fs::rename(&temp, &path).map_err(|e| PersistError::io("rename", &temp, e))?;
            }
            None => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| PersistError::io("open", &path, e))?;
                let mut put = |at: u64, summaries: &[Summary]| -> std::io::Result<()> {
                    file.seek(SeekFrom::Start(at))?;
                    let mut out = BufWriter::with_capacity(1 << 16, &mut file);
                    write_rows(&mut out, summaries)?;
                    out.flush()
                };
                for (id, summary) in &pending.changed {
                    put(row_at(*id), std::slice::from_ref(summary))
                        .map_err(|e| PersistError::io("write", &path, e))?;
                }
                put(row_at(pending.from), &pending.appended)
                    .map_err(|e| PersistError::io("write", &path, e))?;
                file.set_len(row_at(pending.after.records))
                    .map_err(|e| PersistError::io("truncate", &path, e))?;
                file.sync_data()
                    .map_err(|e| PersistError::io("fsync", &path, e))?;
            }
        }
        let after = &pending.after;
        self.write_header(&Header {
            identity: self.identity.clone(),
            trained_on: after.trained_on as u64,
            records: after.records as u64,
            projection_crc: after.projection_crc,
            rows_crc: after.rows.clone().finalize(),
        })
    }

    /// Makes sure the files describe at most `records` records (the store was rolled back to
    /// that many): a header committing more is replaced by one committing `records`, its
    /// checksum recomputed from the file. Nothing happens when there is no file or it commits
    /// no more; a header that cannot be read is removed.
    pub fn cap(&mut self, records: usize) -> Result<(), PersistError> {
        let header_path = self.dir.join(HEADER_FILE);
        let bytes = match std::fs::read(&header_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(PersistError::io("read", &header_path, e)),
        };
        let header = match Header::decode(&bytes, &self.identity, &header_path) {
            Ok(header) => header,
            Err(_) => return remove(&header_path),
        };
        if header.records <= records as u64 {
            return Ok(());
        }
        let path = self.dir.join(INDEX_FILE);
        let capped = (|| -> std::io::Result<crc32fast::Hasher> {
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(2 * self.identity.projection_bytes()))?;
            let mut reader =
                BufReader::with_capacity(1 << 20, file).take((records * SUMMARY_BYTES) as u64);
            let mut rows = crc32fast::Hasher::new();
            let mut block = vec![0u8; 1 << 20];
            let mut total = 0;
            loop {
                let n = reader.read(&mut block)?;
                if n == 0 {
                    break;
                }
                rows.update(&block[..n]);
                total += n;
            }
            if total != records * SUMMARY_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than its header says",
                ));
            }
            Ok(rows)
        })();
        let rows = match capped {
            Ok(rows) => rows,
            Err(_) => return remove(&header_path),
        };
        let header = Header {
            records: records as u64,
            rows_crc: rows.clone().finalize(),
            ..header
        };
        let written = self.write_header(&header);
        if let Some(disk) = self.on_disk.as_mut() {
            if written.is_ok() {
                disk.records = records;
                disk.rows = rows;
            } else {
                self.on_disk = None;
            }
        }
        written.or_else(|error| remove(&header_path).and(Err(error)))
    }

    /// Replaces the header atomically and durably.
    fn write_header(&self, header: &Header) -> Result<(), PersistError> {
        let path = self.dir.join(HEADER_FILE);
        let temp = self.dir.join(format!("{HEADER_FILE}.tmp"));
        let mut file = File::create(&temp).map_err(|e| PersistError::io("create", &temp, e))?;
        file.write_all(&header.encode())
            .and_then(|()| file.sync_all())
            .map_err(|e| PersistError::io("write", &temp, e))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(|e| PersistError::io("rename", &temp, e))?;
        sync_dir(&self.dir)
    }
}

/// Removes a header that must not be trusted (the next save writes a new one).
fn remove(path: &Path) -> Result<(), PersistError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PersistError::io("remove", path, e)),
    }
}

/// Makes the folder's entries (renamed files) durable.
fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PersistError::io("fsync", dir, e))
}

fn hash_rows(hasher: &mut crc32fast::Hasher, summaries: &[Summary]) {
    // Encoded a block at a time: the checksum runs at memory speed on long inputs only.
    let mut block = Vec::with_capacity(1024 * SUMMARY_BYTES);
    for chunk in summaries.chunks(1024) {
        block.clear();
        for summary in chunk {
            block.extend_from_slice(&summary.to_bytes());
        }
        hasher.update(&block);
    }
}

fn write_rows(out: &mut impl Write, summaries: &[Summary]) -> std::io::Result<()> {
    for summary in summaries {
        out.write_all(&summary.to_bytes())?;
    }
    Ok(())
}

fn encode_projection(projection: &Projection) -> Vec<u8> {
    let mut out = Vec::with_capacity((projection.table.len() + 2 * DIMS + 1) * 4);
    let values = projection
        .table
        .iter()
        .chain(&projection.offset)
        .chain(&projection.scale)
        .chain(std::iter::once(&projection.slack));
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out
}

/// The `codebook` projection [`encode_projection`] wrote (read from `path`), checked for values
/// a fit never makes.
fn decode_projection(
    bytes: &[u8],
    positions: usize,
    codebook: &str,
    path: &Path,
) -> Result<Projection, PersistError> {
    let invalid =
        |reason: &str| PersistError::invalid(path, format!("its {codebook} projection {reason}"));
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    let table_len = positions * ROW * DIMS;
    if values.len() != table_len + 2 * DIMS + 1 {
        return Err(invalid(&format!(
            "holds {} values where {} were expected",
            values.len(),
            table_len + 2 * DIMS + 1
        )));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(invalid("holds a value that is not a finite number"));
    }
    let offset: [f32; DIMS] = values[table_len..table_len + DIMS]
        .try_into()
        .expect("DIMS");
    let scale: [f32; DIMS] = values[table_len + DIMS..table_len + 2 * DIMS]
        .try_into()
        .expect("DIMS");
    let slack = values[table_len + 2 * DIMS];
    if scale.iter().any(|s| *s <= 0.0) || slack < 0.0 {
        return Err(invalid(
            "has a quantisation scale or a slack that is not positive",
        ));
    }
    let mut table = values;
    table.truncate(table_len);
    Ok(Projection {
        table,
        offset,
        scale,
        slack,
    })
}

/// Recomputes a sample of the loaded summaries (evenly spread, and the last ones) from the
/// store's codes: summaries are a deterministic function of codes and projections, so any
/// difference means the file (`path`) was written for other codes.
fn verify_sample(
    index: &SearchIndex,
    normal: &[u8],
    abnormal: &[u8],
    deleted: &RecordSet,
    path: &Path,
) -> Result<(), PersistError> {
    let n = index.len();
    let p = index.positions();
    let spread = (0..VERIFY_SAMPLE.min(n)).map(|i| i * n / VERIFY_SAMPLE.min(n));
    let last = n.saturating_sub(16)..n;
    for id in spread.chain(last) {
        if deleted.contains(id as RecordId) {
            continue;
        }
        let fresh = index.summary_of(
            &normal[id * p..(id + 1) * p],
            &abnormal[id * p..(id + 1) * p],
        );
        if fresh.to_bytes() != index.summaries(id, id + 1)[0].to_bytes() {
            return Err(PersistError::invalid(
                path,
                format!(
                    "the summary of record {id} does not match the store's codes (the file belongs to another store)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::QueryCodes;

    const SIZE: usize = 16;
    const DIM: usize = 4;
    const P: usize = 12;

    fn tables(seed: u64) -> DistanceTables {
        let mut state = seed;
        let book: Vec<f32> = (0..SIZE * DIM)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % 97) as f32 / 13.0
            })
            .collect();
        DistanceTables::new(&book, &book, SIZE, DIM).unwrap()
    }

    /// `n` records of clustered codes.
    fn codes(n: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let centres: Vec<Vec<u8>> = (0..4)
            .map(|_| (0..P).map(|_| (next() % SIZE) as u8).collect())
            .collect();
        let mut out = Vec::with_capacity(n * P);
        for _ in 0..n {
            let mut r = centres[next() % 4].clone();
            r[next() % P] = (next() % SIZE) as u8;
            out.extend_from_slice(&r);
        }
        out
    }

    fn identity(tables: &DistanceTables) -> Identity {
        Identity::new("test-model", P, tables)
    }

    fn save(persisted: &mut PersistedIndex, index: &mut SearchIndex, records: usize) {
        let pending = persisted
            .prepare(index, records)
            .expect("something to write");
        persisted.write(pending).unwrap();
    }

    /// Everything the index holds, as bytes: projections and summaries.
    fn bytes_of(index: &SearchIndex) -> (Vec<u8>, Vec<[u8; SUMMARY_BYTES]>) {
        let (normal, abnormal) = index.projections();
        let mut projections = encode_projection(normal);
        projections.extend(encode_projection(abnormal));
        let rows = index
            .summaries(0, index.len())
            .iter()
            .map(|s| s.to_bytes())
            .collect();
        (projections, rows)
    }

    fn header_bytes(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(HEADER_FILE)).unwrap()
    }

    #[test]
    fn a_saved_index_reads_back_bit_for_bit_and_gives_the_same_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let tables = tables(1);
        let all = codes(700, 2);
        let mut index = SearchIndex::build(&tables, P, &all[..600 * P], &all[..600 * P]);
        let mut persisted = PersistedIndex::new(dir.path(), identity(&tables));
        assert!(
            persisted
                .load(&all, &all, &RecordSet::default())
                .unwrap()
                .is_none()
        );
        // The first save writes everything; the next ones append.
        save(&mut persisted, &mut index, 500);
        assert_eq!(persisted.records_on_disk(), Some(500));
        assert!(persisted.prepare(&mut index, 500).is_none(), "nothing new");
        let pending = persisted.prepare(&mut index, 600).unwrap();
        assert!(!pending.is_full(), "only the new summaries are written");
        persisted.write(pending).unwrap();
        let store = &all[..600 * P];
        let mut fresh = PersistedIndex::new(dir.path(), identity(&tables));
        let loaded = fresh
            .load(store, store, &RecordSet::default())
            .unwrap()
            .expect("a valid file");
        assert_eq!(loaded.len(), 600);
        assert_eq!(loaded.trained_on(), index.trained_on());
        assert_eq!(bytes_of(&loaded), bytes_of(&index));
        let query = QueryCodes {
            normal: all[650 * P..651 * P].to_vec(),
            abnormal: all[3 * P..4 * P].to_vec(),
        };
        let (a, b) = (index.query(&query), loaded.query(&query));
        for id in 0..600 {
            let (s, t) = (index.summary(id).unwrap(), loaded.summary(id).unwrap());
            assert_eq!(a.normal(&s).to_bits(), b.normal(&t).to_bits());
            assert_eq!(a.abnormal(&s).to_bits(), b.abnormal(&t).to_bits());
        }
        // Extending the loaded index summarises the records after the file's as a fresh
        // extension does.
        let mut extended = loaded;
        extended.extend(&tables, &all, &all);
        index.extend(&tables, &all, &all);
        assert_eq!(bytes_of(&extended), bytes_of(&index));
    }

    #[test]
    fn a_torn_corrupted_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tables = tables(1);
        let all = codes(300, 3);
        let mut index = SearchIndex::build(&tables, P, &all, &all);
        let mut persisted = PersistedIndex::new(dir.path(), identity(&tables));
        save(&mut persisted, &mut index, 300);
        let none = RecordSet::default();
        let load =
            |identity: Identity| PersistedIndex::new(dir.path(), identity).load(&all, &all, &none);
        assert!(load(identity(&tables)).unwrap().is_some());
        let invalid = |result: Result<Option<SearchIndex>, PersistError>, what: &str| match result {
            Err(PersistError::Invalid { reason, .. }) => reason,
            Err(other) => panic!("{what}: {other}"),
            Ok(_) => panic!("{what}: trusted"),
        };
        // Another model, other codebooks.
        let reason = invalid(load(Identity::new("other", P, &tables)), "another model");
        assert!(reason.contains("model `test-model`"), "{reason}");
        invalid(load(identity(&self::tables(9))), "other codebooks");
        // A flipped byte in the header, in a summary, in a projection.
        let index_path = dir.path().join(INDEX_FILE);
        let header_path = dir.path().join(HEADER_FILE);
        let good_header = header_bytes(dir.path());
        let good_index = std::fs::read(&index_path).unwrap();
        let flip = |path: &Path, good: &[u8], at: usize| {
            let mut bad = good.to_vec();
            bad[at] ^= 0x10;
            std::fs::write(path, bad).unwrap();
            let result = load(identity(&tables));
            std::fs::write(path, good).unwrap();
            result
        };
        for at in [0, 9, 40, good_header.len() - 1] {
            let reason = invalid(flip(&header_path, &good_header, at), "corrupted header");
            assert!(
                reason.contains("magic") || reason.contains("checksum"),
                "{reason}"
            );
        }
        let reason = invalid(
            flip(&index_path, &good_index, good_index.len() - 3),
            "summary",
        );
        assert!(reason.contains("summaries"), "{reason}");
        let reason = invalid(flip(&index_path, &good_index, 100), "projection");
        assert!(reason.contains("projections"), "{reason}");
        // A torn file: the summaries cut short, or the header alone.
        std::fs::write(&index_path, &good_index[..good_index.len() - 10]).unwrap();
        let reason = invalid(load(identity(&tables)), "a truncated file");
        assert!(reason.contains("truncated"), "{reason}");
        std::fs::write(&header_path, &good_header[..good_header.len() / 2]).unwrap();
        invalid(load(identity(&tables)), "a torn header");
        // Another store of the same model: summaries that do not match its codes.
        std::fs::write(&index_path, &good_index).unwrap();
        std::fs::write(&header_path, &good_header).unwrap();
        let other = codes(300, 4);
        let reason = invalid(
            PersistedIndex::new(dir.path(), identity(&tables)).load(&other, &other, &none),
            "another store",
        );
        assert!(reason.contains("another store"), "{reason}");
    }

    #[test]
    fn a_file_never_describes_more_records_than_the_store_holds() {
        let dir = tempfile::tempdir().unwrap();
        let tables = tables(1);
        let all = codes(400, 5);
        let mut index = SearchIndex::build(&tables, P, &all, &all);
        let mut persisted = PersistedIndex::new(dir.path(), identity(&tables));
        save(&mut persisted, &mut index, 400);
        // A store of 250 records: the index holds 250, and the file is capped on disk at once.
        let store = &all[..250 * P];
        let mut fresh = PersistedIndex::new(dir.path(), identity(&tables));
        let loaded = fresh
            .load(store, store, &RecordSet::default())
            .unwrap()
            .unwrap();
        assert_eq!(loaded.len(), 250);
        assert_eq!(fresh.records_on_disk(), Some(250));
        let other = codes(400, 6);
        let mut grown = store.to_vec();
        grown.extend_from_slice(&other[250 * P..]);
        let reloaded = PersistedIndex::new(dir.path(), identity(&tables))
            .load(&grown, &grown, &RecordSet::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            reloaded.len(),
            250,
            "records 250.. come from the grown store, not the file"
        );
        // A rollback: cap to 100.
        fresh.cap(100).unwrap();
        assert_eq!(fresh.records_on_disk(), Some(100));
        let reloaded = PersistedIndex::new(dir.path(), identity(&tables))
            .load(&all, &all, &RecordSet::default())
            .unwrap()
            .unwrap();
        assert_eq!(reloaded.len(), 100);
        // Capping to more changes nothing.
        fresh.cap(300).unwrap();
        assert_eq!(fresh.records_on_disk(), Some(100));
    }

    #[test]
    fn deleted_records_summaries_are_rewritten_from_their_zeroed_codes() {
        let dir = tempfile::tempdir().unwrap();
        let tables = tables(1);
        let mut all = codes(200, 7);
        let mut index = SearchIndex::build(&tables, P, &all, &all);
        let mut persisted = PersistedIndex::new(dir.path(), identity(&tables));
        save(&mut persisted, &mut index, 200);
        // Record 17 is deleted: its codes are zeroed, its summary recomputed and rewritten.
        all[17 * P..18 * P].fill(0);
        assert_eq!(index.resummarise(&[17], &all, &all), 1);
        assert!(persisted.is_urgent(&index));
        let pending = persisted.prepare(&mut index, 200).unwrap();
        assert!(!pending.is_full());
        persisted.write(pending).unwrap();
        assert!(!persisted.is_urgent(&index));
        let deleted: RecordSet = [17].into_iter().collect();
        let loaded = PersistedIndex::new(dir.path(), identity(&tables))
            .load(&all, &all, &deleted)
            .unwrap()
            .unwrap();
        assert_eq!(bytes_of(&loaded), bytes_of(&index));
        let zero = index.summary_of(&[0; P], &[0; P]).to_bytes();
        assert_eq!(loaded.summaries(17, 18)[0].to_bytes(), zero);
    }

    #[test]
    fn a_new_fit_rewrites_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let tables = tables(1);
        let all = codes(200, 8);
        let mut index = SearchIndex::build(&tables, P, &all[..20 * P], &all[..20 * P]);
        let mut persisted = PersistedIndex::new(dir.path(), identity(&tables));
        save(&mut persisted, &mut index, 20);
        // Doubling refits: a new generation, written whole.
        index.extend(&tables, &all, &all);
        assert!(persisted.is_urgent(&index));
        let pending = persisted.prepare(&mut index, 200).unwrap();
        assert!(pending.is_full());
        persisted.write(pending).unwrap();
        let loaded = PersistedIndex::new(dir.path(), identity(&tables))
            .load(&all, &all, &RecordSet::default())
            .unwrap()
            .unwrap();
        assert_eq!(bytes_of(&loaded), bytes_of(&index));
    }
}
