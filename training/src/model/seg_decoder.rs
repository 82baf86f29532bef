//! The segmentation decoder: e_a [N,D,h,w] → abnormal-label logits ŷ [N,L,S,S].

use tch::Tensor;
use tch::nn::{self, Module};

use super::block::{ConvBn, conv, upsample2};
use crate::config::ModelConfig;

/// conv+BN+ReLU at the grid, then per level: upsample ×2, conv+BN+ReLU; a 1×1 head to L logits.
/// With `seg_refine_convs = r`, each level's conv is followed by r more at the same width
/// (`<level>_refine<k>`, level `inp` or `up<j>`).
#[derive(Debug)]
pub struct SegDecoder {
    inp: ConvBn,
    up: Vec<ConvBn>,
    /// The extra blocks of level 0 (the grid) … n, `seg_refine_convs` each.
    refine: Vec<Vec<ConvBn>>,
    head: nn::Conv2D,
}

/// The variable-path name of refine block `k` after level `level` (`inp` or `up<j>`).
pub fn refine_name(level: &str, k: usize) -> String {
    format!("{level}_refine{k}")
}

/// The level names in order: `inp` (at the grid), then `up0` … `up<n-1>`.
fn level_names(downsamples: usize) -> Vec<String> {
    std::iter::once("inp".to_string())
        .chain((0..downsamples).map(|j| format!("up{j}")))
        .collect()
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
        let refine = level_names(n)
            .iter()
            .enumerate()
            .map(|(level, name)| {
                let width = w[n - level];
                (0..config.seg_refine_convs)
                    .map(|k| {
                        let p = path / refine_name(name, k);
                        ConvBn::new(&p, config, width, width, 3, 1, 1)
                    })
                    .collect()
            })
            .collect();
        let head = conv(path / "head", w[0], config.abnormal_labels, 1, 1, 0, true);
        Self {
            inp,
            up,
            refine,
            head,
        }
    }

    /// Logits ŷ [N,L,S,S] from codes e_a [N,D,h,w].
    pub fn forward_t(&self, e_a: &Tensor, train: bool) -> Tensor {
        let refine = |mut h: Tensor, level: usize| {
            for block in &self.refine[level] {
                h = block.forward_t(&h, train).relu();
            }
            h
        };
        let mut h = refine(self.inp.forward_t(e_a, train).relu(), 0);
        for (j, block) in self.up.iter().enumerate() {
            h = refine(block.forward_t(&upsample2(&h), train).relu(), j + 1);
        }
        self.head.forward(&h)
    }
}
