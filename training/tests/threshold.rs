//! `diptych-train threshold` end to end on a tiny random network: every offset of the sweep is
//! exported and scored through ONNX Runtime, the bundle written carries the chosen offset in its
//! segmentation head and the sweep in its manifest, and no trial folder is left behind.
//!
//! The offsets are extreme on purpose, so that the choice does not depend on the random weights:
//! with the background logit raised by 1000 no pixel is lesion (whole-tumour Dice 0 on every
//! diseased slice); lowered by 1000, every pixel is (Dice above 0 wherever there is a lesion).

mod export_fixture;

use diptych::bundle::names::{DECODER_FILE, ENCODER_FILE};
use diptych_training::export::{Weights, read_initializer};
use diptych_training::threshold::{SEGMENTATION_HEAD_BIAS, ThresholdOptions, tune_and_export};
use export_fixture::{require_ort, temp_dir, tiny_config, trained_tiny};

#[test]
fn the_bundle_gets_the_offset_that_segments_best() {
    require_ort();
    let config = tiny_config();
    let (vs, _net) = trained_tiny(&config, 31);
    let weights = Weights::from_var_store(&vs);
    let trained_bias = Vec::<f32>::try_from(&vs.variables()[SEGMENTATION_HEAD_BIAS]).unwrap();
    let dir = temp_dir("threshold");
    let out = dir.join("tiny-threshold");
    let options = ThresholdOptions {
        offsets: vec![1000.0, -1000.0],
        n: 24,
        progress: false,
        ..ThresholdOptions::default()
    };
    let recipe = serde_json::json!({ "note": "test" });
    let (report, exported) =
        tune_and_export(&config, &weights, "tiny-threshold", recipe, &out, &options)
            .expect("the sweep runs");

    assert_eq!(report.trials.len(), 2);
    let [never, always] = [&report.trials[0], &report.trials[1]];
    assert_eq!(never.whole_tumor_dice, [0.0], "no pixel is lesion at +1000");
    assert!(
        always.mean > 0.0,
        "every pixel is lesion at -1000: {always:?}"
    );
    assert_eq!(report.chosen, -1000.0);

    // The bundle written is the chosen one, in both graphs.
    for file in [ENCODER_FILE, DECODER_FILE] {
        let (dims, bias) = read_initializer(&out.join(file), SEGMENTATION_HEAD_BIAS).unwrap();
        assert_eq!(dims, [trained_bias.len()], "{file}");
        assert!(
            (bias[0] - (trained_bias[0] - 1000.0)).abs() < 1e-3,
            "{file}: background bias {} for trained {}",
            bias[0],
            trained_bias[0]
        );
        assert_eq!(
            bias[1..],
            trained_bias[1..],
            "{file}: lesion biases unchanged"
        );
    }
    let recorded = &exported.manifest.training["threshold"];
    assert_eq!(recorded["chosen"], -1000.0);
    assert_eq!(recorded["seed"], 5);
    assert_eq!(recorded["sources"], serde_json::json!(["phantom"]));
    assert_eq!(exported.manifest.training["note"], "test");

    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["tiny-threshold"], "the trial folder is removed");
    let _ = std::fs::remove_dir_all(&dir);
}
