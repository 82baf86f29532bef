//! Where a backfill job stands, as the job publishes it (the gRPC stream and the terminal's
//! progress bar read it; no protobuf here).

use std::time::Duration;

/// The job's phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    #[default]
    Starting,
    /// Asking the archive what it holds.
    Querying,
    /// Pulling studies.
    Fetching,
    /// Outside the off-hours window: waiting for it to open.
    Waiting,
    /// Every study was tried.
    Done,
    /// Stopped before the end (the server stops, or the archive cannot be asked); resumable.
    Stopped,
}

impl State {
    /// The word of the API.
    pub fn name(self) -> &'static str {
        match self {
            State::Starting | State::Querying => "querying",
            State::Fetching => "fetching",
            State::Waiting => "waiting",
            State::Done => "done",
            State::Stopped => "stopped",
        }
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, State::Done | State::Stopped)
    }
}

/// A study that could not be pulled completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its Study Instance UID.
    pub study_instance_uid: String,
    /// Why.
    pub reason: String,
}

/// The counts and state of a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Phase.
    pub state: State,
    /// Studies the archive matched.
    pub studies_total: u32,
    /// Studies pulled and indexed.
    pub studies_indexed: u32,
    /// Studies already indexed here.
    pub studies_skipped: u32,
    /// Studies that failed in this run.
    pub studies_failed: u32,
    /// Instances made durable in this run.
    pub instances_stored: u64,
    /// Studies finished before this run (resumed job).
    pub resumed_studies: u32,
    /// Since this run started.
    pub elapsed: Duration,
    /// What failed and why.
    pub failures: Vec<Failure>,
    /// A line for the operator.
    pub message: String,
}

impl Progress {
    /// Studies finished, whatever the outcome.
    pub fn studies_done(&self) -> u32 {
        self.studies_indexed + self.studies_skipped + self.studies_failed
    }

    /// Ends the job in `state` with `message`.
    pub fn end(&mut self, state: State, message: String) {
        self.state = state;
        self.message = message;
    }

    /// One line: what was done.
    pub fn summary(&self) -> String {
        format!(
            "{} studies matched: {} indexed ({} instances), {} already indexed, {} failed{}",
            self.studies_total,
            self.studies_indexed,
            self.instances_stored,
            self.studies_skipped,
            self.studies_failed,
            if self.resumed_studies > 0 {
                format!(" ({} finished before this run)", self.resumed_studies)
            } else {
                String::new()
            }
        )
    }
}
