//! The unit of accepted work that [`super::accept`] hands to [`super::apply`]: an image instance
//! made ready for the encoder ([`Prepared`]), a delete, or a log entry with nothing to apply,
//! each named by its log sequence number.

use diptych_dicom_adapter::{InstanceMetadata, InstanceUids};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::apply_error::ApplyError;
use crate::record::{DeleteTarget, RecordKeys, key_of};

/// An image instance made ready for the encoder: its metadata and one model input per frame.
pub struct Prepared {
    /// The catalog metadata; its UIDs are those of `uids`.
    pub metadata: InstanceMetadata,
    /// The identifying UIDs, checked.
    pub uids: InstanceUids,
    /// The key of its SOP Instance UID.
    pub keys_instance: u64,
    /// Model input (preprocessed pixels) of every frame, in frame order.
    pub frames: Vec<Vec<f32>>,
}

/// An instance's entry in the index's in-flight set (acknowledged, not yet applied): the key of
/// its SOP Instance UID and its Study Instance UID, both as checked (padding stripped). Accepting,
/// claiming a replay and redoing from the log all key it this one way.
pub(super) fn in_flight_entry(uids: &InstanceUids) -> (u64, String) {
    (key_of(uids.sop_instance.as_str()), uids.study.to_string())
}

impl Prepared {
    /// The record keys of frame `frame`.
    pub fn keys(&self, frame: u32) -> RecordKeys {
        RecordKeys {
            patient: key_of(&self.metadata.patient_id),
            study: key_of(&self.metadata.study_instance_uid),
            series: key_of(&self.metadata.series_instance_uid),
            instance: self.keys_instance,
            frame,
        }
    }
}

/// What a delete removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteCounts {
    /// Records (slices) removed.
    pub records: u64,
    /// Distinct instances removed.
    pub instances: u64,
}

/// Where the answer to a delete goes.
pub type DeleteReply = oneshot::Sender<Result<DeleteCounts, ApplyError>>;

/// One unit of accepted work, named by its log sequence number.
pub enum Work {
    /// An image instance, decoded and pre-processed.
    Instance {
        /// Log sequence number.
        seq: u64,
        /// Its frames and metadata.
        prepared: Box<Prepared>,
        /// Its room in the index's backlog, given back once it is applied (none on replay).
        backlog: Option<OwnedSemaphorePermit>,
    },
    /// A delete; `reply` hears the counts once it is applied and committed.
    Delete {
        /// Log sequence number.
        seq: u64,
        /// What to delete.
        target: DeleteTarget,
        /// Who waits for the answer (none during replay).
        reply: Option<DeleteReply>,
    },
    /// A log entry with nothing to apply (a non-image object replayed).
    Skip {
        /// Log sequence number.
        seq: u64,
    },
}

impl Work {
    /// Its log sequence number.
    pub(super) fn seq(&self) -> u64 {
        match self {
            Work::Instance { seq, .. } | Work::Delete { seq, .. } | Work::Skip { seq } => *seq,
        }
    }

    /// Frames it holds in memory.
    pub(super) fn frames(&self) -> usize {
        match self {
            Work::Instance { prepared, .. } => prepared.frames.len(),
            _ => 0,
        }
    }
}
