//! The audit trail: a security record of who saw or changed which patient's data, separate from
//! the logs (which never name patients), in the spirit of DICOM PS3.15 Annex A.5 / IHE ATNA.
//!
//! | module | what it is for |
//! |---|---|
//! | [`event`] | [`AuditEvent`]: time, event type, outcome, who, where, what — one per Search, Watch answer, DICOM association, Ingest, Delete, configuration change, refused credential |
//! | [`file`] | the JSON-lines file, rotated by size |
//! | [`syslog`] | RFC 5424 over TCP or TLS, octet-counted, to the hospital's audit repository |
//! | [`config`] | the `[audit]` section |
//!
//! Handlers call [`Audit::record`], which never waits: events go into a bounded queue read by
//! one writer thread (the file, then the syslog task's own bounded queue). When a queue is full
//! the event is dropped, counted, and an error is logged — with the event type and the count,
//! never the event's content.

pub mod config;
pub mod event;
pub mod file;
pub mod syslog;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;
use tokio::sync::mpsc;

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
    events: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
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
        let writer = Writer {
            file,
            syslog,
            hostname: syslog::hostname(),
            dropped: dropped.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".to_string())
            .spawn(move || writer.run(receiver))
            .map_err(|e| AuditError::Config(format!("cannot start the audit writer: {e}")))?;
        tracing::info!(path = %path.display(), max_bytes = config.max_bytes, keep = config.keep, "audit trail on");
        Ok(Audit {
            inner: Some(Arc::new(Inner { events, dropped })),
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
        if inner.events.try_send(event).is_err() {
            report_drop(
                &inner.dropped,
                kind,
                "the audit queue is full or its writer stopped",
            );
        }
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
    syslog: Option<mpsc::Sender<String>>,
    hostname: String,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, mut events: mpsc::Receiver<AuditEvent>) {
        let pid = std::process::id();
        let mut failing = false;
        while let Some(first) = events.blocking_recv() {
            let mut next = Some(first);
            // Everything queued is written, then synced once.
            while let Some(event) = next {
                let json = match serde_json::to_string(&event) {
                    Ok(json) => json,
                    Err(error) => {
                        tracing::error!(event = event.kind(), %error, "an audit event cannot be serialized (a bug)");
                        next = events.try_recv().ok();
                        continue;
                    }
                };
                if let Err(error) = self.file.write_line(&json) {
                    report_drop(
                        &self.dropped,
                        event.kind(),
                        "the audit file cannot be written",
                    );
                    if !failing {
                        tracing::error!(path = %self.file.path().display(), %error, "cannot write the audit file");
                        failing = true;
                    }
                } else {
                    failing = false;
                }
                if let Some(syslog) = &self.syslog {
                    let message = syslog::message(&event, &json, &self.hostname, pid);
                    if syslog.try_send(message).is_err() {
                        report_drop(
                            &self.dropped,
                            event.kind(),
                            "the audit syslog queue is full",
                        );
                    }
                }
                next = events.try_recv().ok();
            }
            if let Err(error) = self.file.sync() {
                tracing::error!(path = %self.file.path().display(), %error, "cannot sync the audit file");
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
            })),
        };
        for i in 0..5 {
            audit.record(event(i));
        }
        assert_eq!(audit.dropped(), 3);
    }
}
