//! The on-disk frame of one log entry and the binary encoding of its payload.
//!
//! ```text
//! frame   = len: u32 LE | crc: u32 LE | payload (len bytes)
//! crc     = CRC-32 of (len as 4 LE bytes ++ payload)
//! payload = kind: u8 | seq: u64 LE | body
//! body    = Instance: the DICOM Part 10 bytes
//!         | Delete:   level: u8 (0 patient, 1 study, 2 series, 3 instance) | identifier (UTF-8)
//! ```

use crate::record::DeleteTarget;

/// Bytes before the payload: length and checksum.
pub(super) const FRAME_HEADER: usize = 8;
/// Bytes of the payload before the body: kind and seq.
pub(super) const PAYLOAD_PREFIX: usize = 9;

const KIND_INSTANCE: u8 = 1;
const KIND_DELETE: u8 = 2;

/// One unit of accepted work in the write-ahead log.
#[derive(Clone, PartialEq, Eq)]
pub enum WalRecord {
    /// A DICOM instance accepted for indexing (its Part 10 bytes).
    Instance {
        /// The DICOM Part 10 file as received.
        dicom: Vec<u8>,
    },
    /// A delete accepted for execution.
    Delete {
        /// What to delete.
        target: DeleteTarget,
    },
}

impl std::fmt::Debug for WalRecord {
    /// Shows sizes and levels only: the bytes and identifiers are patient data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalRecord::Instance { dicom } => write!(f, "Instance({} bytes)", dicom.len()),
            WalRecord::Delete { target } => write!(f, "Delete({target:?})"),
        }
    }
}

impl WalRecord {
    /// The kind byte and the body, borrowed (the body is written without copying it).
    pub(super) fn parts(&self) -> (u8, Body<'_>) {
        match self {
            WalRecord::Instance { dicom } => (KIND_INSTANCE, Body::Bytes(dicom)),
            WalRecord::Delete { target } => {
                let level = match target {
                    DeleteTarget::Patient(_) => 0,
                    DeleteTarget::Study(_) => 1,
                    DeleteTarget::Series(_) => 2,
                    DeleteTarget::Instance(_) => 3,
                };
                (
                    KIND_DELETE,
                    Body::Level(level, target.identifier().as_bytes()),
                )
            }
        }
    }

    /// Payload length (prefix + body) of this record.
    pub(super) fn payload_len(&self) -> u64 {
        PAYLOAD_PREFIX as u64 + self.parts().1.len() as u64
    }

    /// Decodes a payload's kind and body (the payload's checksum has been verified).
    pub(super) fn decode(kind: u8, body: Vec<u8>) -> Result<WalRecord, String> {
        match kind {
            KIND_INSTANCE => Ok(WalRecord::Instance { dicom: body }),
            KIND_DELETE => {
                let (&level, identifier) =
                    body.split_first().ok_or("a delete entry without a level")?;
                let identifier = String::from_utf8(identifier.to_vec())
                    .map_err(|_| "a delete entry whose identifier is not UTF-8")?;
                let target = match level {
                    0 => DeleteTarget::Patient(identifier),
                    1 => DeleteTarget::Study(identifier),
                    2 => DeleteTarget::Series(identifier),
                    3 => DeleteTarget::Instance(identifier),
                    other => return Err(format!("a delete entry of unknown level {other}")),
                };
                Ok(WalRecord::Delete { target })
            }
            other => Err(format!("an entry of unknown kind {other}")),
        }
    }
}

/// Whether a kind byte names a known record kind.
pub(super) fn known_kind(kind: u8) -> bool {
    kind == KIND_INSTANCE || kind == KIND_DELETE
}

/// A record's body as slices to write.
pub(super) enum Body<'a> {
    /// Raw bytes.
    Bytes(&'a [u8]),
    /// A level byte then bytes.
    Level(u8, &'a [u8]),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Level(_, b) => 1 + b.len(),
        }
    }
}

/// A frame ready to write: the 8 + 9 header bytes (length, checksum, kind, seq) and the body.
pub(super) struct Frame<'a> {
    /// Length, checksum, kind and seq.
    pub head: [u8; FRAME_HEADER + PAYLOAD_PREFIX],
    /// Optional level byte of a delete.
    pub level: Option<u8>,
    /// The rest of the body.
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Frames `record` as entry `seq`; the caller has checked that its length fits a `u32`.
    pub fn new(record: &'a WalRecord, seq: u64) -> Frame<'a> {
        let (kind, body) = record.parts();
        let (level, body) = match body {
            Body::Bytes(b) => (None, b),
            Body::Level(l, b) => (Some(l), b),
        };
        let len = (PAYLOAD_PREFIX + level.map_or(0, |_| 1) + body.len()) as u32;
        let mut head = [0u8; FRAME_HEADER + PAYLOAD_PREFIX];
        head[0..4].copy_from_slice(&len.to_le_bytes());
        head[8] = kind;
        head[9..17].copy_from_slice(&seq.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[0..4]);
        crc.update(&head[8..17]);
        if let Some(l) = level {
            crc.update(&[l]);
        }
        crc.update(body);
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        Frame { head, level, body }
    }

    /// Total bytes on disk.
    pub fn len(&self) -> u64 {
        (self.head.len() + self.level.map_or(0, |_| 1) + self.body.len()) as u64
    }
}
