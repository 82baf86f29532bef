//! `diptych-train eval`: the command-line face of [`super::evaluate`].

use std::path::PathBuf;

use clap::Args;
use diptych::synthetic::SourceKind;

use super::{EVAL_BATCH, EVAL_SEED, EvalError, EvalOptions, EvalReport, SizeBin, evaluate};

/// Arguments of `diptych-train eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// The model bundle folder (manifest.json, encoder.onnx, decoder.onnx).
    #[arg(long)]
    pub model: PathBuf,
    /// Number of held-out slices.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// The synthetic source: the phantom or the atlas (real anatomy).
    #[arg(long, value_enum, default_value = "phantom")]
    pub source: SourceArg,
    /// Seed of the held-out slices (training uses 1).
    #[arg(long, default_value_t = EVAL_SEED)]
    pub seed: u64,
    /// Slices per ONNX Runtime call.
    #[arg(long, default_value_t = EVAL_BATCH)]
    pub batch: usize,
    /// End the output with the figures as one line of JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The `--source` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    /// The cartoon phantom.
    Phantom,
    /// The atlas source: real anatomy from the MNI152 maps.
    Anatomy,
}

impl SourceArg {
    /// The source this argument names.
    pub fn kind(self) -> SourceKind {
        match self {
            Self::Phantom => SourceKind::Phantom,
            Self::Anatomy => SourceKind::Anatomy,
        }
    }
}

/// Runs the evaluation and prints the figures to stdout (with `--json`, the last line is JSON).
pub fn run(args: &EvalArgs) -> Result<EvalReport, EvalError> {
    let options = EvalOptions {
        n: args.n,
        seed: args.seed,
        batch: args.batch,
        progress: !args.quiet,
        source: args.source.kind(),
    };
    let report = evaluate(&args.model, &options)?;
    print!("{}", summary(&report));
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("an EvalReport always serialises to JSON")
        );
    }
    Ok(report)
}

/// Three values as `a / b / c`, or `n/a`.
fn triple(v: Option<[f64; 3]>) -> String {
    v.map_or_else(
        || "n/a".to_string(),
        |[a, b, c]| format!("{a:.3} / {b:.3} / {c:.3}"),
    )
}

/// A size bin as `Dice (n slices)`.
fn bin(b: &SizeBin) -> String {
    match b.dice {
        Some(d) => format!("{d:.4} ({} slices)", b.slices),
        None => "n/a (0 slices)".to_string(),
    }
}

/// A human-readable table of the figures.
pub fn summary(r: &EvalReport) -> String {
    let f = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
    let rows = [
        ("whole-tumour Dice", f(r.whole_tumor_dice)),
        ("  diseased slices only", f(r.whole_tumor_dice_diseased)),
        (
            "  lesion < 0.5 % of frame",
            bin(&r.whole_tumor_dice_by_size[0]),
        ),
        ("  lesion 0.5–2 %", bin(&r.whole_tumor_dice_by_size[1])),
        ("  lesion ≥ 2 %", bin(&r.whole_tumor_dice_by_size[2])),
        (
            "healthy with a lesion pixel",
            f(r.healthy_with_predicted_lesion),
        ),
        ("  NCR/NET Dice", f(r.dice_necrotic_core)),
        ("  edema Dice", f(r.dice_edema)),
        ("  enhancing Dice", f(r.dice_enhancing_tumor)),
        ("abnormality AUC", f(r.abnormality_auc)),
        ("x̃ vs twin SSIM, lesion", f(r.twin_ssim_in_lesion)),
        ("x̃ vs twin SSIM, outside", f(r.twin_ssim_outside_lesion)),
        ("x̃ vs twin PSNR, lesion", f(r.twin_psnr_in_lesion)),
        ("x̃ vs twin PSNR, outside", f(r.twin_psnr_outside_lesion)),
        ("x̂ SSIM", f(r.recon_ssim)),
        ("x̂ PSNR", f(r.recon_psnr)),
        (
            "score, healthy p10/50/90",
            triple(r.abnormality_healthy_percentiles),
        ),
        (
            "score, diseased p10/50/90",
            triple(r.abnormality_diseased_percentiles),
        ),
        (
            "codebook rows used, normal",
            r.normal_codes_used.to_string(),
        ),
        ("  abnormal", r.abnormal_codes_used.to_string()),
    ];
    let mut out = format!(
        "model {} on {} held-out {:?} slices (seed {}: {} diseased, {} healthy) in {:.1} s\n",
        r.model_id, r.n, r.source, r.seed, r.diseased, r.healthy, r.seconds
    );
    for (name, value) in rows {
        out.push_str(&format!("  {name:<26} {value}\n"));
    }
    out
}
