//! The writer thread: group commit. It takes every append waiting in its queue, writes them
//! all, fsyncs once, and only then answers each with its seq.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};

use super::frame::Frame;
use super::segment::{self, HEADER_LEN};
use super::{LogState, Shared, WalRecord};
use crate::store::StoreError;

/// Largest batch (bytes of frames) committed with one fsync.
const MAX_BATCH_BYTES: u64 = 64 << 20;
/// Bodies at least this large are written directly instead of through the batch buffer.
const DIRECT_WRITE: usize = 256 << 10;

/// Where the outcome of an append goes.
pub(super) enum Reply {
    /// An async caller.
    Async(tokio::sync::oneshot::Sender<Result<u64, StoreError>>),
    /// A blocking caller.
    Blocking(SyncSender<Result<u64, StoreError>>),
}

impl Reply {
    fn send(self, outcome: Result<u64, StoreError>) {
        // A caller that went away no longer needs the answer; its entry is durable regardless.
        match self {
            Reply::Async(tx) => drop(tx.send(outcome)),
            Reply::Blocking(tx) => drop(tx.send(outcome)),
        }
    }
}

/// One append waiting for the writer.
pub(super) struct Request {
    /// The record to write.
    pub record: WalRecord,
    /// Its frame's size on disk.
    pub frame_len: u64,
    /// Where to answer.
    pub reply: Reply,
}

/// The writer loop; returns when every sender is gone.
pub(super) fn run(shared: Arc<Shared>, queue: Receiver<Request>) {
    let mut buffer = Vec::with_capacity(1 << 20);
    while let Ok(first) = queue.recv() {
        let mut batch_bytes = first.frame_len;
        let mut batch = vec![first];
        while batch_bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    batch_bytes += next.frame_len;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (first_seq, outcome) = {
            let mut state = shared.lock_state();
            let first_seq = state.next_seq;
            let outcome = match repair_if_failed(&mut state) {
                Err(reason) => Err(reason),
                Ok(()) => commit(&shared, &mut state, &batch, &mut buffer).map_err(|e| {
                    tracing::error!(error = %e, "a write-ahead log write failed; the log repairs itself and retries with the next write");
                    let reason = e.to_string();
                    state.failed = Some(reason.clone());
                    // Repair at once when possible, so the next write finds the log clean.
                    let _ = repair_if_failed(&mut state);
                    reason
                }),
            };
            // Entries of the batch made durable before the failure (an earlier segment of a
            // rotation) are answered with their seq like any other.
            let durable = state.durable_seq.filter(|&d| d >= first_seq);
            (first_seq, outcome.map_err(|reason| (reason, durable)))
        };
        buffer.clear();
        for (i, request) in batch.into_iter().enumerate() {
            let seq = first_seq + i as u64;
            let answer = match &outcome {
                Ok(_) => Ok(seq),
                Err((_, Some(durable))) if seq <= *durable => Ok(seq),
                Err((reason, _)) => Err(StoreError::WalFailed {
                    path: shared.dir.clone(),
                    reason: reason.clone(),
                }),
            };
            request.reply.send(answer);
        }
    }
}

/// After a failed write (a full disk, an I/O error), puts the log back to its last durable
/// state: the active segment is cut back to its last fsynced entry and the next seq follows the
/// last durable entry, so nothing unacknowledged remains and the log accepts writes again once
/// the cause is gone. Errs, with the first failure's reason, while that is not yet possible.
fn repair_if_failed(state: &mut LogState) -> Result<(), String> {
    let Some(reason) = state.failed.clone() else {
        return Ok(());
    };
    let info = state.active_info().clone();
    let cut = state
        .active
        .set_len(info.valid_len)
        .and_then(|()| state.active.seek(SeekFrom::Start(info.valid_len)).map(drop))
        .and_then(|()| state.active.sync_all());
    if let Err(e) = cut {
        return Err(format!(
            "{reason}; cutting {} back to its last durable entry failed too: {e}",
            info.path.display()
        ));
    }
    // The active segment's entries are durable up to `info.last_seq`; without any, the next
    // entry is the first its header promises.
    state.next_seq = info.last_seq.map_or(info.base_seq, |last| last + 1);
    state.failed = None;
    tracing::info!(
        segment = %info.path.display(),
        valid_len = info.valid_len,
        "the write-ahead log was repaired after a failed write and accepts writes again"
    );
    Ok(())
}

/// Writes the batch (rotating segments as they fill) and fsyncs; returns the first entry's seq.
fn commit(
    shared: &Shared,
    state: &mut LogState,
    batch: &[Request],
    buffer: &mut Vec<u8>,
) -> Result<u64, StoreError> {
    let first_seq = state.next_seq;
    let mut pending_len = state.active_info().valid_len;
    let mut pending_last = state.active_info().last_seq;
    for request in batch {
        if pending_len > HEADER_LEN
            && pending_len + request.frame_len > shared.options.segment_bytes
        {
            let path = state.active_info().path.clone();
            flush(&mut state.active, &path, buffer)?;
            sync(shared, state, pending_len, pending_last)?;
            let number = state.active_info().number + 1;
            let (file, info) = segment::create(&shared.dir, number, state.next_seq)?;
            state.active = file;
            state.segments.push(info);
            pending_len = HEADER_LEN;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let frame = Frame::new(&request.record, seq);
        debug_assert_eq!(frame.len(), request.frame_len);
        buffer.extend_from_slice(&frame.head);
        buffer.extend(frame.level);
        if frame.body.len() >= DIRECT_WRITE {
            let path = state.active_info().path.clone();
            flush(&mut state.active, &path, buffer)?;
            state
                .active
                .write_all(frame.body)
                .map_err(|e| StoreError::io("write", path, e))?;
        } else {
            buffer.extend_from_slice(frame.body);
        }
        pending_len += frame.len();
        pending_last = Some(seq);
    }
    let path = state.active_info().path.clone();
    flush(&mut state.active, &path, buffer)?;
    sync(shared, state, pending_len, pending_last)?;
    Ok(first_seq)
}

fn flush(file: &mut File, path: &std::path::Path, buffer: &mut Vec<u8>) -> Result<(), StoreError> {
    file.write_all(buffer)
        .map_err(|e| StoreError::io("write", path, e))?;
    buffer.clear();
    Ok(())
}

/// fsyncs the active segment and publishes what it now durably holds.
fn sync(
    shared: &Shared,
    state: &mut LogState,
    valid_len: u64,
    last_seq: Option<u64>,
) -> Result<(), StoreError> {
    let path = state.active_info().path.clone();
    state
        .active
        .sync_data()
        .map_err(|e| StoreError::io("fsync", path, e))?;
    shared.fsyncs.fetch_add(1, Ordering::Relaxed);
    let info = state
        .segments
        .last_mut()
        .expect("the active segment is listed");
    info.valid_len = valid_len;
    info.last_seq = last_seq;
    if last_seq.is_some() {
        state.durable_seq = last_seq;
    }
    Ok(())
}
