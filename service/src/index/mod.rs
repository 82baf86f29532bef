//! The index: where an accepted DICOM instance becomes searchable records, and where searches
//! and deletes meet the store and the catalog.
//!
//! The path of an instance, in order:
//!
//! 1. [`accept`]: parse and decode it (bad input is refused here, with a reason, before anything
//!    is written), drop duplicates, append it to the write-ahead log and wait for the fsync — only
//!    then is it acknowledged;
//! 2. [`apply`]: a single worker takes accepted work ([`work::Work`]) in log order, encodes every frame through the
//!    batching encoder, appends the codes to the store and the metadata to the catalog, and
//!    checkpoints (store synced, catalog committed with the last applied log sequence number),
//!    after which the log's applied segments are pruned. When any of it fails, the worker rolls
//!    back to the last checkpoint and redoes the work from the log, and while failures persist
//!    the index refuses new work ([`health`]);
//! 3. on start, [`Index::open`] drops store records past the catalog's checkpoint and the worker
//!    replays the log after it, a chunk at a time, so whatever was acknowledged is finished
//!    exactly once.
//!
//! [`stages`] times each step of 1. for `/metrics` (`diptych_accept_stage_duration`).
//!
//! Searches ([`query`]) read the store under a shared lock and the catalog through its reader.
//!
//! A new model bundle replaces the serving one without an empty index ([`reindex`]): every
//! record is re-encoded in the background from its kept frame ([`FrameStore`]) into a second
//! code store while the old model keeps serving, and the apply worker switches search to the new
//! codes in one catalog commit once every record has them. [`Index::serving`] is the model a
//! search uses from start to end; it never mixes codes of two models.
//!
//! The search projections ([`SearchIndex`]) are fitted in the background once the store is
//! large enough, and saved to `<data_dir>/search/` ([`PersistedIndex`]) with the checkpoints, so
//! that [`Index::open`] reads them back and searches after a restart are pruned at once.

pub mod accept;
pub mod apply;
pub mod apply_error;
pub mod faults;
pub mod health;
pub mod query;
pub mod reindex;
pub mod stages;
pub mod work;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use diptych_dicom_adapter::{Limits, Uid};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::catalog::{Catalog, CatalogError};
use crate::encoder::Engine;
use crate::record::RecordId;
use crate::record::RecordSet;
use crate::search::persist::{self, Identity};
use crate::search::tables::TablesError;
use crate::search::{DistanceTables, PersistedIndex, SearchIndex};
use crate::store::{CodeStore, FrameStore, ModelStamp, StoreError, Wal, WalOptions, WalRecord};
use crate::watch::StudyTracker;

pub use accept::{AcceptOutcome, Refusal};
pub use apply_error::ApplyError;
pub use faults::{FaultPoint, Faults};
pub use health::Health;
pub use query::{QueryError, QuerySource, SearchOutcome, SearchSpec};
pub use reindex::{
    EngineLoader, FetchError, FetchFuture, InstanceRef, ReindexError, ReindexPhase, ReindexStatus,
    SourceFetcher,
};
pub use work::{DeleteCounts, Work};

/// Why the index could not open or act.
#[derive(Debug, Error)]
pub enum IndexError {
    /// The store (log or codes) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The model's codebooks cannot make distance tables.
    #[error("the model's codebooks cannot be used for search: {0}")]
    Tables(#[from] TablesError),
    /// Applying a delete failed.
    #[error("the delete could not be applied: {0}")]
    Apply(#[source] ApplyError),
    /// The apply worker has stopped (the server is shutting down).
    #[error("the indexing worker has stopped; the server is shutting down")]
    Stopped,
    /// The data folder was re-indexed to another model, whose bundle cannot be loaded.
    #[error("{0}")]
    Reindex(#[from] ReindexError),
}

/// Records from which search uses (and builds) its lower-bound projections.
pub const PROJECTIONS_FROM: usize = 4096;
/// Least time between two saves of the search summaries by checkpoints; a new fit, a delete
/// and [`Index::close`] save at once. Records a crash leaves unsaved are summarised from the
/// store at the next start (about 1 µs each).
pub const SAVE_SEARCH_INDEX_EVERY: Duration = Duration::from_secs(1);

/// How the index is set up.
#[derive(Clone)]
pub struct IndexOptions {
    /// Bounds on the DICOM instances accepted.
    pub limits: Limits,
    /// A study is "received" once no instance of it arrived for this long.
    pub quiet_period: Duration,
    /// Frames acknowledged and not yet applied that may be held in memory; an instance that
    /// would exceed it waits before its acknowledgement.
    pub max_backlog_frames: usize,
    /// Free bytes the data folder's file system keeps: below it new instances are refused
    /// (C-STORE 0xA700, Ingest RESOURCE_EXHAUSTED) before anything is written. 0 turns it off.
    pub min_free_bytes: u64,
    /// Failures to inject (tests only; unarmed by default).
    pub faults: Arc<Faults>,
    /// Keep every record's pre-processed frame in `<data_dir>/frames/` (`[index] keep_frames`),
    /// so that a re-index with a new bundle needs no archive.
    pub keep_frames: bool,
    /// Starts the engine of another bundle: for a re-index, and for a data folder already
    /// re-indexed to a model other than the one the server was started with. Without it, a
    /// re-index is refused.
    pub engines: Option<Arc<dyn EngineLoader>>,
    /// Fetches instances again from the archive, for records without a usable kept frame.
    pub fetcher: Option<Arc<dyn SourceFetcher>>,
}

impl std::fmt::Debug for IndexOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexOptions")
            .field("limits", &self.limits)
            .field("quiet_period", &self.quiet_period)
            .field("max_backlog_frames", &self.max_backlog_frames)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("keep_frames", &self.keep_frames)
            .field("engines", &self.engines.is_some())
            .field("fetcher", &self.fetcher.is_some())
            .finish_non_exhaustive()
    }
}

/// The model search and indexing use now: its engine, the distance tables of its codebooks, and
/// the generation of the code store that holds its codes. Replaced as a whole when a re-index
/// switches models; a search holds one from start to end.
#[derive(Debug)]
pub struct Serving {
    /// The model's sessions.
    pub engine: Arc<Engine>,
    /// Distance tables of its codebooks.
    pub tables: DistanceTables,
    /// Which code store holds its codes: `codes/` for 0, `codes-N/` after the N-th re-index.
    pub generation: u32,
}

impl Serving {
    /// The model's id.
    pub fn model_id(&self) -> &str {
        &self.engine.manifest().model_id
    }
}

/// The folder of the code store of `generation` (see [`Serving::generation`]).
pub fn codes_dir(data_dir: &Path, generation: u32) -> PathBuf {
    match generation {
        0 => data_dir.join("codes"),
        n => data_dir.join(format!("codes-{n}")),
    }
}

/// Counters the statistics call and `/metrics` report (since this process started, except
/// `pending`, which counts a replayed log too).
#[derive(Debug, Default)]
pub struct Counters {
    /// Instances acknowledged but not yet applied.
    pub pending: AtomicU64,
    /// Image instances acknowledged for indexing: written to the log and answered success
    /// (over DICOM or Ingest); duplicates and non-image objects are counted apart.
    pub acknowledged: AtomicU64,
    /// Image instances whose records were committed (searchable), replayed ones included.
    pub indexed: AtomicU64,
    /// Instances answered as duplicates of one already indexed or in flight.
    pub duplicates: AtomicU64,
    /// Non-image objects received.
    pub non_image: AtomicU64,
    /// Acceptors' copies of log entries that arrived after the worker had read the entry back
    /// from the log (a sequence gap outlasting its patience) and applied it: dropped, so that
    /// nothing is applied twice.
    pub late_copies: AtomicU64,
    /// Most decoded frames a replay of the log held in memory at once (bounded by
    /// [`IndexOptions::max_backlog_frames`], however long the log).
    pub replay_frames_peak: AtomicU64,
    /// Similar-studies searches run ([`Index::similar_studies`]): for a received study, one per
    /// question its subscribers ask, however many ask it.
    pub similar_studies: AtomicU64,
    /// Records whose search summaries [`Index::open`] read back from the data folder (0 when
    /// there was no usable file and the projections are fitted anew in the background).
    pub search_index_loaded: AtomicU64,
}

/// The searchable index of one model: write-ahead log, code store, catalog and search structures.
pub struct Index {
    serving: RwLock<Arc<Serving>>,
    limits: Limits,
    dir: PathBuf,
    wal: Wal,
    codes: RwLock<CodeStore>,
    /// The kept frames, with `[index] keep_frames`.
    frames: Mutex<Option<FrameStore>>,
    search: RwLock<SearchState>,
    catalog: Catalog,
    /// The re-index under way or last run, and how to start one.
    reindex: reindex::Jobs,
    /// Held for reading by every search from its first read of the catalog or the codes to its
    /// last, and for writing by a re-index's switch around the commit that changes models: a
    /// search never sees the scores of one model with the codes of another.
    model_switch: tokio::sync::RwLock<()>,
    /// Instance keys acknowledged and not yet applied, with their Study Instance UIDs:
    /// duplicates of these are dropped at accept, and their studies are not yet "received".
    in_flight: Mutex<HashMap<u64, String>>,
    /// Arrivals per study, for the watch stream.
    tracker: Arc<StudyTracker>,
    /// Set once the search projections are being built (or built, or read back).
    building: AtomicBool,
    /// The background fit of the search projections, awaited by [`Index::close`].
    build_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The search projections on disk, and when they were last saved.
    search_file: Mutex<SearchFile>,
    work: mpsc::UnboundedSender<Work>,
    /// Set by [`Index::close`]: the worker drains what it has and stops.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The apply worker, joined by [`Index::close`].
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One permit per frame that may wait for the apply worker (see
    /// [`IndexOptions::max_backlog_frames`]); held from acknowledgement until applied.
    backlog: Arc<tokio::sync::Semaphore>,
    /// The permits `backlog` started with.
    max_backlog: u32,
    /// See [`IndexOptions::min_free_bytes`].
    min_free_bytes: u64,
    /// Injected failures (tests).
    faults: Arc<Faults>,
    /// Whether new work is taken.
    health: Health,
    /// What the statistics call reports.
    pub counters: Counters,
    /// Where the time of an accepted instance goes, stage by stage (`/metrics`).
    pub stages: stages::AcceptStages,
}

/// The saved search projections and when they were last saved.
struct SearchFile {
    file: PersistedIndex,
    saved_at: Option<Instant>,
}

/// What search needs beside the codes: the lower-bound summaries and the deleted records.
pub struct SearchState {
    /// Per-record projections for exact pruning; `None` until the store is large enough for
    /// them, and while they are fitted in the background after a start without a usable saved
    /// copy (search is exact without them, only slower).
    pub index: Option<SearchIndex>,
    /// Records tombstoned in the store.
    pub deleted: RecordSet,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Opens (or creates) the index in `data_dir` for the engine's model, recovers what the log
    /// holds past the last checkpoint, and starts the apply worker on the current tokio runtime.
    pub fn open(
        data_dir: &Path,
        engine: Arc<Engine>,
        options: IndexOptions,
    ) -> Result<Arc<Index>, IndexError> {
        let limits = options.limits;
        let max_backlog = options.max_backlog_frames.clamp(1, u32::MAX as usize) as u32;
        let catalog = Catalog::open(&data_dir.join("catalog"))?;
        let checkpoint = catalog.checkpoint();
        let generation = checkpoint.generation;
        // A data folder re-indexed to another model serves that model, whatever was configured.
        let engine = reindex::serving_engine(data_dir, generation, engine, &options)?;
        let mut codes = CodeStore::open(codes_dir(data_dir, generation), stamp_of(&engine))?;
        // Records past the catalog's checkpoint were never committed: the log replays them.
        let committed = usize::try_from(checkpoint.records).unwrap_or(usize::MAX);
        if codes.len() > committed {
            tracing::warn!(
                dropped = codes.len() - committed,
                "store records past the last checkpoint dropped; the log replays them"
            );
            codes.truncate(committed)?;
        }
        let frames = open_frames(data_dir, &engine, options.keep_frames, codes.len())?;
        let manifest = engine.manifest();
        let (wal, recovery) = Wal::open(data_dir.join("wal"), WalOptions::default())?;
        for corruption in &recovery.corruptions {
            tracing::warn!(%corruption, "write-ahead log: a torn or corrupted entry was skipped");
        }
        let tables = DistanceTables::of(engine.codebooks())?;
        let mut search_file = PersistedIndex::new(
            data_dir.join(persist::FOLDER),
            Identity::new(&manifest.model_id, codes.stamp().positions, &tables),
        );
        let search = {
            let view = codes.view();
            let deleted: RecordSet = view
                .records()
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_deleted())
                .map(|(i, _)| i as RecordId)
                .collect();
            SearchState {
                // Read back when saved and usable; otherwise built in the background once the
                // store is large enough to need it.
                index: load_search_index(&mut search_file, &tables, &view, &deleted),
                deleted,
            }
        };
        let loaded = search
            .index
            .as_ref()
            .map(|_| search_file.records_on_disk().unwrap_or(0).min(codes.len()) as u64);
        let (tx, rx) = mpsc::unbounded_channel();
        let pending_reindex = reindex::pending(data_dir, generation)?;
        let index = Arc::new(Index {
            serving: RwLock::new(Arc::new(Serving {
                engine,
                tables,
                generation,
            })),
            limits,
            dir: data_dir.to_path_buf(),
            wal,
            codes: RwLock::new(codes),
            frames: Mutex::new(frames),
            search: RwLock::new(search),
            catalog,
            reindex: reindex::Jobs::new(options.engines.clone(), options.fetcher.clone()),
            model_switch: tokio::sync::RwLock::new(()),
            in_flight: Mutex::new(HashMap::new()),
            tracker: StudyTracker::new(options.quiet_period),
            building: AtomicBool::new(loaded.is_some()),
            build_task: Mutex::new(None),
            search_file: Mutex::new(SearchFile {
                file: search_file,
                saved_at: None,
            }),
            work: tx,
            stopping: tokio::sync::watch::Sender::new(false),
            worker: Mutex::new(None),
            backlog: Arc::new(tokio::sync::Semaphore::new(max_backlog as usize)),
            max_backlog,
            min_free_bytes: options.min_free_bytes,
            faults: options.faults,
            health: Health::default(),
            counters: Counters {
                search_index_loaded: AtomicU64::new(loaded.unwrap_or(0)),
                ..Counters::default()
            },
            stages: stages::AcceptStages::default(),
        });
        let replay = match index.claim_replay(checkpoint.applied_seq)? {
            Some((entries, until)) => {
                tracing::info!(
                    entries,
                    after_seq = checkpoint.applied_seq,
                    "write-ahead log replay started"
                );
                Some(apply::Replay::new(
                    index.wal.replay_after(checkpoint.applied_seq),
                    until,
                ))
            }
            None => None,
        };
        // The projections of a large index take seconds: SERVING does not wait for them.
        let records = index.codes.read().expect("code store lock poisoned").len();
        index.build_search_index_when_worth_it(records);
        let (switch_tx, switch_rx) = mpsc::unbounded_channel();
        index.reindex.set_switch(switch_tx);
        let worker = tokio::spawn(apply::run(
            index.clone(),
            rx,
            switch_rx,
            checkpoint.applied_seq + 1,
            replay,
        ));
        *index.worker.lock().expect("worker slot poisoned") = Some(worker);
        // A re-index a crash or a stop interrupted goes on where its last sync left it.
        if let Some(target) = pending_reindex {
            index.resume_reindex(target);
        }
        Ok(index)
    }

    /// Stops the index: new work is refused ([`IndexError::Stopped`]), the apply worker applies
    /// everything acknowledged, takes a final checkpoint and ends, a fit of the search
    /// projections under way finishes, and the search summaries are saved; resolves once all
    /// that is done. After it, dropping the last `Arc` releases the data folder.
    pub async fn close(&self) {
        self.stopping.send_replace(true);
        self.reindex.stop().await;
        let worker = self.worker.lock().expect("worker slot poisoned").take();
        if let Some(worker) = worker
            && let Err(error) = worker.await
        {
            tracing::error!(%error, "the apply worker failed while stopping");
        }
        let build = self.build_task.lock().expect("build slot poisoned").take();
        if let Some(build) = build
            && let Err(error) = build.await
        {
            tracing::error!(%error, "fitting the search projections failed while stopping");
        }
        self.save_search_index(true);
    }

    /// Records the search projections summarise (`None` while there are none: searches scan
    /// every record unpruned).
    pub fn search_index_records(&self) -> Option<usize> {
        self.search
            .read()
            .expect("search lock poisoned")
            .index
            .as_ref()
            .map(SearchIndex::len)
    }

    /// Saves the summaries of the committed records to the data folder when they changed:
    /// at once after a new fit or a delete, or with `force`; otherwise at most every
    /// [`SAVE_SEARCH_INDEX_EVERY`]. Only a checkpoint's records are saved, so the file never
    /// describes a record that a restart or a rollback drops. A failure is logged: the next
    /// save writes the whole file again, and a start without a usable file fits anew.
    fn save_search_index(&self, force: bool) {
        let mut saved = self.search_file.lock().expect("search file lock poisoned");
        let pending = {
            let mut search = self.search.write().expect("search lock poisoned");
            let Some(index) = search.index.as_mut() else {
                return;
            };
            let due = saved
                .saved_at
                .is_none_or(|at| at.elapsed() >= SAVE_SEARCH_INDEX_EVERY);
            if !force && !due && !saved.file.is_urgent(index) {
                return;
            }
            let committed = usize::try_from(self.catalog.checkpoint().records).unwrap_or(0);
            saved.file.prepare(index, committed)
        };
        let Some(pending) = pending else {
            return;
        };
        let started = Instant::now();
        let (records, whole) = (pending.records(), pending.is_full());
        match saved.file.write(pending) {
            Ok(()) => {
                saved.saved_at = Some(Instant::now());
                tracing::debug!(
                    records,
                    whole,
                    save_ms = started.elapsed().as_secs_f64() * 1e3,
                    "search projections saved"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "saving the search projections failed; the next save rewrites them");
            }
        }
    }

    /// Whether [`Index::close`] was called.
    pub fn is_closing(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Before a replay: marks every instance in the log after `seq` as in flight (so a copy
    /// that arrives meanwhile is a duplicate) and pending, reading one entry at a time without
    /// decoding pixels. Returns the entries and the last seq, `None` when there are none.
    fn claim_replay(&self, seq: u64) -> Result<Option<(u64, u64)>, IndexError> {
        let mut entries = 0;
        let mut last = None;
        for entry in self.wal.replay_after(seq) {
            let (seq, record) = entry?;
            if let WalRecord::Instance { dicom } = &record
                && let Ok(instance) = diptych_dicom_adapter::parse(dicom, &self.limits)
                && instance.is_image()
                && let Ok(uids) = instance.uids()
            {
                let (key, study) = work::in_flight_entry(&uids);
                self.in_flight
                    .lock()
                    .expect("in-flight set poisoned")
                    .insert(key, study);
            }
            entries += 1;
            last = Some(seq);
        }
        self.counters.pending.fetch_add(entries, Ordering::Relaxed);
        Ok(last.map(|last| (entries, last)))
    }

    /// The work of log entry `seq`, decoded again from the log's bytes.
    fn work_of(&self, seq: u64, record: WalRecord) -> Work {
        match record {
            WalRecord::Instance { dicom } => {
                match accept::examine(&dicom, &self.limits, &self.engine(), |_| false) {
                    Ok(accept::Examined::Image(prepared)) => {
                        let (key, study) = work::in_flight_entry(&prepared.uids);
                        self.in_flight
                            .lock()
                            .expect("in-flight set poisoned")
                            .insert(key, study);
                        Work::Instance {
                            seq,
                            prepared,
                            backlog: None,
                        }
                    }
                    Ok(accept::Examined::NonImage | accept::Examined::Duplicate(_)) | Err(_) => {
                        Work::Skip { seq }
                    }
                }
            }
            WalRecord::Delete { target } => Work::Delete {
                seq,
                target,
                reply: None,
            },
        }
    }

    /// The work of the log entries with `after < seq < before`, read back from the log; with
    /// `count_pending`, each is counted as pending (entries nobody handed over).
    fn reread(
        &self,
        after: u64,
        before: u64,
        count_pending: bool,
    ) -> Result<Vec<Work>, StoreError> {
        let mut works = Vec::new();
        for entry in self.wal.replay_after(after) {
            let (seq, record) = entry?;
            if seq >= before {
                break;
            }
            works.push(self.work_of(seq, record));
        }
        if count_pending {
            self.counters
                .pending
                .fetch_add(works.len() as u64, Ordering::Relaxed);
        }
        Ok(works)
    }

    /// After a failure: drops every store record and catalog change since the last checkpoint,
    /// and returns that checkpoint's seq with the work of the log entries after it and before
    /// `next` (already counted as pending), to be applied again.
    fn roll_back(&self, next: u64) -> Result<(u64, Vec<Work>), ApplyError> {
        let checkpoint = self.catalog.checkpoint();
        self.catalog
            .roll_back()
            .map_err(ApplyError::catalog("rolling back"))?;
        let committed = usize::try_from(checkpoint.records).unwrap_or(usize::MAX);
        {
            let mut codes = self.codes.write().expect("code store lock poisoned");
            if codes.len() > committed {
                codes
                    .truncate(committed)
                    .map_err(ApplyError::store("truncating"))?;
            }
            if let Some(frames) = self.frames.lock().expect("frames lock poisoned").as_mut() {
                frames
                    .truncate_to_record(committed)
                    .map_err(ApplyError::store("truncating the kept frames of"))?;
            }
            let mut search = self.search.write().expect("search lock poisoned");
            if let Some(index) = search.index.as_mut() {
                // The projections stay valid; the dropped records are summarised again as they
                // are appended again.
                index.truncate(committed);
            }
        }
        // Only committed records are ever saved, so this changes nothing on disk unless the
        // file was written otherwise; it holds either way.
        let capped = self
            .search_file
            .lock()
            .expect("search file lock poisoned")
            .file
            .cap(committed);
        if let Err(error) = capped {
            tracing::warn!(%error, "capping the saved search projections to the rolled-back store failed");
        }
        let works = self
            .reread(checkpoint.applied_seq, next, false)
            .map_err(ApplyError::reread("the work after the last checkpoint"))?;
        Ok((checkpoint.applied_seq, works))
    }

    /// Whether new work is taken, and why not.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Starts building the search projections in the background once the store holds
    /// [`PROJECTIONS_FROM`] records (a smaller index is scanned fast enough without them, and
    /// fitting them while it grows would refit at every doubling). SERVING never waits for it.
    fn build_search_index_when_worth_it(self: &Arc<Self>, records: usize) {
        if records >= PROJECTIONS_FROM && !self.building.swap(true, Ordering::AcqRel) {
            let index = self.clone();
            let task = tokio::task::spawn_blocking(move || index.build_search_index());
            *self.build_task.lock().expect("build slot poisoned") = Some(task);
        }
    }

    /// Builds the search projections over every stored record, installs them and saves them;
    /// appends wait meanwhile (searches do not).
    fn build_search_index(&self) {
        let started = Instant::now();
        {
            let store = self.codes.read().expect("code store lock poisoned");
            let view = store.view();
            let built = SearchIndex::build(
                &self.serving().tables,
                view.positions(),
                view.normal(),
                view.abnormal(),
            );
            let records = built.len();
            self.search.write().expect("search lock poisoned").index = Some(built);
            tracing::info!(
                records,
                build_ms = started.elapsed().as_secs_f64() * 1e3,
                "search projections built"
            );
        }
        self.save_search_index(true);
    }

    /// The engine of the model the index serves now (another after a re-index switched).
    pub fn engine(&self) -> Arc<Engine> {
        self.serving().engine.clone()
    }

    /// The model the index serves now, whole: a search that holds it uses one model throughout.
    pub fn serving(&self) -> Arc<Serving> {
        self.serving
            .read()
            .expect("serving model lock poisoned")
            .clone()
    }

    /// Takes applied instances out of the in-flight set, once their records are committed.
    fn release(&self, keys: &[u64]) {
        let mut in_flight = self.in_flight.lock().expect("in-flight set poisoned");
        for key in keys {
            in_flight.remove(key);
        }
    }

    /// Arrivals per study and the announcements of received studies.
    pub fn tracker(&self) -> &Arc<StudyTracker> {
        &self.tracker
    }

    /// Whether every acknowledged instance of the study is applied (searchable).
    pub fn study_indexed(&self, study_instance_uid: &Uid) -> bool {
        !self
            .in_flight
            .lock()
            .expect("in-flight set poisoned")
            .values()
            .any(|s| s == study_instance_uid.as_str())
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Sequence number of the last durable write-ahead log entry (none in an empty log).
    pub fn log_position(&self) -> Option<u64> {
        self.wal.last_seq()
    }

    /// Records in the store (deleted ones included) and live records.
    pub fn record_counts(&self) -> (usize, usize) {
        let codes = self.codes.read().expect("code store lock poisoned");
        (codes.len(), codes.live_len())
    }

    /// Bytes of the stored codes and of the catalog on disk.
    pub fn disk_bytes(&self) -> (u64, u64) {
        (
            folder_bytes(&self.dir.join("codes")),
            folder_bytes(&self.dir.join("catalog")),
        )
    }

    /// The store's code of one record: (normal, abnormal) indices.
    pub fn codes_of(&self, record: RecordId) -> Option<(Vec<u8>, Vec<u8>)> {
        let codes = self.codes.read().expect("code store lock poisoned");
        let view = codes.view();
        let i = record as usize;
        if i >= view.len() || view.records()[i].is_deleted() {
            return None;
        }
        Some((
            view.normal_code(record).to_vec(),
            view.abnormal_code(record).to_vec(),
        ))
    }
}

/// The stamp a model's codes carry in the code store.
fn stamp_of(engine: &Engine) -> ModelStamp {
    let manifest = engine.manifest();
    ModelStamp {
        model_id: manifest.model_id.clone(),
        positions: manifest.grid.rows * manifest.grid.cols,
        codebook_size: manifest.codebook_size,
    }
}

/// The kept frames in `<data_dir>/frames/` with `keep_frames`, cut back to the code store's
/// `records`; without it, a folder left from when it was on is removed (its rows would no longer
/// follow the records).
fn open_frames(
    data_dir: &Path,
    engine: &Engine,
    keep_frames: bool,
    records: usize,
) -> Result<Option<FrameStore>, IndexError> {
    let dir = data_dir.join("frames");
    if !keep_frames {
        if dir.exists() {
            tracing::warn!(path = %dir.display(), "[index] keep_frames is off: the kept frames are removed");
            std::fs::remove_dir_all(&dir).map_err(|e| StoreError::io("remove", &dir, e))?;
        }
        return Ok(None);
    }
    let mut frames = FrameStore::open(&dir, engine.manifest().preprocess, records)?;
    if frames.end_record() > records {
        frames.truncate_to_record(records)?;
    }
    if frames.first_record() > 0 && frames.end_record() == records {
        tracing::info!(
            without = frames.first_record(),
            "records indexed before [index] keep_frames was on have no kept frame; a re-index fetches them from the archive"
        );
    }
    Ok(Some(frames))
}

/// The saved search projections of a store whose codes `view` holds, extended to every record
/// in it (as [`SearchIndex::extend`] does); `None`, with a warning, when the file is missing or
/// not usable.
fn load_search_index(
    file: &mut PersistedIndex,
    tables: &DistanceTables,
    view: &crate::store::CodesView<'_>,
    deleted: &RecordSet,
) -> Option<SearchIndex> {
    let started = Instant::now();
    match file.load(view.normal(), view.abnormal(), deleted) {
        Ok(Some(mut index)) => {
            let saved = index.len();
            index.extend(tables, view.normal(), view.abnormal());
            tracing::info!(
                records = index.len(),
                saved,
                load_ms = started.elapsed().as_secs_f64() * 1e3,
                "search projections read back"
            );
            Some(index)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "the saved search projections are ignored; they are fitted again in the background");
            None
        }
    }
}

/// Total size of the files in a folder and its subfolders, 0 when absent.
pub fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => folder_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
