//! `diptych-train eval`: the command-line face of [`super::evaluate`].

use std::path::PathBuf;

use clap::Args;

use super::{EVAL_BATCH, EVAL_SEED, EvalError, EvalOptions, EvalReport, evaluate};

/// Arguments of `diptych-train eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// The model bundle folder (manifest.json, encoder.onnx, decoder.onnx).
    #[arg(long)]
    pub model: PathBuf,
    /// Number of held-out phantom slices.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Phantom seed of the held-out slices (training uses 1).
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

/// Runs the evaluation and prints the figures to stdout (with `--json`, the last line is JSON).
pub fn run(args: &EvalArgs) -> Result<EvalReport, EvalError> {
    let options = EvalOptions {
        n: args.n,
        seed: args.seed,
        batch: args.batch,
        progress: !args.quiet,
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

/// A human-readable table of the figures.
pub fn summary(r: &EvalReport) -> String {
    let f = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
    let rows = [
        ("whole-tumour Dice", f(r.whole_tumor_dice)),
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
    ];
    let mut out = format!(
        "model {} on {} held-out phantom slices (seed {}: {} diseased, {} healthy) in {:.1} s\n",
        r.model_id, r.n, r.seed, r.diseased, r.healthy, r.seconds
    );
    for (name, value) in rows {
        out.push_str(&format!("  {name:<26} {value}\n"));
    }
    out
}
