//! ONNX export: writes a trained network as a model bundle (`encoder.onnx`, `decoder.onnx`,
//! `manifest.json`; docs/DESIGN.md "Model bundle") from Rust, with the ONNX messages and the
//! input/output names and shapes of the bundle contract ([`diptych::bundle`]). The graphs mirror
//! docs/METHOD.md §1 op for op, with every BatchNorm folded into its convolution and both
//! codebooks stored as initializers.

mod bundle;
pub mod command;
mod error;
pub mod graph;
pub mod layers;
pub mod network;
mod weights;

pub use bundle::{BUNDLE_LIMIT_BYTES, Exported, export_bundle, read_initializer, recipe_fields};
pub use error::ExportError;
pub use weights::{FoldedConv, Weights};
