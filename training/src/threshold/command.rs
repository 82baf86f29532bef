//! `diptych-train threshold`: a checkpoint in, a bundle whose lesion threshold was chosen on
//! validation slices out.

use clap::Args;

use super::{ThresholdError, ThresholdOptions, ThresholdReport, tune_and_export};
use crate::config::TrainConfig;
use crate::export::command::{ExportArgs, model_id, recipe, summary};
use crate::export::{Exported, Weights};

/// Arguments of `diptych-train threshold`: those of `export`, and the sweep's.
#[derive(Debug, Clone, Args)]
pub struct ThresholdArgs {
    /// What to export and where (as `diptych-train export`).
    #[command(flatten)]
    pub export: ExportArgs,
    /// Background-logit offsets to try, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        default_values_t = super::DEFAULT_OFFSETS
    )]
    pub offsets: Vec<f32>,
    /// Validation slices per source.
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    /// Seed of the validation slices (not 1 to 4 or 6: training and the evaluations use them).
    #[arg(long, default_value_t = super::THRESHOLD_SEED)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the sweep, writes the bundle, and prints the table and the export summary.
pub fn run(args: &ThresholdArgs) -> Result<(ThresholdReport, Exported), ThresholdError> {
    let config =
        TrainConfig::load(&args.export.config).map_err(crate::export::ExportError::from)?;
    let weights = Weights::load(&args.export.checkpoint)?;
    let options = ThresholdOptions {
        offsets: args.offsets.clone(),
        n: args.n,
        seed: args.seed,
        progress: !args.quiet,
    };
    let (report, exported) = tune_and_export(
        &config,
        &weights,
        &model_id(&args.export)?,
        recipe(&args.export)?,
        &args.export.out,
        &options,
    )?;
    print!("{}", table(&report));
    println!("{}", summary(&exported, &args.export.out));
    Ok((report, exported))
}

/// The sweep as a markdown table, the chosen offset in bold.
pub fn table(report: &ThresholdReport) -> String {
    let names: Vec<String> = report
        .sources
        .iter()
        .map(|s| format!("{s:?}").to_lowercase())
        .collect();
    let mut out = format!(
        "whole-tumour Dice on {} validation slices per source (seed {})\n\n| δ | {} | mean |\n|---|{}---|\n",
        report.n,
        report.seed,
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for t in &report.trials {
        let mark = if t.offset == report.chosen { "**" } else { "" };
        let dice: Vec<String> = t
            .whole_tumor_dice
            .iter()
            .map(|d| format!("{d:.4}"))
            .collect();
        out.push_str(&format!(
            "| {mark}{:+}{mark} | {} | {mark}{:.4}{mark} |\n",
            t.offset,
            dice.join(" | "),
            t.mean
        ));
    }
    out.push_str(&format!("\nchosen: background logit + {}\n", report.chosen));
    out
}
