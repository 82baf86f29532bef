//! The fixed-size per-record struct of `records.bin`.

use crate::record::RecordKeys;

#[cfg(target_endian = "big")]
compile_error!("the code store's files are little-endian; big-endian targets are not supported");

/// Bit of [`RecordEntry`]'s flags set when the record is deleted.
const DELETED: u32 = 1;

/// One record's keys, abnormality and flags as stored in `records.bin` (48 bytes,
/// little-endian, read in place from the memory map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecordEntry {
    patient: u64,
    study: u64,
    series: u64,
    instance: u64,
    frame: u32,
    abnormality: f32,
    flags: u32,
    reserved: u32,
}

/// Bytes of one [`RecordEntry`] on disk.
pub(super) const ENTRY_BYTES: usize = std::mem::size_of::<RecordEntry>();
const _: () = assert!(ENTRY_BYTES == 48);
const _: () = assert!(std::mem::align_of::<RecordEntry>() == 8);

impl RecordEntry {
    /// A live record.
    pub(super) fn new(keys: RecordKeys, abnormality: f32) -> RecordEntry {
        RecordEntry {
            patient: keys.patient,
            study: keys.study,
            series: keys.series,
            instance: keys.instance,
            frame: keys.frame,
            abnormality,
            flags: 0,
            reserved: 0,
        }
    }

    /// A deleted record: the flag set and everything else zeroed (no key of the deleted
    /// patient stays on disk).
    pub(super) fn tombstone() -> RecordEntry {
        RecordEntry {
            flags: DELETED,
            ..RecordEntry::new(RecordKeys::default(), 0.0)
        }
    }

    /// The record's patient, study, series, instance keys and frame (zero once deleted).
    pub fn keys(&self) -> RecordKeys {
        RecordKeys {
            patient: self.patient,
            study: self.study,
            series: self.series,
            instance: self.instance,
            frame: self.frame,
        }
    }

    /// The slice's abnormality score (zero once deleted).
    pub fn abnormality(&self) -> f32 {
        self.abnormality
    }

    /// Whether the record has been deleted (search must skip it).
    pub fn is_deleted(&self) -> bool {
        self.flags & DELETED != 0
    }
}
