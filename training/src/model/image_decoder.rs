//! The SPADE image decoder: e_n [N,D,h,w] and a condition [N,L,S,S] → image [N,1,S,S].

use tch::Tensor;
use tch::nn::{self, Module};

use super::block::{conv, upsample2};
use super::spade::Spade;
use crate::config::ModelConfig;

/// One decoder level: conv3x3 (no bias) then SPADE then ReLU (`<path>.conv`, `<path>.spade`).
#[derive(Debug)]
struct SpadeBlock {
    conv: nn::Conv2D,
    spade: Spade,
}

impl SpadeBlock {
    fn new(path: &nn::Path, config: &ModelConfig, c_in: usize, c_out: usize) -> Self {
        Self {
            conv: conv(path / "conv", c_in, c_out, 3, 1, 1, false),
            spade: Spade::new(&(path / "spade"), config, c_out),
        }
    }

    fn forward_t(&self, x: &Tensor, condition: &Tensor, train: bool) -> Tensor {
        self.spade
            .forward_t(&self.conv.forward(x), condition, train)
            .relu()
    }
}

/// The same level structure as the segmentation decoder, every normalisation a SPADE block,
/// and a conv3x3 + sigmoid head.
#[derive(Debug)]
pub struct ImageDecoder {
    inp: SpadeBlock,
    up: Vec<SpadeBlock>,
    head: nn::Conv2D,
}

impl ImageDecoder {
    /// Creates the decoder under `path` (`image_decoder.*` in docs/METHOD.md §1).
    pub fn new(path: &nn::Path, config: &ModelConfig) -> Self {
        let w = &config.widths;
        let n = config.downsamples;
        let inp = SpadeBlock::new(&(path / "inp"), config, config.code_dim, w[n]);
        let up = (0..n)
            .map(|j| SpadeBlock::new(&(path / format!("up{j}")), config, w[n - j], w[n - j - 1]))
            .collect();
        let head = conv(path / "head", w[0], 1, 3, 1, 1, true);
        Self { inp, up, head }
    }

    /// The image [N,1,S,S] in [0,1] decoded from e_n under `condition` (softmax of ŷ, or zeros).
    pub fn forward_t(&self, e_n: &Tensor, condition: &Tensor, train: bool) -> Tensor {
        let mut h = self.inp.forward_t(e_n, condition, train);
        for block in &self.up {
            h = block.forward_t(&upsample2(&h), condition, train);
        }
        self.head.forward(&h).sigmoid()
    }
}
