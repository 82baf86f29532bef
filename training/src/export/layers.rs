//! The network's building blocks written as ONNX nodes, each the exact twin of a tch op listed in
//! docs/METHOD.md §1: convolution, activations, nearest upsampling, average pooling, channel slices,
//! SPADE and the vector-quantiser lookup.

use super::graph::{GraphBuilder, attr_float, attr_int, attr_ints, attr_scalar_f32, attr_string};
use super::weights::FoldedConv;

/// A 2-D convolution with the given stride and symmetric padding; its weights become initializers
/// named `<name>.weight` and `<name>.bias`, shared by every use of the same convolution.
pub fn conv(
    g: &mut GraphBuilder,
    name: &str,
    x: &str,
    conv: &FoldedConv,
    stride: usize,
    pad: usize,
) -> String {
    let [_, _, kh, kw] = conv.shape;
    let w = g.shared_f32(&format!("{name}.weight"), &conv.shape, &conv.weight);
    let b = conv
        .bias
        .as_ref()
        .map(|b| g.shared_f32(&format!("{name}.bias"), &[conv.shape[0]], b));
    let mut inputs = vec![x, w.as_str()];
    if let Some(b) = &b {
        inputs.push(b.as_str());
    }
    let (s, p) = (stride as i64, pad as i64);
    g.node(
        "Conv",
        &inputs,
        vec![
            attr_ints("kernel_shape", &[kh as i64, kw as i64]),
            attr_ints("strides", &[s, s]),
            attr_ints("pads", &[p, p, p, p]),
            attr_ints("dilations", &[1, 1]),
            attr_int("group", 1),
        ],
    )
}

/// `leaky_relu(x)` with the given negative slope.
pub fn leaky_relu(g: &mut GraphBuilder, x: &str, slope: f32) -> String {
    g.node("LeakyRelu", &[x], vec![attr_float("alpha", slope)])
}

/// `relu(x)`.
pub fn relu(g: &mut GraphBuilder, x: &str) -> String {
    g.node("Relu", &[x], vec![])
}

/// `sigmoid(x)`.
pub fn sigmoid(g: &mut GraphBuilder, x: &str) -> String {
    g.node("Sigmoid", &[x], vec![])
}

/// Softmax over the channel axis of an `[N, C, H, W]` value.
pub fn softmax_channels(g: &mut GraphBuilder, x: &str) -> String {
    g.node("Softmax", &[x], vec![attr_int("axis", 1)])
}

/// Nearest-neighbour upsampling by 2, the twin of tch `upsample_nearest2d` (source pixel =
/// floor(dst / 2)).
pub fn upsample2(g: &mut GraphBuilder, x: &str) -> String {
    let scales = g.shared_f32("const.upsample_scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
    g.node(
        "Resize",
        &[x, "", &scales],
        vec![
            attr_string("mode", "nearest"),
            attr_string("coordinate_transformation_mode", "asymmetric"),
            attr_string("nearest_mode", "floor"),
        ],
    )
}

/// Average pooling with kernel = stride = `k` (no padding), the twin of tch `avg_pool2d`.
pub fn avg_pool(g: &mut GraphBuilder, x: &str, k: usize) -> String {
    let k = k as i64;
    g.node(
        "AveragePool",
        &[x],
        vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[k, k]),
        ],
    )
}

/// Channels `[start, end)` of an `[N, C, H, W]` value.
pub fn slice_channels(g: &mut GraphBuilder, x: &str, start: usize, end: usize) -> String {
    let starts = g.shared_i64(&format!("const.slice_start_{start}"), &[1], &[start as i64]);
    let ends = g.shared_i64(&format!("const.slice_end_{end}"), &[1], &[end as i64]);
    let axes = g.shared_i64("const.axis_1", &[1], &[1]);
    g.node("Slice", &[x, &starts, &ends, &axes], vec![])
}

/// An all-zero `[1, channels, size, size]` map: the SPADE condition of the normal-appearing image,
/// broadcast over the batch.
pub fn zeros_map(g: &mut GraphBuilder, channels: usize, size: usize) -> String {
    let shape = g.shared_i64(
        &format!("const.shape_1x{channels}x{size}x{size}"),
        &[4],
        &[1, channels as i64, size as i64, size as i64],
    );
    g.node(
        "ConstantOfShape",
        &[&shape],
        vec![attr_scalar_f32("value", 0.0)],
    )
}

/// The weights of one SPADE layer: `shared` (condition → hidden, then relu), `gamma` and `beta`
/// (hidden → channels). `gamma`'s bias already carries the `+1` of `BN(h) ⊙ (1 + γ) + β`.
#[derive(Debug, Clone)]
pub struct SpadeConvs {
    /// conv3x3 condition labels → hidden, with bias.
    pub shared: FoldedConv,
    /// conv3x3 hidden → channels, with bias + 1.
    pub gamma_plus_one: FoldedConv,
    /// conv3x3 hidden → channels, with bias.
    pub beta: FoldedConv,
}

/// SPADE modulation of an already normalised `h` by the condition map `s` at h's resolution:
/// `h ⊙ (1 + γ(s)) + β(s)`.
pub fn spade(g: &mut GraphBuilder, name: &str, h: &str, s: &str, convs: &SpadeConvs) -> String {
    let shared = conv(g, &format!("{name}.shared"), s, &convs.shared, 1, 1);
    let shared = relu(g, &shared);
    let gamma = conv(
        g,
        &format!("{name}.gamma_plus_one"),
        &shared,
        &convs.gamma_plus_one,
        1,
        1,
    );
    let beta = conv(g, &format!("{name}.beta"), &shared, &convs.beta, 1, 1);
    let scaled = g.node("Mul", &[h, &gamma], vec![]);
    g.node("Add", &[&scaled, &beta], vec![])
}

/// The nearest-codeword lookup of a vector quantiser on `z` `[N, D, h, w]` against the codebook
/// initializer `[K, D]`: squared distances `‖z‖² − 2 z·Cᵀ + ‖C‖²`, argmin over K (ties → lowest
/// index), written to `indices` `[N, h, w]`. Returns the indices' name.
pub fn vq_indices(g: &mut GraphBuilder, z: &str, codebook: &str, indices: &str) -> String {
    let zt = g.node("Transpose", &[z], vec![attr_ints("perm", &[0, 2, 3, 1])]);
    let zz = g.node(
        "ReduceSumSquare",
        &[&zt],
        vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)],
    );
    let ct = g.node("Transpose", &[codebook], vec![attr_ints("perm", &[1, 0])]);
    let zc = g.node("MatMul", &[&zt, &ct], vec![]);
    let two = g.shared_f32("const.two", &[], &[2.0]);
    let zc2 = g.node("Mul", &[&zc, &two], vec![]);
    let cc = g.node(
        "ReduceSumSquare",
        &[codebook],
        vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)],
    );
    let partial = g.node("Sub", &[&zz, &zc2], vec![]);
    let dist = g.node("Add", &[&partial, &cc], vec![]);
    g.node_into(
        "ArgMin",
        &[&dist],
        vec![
            attr_int("axis", -1),
            attr_int("keepdims", 0),
            attr_int("select_last_index", 0),
        ],
        indices,
    )
}

/// The codewords `[N, D, h, w]` that `indices` `[N, h, w]` select from the codebook `[K, D]`.
pub fn gather_codes(g: &mut GraphBuilder, codebook: &str, indices: &str) -> String {
    let e = g.node("Gather", &[codebook, indices], vec![attr_int("axis", 0)]);
    g.node("Transpose", &[&e], vec![attr_ints("perm", &[0, 3, 1, 2])])
}
