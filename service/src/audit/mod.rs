//! The audit trail: a security record of who saw or changed which patient's data, separate from
//! the logs (which never name patients), in the spirit of DICOM PS3.15 Annex A.5 / IHE ATNA.
//!
//! | module | what it is for |
//! |---|---|
//! | [`event`] | [`AuditEvent`]: time, event type, outcome, who, where, what — one per Search, Watch answer, KOS sent, Encode/Decompose, Info call, DICOM association, Ingest, Delete, configuration change, refused credential or connection |
//! | [`file`] | the JSON-lines file, rotated by size |
//! | [`syncer`] | the file's fsync, off the writer thread |
//! | [`syslog`] | RFC 5424 over TCP or TLS, octet-counted, to the hospital's audit repository |
//! | [`config`] | the `[audit]` section |
//!
//! Events go into a bounded queue read by one writer thread (the file, then the syslog task's
//! own bounded queue). [`Audit::record`] never waits: when the queue is full the event is
//! dropped, counted, and an error is logged — with the event type and the count, never the
//! event's content. Calls that answer with patient data use [`Audit::confirm`] instead: it
//! waits (at most `answer_wait_s`) until the writer has handed the event to the operating
//! system (or, with `sync_before_answer`, to the disk), so that a process killed right after
//! an answer has still recorded it. [`Audit::drain`] at shutdown waits until everything queued
//! is written and synced.

pub mod config;
pub mod event;
pub mod file;
pub mod syncer;
pub mod syslog;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

pub use config::AuditConfig;
pub use event::{AuditEvent, Disclosed, Outcome, What, Who};

/// Why the audit trail could not start.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The audit file cannot be opened.
    #[error(
        "cannot open the audit file {path}: {source}; fix [audit] path or the data folder's permissions"
    )]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A setting of `[audit]` is unusable.
    #[error("{0}")]
    Config(String),
}

/// The handle handlers record events with; cheap to clone. The default records nothing.
#[derive(Clone, Default)]
pub struct Audit {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    events: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
    /// How long [`Audit::confirm`] waits for the writer.
    answer_wait: Duration,
}

/// What the writer thread receives.
enum Message {
    /// An event nobody waits for.
    Event(AuditEvent),
    /// An event whose caller waits until it is written (and synced, with `sync_before_answer`).
    Confirmed {
        event: AuditEvent,
        written: oneshot::Sender<()>,
    },
    /// Everything before it written and synced: answered once it is.
    Drain(oneshot::Sender<()>),
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.inner.is_some())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Audit {
    /// A handle that records nothing (`[audit] enabled = false`).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the writer thread (and the syslog task, which needs a tokio runtime, when
    /// `syslog_addr` is set) for `config`, the file under `data_dir` unless `path` says where.
    pub fn start(config: &AuditConfig, data_dir: &Path) -> Result<Audit, AuditError> {
        if !config.enabled {
            return Ok(Self::disabled());
        }
        if let Some(problem) = config.problem() {
            return Err(AuditError::Config(problem));
        }
        let path = config.file_path(data_dir);
        let file =
            file::RotatingFile::open(&path, config.max_bytes, config.keep).map_err(|source| {
                AuditError::File {
                    path: path.clone(),
                    source,
                }
            })?;
        let dropped = Arc::new(AtomicU64::new(0));
        let syslog = match &config.syslog_addr {
            None => None,
            Some(addr) => {
                let target = syslog::SyslogTarget::new(addr, config.syslog_tls_ca.as_deref())?;
                let (tx, rx) = mpsc::channel(config.queue_capacity);
                tracing::info!(addr = %addr, tls = target.is_tls(), "audit events also go to syslog");
                tokio::spawn(syslog::run(target, rx));
                Some(tx)
            }
        };
        let (events, receiver) = mpsc::channel(config.queue_capacity);
        let start_error = |e: std::io::Error| AuditError::File {
            path: path.clone(),
            source: e,
        };
        let syncer =
            syncer::Syncer::start(file.handle().map_err(start_error)?).map_err(start_error)?;
        let writer = Writer {
            rotations: file.rotations(),
            syncer,
            file,
            syslog,
            hostname: syslog::hostname(),
            dropped: dropped.clone(),
            sync_before_answer: config.sync_before_answer,
        };
        std::thread::Builder::new()
            .name("audit-writer".to_string())
            .spawn(move || writer.run(receiver))
            .map_err(|e| AuditError::Config(format!("cannot start the audit writer: {e}")))?;
        tracing::info!(path = %path.display(), max_bytes = config.max_bytes, keep = config.keep, "audit trail on");
        Ok(Audit {
            inner: Some(Arc::new(Inner {
                events,
                dropped,
                answer_wait: Duration::from_secs_f64(config.answer_wait_s),
            })),
        })
    }

    /// Whether events are recorded.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `event` for the trail without waiting; a full queue drops it (counted, logged).
    pub fn record(&self, event: AuditEvent) {
        let Some(inner) = &self.inner else { return };
        let kind = event.kind();
        if inner.events.try_send(Message::Event(event)).is_err() {
            report_drop(
                &inner.dropped,
                kind,
                "the audit queue is full or its writer stopped",
            );
        }
    }

    /// Records `event` and waits until the writer has written it (to the operating system, or
    /// to the disk with `sync_before_answer`), for at most `answer_wait_s` in all: call it
    /// before answering with patient data. A full queue is waited on, not dropped from; when
    /// the wait runs out the event stays queued and the lapse is logged (without the content).
    pub async fn confirm(&self, event: AuditEvent) {
        let Some(inner) = &self.inner else { return };
        let kind = event.kind();
        let (written, confirmed) = oneshot::channel();
        let waited = tokio::time::timeout(inner.answer_wait, async {
            inner
                .events
                .send(Message::Confirmed { event, written })
                .await
                .map_err(|_| "the audit writer stopped")?;
            confirmed
                .await
                .map_err(|_| "the audit writer stopped before writing it")
        })
        .await;
        let why = match waited {
            Ok(Ok(())) => return,
            Ok(Err(why)) => why,
            Err(_) => "the audit writer did not confirm within audit.answer_wait_s",
        };
        tracing::error!(
            event = kind,
            reason = why,
            "an answer went out before its audit event was confirmed written; check the audit disk"
        );
    }

    /// Waits (at most `limit`) until every event queued so far is written and synced; for
    /// shutdown. Returns whether it was.
    pub async fn drain(&self, limit: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let (done, drained) = oneshot::channel();
        tokio::time::timeout(limit, async {
            inner.events.send(Message::Drain(done)).await.is_ok() && drained.await.is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Events dropped so far (queue full, writer stopped, syslog queue full).
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }
}

/// Counts a dropped event and says so in the log: the first, then at every power of two and
/// every thousand.
fn report_drop(dropped: &AtomicU64, kind: &str, why: &str) {
    let total = dropped.fetch_add(1, Ordering::Relaxed) + 1;
    if total.is_power_of_two() || total.is_multiple_of(1000) {
        tracing::error!(
            event = kind,
            dropped_total = total,
            reason = why,
            "AUDIT EVENTS LOST: the audit trail is incomplete; check the disk and the syslog receiver"
        );
    }
}

/// The writer thread: the file, then the syslog queue.
struct Writer {
    file: file::RotatingFile,
    /// Syncs the file after each batch when nobody waits for it.
    syncer: syncer::Syncer,
    /// The file's rotations the syncer knows of.
    rotations: u64,
    syslog: Option<mpsc::Sender<String>>,
    hostname: String,
    dropped: Arc<AtomicU64>,
    /// Confirmations wait for the sync (else they go once the lines are written).
    sync_before_answer: bool,
}

impl Writer {
    fn run(mut self, mut messages: mpsc::Receiver<Message>) {
        let pid = std::process::id();
        let mut failing = false;
        while let Some(first) = messages.blocking_recv() {
            let mut next = Some(first);
            // Confirmed once written, and once synced (here, not by the sync thread).
            let (mut written, mut synced) = (Vec::new(), Vec::new());
            // Everything queued is written, then synced once: by the sync thread, unless someone
            // waits for the sync.
            while let Some(message) = next {
                next = messages.try_recv().ok();
                let event = match message {
                    Message::Event(event) => event,
                    Message::Confirmed {
                        event,
                        written: ack,
                    } => {
                        if self.sync_before_answer {
                            synced.push(ack);
                        } else {
                            written.push(ack);
                        }
                        event
                    }
                    Message::Drain(ack) => {
                        synced.push(ack);
                        continue;
                    }
                };
                self.write(&event, pid, &mut failing);
            }
            for ack in written {
                let _ = ack.send(());
            }
            if self.file.rotations() != self.rotations {
                match self.file.handle() {
                    Ok(handle) => self.syncer.replace(handle),
                    Err(error) => {
                        tracing::error!(%error, "cannot hand the rotated audit file to the sync thread")
                    }
                }
                self.rotations = self.file.rotations();
            }
            if synced.is_empty() {
                self.syncer.request();
                continue;
            }
            if let Err(error) = self.file.sync() {
                tracing::error!(path = %self.file.path().display(), %error, "cannot sync the audit file");
            }
            for ack in synced {
                let _ = ack.send(());
            }
        }
    }

    /// Appends `event` to the file (unbuffered: the operating system has it once this
    /// returns) and queues it for syslog.
    fn write(&mut self, event: &AuditEvent, pid: u32, failing: &mut bool) {
        let json = match serde_json::to_string(event) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(event = event.kind(), %error, "an audit event cannot be serialized (a bug)");
                return;
            }
        };
        if let Err(error) = self.file.write_line(&json) {
            report_drop(
                &self.dropped,
                event.kind(),
                "the audit file cannot be written",
            );
            if !*failing {
                tracing::error!(path = %self.file.path().display(), %error, "cannot write the audit file");
                *failing = true;
            }
        } else {
            *failing = false;
        }
        if let Some(syslog) = &self.syslog {
            let message = syslog::message(event, &json, &self.hostname, pid);
            if syslog.try_send(message).is_err() {
                report_drop(
                    &self.dropped,
                    event.kind(),
                    "the audit syslog queue is full",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> AuditEvent {
        AuditEvent::now(
            Outcome::Success,
            Who::default(),
            None,
            What::Delete {
                level: "study".to_string(),
                identifier: format!("1.2.{i}"),
                records: i,
                instances: 1,
            },
        )
    }

    #[test]
    fn events_reach_the_file_and_a_disabled_trail_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::start(&AuditConfig::default(), dir.path()).unwrap();
        for i in 0..5 {
            audit.record(event(i));
        }
        let path = dir.path().join("audit/audit.jsonl");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 5 || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let identifiers: Vec<String> = lines
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["what"]["identifier"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(identifiers, ["1.2.0", "1.2.1", "1.2.2", "1.2.3", "1.2.4"]);
        assert_eq!(audit.dropped(), 0);

        let off = AuditConfig {
            enabled: false,
            ..AuditConfig::default()
        };
        let other = tempfile::tempdir().unwrap();
        let audit = Audit::start(&off, other.path()).unwrap();
        audit.record(event(1));
        assert!(!audit.is_enabled());
        assert!(!other.path().join("audit").exists());
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (events, _receiver) = mpsc::channel(2);
        let audit = Audit {
            inner: Some(Arc::new(Inner {
                events,
                dropped: Arc::new(AtomicU64::new(0)),
                answer_wait: Duration::from_secs(1),
            })),
        };
        for i in 0..5 {
            audit.record(event(i));
        }
        assert_eq!(audit.dropped(), 3);
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_confirmed_event_is_in_the_file_when_confirm_returns() {
        for sync_before_answer in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let config = AuditConfig {
                sync_before_answer,
                ..AuditConfig::default()
            };
            let audit = Audit::start(&config, dir.path()).unwrap();
            let path = dir.path().join("audit/audit.jsonl");
            for i in 0..100 {
                audit.confirm(event(i)).await;
                assert_eq!(
                    lines(&path),
                    i as usize + 1,
                    "event {i} written before confirm returned"
                );
            }
            // What one confirmed event costs the call that waits for it.
            let n = 2000;
            let started = std::time::Instant::now();
            for i in 0..n {
                audit.confirm(event(i)).await;
            }
            let each = started.elapsed() / n as u32;
            eprintln!("confirm, sync_before_answer = {sync_before_answer}: {each:?} per event");
            assert_eq!(lines(&path), 100 + n as usize);
            assert_eq!(audit.dropped(), 0);
        }
    }

    #[tokio::test]
    async fn drain_waits_for_every_queued_event_and_confirm_gives_up_on_a_stuck_writer() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::start(&AuditConfig::default(), dir.path()).unwrap();
        for i in 0..500 {
            audit.record(event(i));
        }
        assert!(audit.drain(Duration::from_secs(10)).await);
        assert_eq!(lines(&dir.path().join("audit/audit.jsonl")), 500);

        // A writer that never reads: confirm waits answer_wait, then lets the answer go.
        let (events, _receiver) = mpsc::channel(8);
        let stuck = Audit {
            inner: Some(Arc::new(Inner {
                events,
                dropped: Arc::new(AtomicU64::new(0)),
                answer_wait: Duration::from_millis(200),
            })),
        };
        let started = std::time::Instant::now();
        stuck.confirm(event(1)).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        assert!(!stuck.drain(Duration::from_millis(100)).await);
    }
}
