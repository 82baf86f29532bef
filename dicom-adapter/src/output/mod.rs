//! DICOM output to viewers: what diptych sends back over the DICOM network.
//!
//! When a received study has been searched (issue #4, "similar studies for viewers"), diptych can
//! file a Key Object Selection document under that study, referencing its most similar instances,
//! and C-STORE it to a viewer or archive, where it shows as a key-image note.
//!
//! | module | what it is for |
//! |---|---|
//! | [`kos`] | build the Key Object Selection document ([`SimilarStudies`] in, Part-10 out) |
//! | [`send`] | a C-STORE SCU: send one instance to a [`Destination`] and return its DICOM status |
//! | [`echo`] | a C-ECHO SCU: check that a [`Destination`] answers, with the round-trip time |
//! | [`find`] | a C-FIND SCU: the studies an archive holds, by date range, modality, description |
//! | [`fetch`] | fetch instances by UID (study, series or instance) with C-GET, each handed to a [`crate::scp::StoreSink`] |
//! | `qr_dimse` (private) | the C-FIND, C-GET and C-MOVE command sets |
//! | `message` (private) | whole DIMSE messages (command and data set) sent and read on an association diptych opened |
//! | [`uid`] | new UIDs under the UUID root `2.25`, and the UID syntax check |
//! | `datetime` (private) | DICOM DA/TM values for the current time |
//! | `dimse` (private) | the C-STORE request and response command sets |
//! | [`error`] | [`OutputError`], [`RetrieveError`]: what went wrong, naming the destination or archive and the fix |
//!
//! ```
//! use diptych_dicom_adapter::output::{ReferencedInstance, SimilarStudies, StudyIdentity};
//!
//! let similar = SimilarStudies {
//!     received: StudyIdentity {
//!         patient_id: "PHANTOM-0001".into(),
//!         patient_name: None,
//!         study_instance_uid: "2.25.1".into(),
//!         accession: None,
//!         study_date: "20240102".into(),
//!         study_id: "1".into(),
//!     },
//!     title: "diptych: similar studies".into(),
//!     hits: vec![ReferencedInstance {
//!         study_instance_uid: "2.25.2".into(),
//!         series_instance_uid: "2.25.3".into(),
//!         sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
//!         sop_instance_uid: "2.25.4".into(),
//!         frame: None,
//!         rank: 1,
//!         distance: 12.5,
//!         mode: "normal".into(),
//!     }],
//! };
//! let bytes = similar.key_object_part10()?;
//! let instance = diptych_dicom_adapter::parse(&bytes, &Default::default()).unwrap();
//! assert_eq!(instance.sop_class_uid(), "1.2.840.10008.5.1.4.1.1.88.59");
//! # Ok::<(), diptych_dicom_adapter::output::OutputError>(())
//! ```

mod datetime;
mod dimse;
pub mod echo;
pub mod error;
pub mod fetch;
pub mod find;
pub mod kos;
mod message;
mod qr_dimse;
pub mod send;
pub mod uid;

pub use echo::{EchoAnswer, EchoError, echo};
pub use error::{ExchangeError, OutputError, RetrieveError};
pub use fetch::{FetchOptions, FetchReport, FetchTarget, RefusedInstance, fetch, move_to};
pub use find::{FoundStudies, QueryError, StudyMatch, StudyQuery, find_studies};
pub use kos::{DocumentUids, ReferencedInstance, SimilarStudies, StudyIdentity};
pub use qr_dimse::SubOperations;
pub use send::{Destination, send_instance};
