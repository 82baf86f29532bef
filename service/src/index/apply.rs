//! Applying accepted work, in write-ahead-log order: encode, store, catalog, checkpoint.
//!
//! One worker owns every write to the store and the catalog. It takes work in log sequence
//! order (a small reorder buffer absorbs concurrent acceptors that reach the channel out of
//! order), encodes the frames of a whole chunk concurrently so the dynamic batcher fills its
//! batches, and ends each chunk with a checkpoint: store synced, catalog committed with the last
//! applied sequence number, applied log segments pruned. The checkpoint runs on a blocking thread
//! while the next chunk encodes (that chunk's codes are added only once it is done), so the
//! encoder does not sit idle during its fsyncs. A chunk is what has arrived by the time
//! the previous one finished, so under steady ingest new records become searchable within a
//! chunk's time (well under the 2 s the API promises).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::task::JoinSet;

use super::Index;
use super::accept::Prepared;
use crate::catalog::{CatalogEntry, Checkpoint};
use crate::encoder::{BatchError, SliceCode};
use crate::record::DeleteTarget;
use crate::store::{NewRecord, WalRecord};

/// Most frames encoded in one chunk.
const CHUNK_FRAMES: usize = 512;
/// How long a gap in the sequence numbers is waited for before it is taken as a failed append.
const GAP_PATIENCE: Duration = Duration::from_secs(5);

/// What a delete removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteCounts {
    /// Records (slices) removed.
    pub records: u64,
    /// Distinct instances removed.
    pub instances: u64,
}

/// One unit of accepted work, named by its log sequence number.
pub enum Work {
    /// An image instance, decoded and pre-processed.
    Instance {
        /// Log sequence number.
        seq: u64,
        /// Its frames and metadata.
        prepared: Box<Prepared>,
        /// Its room in the index's backlog, given back once it is applied (none on replay).
        backlog: Option<OwnedSemaphorePermit>,
    },
    /// A delete; `reply` hears the counts once it is applied and committed.
    Delete {
        /// Log sequence number.
        seq: u64,
        /// What to delete.
        target: DeleteTarget,
        /// Who waits for the answer (none during replay).
        reply: Option<oneshot::Sender<Result<DeleteCounts, String>>>,
    },
    /// A log entry with nothing to apply (a non-image object replayed).
    Skip {
        /// Log sequence number.
        seq: u64,
    },
}

impl Work {
    fn seq(&self) -> u64 {
        match self {
            Work::Instance { seq, .. } | Work::Delete { seq, .. } | Work::Skip { seq } => *seq,
        }
    }
}

/// The worker: runs until the channel closes.
pub async fn run(index: Arc<Index>, mut rx: mpsc::UnboundedReceiver<Work>, first_seq: u64) {
    let mut waiting: BTreeMap<u64, Work> = BTreeMap::new();
    let mut next = first_seq;
    let mut gap_since: Option<Instant> = None;
    let mut committing: Committing = None;
    loop {
        // Wait for work (with a gap open, at most a moment, to re-check the gap's patience).
        let received = if waiting.is_empty() {
            Some(rx.recv().await)
        } else {
            tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .ok()
        };
        match received {
            Some(None) => {
                committed(&mut committing).await;
                return;
            }
            Some(Some(work)) => {
                waiting.insert(work.seq(), work);
            }
            None => {}
        }
        while let Ok(work) = rx.try_recv() {
            waiting.insert(work.seq(), work);
        }
        // Late arrivals below `next` (after a gap was given up) are applied at once.
        let late: Vec<Work> = {
            let keep = waiting.split_off(&next);
            std::mem::replace(&mut waiting, keep)
                .into_values()
                .collect()
        };
        if !late.is_empty() {
            apply_chunk(&index, late, &mut committing).await;
        }
        let ready = take_contiguous(&mut waiting, &mut next);
        if ready.is_empty() {
            let since = *gap_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= GAP_PATIENCE
                && let Some((&lowest, _)) = waiting.first_key_value()
            {
                tracing::error!(
                    missing_from = next,
                    resumes_at = lowest,
                    "write-ahead log sequence gap (a failed append?); applying what follows"
                );
                next = lowest;
                gap_since = None;
            }
            continue;
        }
        gap_since = None;
        apply_chunk(&index, ready, &mut committing).await;
    }
}

/// Removes the work items with sequence numbers `next, next+1, …` from `waiting`, up to a
/// chunk's worth of frames.
fn take_contiguous(waiting: &mut BTreeMap<u64, Work>, next: &mut u64) -> Vec<Work> {
    let mut ready = Vec::new();
    let mut frames = 0;
    while frames < CHUNK_FRAMES {
        let Some(work) = waiting.remove(next) else {
            break;
        };
        if let Work::Instance { prepared, .. } = &work {
            frames += prepared.frames.len();
        }
        ready.push(work);
        *next += 1;
    }
    ready
}

/// The checkpoint of the previous chunk, running on a blocking thread while the next chunk
/// encodes; the next chunk's codes and catalog entries are added only after it has finished.
type Committing = Option<tokio::task::JoinHandle<()>>;

/// Waits for the previous chunk's checkpoint, if one is running.
async fn committed(committing: &mut Committing) {
    if let Some(handle) = committing.take()
        && let Err(error) = handle.await
    {
        tracing::error!(%error, "a checkpoint task failed");
    }
}

/// Applies a chunk in order; its checkpoint is left running in `committing`.
async fn apply_chunk(index: &Arc<Index>, chunk: Vec<Work>, committing: &mut Committing) {
    let Some(last_seq) = chunk.last().map(Work::seq) else {
        return;
    };
    let count = chunk.len() as u64;
    let mut instances: Vec<(u64, Box<Prepared>)> = Vec::new();
    let mut backlog: Vec<OwnedSemaphorePermit> = Vec::new();
    for work in chunk {
        match work {
            Work::Instance {
                seq,
                prepared,
                backlog: permit,
            } => {
                instances.push((seq, prepared));
                backlog.extend(permit);
            }
            Work::Skip { .. } => {}
            Work::Delete { seq, target, reply } => {
                // Everything before the delete is indexed and committed first, so the delete sees it.
                let keys = index_instances(index, std::mem::take(&mut instances), committing).await;
                checkpoint(index, seq.saturating_sub(1));
                index.release(&keys);
                let outcome = apply_delete(index, &target, seq);
                if let Err(message) = &outcome {
                    tracing::error!(level = target.level(), %message, "delete failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
        }
    }
    let started = Instant::now();
    let frames: usize = instances.iter().map(|(_, p)| p.frames.len()).sum();
    let keys = index_instances(index, instances, committing).await;
    committed(committing).await;
    let indexed = started.elapsed();
    // The checkpoint (store sync, catalog commit: mostly waiting for fsyncs) overlaps the
    // encoding of the next chunk.
    let index = index.clone();
    *committing = Some(tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        checkpoint(&index, last_seq);
        tracing::debug!(
            entries = count,
            frames,
            index_ms = indexed.as_secs_f64() * 1e3,
            checkpoint_ms = started.elapsed().as_secs_f64() * 1e3,
            "chunk applied"
        );
        // Only now, committed and visible to the catalog's duplicate check, do they leave the
        // in-flight set (earlier, a copy arriving in between would be indexed twice).
        index.release(&keys);
        index.counters.pending.fetch_sub(count, Ordering::Relaxed);
        drop(backlog);
    }));
}

/// Encodes every frame of `instances` concurrently, waits for the previous checkpoint in
/// `committing`, then appends codes and catalog entries in log order.
/// Returns the instance keys it applied.
async fn index_instances(
    index: &Arc<Index>,
    mut instances: Vec<(u64, Box<Prepared>)>,
    committing: &mut Committing,
) -> Vec<u64> {
    if instances.is_empty() {
        committed(committing).await;
        return Vec::new();
    }
    let mut codes: Vec<Vec<Option<SliceCode>>> = instances
        .iter()
        .map(|(_, p)| vec![None; p.frames.len()])
        .collect();
    // The pixels go to the encoder; only the metadata is needed after it.
    let mut tasks = JoinSet::new();
    for (i, (_, prepared)) in instances.iter_mut().enumerate() {
        for (f, pixels) in std::mem::take(&mut prepared.frames).into_iter().enumerate() {
            let engine = index.engine.clone();
            tasks.spawn(async move { (i, f, encode_with_retry(&engine, pixels).await) });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, f, Ok(code))) => codes[i][f] = Some(code),
            Ok((_, _, Err(error))) => tracing::error!(%error, "encoding an accepted frame failed"),
            Err(error) => tracing::error!(%error, "an encoding task failed"),
        }
    }
    committed(committing).await;
    let mut records = Vec::new();
    let mut entries = Vec::new();
    for ((_, prepared), codes) in instances.iter().zip(codes) {
        if codes.iter().any(Option::is_none) {
            // Should not happen: the frames were decoded before acknowledgement. Each failed frame
            // was logged above; the instance is left out whole.
            tracing::error!("an acknowledged instance was left out: a frame failed to encode");
            continue;
        }
        for (frame, code) in codes.into_iter().flatten().enumerate() {
            let frame = frame as u32;
            records.push(NewRecord {
                normal: code.normal.iter().map(|&c| c as u8).collect(),
                abnormal: code.abnormal.iter().map(|&c| c as u8).collect(),
                keys: prepared.keys(frame),
                abnormality: code.abnormality,
            });
            entries.push(CatalogEntry {
                record: 0,
                frame,
                metadata: prepared.metadata.clone(),
                abnormality: code.abnormality,
            });
        }
    }
    let appended = {
        let mut store = index.codes.write().expect("code store lock poisoned");
        match store.append(&records) {
            Ok(range) => {
                let view = store.view();
                let mut search = index.search.write().expect("search lock poisoned");
                match search.index.as_mut() {
                    Some(projections) => {
                        projections.extend(&index.tables, view.normal(), view.abnormal())
                    }
                    None => index.build_search_index_when_worth_it(view.len()),
                }
                Some(range)
            }
            Err(error) => {
                tracing::error!(%error, "appending codes failed");
                None
            }
        }
    };
    if let Some(range) = appended {
        for (entry, record) in entries.iter_mut().zip(range) {
            entry.record = record;
        }
        if let Err(error) = index.catalog.add(&entries) {
            tracing::error!(%error, "adding catalog entries failed");
        }
    }
    instances.iter().map(|(_, p)| p.keys_instance).collect()
}

/// Encodes one frame, waiting while the encoder queue is full.
async fn encode_with_retry(
    engine: &crate::encoder::Engine,
    pixels: Vec<f32>,
) -> Result<SliceCode, BatchError> {
    loop {
        match engine.encode(pixels.clone()).await {
            Err(BatchError::QueueFull { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Syncs the store, commits the catalog with `applied_seq`, and prunes the log through it.
fn checkpoint(index: &Index, applied_seq: u64) {
    let records = {
        let mut store = index.codes.write().expect("code store lock poisoned");
        if let Err(error) = store.sync() {
            tracing::error!(%error, "syncing the code store failed; the log keeps the work");
            return;
        }
        store.len() as u64
    };
    if let Err(error) = index.catalog.commit(Checkpoint {
        applied_seq,
        records,
    }) {
        tracing::error!(%error, "committing the catalog failed; the log keeps the work");
        return;
    }
    if let Err(error) = index.wal.prune_through(applied_seq) {
        tracing::warn!(%error, "pruning the write-ahead log failed");
    }
}

/// Removes every record of `target` from the catalog and the store, durably, and drops the log
/// segments that held its instances.
fn apply_delete(index: &Index, target: &DeleteTarget, seq: u64) -> Result<DeleteCounts, String> {
    let ids = index.catalog.delete(target).map_err(|e| e.to_string())?;
    let instances = {
        let mut store = index.codes.write().expect("code store lock poisoned");
        let view = store.view();
        let mut keys: Vec<u64> = ids
            .iter()
            .map(|&id| view.records()[id as usize].keys().instance)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        store.tombstone(&ids).map_err(|e| e.to_string())?;
        let mut search = index.search.write().expect("search lock poisoned");
        for &id in &ids {
            search.deleted.insert(id);
        }
        keys.len() as u64
    };
    checkpoint(index, seq);
    index.catalog.purge().map_err(|e| e.to_string())?;
    // The deleted instances' bytes live on only in log segments: close the current one and prune.
    index.wal.rotate().map_err(|e| e.to_string())?;
    index.wal.prune_through(seq).map_err(|e| e.to_string())?;
    tracing::info!(
        level = target.level(),
        records = ids.len(),
        instances,
        "deleted"
    );
    Ok(DeleteCounts {
        records: ids.len() as u64,
        instances,
    })
}

impl Index {
    /// Deletes every record of `target` durably; answers once it is applied and committed.
    pub async fn delete(&self, target: DeleteTarget) -> Result<DeleteCounts, super::IndexError> {
        let seq = self
            .wal
            .append(WalRecord::Delete {
                target: target.clone(),
            })
            .await?;
        let (tx, rx) = oneshot::channel();
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        self.work
            .send(Work::Delete {
                seq,
                target,
                reply: Some(tx),
            })
            .map_err(|_| super::IndexError::Stopped)?;
        rx.await
            .map_err(|_| super::IndexError::Stopped)?
            .map_err(super::IndexError::Apply)
    }
}
