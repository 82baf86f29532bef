//! The model bundle as the service loads it: the manifest (validated, checksums verified by
//! [`Manifest::load`]), both graphs' bytes, and the codebooks read from them.
//!
//! Loading refuses a bundle whose graphs disagree with the manifest — a missing or misnamed
//! input or output, a fixed batch axis, a shape the manifest does not imply, codebooks of the wrong
//! K×D, or different codebooks in the encoder and decoder — with a message naming the file and
//! the disagreement. What the files leave unstated (dynamic axes) is checked by the warm-up run.
//!
//! The names, shapes and ONNX messages are the bundle contract's ([`diptych::bundle`]), the ones
//! the exporter writes.

pub mod codebook;

use std::path::{Path, PathBuf};

use diptych::bundle::onnx::{GraphProto, ModelProto};
use diptych::bundle::signature::{Signature, SignatureError, Sizes};
use diptych::manifest::{Manifest, ManifestError};
use prost::Message;
use thiserror::Error;

pub use codebook::{Codebook, Codebooks};

/// Why a model bundle was refused.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The bundle folder does not exist.
    #[error(
        "model bundle {0} does not exist; pass --model DIR (or `model` in the configuration) \
         naming a folder with manifest.json, encoder.onnx and decoder.onnx (train one with \
         `make train-default`)"
    )]
    Missing(PathBuf),
    /// The manifest is unreadable, invalid, or a checksum does not match.
    #[error("model bundle {dir}: {source}")]
    Manifest {
        /// The bundle folder.
        dir: PathBuf,
        /// What the manifest check found.
        #[source]
        source: ManifestError,
    },
    /// A graph file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The graph file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A graph file is not a decodable ONNX model.
    #[error("{file} is not an ONNX model ({message}); re-export the bundle")]
    NotOnnx {
        /// The graph file name.
        file: String,
        /// The protobuf decoder's message.
        message: String,
    },
    /// A graph's inputs or outputs disagree with the manifest.
    #[error("{file} disagrees with manifest.json: {problem}")]
    Signature {
        /// The graph file name.
        file: String,
        /// What disagrees.
        problem: String,
    },
    /// A codebook initializer is absent.
    #[error(
        "{file} has no initializer {name:?}; the manifest's `codebooks` must name the codebook \
         initializers inside both graphs"
    )]
    MissingCodebook {
        /// The graph file name.
        file: String,
        /// The initializer name.
        name: String,
    },
    /// A codebook initializer has the wrong type, shape or values.
    #[error("codebook {name:?} in {file} {problem}")]
    BadCodebook {
        /// The graph file name.
        file: String,
        /// The initializer name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The encoder and decoder carry different values for one codebook.
    #[error(
        "codebook {name:?} differs between {encoder} and {decoder}; the two graphs come from \
         different checkpoints: export them together"
    )]
    CodebooksDiffer {
        /// The initializer name.
        name: String,
        /// The encoder file name.
        encoder: String,
        /// The decoder file name.
        decoder: String,
    },
}

impl From<SignatureError> for BundleError {
    fn from(e: SignatureError) -> Self {
        BundleError::Signature {
            file: e.file,
            problem: e.problem,
        }
    }
}

/// A loaded and checked model bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle folder.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// Bytes of the encoder graph.
    pub encoder: Vec<u8>,
    /// Bytes of the decoder graph.
    pub decoder: Vec<u8>,
    /// The codebooks, as the encoder carries them (the decoder's are identical).
    pub codebooks: Codebooks,
    /// Bytes of the int8 encoder graph (`diptych quantize`), when the manifest names one.
    pub encoder_int8: Option<Vec<u8>>,
}

impl Bundle {
    /// Loads the bundle in `dir` and checks its graphs against its manifest.
    pub fn load(dir: impl AsRef<Path>) -> Result<Bundle, BundleError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(BundleError::Missing(dir));
        }
        let manifest = Manifest::load(&dir).map_err(|source| BundleError::Manifest {
            dir: dir.clone(),
            source,
        })?;
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|source| BundleError::Read { path, source })
        };
        let encoder = read(&manifest.encoder.file)?;
        let decoder = read(&manifest.decoder.file)?;
        let enc_graph = decode_graph(&manifest.encoder.file, &encoder)?;
        let dec_graph = decode_graph(&manifest.decoder.file, &decoder)?;
        let codebooks = check_decoded(&manifest, &manifest.encoder.file, &enc_graph, &dec_graph)?;
        let encoder_int8 = match &manifest.encoder_int8 {
            Some(int8) => {
                let bytes = read(&int8.graph.file)?;
                let int8_graph = decode_graph(&int8.graph.file, &bytes)?;
                check_decoded(&manifest, &int8.graph.file, &int8_graph, &dec_graph)?;
                Some(bytes)
            }
            None => None,
        };
        Ok(Bundle {
            encoder_int8,
            dir,
            manifest,
            encoder,
            decoder,
            codebooks,
        })
    }
}

/// Checks both graphs against the manifest and returns the codebooks.
pub fn check_graphs(
    manifest: &Manifest,
    encoder: &[u8],
    decoder: &[u8],
) -> Result<Codebooks, BundleError> {
    let enc_graph = decode_graph(&manifest.encoder.file, encoder)?;
    let dec_graph = decode_graph(&manifest.decoder.file, decoder)?;
    check_decoded(manifest, &manifest.encoder.file, &enc_graph, &dec_graph)
}

/// Checks an int8 copy of the encoder graph (`diptych quantize`; `file` names it in errors) as
/// the float one is checked: the encoder contract, and the same codebooks as the decoder (hence
/// as the float encoder).
pub fn check_int8_encoder(
    manifest: &Manifest,
    file: &str,
    bytes: &[u8],
    decoder: &[u8],
) -> Result<(), BundleError> {
    let int8_graph = decode_graph(file, bytes)?;
    let dec_graph = decode_graph(&manifest.decoder.file, decoder)?;
    check_decoded(manifest, file, &int8_graph, &dec_graph).map(|_| ())
}

/// Checks a decoded encoder graph (file name `enc_file`) and the decoded decoder graph against
/// the manifest's contract and each other's codebooks, and returns the codebooks.
fn check_decoded(
    manifest: &Manifest,
    enc_file: &str,
    enc_graph: &GraphProto,
    dec_graph: &GraphProto,
) -> Result<Codebooks, BundleError> {
    let dec_file = manifest.decoder.file.as_str();
    let sizes = Sizes::of(manifest);
    Signature::encoder(&sizes).check(enc_graph, enc_file)?;
    Signature::decoder(&sizes).check(dec_graph, dec_file)?;

    let (k, d) = (manifest.codebook_size, manifest.code_dim);
    let names = &manifest.codebooks;
    let mut books = Vec::with_capacity(2);
    for name in [&names.normal, &names.abnormal] {
        let in_encoder = codebook::read_codebook(enc_graph, enc_file, name, k, d)?;
        let in_decoder = codebook::read_codebook(dec_graph, dec_file, name, k, d)?;
        if in_encoder != in_decoder {
            return Err(BundleError::CodebooksDiffer {
                name: name.clone(),
                encoder: enc_file.to_string(),
                decoder: dec_file.to_string(),
            });
        }
        books.push(in_encoder);
    }
    let abnormal = books.pop().expect("two codebooks");
    let normal = books.pop().expect("two codebooks");
    Ok(Codebooks { normal, abnormal })
}

fn decode_graph(file: &str, bytes: &[u8]) -> Result<GraphProto, BundleError> {
    let model = ModelProto::decode(bytes).map_err(|e| BundleError::NotOnnx {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    model.graph.ok_or_else(|| BundleError::NotOnnx {
        file: file.to_string(),
        message: "the model has no graph".to_string(),
    })
}
