//! The model-bundle manifest: JSON round trip, validation of every field, checksums.

use std::path::{Path, PathBuf};

use diptych::manifest::{
    CodebookNames, GraphFile, Grid, MANIFEST_FILE, Manifest, ManifestError, QuantizedEncoder,
    sha256_file,
};
use diptych::phantom::{ABNORMAL_LABELS, NORMAL_LABELS};
use diptych::preprocess::PreprocessParams;

/// A fresh, empty folder under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diptych-manifest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A bundle folder with two fake graphs and a manifest that matches them.
fn bundle(name: &str) -> (PathBuf, Manifest) {
    let dir = temp_dir(name);
    std::fs::write(dir.join("encoder.onnx"), b"encoder graph bytes").unwrap();
    std::fs::write(dir.join("decoder.onnx"), b"decoder graph bytes").unwrap();
    let manifest = sample(&dir);
    manifest.write(&dir).unwrap();
    (dir, manifest)
}

fn sample(dir: &Path) -> Manifest {
    Manifest {
        format_version: 1,
        model_id: "phantom-v1".into(),
        preprocess: PreprocessParams::default(),
        grid: Grid { rows: 16, cols: 16 },
        codebook_size: 512,
        code_dim: 64,
        normal_labels: NORMAL_LABELS.iter().map(|s| s.to_string()).collect(),
        abnormal_labels: ABNORMAL_LABELS.iter().map(|s| s.to_string()).collect(),
        abnormality_margin: 1.0,
        opset: 17,
        encoder: GraphFile {
            file: "encoder.onnx".into(),
            sha256: sha256_file(dir.join("encoder.onnx")).unwrap(),
        },
        decoder: GraphFile {
            file: "decoder.onnx".into(),
            sha256: sha256_file(dir.join("decoder.onnx")).unwrap(),
        },
        codebooks: CodebookNames::default(),
        training: serde_json::json!({"seed": 1, "steps": 1000, "device": "cpu"}),
        combined_balance: 12.5,
        encoder_int8: None,
    }
}

#[test]
fn sha256_of_known_bytes() {
    let dir = temp_dir("sha");
    let path = dir.join("abc");
    std::fs::write(&path, b"abc").unwrap();
    assert_eq!(
        sha256_file(&path).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(matches!(
        sha256_file(dir.join("missing")),
        Err(ManifestError::Io { .. })
    ));
}

#[test]
fn written_manifest_loads_back_equal() {
    let (dir, manifest) = bundle("roundtrip");
    let loaded = Manifest::load(&dir).unwrap();
    assert_eq!(loaded, manifest);
    assert_eq!(loaded.input_size(), 128);
    assert_eq!(loaded.grid.positions(), 256);

    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
    assert!(
        text.contains("\n  \"model_id\": \"phantom-v1\""),
        "pretty JSON"
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["grid"]["rows"], 16);
    assert_eq!(json["codebooks"]["normal"], "codebook_normal");
    assert_eq!(json["preprocess"]["high_percentile"], 99.5);
    assert_eq!(json["training"]["steps"], 1000);
}

#[test]
fn each_invalid_field_is_named() {
    let dir = temp_dir("invalid");
    std::fs::write(dir.join("encoder.onnx"), b"e").unwrap();
    std::fs::write(dir.join("decoder.onnx"), b"d").unwrap();
    let good = sample(&dir);
    good.validate().unwrap();

    type Edit = fn(&mut Manifest);
    let cases: Vec<(&str, Edit)> = vec![
        ("format_version", |m| m.format_version = 2),
        ("model_id", |m| m.model_id = String::new()),
        ("model_id", |m| m.model_id = "phantom v1".into()),
        ("preprocess.input_size", |m| m.preprocess.input_size = 4),
        ("preprocess.low_percentile", |m| {
            m.preprocess.low_percentile = -1.0
        }),
        ("preprocess.high_percentile", |m| {
            m.preprocess.high_percentile = 0.1
        }),
        ("preprocess.high_percentile", |m| {
            m.preprocess.high_percentile = f32::NAN
        }),
        ("grid.rows", |m| m.grid.rows = 0),
        ("grid.rows", |m| m.grid.rows = 15),
        ("grid.cols", |m| m.grid.cols = 48),
        ("codebook_size", |m| m.codebook_size = 1),
        ("code_dim", |m| m.code_dim = 0),
        ("normal_labels", |m| m.normal_labels.clear()),
        ("normal_labels", |m| m.normal_labels[0] = "brain".into()),
        ("normal_labels", |m| {
            m.normal_labels[2] = "left_cerebrum".into()
        }),
        ("abnormal_labels", |m| m.abnormal_labels.truncate(1)),
        ("abnormal_labels", |m| m.abnormal_labels[1] = " ".into()),
        ("abnormality_margin", |m| m.abnormality_margin = 0.0),
        ("abnormality_margin", |m| {
            m.abnormality_margin = f32::INFINITY
        }),
        ("combined_balance", |m| m.combined_balance = 0.0),
        ("combined_balance", |m| m.combined_balance = f32::NAN),
        ("opset", |m| m.opset = 12),
        ("encoder.file", |m| {
            m.encoder.file = "../encoder.onnx".into()
        }),
        ("encoder.file", |m| m.encoder.file = String::new()),
        ("decoder.file", |m| {
            m.decoder.file = "sub/decoder.onnx".into()
        }),
        ("decoder.file", |m| m.decoder.file = "encoder.onnx".into()),
        ("encoder.sha256", |m| m.encoder.sha256 = "abc".into()),
        ("decoder.sha256", |m| m.decoder.sha256 = "z".repeat(64)),
        ("encoder_int8.file", |m| {
            m.encoder_int8 = Some(int8("decoder.onnx", 0.999));
        }),
        ("encoder_int8.sha256", |m| {
            let mut q = int8("encoder.int8.onnx", 0.999);
            q.graph.sha256 = "0".repeat(63);
            m.encoder_int8 = Some(q);
        }),
        ("encoder_int8.normal_agreement", |m| {
            m.encoder_int8 = Some(int8("encoder.int8.onnx", 1.5));
        }),
        ("codebooks.normal", |m| m.codebooks.normal = String::new()),
        ("codebooks.abnormal", |m| {
            m.codebooks.abnormal = "codebook_normal".into()
        }),
    ];
    for (field, edit) in cases {
        let mut m = good.clone();
        edit(&mut m);
        match m.validate() {
            Err(ManifestError::Invalid {
                field: got,
                problem,
            }) => {
                assert_eq!(got, field, "problem: {problem}");
                let message = ManifestError::Invalid {
                    field: got,
                    problem: problem.clone(),
                }
                .to_string();
                assert!(message.contains(field), "{message}");
                assert!(
                    problem.len() > 15,
                    "the problem says how to fix it: {problem}"
                );
            }
            other => panic!("editing {field} gave {other:?}"),
        }
    }
}

#[test]
fn a_manifest_without_a_balance_reads_as_plain_sum() {
    let (dir, m) = bundle("no-balance");
    let mut json: serde_json::Value = serde_json::to_value(&m).unwrap();
    json.as_object_mut().unwrap().remove("combined_balance");
    std::fs::write(dir.join(MANIFEST_FILE), json.to_string()).unwrap();
    let loaded = Manifest::load(&dir).unwrap();
    assert_eq!(
        loaded.combined_balance, 1.0,
        "bundles made before it: d_n + d_a"
    );
}

#[test]
fn invalid_manifest_on_disk_is_refused_by_load() {
    let (dir, mut manifest) = bundle("invalid-on-disk");
    manifest.codebook_size = 0;
    manifest.write(&dir).unwrap();
    assert!(matches!(
        Manifest::load(&dir),
        Err(ManifestError::Invalid {
            field: "codebook_size",
            ..
        })
    ));
    // `read` parses without judging.
    assert_eq!(Manifest::read(&dir).unwrap().codebook_size, 0);
}

/// An int8 encoder entry naming `file`, with normal agreement `normal`.
fn int8(file: &str, normal: f64) -> QuantizedEncoder {
    QuantizedEncoder {
        graph: GraphFile {
            file: file.into(),
            sha256: "a".repeat(64),
        },
        normal_agreement: normal,
        abnormal_agreement: 0.998,
        score_mean_abs_difference: 0.003,
        checked_slices: 600,
    }
}

#[test]
fn an_int8_encoder_round_trips_and_its_checksum_is_verified() {
    let (dir, mut manifest) = bundle("int8");
    std::fs::write(dir.join("encoder.int8.onnx"), b"int8 graph bytes").unwrap();
    let mut q = int8("encoder.int8.onnx", 0.997);
    q.graph.sha256 = sha256_file(dir.join("encoder.int8.onnx")).unwrap();
    manifest.encoder_int8 = Some(q);
    manifest.write(&dir).unwrap();
    assert_eq!(Manifest::load(&dir).unwrap(), manifest);
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
    assert!(text.contains("\"normal_agreement\": 0.997"), "{text}");
    std::fs::write(dir.join("encoder.int8.onnx"), b"int8 graph, changed").unwrap();
    match Manifest::load(&dir) {
        Err(ManifestError::ChecksumMismatch { path, .. }) => {
            assert_eq!(path, dir.join("encoder.int8.onnx"))
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    // A bundle without one writes no key at all.
    let (dir, _) = bundle("no-int8");
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
    assert!(!text.contains("encoder_int8"), "{text}");
}

#[test]
fn modified_graph_fails_the_checksum() {
    let (dir, manifest) = bundle("checksum");
    std::fs::write(dir.join("decoder.onnx"), b"decoder graph bytes, truncated").unwrap();
    match Manifest::load(&dir) {
        Err(ManifestError::ChecksumMismatch {
            path,
            expected,
            actual,
        }) => {
            assert_eq!(path, dir.join("decoder.onnx"));
            assert_eq!(expected, manifest.decoder.sha256);
            assert_ne!(actual, expected);
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    std::fs::remove_file(dir.join("encoder.onnx")).unwrap();
    let err = Manifest::load(&dir).unwrap_err();
    assert!(matches!(err, ManifestError::Io { .. }), "{err}");
    assert!(err.to_string().contains("encoder.onnx"), "{err}");
}

#[test]
fn missing_or_malformed_manifest_says_which_file() {
    let dir = temp_dir("missing");
    let err = Manifest::load(&dir).unwrap_err();
    assert!(matches!(err, ManifestError::Io { .. }));
    assert!(err.to_string().contains(MANIFEST_FILE), "{err}");

    std::fs::write(dir.join(MANIFEST_FILE), "{\"format_version\": 1}").unwrap();
    let err = Manifest::load(&dir).unwrap_err();
    assert!(matches!(err, ManifestError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("model_id"), "{err}");
}
