//! Applying accepted work, in write-ahead-log order: encode, store, catalog, checkpoint.
//!
//! One worker owns every write to the store and the catalog. It takes work in log sequence
//! order (a small reorder buffer absorbs concurrent acceptors that reach the channel out of
//! order), encodes the frames of a whole chunk concurrently so the dynamic batcher fills its
//! batches. Applied chunks are covered by a checkpoint at most 100 ms later: store synced,
//! catalog committed with the last applied sequence number (which makes them searchable),
//! applied log segments pruned, the committed records' search summaries saved (at most every
//! [`super::SAVE_SEARCH_INDEX_EVERY`] unless a delete or a new fit changed them). A checkpoint costs about the same for one instance as for
//! hundreds, so chunks are committed together; it runs on a blocking thread while the next chunk
//! encodes (that chunk's codes are added only once it is done). A chunk is what has arrived by
//! the time the previous one finished, so under steady ingest new records become searchable
//! within a chunk's time plus 100 ms (well under the 2 s the API promises).
//!
//! Nothing acknowledged is left out. When anything fails — encoding a frame, appending codes,
//! adding catalog entries, a checkpoint, a delete — the worker rolls the store and the catalog
//! back to the last checkpoint and redoes everything after it from the write-ahead log, after a
//! pause that doubles with every failure in a row (up to [`MAX_BACKOFF`]). The checkpoint, and so
//! log pruning, never passes an entry that is not in the store and the catalog. After
//! [`PERSISTENT_AFTER`] failures in a row the index stops acknowledging new work
//! ([`super::Health`]) until a checkpoint succeeds again. A gap in the sequence numbers (an
//! acceptor that went away between its log append and handing over its work) is filled from the
//! log too, never skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::task::JoinSet;

use super::apply_error::ApplyError;
use super::faults::FaultPoint;
use super::work::{DeleteCounts, DeleteReply, Prepared, Work};
use super::{Counters, Index};
use crate::catalog::{CatalogEntry, Checkpoint};
use crate::encoder::{BatchError, SliceCode};
use crate::record::DeleteTarget;
use crate::store::{NewRecord, StoreError, WalRecord, WalReplay};

/// Most frames encoded in one chunk.
const CHUNK_FRAMES: usize = 512;
/// How long a gap in the sequence numbers is waited for before it is read from the log.
pub(super) const GAP_PATIENCE: Duration = Duration::from_secs(5);
/// How often an open sequence gap is looked at again.
const GAP_RECHECK: Duration = Duration::from_millis(200);
/// Longest applied work waits for its checkpoint (which makes it searchable).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// How often a running checkpoint is looked at when there is nothing else to do.
const CHECKPOINT_POLL: Duration = Duration::from_millis(20);
/// Pause before the first redo after a failure; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between redos.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Failures in a row after which new work is refused until the worker recovers.
pub const PERSISTENT_AFTER: u32 = 3;

/// Deletes applied from the log whose callers' own copies may still arrive, at most this many.
const LATE_ANSWERS_KEPT: usize = 256;

/// What deletes read back from the log to fill a sequence gap removed: applied without a caller
/// to answer, while the caller's own copy was still on its way. That copy, arriving after, is
/// answered from here.
#[derive(Default)]
struct LateAnswers(BTreeMap<u64, DeleteCounts>);

impl LateAnswers {
    /// Keeps what the delete at `seq` removed (dropping the oldest beyond [`LATE_ANSWERS_KEPT`]).
    fn record(&mut self, seq: u64, counts: DeleteCounts) {
        self.0.insert(seq, counts);
        while self.0.len() > LATE_ANSWERS_KEPT {
            self.0.pop_first();
        }
    }

    /// The answer for the caller of the delete at `seq`, which was applied from the log.
    fn take(&mut self, seq: u64) -> Result<DeleteCounts, ApplyError> {
        self.0.remove(&seq).ok_or(ApplyError::AppliedFromLog)
    }
}

/// Why applying failed, and what the failed work held that its redo from the log needs.
struct Failure {
    /// What failed (no patient data).
    reason: ApplyError,
    /// Backlog room of the failed work, given back once it is applied after all.
    backlog: Vec<OwnedSemaphorePermit>,
    /// Callers of the failed deletes, answered once they are applied after all.
    replies: Vec<(u64, DeleteReply)>,
}

impl Failure {
    fn new(reason: ApplyError) -> Failure {
        Failure {
            reason,
            backlog: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// Takes over what the unapplied rest of a chunk holds.
    fn salvage(mut self, rest: impl IntoIterator<Item = Work>) -> Failure {
        for work in rest {
            match work {
                Work::Instance { backlog, .. } => self.backlog.extend(backlog),
                Work::Delete {
                    seq,
                    reply: Some(reply),
                    ..
                } => self.replies.push((seq, reply)),
                _ => {}
            }
        }
        self
    }

    /// Takes over what another failure holds (its reason is kept as the first one).
    fn absorb(&mut self, other: Failure) {
        self.backlog.extend(other.backlog);
        self.replies.extend(other.replies);
    }
}

/// The log entries the worker still has to read back after a restart: everything that was
/// durable at open and is past the last checkpoint, read a chunk at a time so a long replay
/// holds no more frames in memory than live ingest may.
pub struct Replay {
    entries: WalReplay,
    /// Seq of the last entry to replay.
    until: u64,
    /// An entry read that did not fit the previous pull.
    held: Option<Work>,
}

impl Replay {
    /// Reads back `entries` through seq `until`.
    pub fn new(entries: WalReplay, until: u64) -> Replay {
        Replay {
            entries,
            until,
            held: None,
        }
    }
}

/// The worker: runs until the channel closes, then takes a final checkpoint.
pub async fn run(
    index: Arc<Index>,
    mut rx: mpsc::UnboundedReceiver<Work>,
    mut switches: mpsc::UnboundedReceiver<super::reindex::SwitchRequest>,
    first_seq: u64,
    mut replay: Option<Replay>,
) {
    let mut waiting: BTreeMap<u64, Work> = BTreeMap::new();
    let mut next = first_seq;
    let mut gap_since: Option<Instant> = None;
    let mut commits = Commits::default();
    let mut answers = LateAnswers::default();
    let mut stop = index.stopping.subscribe();
    let mut closed = false;
    loop {
        // After a restart, the log is read back a chunk at a time, ahead of live work.
        if let Some(r) = replay.as_mut()
            && !waiting.contains_key(&next)
        {
            let pulled = tokio::task::block_in_place(|| pull_replay(&index, r, &mut waiting));
            if let Err(error) = &pulled {
                tracing::error!(%error, "reading the write-ahead log back failed; retrying");
                tokio::time::sleep(commits.failed(&index, &error.to_string())).await;
                continue;
            }
            if pulled.is_ok_and(|more| !more) {
                replay = None;
            }
        }
        // A finished checkpoint is looked at: its failure is redone, its success ends a run of
        // failures.
        if commits.running.as_ref().is_some_and(|h| h.is_finished())
            && let Err(failure) = commits.wait(&index).await
        {
            redo(&index, &mut commits, &mut waiting, &mut next, failure).await;
            gap_since = None;
        }
        // Wait for work: not at all when the next entry is at hand; with a gap open, at most a
        // moment (to re-check the gap's patience); with applied work uncommitted, at most until
        // its checkpoint is due; with a checkpoint running, a moment (to look at its outcome).
        let mut patience = commits.due_in();
        if commits.running.is_some() {
            patience = Some(patience.map_or(CHECKPOINT_POLL, |d| d.min(CHECKPOINT_POLL)));
        }
        if waiting.contains_key(&next) {
            patience = Some(Duration::ZERO);
        } else if !waiting.is_empty() {
            patience = Some(patience.map_or(GAP_RECHECK, |d| d.min(GAP_RECHECK)));
        }
        let receive = async {
            match patience {
                None => Some(rx.recv().await),
                Some(Duration::ZERO) => None,
                Some(limit) => tokio::time::timeout(limit, rx.recv()).await.ok(),
            }
        };
        let mut switch_request = None;
        let received = tokio::select! {
            received = receive => received,
            Some(request) = switches.recv() => {
                switch_request = Some(request);
                None
            }
            _ = stop.wait_for(|stop| *stop), if !closed => {
                // Closing: what is queued is still applied, then the channel reports its end.
                rx.close();
                closed = true;
                None
            }
        };
        if let Some(request) = switch_request {
            // A re-index has (nearly) every record's new codes: everything applied is
            // committed first, then the models switch while no other write runs.
            let outcome = match commits.checkpoint_now(&index, next - 1).await {
                Ok(()) => super::reindex::switch(&index, request).await,
                Err(failure) => {
                    let reason = failure.reason.to_string();
                    redo(&index, &mut commits, &mut waiting, &mut next, failure).await;
                    gap_since = None;
                    request.refuse(format!(
                        "the checkpoint before the switch failed ({reason}); it is tried again"
                    ))
                }
            };
            if let Err(error) = outcome {
                tracing::warn!(%error, "the switch to the re-indexed model did not happen");
            }
            continue;
        }
        match received {
            Some(None) if !waiting.is_empty() || replay.is_some() => {
                // Closing, with work still to apply (a reorder gap or the replay): apply it.
                // A gap is read from the log at once: nothing else will fill it.
                let mut patience = Instant::now().checked_sub(GAP_PATIENCE);
                let drained = step(
                    &index,
                    &mut waiting,
                    &mut next,
                    &mut patience,
                    &mut commits,
                    &mut answers,
                );
                if let Err(failure) = drained.await {
                    tracing::error!(reason = %failure.reason, "applying the last work before stopping failed; the next start replays the log");
                    return;
                }
                continue;
            }
            Some(None) => {
                // The index is closing: whatever was applied is committed; a failure here
                // leaves the work in the log, which the next start replays.
                let last = commits.checkpoint(&index).await;
                if let Err(failure) = last.and(commits.wait(&index).await) {
                    tracing::error!(reason = %failure.reason, "the final checkpoint failed; the next start replays the log");
                }
                return;
            }
            Some(Some(work)) => admit(&index.counters, &mut waiting, next, &mut answers, work),
            None => {}
        }
        while let Ok(work) = rx.try_recv() {
            admit(&index.counters, &mut waiting, next, &mut answers, work);
        }
        if let Err(failure) = step(
            &index,
            &mut waiting,
            &mut next,
            &mut gap_since,
            &mut commits,
            &mut answers,
        )
        .await
        {
            redo(&index, &mut commits, &mut waiting, &mut next, failure).await;
            gap_since = None;
        }
    }
}

/// Queues an acceptor's `work`, `next` being the first entry not yet applied.
///
/// An acceptor slower than [`GAP_PATIENCE`] finds its entry already read back from the log (the
/// entry counted as pending by both). If the log's copy still waits here, the acceptor's copy
/// (with its backlog room and its reply) replaces it. If it was applied already, the acceptor's
/// copy is dropped — applying it again would index the instance twice — giving its backlog room
/// back, and a delete's caller hears what the log's copy removed.
fn admit(
    counters: &Counters,
    waiting: &mut BTreeMap<u64, Work>,
    next: u64,
    answers: &mut LateAnswers,
    work: Work,
) {
    let pending = &counters.pending;
    if work.seq() < next {
        pending.fetch_sub(1, Ordering::Relaxed);
        counters.late_copies.fetch_add(1, Ordering::Relaxed);
        if let Work::Delete {
            seq,
            reply: Some(reply),
            ..
        } = work
        {
            let _ = reply.send(answers.take(seq));
        }
        return;
    }
    if waiting.insert(work.seq(), work).is_some() {
        pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Moves the next entries of `replay` into `waiting`, up to a chunk's worth of frames; `false`
/// once the replay is complete.
fn pull_replay(
    index: &Index,
    replay: &mut Replay,
    waiting: &mut BTreeMap<u64, Work>,
) -> Result<bool, StoreError> {
    // The previous pull is applied (its frames went to the encoder) before this one: the
    // replay holds at most one pull's frames, bounded like live ingest's backlog.
    let limit = CHUNK_FRAMES.min(index.max_backlog as usize).max(1);
    let mut frames = 0;
    if let Some(work) = replay.held.take() {
        frames += work.frames();
        waiting.insert(work.seq(), work);
    }
    let more = loop {
        let Some(entry) = replay.entries.next() else {
            break false;
        };
        let (seq, record) = entry?;
        if seq > replay.until {
            break false;
        }
        let work = index.work_of(seq, record);
        let adds = work.frames();
        // One instance larger than the bound is still replayed, alone.
        if frames > 0 && frames + adds > limit {
            replay.held = Some(work);
            break true;
        }
        frames += adds;
        waiting.insert(seq, work);
        if seq == replay.until {
            break false;
        }
    };
    index
        .counters
        .replay_frames_peak
        .fetch_max(frames as u64, Ordering::Relaxed);
    Ok(more)
}

/// One round of the worker: the due checkpoint, then the next contiguous chunk, or a sequence
/// gap read back from the log once it has lasted [`GAP_PATIENCE`].
async fn step(
    index: &Arc<Index>,
    waiting: &mut BTreeMap<u64, Work>,
    next: &mut u64,
    gap_since: &mut Option<Instant>,
    commits: &mut Commits,
    answers: &mut LateAnswers,
) -> Result<(), Failure> {
    // Applied work whose checkpoint is due is committed now, while the next chunk encodes.
    if commits.due_in() == Some(Duration::ZERO) {
        commits.checkpoint(index).await?;
    }
    let ready = take_contiguous(waiting, next);
    if !ready.is_empty() {
        *gap_since = None;
        return apply_chunk(index, ready, commits, answers).await;
    }
    let since = *gap_since.get_or_insert_with(Instant::now);
    if since.elapsed() >= GAP_PATIENCE
        && let Some((&lowest, _)) = waiting.first_key_value()
    {
        // An acceptor appended to the log and went away before handing its work over: the
        // entries are durable, so they are read back and applied like any other.
        tracing::warn!(
            missing_from = *next,
            resumes_at = lowest,
            "write-ahead log sequence gap: reading the missing entries back from the log"
        );
        let missing = tokio::task::block_in_place(|| index.reread(*next - 1, lowest, true))
            .map_err(|e| Failure::new(ApplyError::reread("a sequence gap")(e)))?;
        for work in missing {
            waiting.insert(work.seq(), work);
        }
        *gap_since = None;
    }
    Ok(())
}

/// After `failure`: waits for the checkpoint in flight, rolls the store and the catalog back to
/// the last checkpoint, and queues every entry after it again from the log, after a pause.
async fn redo(
    index: &Arc<Index>,
    commits: &mut Commits,
    waiting: &mut BTreeMap<u64, Work>,
    next: &mut u64,
    mut failure: Failure,
) {
    if let Err(other) = commits.wait(index).await {
        failure.absorb(other);
    }
    if let Some(open) = commits.uncommitted.take() {
        // Not committed: its keys stay in flight and its entries pending until the redo.
        failure.backlog.extend(open.backlog);
    }
    failure.backlog.append(&mut commits.carried);
    let redone = loop {
        let pause = commits.failed(index, &failure.reason.to_string());
        tracing::warn!(
            reason = %failure.reason,
            retry_in_ms = pause.as_millis() as u64,
            "applying accepted work failed; redoing everything after the last checkpoint from the write-ahead log"
        );
        tokio::time::sleep(pause).await;
        match tokio::task::block_in_place(|| index.roll_back(*next)) {
            Ok(redone) => break redone,
            Err(error) => {
                failure.reason = ApplyError::RollBack {
                    first: failure.reason.to_string(),
                    source: Box::new(error),
                }
            }
        }
    };
    let (applied_seq, works) = redone;
    let mut replies: BTreeMap<u64, DeleteReply> = failure.replies.into_iter().collect();
    for mut work in works {
        if let Work::Delete { seq, reply, .. } = &mut work {
            *reply = replies.remove(seq);
        }
        waiting.insert(work.seq(), work);
    }
    *next = applied_seq + 1;
    commits.carried = failure.backlog;
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
        frames += work.frames();
        ready.push(work);
        *next += 1;
    }
    ready
}

/// Applied work that no checkpoint covers yet, the checkpoint running in the background, and
/// the run of failures.
///
/// A checkpoint (store sync, catalog commit: a new tantivy segment, later merged) costs about
/// the same for 1 instance as for 500, so applied chunks are committed together at most every
/// [`CHECKPOINT_EVERY`]; the checkpoint then runs on a blocking thread while the next chunk
/// encodes, and that chunk's codes are added only once it is done.
#[derive(Default)]
struct Commits {
    /// The checkpoint in flight; a failed one hands its work back.
    running: Option<tokio::task::JoinHandle<Result<(), (Uncommitted, ApplyError)>>>,
    /// What was applied since the last checkpoint.
    uncommitted: Option<Uncommitted>,
    /// Backlog room of work being redone after a failure, given back at the next checkpoint.
    carried: Vec<OwnedSemaphorePermit>,
    /// Failures since the last successful checkpoint.
    failures: u32,
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
    /// Waits for the checkpoint in flight, if any; a success ends a run of failures.
    async fn wait(&mut self, index: &Index) -> Result<(), Failure> {
        let Some(handle) = self.running.take() else {
            return Ok(());
        };
        match handle.await {
            Ok(Ok(())) => {
                self.recovered(index);
                Ok(())
            }
            Ok(Err((done, reason))) => {
                let mut failure = Failure::new(reason);
                failure.backlog = done.backlog;
                Err(failure)
            }
            Err(error) => Err(Failure::new(ApplyError::Task {
                task: "a checkpoint",
                message: error.to_string(),
            })),
        }
    }

    /// Counts a failure: returns the pause before the redo, and stops acknowledgements once
    /// failures persist.
    fn failed(&mut self, index: &Index, reason: &str) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= PERSISTENT_AFTER {
            index.health.set_fault(reason);
        }
        let doublings = self.failures.saturating_sub(1).min(16);
        (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
    }

    /// A checkpoint succeeded: the run of failures is over.
    fn recovered(&mut self, index: &Index) {
        if self.failures > 0 {
            self.failures = 0;
            index.health.clear();
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
        open.backlog.append(&mut self.carried);
    }

    /// How long until the uncommitted work must be checkpointed; `None` when there is none.
    fn due_in(&self) -> Option<Duration> {
        self.uncommitted
            .as_ref()
            .map(|u| CHECKPOINT_EVERY.saturating_sub(u.since.elapsed()))
    }

    /// Starts the checkpoint of everything applied (after the one in flight has finished).
    async fn checkpoint(&mut self, index: &Arc<Index>) -> Result<(), Failure> {
        self.wait(index).await?;
        let Some(done) = self.uncommitted.take() else {
            return Ok(());
        };
        let index = index.clone();
        self.running = Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            if let Err(reason) = checkpoint(&index, done.last_seq) {
                return Err((done, reason));
            }
            tracing::debug!(
                entries = done.entries,
                checkpoint_ms = started.elapsed().as_secs_f64() * 1e3,
                "checkpoint"
            );
            done.release(&index);
            Ok(())
        }));
        Ok(())
    }

    /// Checkpoints synchronously through `seq` (before a delete): everything applied is covered.
    async fn checkpoint_now(&mut self, index: &Arc<Index>, seq: u64) -> Result<(), Failure> {
        self.wait(index).await?;
        checkpoint(index, seq).map_err(Failure::new)?;
        self.recovered(index);
        if let Some(done) = self.uncommitted.take() {
            done.release(index);
        }
        Ok(())
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
            .indexed
            .fetch_add(self.keys.len() as u64, Ordering::Relaxed);
        index
            .counters
            .pending
            .fetch_sub(self.entries, Ordering::Relaxed);
        drop(self.backlog);
    }
}

/// Applies a chunk in order; its checkpoint is left to `commits`. On failure, what the chunk's
/// unapplied work holds goes with the failure. What a delete without a caller removed is kept
/// in `answers`, for a caller whose copy is late.
async fn apply_chunk(
    index: &Arc<Index>,
    chunk: Vec<Work>,
    commits: &mut Commits,
    answers: &mut LateAnswers,
) -> Result<(), Failure> {
    let Some(last_seq) = chunk.last().map(Work::seq) else {
        return Ok(());
    };
    let mut entries = 0u64;
    let mut instances: Vec<(u64, Box<Prepared>)> = Vec::new();
    let mut backlog: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut chunk = chunk.into_iter();
    while let Some(work) = chunk.next() {
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
                // Everything before the delete is indexed and committed first, so the delete
                // sees it.
                let before = async {
                    let keys =
                        index_instances(index, std::mem::take(&mut instances), commits).await?;
                    commits.applied(
                        seq.saturating_sub(1),
                        entries - 1,
                        keys,
                        std::mem::take(&mut backlog),
                    );
                    commits.checkpoint_now(index, seq.saturating_sub(1)).await
                };
                let outcome = match before.await {
                    Ok(()) => apply_delete(index, &target, seq),
                    Err(failure) => Err(DeleteFailure::Uncommitted(failure)),
                };
                entries = 0;
                match outcome {
                    Ok(counts) => {
                        index.counters.pending.fetch_sub(1, Ordering::Relaxed);
                        match reply {
                            Some(reply) => {
                                let _ = reply.send(Ok(counts));
                            }
                            None => answers.record(seq, counts),
                        }
                    }
                    Err(DeleteFailure::Committed(message)) => {
                        // The delete is committed; cleaning up after it failed.
                        index.counters.pending.fetch_sub(1, Ordering::Relaxed);
                        tracing::error!(level = target.level(), %message, "cleaning up after a delete failed");
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(message));
                        }
                    }
                    Err(DeleteFailure::Uncommitted(mut failure)) => {
                        failure.backlog.append(&mut backlog);
                        failure.replies.extend(reply.map(|r| (seq, r)));
                        return Err(failure.salvage(chunk));
                    }
                }
            }
        }
    }
    let started = Instant::now();
    let frames: usize = instances.iter().map(|(_, p)| p.frames.len()).sum();
    match index_instances(index, instances, commits).await {
        Ok(keys) => {
            tracing::debug!(
                entries,
                frames,
                index_ms = started.elapsed().as_secs_f64() * 1e3,
                "chunk applied"
            );
            commits.applied(last_seq, entries, keys, backlog);
            Ok(())
        }
        Err(mut failure) => {
            failure.backlog.append(&mut backlog);
            Err(failure)
        }
    }
}

/// Encodes every frame of `instances` concurrently, waits for the previous checkpoint in
/// `commits`, then appends codes and catalog entries in log order. Returns the instance keys it
/// applied; on failure nothing of it counts as applied (the redo rolls back what was written).
async fn index_instances(
    index: &Arc<Index>,
    mut instances: Vec<(u64, Box<Prepared>)>,
    commits: &mut Commits,
) -> Result<Vec<u64>, Failure> {
    if instances.is_empty() {
        commits.wait(index).await?;
        return Ok(Vec::new());
    }
    let mut codes: Vec<Vec<Option<SliceCode>>> = instances
        .iter()
        .map(|(_, p)| vec![None; p.frames.len()])
        .collect();
    let keep_frames = index.frames.lock().expect("frames lock poisoned").is_some();
    let mut kept: Vec<Vec<Vec<f32>>> = instances
        .iter()
        .map(|(_, p)| vec![Vec::new(); if keep_frames { p.frames.len() } else { 0 }])
        .collect();
    // The pixels go to the encoder (and come back when frames are kept); only the metadata is
    // needed after it. One model encodes the whole chunk: a switch happens between chunks.
    let engine = index.engine();
    let mut tasks = JoinSet::new();
    for (i, (_, prepared)) in instances.iter_mut().enumerate() {
        for (f, pixels) in std::mem::take(&mut prepared.frames).into_iter().enumerate() {
            let (index, engine) = (index.clone(), engine.clone());
            tasks.spawn(async move {
                let code = encode_with_retry(&index, &engine, &pixels).await;
                (i, f, code, pixels)
            });
        }
    }
    let mut failed: Option<ApplyError> = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, f, Ok(code), pixels)) => {
                codes[i][f] = Some(code);
                if keep_frames {
                    kept[i][f] = pixels;
                }
            }
            Ok((_, _, Err(error), _)) => {
                failed.get_or_insert(ApplyError::Encode(error));
            }
            Err(error) => {
                failed.get_or_insert_with(|| ApplyError::Task {
                    task: "an encoding",
                    message: error.to_string(),
                });
            }
        }
    }
    commits.wait(index).await?;
    if let Some(reason) = failed {
        return Err(Failure::new(reason));
    }
    let mut records = Vec::new();
    let mut entries = Vec::new();
    for ((_, prepared), codes) in instances.iter().zip(codes) {
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
    // No await from here on: the span is entered for the rest of the function.
    let _store = tracing::info_span!("store", records = records.len()).entered();
    let range = {
        let mut store = index.codes.write().expect("code store lock poisoned");
        let appended = if index.faults.hit(FaultPoint::StoreAppend) {
            Err(StoreError::injected_full_disk(store.dir()))
        } else {
            store.append(&records)
        };
        let range =
            appended.map_err(|e| Failure::new(ApplyError::store("appending codes to")(e)))?;
        let view = store.view();
        let mut search = index.search.write().expect("search lock poisoned");
        match search.index.as_mut() {
            Some(projections) => {
                projections.extend(&index.serving().tables, view.normal(), view.abnormal())
            }
            None => index.build_search_index_when_worth_it(view.len()),
        }
        range
    };
    if let Some(frames) = index.frames.lock().expect("frames lock poisoned").as_mut() {
        // Rows follow record ids: the store's records before these have their rows already.
        frames
            .append(&kept.iter().flatten().map(Vec::as_slice).collect::<Vec<_>>())
            .map_err(|e| Failure::new(ApplyError::store("keeping the frames of")(e)))?;
        debug_assert_eq!(frames.end_record(), range.end as usize);
    }
    for (entry, record) in entries.iter_mut().zip(range) {
        entry.record = record;
    }
    if index.faults.hit(FaultPoint::CatalogAdd) {
        return Err(Failure::new(ApplyError::Injected(FaultPoint::CatalogAdd)));
    }
    index
        .catalog
        .add(&entries)
        .map_err(|e| Failure::new(ApplyError::catalog("adding entries to")(e)))?;
    Ok(instances.iter().map(|(_, p)| p.keys_instance).collect())
}

/// Encodes one frame with `engine`, waiting while the encoder queue is full.
pub(super) async fn encode_with_retry(
    index: &Index,
    engine: &crate::encoder::Engine,
    pixels: &[f32],
) -> Result<SliceCode, BatchError> {
    if index.faults.hit(FaultPoint::Encode) {
        return Err(BatchError::Failed {
            batch: 1,
            message: "an injected failure".into(),
        });
    }
    loop {
        match engine.encode(pixels.to_vec()).await {
            Err(BatchError::QueueFull { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Syncs the store, commits the catalog with `applied_seq`, prunes the log through it, and
/// saves the committed records' search summaries (see [`Index::save_search_index`]).
/// Errs, with what failed, when the store or the catalog could not be made durable (the log
/// keeps the work); a failed prune only leaves segments for the next checkpoint, a failed save
/// of the search summaries only costs a refit at the next start.
fn checkpoint(index: &Index, applied_seq: u64) -> Result<(), ApplyError> {
    // Kept frames first: they never hold fewer committed rows than the catalog.
    if let Some(frames) = index.frames.lock().expect("frames lock poisoned").as_mut() {
        frames
            .sync()
            .map_err(ApplyError::store("syncing the kept frames of"))?;
    }
    let records = {
        let mut store = index.codes.write().expect("code store lock poisoned");
        store.sync().map_err(ApplyError::store("syncing"))?;
        store.len() as u64
    };
    if index.faults.hit(FaultPoint::Checkpoint) {
        return Err(ApplyError::Injected(FaultPoint::Checkpoint));
    }
    index
        .catalog
        .commit(Checkpoint {
            applied_seq,
            records,
            generation: index.serving().generation,
        })
        .map_err(ApplyError::catalog("committing"))?;
    if let Err(error) = index.wal.prune_through(applied_seq) {
        tracing::warn!(%error, "pruning the write-ahead log failed; the next checkpoint retries");
    }
    index.save_search_index(false);
    Ok(())
}

/// How a delete failed.
enum DeleteFailure {
    /// Before its commit: it is redone from the log.
    Uncommitted(Failure),
    /// After its commit (purging the catalog, pruning the log): the records are gone from
    /// search, their bytes may linger until the next purge.
    Committed(ApplyError),
}

/// Removes every record of `target` from the catalog and the store, durably, and drops the log
/// segments that held its instances.
fn apply_delete(
    index: &Index,
    target: &DeleteTarget,
    seq: u64,
) -> Result<DeleteCounts, DeleteFailure> {
    let uncommitted = |e: ApplyError| DeleteFailure::Uncommitted(Failure::new(e));
    let ids = index
        .catalog
        .delete(target)
        .map_err(|e| uncommitted(ApplyError::catalog("finding the records to delete in")(e)))?;
    let instances = {
        let mut store = index.codes.write().expect("code store lock poisoned");
        let view = store.view();
        let mut keys: Vec<u64> = ids
            .iter()
            .map(|&id| view.records()[id as usize].keys().instance)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        store
            .tombstone(&ids)
            .map_err(|e| uncommitted(ApplyError::store("tombstoning deleted records in")(e)))?;
        if let Some(frames) = index.frames.lock().expect("frames lock poisoned").as_mut() {
            frames.zero(&ids);
        }
        let view = store.view();
        let mut search = index.search.write().expect("search lock poisoned");
        for &id in &ids {
            search.deleted.insert(id);
        }
        // Their summaries are derived from their codes: recomputed from the zeroed codes, so
        // the saved search projections keep nothing of them either (written at the checkpoint
        // below).
        if let Some(projections) = search.index.as_mut() {
            projections.resummarise(&ids, view.normal(), view.abnormal());
        }
        keys.len() as u64
    };
    checkpoint(index, seq).map_err(uncommitted)?;
    let committed = DeleteFailure::Committed;
    index
        .catalog
        .purge()
        .map_err(|e| committed(ApplyError::catalog("purging deleted documents from")(e)))?;
    // The deleted instances' bytes live on only in log segments: close the current one and prune.
    let log = |action| {
        move |source| {
            committed(ApplyError::Log {
                action,
                source: Box::new(source),
            })
        }
    };
    index.wal.rotate().map_err(log("rotating"))?;
    index.wal.prune_through(seq).map_err(log("pruning"))?;
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
        self.hand_over_late_when_injected().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_queued_twice_counts_as_pending_once() {
        // Entries 7 and 8 are pending: 8 was read back from the log to fill a gap, and then
        // its acceptor hands its own copy over.
        let counters = Counters::default();
        counters.pending.store(2, Ordering::Relaxed);
        let mut waiting = BTreeMap::new();
        let mut answers = LateAnswers::default();
        admit(
            &counters,
            &mut waiting,
            7,
            &mut answers,
            Work::Skip { seq: 7 },
        );
        admit(
            &counters,
            &mut waiting,
            7,
            &mut answers,
            Work::Skip { seq: 8 },
        );
        assert_eq!(counters.pending.load(Ordering::Relaxed), 2);
        admit(
            &counters,
            &mut waiting,
            7,
            &mut answers,
            Work::Skip { seq: 8 },
        );
        assert_eq!(
            counters.pending.load(Ordering::Relaxed),
            1,
            "the replaced copy's count is released"
        );
        assert_eq!(waiting.len(), 2);
        assert_eq!(counters.late_copies.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_copy_of_an_applied_entry_is_dropped_and_its_caller_answered() {
        // Entries through 9 are applied; 8 was a delete read back from the log (it removed 3
        // records of 1 instance), 6 one whose answer is no longer kept. Their callers' copies
        // arrive now, each counted as pending once more.
        let counters = Counters::default();
        counters.pending.store(2, Ordering::Relaxed);
        let mut waiting = BTreeMap::new();
        let mut answers = LateAnswers::default();
        let removed = DeleteCounts {
            records: 3,
            instances: 1,
        };
        answers.record(8, removed);
        let late_delete = |seq| {
            let (tx, rx) = oneshot::channel();
            let work = Work::Delete {
                seq,
                target: DeleteTarget::Instance("1.2.3".into()),
                reply: Some(tx),
            };
            (work, rx)
        };
        let (work, mut heard) = late_delete(8);
        admit(&counters, &mut waiting, 10, &mut answers, work);
        assert_eq!(heard.try_recv().unwrap().unwrap(), removed);
        let (work, mut heard) = late_delete(6);
        admit(&counters, &mut waiting, 10, &mut answers, work);
        let unknown = heard.try_recv().unwrap().unwrap_err();
        assert!(matches!(unknown, ApplyError::AppliedFromLog), "{unknown}");
        assert!(waiting.is_empty(), "nothing is queued to be applied again");
        assert_eq!(counters.pending.load(Ordering::Relaxed), 0);
        assert_eq!(counters.late_copies.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn late_answers_keep_the_newest() {
        let mut answers = LateAnswers::default();
        for seq in 0..(LATE_ANSWERS_KEPT as u64 + 10) {
            answers.record(seq, DeleteCounts::default());
        }
        assert!(answers.take(9).is_err(), "the oldest are dropped");
        assert!(answers.take(10).is_ok());
        assert!(answers.take(10).is_err(), "an answer is given once");
    }
}
