//! SPADE (Park 2019): BatchNorm without affine, modulated by convs over a conditioning map.

use tch::Tensor;
use tch::nn::{self, Module, ModuleT};

use super::block::{batch_norm, conv};
use crate::config::ModelConfig;

/// `out = BN(h) ⊙ (1 + γ(a)) + β(a)`, `a = relu(shared(s_r))`, with s_r the condition
/// average-pooled to h's resolution (`<block>.spade.{shared,gamma,beta,bn}`).
#[derive(Debug)]
pub struct Spade {
    bn: nn::BatchNorm,
    shared: nn::Conv2D,
    gamma: nn::Conv2D,
    beta: nn::Conv2D,
}

impl Spade {
    /// Creates the block under `path` for a layer of `channels` channels.
    pub fn new(path: &nn::Path, config: &ModelConfig, channels: usize) -> Self {
        let (labels, hidden) = (config.abnormal_labels, config.spade_hidden);
        Self {
            bn: batch_norm(path / "bn", channels, config, false),
            shared: conv(path / "shared", labels, hidden, 3, 1, 1, true),
            gamma: conv(path / "gamma", hidden, channels, 3, 1, 1, true),
            beta: conv(path / "beta", hidden, channels, 3, 1, 1, true),
        }
    }

    /// Modulates h [N,C,r,r] by the condition s [N,L,S,S] (pooled by S/r when r < S).
    pub fn forward_t(&self, h: &Tensor, condition: &Tensor, train: bool) -> Tensor {
        self.forward_with_zero_tail(h, condition, 0, train)
    }

    /// As [`Self::forward_t`] for h [M+Z,C,r,r] whose first M samples have the condition
    /// s [M,L,S,S] and whose last Z = `zero_tail` samples have the all-zero condition (x̃, the
    /// normal-appearing rendering). The same as passing s with Z zero maps appended, but γ and β
    /// of the zero condition — the same for every such sample — are computed once.
    pub fn forward_with_zero_tail(
        &self,
        h: &Tensor,
        condition: &Tensor,
        zero_tail: i64,
        train: bool,
    ) -> Tensor {
        let (c, r) = (h.size()[1], h.size()[2]);
        let s = condition.size()[2];
        let pooled = if r == s {
            condition.shallow_clone()
        } else {
            let k = s / r;
            condition.avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)
        };
        let (mut gamma, mut beta) = self.modulation(&pooled);
        if zero_tail > 0 {
            let labels = pooled.size()[1];
            let zero = Tensor::zeros([1, labels, r, r], (pooled.kind(), pooled.device()));
            let (g0, b0) = self.modulation(&zero);
            let tail = [zero_tail, c, r, r];
            gamma = Tensor::cat(&[gamma, g0.expand(tail, false)], 0);
            beta = Tensor::cat(&[beta, b0.expand(tail, false)], 0);
        }
        let normalized = self.bn.forward_t(h, train);
        normalized * (gamma + 1.0) + beta
    }

    /// γ and β of a pooled condition.
    fn modulation(&self, pooled: &Tensor) -> (Tensor, Tensor) {
        let a = self.shared.forward(pooled).relu();
        (self.gamma.forward(&a), self.beta.forward(&a))
    }
}
