//! The write-ahead log of accepted work, in `<data_dir>/wal/` as numbered segment files.
//!
//! Every entry is a [`WalRecord`] with a seq that increases by one per entry and continues
//! across restarts (each segment's header carries the seq its first entry gets, so pruning
//! every old segment does not reset it). Entries are framed with their length and a CRC-32
//! ([`frame`]'s layout); opening the log verifies every entry, reports a torn or damaged tail
//! in [`WalRecovery`] (and a `warn` log line without payload content), truncates the last
//! segment to its last valid entry, and never returns what follows.
//!
//! Appends go through one writer thread that commits in groups: it drains every waiting
//! append, writes them, fsyncs once (`fdatasync`) and only then answers, so concurrent
//! appenders share fsyncs. An answer `Ok(seq)` means the entry survives `kill -9` and power
//! loss.
//!
//! Segments rotate at [`WalOptions::segment_bytes`]; [`Wal::prune_through`] deletes segments
//! whose entries have all been applied, which is how a deleted patient's DICOM bytes leave the
//! disk (after [`Wal::rotate`], so the active segment holds none of them).

mod frame;
mod replay;
mod segment;
mod writer;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;

pub use frame::WalRecord;
pub use replay::WalReplay;
use segment::{HEADER_LEN, Header, SegmentInfo};
use writer::{Reply, Request};

use super::{StoreError, folder};

/// Tuning of the log.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// A segment is closed and a new one started once the next entry would take it past this
    /// size (a single larger entry gets a segment of its own). Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest entry (frame) accepted; larger appends fail with
    /// [`StoreError::EntryTooLarge`]. Default 1 GiB; at most 4 GiB (the frame's length field).
    pub max_entry_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_entry_bytes: 1 << 30,
        }
    }
}

/// What opening the log found: its extent and every damaged place it skipped.
#[derive(Clone, Debug, Default)]
pub struct WalRecovery {
    /// Segment files kept.
    pub segments: usize,
    /// Valid entries found.
    pub entries: u64,
    /// Seq of the last valid entry, if any.
    pub last_seq: Option<u64>,
    /// Damage found and skipped, in segment order; empty for a clean log.
    pub corruptions: Vec<WalCorruption>,
}

/// A torn or damaged place in a segment: nothing from `offset` to the segment's end is ever
/// returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalCorruption {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the first invalid entry.
    pub offset: u64,
    /// What was wrong (no payload content).
    pub reason: String,
    /// Bytes skipped from `offset` to the end of the segment.
    pub discarded_bytes: u64,
    /// Whether the file was cut back to `offset` (the last segment, so new entries follow valid
    /// data) rather than left and skipped (an older segment).
    pub truncated: bool,
}

impl std::fmt::Display for WalCorruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {} of {}: {} bytes {}",
            self.reason,
            self.offset,
            self.segment.display(),
            self.discarded_bytes,
            if self.truncated {
                "truncated"
            } else {
                "skipped"
            }
        )
    }
}

/// The write-ahead log; share it as `Arc<Wal>` (every method takes `&self`).
pub struct Wal {
    shared: Arc<Shared>,
    queue: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

/// What the writer thread and the callers share.
struct Shared {
    dir: PathBuf,
    options: WalOptions,
    state: Mutex<LogState>,
    fsyncs: AtomicU64,
    _lock: File,
}

/// The segments and the append position, guarded by `Shared::state`.
struct LogState {
    /// Every segment, oldest first; the last is the active one.
    segments: Vec<SegmentInfo>,
    /// The active segment, open for appending at its valid end.
    active: File,
    /// Seq of the next entry.
    next_seq: u64,
    /// Seq of the last durable entry.
    durable_seq: Option<u64>,
    /// Set after a failed write or fsync until the log is repaired (cut back to its last
    /// durable entry), which the writer tries before every batch.
    failed: Option<String>,
}

impl LogState {
    fn active_info(&self) -> &SegmentInfo {
        self.segments.last().expect("the active segment is listed")
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, LogState> {
        // The state stays consistent across a panic (fields are updated after each fsync).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`, verifying every entry: a torn or damaged tail is
    /// reported in the returned [`WalRecovery`], logged, and cut off.
    pub fn open(
        dir: impl AsRef<Path>,
        options: WalOptions,
    ) -> Result<(Wal, WalRecovery), StoreError> {
        let dir = dir.as_ref().to_owned();
        let options = WalOptions {
            segment_bytes: options.segment_bytes.max(HEADER_LEN + 1),
            max_entry_bytes: options.max_entry_bytes.min(u32::MAX as u64),
        };
        let lock = folder::create_and_lock(&dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| StoreError::io("list", &dir, e))? {
            let entry = entry.map_err(|e| StoreError::io("list", &dir, e))?;
            if let Some(number) = entry.file_name().to_str().and_then(segment::parse_name) {
                found.push((number, entry.path()));
            }
        }
        found.sort();

        let mut recovery = WalRecovery::default();
        let mut segments = Vec::new();
        let mut next_seq = 1u64;
        let mut appendable = false;
        let count = found.len();
        for (i, (number, path)) in found.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::io("open", &path, e))?;
            let file_len = file
                .metadata()
                .map_err(|e| StoreError::io("stat", &path, e))?
                .len();
            appendable = false;
            match segment::read_header(&path, &mut file, file_len)? {
                Header::Short => {
                    // Creation was cut short before the header was durable: no entry can follow.
                    report(
                        &mut recovery,
                        WalCorruption {
                            segment: path.clone(),
                            offset: 0,
                            reason: "an incomplete segment header (creation cut short); the file was removed".into(),
                            discarded_bytes: file_len,
                            truncated: true,
                        },
                    );
                    drop(file);
                    std::fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
                    folder::sync_dir(&dir)?;
                }
                Header::Damaged => {
                    report(
                        &mut recovery,
                        WalCorruption {
                            segment: path.clone(),
                            offset: 0,
                            reason: "a damaged segment header".into(),
                            discarded_bytes: file_len,
                            truncated: false,
                        },
                    );
                    segments.push(SegmentInfo {
                        number,
                        path,
                        base_seq: 0,
                        last_seq: None,
                        valid_len: HEADER_LEN,
                    });
                }
                Header::Valid { base_seq } => {
                    let scan = segment::scan(&path, &file, base_seq, file_len)?;
                    if let Some((offset, reason)) = scan.problem {
                        if is_last {
                            file.set_len(scan.valid_len)
                                .and_then(|()| file.sync_all())
                                .map_err(|e| StoreError::io("truncate", &path, e))?;
                        }
                        report(
                            &mut recovery,
                            WalCorruption {
                                segment: path.clone(),
                                offset,
                                reason,
                                discarded_bytes: file_len - offset,
                                truncated: is_last,
                            },
                        );
                    }
                    next_seq = next_seq.max(base_seq);
                    if let Some(last) = scan.last_seq {
                        next_seq = next_seq.max(last + 1);
                        recovery.last_seq = Some(last);
                    }
                    recovery.entries += scan.entries;
                    appendable = is_last;
                    segments.push(SegmentInfo {
                        number,
                        path,
                        base_seq,
                        last_seq: scan.last_seq,
                        valid_len: scan.valid_len,
                    });
                }
            }
        }

        let reuse_last = appendable
            && segments
                .last()
                .is_some_and(|s| s.valid_len < options.segment_bytes);
        let active = if reuse_last {
            let info = segments.last().expect("checked above");
            OpenOptions::new()
                .append(true)
                .open(&info.path)
                .map_err(|e| StoreError::io("open", &info.path, e))?
        } else {
            let number = segments.last().map_or(1, |s| s.number + 1);
            let (file, info) = segment::create(&dir, number, next_seq)?;
            segments.push(info);
            file
        };
        recovery.segments = segments.len();

        let shared = Arc::new(Shared {
            dir,
            options,
            state: Mutex::new(LogState {
                segments,
                active,
                next_seq,
                durable_seq: recovery.last_seq,
                failed: None,
            }),
            fsyncs: AtomicU64::new(0),
            _lock: lock,
        });
        let (queue, inbox) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("diptych-wal".into())
            .spawn(move || writer::run(writer_shared, inbox))
            .map_err(|e| StoreError::io("start the writer thread of", &shared.dir, e))?;
        Ok((
            Wal {
                shared,
                queue: Some(queue),
                writer: Some(writer),
            },
            recovery,
        ))
    }

    /// Appends a record; resolves to its seq once it is fsynced (group commit with every other
    /// append in flight). The future does not borrow the log.
    pub fn append(
        &self,
        record: WalRecord,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + use<> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let submitted = self.submit(record, Reply::Async(tx));
        let dir = self.shared.dir.clone();
        async move {
            submitted?;
            rx.await.map_err(|_| StoreError::WalClosed { path: dir })?
        }
    }

    /// [`Wal::append`] for synchronous callers: blocks until the record is fsynced. Do not call
    /// it on an async runtime's worker thread.
    pub fn append_blocking(&self, record: WalRecord) -> Result<u64, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(record, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| StoreError::WalClosed {
            path: self.shared.dir.clone(),
        })?
    }

    fn submit(&self, record: WalRecord, reply: Reply) -> Result<(), StoreError> {
        let frame_len = frame::FRAME_HEADER as u64 + record.payload_len();
        if frame_len > self.shared.options.max_entry_bytes {
            return Err(StoreError::EntryTooLarge {
                path: self.shared.dir.clone(),
                bytes: frame_len,
                max: self.shared.options.max_entry_bytes,
            });
        }
        let queue = self.queue.as_ref().expect("present until drop");
        queue
            .send(Request {
                record,
                frame_len,
                reply,
            })
            .map_err(|_| StoreError::WalClosed {
                path: self.shared.dir.clone(),
            })
    }

    /// The durable entries with seq > `seq`, in order, read lazily (one entry in memory at a
    /// time). Entries appended after this call are not included. Do not prune segments the
    /// replay has yet to reach.
    pub fn replay_after(&self, seq: u64) -> WalReplay {
        let segments = self.shared.lock_state().segments.clone();
        WalReplay::new(seq, segments)
    }

    /// Closes the active segment (when it holds any entry) and starts a new one, so that every
    /// entry acknowledged so far can be pruned.
    pub fn rotate(&self) -> Result<(), StoreError> {
        let mut state = self.shared.lock_state();
        if let Some(reason) = &state.failed {
            return Err(StoreError::WalFailed {
                path: self.shared.dir.clone(),
                reason: reason.clone(),
            });
        }
        if state.active_info().valid_len == HEADER_LEN {
            return Ok(());
        }
        let number = state.active_info().number + 1;
        let (file, info) = segment::create(&self.shared.dir, number, state.next_seq)?;
        state.active = file;
        state.segments.push(info);
        Ok(())
    }

    /// Deletes every closed segment whose entries all have seq ≤ `applied_seq` (the active
    /// segment is never deleted: [`Wal::rotate`] first). Returns how many files were removed.
    pub fn prune_through(&self, applied_seq: u64) -> Result<usize, StoreError> {
        let mut state = self.shared.lock_state();
        let active = state.segments.len() - 1;
        let mut removed = 0;
        let mut kept = Vec::with_capacity(state.segments.len());
        let mut result = Ok(());
        for (i, info) in std::mem::take(&mut state.segments).into_iter().enumerate() {
            let prunable = i < active && info.last_seq.is_none_or(|last| last <= applied_seq);
            if prunable && result.is_ok() {
                match std::fs::remove_file(&info.path) {
                    Ok(()) => {
                        removed += 1;
                        continue;
                    }
                    Err(e) => result = Err(StoreError::io("remove", &info.path, e)),
                }
            }
            kept.push(info);
        }
        state.segments = kept;
        drop(state);
        if removed > 0 {
            folder::sync_dir(&self.shared.dir)?;
        }
        result.map(|()| removed)
    }

    /// Seq of the last durable entry, if any.
    pub fn last_seq(&self) -> Option<u64> {
        self.shared.lock_state().durable_seq
    }

    /// How many fsyncs of appended data the writer has made since open (group commit makes
    /// this far smaller than the number of appends under concurrency).
    pub fn fsyncs(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// How many segment files the log has, the active one included.
    pub fn segment_count(&self) -> usize {
        self.shared.lock_state().segments.len()
    }

    /// The log's folder.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Drop for Wal {
    /// Lets the writer finish what is queued, then stops it.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Records damage in the recovery report and the log (never payload content).
fn report(recovery: &mut WalRecovery, corruption: WalCorruption) {
    tracing::warn!(
        segment = %corruption.segment.display(),
        offset = corruption.offset,
        discarded_bytes = corruption.discarded_bytes,
        truncated = corruption.truncated,
        reason = %corruption.reason,
        "write-ahead log damage skipped"
    );
    recovery.corruptions.push(corruption);
}

#[cfg(test)]
mod tests;
