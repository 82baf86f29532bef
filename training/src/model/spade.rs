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
        let r = h.size()[2];
        let s = condition.size()[2];
        let pooled = if r == s {
            condition.shallow_clone()
        } else {
            let k = s / r;
            condition.avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)
        };
        let a = self.shared.forward(&pooled).relu();
        let normalized = self.bn.forward_t(h, train);
        normalized * (self.gamma.forward(&a) + 1.0) + self.beta.forward(&a)
    }
}
