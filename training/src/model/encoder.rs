//! The encoder: image [N,1,S,S] → z [N,2D,h,w], split into z_n and z_a.

use tch::Tensor;
use tch::nn::{self, Module};

use super::block::{ConvBn, conv, leaky_relu};
use crate::config::ModelConfig;

/// Strided conv blocks with BatchNorm and LeakyReLU, then a 1×1 head to 2·D channels.
#[derive(Debug)]
pub struct Encoder {
    stem: ConvBn,
    down: Vec<ConvBn>,
    mid: ConvBn,
    head: nn::Conv2D,
    slope: f64,
    code_dim: i64,
}

impl Encoder {
    /// Creates the encoder under `path` (`encoder.*` in docs/METHOD.md §1).
    pub fn new(path: &nn::Path, config: &ModelConfig) -> Self {
        let w = &config.widths;
        let n = config.downsamples;
        let stem = ConvBn::new(&(path / "stem"), config, 1, w[0], 3, 1, 1);
        let down = (0..n)
            .map(|i| {
                ConvBn::new(
                    &(path / format!("down{i}")),
                    config,
                    w[i],
                    w[i + 1],
                    4,
                    2,
                    1,
                )
            })
            .collect();
        let mid = ConvBn::new(&(path / "mid"), config, w[n], w[n], 3, 1, 1);
        let head = conv(path / "head", w[n], 2 * config.code_dim, 1, 1, 0, true);
        Self {
            stem,
            down,
            mid,
            head,
            slope: config.leaky_slope,
            code_dim: config.code_dim as i64,
        }
    }

    /// Returns (z_n, z_a), each [N,D,h,w].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut h = leaky_relu(&self.stem.forward_t(x, train), self.slope);
        for block in &self.down {
            h = leaky_relu(&block.forward_t(&h, train), self.slope);
        }
        h = leaky_relu(&self.mid.forward_t(&h, train), self.slope);
        let z = self.head.forward(&h);
        let d = self.code_dim;
        (z.narrow(1, 0, d), z.narrow(1, d, d))
    }
}
