//! Shared by the export and eval tests: a tiny diptych network with random, non-trivial weights
//! (BatchNorm running statistics and codebooks moved by a few train-mode passes on phantom slices),
//! exported to a temporary bundle folder, and phantom inputs through the shared pre-processing.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych::preprocess::{PreprocessParams, preprocess};
use diptych_training::config::{ModelConfig, TrainConfig};
use diptych_training::export::{Exported, Weights, export_bundle};
use diptych_training::model::Diptych;
use tch::{Device, Kind, Tensor, nn};

/// A network small enough for a unit test (input 32, grid 8).
pub fn tiny_config() -> TrainConfig {
    let config = TrainConfig {
        model: ModelConfig {
            input_size: 32,
            downsamples: 2,
            codebook_size: 16,
            code_dim: 4,
            widths: vec![4, 6, 8],
            spade_hidden: 4,
            bn_momentum: 0.5,
            abnormality_margin: 4.0,
            ..ModelConfig::default()
        },
        ..TrainConfig::default()
    };
    config.validate().expect("the tiny test config is valid");
    config
}

/// Fails loudly (never skips) when ONNX Runtime is not configured.
pub fn require_ort() {
    if let Err(missing) = diptych::bundle::library::locate(None) {
        panic!("the export and eval tests run the bundle through ONNX Runtime: {missing}");
    }
}

/// `n` phantom slices of `seed` from `start`, preprocessed to `[n, 1, S, S]` values.
pub fn phantom_pixels(seed: u64, start: u64, n: usize, params: &PreprocessParams) -> Vec<f32> {
    let generator = PhantomGenerator::new(seed, PhantomConfig::default());
    (start..start + n as u64)
        .flat_map(|i| {
            let slice = generator.slice(i);
            preprocess(&slice.raw_frame(), params)
                .expect("phantom slices preprocess")
                .pixels
        })
        .collect()
}

/// The same slices as a tch tensor `[n, 1, S, S]`.
pub fn phantom_batch(seed: u64, start: u64, n: usize, params: &PreprocessParams) -> Tensor {
    let s = params.input_size as i64;
    Tensor::from_slice(&phantom_pixels(seed, start, n, params)).reshape([n as i64, 1, s, s])
}

/// Seeds torch's global generator and holds it until the guard drops. The tests of one binary
/// run in parallel and the generator is shared: a test that draws random tensors holds the guard
/// until its last draw, so that its draws are the same on every run.
pub fn seeded_torch(seed: i64) -> MutexGuard<'static, ()> {
    static TORCH_RNG: Mutex<()> = Mutex::new(());
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    guard
}

/// A tiny network with random weights made non-trivial: every BatchNorm affine parameter and
/// every bias is perturbed, then a few train-mode passes on phantom slices (seed 1) move the
/// BatchNorm running statistics and the EMA codebooks away from their initial values.
pub fn trained_tiny(config: &TrainConfig, torch_seed: i64) -> (nn::VarStore, Diptych) {
    let _torch = seeded_torch(torch_seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Diptych::new(&vs.root(), &config.model);
    tch::no_grad(|| {
        // `variables()` is a HashMap, its order random per process: draw in name order.
        let mut variables: Vec<_> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut t) in variables {
            if name.ends_with(".bias") || name.ends_with(".bn.weight") {
                let noise = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.2;
                let _ = t.g_add_(&noise);
            }
        }
        let params = config.preprocess();
        for step in 0..4 {
            let x = phantom_batch(1, step * 8, 8, &params);
            let _ = net.forward_t(&x, true);
        }
    });
    (vs, net)
}

/// A fresh, empty folder under the system temp dir for one test.
pub fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diptych-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Exports the network in `vs` as a bundle in `out`.
pub fn export_tiny(config: &TrainConfig, vs: &nn::VarStore, out: &Path) -> Exported {
    let recipe = serde_json::json!({ "seed": 7, "steps": 4, "device": "cpu", "note": "test" });
    export_bundle(
        config,
        &Weights::from_var_store(vs),
        "tiny-test",
        recipe,
        out,
    )
    .expect("export succeeds")
}
