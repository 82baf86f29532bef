//! Re-indexing when the model changes: a new bundle is loaded beside the serving one, every
//! record is re-encoded in the background into a second code store (`codes-N/`), and search
//! switches to the new codes at once when every record has them.
//!
//! - **Source.** A record's input is its kept frame ([`crate::store::FrameStore`], with
//!   `[index] keep_frames`), when the new bundle pre-processes as the frames were made;
//!   otherwise (no kept frame, or other pre-processing) its instance is fetched again from the
//!   archive through a [`SourceFetcher`] — and without one configured the re-index is refused,
//!   saying which records need it and why.
//! - **Serving meanwhile.** The old model keeps answering every search; new instances are
//!   indexed with it (and re-encoded by the re-index as it catches up). Each search holds one
//!   [`super::Serving`] from start to end, so its answer names the one model whose codes it
//!   compared.
//! - **The switch.** Once the new store is within [`SWITCH_WITHIN`] records of the old one, the
//!   apply worker — the only writer — commits what it applied, encodes the rest, copies the
//!   deletes made meanwhile, syncs the new store, re-scores the catalog with the new model's
//!   abnormality scores and commits it with the new store's generation: that commit is the
//!   switch. The commit and the replacement of the serving model in memory happen while no
//!   search runs (searches hold `model_switch` for reading); then the old store is removed.
//! - **Crash safety.** `reindex.json` names the bundle and the store being filled; the new store
//!   is synced about every second. A start finds the file and goes on from the last sync
//!   ([`target`]); a crash after the switch commit serves the new model.
//! - **Cancel.** [`Index::cancel_reindex`] stops the task and removes its file and its store;
//!   the serving model is untouched.

mod fetch;
mod switch;
mod target;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use diptych::preprocess::preprocess;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use fetch::{FetchError, FetchFuture, InstanceRef, SourceFetcher};
pub(super) use switch::{SwitchRequest, switch};
pub use target::Target;
pub(super) use target::{pending, serving_engine};

use super::{Index, codes_dir};
use crate::encoder::Engine;
use crate::record::RecordId;
use crate::search::DistanceTables;
use crate::store::{CodeStore, NewRecord};

/// Records re-encoded per batch.
const BATCH: usize = 256;
/// The re-index asks for the switch once it is this close to the serving store.
pub const SWITCH_WITHIN: usize = 256;
/// How often the new store is synced (its progress made durable).
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How often progress goes to the log.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// Pause after a failed batch before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Failed batches in a row after which the re-index stops (and can be started again).
const GIVE_UP_AFTER: u32 = 5;

/// Starts the engine of a bundle (for a re-index, and for a data folder re-indexed to another
/// model than the configured one): the server's, with its ONNX Runtime and encoder options.
pub trait EngineLoader: Send + Sync {
    /// Checks the bundle in `dir` and starts its engine; blocking. The error says what is
    /// wrong with the bundle.
    fn load(&self, dir: &Path) -> Result<Arc<Engine>, String>;
}

/// Why a re-index cannot start or go on; each message says what to do.
#[derive(Debug, Error)]
pub enum ReindexError {
    /// The bundle named cannot be used (missing, malformed, graphs that disagree).
    #[error("{0}")]
    Bundle(String),
    /// It cannot start now or with this bundle.
    #[error("{0}")]
    Refused(String),
    /// The re-index's files in the data folder are unusable.
    #[error("{0}")]
    State(String),
}

/// Where a re-index is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReindexPhase {
    /// None has run since the server started.
    #[default]
    Idle,
    /// Loading the new bundle (or resuming after a restart).
    Loading,
    /// Re-encoding records in the background; the old model serves.
    Encoding,
    /// The apply worker is switching search to the new codes.
    Switching,
    /// Search uses the new model.
    Done,
    /// It stopped; `error` says why. Starting it again goes on from its last sync.
    Failed,
    /// It was given up ([`Index::cancel_reindex`]); the model it started from serves.
    Cancelled,
}

/// Progress of the re-index under way or last run.
#[derive(Clone, Debug, Default)]
pub struct ReindexStatus {
    /// Where it is.
    pub phase: ReindexPhase,
    /// The model serving when it started.
    pub from_model_id: String,
    /// The model it re-indexes to.
    pub to_model_id: String,
    /// The new bundle's folder.
    pub bundle: PathBuf,
    /// Records in the new store.
    pub records_done: u64,
    /// Records in the serving store (it grows while instances arrive).
    pub records_total: u64,
    /// Records found in the new store when it started (from an earlier run interrupted).
    pub resumed_at: u64,
    /// Records re-encoded from kept frames by this run.
    pub from_kept_frames: u64,
    /// Records re-encoded from instances fetched from the archive by this run.
    pub from_archive: u64,
    /// Seconds since this run started.
    pub elapsed_s: f64,
    /// Why it failed.
    pub error: Option<String>,
}

impl ReindexStatus {
    /// Records re-encoded per second by this run.
    pub fn rate(&self) -> f64 {
        let done = self.from_kept_frames + self.from_archive;
        if self.elapsed_s > 0.0 {
            done as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
}

/// The index's re-index: how to start one, its status, and its task.
pub(super) struct Jobs {
    engines: Option<Arc<dyn EngineLoader>>,
    fetcher: Option<Arc<dyn SourceFetcher>>,
    status: Mutex<ReindexStatus>,
    started: Mutex<Option<Instant>>,
    switch: OnceLock<mpsc::UnboundedSender<SwitchRequest>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Jobs {
    pub(super) fn new(
        engines: Option<Arc<dyn EngineLoader>>,
        fetcher: Option<Arc<dyn SourceFetcher>>,
    ) -> Jobs {
        Jobs {
            engines,
            fetcher,
            status: Mutex::new(ReindexStatus::default()),
            started: Mutex::new(None),
            switch: OnceLock::new(),
            task: Mutex::new(None),
            stop: tokio::sync::watch::Sender::new(false),
        }
    }

    pub(super) fn set_switch(&self, switch: mpsc::UnboundedSender<SwitchRequest>) {
        let _ = self.switch.set(switch);
    }

    /// Stops the re-index task (the server is stopping): its progress is synced, and the next
    /// start goes on from there.
    pub(super) async fn stop(&self) {
        self.stop.send_replace(true);
        let task = self
            .task
            .lock()
            .expect("re-index task slot poisoned")
            .take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the re-index task failed while stopping");
        }
    }

    fn update(&self, change: impl FnOnce(&mut ReindexStatus)) {
        let mut status = self.status.lock().expect("re-index status poisoned");
        change(&mut status);
        if let Some(started) = *self.started.lock().expect("re-index clock poisoned") {
            status.elapsed_s = started.elapsed().as_secs_f64();
        }
    }

    fn running(&self) -> bool {
        matches!(
            self.status.lock().expect("re-index status poisoned").phase,
            ReindexPhase::Loading | ReindexPhase::Encoding | ReindexPhase::Switching
        )
    }
}

/// A re-index ready to run: the new model, its tables, and the store it fills.
pub(super) struct Prepared {
    target: Target,
    engine: Arc<Engine>,
    tables: DistanceTables,
    staging: CodeStore,
}

impl Index {
    /// Progress of the re-index under way or last run.
    pub fn reindex_status(&self) -> ReindexStatus {
        let mut status = self
            .reindex
            .status
            .lock()
            .expect("re-index status poisoned")
            .clone();
        if let Some(started) = *self
            .reindex
            .started
            .lock()
            .expect("re-index clock poisoned")
            && matches!(
                status.phase,
                ReindexPhase::Loading | ReindexPhase::Encoding | ReindexPhase::Switching
            )
        {
            status.elapsed_s = started.elapsed().as_secs_f64();
        }
        status
    }

    /// Starts re-indexing every record with the bundle in `bundle`: loads it, checks that the
    /// records can be re-encoded (kept frames made with its pre-processing, or an archive to
    /// fetch them from), and runs in the background; see the module docs. A re-index of the
    /// same bundle interrupted earlier goes on from its last sync.
    pub async fn start_reindex(
        self: &Arc<Self>,
        bundle: &Path,
    ) -> Result<ReindexStatus, ReindexError> {
        if self.is_closing() {
            return Err(ReindexError::Refused("the server is stopping".into()));
        }
        if self.reindex.running() {
            let status = self.reindex_status();
            return Err(ReindexError::Refused(format!(
                "a re-index to {} is already under way ({} of {} records); wait for it to finish",
                status.to_model_id, status.records_done, status.records_total
            )));
        }
        let bundle = std::fs::canonicalize(bundle).map_err(|e| {
            ReindexError::Bundle(format!(
                "{}: {e}; name a bundle folder on the server's disk",
                bundle.display()
            ))
        })?;
        let engine = self.load_engine(&bundle).await?;
        let serving = self.serving();
        if engine.manifest().model_id == serving.model_id() {
            return Err(ReindexError::Refused(format!(
                "model {} already serves; a re-index needs a bundle with another model_id",
                serving.model_id()
            )));
        }
        let generation = serving.generation + 1;
        let target = Target {
            bundle,
            model_id: engine.manifest().model_id.clone(),
            generation,
        };
        let earlier = pending(&self.dir, serving.generation)?;
        self.check_sources(&engine)?;
        let dir = codes_dir(&self.dir, generation);
        if earlier.as_ref() != Some(&target) && dir.exists() {
            // Another bundle's partial codes: they are of no use to this one.
            std::fs::remove_dir_all(&dir).map_err(|e| {
                ReindexError::State(format!("{} cannot be removed: {e}", dir.display()))
            })?;
        }
        target::begin(&self.dir, &target)?;
        let prepared = self.prepare(target, engine)?;
        self.run_reindex(prepared, serving.model_id().to_string());
        Ok(self.reindex_status())
    }

    /// Gives up the re-index under way or failed: stops its task, removes its codes and its
    /// file, and leaves the current model serving. Refused when there is none, while it loads
    /// its bundle, and once it has switched.
    pub async fn cancel_reindex(&self) -> Result<ReindexStatus, ReindexError> {
        let phase = self.reindex_status().phase;
        match phase {
            ReindexPhase::Loading => {
                return Err(ReindexError::Refused(
                    "the re-index is loading its bundle; cancel it once it runs".into(),
                ));
            }
            ReindexPhase::Encoding | ReindexPhase::Switching | ReindexPhase::Failed => {}
            ReindexPhase::Idle | ReindexPhase::Done | ReindexPhase::Cancelled => {
                let serving = self.serving();
                if pending(&self.dir, serving.generation)?.is_none() {
                    return Err(ReindexError::Refused(
                        "no re-index is under way or failed; there is nothing to cancel".into(),
                    ));
                }
            }
        }
        // The task ends at its next batch (or once the switch it asked for is answered).
        self.reindex.stop.send_replace(true);
        let task = self
            .reindex
            .task
            .lock()
            .expect("re-index task slot poisoned")
            .take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the re-index task failed while being cancelled");
        }
        if !self.is_closing() {
            self.reindex.stop.send_replace(false);
        }
        let serving = self.serving();
        let Some(target) = pending(&self.dir, serving.generation)? else {
            return Err(ReindexError::Refused(format!(
                "the re-index had already switched to model {}; to go back, re-index with the \
                 previous bundle",
                serving.model_id()
            )));
        };
        target::cancel(&self.dir, serving.generation)?;
        tracing::info!(to = %target.model_id, "re-index cancelled; the current model keeps serving");
        self.reindex.update(|s| {
            s.phase = ReindexPhase::Cancelled;
            s.to_model_id = target.model_id.clone();
            s.bundle = target.bundle.clone();
            s.error = None;
        });
        Ok(self.reindex_status())
    }

    /// Goes on with the re-index `target` after a restart, in the background.
    pub(super) fn resume_reindex(self: &Arc<Self>, target: Target) {
        let from = self.serving().model_id().to_string();
        self.reindex.update(|s| {
            *s = ReindexStatus {
                phase: ReindexPhase::Loading,
                from_model_id: from.clone(),
                to_model_id: target.model_id.clone(),
                bundle: target.bundle.clone(),
                ..ReindexStatus::default()
            }
        });
        let index = self.clone();
        tokio::spawn(async move {
            let resumed = async {
                let engine = index.load_engine(&target.bundle).await?;
                if engine.manifest().model_id != target.model_id {
                    return Err(ReindexError::State(format!(
                        "{} now holds model {}, not {} that the re-index under way started with; \
                         start a re-index again",
                        target.bundle.display(),
                        engine.manifest().model_id,
                        target.model_id
                    )));
                }
                index.check_sources(&engine)?;
                index.prepare(target, engine)
            };
            match resumed.await {
                Ok(prepared) => {
                    tracing::info!(to = %prepared.target.model_id, done = prepared.staging.len(), "resuming the re-index a restart interrupted");
                    index.run_reindex(prepared, from);
                }
                Err(error) => {
                    tracing::error!(%error, "the re-index under way cannot go on");
                    index.reindex.update(|s| {
                        s.phase = ReindexPhase::Failed;
                        s.error = Some(error.to_string());
                    });
                }
            }
        });
    }

    async fn load_engine(&self, bundle: &Path) -> Result<Arc<Engine>, ReindexError> {
        let engines = self.reindex.engines.clone().ok_or_else(|| {
            ReindexError::Refused("this server was started without a way to load bundles".into())
        })?;
        let dir = bundle.to_path_buf();
        tokio::task::spawn_blocking(move || engines.load(&dir))
            .await
            .map_err(|e| ReindexError::Refused(format!("loading the bundle failed: {e}")))?
            .map_err(|reason| {
                ReindexError::Bundle(format!(
                    "the bundle in {} cannot be used: {reason}",
                    bundle.display()
                ))
            })
    }

    /// Refuses a re-index whose records cannot all be re-encoded: kept frames are reused only
    /// when the new bundle pre-processes as they were made, and everything else needs the archive.
    fn check_sources(&self, engine: &Engine) -> Result<(), ReindexError> {
        if self.reindex.fetcher.is_some() {
            return Ok(());
        }
        let records = self.codes.read().expect("code store lock poisoned").len();
        let wanted = engine.manifest().preprocess;
        let frames = self.frames.lock().expect("frames lock poisoned");
        let problem = match frames.as_ref() {
            None if records > 0 => Some(format!(
                "[index] keep_frames is off, so none of the {records} records has a kept frame"
            )),
            None => None,
            Some(frames) if frames.preprocess() != wanted && records > 0 => Some(format!(
                "the new bundle pre-processes differently ({wanted:?}) from the kept frames \
                 ({:?}), so they are not reused",
                frames.preprocess()
            )),
            Some(frames) if frames.first_record() > 0 => Some(format!(
                "the first {} records were indexed before [index] keep_frames was on and have \
                 no kept frame",
                frames.first_record().min(records)
            )),
            Some(_) => None,
        };
        match problem {
            Some(problem) => Err(ReindexError::Refused(format!(
                "{problem}; they would have to be fetched again from the archive by UID, and no \
                 archive is configured. Name it in the [archive] section of the configuration \
                 (archive.dicom = \"AE@HOST:PORT\", see docs/CONFIGURATION.md), or index the \
                 archive again with the new bundle"
            ))),
            None => Ok(()),
        }
    }

    /// Opens the store a re-index fills, cut back to the committed records of the serving one.
    fn prepare(&self, target: Target, engine: Arc<Engine>) -> Result<Prepared, ReindexError> {
        let tables = DistanceTables::of(engine.codebooks()).map_err(|e| {
            ReindexError::Refused(format!(
                "the new bundle's codebooks cannot be searched: {e}"
            ))
        })?;
        let dir = codes_dir(&self.dir, target.generation);
        let store_error =
            |e: crate::store::StoreError| ReindexError::State(format!("the new code store: {e}"));
        let mut staging = CodeStore::open(&dir, super::stamp_of(&engine)).map_err(store_error)?;
        let committed = usize::try_from(self.catalog.checkpoint().records).unwrap_or(usize::MAX);
        if staging.len() > committed {
            staging.truncate(committed).map_err(store_error)?;
        }
        Ok(Prepared {
            target,
            engine,
            tables,
            staging,
        })
    }

    fn run_reindex(self: &Arc<Self>, prepared: Prepared, from: String) {
        let resumed_at = prepared.staging.len() as u64;
        *self
            .reindex
            .started
            .lock()
            .expect("re-index clock poisoned") = Some(Instant::now());
        self.reindex.update(|s| {
            *s = ReindexStatus {
                phase: ReindexPhase::Encoding,
                from_model_id: from,
                to_model_id: prepared.target.model_id.clone(),
                bundle: prepared.target.bundle.clone(),
                records_done: resumed_at,
                resumed_at,
                ..ReindexStatus::default()
            }
        });
        tracing::info!(
            to = %prepared.target.model_id,
            bundle = %prepared.target.bundle.display(),
            resumed_at,
            "re-index started; the current model serves until every record has new codes"
        );
        let index = self.clone();
        let task = tokio::spawn(async move { index.reindex_job(prepared).await });
        *self
            .reindex
            .task
            .lock()
            .expect("re-index task slot poisoned") = Some(task);
    }

    /// The background job: re-encodes batches until the new store is close to the serving one,
    /// then hands it to the apply worker for the switch.
    async fn reindex_job(self: Arc<Self>, mut prepared: Prepared) {
        let mut stop = self.reindex.stop.subscribe();
        let (mut synced_at, mut logged_at) = (Instant::now(), Instant::now());
        let mut failures = 0;
        loop {
            if *stop.borrow() {
                if let Err(error) = prepared.staging.sync() {
                    tracing::warn!(%error, "syncing the re-index's progress while stopping failed");
                }
                tracing::info!(
                    done = prepared.staging.len(),
                    "re-index stopped (the server is stopping, or it was cancelled)"
                );
                return;
            }
            let committed = usize::try_from(self.catalog.checkpoint().records).unwrap_or(0);
            let done = prepared.staging.len();
            self.reindex.update(|s| {
                s.records_done = done as u64;
                s.records_total = committed as u64;
            });
            if committed.saturating_sub(done) <= SWITCH_WITHIN {
                match self.ask_switch(prepared).await {
                    Ok(()) => return,
                    Err((reason, back)) => {
                        prepared = back;
                        failures += 1;
                        tracing::warn!(%reason, "the switch to the re-indexed model failed; trying again");
                        if failures >= GIVE_UP_AFTER {
                            self.reindex_failed(reason);
                            return;
                        }
                        tokio::time::sleep(RETRY_AFTER).await;
                        continue;
                    }
                }
            }
            let end = committed.min(done + BATCH);
            match self
                .reencode(&prepared.engine, &mut prepared.staging, done..end)
                .await
            {
                Ok(()) => failures = 0,
                Err(reason) => {
                    failures += 1;
                    tracing::warn!(%reason, "re-encoding a batch failed; trying again");
                    if failures >= GIVE_UP_AFTER {
                        self.reindex_failed(reason);
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
            if synced_at.elapsed() >= SYNC_EVERY {
                if let Err(error) = prepared.staging.sync() {
                    tracing::warn!(%error, "syncing the re-index's progress failed; trying again at the next batch");
                }
                synced_at = Instant::now();
            }
            if logged_at.elapsed() >= LOG_EVERY {
                let status = self.reindex_status();
                tracing::info!(
                    done = status.records_done,
                    total = status.records_total,
                    per_second = format!("{:.0}", status.rate()),
                    to = %status.to_model_id,
                    "re-index progress"
                );
                logged_at = Instant::now();
            }
        }
    }

    fn reindex_failed(&self, reason: String) {
        tracing::error!(%reason, "the re-index stopped; start it again to go on from its last sync");
        self.reindex.update(|s| {
            s.phase = ReindexPhase::Failed;
            s.error = Some(reason);
        });
    }

    /// Hands the re-index to the apply worker for the switch; gives it back when it failed.
    async fn ask_switch(&self, prepared: Prepared) -> Result<(), (String, Prepared)> {
        self.reindex.update(|s| s.phase = ReindexPhase::Switching);
        let Some(worker) = self.reindex.switch.get() else {
            return Err(("the apply worker has not started".into(), prepared));
        };
        let (request, answer) = SwitchRequest::new(prepared);
        if let Err(unsent) = worker.send(request) {
            return Err((
                "the apply worker has stopped".into(),
                unsent.0.into_prepared(),
            ));
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(back)) => {
                self.reindex.update(|s| s.phase = ReindexPhase::Encoding);
                Err(back)
            }
            Err(_) => {
                // The worker dropped the request while stopping: the files say where it was,
                // and the next start goes on.
                tracing::info!("the server stopped before the switch; the next start goes on");
                Ok(())
            }
        }
    }

    /// Re-encodes the serving store's records `range` with `engine` and appends them to
    /// `staging` (deleted ones as deleted); all or nothing.
    pub(super) async fn reencode(
        &self,
        engine: &Arc<Engine>,
        staging: &mut CodeStore,
        range: std::ops::Range<usize>,
    ) -> Result<(), String> {
        if range.is_empty() {
            return Ok(());
        }
        debug_assert_eq!(range.start, staging.len());
        let wanted = engine.manifest().preprocess;
        // What each record is: its keys and whether it is deleted, then its input.
        let entries: Vec<(RecordId, crate::record::RecordKeys, bool)> = {
            let store = self.codes.read().expect("code store lock poisoned");
            let view = store.view();
            range
                .clone()
                .map(|i| {
                    let entry = view.records()[i];
                    (i as RecordId, entry.keys(), entry.is_deleted())
                })
                .collect()
        };
        let mut inputs: Vec<Option<Vec<f32>>> = {
            let frames = self.frames.lock().expect("frames lock poisoned");
            entries
                .iter()
                .map(|&(id, _, deleted)| match (deleted, frames.as_ref()) {
                    (true, _) => None,
                    (false, Some(frames)) if frames.preprocess() == wanted => frames.frame(id),
                    _ => None,
                })
                .collect()
        };
        let kept = inputs.iter().filter(|i| i.is_some()).count();
        let mut fetched = 0;
        // The frames of a multi-frame instance are consecutive records: fetched once.
        let mut last_fetched = None;
        for (slot, &(id, _, deleted)) in inputs.iter_mut().zip(&entries) {
            if slot.is_none() && !deleted {
                *slot = Some(self.fetch_input(id, engine, &mut last_fetched).await?);
                fetched += 1;
            }
        }
        let mut tasks = JoinSet::new();
        for (i, input) in inputs.into_iter().enumerate() {
            if let Some(pixels) = input {
                let engine = engine.clone();
                tasks.spawn(async move {
                    loop {
                        match engine.encode(pixels.clone()).await {
                            Err(crate::encoder::BatchError::QueueFull { .. }) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            other => return (i, other),
                        }
                    }
                });
            }
        }
        let mut codes = vec![None; entries.len()];
        while let Some(joined) = tasks.join_next().await {
            let (i, code) = joined.map_err(|e| format!("an encoding task failed: {e}"))?;
            codes[i] = Some(code.map_err(|e| format!("the new model's encoder failed: {e}"))?);
        }
        let positions = staging.stamp().positions;
        let records: Vec<NewRecord> = entries
            .iter()
            .zip(&codes)
            .map(|(&(_, keys, _), code)| match code {
                Some(code) => NewRecord {
                    normal: code.normal.iter().map(|&c| c as u8).collect(),
                    abnormal: code.abnormal.iter().map(|&c| c as u8).collect(),
                    keys,
                    abnormality: code.abnormality,
                },
                None => NewRecord {
                    normal: vec![0; positions],
                    abnormal: vec![0; positions],
                    keys,
                    abnormality: 0.0,
                },
            })
            .collect();
        let appended = staging
            .append(&records)
            .map_err(|e| format!("appending to the new code store failed: {e}"))?;
        let deleted: Vec<RecordId> = entries
            .iter()
            .filter(|(_, _, deleted)| *deleted)
            .map(|&(id, _, _)| id)
            .collect();
        let tombstoned = staging.tombstone(&deleted);
        if let Err(error) = tombstoned {
            let _ = staging.truncate(appended.start as usize);
            return Err(format!(
                "marking deleted records in the new code store failed: {error}"
            ));
        }
        self.reindex.update(|s| {
            s.records_done = staging.len() as u64;
            s.from_kept_frames += kept as u64;
            s.from_archive += fetched;
        });
        Ok(())
    }

    /// The new model's input for record `id`, from its instance fetched again from the archive
    /// (or from `last`, the instance fetched just before, when it is the same one).
    async fn fetch_input(
        &self,
        id: RecordId,
        engine: &Engine,
        last: &mut Option<(String, Arc<Vec<u8>>)>,
    ) -> Result<Vec<f32>, String> {
        let fetcher = self.reindex.fetcher.clone().ok_or_else(|| {
            format!("record {id} has no usable kept frame and no archive fetcher is configured")
        })?;
        let record = self
            .catalog
            .entries(&[id])
            .map_err(|e| format!("the catalog cannot be read: {e}"))?
            .pop()
            .flatten()
            .ok_or_else(|| format!("record {id} is not in the catalog"))?;
        let m = &record.metadata;
        let instance = InstanceRef {
            study_instance_uid: m.study_instance_uid.clone(),
            series_instance_uid: m.series_instance_uid.clone(),
            sop_instance_uid: m.sop_instance_uid.clone(),
        };
        let bytes = match last {
            Some((uid, bytes)) if *uid == instance.sop_instance_uid => bytes.clone(),
            _ => {
                let bytes = Arc::new(self.fetch_instance(id, fetcher.as_ref(), &instance).await?);
                *last = Some((instance.sop_instance_uid.clone(), bytes.clone()));
                bytes
            }
        };
        let params = engine.manifest().preprocess;
        let limits = self.limits;
        let frame = record.frame;
        tokio::task::spawn_blocking(move || {
            let parsed = diptych_dicom_adapter::parse(&bytes, &limits)
                .map_err(|e| format!("record {id}'s instance from the archive: {e}"))?;
            let decoded = parsed
                .decode_frame(frame)
                .map_err(|e| format!("record {id}'s frame {frame} from the archive: {e}"))?;
            preprocess(&decoded.raw_frame(), &params)
                .map(|input| input.pixels)
                .map_err(|e| format!("record {id}'s frame {frame} cannot be pre-processed: {e}"))
        })
        .await
        .map_err(|e| format!("decoding a fetched instance failed: {e}"))?
    }

    /// Record `id`'s instance from the archive; the error names it, and the fix when the
    /// archive no longer holds it.
    async fn fetch_instance(
        &self,
        id: RecordId,
        fetcher: &dyn SourceFetcher,
        instance: &InstanceRef,
    ) -> Result<Vec<u8>, String> {
        fetcher.fetch(instance).await.map_err(|e| {
            let fix = match e {
                FetchError::NotFound(_) => {
                    "; send it to the archive again, or delete it here (`diptych delete \
                     --instance UID`), then start the re-index again: it goes on from its last \
                     sync"
                }
                FetchError::Unreachable(_) | FetchError::Refused(_) => "",
            };
            format!(
                "record {id} (SOP Instance UID {}) cannot be re-encoded: fetching its instance \
                 from the archive failed: {e}{fix}",
                instance.sop_instance_uid
            )
        })
    }
}
