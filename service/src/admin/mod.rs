//! Administration at run time (issue #11, Operations): the allowed DICOM peers and the KOS
//! destinations, changed through the `AdminService` gRPC API (role `admin`) without a restart,
//! and the recent associations read back from the audit trail.
//!
//! | module | what it is for |
//! |---|---|
//! | [`entries`] | [`Peer`] (`AE` or `AE@ip`) and [`KosDestination`] (`AE@HOST:PORT`), checked on the way in |
//! | [`state_file`] | `<data>/admin/dicom-peers.json`, replaced atomically on every change |
//! | [`network`] | [`DicomNetwork`]: the live lists the listener and the KOS sender read, seeded from the configuration on first start |
//! | [`associations`] | recent associations from the audit files, newest first, in pages |
//!
//! The configuration's `dicom.allowed_callers` and `dicom.kos.destination` seed the state file
//! when the data folder has none; from then on the file wins and those keys are not read again.

pub mod associations;
pub mod entries;
pub mod network;
pub mod state_file;

pub use associations::{AuditFiles, Page, PageError};
pub use entries::{EntryError, KosDestination, Peer};
pub use network::{ChangeError, DicomNetwork, KosDestinations, Origin};
