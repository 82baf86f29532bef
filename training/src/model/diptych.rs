//! The whole network: encoder, two quantisers, segmentation decoder and SPADE image decoder.

use tch::{Kind, Tensor, nn};

use super::encoder::Encoder;
use super::image_decoder::ImageDecoder;
use super::quantizer::VectorQuantizer;
use super::seg_decoder::SegDecoder;
use crate::config::ModelConfig;

/// Everything a training step needs from one forward pass.
#[derive(Debug)]
pub struct Outputs {
    /// Encoder output, normal half. [N,D,h,w]
    pub z_n: Tensor,
    /// Encoder output, abnormal half. [N,D,h,w]
    pub z_a: Tensor,
    /// Quantised normal code, straight-through (gradient to z_n). [N,D,h,w]
    pub e_n: Tensor,
    /// Quantised abnormal code, straight-through (gradient to z_a). [N,D,h,w]
    pub e_a: Tensor,
    /// The normal codebook rows picked, without gradient (for the latent loss). [N,D,h,w]
    pub codes_n: Tensor,
    /// The abnormal codebook rows picked, without gradient. [N,D,h,w]
    pub codes_a: Tensor,
    /// Normal code indices. [N,h,w] i64
    pub idx_n: Tensor,
    /// Abnormal code indices. [N,h,w] i64
    pub idx_a: Tensor,
    /// Per position mean over D of (z_a − sg[e_a])², differentiable in z_a. [N,h,w]
    pub abnormal_distance: Tensor,
    /// Segmentation logits ŷ over the abnormal labels. [N,L,S,S]
    pub seg_logits: Tensor,
    /// Reconstruction x̂ (decoder conditioned on softmax ŷ). [N,1,S,S]
    pub recon: Tensor,
    /// Normal-appearing image x̃ (decoder conditioned on zeros). [N,1,S,S]
    pub normal_appearing: Tensor,
}

/// Share of lesion pixels at which the abnormality score is ½ (see [`Diptych::encode`]).
pub const ABNORMALITY_HALF_FRACTION: f64 = 0.004;

/// What the encoder graph of the bundle computes.
#[derive(Debug)]
pub struct Encoded {
    /// Normal code indices. [N,h,w] i64
    pub idx_n: Tensor,
    /// Abnormal code indices. [N,h,w] i64
    pub idx_a: Tensor,
    /// Per position mean over D of (z_a − e_a)². [N,h,w]
    pub abnormal_distance: Tensor,
    /// f / (f + ABNORMALITY_HALF_FRACTION), f the predicted lesion share of the image. [N]
    pub abnormality: Tensor,
    /// The continuous normal latent z_n before quantisation. [N,D,h,w]
    pub z_n: Tensor,
    /// The continuous abnormal latent z_a before quantisation. [N,D,h,w]
    pub z_a: Tensor,
}

/// What the decoder graph of the bundle computes from two index grids.
#[derive(Debug)]
pub struct Decoded {
    /// Segmentation logits. [N,L,S,S]
    pub seg_logits: Tensor,
    /// Reconstruction x̂. [N,1,S,S]
    pub recon: Tensor,
    /// Normal-appearing image x̃. [N,1,S,S]
    pub normal_appearing: Tensor,
}

/// The diptych network; its variables live under the given VarStore path.
#[derive(Debug)]
pub struct Diptych {
    config: ModelConfig,
    /// The encoder (`encoder.*`).
    pub encoder: Encoder,
    /// The normal codebook (`quantizer_normal.*`).
    pub quantizer_normal: VectorQuantizer,
    /// The abnormal codebook (`quantizer_abnormal.*`).
    pub quantizer_abnormal: VectorQuantizer,
    /// The segmentation decoder (`seg_decoder.*`).
    pub seg_decoder: SegDecoder,
    /// The SPADE image decoder (`image_decoder.*`).
    pub image_decoder: ImageDecoder,
}

impl Diptych {
    /// Creates the network under `root` (normally `vs.root()`); the config must be valid.
    pub fn new(root: &nn::Path, config: &ModelConfig) -> Self {
        Self {
            config: config.clone(),
            encoder: Encoder::new(&(root / "encoder"), config),
            quantizer_normal: VectorQuantizer::new(&(root / "quantizer_normal"), config),
            quantizer_abnormal: VectorQuantizer::with_null_code(
                &(root / "quantizer_abnormal"),
                config,
                config.abnormal_null_code,
            ),
            seg_decoder: SegDecoder::new(&(root / "seg_decoder"), config),
            image_decoder: ImageDecoder::new(&(root / "image_decoder"), config),
        }
    }

    /// The sizes this network was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Full forward pass on images x [N,1,S,S]. With `train`, BatchNorm uses batch statistics
    /// and updates its running statistics; the codebooks change only by [`Self::update_codebooks`].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Outputs {
        let (z_n, z_a) = self.encoder.forward_t(x, train);
        let qn = self.quantizer_normal.forward(&z_n);
        let qa = self.quantizer_abnormal.forward(&z_a);
        let (seg_logits, recon, normal_appearing) = self.decode_codes(&qn.e, &qa.e, train);
        Outputs {
            z_n,
            z_a,
            e_n: qn.e,
            e_a: qa.e,
            codes_n: qn.codes,
            codes_a: qa.codes,
            idx_n: qn.indices,
            idx_a: qa.indices,
            abnormal_distance: qa.distance,
            seg_logits,
            recon,
            normal_appearing,
        }
    }

    /// One EMA step of both codebooks from a training forward pass. The normal codebook follows
    /// every position; the abnormal one follows the positions where `abnormal_weights` [N,h,w]
    /// is 1 (the lesion positions), or every position when it is `None`. `seed` drives the
    /// re-initialisation of dead codes (pass a function of the step).
    pub fn update_codebooks(&self, out: &Outputs, abnormal_weights: Option<&Tensor>, seed: u64) {
        self.quantizer_normal
            .update(&out.z_n, &out.idx_n, None, seed);
        self.quantizer_abnormal
            .update(&out.z_a, &out.idx_a, abnormal_weights, seed ^ 0x5EED);
    }

    /// Decoder graph order: seg decoder on e_a → softmax → image decoder(e_n, softmax) = x̂ and
    /// image decoder(e_n, zeros) = x̃, the two renderings run as one batch of 2N.
    fn decode_codes(&self, e_n: &Tensor, e_a: &Tensor, train: bool) -> (Tensor, Tensor, Tensor) {
        let seg_logits = self.seg_decoder.forward_t(e_a, train);
        let condition = seg_logits.softmax(1, Kind::Float);
        let both_codes = Tensor::cat(&[e_n, e_n], 0);
        let n = e_n.size()[0];
        // x̃'s zero condition modulates every sample alike: computed once (same result).
        let images = self
            .image_decoder
            .forward_with_zero_tail(&both_codes, &condition, n, train);
        (seg_logits, images.narrow(0, 0, n), images.narrow(0, n, n))
    }

    /// The encoder graph in inference mode: indices, per-position distance and abnormality score.
    ///
    /// The score follows the lesion the abnormal code decodes to: with `f` the share of pixels
    /// the segmentation decoder labels as lesion, `abnormality = f / (f + ABNORMALITY_HALF_FRACTION)`
    /// (0 without a predicted lesion, ½ at a lesion of 0.4 % of the image — about 8 × 8 pixels
    /// at 128² — and towards 1 for large ones). On held-out slices it separates healthy from
    /// diseased slices far better than the smallest commitment distance, which one lesion-like
    /// position of an otherwise healthy slice decides (README, Evaluation).
    pub fn encode(&self, x: &Tensor) -> Encoded {
        tch::no_grad(|| {
            let (z_n, z_a) = self.encoder.forward_t(x, false);
            let idx_n = self.quantizer_normal.nearest(&z_n);
            let qa = self.quantizer_abnormal.forward(&z_a);
            let e_a = self.quantizer_abnormal.lookup(&qa.indices);
            let seg_logits = self.seg_decoder.forward_t(&e_a, false);
            let lesion_map = seg_logits.argmax(1, false).ne(0).to_kind(Kind::Float);
            let lesion = lesion_map.mean_dim(&[1i64, 2][..], false, Kind::Float);
            let abnormality = &lesion / (&lesion + ABNORMALITY_HALF_FRACTION);
            let idx_a = if self.config.null_outside_lesion {
                null_outside_lesion(&qa.indices, &lesion_map)
            } else {
                qa.indices
            };
            Encoded {
                idx_n,
                idx_a,
                abnormal_distance: qa.distance,
                abnormality,
                z_n,
                z_a,
            }
        })
    }

    /// The decoder graph in inference mode: codes looked up from index grids [N,h,w], decoded.
    pub fn decode(&self, idx_n: &Tensor, idx_a: &Tensor) -> Decoded {
        tch::no_grad(|| {
            let e_n = self.quantizer_normal.lookup(idx_n);
            let e_a = self.quantizer_abnormal.lookup(idx_a);
            let (seg_logits, recon, normal_appearing) = self.decode_codes(&e_n, &e_a, false);
            Decoded {
                seg_logits,
                recon,
                normal_appearing,
            }
        })
    }
}

/// Abnormal indices [N,h,w] with every cell that is more than one cell away from a predicted
/// lesion pixel of `lesion_map` [N,S,S] (1 = lesion) set to the null code 0
/// (`ModelConfig::null_outside_lesion`). The ring of cells around the lesion keeps its codes:
/// the segmentation decoder reads them too (its 3×3 convolutions see the neighbours), and
/// nulling them shrinks the lesion the code decodes to.
fn null_outside_lesion(indices: &Tensor, lesion_map: &Tensor) -> Tensor {
    let cell = lesion_map.size()[1] / indices.size()[1];
    let near_lesion = lesion_map
        .unsqueeze(1)
        .max_pool2d([cell, cell], [cell, cell], [0, 0], [1, 1], false)
        .max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false)
        .squeeze_dim(1)
        .gt(0.0);
    indices.where_self(&near_lesion, &indices.zeros_like())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn tiny() -> ModelConfig {
        ModelConfig {
            input_size: 32,
            downsamples: 2,
            codebook_size: 8,
            code_dim: 4,
            widths: vec![4, 6, 8],
            spade_hidden: 4,
            ..Default::default()
        }
    }

    #[test]
    fn output_shapes_follow_the_config() {
        let config = tiny();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Diptych::new(&vs.root(), &config);
        let x = Tensor::rand([3, 1, 32, 32], (Kind::Float, Device::Cpu));
        let out = net.forward_t(&x, true);
        assert_eq!(out.z_n.size(), [3, 4, 8, 8]);
        assert_eq!(out.e_a.size(), [3, 4, 8, 8]);
        assert_eq!(out.idx_n.size(), [3, 8, 8]);
        assert_eq!(out.abnormal_distance.size(), [3, 8, 8]);
        assert_eq!(out.seg_logits.size(), [3, 4, 32, 32]);
        assert_eq!(out.recon.size(), [3, 1, 32, 32]);
        assert_eq!(out.normal_appearing.size(), [3, 1, 32, 32]);
        let enc = net.encode(&x);
        assert_eq!(enc.abnormality.size(), [3]);
        let dec = net.decode(&enc.idx_n, &enc.idx_a);
        assert_eq!(dec.recon.size(), [3, 1, 32, 32]);
    }

    #[test]
    fn varstore_names_match_model_md() {
        let config = tiny();
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = Diptych::new(&vs.root(), &config);
        let names = vs.variables();
        for name in [
            "encoder.stem.conv.weight",
            "encoder.stem.bn.running_var",
            "encoder.down1.conv.weight",
            "encoder.mid.bn.weight",
            "encoder.head.bias",
            "quantizer_normal.codebook",
            "quantizer_abnormal.embed_sum",
            "quantizer_abnormal.cluster_size",
            "seg_decoder.inp.conv.weight",
            "seg_decoder.up1.bn.running_mean",
            "seg_decoder.head.weight",
            "image_decoder.inp.conv.weight",
            "image_decoder.up0.spade.shared.bias",
            "image_decoder.up1.spade.gamma.weight",
            "image_decoder.up1.spade.beta.bias",
            "image_decoder.up1.spade.bn.running_mean",
            "image_decoder.head.bias",
        ] {
            assert!(names.contains_key(name), "missing {name}");
        }
        assert!(!names.contains_key("image_decoder.inp.conv.bias"));
        assert!(!names.contains_key("image_decoder.inp.spade.bn.weight"));
        assert_eq!(names["encoder.down0.conv.weight"].size(), [6, 4, 4, 4]);
        assert_eq!(names["seg_decoder.up0.conv.weight"].size(), [6, 8, 3, 3]);
        assert_eq!(names["encoder.head.weight"].size(), [8, 8, 1, 1]);
    }

    #[test]
    fn cells_away_from_a_predicted_lesion_take_the_null_code() {
        // A 4×4 grid of 2×2-pixel cells, codes 1..=16; one lesion pixel in cell (1, 1).
        let indices = Tensor::arange_start(1, 17, (Kind::Int64, Device::Cpu)).reshape([1, 4, 4]);
        let mut map = vec![0f32; 64];
        map[3 * 8 + 2] = 1.0;
        let lesion = Tensor::from_slice(&map).reshape([1, 8, 8]);
        let masked = null_outside_lesion(&indices, &lesion);
        assert_eq!(
            Vec::<i64>::try_from(masked.flatten(0, -1)).unwrap(),
            [1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 0, 0, 0, 0],
            "the lesion's cell and its ring keep their codes, every other cell is null"
        );
    }

    #[test]
    fn eval_forward_matches_encode_then_decode() {
        let config = tiny();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Diptych::new(&vs.root(), &config);
        let x = Tensor::rand([2, 1, 32, 32], (Kind::Float, Device::Cpu));
        // a few training passes so BN running stats and codebooks are not at their init
        for _ in 0..3 {
            let out = net.forward_t(&x, true);
            net.update_codebooks(&out, None, 1);
        }
        let out = tch::no_grad(|| net.forward_t(&x, false));
        let enc = net.encode(&x);
        let dec = net.decode(&enc.idx_n, &enc.idx_a);
        assert!(out.idx_n.equal(&enc.idx_n) && out.idx_a.equal(&enc.idx_a));
        let diff = (&out.recon - &dec.recon).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
        let diff = (&out.abnormal_distance - &enc.abnormal_distance)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }
}
