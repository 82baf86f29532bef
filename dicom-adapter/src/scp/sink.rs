//! The sink: where the listener hands every received instance, and what it answers.
//!
//! The listener checks an instance (it parses, its UIDs follow the rule of [`crate::uid`] and
//! match the command, its declared lengths hold) before it calls the sink; the sink makes it durable and says how it went. The DICOM
//! status sent back to the peer follows from [`StoreOutcome`] alone, so a sink never speaks
//! DICOM.

use std::future::Future;
use std::pin::Pin;

/// Receives the instances of C-STORE requests, one call per instance.
pub trait StoreSink: Send + Sync + 'static {
    /// Called once per received C-STORE after the data set matched the command; returns only
    /// when the instance is durable (or refused).
    fn store(
        &self,
        instance: ReceivedInstance,
    ) -> Pin<Box<dyn Future<Output = StoreOutcome> + Send + '_>>;
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
