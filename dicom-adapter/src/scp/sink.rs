//! The sink: where the listener hands every received instance, and what it answers.
//!
//! The listener checks an instance (it parses, its UIDs follow the rule of [`crate::uid`] and
//! match the command, its declared lengths hold) before it calls the sink; the sink makes it durable and says how it went. The DICOM
//! status sent back to the peer follows from [`StoreOutcome`] alone, so a sink never speaks
//! DICOM.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

/// Receives the instances of C-STORE requests, one call per instance.
pub trait StoreSink: Send + Sync + 'static {
    /// Called once per received C-STORE after the data set matched the command; returns only
    /// when the instance is durable (or refused).
    fn store(
        &self,
        instance: ReceivedInstance,
    ) -> Pin<Box<dyn Future<Output = StoreOutcome> + Send + '_>>;

    /// Called once when an association ends (released, aborted, timed out, rejected), with what
    /// happened on it: for an audit trail. Must not block; the default does nothing.
    fn association_ended(&self, report: AssociationReport) {
        let _ = report;
    }

    /// Called when a connection is dropped before any association: a failed or timed-out TLS
    /// handshake on the TLS listener (a bad client certificate, plain DICOM sent to the TLS
    /// port). For an audit trail; must not block; the default does nothing.
    fn connection_refused(&self, report: RefusedConnection) {
        let _ = report;
    }
}

/// A connection dropped before any association, handed to [`StoreSink::connection_refused`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedConnection {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The address of the listener it reached.
    pub listener: SocketAddr,
    /// Why it was dropped, e.g. `TLS handshake failed: ...` (no patient data: none was read).
    pub reason: String,
}

/// What happened on one association, handed to [`StoreSink::association_ended`] when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationReport {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The calling AE title (trimmed); empty when no A-ASSOCIATE-RQ was read.
    pub calling_ae: String,
    /// The called AE title (trimmed); empty when no A-ASSOCIATE-RQ was read.
    pub called_ae: String,
    /// C-STORE requests answered (stored or refused).
    pub instances_received: u32,
    /// The DIMSE statuses sent back for C-STORE requests, by status code, with their counts.
    pub statuses: BTreeMap<u16, u32>,
    /// From the connection's acceptance to the end of the association.
    pub duration: Duration,
    /// How it ended.
    pub end: AssociationEnd,
}

/// How an association ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociationEnd {
    /// The peer released it (A-RELEASE).
    Released,
    /// The peer aborted it (A-ABORT from the peer).
    AbortedByPeer,
    /// The connection closed without a release.
    Closed,
    /// The listener aborted it or gave up on it, for this reason (protocol violation, timeout,
    /// shutdown, I/O error).
    Aborted(String),
    /// The association request was rejected, for this reason (unknown caller, busy, ...).
    Rejected(String),
}

/// One instance received by C-STORE, checked by the listener.
pub struct ReceivedInstance {
    /// AE title of the peer that sent it (trimmed).
    pub calling_ae: String,
    /// SOP Class UID (command and data set agree; a valid UID, padding stripped).
    pub sop_class_uid: String,
    /// SOP Instance UID (command and data set agree; a valid UID, padding stripped).
    pub sop_instance_uid: String,
    /// Transfer Syntax UID negotiated for the presentation context, as written in the meta group.
    pub transfer_syntax: String,
    /// A complete Part-10 file: 128-byte preamble, `DICM`, the file meta group naming
    /// `transfer_syntax`, then the data set exactly as received.
    pub part10: Vec<u8>,
    /// `part10` as the listener parsed it to check it, so the sink need not parse it again.
    pub parsed: crate::Instance,
}

impl std::fmt::Debug for ReceivedInstance {
    /// Leaves the bytes out: they hold patient data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedInstance")
            .field("calling_ae", &self.calling_ae)
            .field("sop_class_uid", &self.sop_class_uid)
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("transfer_syntax", &self.transfer_syntax)
            .field("part10_bytes", &self.part10.len())
            .finish()
    }
}

/// What became of an instance handed to a [`StoreSink`]; decides the DICOM status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Durably accepted and will be indexed: status 0x0000.
    Stored,
    /// Durably accepted but not an image to index (SR, KOS, presentation state, ...): status
    /// 0x0000.
    NonImage,
    /// Refused for lack of resources (disk, queue, memory): status 0xA700 with this comment.
    OutOfResources(String),
    /// Refused because its content cannot be used: status 0xC000 with this comment.
    CannotUnderstand(String),
}
