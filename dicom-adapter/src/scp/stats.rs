//! [`ScpStats`]: what the listener has done, counted as it happens — associations open, accepted
//! and rejected, and every DIMSE response sent by service and status — for a caller to read at
//! any time (the service's `/metrics`). Counts only: no AE titles, addresses or UIDs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::dimse::command_field;

/// The DIMSE service of a response the listener sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DimseService {
    /// C-ECHO (verification).
    CEcho,
    /// C-STORE (storage).
    CStore,
    /// Any other request, answered 0x0211 (unrecognized operation).
    Other,
}

impl DimseService {
    /// The service a request's Command Field names.
    pub(crate) fn of_request(field: u16) -> Self {
        match field {
            command_field::C_ECHO_RQ => DimseService::CEcho,
            command_field::C_STORE_RQ => DimseService::CStore,
            _ => DimseService::Other,
        }
    }

    /// `C-ECHO`, `C-STORE` or `other`.
    pub fn name(self) -> &'static str {
        match self {
            DimseService::CEcho => "C-ECHO",
            DimseService::CStore => "C-STORE",
            DimseService::Other => "other",
        }
    }
}

/// How many responses of one service with one status were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCount {
    /// The service answered.
    pub service: DimseService,
    /// The DIMSE status sent, e.g. 0x0000, 0xA700, 0xC000.
    pub status: u16,
    /// Responses sent with it.
    pub count: u64,
}

/// Counters of one listener, shared by its associations; see [`super::Scp::stats`].
#[derive(Debug, Default)]
pub struct ScpStats {
    open: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    handshake_failures: AtomicU64,
    responses: Mutex<BTreeMap<(DimseService, u16), u64>>,
}

impl ScpStats {
    /// Associations established and not yet ended.
    pub fn associations_open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Associations accepted since the listener started.
    pub fn associations_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Association requests rejected (wrong called AE, caller not allowed, nothing acceptable
    /// proposed, or busy) since the listener started.
    pub fn associations_rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed or timed out on the TLS listener since it started.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    /// Responses sent, per service and status, in that order.
    pub fn responses(&self) -> Vec<ResponseCount> {
        self.responses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(&(service, status), &count)| ResponseCount {
                service,
                status,
                count,
            })
            .collect()
    }

    /// Responses of `service` sent with `status`.
    pub fn responses_with(&self, service: DimseService, status: u16) -> u64 {
        self.responses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(service, status))
            .copied()
            .unwrap_or(0)
    }

    /// An association was accepted: open until the guard drops.
    pub(crate) fn opened(self: &Arc<Self>) -> OpenAssociation {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenAssociation {
            stats: Arc::clone(self),
        }
    }

    /// An association request was rejected.
    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake failed.
    pub(crate) fn handshake_failed(&self) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A response was sent.
    pub(crate) fn responded(&self, service: DimseService, status: u16) {
        *self
            .responses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((service, status))
            .or_default() += 1;
    }
}

/// Counts an association as open while it lives.
#[derive(Debug)]
pub(crate) struct OpenAssociation {
    stats: Arc<ScpStats>,
}

impl Drop for OpenAssociation {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associations_are_open_while_their_guard_lives_and_responses_count_by_status() {
        let stats = Arc::new(ScpStats::default());
        let a = stats.opened();
        let b = stats.opened();
        stats.rejected();
        assert_eq!(stats.associations_open(), 2);
        drop(a);
        assert_eq!(stats.associations_open(), 1);
        drop(b);
        assert_eq!(
            (
                stats.associations_open(),
                stats.associations_accepted(),
                stats.associations_rejected()
            ),
            (0, 2, 1)
        );
        stats.responded(DimseService::CStore, 0x0000);
        stats.responded(DimseService::CStore, 0x0000);
        stats.responded(DimseService::CStore, 0xC000);
        stats.responded(DimseService::of_request(command_field::C_ECHO_RQ), 0x0000);
        assert_eq!(stats.responses_with(DimseService::CStore, 0x0000), 2);
        assert_eq!(stats.responses_with(DimseService::CStore, 0xA700), 0);
        assert_eq!(
            stats.responses(),
            vec![
                ResponseCount {
                    service: DimseService::CEcho,
                    status: 0,
                    count: 1
                },
                ResponseCount {
                    service: DimseService::CStore,
                    status: 0,
                    count: 2
                },
                ResponseCount {
                    service: DimseService::CStore,
                    status: 0xC000,
                    count: 1
                },
            ]
        );
    }
}
