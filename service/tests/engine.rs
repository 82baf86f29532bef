//! The engine on ONNX Runtime (CPU), with the toy bundle of `support`: sessions open, warm-up
//! passes, batched results go back to the right requests, and a graph whose real output shapes
//! disagree with the manifest is refused at warm-up; with the shipped phantom-v1 network, a
//! slice gets the same codes alone and in any batch, its float outputs equal up to rounding
//! (docs/DESIGN.md, "Batches").
//!
//! Needs libonnxruntime 1.31: ORT_DYLIB_PATH, or the cache `make deps-ort` fills.

#[path = "support/folder.rs"]
mod folder;
mod support;

use std::time::Duration;

use diptych_service::bundle::Bundle;
use diptych_service::config::ExecutionProvider;
use diptych_service::encoder::model::{EncoderRunner, Geometry};
use diptych_service::encoder::runtime::{environment, locate_library, open_session};
use diptych_service::encoder::{
    BatchRunner, BatcherConfig, CodePair, Engine, EngineOptions, Provider, SliceCode,
};
use folder::BATCH_ROUNDING;
use support::{LABELS, Toy, write_bundle, write_toy};

fn options(max_batch: usize, sessions: usize) -> EngineOptions {
    EngineOptions {
        remote: None,
        execution_provider: ExecutionProvider::Cpu,
        sessions,
        intra_threads: 1,
        // Both settings run: the pooled (several-session) engines spin, the others sleep.
        intra_op_spinning: sessions > 1,
        precision: Default::default(),
        nice: 0,
        batcher: BatcherConfig {
            max_batch,
            max_delay: Duration::from_millis(2),
            queue_capacity: 256,
        },
    }
}

fn start(dir: &std::path::Path, opts: EngineOptions) -> Result<Engine, String> {
    let library =
        locate_library(None, |name| std::env::var(name).ok()).map_err(|e| e.to_string())?;
    let env = environment(&library.path).map_err(|e| e.to_string())?;
    let bundle = Bundle::load(dir).map_err(|e| e.to_string())?;
    Engine::start(bundle, env, opts).map_err(|e| e.to_string())
}

/// An S×S image whose (S/g)-blocks hold the value `value(block_row, block_col)`.
fn blocks(toy: &Toy, value: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let b = toy.size / toy.grid;
    (0..toy.size * toy.size)
        .map(|i| value(i / toy.size / b, i % toy.size / b))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_come_back_to_the_request_that_asked_and_decode_to_the_expected_images() {
    let toy = Toy::default();
    let dir = tempfile::tempdir().unwrap();
    write_toy(dir.path(), &toy);
    let engine = std::sync::Arc::new(start(dir.path(), options(8, 2)).unwrap());
    assert_eq!(engine.provider(), Provider::Cpu);
    engine.warm_up().await.unwrap();

    // 40 concurrent requests, each image with its own block values v in 0..K−1, drawn as
    // (v + ½)/(K−1) so that truncation lands on v whatever the rounding of the average.
    let km1 = (toy.k - 1) as f32;
    let v = move |n: usize, r: usize, c: usize| (n + r * 4 + c) % (toy.k - 1);
    let tasks: Vec<_> = (0..40usize)
        .map(|n| {
            let engine = engine.clone();
            let image = blocks(&toy, move |r, c| (v(n, r, c) as f32 + 0.5) / km1);
            tokio::spawn(async move { (n, engine.encode(image).await) })
        })
        .collect();
    for task in tasks {
        let (n, code) = task.await.unwrap();
        let code = code.unwrap();
        for r in 0..toy.grid {
            for c in 0..toy.grid {
                let expected = v(n, r, c) as u32;
                let i = r * toy.grid + c;
                assert_eq!(code.normal[i], expected, "request {n}, position ({r},{c})");
                // ⌊(1 − (v + ½)/(K−1))·(K−1)⌋ = K − 2 − v.
                assert_eq!(code.abnormal[i], toy.k as u32 - 2 - expected);
            }
        }
        let mean = code.abnormal_distance.iter().sum::<f32>() / code.abnormal_distance.len() as f32;
        assert!((code.abnormality - mean).abs() < 1e-5);
    }

    // Decoding: reconstruction = normal index / (K−1), nearest-upsampled; segmentation arg-max
    // is the label whose centre c/(L−1) is nearest to the abnormal index / (K−1).
    let normal: Vec<u32> = (0..16).collect();
    let abnormal: Vec<u32> = vec![15; 16];
    let decoded = engine.decode(CodePair { normal, abnormal }).await.unwrap();
    let s = toy.size;
    assert_eq!(decoded.reconstruction.len(), s * s);
    assert_eq!(decoded.reconstruction[0], 0.0);
    assert_eq!(decoded.reconstruction[s * s - 1], 1.0);
    assert_eq!(decoded.reconstruction, decoded.normal_appearing);
    assert_eq!(decoded.segmentation.len(), LABELS * s * s);
    let labels = diptych_service::render::argmax_labels(&decoded.segmentation, LABELS, s * s);
    assert!(
        labels.iter().all(|&l| l == 3),
        "abnormal index K−1 is nearest the last label"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_shapes_that_disagree_with_the_manifest_are_refused_at_warm_up() {
    // The graphs leave their output shapes undeclared, so the file check cannot see that the
    // manifest claims an 8×8 grid while the encoder pools to 4×4: the warm-up run does.
    let toy = Toy {
        declare_output_shapes: false,
        ..Toy::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = support::manifest(&toy);
    manifest.grid = diptych::manifest::Grid { rows: 8, cols: 8 };
    let mut encoder = support::encoder(&toy);
    let mut decoder = support::decoder(&toy);
    // The decoder's inputs must then declare 8×8 to pass the file check.
    for input in &mut decoder.graph.as_mut().unwrap().input {
        let shape = support::shape_mut(input);
        shape.dim[1] = support::dim_value(8);
        shape.dim[2] = support::dim_value(8);
    }
    encoder.graph.as_mut().unwrap().name = Some("toy_encoder_8x8_claim".to_string());
    write_bundle(dir.path(), &manifest, &encoder, &decoder);

    let engine = start(dir.path(), options(4, 1)).unwrap();
    let err = engine.warm_up().await.unwrap_err().to_string();
    assert!(
        err.contains("normal_indices") && err.contains("[1, 4, 4]") && err.contains("[1, 8, 8]"),
        "{err}"
    );
}

#[test]
fn a_missing_library_is_a_clear_start_up_error() {
    let err = locate_library(
        Some(std::path::Path::new("/nonexistent/libonnxruntime.so")),
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/nonexistent/libonnxruntime.so") && err.contains("make deps-ort"),
        "{err}"
    );
}

/// Whether this machine has an NVIDIA GPU (a device node, as the driver creates it).
fn gpu_present() -> bool {
    std::path::Path::new("/dev/nvidia0").exists()
}

/// Where a GPU exists, `cuda` must register (with the onnxruntime-gpu library in
/// `DIPTYCH_ORT_GPU_LIBRARY`, or ORT_DYLIB_PATH) and give the CPU's codes; elsewhere, asking
/// for `cuda` must fail with a message that says what to install, and `auto` must fall back to
/// the CPU.
#[test]
fn cuda_is_used_where_a_gpu_exists_and_refused_clearly_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let toy = Toy::default();
    write_toy(dir.path(), &toy);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let with = |provider| EngineOptions {
        remote: None,
        execution_provider: provider,
        ..options(4, 1)
    };
    if gpu_present() {
        if let Some(gpu) = std::env::var_os("DIPTYCH_ORT_GPU_LIBRARY") {
            // SAFETY: set before any ONNX Runtime environment exists in this test process.
            unsafe { std::env::set_var("ORT_DYLIB_PATH", gpu) };
        }
        let engine = start(dir.path(), with(ExecutionProvider::Cuda))
            .expect("a GPU is present: the CUDA execution provider must register");
        assert_eq!(engine.provider(), Provider::Cuda);
        let image = blocks(&toy, |r, c| (r * toy.grid + c) as f32 / 16.0);
        let code = runtime.block_on(engine.encode(image.clone())).unwrap();
        let cpu = start(dir.path(), with(ExecutionProvider::Cpu)).unwrap();
        assert_eq!(
            runtime.block_on(cpu.encode(image)).unwrap().normal,
            code.normal
        );
        eprintln!("CUDA execution provider ran and matched the CPU");
    } else {
        let error = start(dir.path(), with(ExecutionProvider::Cuda))
            .expect_err("no GPU here: cuda must be refused");
        assert!(
            error.contains("CUDA execution provider is not available")
                && error.contains("--execution-provider cpu"),
            "{error}"
        );
        let engine = start(dir.path(), with(ExecutionProvider::Auto)).unwrap();
        assert_eq!(engine.provider(), Provider::Cpu);
        eprintln!(
            "NOT RUN: the CUDA path needs a GPU (none on this machine); checked the CPU fallback"
        );
    }
}

/// The shipped phantom-v1 bundle: a real network, unlike the toy.
fn shipped_bundle() -> Bundle {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/phantom-v1");
    Bundle::load(&dir).unwrap()
}

/// An S×S image of a smooth blob over noise, in [0, 1], different for every `seed`.
fn textured(size: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let (cx, cy) = (
        size as f32 * (0.3 + 0.05 * (seed % 7) as f32),
        size as f32 * (0.6 - 0.04 * (seed % 5) as f32),
    );
    (0..size * size)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32;
            let (x, y) = ((i % size) as f32, (i / size) as f32);
            let blob = (-((x - cx).powi(2) + (y - cy).powi(2)) / (size as f32 * 6.0)).exp();
            (0.6 * blob + 0.4 * noise).clamp(0.0, 1.0)
        })
        .collect()
}

/// How far the float outputs of `a` and `b` are apart (the largest absolute difference), after
/// checking that their codes are the same.
fn float_gap(a: &SliceCode, b: &SliceCode, what: &str) -> f32 {
    assert_eq!(a.normal, b.normal, "{what}: normal code");
    assert_eq!(a.abnormal, b.abnormal, "{what}: abnormal code");
    a.abnormal_distance
        .iter()
        .zip(&b.abnormal_distance)
        .map(|(x, y)| (x - y).abs())
        .fold((a.abnormality - b.abnormality).abs(), f32::max)
}

/// ONNX Runtime's CPU kernels reduce a batch of one along another path than larger batches
/// (the graph's `ReduceMean` of the abnormal distances); a slice must still get the same codes
/// in every batch — so that a query encoded alone finds its own indexed slice at distance 0 and
/// two nodes that batched differently store the same codes — and float outputs that differ by
/// rounding only.
#[test]
fn a_slice_gets_the_same_codes_alone_as_in_any_batch() {
    let bundle = shipped_bundle();
    let geometry = Geometry::of(&bundle.manifest);
    let library = locate_library(None, |name| std::env::var(name).ok()).unwrap();
    let env = environment(&library.path).unwrap();
    let (session, _) = open_session(
        env,
        "encoder.onnx",
        &bundle.encoder,
        ExecutionProvider::Cpu,
        2,
        false,
    )
    .unwrap();
    let mut runner = EncoderRunner::new(session, geometry).unwrap();
    let images: Vec<Vec<f32>> = (0..7).map(|n| textured(geometry.size, n)).collect();
    let batch = runner.run(&images).unwrap();
    let mut largest = 0.0f32;
    for (n, image) in images.iter().enumerate() {
        let alone = runner.run(std::slice::from_ref(image)).unwrap();
        assert_eq!(alone.len(), 1, "one slice in, one code out");
        largest = largest.max(float_gap(&alone[0], &batch[n], &format!("image {n} alone")));
    }
    // Batches of two or more share one path: bit for bit the same.
    for (k, code) in runner.run(&images[2..4]).unwrap().iter().enumerate() {
        assert_eq!(
            code,
            &batch[2 + k],
            "image {} in a batch of 2 and of 7",
            2 + k
        );
    }
    assert!(
        largest <= BATCH_ROUNDING,
        "a lone slice's float outputs are {largest:e} from its batched ones"
    );
    eprintln!("codes equal alone and batched; float outputs at most {largest:e} apart");
}
