//! The model bundle's contract, in one place for the exporter (`diptych-training export`), the
//! evaluator (`diptych-train eval`) and the service.
//!
//! A *model bundle* is a folder with `manifest.json` ([`crate::manifest`]), `encoder.onnx` and
//! `decoder.onnx`. This module holds everything else the writer and the readers must agree on:
//!
//! - [`names`]: the file names, the graphs' input and output names and the codebook initializers;
//! - [`signature`]: the element type and shape of every input and output, derived from the
//!   manifest's sizes, and the check that a graph declares them;
//! - [`onnx`]: the ONNX protobuf messages, generated from the vendored `proto/onnx/onnx.proto`;
//! - [`library`]: where the ONNX Runtime shared library is looked for, and its version.

pub mod library;
pub mod names;
pub mod onnx;
pub mod signature;

pub use library::{LibraryLocation, LibraryMissing, ORT_VERSION};
pub use signature::{Axis, Elem, Signature, SignatureError, Sizes, ValueSpec};
