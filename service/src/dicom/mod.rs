//! The DICOM side of `diptych serve`: the listener of the adapter crate wired to the index, and
//! the answers sent back to viewers.
//!
//! | module | what it is for |
//! |---|---|
//! | [`sink`] | a received C-STORE handed to [`crate::index::Index::accept`]; its outcome becomes the DICOM status |
//! | [`kos`] | a Key Object Selection document per received study, sent to the configured viewer |
//! | [`settings`] | the `[dicom]` section of the configuration turned into the listener's configuration |

pub mod kos;
pub mod settings;
pub mod sink;

pub use settings::{DicomSettings, DicomSettingsError, KosSettings};
pub use sink::IndexSink;
