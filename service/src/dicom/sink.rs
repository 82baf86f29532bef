//! A received C-STORE handed to the index: the DICOM status follows from the index's outcome,
//! and success is only answered once the instance is durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use diptych_dicom_adapter::scp::{
    AssociationEnd, AssociationReport, ReceivedInstance, RefusedConnection, StoreOutcome, StoreSink,
};

use crate::audit::{Audit, AuditEvent, Outcome, What, Who};

use crate::index::{AcceptOutcome, Index, Refusal};

/// The [`StoreSink`] of `diptych serve`: every instance goes through [`Index::accept`]; each
/// association's end is an `association` event of the audit trail.
pub struct IndexSink {
    index: Arc<Index>,
    audit: Audit,
}

impl IndexSink {
    /// A sink feeding `index`.
    pub fn new(index: Arc<Index>) -> Self {
        IndexSink {
            index,
            audit: Audit::disabled(),
        }
    }

    /// The sink, recording associations in `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }
}

/// The audit event of an association that ended.
pub fn association_event(report: AssociationReport) -> AuditEvent {
    let (outcome, end, reason) = match report.end {
        AssociationEnd::Released => (Outcome::Success, "released".to_string(), None),
        AssociationEnd::Closed => (Outcome::Success, "closed".to_string(), None),
        AssociationEnd::AbortedByPeer => (Outcome::Failure, "aborted_by_peer".to_string(), None),
        AssociationEnd::Aborted(why) => (Outcome::Failure, "aborted".to_string(), Some(why)),
        AssociationEnd::Rejected(why) => (Outcome::Failure, "rejected".to_string(), Some(why)),
    };
    let what = What::Association {
        instances_received: report.instances_received,
        statuses: report
            .statuses
            .iter()
            .map(|(code, count)| (format!("{code:#06X}").replace("0X", "0x"), *count))
            .collect(),
        duration_ms: report.duration.as_millis() as u64,
        end,
    };
    let event = AuditEvent::now(
        outcome,
        Who::dicom(&report.calling_ae, &report.called_ae),
        Some(report.peer.to_string()),
        what,
    );
    match reason {
        Some(reason) => event.with_reason(reason),
        None => event,
    }
}

/// The audit event of a connection dropped in the TLS handshake of the DICOM-TLS port.
pub fn refused_connection_event(report: RefusedConnection) -> AuditEvent {
    let what = What::ConnectionRefused {
        listener: "dicom-tls".to_string(),
        listener_addr: report.listener.to_string(),
    };
    AuditEvent::now(
        Outcome::Failure,
        Who::default(),
        Some(report.peer.to_string()),
        what,
    )
    .with_reason(report.reason)
}

impl StoreSink for IndexSink {
    fn store(
        &self,
        instance: ReceivedInstance,
    ) -> Pin<Box<dyn Future<Output = StoreOutcome> + Send + '_>> {
        Box::pin(async move {
            match self
                .index
                .accept_parsed(instance.part10, instance.parsed)
                .await
            {
                Err(error) => StoreOutcome::OutOfResources(error.to_string()),
                Ok(AcceptOutcome::Accepted { .. } | AcceptOutcome::Duplicate { .. }) => {
                    StoreOutcome::Stored
                }
                Ok(AcceptOutcome::NonImage) => StoreOutcome::NonImage,
                Ok(AcceptOutcome::Refused { refusal, .. }) => match refusal {
                    Refusal::CannotUnderstand(m) => StoreOutcome::CannotUnderstand(m),
                    Refusal::OutOfResources(m) | Refusal::DiskFull(m) | Refusal::Unavailable(m) => {
                        StoreOutcome::OutOfResources(m)
                    }
                },
            }
        })
    }

    fn association_ended(&self, report: AssociationReport) {
        self.audit.record(association_event(report));
    }

    fn connection_refused(&self, report: RefusedConnection) {
        self.audit.record(refused_connection_event(report));
    }
}
