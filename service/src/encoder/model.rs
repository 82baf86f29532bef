//! The two graphs as batch runners: the encoder turns pre-processed slices into codes, the
//! decoder turns codes into segmentation logits, reconstruction and normal-appearing image.
//!
//! Each runner owns one ONNX Runtime session, stacks a batch into one tensor, runs it, and checks
//! every output's shape and values (indices within the codebook, finite numbers) before splitting
//! it back into per-slice results: a graph that disagrees with its manifest fails loudly instead of
//! producing codes that would be stored.

use std::borrow::Cow;

use diptych::bundle::names::{
    ABNORMAL_DISTANCE, ABNORMAL_INDICES, ABNORMALITY, IMAGE, NORMAL_APPEARING, NORMAL_INDICES,
    RECONSTRUCTION, SEGMENTATION,
};
use diptych::manifest::Manifest;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionOutputs};
use ort::value::Tensor;

use super::batcher::BatchRunner;

/// Why a runner failed on a batch: its input, ONNX Runtime, or an output that disagrees with the
/// manifest (then the bundle's graph and manifest disagree: re-export the bundle).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An input item has the wrong size.
    #[error("{what} has {got} values, not {expected}")]
    Input {
        /// Which input ("a slice", "a code").
        what: &'static str,
        /// Values given.
        got: usize,
        /// Values the geometry implies.
        expected: usize,
    },
    /// The remote encoder (a cluster's encoder role) failed or gave an answer the contract
    /// forbids.
    #[error("the remote encoder at {url}: {message}")]
    Remote {
        /// Its URL (`[encoder] remote_url`).
        url: String,
        /// What went wrong and what to check.
        message: String,
    },
    /// The remote encoder could not be reached or was too busy to answer: the batch is fine,
    /// and the same request may succeed later.
    #[error("the remote encoder at {url} is unavailable: {message}")]
    RemoteUnavailable {
        /// Its URL (`[encoder] remote_url`).
        url: String,
        /// What went wrong and what to check.
        message: String,
    },
    /// ONNX Runtime failed to build a tensor or run the graph.
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
    /// The graph gave no output of this name.
    #[error("the graph has no output {0:?}")]
    MissingOutput(&'static str),
    /// An output could not be read as the expected element type.
    #[error("output {name:?}: {source}")]
    OutputType {
        /// The output.
        name: &'static str,
        /// ONNX Runtime's error.
        source: ort::Error,
    },
    /// An output's shape is not what the manifest implies.
    #[error(
        "output {name:?} has shape {got:?} but the manifest implies {want:?}; the bundle's graph \
         and manifest disagree"
    )]
    Shape {
        /// The output.
        name: &'static str,
        /// Its shape.
        got: Vec<i64>,
        /// The shape the manifest implies.
        want: Vec<usize>,
    },
    /// A code index outside the codebook.
    #[error("output {name:?} holds index {value}, outside the codebook [0, {size})")]
    Index {
        /// The output.
        name: &'static str,
        /// The index.
        value: i64,
        /// Codebook size K.
        size: usize,
    },
    /// A NaN or infinite value.
    #[error("output {name:?} holds a non-finite value at {at}")]
    NonFinite {
        /// The output.
        name: &'static str,
        /// Flat position of the value.
        at: usize,
    },
}

/// The codes of one slice and its abnormality, as the encoder produced them.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceCode {
    /// Normal anatomy code: h×w indices in [0, K), row-major.
    pub normal: Vec<u32>,
    /// Abnormal anatomy code: h×w indices in [0, K), row-major.
    pub abnormal: Vec<u32>,
    /// Per-position abnormal commitment distance, h×w.
    pub abnormal_distance: Vec<f32>,
    /// Abnormality score in [0, 1].
    pub abnormality: f32,
}

/// A pair of codes to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct CodePair {
    /// Normal anatomy code, h×w.
    pub normal: Vec<u32>,
    /// Abnormal anatomy code, h×w.
    pub abnormal: Vec<u32>,
}

/// The decoder's outputs for one slice, each at the model's input size S×S.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Segmentation logits, L×S×S (L abnormal labels), channel-major.
    pub segmentation: Vec<f32>,
    /// x̂, the reconstruction, S×S.
    pub reconstruction: Vec<f32>,
    /// x̃, the normal-appearing image, S×S.
    pub normal_appearing: Vec<f32>,
}

/// The geometry both runners check their tensors against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Model input side S.
    pub size: usize,
    /// Grid rows h.
    pub grid_rows: usize,
    /// Grid columns w.
    pub grid_cols: usize,
    /// Codebook size K.
    pub codebook_size: usize,
    /// Number of abnormal labels L.
    pub labels: usize,
}

impl Geometry {
    /// The geometry a manifest describes.
    pub fn of(manifest: &Manifest) -> Self {
        Self {
            size: manifest.input_size(),
            grid_rows: manifest.grid.rows,
            grid_cols: manifest.grid.cols,
            codebook_size: manifest.codebook_size,
            labels: manifest.abnormal_labels.len(),
        }
    }

    /// Positions in a code, h·w.
    pub fn positions(&self) -> usize {
        self.grid_rows * self.grid_cols
    }

    /// Pixels in a model image, S·S.
    pub fn pixels(&self) -> usize {
        self.size * self.size
    }
}

/// The encoder outputs serving fetches; newer bundles also output the continuous latents
/// (`normal_latent`, `abnormal_latent`, for evaluation), which are never copied out here.
const SERVED_OUTPUTS: [&str; 4] = [
    NORMAL_INDICES,
    ABNORMAL_INDICES,
    ABNORMAL_DISTANCE,
    ABNORMALITY,
];

/// Runs the encoder graph on batches of pre-processed slices (S·S values each).
pub struct EncoderRunner {
    session: Session,
    geometry: Geometry,
    run_options: RunOptions<HasSelectedOutputs>,
}

impl EncoderRunner {
    /// Wraps an encoder session; it will compute only the outputs serving needs.
    pub fn new(session: Session, geometry: Geometry) -> Result<Self, ort::Error> {
        let selector = SERVED_OUTPUTS
            .iter()
            .fold(OutputSelector::no_default(), |s, name| s.with(*name));
        let run_options = RunOptions::new()?.with_outputs(selector);
        Ok(Self {
            session,
            geometry,
            run_options,
        })
    }
}

impl BatchRunner for EncoderRunner {
    type Item = Vec<f32>;
    type Output = SliceCode;
    type Error = RunError;

    fn run(&mut self, items: &[Vec<f32>]) -> Result<Vec<SliceCode>, RunError> {
        let g = self.geometry;
        let n = items.len();
        let mut data = Vec::with_capacity(n * g.pixels());
        for item in items {
            if item.len() != g.pixels() {
                return Err(RunError::Input {
                    what: "a slice",
                    got: item.len(),
                    expected: g.pixels(),
                });
            }
            data.extend_from_slice(item);
        }
        let image = Tensor::from_array(([n, 1, g.size, g.size], data))?;
        let outputs = self
            .session
            .run_with_options(ort::inputs![IMAGE => image], &self.run_options)?;
        let hw = [n, g.grid_rows, g.grid_cols];
        let normal = indices(&outputs, NORMAL_INDICES, &hw, g.codebook_size)?;
        let abnormal = indices(&outputs, ABNORMAL_INDICES, &hw, g.codebook_size)?;
        let distance = floats(&outputs, ABNORMAL_DISTANCE, &hw)?;
        let abnormality = floats(&outputs, ABNORMALITY, &[n])?;
        let p = g.positions();
        Ok((0..n)
            .map(|i| SliceCode {
                normal: normal[i * p..(i + 1) * p].to_vec(),
                abnormal: abnormal[i * p..(i + 1) * p].to_vec(),
                abnormal_distance: distance[i * p..(i + 1) * p].to_vec(),
                abnormality: abnormality[i],
            })
            .collect())
    }
}

/// Runs the decoder graph on batches of code pairs.
pub struct DecoderRunner {
    session: Session,
    geometry: Geometry,
}

impl DecoderRunner {
    /// Wraps a decoder session.
    pub fn new(session: Session, geometry: Geometry) -> Self {
        Self { session, geometry }
    }
}

impl BatchRunner for DecoderRunner {
    type Item = CodePair;
    type Output = Decoded;
    type Error = RunError;

    fn run(&mut self, items: &[CodePair]) -> Result<Vec<Decoded>, RunError> {
        let g = self.geometry;
        let n = items.len();
        let p = g.positions();
        let mut normal = Vec::with_capacity(n * p);
        let mut abnormal = Vec::with_capacity(n * p);
        for item in items {
            for code in [&item.normal, &item.abnormal] {
                if code.len() != p {
                    return Err(RunError::Input {
                        what: "a code",
                        got: code.len(),
                        expected: p,
                    });
                }
            }
            normal.extend(item.normal.iter().map(|&v| i64::from(v)));
            abnormal.extend(item.abnormal.iter().map(|&v| i64::from(v)));
        }
        let shape = [n, g.grid_rows, g.grid_cols];
        let normal = Tensor::from_array((shape, normal))?;
        let abnormal = Tensor::from_array((shape, abnormal))?;
        let outputs = self
            .session
            .run(ort::inputs![NORMAL_INDICES => normal, ABNORMAL_INDICES => abnormal])?;
        let (s, l) = (g.size, g.labels);
        let segmentation = floats(&outputs, SEGMENTATION, &[n, l, s, s])?;
        let reconstruction = floats(&outputs, RECONSTRUCTION, &[n, 1, s, s])?;
        let normal_appearing = floats(&outputs, NORMAL_APPEARING, &[n, 1, s, s])?;
        let (seg, img) = (l * s * s, s * s);
        Ok((0..n)
            .map(|i| Decoded {
                segmentation: segmentation[i * seg..(i + 1) * seg].to_vec(),
                reconstruction: reconstruction[i * img..(i + 1) * img].to_vec(),
                normal_appearing: normal_appearing[i * img..(i + 1) * img].to_vec(),
            })
            .collect())
    }
}

/// Output `name` as int64 indices of `shape`, each in [0, k), converted to u32.
fn indices(
    outputs: &SessionOutputs<'_>,
    name: &'static str,
    shape: &[usize],
    k: usize,
) -> Result<Vec<u32>, RunError> {
    let (got, values) = outputs
        .get(name)
        .ok_or(RunError::MissingOutput(name))?
        .try_extract_tensor::<i64>()
        .map_err(|source| RunError::OutputType { name, source })?;
    check_shape(name, got, shape)?;
    values
        .iter()
        .map(|&v| {
            u32::try_from(v)
                .ok()
                .filter(|&i| (i as usize) < k)
                .ok_or(RunError::Index {
                    name,
                    value: v,
                    size: k,
                })
        })
        .collect()
}

/// Output `name` as finite float32 values of `shape`.
fn floats<'a>(
    outputs: &'a SessionOutputs<'_>,
    name: &'static str,
    shape: &[usize],
) -> Result<Cow<'a, [f32]>, RunError> {
    let (got, values) = outputs
        .get(name)
        .ok_or(RunError::MissingOutput(name))?
        .try_extract_tensor::<f32>()
        .map_err(|source| RunError::OutputType { name, source })?;
    check_shape(name, got, shape)?;
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        return Err(RunError::NonFinite { name, at });
    }
    Ok(Cow::Borrowed(values))
}

fn check_shape(name: &'static str, got: &[i64], want: &[usize]) -> Result<(), RunError> {
    let matches = got.len() == want.len() && got.iter().zip(want).all(|(&g, &w)| g == w as i64);
    if matches {
        Ok(())
    } else {
        Err(RunError::Shape {
            name,
            got: got.to_vec(),
            want: want.to_vec(),
        })
    }
}
