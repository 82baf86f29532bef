//! What can go wrong while exporting a trained network to a model bundle.

use std::path::PathBuf;

/// An export failure, naming what was wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A tensor the network description (docs/METHOD.md §1) names is absent from the weights.
    #[error(
        "the weights have no tensor `{name}`: the checkpoint does not match the exporter's network \
         description; export a checkpoint written by this version of diptych-train"
    )]
    MissingTensor {
        /// The VarStore path that was looked up.
        name: String,
    },
    /// A tensor has a shape other than the one the configuration implies.
    #[error(
        "tensor `{name}` has shape {found:?}, the model configuration implies {expected:?}: \
         export with the configuration the checkpoint was trained with"
    )]
    Shape {
        /// The VarStore path of the tensor.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<i64>,
        /// The shape found in the weights.
        found: Vec<i64>,
    },
    /// The training config file could not be read or is invalid.
    #[error(transparent)]
    TrainConfig(#[from] crate::config::ConfigError),
    /// The model configuration cannot describe an exportable network.
    #[error("model configuration: {0}")]
    Config(String),
    /// libtorch failed to read or convert a tensor.
    #[error("reading the weights: {0}")]
    Tch(#[from] tch::TchError),
    /// A file of the bundle could not be written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An ONNX file could not be decoded.
    #[error("{}: not a valid ONNX model: {source}", path.display())]
    Decode {
        /// The file concerned.
        path: PathBuf,
        /// The protobuf error.
        source: prost::DecodeError,
    },
    /// An ONNX file lacks an initializer that the bundle contract requires.
    #[error("{}: no float initializer `{name}`", path.display())]
    MissingInitializer {
        /// The ONNX file.
        path: PathBuf,
        /// The initializer looked for.
        name: String,
    },
    /// The manifest could not be written or failed validation.
    #[error("manifest: {0}")]
    Manifest(#[from] diptych::manifest::ManifestError),
}
