//! Applying accepted work, in write-ahead-log order: encode, store, catalog, checkpoint.
//!
//! One worker owns every write to the store and the catalog. It takes work in log sequence
//! order (a small reorder buffer absorbs concurrent acceptors that reach the channel out of
//! order), encodes the frames of a whole chunk concurrently so the dynamic batcher fills its
//! batches. Applied chunks are covered by a checkpoint at most 100 ms later: store synced,
//! catalog committed with the last applied sequence number (which makes them searchable),
//! applied log segments pruned. A checkpoint costs about the same for one instance as for
//! hundreds, so chunks are committed together; it runs on a blocking thread while the next chunk
//! encodes (that chunk's codes are added only once it is done). A chunk is what has arrived by
//! the time the previous one finished, so under steady ingest new records become searchable
//! within a chunk's time plus 100 ms (well under the 2 s the API promises).

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
/// How often an open sequence gap is looked at again.
const GAP_RECHECK: Duration = Duration::from_millis(200);
/// Longest applied work waits for its checkpoint (which makes it searchable).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

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
    let mut commits = Commits::default();
    loop {
        // Wait for work: with a gap open, at most a moment (to re-check the gap's patience);
        // with applied work uncommitted, at most until its checkpoint is due.
        let mut patience = commits.due_in();
        if !waiting.is_empty() {
            patience = Some(patience.map_or(GAP_RECHECK, |d| d.min(GAP_RECHECK)));
        }
        let received = match patience {
            None => Some(rx.recv().await),
            Some(limit) => tokio::time::timeout(limit, rx.recv()).await.ok(),
        };
        match received {
            Some(None) => {
                commits.checkpoint(&index).await;
                commits.wait().await;
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
        // Applied work whose checkpoint is due is committed now, while the next chunk encodes.
        if commits.due_in() == Some(Duration::ZERO) {
            commits.checkpoint(&index).await;
        }
        // Late arrivals below `next` (after a gap was given up) are applied at once.
        let late: Vec<Work> = {
            let keep = waiting.split_off(&next);
            std::mem::replace(&mut waiting, keep)
                .into_values()
                .collect()
        };
        if !late.is_empty() {
            apply_chunk(&index, late, &mut commits).await;
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
        apply_chunk(&index, ready, &mut commits).await;
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

/// Applied work that no checkpoint covers yet, and the checkpoint running in the background.
///
/// A checkpoint (store sync, catalog commit: a new tantivy segment, later merged) costs about
/// the same for 1 instance as for 500, so applied chunks are committed together at most every
/// [`CHECKPOINT_EVERY`]; the checkpoint then runs on a blocking thread while the next chunk
/// encodes, and that chunk's codes are added only once it is done.
#[derive(Default)]
struct Commits {
    /// The checkpoint in flight.
    running: Option<tokio::task::JoinHandle<()>>,
    /// What was applied since the last checkpoint.
    uncommitted: Option<Uncommitted>,
}

/// Applied entries waiting for their checkpoint.
struct Uncommitted {
    /// The last applied log sequence number.
    last_seq: u64,
    /// Log entries applied (each was counted as pending).
    entries: u64,
    /// Their instance keys, released from the in-flight set once committed.
    keys: Vec<u64>,
    /// Their room in the backlog, given back once committed.
    backlog: Vec<OwnedSemaphorePermit>,
    /// When the first of them was applied.
    since: Instant,
}

impl Commits {
    /// Waits for the checkpoint in flight, if any.
    async fn wait(&mut self) {
        if let Some(handle) = self.running.take()
            && let Err(error) = handle.await
        {
            tracing::error!(%error, "a checkpoint task failed");
        }
    }

    /// Records applied entries.
    fn applied(
        &mut self,
        last_seq: u64,
        entries: u64,
        keys: Vec<u64>,
        backlog: Vec<OwnedSemaphorePermit>,
    ) {
        let open = self.uncommitted.get_or_insert_with(|| Uncommitted {
            last_seq,
            entries: 0,
            keys: Vec::new(),
            backlog: Vec::new(),
            since: Instant::now(),
        });
        open.last_seq = open.last_seq.max(last_seq);
        open.entries += entries;
        open.keys.extend(keys);
        open.backlog.extend(backlog);
    }

    /// How long until the uncommitted work must be checkpointed; `None` when there is none.
    fn due_in(&self) -> Option<Duration> {
        self.uncommitted
            .as_ref()
            .map(|u| CHECKPOINT_EVERY.saturating_sub(u.since.elapsed()))
    }

    /// Starts the checkpoint of everything applied (after the one in flight has finished).
    async fn checkpoint(&mut self, index: &Arc<Index>) {
        self.wait().await;
        let Some(done) = self.uncommitted.take() else {
            return;
        };
        let index = index.clone();
        self.running = Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            checkpoint(&index, done.last_seq);
            tracing::debug!(
                entries = done.entries,
                checkpoint_ms = started.elapsed().as_secs_f64() * 1e3,
                "checkpoint"
            );
            done.release(&index);
        }));
    }

    /// Checkpoints synchronously through `seq` (before a delete): everything applied is covered.
    async fn checkpoint_now(&mut self, index: &Arc<Index>, seq: u64) {
        self.wait().await;
        checkpoint(index, seq);
        if let Some(done) = self.uncommitted.take() {
            done.release(index);
        }
    }
}

impl Uncommitted {
    /// Once committed, and so visible to the catalog's duplicate check, the instances leave the
    /// in-flight set (earlier, a copy arriving in between would be indexed twice), stop counting
    /// as pending, and give their backlog room back.
    fn release(self, index: &Index) {
        index.release(&self.keys);
        index
            .counters
            .pending
            .fetch_sub(self.entries, Ordering::Relaxed);
        drop(self.backlog);
    }
}

/// Applies a chunk in order; its checkpoint is left to `commits`.
async fn apply_chunk(index: &Arc<Index>, chunk: Vec<Work>, commits: &mut Commits) {
    let Some(last_seq) = chunk.last().map(Work::seq) else {
        return;
    };
    let mut entries = 0u64;
    let mut instances: Vec<(u64, Box<Prepared>)> = Vec::new();
    let mut backlog: Vec<OwnedSemaphorePermit> = Vec::new();
    for work in chunk {
        entries += 1;
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
                let keys = index_instances(index, std::mem::take(&mut instances), commits).await;
                commits.applied(
                    seq.saturating_sub(1),
                    entries - 1,
                    keys,
                    std::mem::take(&mut backlog),
                );
                commits.checkpoint_now(index, seq.saturating_sub(1)).await;
                entries = 0;
                let outcome = apply_delete(index, &target, seq);
                index.counters.pending.fetch_sub(1, Ordering::Relaxed);
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
    let keys = index_instances(index, instances, commits).await;
    tracing::debug!(
        entries,
        frames,
        index_ms = started.elapsed().as_secs_f64() * 1e3,
        "chunk applied"
    );
    commits.applied(last_seq, entries, keys, backlog);
}

/// Encodes every frame of `instances` concurrently, waits for the previous checkpoint in
/// `commits`, then appends codes and catalog entries in log order.
/// Returns the instance keys it applied.
async fn index_instances(
    index: &Arc<Index>,
    mut instances: Vec<(u64, Box<Prepared>)>,
    commits: &mut Commits,
) -> Vec<u64> {
    if instances.is_empty() {
        commits.wait().await;
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
    commits.wait().await;
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
