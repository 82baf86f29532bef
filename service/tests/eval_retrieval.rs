//! `diptych eval` end to end on the model under test (`DIPTYCH_TEST_MODEL`, else the shipped
//! `models/phantom-v1`): a small phantom run must report every figure, beat random retrieval
//! where the method says it should, and write a figure of the documented size. A second run
//! on a copy of the bundle whose encoder exposes z_n and z_a as `normal_latent` and
//! `abnormal_latent` exercises the continuous-latent baseline. Runs on a small BraTS-layout
//! folder written by `diptych::brats::sample` (nothing downloaded) check the BraTS source: its
//! figures without twins, and its errors.
//!
//! Needs libonnxruntime 1.31: ORT_DYLIB_PATH, or the cache `make deps-ort` fills.

mod support;

#[path = "support/serve.rs"]
mod serve;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use diptych::brats::sample;
use diptych::bundle::onnx::{GraphProto, ModelProto, NodeProto};
use diptych::manifest::{Manifest, sha256_file};
use prost::Message;
use serde_json::Value;

/// Keys the report must hold as finite numbers.
const REQUIRED: [&str; 10] = [
    "normal_mode_normal_dice_at10",
    "pixel_l2_normal_dice_at10",
    "normal_mode_lesion_precision_at10",
    "random_lesion_precision_at10",
    "normal_mode_twin_top5",
    "abnormal_mode_abnormal_dice_at10",
    "normal_mode_abnormal_dice_at10",
    "abnormal_mode_abnormal_dice_at10_diseased",
    "composite_normal_ratio",
    "composite_abnormal_ratio",
];

/// Runs `diptych eval` with `source` (the arguments naming the source) and returns its output.
fn run_eval<S: AsRef<OsStr>>(
    source: &[S],
    model: &Path,
    queries: usize,
    references: usize,
    figure: Option<&Path>,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_diptych"));
    command
        .arg("eval")
        .args(source)
        .arg("--json")
        .args(["--queries", &queries.to_string()])
        .args(["--references", &references.to_string()])
        .arg("--model")
        .arg(model)
        .env("NO_COLOR", "1");
    if let Some(figure) = figure {
        command.arg("--figure").arg(figure);
    }
    command.output().expect("running diptych eval")
}

/// Runs `diptych eval` on the phantom and returns its last stdout line parsed as JSON, and
/// stderr.
fn eval(model: &Path, queries: usize, references: usize, figure: Option<&Path>) -> (Value, String) {
    parse(run_eval(
        &["--source", "phantom"],
        model,
        queries,
        references,
        figure,
    ))
}

/// The last stdout line of a successful `diptych eval --json` parsed as JSON, and stderr.
fn parse(output: Output) -> (Value, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    );
    assert!(
        output.status.success(),
        "diptych eval failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().expect("diptych eval printed nothing");
    let json = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}):\n{stdout}"));
    (json, stderr)
}

fn number(report: &Value, key: &str) -> f64 {
    let value = report
        .get(key)
        .unwrap_or_else(|| panic!("the report has no key {key:?}"));
    let v = value
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is {value}, not a number"));
    assert!(v.is_finite(), "{key} is {v}");
    v
}

#[test]
fn eval_scores_the_model_against_its_baselines_and_draws_the_figure() {
    let model = serve::test_bundle();
    let size = Manifest::load(&model).unwrap().input_size() as u32;
    let dir = tempfile::tempdir().unwrap();
    let figure = dir.path().join("retrieval.png");
    let (report, _) = eval(&model, 40, 300, Some(&figure));

    for key in REQUIRED {
        number(&report, key);
    }
    assert_eq!(report["source"], "phantom");
    assert_eq!(report["queries"], 40);
    assert_eq!(report["references"], 300);
    assert!(report["model_id"].as_str().is_some_and(|id| !id.is_empty()));
    for key in [
        "normal_mode_normal_dice_at10",
        "pixel_l2_normal_dice_at10",
        "normal_mode_twin_top5",
        "normal_mode_lesion_precision_at10",
        "random_lesion_precision_at10",
        // both shipped bundles pin a null code (row 0 of the abnormal codebook)
        "abnormal_null_share_healthy_cells",
        "abnormal_code_share_lesion_cells",
    ] {
        let v = number(&report, key);
        assert!((0.0..=1.0).contains(&v), "{key} = {v} outside [0, 1]");
    }

    let normal = number(&report, "normal_mode_normal_dice_at10");
    let random = number(&report, "random_normal_dice_at10");
    assert!(
        normal > random,
        "normal-mode retrieval matches normal labels no better than random ({normal} vs {random})"
    );
    let abnormal = number(&report, "abnormal_mode_abnormal_dice_at10_diseased");
    let random = number(&report, "random_abnormal_dice_at10_diseased");
    assert!(
        abnormal > random,
        "abnormal-mode retrieval matches lesion labels of diseased queries no better than random \
         ({abnormal} vs {random})"
    );

    // The label oracle is the ceiling of both Dice figures, and its composite sweep runs from
    // A's anatomy alone (all of its normal row kept) to B's lesion alone (all of its abnormal row).
    for (oracle, others) in [
        (
            "normal_oracle_normal_dice_at10",
            [
                "normal_mode_normal_dice_at10",
                "pixel_l2_normal_dice_at10",
                "label_cells_normal_mode_normal_dice_at10",
                "random_normal_dice_at10",
            ],
        ),
        (
            "abnormal_oracle_abnormal_dice_at10",
            [
                "abnormal_mode_abnormal_dice_at10",
                "pixel_l2_abnormal_dice_at10",
                "label_cells_abnormal_mode_abnormal_dice_at10",
                "random_abnormal_dice_at10",
            ],
        ),
    ] {
        let ceiling = number(&report, oracle);
        for other in others {
            let v = number(&report, other);
            assert!(
                v <= ceiling + 1e-9,
                "{other} = {v} above the label oracle's {ceiling}"
            );
        }
    }
    let sweep = report["composite_oracle"]
        .as_array()
        .expect("the oracle's composite sweep");
    assert!(sweep.len() >= 3, "{sweep:?}");
    let ratio = |i: usize, key: &str| sweep[i]["scores"][key].as_f64().unwrap();
    assert_eq!(ratio(0, "normal_ratio"), 1.0);
    assert_eq!(ratio(sweep.len() - 1, "abnormal_ratio"), 1.0);
    let kept = number(&report, "oracle_composite_kept_of_both");
    assert!(
        kept > 0.0 && kept <= 1.0,
        "oracle_composite_kept_of_both = {kept}"
    );

    // Label-cell codes (each grid cell's true label set) retrieve by the labels they are made
    // of: better than random in both modes, with no twin check (slices carry no twin labels),
    // and their composite sweep and the codes' give how much of both modes each keeps at once.
    for (cells, random) in [
        (
            "label_cells_normal_mode_normal_dice_at10",
            "random_normal_dice_at10",
        ),
        (
            "label_cells_abnormal_mode_abnormal_dice_at10_diseased",
            "random_abnormal_dice_at10_diseased",
        ),
    ] {
        let (c, r) = (number(&report, cells), number(&report, random));
        assert!(c > r, "{cells} = {c} no better than {random} = {r}");
    }
    assert!(report["label_cells_normal_mode_twin_top5"].is_null());
    assert!(
        report["label_cells"]["balance"].as_f64().unwrap() > 0.0,
        "{}",
        report["label_cells"]
    );
    for key in [
        "composite_kept_of_both",
        "label_cells_composite_kept_of_both",
        "label_cells_composite_normal_ratio",
    ] {
        let v = number(&report, key);
        assert!(v > 0.0 && v <= 1.5, "{key} = {v}");
    }

    // The lesion-size breakdown covers every diseased query once, and the oracle stays the
    // ceiling of the codes and the label cells in each bin.
    let bins = report["abnormal_dice_at10_by_lesion_size"]
        .as_array()
        .expect("the lesion-size breakdown");
    assert_eq!(bins.len(), 3, "{bins:?}");
    let counted: u64 = bins.iter().map(|b| b["queries"].as_u64().unwrap()).sum();
    assert_eq!(
        counted,
        report["diseased_queries"].as_u64().unwrap(),
        "{bins:?}"
    );
    for b in bins.iter().filter(|b| b["queries"].as_u64() > Some(0)) {
        let (codes, oracle) = (b["codes"].as_f64().unwrap(), b["oracle"].as_f64().unwrap());
        assert!(codes <= oracle + 1e-9, "{b}: codes above the oracle");
        let cells = b["label_cells"].as_f64().unwrap();
        assert!(cells <= oracle + 1e-9, "{b}: label cells above the oracle");
    }

    // LABEL_WIDTH + 6·(S + GAP) × HEADER + 4·(S + S/2 + ROW_GAP), as figure.rs documents.
    let png = image::open(&figure).expect("the figure is a readable PNG");
    assert_eq!(
        (png.width(), png.height()),
        (124 + 6 * (size + 6), 22 + 4 * (size + size / 2 + 10))
    );
}

/// Copies `model` to `dir` with an encoder that also outputs the inputs of its two vector
/// quantisers (the `Slice` nodes that split the head's 2·D channels) as `normal_latent` and
/// `abnormal_latent`. The nodes and outputs are appended as a second serialised `graph` field,
/// which protobuf parsers merge into the first, so nothing of the original graph is re-encoded.
fn bundle_with_latents(model: &Path, dir: &Path) {
    let mut manifest = Manifest::load(model).unwrap();
    let mut encoder = std::fs::read(model.join(&manifest.encoder.file)).unwrap();
    let graph = ModelProto::decode(&*encoder).unwrap().graph.unwrap();
    let split_at = |start: usize| {
        let starts = format!("const.slice_start_{start}");
        graph
            .node
            .iter()
            .find(|n| n.op_type() == "Slice" && n.input.get(1) == Some(&starts))
            .unwrap_or_else(|| panic!("no Slice from channel {start} in the encoder"))
            .output[0]
            .clone()
    };
    let mut extra = GraphProto::default();
    for (z, name) in [
        (split_at(0), "normal_latent"),
        (split_at(manifest.code_dim), "abnormal_latent"),
    ] {
        extra.node.push(NodeProto {
            input: vec![z],
            output: vec![name.to_string()],
            name: Some(format!("test.{name}")),
            op_type: Some("Identity".to_string()),
            ..NodeProto::default()
        });
        extra.output.push(support::value(name, 1, None));
    }
    encoder.extend(
        ModelProto {
            graph: Some(extra),
            ..ModelProto::default()
        }
        .encode_to_vec(),
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(&manifest.encoder.file);
    std::fs::write(&path, encoder).unwrap();
    manifest.encoder.sha256 = sha256_file(&path).unwrap();
    std::fs::copy(
        model.join(&manifest.decoder.file),
        dir.join(&manifest.decoder.file),
    )
    .unwrap();
    manifest.write(dir).unwrap();
}

#[test]
fn eval_scores_the_continuous_latents_when_the_encoder_gives_them() {
    let model = serve::test_bundle();
    let dir = tempfile::tempdir().unwrap();
    let (report, stderr) = eval(&model, 20, 100, None);
    if report["latent_baseline"] == true {
        // A bundle exported with the latents: nothing to add.
        number(&report, "latent_normal_mode_normal_dice_at10");
        return;
    }
    assert!(
        report["latent_normal_mode_normal_dice_at10"].is_null() && stderr.contains("absent"),
        "without latents the baseline must be null and said so on stderr:\n{stderr}"
    );
    let with = dir.path().join("bundle");
    bundle_with_latents(&model, &with);
    let (report, stderr) = eval(&with, 20, 100, None);
    assert_eq!(report["latent_baseline"], true, "{stderr}");
    let agreement = number(&report, "latent_code_agreement");
    assert!(
        agreement > 0.99,
        "the latents quantise to the service's codes at only {agreement} of positions"
    );
    for mode in ["normal", "abnormal", "combined"] {
        for metric in ["normal_dice_at10", "lesion_precision_at10", "twin_top5"] {
            number(&report, &format!("latent_{mode}_mode_{metric}"));
        }
    }
    number(&report, "latent_composite_normal_ratio");
    let latent = number(&report, "latent_normal_mode_normal_dice_at10");
    let random = number(&report, "random_normal_dice_at10");
    assert!(
        latent > random,
        "L2 on z_n matches normal labels no better than random ({latent} vs {random})"
    );
}

/// Writes the sample BraTS folder (8 subjects of 64 × 64 × 40 voxels, both namings, lesions in
/// 5) into `dir`.
/// The default bundle gives the "no lesion" code to healthy cells whatever their latent
/// (`null_outside_lesion`): its continuous latents still quantise to the service's codes, and
/// the evaluation does not warn that they might not be z_n/z_a. (Counting the nulled cells as
/// disagreements, it reported 81 % and warned on every run.)
#[test]
fn latents_of_a_bundle_that_nulls_healthy_cells_agree_with_its_codes() {
    let model = serve::workspace().join("models/synth-v9");
    let (report, stderr) = parse(run_eval(&["--source", "anatomy"], &model, 20, 60, None));
    assert_eq!(report["latent_baseline"], true, "{stderr}");
    let agreement = number(&report, "latent_code_agreement");
    assert!(
        agreement > 0.99,
        "the latents quantise to the service's codes at only {agreement} of positions"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    let nulled = number(&report, "abnormal_null_share_healthy_cells");
    assert!(
        nulled > 0.5,
        "a degenerate test: {nulled} of healthy cells nulled"
    );
}

fn brats_folder(dir: &Path) -> std::path::PathBuf {
    let folder = dir.join("brats");
    sample::write_sample(&folder, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    folder
}

#[test]
fn eval_on_a_brats_folder_scores_lesions_and_leaves_the_twin_check_out() {
    let model = serve::test_bundle();
    let dir = tempfile::tempdir().unwrap();
    let folder = brats_folder(dir.path());
    let figure = dir.path().join("brats.png");
    // 12 queries at 6 slices per subject: 2 query subjects of 8; the 6 others hold 36 slices,
    // fewer than the 100 references asked for.
    let source = [
        OsStr::new("--brats"),
        folder.as_os_str(),
        OsStr::new("--brats-slices-per-subject"),
        OsStr::new("6"),
    ];
    let (report, stderr) = parse(run_eval(&source, &model, 12, 100, Some(&figure)));

    assert_eq!(report["source"], "brats");
    assert_eq!(report["contrast"], "flair");
    assert_eq!(report["queries"], 12);
    assert_eq!(report["references"], 36, "{stderr}");
    assert!(stderr.contains("evaluating with 36"), "{stderr}");
    assert_eq!(report["brats"]["subjects"], 8);
    assert_eq!(report["brats"]["query_subjects"], 2);
    assert_eq!(report["brats"]["reference_subjects"], 6);
    assert!(report["seed_queries"].is_null() && report["seed_references"].is_null());
    let healthy = number(&report, "healthy_fraction");
    assert!(0.0 < healthy && healthy < 1.0, "healthy share {healthy}");
    let diseased = report["diseased_queries"].as_u64().unwrap();
    assert!(diseased > 0, "the sample's query subjects include a lesion");

    for row in [
        "normal_mode",
        "abnormal_mode",
        "combined_mode",
        "pixel_l2",
        "random",
    ] {
        for k in [1, 5, 10] {
            let key = format!("{row}_lesion_precision_at{k}");
            let v = number(&report, &key);
            assert!((0.0..=1.0).contains(&v), "{key} = {v} outside [0, 1]");
        }
        // No healthy twins in real scans: the twin figure is absent, not a made-up number.
        let twin = &report[format!("{row}_twin_top5")];
        assert!(twin.is_null(), "{row}_twin_top5 is {twin}, not null");
    }
    for key in [
        "normal_mode_normal_dice_at10",
        "normal_mode_abnormal_dice_at10",
        "abnormal_mode_abnormal_dice_at10_diseased",
        "composite_normal_dice_to_a_at10",
        "composite_abnormal_dice_to_b_at10",
    ] {
        let v = number(&report, key);
        assert!((0.0..=1.0).contains(&v), "{key} = {v} outside [0, 1]");
    }
    assert!(report["composite"]["pairs"].as_u64().unwrap() > 0);
    let labels = report["rows"][0]["scores"]["normal_dice_per_label_at10"]
        .as_object()
        .unwrap();
    assert_eq!(
        labels.keys().collect::<Vec<_>>(),
        ["brain"],
        "one normal label"
    );
    assert!(image::open(&figure).is_ok(), "the figure is a readable PNG");
}

#[test]
fn eval_on_a_brats_folder_names_what_is_wrong_with_it() {
    let model = serve::test_bundle();
    let dir = tempfile::tempdir().unwrap();
    let folder = brats_folder(dir.path());
    let run = |queries: usize| {
        let output = run_eval(
            &[OsStr::new("--brats"), folder.as_os_str()],
            &model,
            queries,
            30,
            None,
        );
        assert!(
            !output.status.success(),
            "diptych eval accepted a bad folder"
        );
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    // 200 queries at 24 slices per subject need 9 query subjects; the folder has 8.
    let stderr = run(200);
    assert!(
        stderr.contains("holds 8 subjects") && stderr.contains("fewer"),
        "{stderr}"
    );
    // A segmentation with a value BraTS does not use, in a query subject: the run stops with
    // the file and the value, no panic.
    // (Subject 6, the last in sorted order, is the query subject at 24 queries; its files are
    // the sample's uncompressed ones.)
    let subject = "BraTS2021_00006";
    let seg = folder.join(subject).join(format!("{subject}_seg.nii"));
    let dims = [64, 64, 40];
    let values = sample::volume_from_fn(dims, |v| if v == [30, 30, 20] { 7.0 } else { 0.0 });
    let header = sample::header(sample::Grid::Brats, dims);
    sample::write_volume(&seg, &header, dims, &values, sample::VoxelType::Float32).unwrap();
    let stderr = run(24);
    assert!(
        stderr.contains(&seg.display().to_string()) && stderr.contains("value 7"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
