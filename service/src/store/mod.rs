//! The durable store: what the service has accepted and what it has encoded.
//!
//! Its parts, one folder each under the data folder:
//!
//! | module | folder | what it keeps |
//! |---|---|---|
//! | [`wal`] | `<data_dir>/wal/` | the write-ahead log of accepted work (DICOM instances, deletes), fsynced with group commit before an acknowledgement; replayed on start |
//! | [`codes`] | `<data_dir>/codes/` (`codes-N/` after the N-th re-index) | the compact codes of every record (one byte per grid position per codebook) and its [`RecordKeys`](crate::record::RecordKeys), memory-mapped, stamped with the model that made them |
//! | [`frames`] | `<data_dir>/frames/` | with `[index] keep_frames`: every record's pre-processed frame, for re-encoding it with a new model |
//!
//! The contract (docs/DESIGN.md, "Durability"): an instance is acknowledged only once its WAL entry
//! is on disk; encoding and indexing follow. The code store is synced at checkpoints; on restart
//! the caller truncates it to the catalog's checkpoint and replays the WAL after it. Deleting a
//! patient tombstones (and zeroes) its records here, then the caller rotates and prunes the WAL so
//! the DICOM bytes leave the disk too.

pub mod codes;
mod column;
mod error;
mod folder;
pub mod frames;
pub mod wal;

pub use codes::{CodeStore, CodesView, ModelStamp, NewRecord, RecordEntry};
pub use error::StoreError;
pub use frames::FrameStore;
pub use wal::{Wal, WalCorruption, WalOptions, WalRecord, WalRecovery, WalReplay};
