//! The `[audit]` section of the configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the audit trail goes (see [`super`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Whether events are recorded at all.
    pub enabled: bool,
    /// The JSON-lines file; default `<data_dir>/audit/audit.jsonl`.
    pub path: Option<PathBuf>,
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` … `.N`); older ones are removed.
    pub keep: u32,
    /// Events waiting for the writer; beyond it, events nobody waits for are dropped, counted
    /// and reported in the log.
    pub queue_capacity: usize,
    /// Calls that answer with patient data wait until their event is synced to the disk, not
    /// only written to the operating system (which survives a killed process, not a power cut).
    pub sync_before_answer: bool,
    /// The longest a call that answers with patient data waits for its event to be written;
    /// past it the answer goes out and the lapse is logged.
    pub answer_wait_s: f64,
    /// `host:port` of a syslog receiver (the hospital's audit repository): RFC 5424 over TCP,
    /// octet-counted.
    pub syslog_addr: Option<String>,
    /// A PEM file of CA certificates: syslog goes over TLS, the receiver verified against it.
    pub syslog_tls_ca: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            max_bytes: 64 << 20,
            keep: 10,
            queue_capacity: 4096,
            sync_before_answer: false,
            answer_wait_s: 2.0,
            syslog_addr: None,
            syslog_tls_ca: None,
        }
    }
}

impl AuditConfig {
    /// The audit file's path for the data folder `data_dir`.
    pub fn file_path(&self, data_dir: &Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| data_dir.join("audit").join("audit.jsonl"))
    }

    /// Why the section cannot be used, naming the key; None when it can.
    pub fn problem(&self) -> Option<String> {
        if self.max_bytes < 1024 {
            return Some(format!(
                "audit.max_bytes = {} is too small; use at least 1024 (default 67108864)",
                self.max_bytes
            ));
        }
        if self.queue_capacity == 0 {
            return Some("audit.queue_capacity must be at least 1 (default 4096)".to_string());
        }
        if !(self.answer_wait_s.is_finite() && self.answer_wait_s > 0.0) {
            return Some(format!(
                "audit.answer_wait_s = {} must be a positive number of seconds (default 2)",
                self.answer_wait_s
            ));
        }
        if self.syslog_tls_ca.is_some() && self.syslog_addr.is_none() {
            return Some(
                "audit.syslog_tls_ca is set without audit.syslog_addr; set the receiver's HOST:PORT"
                    .to_string(),
            );
        }
        None
    }
}
