//! The model-bundle manifest: `manifest.json`, next to `encoder.onnx` and `decoder.onnx`.
//!
//! A *model bundle* is a folder that the training crate writes and the service reads. The
//! manifest says what the graphs expect and produce (input size and pre-processing, the code
//! grid, codebook size K and code dimension D, label names, the abnormality margin), carries the
//! SHA-256 of each graph so that a half-copied bundle is refused, and records the training recipe.
//! Codes of different model ids are never compared, so `model_id` names one trained network.
//!
//! [`Manifest::load`] parses, validates and verifies checksums in one step; [`Manifest::write`]
//! writes pretty JSON.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::preprocess::PreprocessParams;

/// File name of the manifest inside a model bundle.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The lowest ONNX opset a bundle may use.
pub const MIN_OPSET: i64 = 13;

/// The code grid: h×w latent positions per slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Latent rows (h).
    pub rows: usize,
    /// Latent columns (w).
    pub cols: usize,
}

impl Grid {
    /// Number of latent positions (h·w).
    pub fn positions(&self) -> usize {
        self.rows * self.cols
    }
}

/// One ONNX graph of the bundle and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    /// File name inside the bundle folder (no directories).
    pub file: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// An int8 copy of the encoder graph (`diptych quantize`), with how closely its codes follow
/// the float graph's on held-out slices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizedEncoder {
    /// The graph file and its checksum.
    #[serde(flatten)]
    pub graph: GraphFile,
    /// Share of grid positions of the check slices whose normal code is the float graph's.
    pub normal_agreement: f64,
    /// The same share for the abnormal code.
    pub abnormal_agreement: f64,
    /// Mean |difference| of the abnormality score between the two graphs on those slices.
    pub score_mean_abs_difference: f64,
    /// Slices the agreement was measured on (held-out seed, every source the bundle knows).
    pub checked_slices: usize,
}

/// Names of the codebook initializers inside both graphs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodebookNames {
    /// Initializer holding the normal codebook C_n, f32 [K, D].
    pub normal: String,
    /// Initializer holding the abnormal codebook C_a, f32 [K, D].
    pub abnormal: String,
}

impl Default for CodebookNames {
    fn default() -> Self {
        Self {
            normal: crate::bundle::names::CODEBOOK_NORMAL.into(),
            abnormal: crate::bundle::names::CODEBOOK_ABNORMAL.into(),
        }
    }
}

/// The contents of `manifest.json`: everything a reader of a model bundle must know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format; [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Identifier of the trained network; codes of different ids are never compared.
    pub model_id: String,
    /// The image contract's parameters (input size, normalisation percentiles).
    pub preprocess: PreprocessParams,
    /// The code grid h×w.
    pub grid: Grid,
    /// Codebook size K (entries per codebook).
    pub codebook_size: usize,
    /// Code dimension D (length of each codebook vector).
    pub code_dim: usize,
    /// Names of the normal labels, "background" first.
    pub normal_labels: Vec<String>,
    /// Names of the abnormal labels (the segmentation channels), "background" first.
    pub abnormal_labels: Vec<String>,
    /// The discrimination margin m: abnormality = clamp(1 − distance/m, 0, 1).
    pub abnormality_margin: f32,
    /// ONNX opset of both graphs.
    pub opset: i64,
    /// The encoder graph (image → codes and abnormality).
    pub encoder: GraphFile,
    /// The decoder graph (codes → segmentation, reconstruction, normal-appearing image).
    pub decoder: GraphFile,
    /// Initializer names of the codebooks in both graphs.
    pub codebooks: CodebookNames,
    /// The training recipe: config, seed, steps, time, device, figures.
    #[serde(default)]
    pub training: serde_json::Value,
    /// Abnormal weight of combined mode (normal weight 1) when a search names no weights: the
    /// label-free balance `E[d_n] / E[d_a]` that `diptych calibrate` measures on slices like the
    /// training data's, so both halves of a code count alike (docs/METHOD.md §3). 1 in bundles
    /// made before it (the paper's plain `d_n + d_a`).
    #[serde(default = "unit_balance")]
    pub combined_balance: f32,
    /// The int8 encoder that `[encoder] precision = "int8"` serves, when `diptych quantize`
    /// made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_int8: Option<QuantizedEncoder>,
}

/// The combined-mode balance of a bundle that records none.
fn unit_balance() -> f32 {
    1.0
}

/// Why a manifest could not be read, written or accepted.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `manifest.json` is not valid JSON of the expected shape.
    #[error("{path} is not a valid manifest: {source}")]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest could not be turned into JSON.
    #[error("cannot serialise the manifest: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A field holds a value no bundle may have.
    #[error("manifest field `{field}` is invalid: {problem}")]
    Invalid {
        /// The field, in JSON path notation (e.g. `grid.rows`).
        field: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A graph file's bytes do not match the manifest's checksum.
    #[error(
        "{path} has SHA-256 {actual} but the manifest expects {expected}; the bundle is \
         incomplete or was modified: copy the whole bundle folder again, or re-export it"
    )]
    ChecksumMismatch {
        /// The graph file.
        path: PathBuf,
        /// The checksum in the manifest.
        expected: String,
        /// The checksum of the file.
        actual: String,
    },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field,
        problem: problem.into(),
    }
}

impl Manifest {
    /// Reads `dir/manifest.json`, validates it and verifies the checksums of its graphs.
    pub fn load(dir: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let dir = dir.as_ref();
        let manifest = Self::read(dir)?;
        manifest.validate()?;
        manifest.verify_checksums(dir)?;
        Ok(manifest)
    }

    /// Reads and parses `dir/manifest.json` without validating it or checking the graphs.
    pub fn read(dir: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = dir.as_ref().join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ManifestError::Parse { path, source })
    }

    /// Writes the manifest as pretty JSON to `dir/manifest.json` (the folder must exist).
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<(), ManifestError> {
        let path = dir.as_ref().join(MANIFEST_FILE);
        let mut text = serde_json::to_string_pretty(self).map_err(ManifestError::Serialize)?;
        text.push('\n');
        fs::write(&path, text).map_err(|source| ManifestError::Io { path, source })
    }

    /// The square model input side, in pixels.
    pub fn input_size(&self) -> usize {
        self.preprocess.input_size
    }

    /// Checks every field; the error names the first wrong field and how to fix it.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format_version != FORMAT_VERSION {
            return Err(invalid(
                "format_version",
                format!(
                    "{} is not supported; this build reads format {FORMAT_VERSION}: re-export \
                     the bundle with a matching diptych-train",
                    self.format_version
                ),
            ));
        }
        let id = self.model_id.as_str();
        if id.trim().is_empty() {
            return Err(invalid(
                "model_id",
                "is empty; give the trained network a name such as \"phantom-v1\"",
            ));
        }
        if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "model_id",
                format!("{id:?} contains whitespace; use letters, digits, '.', '-' or '_'"),
            ));
        }
        self.validate_preprocess()?;
        self.validate_grid()?;
        if self.codebook_size < 2 {
            return Err(invalid(
                "codebook_size",
                format!(
                    "K = {} but a codebook needs at least 2 entries (default 512)",
                    self.codebook_size
                ),
            ));
        }
        if self.code_dim < 1 {
            return Err(invalid(
                "code_dim",
                "D = 0 but codebook vectors need at least 1 dimension (default 64)",
            ));
        }
        validate_labels("normal_labels", &self.normal_labels, 1)?;
        validate_labels("abnormal_labels", &self.abnormal_labels, 2)?;
        let m = self.abnormality_margin;
        if !(m.is_finite() && m > 0.0) {
            return Err(invalid(
                "abnormality_margin",
                format!("m = {m} but it must be a finite number above 0 (the training margin)"),
            ));
        }
        let b = self.combined_balance;
        if !(b.is_finite() && b > 0.0) {
            return Err(invalid(
                "combined_balance",
                format!(
                    "{b} but it must be a finite number above 0 (run `diptych calibrate` to \
                     measure it, or 1 for plain d_n + d_a)"
                ),
            ));
        }
        if self.opset < MIN_OPSET {
            return Err(invalid(
                "opset",
                format!(
                    "{} is older than {MIN_OPSET}; export with opset {MIN_OPSET} or newer \
                     (17 is the default)",
                    self.opset
                ),
            ));
        }
        validate_graph("encoder.file", "encoder.sha256", &self.encoder)?;
        validate_graph("decoder.file", "decoder.sha256", &self.decoder)?;
        if let Some(int8) = &self.encoder_int8 {
            validate_graph("encoder_int8.file", "encoder_int8.sha256", &int8.graph)?;
            if [&self.encoder.file, &self.decoder.file].contains(&&int8.graph.file) {
                return Err(invalid(
                    "encoder_int8.file",
                    format!(
                        "is {:?}, a file of the float graphs; the int8 encoder needs its own",
                        int8.graph.file
                    ),
                ));
            }
            for (field, share) in [
                ("encoder_int8.normal_agreement", int8.normal_agreement),
                ("encoder_int8.abnormal_agreement", int8.abnormal_agreement),
            ] {
                if !(0.0..=1.0).contains(&share) {
                    return Err(invalid(
                        field,
                        format!("{share} is not a share in [0, 1]; run `diptych quantize` again"),
                    ));
                }
            }
        }
        if self.encoder.file == self.decoder.file {
            return Err(invalid(
                "decoder.file",
                format!(
                    "is {:?}, the same file as the encoder; the two graphs need two files",
                    self.decoder.file
                ),
            ));
        }
        if self.codebooks.normal.trim().is_empty() {
            return Err(invalid(
                "codebooks.normal",
                "is empty; name the normal codebook initializer (\"codebook_normal\")",
            ));
        }
        if self.codebooks.abnormal.trim().is_empty() {
            return Err(invalid(
                "codebooks.abnormal",
                "is empty; name the abnormal codebook initializer (\"codebook_abnormal\")",
            ));
        }
        if self.codebooks.normal == self.codebooks.abnormal {
            return Err(invalid(
                "codebooks.abnormal",
                "names the same initializer as codebooks.normal; the two codebooks differ",
            ));
        }
        Ok(())
    }

    fn validate_preprocess(&self) -> Result<(), ManifestError> {
        let p = &self.preprocess;
        if p.input_size < 8 {
            return Err(invalid(
                "preprocess.input_size",
                format!(
                    "{} pixels is too small; the model input side must be at least 8 (default 128)",
                    p.input_size
                ),
            ));
        }
        let (low, high) = (p.low_percentile, p.high_percentile);
        if !(low.is_finite() && (0.0..100.0).contains(&low)) {
            return Err(invalid(
                "preprocess.low_percentile",
                format!("{low} must lie in [0, 100) (default 0.5)"),
            ));
        }
        if !(high.is_finite() && high > low && high <= 100.0) {
            return Err(invalid(
                "preprocess.high_percentile",
                format!("{high} must lie in (low_percentile = {low}, 100] (default 99.5)"),
            ));
        }
        Ok(())
    }

    fn validate_grid(&self) -> Result<(), ManifestError> {
        let size = self.preprocess.input_size;
        for (field, n) in [("grid.rows", self.grid.rows), ("grid.cols", self.grid.cols)] {
            if n == 0 || !size.is_multiple_of(n) {
                return Err(invalid(
                    field,
                    format!(
                        "{n} does not divide the input size {size}; use a divisor such as \
                         {} (input/8) or {} (input/16)",
                        size / 8,
                        size / 16
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Verifies that both graph files in `dir` match their SHA-256 in the manifest.
    pub fn verify_checksums(&self, dir: impl AsRef<Path>) -> Result<(), ManifestError> {
        let dir = dir.as_ref();
        let int8 = self.encoder_int8.as_ref().map(|q| &q.graph);
        for graph in [Some(&self.encoder), Some(&self.decoder), int8]
            .into_iter()
            .flatten()
        {
            let path = dir.join(&graph.file);
            let actual = sha256_file(&path)?;
            if !actual.eq_ignore_ascii_case(&graph.sha256) {
                return Err(ManifestError::ChecksumMismatch {
                    path,
                    expected: graph.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

fn validate_labels(
    field: &'static str,
    labels: &[String],
    min_len: usize,
) -> Result<(), ManifestError> {
    match labels.first() {
        Some(first) if first == "background" => {}
        Some(first) => {
            return Err(invalid(
                field,
                format!("starts with {first:?}; the first label must be \"background\""),
            ));
        }
        None => {
            return Err(invalid(
                field,
                "is empty; list the label names with \"background\" first",
            ));
        }
    }
    if labels.len() < min_len {
        return Err(invalid(
            field,
            format!(
                "has {} label(s) but needs at least {min_len}, \"background\" included",
                labels.len()
            ),
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        if label.trim().is_empty() {
            return Err(invalid(
                field,
                format!("label {i} is empty; give every label a name"),
            ));
        }
        if labels[..i].contains(label) {
            return Err(invalid(
                field,
                format!("label {label:?} appears twice; label names must be unique"),
            ));
        }
    }
    Ok(())
}

fn validate_graph(
    file_field: &'static str,
    sha_field: &'static str,
    graph: &GraphFile,
) -> Result<(), ManifestError> {
    let file = graph.file.as_str();
    let plain = Path::new(file)
        .file_name()
        .is_some_and(|name| name == std::ffi::OsStr::new(file));
    if file.is_empty() || !plain || file.contains(['/', '\\']) {
        return Err(invalid(
            file_field,
            format!(
                "{file:?} must be a plain file name inside the bundle folder, e.g. \"encoder.onnx\""
            ),
        ));
    }
    let sha = graph.sha256.as_str();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            sha_field,
            format!(
                "{sha:?} is not a SHA-256 (64 hex digits); compute it with \
                 diptych::manifest::sha256_file or `sha256sum`"
            ),
        ));
    }
    Ok(())
}

/// Lower-case hex SHA-256 of a file's bytes.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String, ManifestError> {
    let path = path.as_ref();
    let io_err = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
