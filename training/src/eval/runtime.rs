//! Running a model bundle through ONNX Runtime: the shared library is found by the bundle
//! contract's rules ([`diptych::bundle::library`]: `ORT_DYLIB_PATH`, then the project cache),
//! loaded at run time (ort `load-dynamic`) once per process, and both graphs of a bundle are
//! opened as sessions that take and return flat row-major arrays.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use diptych::manifest::Manifest;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use diptych::bundle::library::{self, LibraryMissing, ORT_VERSION};
use diptych::bundle::names::{
    ABNORMAL_DISTANCE, ABNORMAL_INDICES, ABNORMAL_LATENT, ABNORMALITY, IMAGE, NORMAL_APPEARING,
    NORMAL_INDICES, NORMAL_LATENT, RECONSTRUCTION, SEGMENTATION,
};

/// Why a bundle could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No ONNX Runtime library where the lookup rules lead.
    #[error(transparent)]
    NoLibrary(#[from] LibraryMissing),
    /// The library that was found could not be loaded.
    #[error(
        "cannot load ONNX Runtime from {path}: {reason}; it must be libonnxruntime.so \
         {ORT_VERSION} (`make deps-ort` fetches it)"
    )]
    Load {
        /// The path that was tried.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// The bundle's manifest is missing, invalid, or its checksums do not match.
    #[error("model bundle: {0}")]
    Manifest(#[from] diptych::manifest::ManifestError),
    /// ONNX Runtime refused a graph or failed while running it.
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
    /// An input or output did not have the shape the manifest implies.
    #[error("{0}")]
    Shape(String),
}

/// The process-wide ONNX Runtime environment (ort allows only one), loading the library on first use.
pub fn environment() -> Result<Environment, RuntimeError> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    let path = library::locate(None)?.path;
    let env = ENV.get_or_init(|| {
        ort::init_from(&path)
            .map_err(|e| e.to_string())?
            .with_name("diptych-train")
            .build()
            .map_err(|e| e.to_string())
    });
    env.clone()
        .map_err(|reason| RuntimeError::Load { path, reason })
}

/// Opens one ONNX graph as a session, with all graph optimisations.
pub fn open_session(path: &Path) -> Result<Session, RuntimeError> {
    let env = environment()?;
    let session = Session::builder(&env)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(ort::Error::from)?
        .commit_from_file(path)?;
    Ok(session)
}

/// The encoder's outputs for a batch of n images, flat row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderOutputs {
    /// Normal code indices `[n, h, w]`.
    pub normal_indices: Vec<i64>,
    /// Abnormal code indices `[n, h, w]`.
    pub abnormal_indices: Vec<i64>,
    /// Per-position abnormal commitment distance `[n, h, w]`.
    pub abnormal_distance: Vec<f32>,
    /// Abnormality score `[n]`.
    pub abnormality: Vec<f32>,
    /// Continuous normal latent `[n, D, h, w]`, where the graph has it (bundles exported
    /// before it was added lack it: empty).
    pub normal_latent: Vec<f32>,
    /// Continuous abnormal latent `[n, D, h, w]`, where the graph has it (else empty).
    pub abnormal_latent: Vec<f32>,
}

/// The decoder's outputs for a batch of n code pairs, flat row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderOutputs {
    /// Abnormal-label logits `[n, L, S, S]`.
    pub segmentation: Vec<f32>,
    /// Reconstruction x̂ `[n, 1, S, S]`.
    pub reconstruction: Vec<f32>,
    /// Normal-appearing image x̃ `[n, 1, S, S]`.
    pub normal_appearing: Vec<f32>,
}

/// A verified model bundle with both graphs open in ONNX Runtime.
pub struct BundleRunner {
    /// The bundle's manifest (validated, checksums verified).
    pub manifest: Manifest,
    encoder: Session,
    decoder: Session,
}

impl std::fmt::Debug for BundleRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleRunner")
            .field("model_id", &self.manifest.model_id)
            .finish_non_exhaustive()
    }
}

impl BundleRunner {
    /// Loads and verifies `dir/manifest.json`, then opens both graphs it names.
    pub fn open(dir: &Path) -> Result<Self, RuntimeError> {
        let manifest = Manifest::load(dir)?;
        let encoder = open_session(&dir.join(&manifest.encoder.file))?;
        let decoder = open_session(&dir.join(&manifest.decoder.file))?;
        Ok(Self {
            manifest,
            encoder,
            decoder,
        })
    }

    /// Side S of the model input.
    pub fn input_size(&self) -> usize {
        self.manifest.preprocess.input_size
    }

    /// Latent positions per slice (h·w).
    pub fn positions(&self) -> usize {
        self.manifest.grid.positions()
    }

    /// Encodes n preprocessed images, given as `[n, 1, S, S]` values.
    pub fn encode(&mut self, images: &[f32]) -> Result<EncoderOutputs, RuntimeError> {
        let s = self.input_size();
        if images.is_empty() || !images.len().is_multiple_of(s * s) {
            return Err(RuntimeError::Shape(format!(
                "encoder input has {} values, not a multiple of {s}×{s}",
                images.len()
            )));
        }
        let n = images.len() / (s * s);
        let input = Tensor::from_array(([n, 1, s, s], images.to_vec()))?;
        let out = self.encoder.run(ort::inputs![IMAGE => input])?;
        let get_i64 = |name: &str| -> Result<Vec<i64>, RuntimeError> {
            Ok(out[name].try_extract_tensor::<i64>()?.1.to_vec())
        };
        let get_f32 = |name: &str| -> Result<Vec<f32>, RuntimeError> {
            Ok(out[name].try_extract_tensor::<f32>()?.1.to_vec())
        };
        Ok(EncoderOutputs {
            normal_indices: get_i64(NORMAL_INDICES)?,
            abnormal_indices: get_i64(ABNORMAL_INDICES)?,
            abnormal_distance: get_f32(ABNORMAL_DISTANCE)?,
            abnormality: get_f32(ABNORMALITY)?,
            normal_latent: if out.contains_key(NORMAL_LATENT) {
                get_f32(NORMAL_LATENT)?
            } else {
                Vec::new()
            },
            abnormal_latent: if out.contains_key(ABNORMAL_LATENT) {
                get_f32(ABNORMAL_LATENT)?
            } else {
                Vec::new()
            },
        })
    }

    /// Decodes n code pairs, each given as `[n, h, w]` indices.
    pub fn decode(
        &mut self,
        normal: &[i64],
        abnormal: &[i64],
    ) -> Result<DecoderOutputs, RuntimeError> {
        let grid = self.manifest.grid;
        let p = grid.positions();
        if normal.is_empty() || !normal.len().is_multiple_of(p) || normal.len() != abnormal.len() {
            return Err(RuntimeError::Shape(format!(
                "decoder inputs have {} and {} indices; both must be n×{}×{}",
                normal.len(),
                abnormal.len(),
                grid.rows,
                grid.cols
            )));
        }
        let n = normal.len() / p;
        let shape = [n, grid.rows, grid.cols];
        let normal = Tensor::from_array((shape, normal.to_vec()))?;
        let abnormal = Tensor::from_array((shape, abnormal.to_vec()))?;
        let out = self.decoder.run(ort::inputs![
            NORMAL_INDICES => normal,
            ABNORMAL_INDICES => abnormal,
        ])?;
        let get = |name: &str| -> Result<Vec<f32>, RuntimeError> {
            Ok(out[name].try_extract_tensor::<f32>()?.1.to_vec())
        };
        Ok(DecoderOutputs {
            segmentation: get(SEGMENTATION)?,
            reconstruction: get(RECONSTRUCTION)?,
            normal_appearing: get(NORMAL_APPEARING)?,
        })
    }
}
