//! The trained tensors by VarStore path, and their conversion into the exported convolutions with
//! every BatchNorm folded into the convolution that precedes it.

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor, nn::VarStore};

use super::ExportError;

/// A convolution ready for ONNX: weight `[out, in, kh, kw]` and an optional bias, in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedConv {
    /// Weight shape `[out, in, kh, kw]`.
    pub shape: [usize; 4],
    /// Weight values, row-major.
    pub weight: Vec<f32>,
    /// Bias per output channel, if the convolution has one (always, once a BatchNorm is folded).
    pub bias: Option<Vec<f32>>,
}

impl FoldedConv {
    /// Adds `delta` to every bias value (creating a zero bias first if there is none).
    pub fn shift_bias(&mut self, delta: f32) {
        let bias = self.bias.get_or_insert_with(|| vec![0.0; self.shape[0]]);
        bias.iter_mut().for_each(|b| *b += delta);
    }
}

/// The named tensors of a trained network (a tch VarStore or a checkpoint written from one).
#[derive(Debug)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Takes the variables (trainable and buffers) of a live VarStore.
    pub fn from_var_store(vs: &VarStore) -> Self {
        Self::from_named(vs.variables())
    }

    /// Reads a checkpoint written by `VarStore::save` (or `Tensor::save_multi`).
    pub fn load(path: &Path) -> Result<Self, ExportError> {
        if !path.is_file() {
            return Err(ExportError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "checkpoint not found; pass the `last.ot` that `diptych-train train` wrote",
                ),
            });
        }
        let named = Tensor::load_multi(path)?;
        Ok(Self::from_named(named.into_iter().collect()))
    }

    /// Wraps named tensors, moving them to the CPU in f64 so that folding loses no precision.
    pub fn from_named(tensors: HashMap<String, Tensor>) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|(name, t)| {
                let t = t
                    .detach()
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Double)
                    .contiguous();
                (name, t)
            })
            .collect();
        Self { tensors }
    }

    /// The same weights with the tensor at `name` replaced by `tensor` (added if absent); the
    /// other tensors are shared, not copied.
    pub fn replaced(&self, name: &str, tensor: Tensor) -> Self {
        let mut tensors: HashMap<String, Tensor> = self
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        tensors.insert(name.to_string(), tensor);
        Self::from_named(tensors)
    }

    /// Whether a tensor of that path exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor at a VarStore path.
    pub fn tensor(&self, name: &str) -> Result<&Tensor, ExportError> {
        self.tensors
            .get(name)
            .ok_or_else(|| ExportError::MissingTensor {
                name: name.to_string(),
            })
    }

    /// The tensor at a path, checked to have exactly the given shape.
    pub fn shaped(&self, name: &str, expected: &[i64]) -> Result<&Tensor, ExportError> {
        let t = self.tensor(name)?;
        let found = t.size();
        if found != expected {
            return Err(ExportError::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found,
            });
        }
        Ok(t)
    }

    /// A plain convolution at `path` (`path.weight`, optional `path.bias`) of the given shape.
    pub fn conv(&self, path: &str, shape: [usize; 4]) -> Result<FoldedConv, ExportError> {
        let w = self.shaped(&format!("{path}.weight"), &shape.map(|d| d as i64))?;
        let bias_name = format!("{path}.bias");
        let bias = if self.contains(&bias_name) {
            Some(to_f32(self.shaped(&bias_name, &[shape[0] as i64])?)?)
        } else {
            None
        };
        Ok(FoldedConv {
            shape,
            weight: to_f32(w)?,
            bias,
        })
    }

    /// The convolution at `conv` followed by the eval-mode BatchNorm at `bn`, folded into one
    /// convolution: `w' = w·s`, `b' = (b − μ)·s + β` with `s = γ / √(σ² + eps)`. A BatchNorm
    /// without affine parameters (SPADE's) has γ = 1, β = 0.
    pub fn conv_bn(
        &self,
        conv: &str,
        bn: &str,
        shape: [usize; 4],
        eps: f64,
    ) -> Result<FoldedConv, ExportError> {
        let out = [shape[0] as i64];
        let w = self.shaped(&format!("{conv}.weight"), &shape.map(|d| d as i64))?;
        let bias_name = format!("{conv}.bias");
        let b = if self.contains(&bias_name) {
            self.shaped(&bias_name, &out)?.shallow_clone()
        } else {
            Tensor::zeros(out, (Kind::Double, Device::Cpu))
        };
        let mean = self.shaped(&format!("{bn}.running_mean"), &out)?;
        let var = self.shaped(&format!("{bn}.running_var"), &out)?;
        let gamma_name = format!("{bn}.weight");
        let (gamma, beta) = if self.contains(&gamma_name) {
            (
                self.shaped(&gamma_name, &out)?.shallow_clone(),
                self.shaped(&format!("{bn}.bias"), &out)?.shallow_clone(),
            )
        } else {
            (
                Tensor::ones(out, (Kind::Double, Device::Cpu)),
                Tensor::zeros(out, (Kind::Double, Device::Cpu)),
            )
        };
        let scale = gamma / (var + eps).sqrt();
        let weight = w * scale.view([-1, 1, 1, 1]);
        let bias = (b - mean) * &scale + beta;
        Ok(FoldedConv {
            shape,
            weight: to_f32(&weight)?,
            bias: Some(to_f32(&bias)?),
        })
    }

    /// A codebook `[K, D]` at `path`, as f32 row-major.
    pub fn codebook(&self, path: &str, k: usize, d: usize) -> Result<Vec<f32>, ExportError> {
        to_f32(self.shaped(path, &[k as i64, d as i64])?)
    }
}

/// Flattens a tensor into f32 values, row-major.
fn to_f32(t: &Tensor) -> Result<Vec<f32>, ExportError> {
    Ok(Vec::<f32>::try_from(
        t.to_kind(Kind::Float).contiguous().view([-1]),
    )?)
}
