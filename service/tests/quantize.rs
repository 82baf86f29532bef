//! `diptych quantize` end to end on a copy of the default bundle `models/synth-v9` (its score
//! head is what gets quantised): ONNX Runtime's quantiser in the `make deps-py` venv
//! writes the int8 graph, the check through the service's encoder passes, the manifest records
//! it and the bundle still loads; an engine asked for int8 runs it and gives the float graph's
//! codes; a quantisation that moves the codes is refused and leaves the bundle as it was; and a
//! bundle without an int8 graph refuses `precision = "int8"` saying how to make one.
//!
//! Needs libonnxruntime 1.31 (ORT_DYLIB_PATH, or the cache `make deps-ort` fills) and the
//! `make deps-py` venv (onnx, onnxruntime).

#[path = "support/serve.rs"]
mod serve;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use diptych::manifest::{Manifest, sha256_file};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych::preprocess::preprocess;
use diptych_service::bundle::Bundle;
use diptych_service::config::Precision;
use diptych_service::encoder::runtime::{environment, locate_library};
use diptych_service::encoder::{Engine, EngineOptions};
use serde_json::Value;

fn quantize(model: &Path, extra: &[&str]) -> Output {
    quantize_in(model, extra, Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// `diptych quantize` run in the folder `cwd`.
fn quantize_in(model: &Path, extra: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diptych"))
        .current_dir(cwd)
        .arg("quantize")
        .arg("--model")
        .arg(model)
        .args(["--source", "phantom", "--calibration-slices", "32"])
        .args(["--check-slices", "24", "--json", "--python"])
        .arg(serve::python())
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .expect("diptych runs")
}

/// A copy of the shipped synth-v9 bundle in `to`.
fn copy_bundle(to: &Path) {
    let from = serve::workspace().join("models/synth-v9");
    std::fs::create_dir_all(to).unwrap();
    for file in ["manifest.json", "encoder.onnx", "decoder.onnx"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    // The shipped bundle carries an int8 graph already: start from the float graphs alone.
    let mut manifest = Manifest::read(to).unwrap();
    manifest.encoder_int8 = None;
    manifest.write(to).unwrap();
}

fn engine(bundle: Bundle, precision: Precision) -> Result<Engine, String> {
    let library = locate_library(None, |name| std::env::var(name).ok()).unwrap();
    let env = environment(&library.path).unwrap();
    Engine::start(
        bundle,
        env,
        EngineOptions {
            precision,
            ..EngineOptions::cpu(1, 1, 8, Duration::from_millis(1), 64)
        },
    )
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_int8_encoder_is_written_checked_recorded_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("bundle");
    copy_bundle(&model);
    let before = Manifest::load(&model).unwrap();

    let out = tokio::task::block_in_place(|| quantize(&model, &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(report["checked_slices"], 24, "{report}");
    assert_eq!(report["graph"]["rewritten_phases"], 4, "{report}");
    assert!(
        !report["graph"]["quantized"].as_array().unwrap().is_empty(),
        "something was quantised: {report}"
    );
    for key in ["normal_agreement", "abnormal_agreement"] {
        assert!(report[key].as_f64().unwrap() >= 0.995, "{key}: {report}");
    }
    let score_gap = report["score_mean_abs_difference"].as_f64().unwrap();
    assert!(score_gap < 0.05, "the score barely moves: {report}");

    // Recorded with its checksum; nothing else in the manifest changed.
    let after = Manifest::load(&model).expect("the quantised bundle still loads");
    let int8 = after.encoder_int8.clone().expect("an encoder_int8 entry");
    assert_eq!(
        int8.graph.sha256,
        sha256_file(model.join(&int8.graph.file)).unwrap()
    );
    let mut without = after.clone();
    without.encoder_int8 = None;
    assert_eq!(without, before, "only the int8 entry was added");

    // Served: the int8 engine gives the float engine's codes on held-out phantom slices.
    let bundle = Bundle::load(&model).unwrap();
    assert!(bundle.encoder_int8.is_some());
    let float = engine(bundle.clone(), Precision::Float).unwrap();
    let quantized = engine(bundle, Precision::Int8).unwrap();
    let params = after.preprocess;
    let generator = PhantomGenerator::new(7, PhantomConfig::default());
    let (mut same, mut all) = (0usize, 0usize);
    for i in 0..16 {
        let pixels = preprocess(&generator.slice(i).raw_frame(), &params)
            .unwrap()
            .pixels;
        let a = float.encode(pixels.clone()).await.unwrap();
        let b = quantized.encode(pixels).await.unwrap();
        same += a
            .normal
            .iter()
            .zip(&b.normal)
            .filter(|(x, y)| x == y)
            .count();
        same += a
            .abnormal
            .iter()
            .zip(&b.abnormal)
            .filter(|(x, y)| x == y)
            .count();
        all += a.normal.len() + a.abnormal.len();
        assert!((a.abnormality - b.abnormality).abs() < 0.2, "slice {i}");
    }
    assert!(
        same as f64 >= 0.995 * all as f64,
        "{same} of {all} codes equal"
    );

    // A changed int8 graph is refused at load, by its checksum.
    std::fs::write(model.join(&int8.graph.file), b"not the graph").unwrap();
    let err = Bundle::load(&model).unwrap_err().to_string();
    assert!(err.contains("encoder.int8.onnx"), "{err}");
}

#[test]
fn a_quantisation_that_moves_the_codes_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("bundle");
    copy_bundle(&model);
    let before = std::fs::read(model.join("manifest.json")).unwrap();
    // Only the encoder's head and its first convolution stay float: int8 in the layers before
    // the vector quantisation moves the latents across code boundaries.
    let out = quantize(&model, &["--keep-float", "Conv_0,Conv_10"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("below the 99.50 % asked for"), "{err}");
    assert!(err.contains("--keep-float"), "says what to change: {err}");
    assert_eq!(
        std::fs::read(model.join("manifest.json")).unwrap(),
        before,
        "the manifest is untouched"
    );
    assert!(!model.join("encoder.int8.onnx").exists());

    // A name that is no convolution: the script's message, nothing written.
    let out = quantize(&model, &["--keep-float", "Conv_404"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Conv_404"), "{err}");
    assert!(!model.join("encoder.int8.onnx").exists());

    // A script that is not there is refused before anything runs, saying how to name one.
    let out = quantize(&model, &["--script", "/nonexistent/quantize_encoder.py"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/quantize_encoder.py: no such script")
            && err.contains("--script"),
        "{err}"
    );

    // Run in another checkout, the binary takes that checkout's script, not the one beside the
    // workspace it was built from (a shared CARGO_TARGET_DIR).
    let checkout = dir.path().join("checkout");
    std::fs::create_dir_all(checkout.join("service/tools")).unwrap();
    std::fs::write(
        checkout.join("service/tools/quantize_encoder.py"),
        "import sys\nsys.exit('the script of the checkout in the current directory ran')\n",
    )
    .unwrap();
    let out = quantize_in(&model, &[], &checkout);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the script of the checkout in the current directory ran"),
        "{err}"
    );
    assert_eq!(std::fs::read(model.join("manifest.json")).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_without_an_int8_graph_refuses_to_start_and_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("bundle");
    copy_bundle(&model);
    let Err(err) = engine(Bundle::load(&model).unwrap(), Precision::Int8) else {
        panic!("no int8 graph, yet the engine started");
    };
    assert!(err.contains("diptych quantize --model"), "{err}");
    assert!(err.contains("precision = \"float\""), "{err}");
}
