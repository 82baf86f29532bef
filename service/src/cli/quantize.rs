//! `diptych quantize`: writes an int8 copy of a bundle's encoder graph and records it in the
//! manifest only when its codes agree with the float graph's (docs/QUANTIZATION.md).
//!
//! The calibration slices (held-out seed 5) are written for `service/tools/quantize_encoder.py`,
//! which rewrites the score head's last stage exactly and quantises the convolutions with ONNX
//! Runtime's static quantiser. The result is then checked through the service's own encoder on
//! other held-out slices (seed 2, as `diptych calibrate` uses): the share of grid positions whose
//! normal and abnormal codes equal the float graph's must reach `--min-agreement` (the issue's
//! bar: 99.5 %), or nothing is written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::Context;
use diptych::manifest::{GraphFile, Manifest, QuantizedEncoder, sha256_file};
use diptych::preprocess::PreprocessParams;
use diptych::synthetic::SourceKind;
use diptych_service::bundle::{Bundle, check_int8_encoder};
use diptych_service::config::Precision;
use diptych_service::encoder::{Engine, SliceCode};
use serde::Serialize;

use crate::cli::engine::start_bundle;
use crate::cli::eval::dataset::{EvalSlice, build_set};
use crate::cli::eval::{encode_slices, source_name};

/// Held-out generator seed of the calibration slices (1 trains, 2 checks, 3 and 4 evaluate).
pub const CALIBRATION_SEED: u64 = 5;

/// Held-out generator seed of the slices the agreement is measured on.
pub const CHECK_SEED: u64 = 2;

/// File name of the int8 encoder inside the bundle.
pub const INT8_FILE: &str = "encoder.int8.onnx";

/// What `diptych quantize` does.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// The model bundle (its manifest is rewritten when the graph passes).
    pub model: PathBuf,
    /// Synthetic sources of the calibration and check slices.
    pub sources: Vec<SourceKind>,
    /// Calibration slices per source.
    pub calibration_slices: usize,
    /// Check slices per source.
    pub check_slices: usize,
    /// The least share of equal codes (normal and abnormal each) to accept.
    pub min_agreement: f64,
    /// Convolutions to keep in float; `None`: the script's default.
    pub keep_float: Option<Vec<String>>,
    /// Python with onnx and onnxruntime (the `make deps-py` venv).
    pub python: PathBuf,
    /// `quantize_encoder.py`.
    pub script: PathBuf,
    /// Threads for generation and encoding.
    pub threads: usize,
}

/// What a quantisation produced and measured.
#[derive(Debug, Clone, Serialize)]
pub struct Quantized {
    /// The bundle's model id.
    pub model_id: String,
    /// The int8 graph's file inside the bundle.
    pub file: String,
    /// Share of check positions whose normal code equals the float graph's.
    pub normal_agreement: f64,
    /// The same for the abnormal code.
    pub abnormal_agreement: f64,
    /// Mean |score difference| between the two graphs on the check slices.
    pub score_mean_abs_difference: f64,
    /// Check slices (all sources).
    pub checked_slices: usize,
    /// Calibration slices (all sources).
    pub calibration_slices: usize,
    /// The script's report: the rewritten phases, the quantised and the float convolutions.
    pub graph: serde_json::Value,
}

/// The script's path inside a checkout of the repository.
const SCRIPT: &str = "service/tools/quantize_encoder.py";

/// The script of the checkout in the current directory, else the one beside the workspace the
/// binary was built from ([`checkout_file`](crate::cli::checkout_file)).
pub fn default_script() -> PathBuf {
    crate::cli::checkout_file(SCRIPT)
}

/// The Python of the `make deps-py` venv.
pub fn default_python() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/diptych/py-venv/bin/python")
}

/// Quantises, checks, and records the int8 encoder when it agrees enough.
pub async fn run(options: &QuantizeOptions) -> anyhow::Result<Quantized> {
    anyhow::ensure!(!options.sources.is_empty(), "name at least one --source");
    anyhow::ensure!(
        options.calibration_slices >= 16 && options.check_slices >= 1,
        "--calibration-slices must be at least 16 and --check-slices at least 1"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&options.min_agreement),
        "--min-agreement {} is not a share in [0, 1] (the default 0.995 is 99.5 %)",
        options.min_agreement
    );
    anyhow::ensure!(
        options.script.is_file(),
        "{}: no such script; run from the repository root, or name {SCRIPT} with --script",
        options.script.display()
    );
    let bundle = Bundle::load(&options.model)?;
    let params = bundle.manifest.preprocess;
    let size = params.input_size;

    let calibration = slices(
        options,
        &params,
        CALIBRATION_SEED,
        options.calibration_slices,
    )?;
    let dir = tempfile::tempdir().context("a temporary folder for the calibration slices")?;
    let inputs = dir.path().join("calibration.f32");
    let bytes: Vec<u8> = calibration
        .iter()
        .flat_map(|s| s.pixels.iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    std::fs::write(&inputs, bytes).context("writing the calibration slices")?;
    let partial = dir.path().join(INT8_FILE);
    let report = quantize_graph(options, &inputs, calibration.len(), size, &partial)?;

    let int8 = std::fs::read(&partial).context("reading the int8 graph the script wrote")?;
    check_int8_encoder(&bundle.manifest, INT8_FILE, &int8, &bundle.decoder)
        .context("the int8 graph breaks the encoder contract")?;

    let check = slices(options, &params, CHECK_SEED, options.check_slices)?;
    let images: Vec<&[f32]> = check.iter().map(|s| s.pixels.as_slice()).collect();
    let float_engine =
        Arc::new(start_bundle(bundle.clone(), Precision::Float, 32, options.threads.max(1)).await?);
    let float_codes = encode(&float_engine, &images, "float encoder").await?;
    drop(float_engine);
    let mut int8_bundle = bundle.clone();
    int8_bundle.encoder = int8;
    let int8_engine =
        Arc::new(start_bundle(int8_bundle, Precision::Float, 32, options.threads.max(1)).await?);
    let int8_codes = encode(&int8_engine, &images, "int8 encoder").await?;
    let agreement = Agreement::of(&float_codes, &int8_codes);

    let model_id = bundle.manifest.model_id.clone();
    let (normal, abnormal) = (agreement.normal, agreement.abnormal);
    if normal < options.min_agreement || abnormal < options.min_agreement {
        anyhow::bail!(
            "the int8 encoder of {model_id} agrees with the float one on {:.2} % of normal and \
             {:.2} % of abnormal codes ({} check slices), below the {:.2} % asked for; nothing \
             was written. Keep more convolutions in float (--keep-float, names in the script's \
             report: {report}) or calibrate on more slices",
            100.0 * normal,
            100.0 * abnormal,
            check.len(),
            100.0 * options.min_agreement
        );
    }
    let target = options.model.join(INT8_FILE);
    std::fs::copy(&partial, &target).with_context(|| format!("writing {}", target.display()))?;
    let mut manifest = Manifest::load(&options.model)
        .with_context(|| format!("reading the manifest of {}", options.model.display()))?;
    manifest.encoder_int8 = Some(QuantizedEncoder {
        graph: GraphFile {
            file: INT8_FILE.to_string(),
            sha256: sha256_file(&target)?,
        },
        normal_agreement: normal,
        abnormal_agreement: abnormal,
        score_mean_abs_difference: agreement.score_mean_abs_difference,
        checked_slices: check.len(),
    });
    manifest.validate()?;
    manifest
        .write(&options.model)
        .with_context(|| format!("writing the manifest of {}", options.model.display()))?;
    Ok(Quantized {
        model_id,
        file: INT8_FILE.to_string(),
        normal_agreement: normal,
        abnormal_agreement: abnormal,
        score_mean_abs_difference: agreement.score_mean_abs_difference,
        checked_slices: check.len(),
        calibration_slices: calibration.len(),
        graph: report,
    })
}

/// `per_source` slices of every source at `seed`, half healthy, pre-processed.
fn slices(
    options: &QuantizeOptions,
    params: &PreprocessParams,
    seed: u64,
    per_source: usize,
) -> anyhow::Result<Vec<EvalSlice>> {
    let mut out = Vec::new();
    for &kind in &options.sources {
        let generator = kind
            .open(seed, 0.5)
            .with_context(|| format!("opening the {} source (seed {seed})", source_name(kind)))?;
        let bar = crate::cli::bench::progress_bar(
            per_source as u64,
            &format!("{} slices, seed {seed}", source_name(kind)),
        );
        out.extend(tokio::task::block_in_place(|| {
            build_set(
                generator.as_ref(),
                per_source,
                params,
                false,
                options.threads,
                &bar,
            )
        })?);
        bar.finish_and_clear();
    }
    Ok(out)
}

/// Runs the script; its one-line JSON report.
fn quantize_graph(
    options: &QuantizeOptions,
    inputs: &Path,
    count: usize,
    size: usize,
    out: &Path,
) -> anyhow::Result<serde_json::Value> {
    let mut command = Command::new(&options.python);
    command
        .arg(&options.script)
        .arg("--model")
        .arg(&options.model)
        .arg("--inputs")
        .arg(inputs)
        .args(["--count", &count.to_string(), "--size", &size.to_string()])
        .arg("--out")
        .arg(out);
    if let Some(keep) = &options.keep_float {
        command.arg("--keep-float").args(keep);
    }
    let output = command.output().with_context(|| {
        format!(
            "running {} (Python with onnx and onnxruntime: `make deps-py`, or --python)",
            options.python.display()
        )
    })?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed ({}): {}",
        options.script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|l| !l.contains("[W:onnxruntime"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("the script's report {line:?}"))
}

async fn encode(
    engine: &Arc<Engine>,
    images: &[&[f32]],
    what: &str,
) -> anyhow::Result<Vec<SliceCode>> {
    let bar = crate::cli::bench::progress_bar(images.len() as u64, what);
    let codes = encode_slices(engine, images, &bar).await?;
    bar.finish_and_clear();
    Ok(codes)
}

/// How closely two encoders' codes agree on the same slices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// Share of positions with the same normal code.
    pub normal: f64,
    /// Share of positions with the same abnormal code.
    pub abnormal: f64,
    /// Mean |score difference|.
    pub score_mean_abs_difference: f64,
}

impl Agreement {
    /// Compares `a` and `b` slice by slice (same length, same geometry).
    pub fn of(a: &[SliceCode], b: &[SliceCode]) -> Agreement {
        let share = |pick: fn(&SliceCode) -> &[u32]| {
            let (same, all) = a.iter().zip(b).fold((0usize, 0usize), |(s, n), (x, y)| {
                let (x, y) = (pick(x), pick(y));
                (
                    s + x.iter().zip(y).filter(|(p, q)| p == q).count(),
                    n + x.len(),
                )
            });
            same as f64 / all.max(1) as f64
        };
        let score = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from((x.abnormality - y.abnormality).abs()))
            .sum::<f64>()
            / a.len().max(1) as f64;
        Agreement {
            normal: share(|c| &c.normal),
            abnormal: share(|c| &c.abnormal),
            score_mean_abs_difference: score,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(normal: &[u32], abnormal: &[u32], score: f32) -> SliceCode {
        SliceCode {
            normal: normal.to_vec(),
            abnormal: abnormal.to_vec(),
            abnormal_distance: vec![0.0; normal.len()],
            abnormality: score,
        }
    }

    #[test]
    fn agreement_counts_equal_positions_per_half() {
        let a = [code(&[1, 2, 3, 4], &[0, 0, 0, 0], 0.5)];
        let b = [code(&[1, 2, 3, 5], &[0, 0, 9, 9], 0.25)];
        let got = Agreement::of(&a, &b);
        assert_eq!(got.normal, 0.75);
        assert_eq!(got.abnormal, 0.5);
        assert_eq!(got.score_mean_abs_difference, 0.25);
    }
}
