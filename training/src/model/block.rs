//! The conv + BatchNorm block shared by the encoder and the segmentation decoder, and small ops.

use tch::Tensor;
use tch::nn::{self, ModuleT};

use crate::config::ModelConfig;

/// A 2-D convolution with square kernel `k`, stride and padding, He-initialised.
pub fn conv(
    path: nn::Path,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride: stride as i64,
        padding: padding as i64,
        bias,
        ..Default::default()
    };
    nn::conv2d(path, c_in as i64, c_out as i64, k as i64, config)
}

/// BatchNorm with the config's eps and momentum, affine (weight 1, bias 0) or not.
pub fn batch_norm(
    path: nn::Path,
    channels: usize,
    config: &ModelConfig,
    affine: bool,
) -> nn::BatchNorm {
    let bn = nn::BatchNormConfig {
        eps: config.bn_eps,
        momentum: config.bn_momentum,
        affine,
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm2d(path, channels as i64, bn)
}

/// LeakyReLU with the given negative slope (< 1): max(x, slope·x).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    x.maximum(&(x * slope))
}

/// Nearest-neighbour upsampling by 2 (ONNX Resize nearest, asymmetric, floor).
pub fn upsample2(x: &Tensor) -> Tensor {
    let (_, _, h, w) = x.size4().expect("upsample2 takes [N,C,H,W]");
    x.upsample_nearest2d([h * 2, w * 2], None, None)
}

/// Conv without bias followed by affine BatchNorm: `<path>.conv` and `<path>.bn`.
#[derive(Debug)]
pub struct ConvBn {
    /// The convolution (`<path>.conv`).
    pub conv: nn::Conv2D,
    /// The BatchNorm (`<path>.bn`).
    pub bn: nn::BatchNorm,
}

impl ConvBn {
    /// Creates the block under `path`.
    pub fn new(
        path: &nn::Path,
        config: &ModelConfig,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        Self {
            conv: conv(path / "conv", c_in, c_out, k, stride, padding, false),
            bn: batch_norm(path / "bn", c_out, config, true),
        }
    }

    /// conv then BatchNorm (batch statistics when `train`, running statistics otherwise).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&x.apply(&self.conv), train)
    }
}
