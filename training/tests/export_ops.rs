//! Op-level parity of the exporter's building blocks against the tch modules they mirror:
//! convolution with a folded BatchNorm (affine and not), nearest upsampling, average pooling,
//! SPADE and the vector-quantiser lookup (ties → lowest index). Each test writes a one-op graph,
//! runs it through ONNX Runtime and compares with tch in eval mode.

mod export_fixture;

use diptych_training::config::ModelConfig;
use diptych_training::eval::runtime::open_session;
use diptych_training::export::graph::{Axis, Elem, GraphBuilder};
use diptych_training::export::{Weights, layers};
use diptych_training::model::{ConvBn, Spade, VectorQuantizer, upsample2};
use export_fixture::{require_ort, seeded_torch, temp_dir};
use prost::Message;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
}

fn dims(t: &Tensor) -> Vec<Axis> {
    t.size().iter().map(|&d| Axis::Fixed(d as usize)).collect()
}

/// Writes the graph, runs it on the named f32 inputs and returns the named outputs, flat.
fn run(test: &str, g: GraphBuilder, inputs: &[(&str, &Tensor)], outputs: &[&str]) -> Vec<Vec<f32>> {
    require_ort();
    let dir = temp_dir(test);
    let path = dir.join("op.onnx");
    std::fs::write(&path, g.finish(test).encode_to_vec()).unwrap();
    let mut session = open_session(&path).expect("the one-op graph loads");
    let values: Vec<(String, ort::value::DynValue)> = inputs
        .iter()
        .map(|(name, t)| {
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let v = ort::value::Tensor::from_array((shape, floats(t))).unwrap();
            (name.to_string(), v.into_dyn())
        })
        .collect();
    let result = session.run(values).expect("the one-op graph runs");
    let out = outputs
        .iter()
        .map(|name| {
            result[*name]
                .try_extract_tensor::<f32>()
                .unwrap()
                .1
                .to_vec()
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Moves BatchNorm statistics and affine parameters away from their initial values.
fn perturb_and_warm(vs: &nn::VarStore, mut forward_train: impl FnMut(&Tensor)) {
    tch::no_grad(|| {
        // `variables()` is a HashMap, its order random per process: draw in name order.
        let mut variables: Vec<_> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut t) in variables {
            if name.ends_with("bias") || name.ends_with("bn.weight") {
                let _ = t.g_add_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.3));
            }
        }
        for _ in 0..3 {
            let x = Tensor::randn([6, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 + 0.5;
            forward_train(&x);
        }
    });
}

fn config() -> ModelConfig {
    ModelConfig {
        bn_momentum: 0.5,
        ..ModelConfig::default()
    }
}

#[test]
fn strided_conv_with_folded_batch_norm_matches_tch() {
    let _torch = seeded_torch(1);
    let config = config();
    let vs = nn::VarStore::new(Device::Cpu);
    let block = ConvBn::new(&(vs.root() / "blk"), &config, 3, 5, 4, 2, 1);
    perturb_and_warm(&vs, |x| {
        let _ = block.forward_t(x, true);
    });
    let x = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let expected = tch::no_grad(|| block.forward_t(&x, false));

    let weights = Weights::from_var_store(&vs);
    let folded = weights
        .conv_bn("blk.conv", "blk.bn", [5, 3, 4, 4], config.bn_eps)
        .unwrap();
    let mut g = GraphBuilder::new("conv_bn");
    let input = g.input("x", Elem::F32, &dims(&x));
    let y = layers::conv(&mut g, "blk", &input, &folded, 2, 1);
    g.node_into("Identity", &[&y], vec![], "y");
    g.output("y", Elem::F32, &dims(&expected));
    let got = run("op-conv-bn", g, &[("x", &x)], &["y"]);
    let err = max_abs(&floats(&expected), &got[0]);
    assert!(err < 1e-4, "conv+BN fold differs by {err}");
}

#[test]
fn upsample_and_average_pool_match_tch() {
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
    let up = upsample2(&x);
    let pooled = x.avg_pool2d([4, 4], [4, 4], [0, 0], false, true, None::<i64>);
    let mut g = GraphBuilder::new("resize_pool");
    let input = g.input(
        "x",
        Elem::F32,
        &[Axis::Batch, Axis::Fixed(3), Axis::Fixed(8), Axis::Fixed(8)],
    );
    let u = layers::upsample2(&mut g, &input);
    g.node_into("Identity", &[&u], vec![], "up");
    let p = layers::avg_pool(&mut g, &input, 4);
    g.node_into("Identity", &[&p], vec![], "pool");
    g.output("up", Elem::F32, &dims(&up));
    g.output("pool", Elem::F32, &dims(&pooled));
    let got = run("op-resize-pool", g, &[("x", &x)], &["up", "pool"]);
    assert_eq!(got[0], floats(&up), "nearest upsampling differs");
    let err = max_abs(&floats(&pooled), &got[1]);
    assert!(err < 1e-6, "average pooling differs by {err}");
}

#[test]
fn spade_block_with_folded_batch_norm_matches_tch() {
    let _torch = seeded_torch(2);
    let config = ModelConfig {
        abnormal_labels: 4,
        spade_hidden: 5,
        ..config()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root() / "blk";
    let conv = nn::conv2d(
        &root / "conv",
        3,
        6,
        3,
        nn::ConvConfig {
            padding: 1,
            bias: false,
            ..Default::default()
        },
    );
    let spade = Spade::new(&(&root / "spade"), &config, 6);
    let condition = |n: i64| {
        (Tensor::randn([n, 4, 32, 32], (Kind::Float, Device::Cpu)) * 2.0).softmax(1, Kind::Float)
    };
    perturb_and_warm(&vs, |x| {
        let _ = spade.forward_t(&conv.forward(x), &condition(x.size()[0]), true);
    });
    let x = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let s = condition(2);
    let expected = tch::no_grad(|| spade.forward_t(&conv.forward(&x), &s, false));
    let expected_zero = tch::no_grad(|| spade.forward_t(&conv.forward(&x), &s.zeros_like(), false));

    let w = Weights::from_var_store(&vs);
    let folded = w
        .conv_bn("blk.conv", "blk.spade.bn", [6, 3, 3, 3], config.bn_eps)
        .unwrap();
    let mut gamma_plus_one = w.conv("blk.spade.gamma", [6, 5, 3, 3]).unwrap();
    gamma_plus_one.shift_bias(1.0);
    let convs = layers::SpadeConvs {
        shared: w.conv("blk.spade.shared", [5, 4, 3, 3]).unwrap(),
        gamma_plus_one,
        beta: w.conv("blk.spade.beta", [6, 5, 3, 3]).unwrap(),
    };
    let mut g = GraphBuilder::new("spade");
    let xi = g.input("x", Elem::F32, &dims(&x));
    let si = g.input("s", Elem::F32, &dims(&s));
    let h = layers::conv(&mut g, "blk", &xi, &folded, 1, 1);
    let pooled = layers::avg_pool(&mut g, &si, 2);
    let y = layers::spade(&mut g, "blk.spade", &h, &pooled, &convs);
    g.node_into("Identity", &[&y], vec![], "y");
    let zeros = layers::zeros_map(&mut g, 4, 16);
    let y0 = layers::spade(&mut g, "blk.spade", &h, &zeros, &convs);
    g.node_into("Identity", &[&y0], vec![], "y0");
    g.output("y", Elem::F32, &dims(&expected));
    g.output("y0", Elem::F32, &dims(&expected));
    let got = run("op-spade", g, &[("x", &x), ("s", &s)], &["y", "y0"]);
    let err = max_abs(&floats(&expected), &got[0]);
    assert!(err < 1e-4, "SPADE on a condition differs by {err}");
    let err = max_abs(&floats(&expected_zero), &got[1]);
    assert!(err < 1e-4, "SPADE on zeros differs by {err}");
}

#[test]
fn vector_quantiser_lookup_matches_tch_including_ties() {
    let _torch = seeded_torch(3);
    let config = ModelConfig {
        codebook_size: 6,
        code_dim: 3,
        ..config()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let q = VectorQuantizer::new(&(vs.root() / "q"), &config);
    // Rows 1 and 4 are equal, so vectors nearest to them tie: both sides must pick 1.
    tch::no_grad(|| {
        let c = q.codebook();
        let mut row4 = c.get(4);
        row4.copy_(&c.get(1));
    });
    let z = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
    tch::no_grad(|| {
        // Put two positions exactly on row 1 (= row 4).
        let row1 = q.codebook().get(1).view([1, 3, 1, 1]);
        let mut corner = z.narrow(2, 0, 1).narrow(3, 0, 2);
        corner.copy_(&row1.expand([2, 3, 1, 2], false));
    });
    let expected_idx = q.nearest(&z);
    let expected_codes = q.lookup(&expected_idx);
    assert_eq!(expected_idx.int64_value(&[0, 0, 0]), 1);

    let w = Weights::from_var_store(&vs);
    let codebook = w.codebook("q.codebook", 6, 3).unwrap();
    let mut g = GraphBuilder::new("vq");
    let zi = g.input("z", Elem::F32, &dims(&z));
    let cb = g.initializer_f32("codebook", &[6, 3], &codebook);
    let idx = layers::vq_indices(&mut g, &zi, &cb, "indices");
    let e = layers::gather_codes(&mut g, &cb, &idx);
    g.node_into("Identity", &[&e], vec![], "codes");
    g.output(
        "indices",
        Elem::I64,
        &[Axis::Fixed(2), Axis::Fixed(4), Axis::Fixed(5)],
    );
    g.output("codes", Elem::F32, &dims(&z));

    require_ort();
    let dir = temp_dir("op-vq");
    let path = dir.join("op.onnx");
    std::fs::write(&path, g.finish("vq").encode_to_vec()).unwrap();
    let mut session = open_session(&path).unwrap();
    let input = ort::value::Tensor::from_array(([2usize, 3, 4, 5], floats(&z))).unwrap();
    let out = session.run(ort::inputs!["z" => input]).unwrap();
    let indices = out["indices"]
        .try_extract_tensor::<i64>()
        .unwrap()
        .1
        .to_vec();
    let codes = out["codes"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    assert_eq!(
        indices,
        Vec::<i64>::try_from(expected_idx.view([-1])).unwrap()
    );
    assert_eq!(codes, floats(&expected_codes));
    let _ = std::fs::remove_dir_all(&dir);
}
