//! The two exported graphs, built from the model configuration and the trained weights by the
//! VarStore names of docs/METHOD.md §1: `encoder.onnx` (image → codes, abnormality) and
//! `decoder.onnx` (codes → segmentation, x̂, x̃). Every BatchNorm is folded into its convolution.
//! The names and shapes of the graphs' inputs and outputs are the bundle contract's
//! ([`diptych::bundle::signature`]), the ones the service checks.

use diptych::bundle::names::{
    ABNORMAL_DISTANCE, ABNORMAL_INDICES, ABNORMAL_LATENT, ABNORMALITY, CODEBOOK_ABNORMAL,
    CODEBOOK_NORMAL, IMAGE, NORMAL_APPEARING, NORMAL_INDICES, NORMAL_LATENT, RECONSTRUCTION,
    SEGMENTATION,
};
use diptych::bundle::onnx::ModelProto;
use diptych::bundle::signature::{self, Signature};

use super::ExportError;
use super::graph::{GraphBuilder, attr_int, attr_ints};
use super::layers::{self, SpadeConvs};
use super::weights::Weights;
use crate::config::ModelConfig;
use crate::model::{ABNORMALITY_HALF_FRACTION, refine_name};

/// The sizes the graphs need, checked once against the configuration.
struct Sizes {
    s: usize,
    n: usize,
    grid: usize,
    k: usize,
    d: usize,
    widths: Vec<usize>,
    hidden: usize,
    labels: usize,
    eps: f64,
    null_outside_lesion: bool,
    seg_refine_convs: usize,
}

impl Sizes {
    fn of(config: &ModelConfig) -> Result<Self, ExportError> {
        config
            .validate()
            .map_err(|e| ExportError::Config(e.to_string()))?;
        Ok(Self {
            s: config.input_size,
            n: config.downsamples,
            grid: config.grid_size(),
            k: config.codebook_size,
            d: config.code_dim,
            widths: config.widths.clone(),
            hidden: config.spade_hidden,
            labels: config.abnormal_labels,
            eps: config.bn_eps,
            null_outside_lesion: config.null_outside_lesion,
            seg_refine_convs: config.seg_refine_convs,
        })
    }

    /// The sizes the bundle contract's signatures depend on.
    fn contract(&self) -> signature::Sizes {
        signature::Sizes {
            input_size: self.s,
            grid_rows: self.grid,
            grid_cols: self.grid,
            code_dim: self.d,
            labels: self.labels,
        }
    }
}

/// Builds `encoder.onnx`: image → `normal_indices`, `abnormal_indices`, `abnormal_distance`,
/// `abnormality`, and the continuous latents `normal_latent`, `abnormal_latent`.
pub fn encoder_graph(config: &ModelConfig, weights: &Weights) -> Result<ModelProto, ExportError> {
    let z = Sizes::of(config)?;
    let w = &z.widths;
    let slope = config.leaky_slope as f32;
    let contract = Signature::encoder(&z.contract());
    let mut g = GraphBuilder::new("diptych_encoder");
    let image = g.declare_input(contract.input(IMAGE));
    let (cb_n, cb_a) = codebooks(&mut g, weights, &z)?;

    let stem = weights.conv_bn(
        "encoder.stem.conv",
        "encoder.stem.bn",
        [w[0], 1, 3, 3],
        z.eps,
    )?;
    let mut h = layers::conv(&mut g, "encoder.stem", &image, &stem, 1, 1);
    h = layers::leaky_relu(&mut g, &h, slope);
    for i in 0..z.n {
        let p = format!("encoder.down{i}");
        let c = weights.conv_bn(
            &format!("{p}.conv"),
            &format!("{p}.bn"),
            [w[i + 1], w[i], 4, 4],
            z.eps,
        )?;
        h = layers::conv(&mut g, &p, &h, &c, 2, 1);
        h = layers::leaky_relu(&mut g, &h, slope);
    }
    let wn = w[z.n];
    let mid = weights.conv_bn("encoder.mid.conv", "encoder.mid.bn", [wn, wn, 3, 3], z.eps)?;
    h = layers::conv(&mut g, "encoder.mid", &h, &mid, 1, 1);
    h = layers::leaky_relu(&mut g, &h, slope);
    let head = weights.conv("encoder.head", [2 * z.d, wn, 1, 1])?;
    let latent = layers::conv(&mut g, "encoder.head", &h, &head, 1, 0);
    let z_n = layers::slice_channels(&mut g, &latent, 0, z.d);
    let z_a = layers::slice_channels(&mut g, &latent, z.d, 2 * z.d);

    layers::vq_indices(&mut g, &z_n, &cb_n, NORMAL_INDICES);
    let nearest_a = if z.null_outside_lesion {
        "abnormal_indices_nearest"
    } else {
        ABNORMAL_INDICES
    };
    let idx_a = layers::vq_indices(&mut g, &z_a, &cb_a, nearest_a);
    let e_a = layers::gather_codes(&mut g, &cb_a, &idx_a);
    let diff = g.node("Sub", &[&z_a, &e_a], vec![]);
    let sq = g.node("Mul", &[&diff, &diff], vec![]);
    g.node_into(
        "ReduceMean",
        &[&sq],
        vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)],
        ABNORMAL_DISTANCE,
    );
    // The score follows the lesion the abnormal code decodes to (see `Diptych::encode`).
    let logits = seg_decoder(&mut g, weights, &z, &e_a)?;
    let label = g.node(
        "ArgMax",
        &[&logits],
        vec![attr_int("axis", 1), attr_int("keepdims", 0)],
    );
    let background = g.shared_i64("const.background", &[], &[0]);
    let is_background = g.node("Equal", &[&label, &background], vec![]);
    let is_lesion = g.node("Not", &[&is_background], vec![]);
    let lesion = g.node("Cast", &[&is_lesion], vec![attr_int("to", 1)]);
    if z.null_outside_lesion {
        // `ModelConfig::null_outside_lesion`: a cell more than one cell away from a predicted
        // lesion pixel → code 0 (the ring stays: the segmentation decoder reads it).
        let axis = g.shared_i64("const.axis_1", &[1], &[1]);
        let map = g.node("Unsqueeze", &[&lesion, &axis], vec![]);
        let cell = (z.s / z.grid) as i64;
        let pooled = g.node(
            "MaxPool",
            &[&map],
            vec![
                attr_ints("kernel_shape", &[cell, cell]),
                attr_ints("strides", &[cell, cell]),
            ],
        );
        let ring = g.node(
            "MaxPool",
            &[&pooled],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[1, 1]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        );
        let cells = g.node("Squeeze", &[&ring, &axis], vec![]);
        let near_lesion = g.node("Cast", &[&cells], vec![attr_int("to", 9)]);
        g.node_into(
            "Where",
            &[&near_lesion, &idx_a, &background],
            vec![],
            ABNORMAL_INDICES,
        );
    }
    let share = g.node(
        "ReduceMean",
        &[&lesion],
        vec![attr_ints("axes", &[1, 2]), attr_int("keepdims", 0)],
    );
    let half = g.initializer_f32(
        "abnormality_half_fraction",
        &[],
        &[ABNORMALITY_HALF_FRACTION as f32],
    );
    let denominator = g.node("Add", &[&share, &half], vec![]);
    g.node_into("Div", &[&share, &denominator], vec![], ABNORMALITY);

    g.node_into("Identity", &[&z_n], vec![], NORMAL_LATENT);
    g.node_into("Identity", &[&z_a], vec![], ABNORMAL_LATENT);
    for output in contract.all_outputs() {
        g.declare_output(output);
    }
    Ok(g.finish(
        "diptych encoder: preprocessed image [N,1,S,S] -> normal and abnormal code indices [N,h,w], \
         per-position abnormal commitment distance [N,h,w], abnormality score [N], continuous \
         latents z_n and z_a [N,D,h,w]",
    ))
}

/// Builds `decoder.onnx`: `normal_indices`, `abnormal_indices` → `segmentation`, `reconstruction`,
/// `normal_appearing`.
pub fn decoder_graph(config: &ModelConfig, weights: &Weights) -> Result<ModelProto, ExportError> {
    let z = Sizes::of(config)?;
    let contract = Signature::decoder(&z.contract());
    let mut g = GraphBuilder::new("diptych_decoder");
    let idx_n = g.declare_input(contract.input(NORMAL_INDICES));
    let idx_a = g.declare_input(contract.input(ABNORMAL_INDICES));
    let (cb_n, cb_a) = codebooks(&mut g, weights, &z)?;
    let e_n = layers::gather_codes(&mut g, &cb_n, &idx_n);
    let e_a = layers::gather_codes(&mut g, &cb_a, &idx_a);

    let logits = seg_decoder(&mut g, weights, &z, &e_a)?;
    let logits = g.node_into("Identity", &[&logits], vec![], SEGMENTATION);
    let soft = layers::softmax_channels(&mut g, &logits);

    let image = ImageDecoder::read(weights, &z)?;
    let recon = image.emit(&mut g, &z, &e_n, &Condition::Map(soft));
    g.node_into("Identity", &[&recon], vec![], RECONSTRUCTION);
    let normal = image.emit(&mut g, &z, &e_n, &Condition::Zero);
    g.node_into("Identity", &[&normal], vec![], NORMAL_APPEARING);

    for output in contract.all_outputs() {
        g.declare_output(output);
    }
    Ok(g.finish(
        "diptych decoder: normal and abnormal code indices [N,h,w] -> abnormal-label logits \
         [N,L,S,S], reconstruction x̂ [N,1,S,S], normal-appearing image x̃ [N,1,S,S]",
    ))
}

/// Adds both codebooks as initializers and returns their names.
fn codebooks(
    g: &mut GraphBuilder,
    weights: &Weights,
    z: &Sizes,
) -> Result<(String, String), ExportError> {
    let normal = weights.codebook("quantizer_normal.codebook", z.k, z.d)?;
    let abnormal = weights.codebook("quantizer_abnormal.codebook", z.k, z.d)?;
    Ok((
        g.initializer_f32(CODEBOOK_NORMAL, &[z.k, z.d], &normal),
        g.initializer_f32(CODEBOOK_ABNORMAL, &[z.k, z.d], &abnormal),
    ))
}

/// The segmentation decoder on e_a: logits `[N, L, S, S]`.
fn seg_decoder(
    g: &mut GraphBuilder,
    weights: &Weights,
    z: &Sizes,
    e_a: &str,
) -> Result<String, ExportError> {
    let w = &z.widths;
    let mut h = conv_bn_relu(g, weights, z, "seg_decoder.inp", [w[z.n], z.d], e_a)?;
    h = seg_refine(g, weights, z, "inp", w[z.n], h)?;
    for j in 0..z.n {
        let up = layers::upsample2(g, &h);
        let p = format!("seg_decoder.up{j}");
        h = conv_bn_relu(g, weights, z, &p, [w[z.n - j - 1], w[z.n - j]], &up)?;
        h = seg_refine(g, weights, z, &format!("up{j}"), w[z.n - j - 1], h)?;
    }
    let head = weights.conv("seg_decoder.head", [z.labels, w[0], 1, 1])?;
    Ok(layers::conv(g, "seg_decoder.head", &h, &head, 1, 0))
}

/// The `seg_refine_convs` extra conv+BN+ReLU blocks after one level of the segmentation decoder
/// (`ModelConfig::seg_refine_convs`; none for older recipes).
fn seg_refine(
    g: &mut GraphBuilder,
    weights: &Weights,
    z: &Sizes,
    level: &str,
    width: usize,
    mut h: String,
) -> Result<String, ExportError> {
    for k in 0..z.seg_refine_convs {
        let p = format!("seg_decoder.{}", refine_name(level, k));
        h = conv_bn_relu(g, weights, z, &p, [width, width], &h)?;
    }
    Ok(h)
}

/// One segmentation-decoder block: the 3×3 convolution `{prefix}.conv` (out × in channels) with
/// the BatchNorm `{prefix}.bn` folded in, then ReLU.
fn conv_bn_relu(
    g: &mut GraphBuilder,
    weights: &Weights,
    z: &Sizes,
    prefix: &str,
    [out, inp]: [usize; 2],
    x: &str,
) -> Result<String, ExportError> {
    let c = weights.conv_bn(
        &format!("{prefix}.conv"),
        &format!("{prefix}.bn"),
        [out, inp, 3, 3],
        z.eps,
    )?;
    let h = layers::conv(g, prefix, x, &c, 1, 1);
    Ok(layers::relu(g, &h))
}

/// What conditions the image decoder's SPADE layers.
enum Condition {
    /// A full-resolution `[N, L, S, S]` map (softmax of the segmentation logits) → x̂.
    Map(String),
    /// s = 0 → x̃.
    Zero,
}

/// One image-decoder block: a convolution with SPADE's BatchNorm folded in, and SPADE's convs.
struct SpadeBlock {
    name: String,
    conv: super::weights::FoldedConv,
    spade: SpadeConvs,
    resolution: usize,
}

/// The image decoder's weights, read once and emitted twice (for x̂ and x̃).
struct ImageDecoder {
    blocks: Vec<SpadeBlock>,
    head: super::weights::FoldedConv,
}

impl ImageDecoder {
    fn read(weights: &Weights, z: &Sizes) -> Result<Self, ExportError> {
        let w = &z.widths;
        let mut blocks = Vec::with_capacity(z.n + 1);
        for j in 0..=z.n {
            // Block "inp" maps D → w_n at the grid; block up{j} maps w_{n-j} → w_{n-j-1} at 2^(j+1)·grid.
            let (name, c_in, c_out, resolution) = if j == 0 {
                ("image_decoder.inp".to_string(), z.d, w[z.n], z.grid)
            } else {
                let k = j - 1;
                (
                    format!("image_decoder.up{k}"),
                    w[z.n - k],
                    w[z.n - k - 1],
                    z.grid << j,
                )
            };
            let conv = weights.conv_bn(
                &format!("{name}.conv"),
                &format!("{name}.spade.bn"),
                [c_out, c_in, 3, 3],
                z.eps,
            )?;
            let sp = format!("{name}.spade");
            let shared = weights.conv(&format!("{sp}.shared"), [z.hidden, z.labels, 3, 3])?;
            let mut gamma_plus_one =
                weights.conv(&format!("{sp}.gamma"), [c_out, z.hidden, 3, 3])?;
            gamma_plus_one.shift_bias(1.0);
            let beta = weights.conv(&format!("{sp}.beta"), [c_out, z.hidden, 3, 3])?;
            blocks.push(SpadeBlock {
                name,
                conv,
                spade: SpadeConvs {
                    shared,
                    gamma_plus_one,
                    beta,
                },
                resolution,
            });
        }
        let head = weights.conv("image_decoder.head", [1, w[0], 3, 3])?;
        Ok(Self { blocks, head })
    }

    /// Emits one pass of the decoder on e_n under `condition`; returns the image `[N, 1, S, S]`.
    /// Both passes use the same weight initializers.
    fn emit(&self, g: &mut GraphBuilder, z: &Sizes, e_n: &str, condition: &Condition) -> String {
        let mut h = e_n.to_string();
        for (j, block) in self.blocks.iter().enumerate() {
            if j > 0 {
                h = layers::upsample2(g, &h);
            }
            h = layers::conv(g, &block.name, &h, &block.conv, 1, 1);
            let s = match condition {
                Condition::Map(s) if block.resolution == z.s => s.clone(),
                Condition::Map(s) => layers::avg_pool(g, s, z.s / block.resolution),
                Condition::Zero => layers::zeros_map(g, z.labels, block.resolution),
            };
            let spade_name = format!("{}.spade", block.name);
            h = layers::spade(g, &spade_name, &h, &s, &block.spade);
            h = layers::relu(g, &h);
        }
        h = layers::conv(g, "image_decoder.head", &h, &self.head, 1, 1);
        layers::sigmoid(g, &h)
    }
}
