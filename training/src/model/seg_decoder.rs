//! The segmentation decoder: e_a [N,D,h,w] → abnormal-label logits ŷ [N,L,S,S].

use tch::Tensor;
use tch::nn::{self, Module};

use super::block::{ConvBn, conv, upsample2};
use crate::config::ModelConfig;

/// conv+BN+ReLU at the grid, then per level: upsample ×2, conv+BN+ReLU; a 1×1 head to L logits.
#[derive(Debug)]
pub struct SegDecoder {
    inp: ConvBn,
    up: Vec<ConvBn>,
    head: nn::Conv2D,
}

impl SegDecoder {
    /// Creates the decoder under `path` (`seg_decoder.*` in docs/METHOD.md §1).
    pub fn new(path: &nn::Path, config: &ModelConfig) -> Self {
        let w = &config.widths;
        let n = config.downsamples;
        let inp = ConvBn::new(&(path / "inp"), config, config.code_dim, w[n], 3, 1, 1);
        let up = (0..n)
            .map(|j| {
                ConvBn::new(
                    &(path / format!("up{j}")),
                    config,
                    w[n - j],
                    w[n - j - 1],
                    3,
                    1,
                    1,
                )
            })
            .collect();
        let head = conv(path / "head", w[0], config.abnormal_labels, 1, 1, 0, true);
        Self { inp, up, head }
    }

    /// Logits ŷ [N,L,S,S] from codes e_a [N,D,h,w].
    pub fn forward_t(&self, e_a: &Tensor, train: bool) -> Tensor {
        let mut h = self.inp.forward_t(e_a, train).relu();
        for block in &self.up {
            h = block.forward_t(&upsample2(&h), train).relu();
        }
        self.head.forward(&h)
    }
}
