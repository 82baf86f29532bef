//! `diptych calibrate` end to end on a copy of the bundle under test (`DIPTYCH_TEST_MODEL`, else
//! `models/phantom-v1`): it measures the combined-mode balance through ONNX Runtime, writes it
//! into the copy's manifest without breaking the bundle, is repeatable (held-out seed 2), and
//! refuses what it cannot measure with a message that says what to change.
//!
//! Needs libonnxruntime 1.31: ORT_DYLIB_PATH, or the cache `make deps-ort` fills.

#[path = "support/serve.rs"]
mod serve;

use std::path::Path;
use std::process::{Command, Output};

use diptych::manifest::Manifest;
use serde_json::Value;

fn calibrate(model: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diptych"))
        .arg("calibrate")
        .arg("--model")
        .arg(model)
        .args(["--source", "phantom", "--json"])
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .expect("diptych runs")
}

fn copy_bundle(to: &Path) {
    let from = serve::test_bundle();
    std::fs::create_dir_all(to).unwrap();
    for file in ["manifest.json", "encoder.onnx", "decoder.onnx"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

#[test]
fn calibration_measures_the_balance_and_writes_it_into_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("bundle");
    copy_bundle(&model);
    let mut before = Manifest::load(&model).unwrap();

    let out = calibrate(&model, &["--slices", "40"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    let balance = report["combined_balance"].as_f64().unwrap() as f32;
    let (n, a) = (
        report["mean_normal_distance"].as_f64().unwrap(),
        report["mean_abnormal_distance"].as_f64().unwrap(),
    );
    assert!(n > 0.0 && a > 0.0, "{report}");
    assert!(
        (f64::from(balance) - n / a).abs() < 1e-3 * n / a,
        "the balance is E[d_n] / E[d_a]: {report}"
    );
    assert_eq!(report["slices"], 40);
    assert_eq!(
        report["previous_balance"].as_f64().unwrap() as f32,
        before.combined_balance
    );

    // Written into the manifest; everything else, checksums included, as it was.
    let after = Manifest::load(&model).expect("the calibrated bundle still loads");
    assert_eq!(after.combined_balance, balance);
    before.combined_balance = balance;
    assert_eq!(after, before, "only the balance changed");

    // Held-out seed 2 and the same encoder: a second run measures the same.
    let again = calibrate(&model, &["--slices", "40"]);
    assert!(again.status.success());
    let again: Value = serde_json::from_slice(again.stdout.trim_ascii()).unwrap();
    assert_eq!(again["combined_balance"], report["combined_balance"]);
}

#[test]
fn calibration_refuses_what_it_cannot_measure() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("bundle");
    copy_bundle(&model);
    let out = calibrate(&model, &["--slices", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--slices must be at least 2"), "{err}");
    let manifest = Manifest::load(&model).unwrap();
    assert_eq!(
        manifest,
        Manifest::load(serve::test_bundle()).unwrap(),
        "a refused calibration leaves the manifest alone"
    );

    let out = calibrate(&dir.path().join("nowhere"), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere"), "names the missing bundle: {err}");
}
