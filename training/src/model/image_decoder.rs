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

    fn forward_t(&self, x: &Tensor, condition: &Tensor, zero_tail: i64, train: bool) -> Tensor {
        self.spade
            .forward_with_zero_tail(&self.conv.forward(x), condition, zero_tail, train)
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
        self.forward_with_zero_tail(e_n, condition, 0, train)
    }

    /// The images [M+Z,1,S,S] of e_n [M+Z,D,h,w]: the first M under `condition` [M,L,S,S], the
    /// last Z = `zero_tail` under the all-zero condition — as [`Self::forward_t`] with Z zero
    /// maps appended to `condition`, with the SPADE modulation of the zero condition computed
    /// once instead of Z times (`Spade::forward_with_zero_tail`).
    pub fn forward_with_zero_tail(
        &self,
        e_n: &Tensor,
        condition: &Tensor,
        zero_tail: i64,
        train: bool,
    ) -> Tensor {
        let mut h = self.inp.forward_t(e_n, condition, zero_tail, train);
        for block in &self.up {
            h = block.forward_t(&upsample2(&h), condition, zero_tail, train);
        }
        self.head.forward(&h).sigmoid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn config() -> ModelConfig {
        ModelConfig {
            input_size: 32,
            downsamples: 2,
            code_dim: 4,
            widths: vec![4, 6, 8],
            spade_hidden: 5,
            ..ModelConfig::default()
        }
    }

    /// The shared zero condition renders what appending zero maps renders, in training (batch
    /// statistics) and in eval mode, and gives the weights the same gradients.
    #[test]
    fn a_shared_zero_condition_equals_appended_zero_maps() {
        let config = config();
        let vs = nn::VarStore::new(Device::Cpu);
        let decoder = ImageDecoder::new(&(vs.root() / "image_decoder"), &config);
        let opts = (Kind::Float, Device::Cpu);
        let n = 3;
        let e_n = Tensor::randn([2 * n, 4, 8, 8], opts);
        let condition =
            Tensor::randn([n, config.abnormal_labels as i64, 32, 32], opts).softmax(1, Kind::Float);
        let appended = Tensor::cat(&[&condition, &condition.zeros_like()], 0);
        let weight = &vs.variables()["image_decoder.up1.spade.gamma.weight"];
        let mut gradients = Vec::new();
        for train in [true, false] {
            let plain = decoder.forward_t(&e_n, &appended, train);
            let shared = decoder.forward_with_zero_tail(&e_n, &condition, n, train);
            assert_eq!(plain.size(), [2 * n, 1, 32, 32]);
            let diff = (&plain - &shared).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "train {train}: renderings differ by {diff}");
            if train {
                for image in [plain, shared] {
                    let grad = Tensor::run_backward(
                        &[image.square().sum(Kind::Float)],
                        &[weight],
                        true,
                        false,
                    );
                    gradients.push(grad[0].shallow_clone());
                }
            }
        }
        let scale = gradients[0].abs().max().double_value(&[]);
        let diff = (&gradients[0] - &gradients[1])
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            scale > 0.0 && diff <= 1e-5 * scale,
            "gradients differ by {diff} of {scale}"
        );
    }
}
