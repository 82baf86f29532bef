//! End to end: a tiny random network is exported, then `diptych-train eval --json` scores the
//! bundle through ONNX Runtime; the last line of stdout must be one JSON object with every figure,
//! each within its range. (The figures of a random network mean nothing; that they exist, are
//! finite and in range does.)

mod export_fixture;

use std::process::Command;

use export_fixture::{export_tiny, require_ort, temp_dir, tiny_config, trained_tiny};

/// Slices scored: not a multiple of the batch, so a partial last batch is exercised.
const SLICES: usize = 40;

#[test]
fn eval_json_has_every_figure_in_range() {
    require_ort();
    let config = tiny_config();
    let (vs, _net) = trained_tiny(&config, 21);
    let dir = temp_dir("eval-bundle");
    export_tiny(&config, &vs, &dir);

    let output = Command::new(env!("CARGO_BIN_EXE_diptych-train"))
        .args(["eval", "--model"])
        .arg(&dir)
        .args([
            "--n",
            &SLICES.to_string(),
            "--batch",
            "16",
            "--json",
            "--quiet",
        ])
        .output()
        .expect("diptych-train runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "eval failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("eval prints something");
    let report: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {last}"));

    assert_eq!(report["n"], SLICES);
    assert_eq!(report["seed"], 2);
    assert_eq!(report["model_id"], "tiny-test");
    let diseased = report["diseased"].as_u64().unwrap();
    let healthy = report["healthy"].as_u64().unwrap();
    assert_eq!(diseased + healthy, SLICES as u64);
    assert!(diseased > 0 && healthy > 0, "{report}");

    let unit = [
        "whole_tumor_dice",
        "whole_tumor_dice_diseased",
        "healthy_with_predicted_lesion",
        "dice_necrotic_core",
        "dice_edema",
        "dice_enhancing_tumor",
        "abnormality_auc",
        "abnormality_mean_diseased",
        "abnormality_mean_healthy",
    ];
    let ssim = [
        "twin_ssim_in_lesion",
        "twin_ssim_outside_lesion",
        "recon_ssim",
    ];
    let psnr = [
        "twin_psnr_in_lesion",
        "twin_psnr_outside_lesion",
        "recon_psnr",
    ];
    for key in unit {
        let v = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing or null: {report}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v} is outside [0, 1]");
    }
    for key in ssim {
        let v = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing or null: {report}"));
        assert!((-1.0..=1.0).contains(&v), "{key} = {v} is outside [-1, 1]");
    }
    for key in psnr {
        let v = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing or null: {report}"));
        assert!(
            (0.0..=100.0).contains(&v),
            "{key} = {v} dB is outside [0, 100]"
        );
    }
    // The breakdown adds up: the size bins hold every diseased slice and average to the
    // diseased mean, and the whole-tumour Dice is that mean with every flagged healthy slice
    // counted as 0.
    let f = |key: &str| report[key].as_f64().unwrap();
    let bins = report["whole_tumor_dice_by_size"].as_array().unwrap();
    assert_eq!(bins.len(), 3);
    let slices: Vec<f64> = bins.iter().map(|b| b["slices"].as_f64().unwrap()).collect();
    // (A lesion that the resampling to 128² removes entirely leaves its slice's Dice undefined
    // when nothing is predicted either: such a slice is in no bin.)
    let scored = slices.iter().sum::<f64>();
    assert!(scored > 0.0 && scored <= diseased as f64, "{report}");
    let weighted: f64 = bins
        .iter()
        .zip(&slices)
        .map(|(b, n)| b["dice"].as_f64().map_or(0.0, |d| d * n))
        .sum();
    let diseased_mean = f("whole_tumor_dice_diseased");
    assert!((weighted / scored - diseased_mean).abs() < 1e-9, "{report}");
    let flagged = f("healthy_with_predicted_lesion") * healthy as f64;
    let expected = diseased_mean * scored / (scored + flagged);
    assert!((f("whole_tumor_dice") - expected).abs() < 1e-9, "{report}");
    // Codebook use: at least one row of each codebook, at most K.
    let k = config.model.codebook_size as u64;
    for key in ["normal_codes_used", "abnormal_codes_used"] {
        let used = report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing: {report}"));
        assert!((1..=k).contains(&used), "{key} = {used}, K = {k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_of_a_missing_bundle_names_the_problem() {
    let dir = temp_dir("eval-missing");
    let output = Command::new(env!("CARGO_BIN_EXE_diptych-train"))
        .args(["eval", "--model"])
        .arg(dir.join("no-such-bundle"))
        .args(["--n", "2", "--quiet"])
        .output()
        .expect("diptych-train runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("manifest.json"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
