//! # diptych-dicom-adapter — DICOM in and out of diptych
//!
//! Turns DICOM instances into what the rest of diptych understands: pixel frames for the image
//! contract ([`diptych::preprocess`]) and catalog metadata. Built on dicom-rs 0.10
//! (`dicom-object` to parse, `dicom-pixeldata` to decode); nothing here knows about gRPC or
//! protobuf.
//!
//! | module | what it is for |
//! |---|---|
//! | [`instance`] | parse bytes (a Part-10 file or a bare data set) into an [`Instance`] |
//! | `colour` (private) | colour frames (RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR; either planar configuration) to luma |
//! | `codestream` (private) | the image size a compressed frame's codestream declares, checked before decoding |
//! | `framing` (private) | check every declared length against the bytes received, before the parser allocates |
//! | [`jpeg12`] | 12-bit lossy JPEG through GDCM's 12-bit IJG library (when built with it) |
//! | [`limits`] | [`Limits`]: bounds on what an instance may make the parser and the decoder allocate |
//! | [`pixels`] | check an instance's geometry against [`Limits`] and decode a frame into modality values ([`Frame`], a [`diptych::preprocess::RawFrame`] source) |
//! | `wide_samples` (private) | 32-bit monochrome samples (uncompressed) to modality values |
//! | [`metadata`] | extract the catalog fields into [`InstanceMetadata`], and the identifying UIDs checked ([`InstanceUids`]) |
//! | [`uid`] | [`Uid`]: the one rule for UIDs that enter from the network (C-STORE, gRPC) |
//! | [`command_set`] | DIMSE command sets read and written, shared by the listener and the sender |
//! | [`scp`] | the DICOM listener: C-ECHO and C-STORE over TCP or TLS, each instance checked and handed to a [`scp::StoreSink`] |
//! | [`output`] | what diptych sends: Key Object Selection documents and the C-STORE SCU that delivers them |
//! | [`synthetic`] | write synthetic instances (phantom slices) as DICOM, for tests and demos |
//! | [`demo`] | phantom studies with healthy twins as DICOM files, for a first look (`diptych demo write-studies`) |
//! | [`error`] | [`AdapterError`]: what went wrong, named so a sender can fix it |
//!
//! Codecs: the `native` feature of dicom-pixeldata (JPEG baseline/extended/lossless, RLE,
//! deflate, in pure Rust), `openjp2` (JPEG 2000 through OpenJPEG compiled to Rust) and `charls`
//! (JPEG-LS through CharLS, built with cmake); 12-bit lossy JPEG, which the Rust decoder cannot
//! read, through GDCM's 12-bit IJG library (module [`jpeg12`], `libgdcm-dev`).
//!
//! ```
//! use diptych::phantom::{PhantomConfig, PhantomGenerator};
//! use diptych::preprocess::{preprocess, PreprocessParams};
//! use diptych_dicom_adapter::{Limits, parse, synthetic::SyntheticInstance};
//!
//! let slice = PhantomGenerator::new(2, PhantomConfig::default()).slice(3);
//! let bytes = SyntheticInstance::from_phantom(&slice).to_part10();
//!
//! let instance = parse(&bytes, &Limits::default())?;
//! let frame = instance.decode_frame(0)?;
//! let input = preprocess(&frame.raw_frame(), &PreprocessParams::default()).unwrap();
//! assert_eq!(input.pixels.len(), 128 * 128);
//! # Ok::<(), diptych_dicom_adapter::AdapterError>(())
//! ```

pub mod ae_title;
mod codestream;
mod colour;
pub mod command_set;
pub mod demo;
pub mod error;
mod framing;
pub mod instance;
pub mod jpeg12;
pub mod limits;
pub mod metadata;
pub mod output;
pub mod pixels;
pub mod scp;
pub mod synthetic;
pub mod uid;
mod wide_samples;

pub use ae_title::{AeTitle, AeTitleError};
pub use command_set::CommandSetError;
pub use error::AdapterError;
pub use instance::{Instance, parse};
pub use limits::Limits;
pub use metadata::{InstanceMetadata, InstanceUids};
pub use pixels::{Frame, Geometry};
pub use uid::{Uid, UidError};
