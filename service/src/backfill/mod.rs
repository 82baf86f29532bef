//! Backfill (issue #13): index the studies an archive already holds. A hospital's PACS holds
//! years of studies nobody will send again by hand; a backfill job asks it what it holds
//! (C-FIND, Study Root, study level — or QIDO-RS for a DICOMweb archive — narrowed by date
//! range, modality and description) and pulls each study not yet indexed — by C-GET on the same
//! association, by C-MOVE to this server's own AE title, or by WADO-RS — every instance through
//! the C-STORE path ([`crate::dicom::IndexSink`]), counted as pulled only once durable.
//!
//! A job is resumable (its position is durable: [`position`]), idempotent (a study the index
//! already holds is skipped, and an instance pulled twice is dropped by the index as a
//! duplicate), and polite ([`spec::Pace`]: studies at once, studies per minute, an off-hours
//! window). One job runs at a time; [`Backfills`] starts it or lets a caller follow it.
//!
//! | module | what it is for |
//! |---|---|
//! | [`spec`] | [`JobSpec`] (archive, query, method) and [`Pace`], checked on the way in |
//! | [`position`] | `<data>/backfill/`: the job and its finished studies, durable |
//! | [`job`] | the run: ask or resume, pull each study, record it, publish [`Progress`] |
//! | [`web`] | the DICOMweb side: QIDO-RS search, WADO-RS retrieve into the C-STORE path |
//! | [`progress`] | [`Progress`]: counts, state, failures |

pub mod job;
pub mod position;
pub mod progress;
pub mod spec;
pub mod web;

use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::watch;

pub use job::JobContext;
pub use progress::{Failure, Progress, State};
pub use spec::{Archive, JobSpec, Method, Pace, Source, SpecError, WebArchive};

/// The backfill jobs of one server: at most one runs.
#[derive(Debug)]
pub struct Backfills {
    running: Mutex<Option<(JobSpec, watch::Receiver<Progress>)>>,
    stop: watch::Receiver<bool>,
}

/// Why a job cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another job runs.
    #[error(
        "a backfill from {0} is running; wait for it to end (or follow it with the same request) before starting another"
    )]
    Busy(String),
}

impl Backfills {
    /// No job yet; jobs stop when `stop` turns true (server shutdown).
    pub fn new(stop: watch::Receiver<bool>) -> Backfills {
        Backfills {
            running: Mutex::new(None),
            stop,
        }
    }

    /// Starts the job `spec` (resuming it when the data folder holds it unfinished), or follows
    /// it when it is the one running; returns its progress.
    pub fn start_or_follow(
        &self,
        context: JobContext,
        spec: JobSpec,
        pace: Pace,
    ) -> Result<watch::Receiver<Progress>, StartError> {
        let mut running = self.running.lock().expect("backfill lock poisoned");
        if let Some((current, progress)) = running.as_ref()
            && !progress.borrow().state.is_final()
        {
            if *current == spec {
                return Ok(progress.clone());
            }
            return Err(StartError::Busy(current.archive.to_string()));
        }
        let (sender, receiver) = watch::channel(Progress::default());
        *running = Some((spec.clone(), receiver.clone()));
        tokio::spawn(job::run(context, spec, pace, sender, self.stop.clone()));
        Ok(receiver)
    }

    /// The data folder's backfill folder.
    pub fn folder(data_dir: &std::path::Path) -> PathBuf {
        position::folder(data_dir)
    }
}
