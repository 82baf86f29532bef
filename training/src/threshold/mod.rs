//! `diptych-train threshold`: where the segmentation starts to say "lesion".
//!
//! A pixel is lesion when a lesion label's logit beats the background logit (argmax). Nothing in
//! the losses calibrates that boundary: the generalised Dice of L_seg weighs each label by its
//! volume, so a few stray lesion pixels cost it almost nothing, while the evaluation counts a
//! healthy slice with any predicted lesion pixel as a whole-tumour Dice of 0 and the service's
//! abnormality score and `null_outside_lesion` mask follow every predicted pixel. Raising the
//! background logit by an offset δ (the bias of `seg_decoder.head`, channel 0) moves the boundary
//! without retraining.
//!
//! This module exports a checkpoint with each δ of a grid, scores each bundle through ONNX
//! Runtime on validation slices of the sources the network was trained on — seed
//! [`THRESHOLD_SEED`], which neither training (1; synth-v8 also 6), `diptych-train eval` (2)
//! nor `diptych eval` (3, 4) uses, so the reported figures stay held out — and keeps the δ
//! with the best mean whole-tumour Dice over those sources (docs/METHOD.md §2, "The lesion
//! threshold").

pub mod command;

use std::path::{Path, PathBuf};

use diptych::synthetic::SourceKind;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::{SourceConfig, TrainConfig};
use crate::eval::{EvalError, EvalOptions, evaluate};
use crate::export::{ExportError, Exported, Weights, export_bundle, recipe_fields};

/// The seed of the slices the offset is chosen on (training 1 and 6, eval 2, retrieval eval 3, 4).
pub const THRESHOLD_SEED: u64 = 5;
/// The offsets tried by default.
pub const DEFAULT_OFFSETS: [f32; 9] = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0];
/// The bias whose channel 0 (background) the offset is added to.
pub const SEGMENTATION_HEAD_BIAS: &str = "seg_decoder.head.bias";

/// Why the offset could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ThresholdError {
    /// A trial bundle or the final one could not be written.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A trial bundle could not be scored.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// The request cannot be met as given.
    #[error("{0}")]
    Invalid(String),
}

/// What to try and on how many slices.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdOptions {
    /// Offsets δ added to the background logit.
    pub offsets: Vec<f32>,
    /// Validation slices per source.
    pub n: usize,
    /// Seed of the validation slices.
    pub seed: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for ThresholdOptions {
    fn default() -> Self {
        Self {
            offsets: DEFAULT_OFFSETS.to_vec(),
            n: 500,
            seed: THRESHOLD_SEED,
            progress: true,
        }
    }
}

/// One offset's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trial {
    /// The offset δ added to the background logit.
    pub offset: f32,
    /// Whole-tumour Dice per source, in the order of [`ThresholdReport::sources`].
    pub whole_tumor_dice: Vec<f64>,
    /// Their mean: what the offset is chosen by.
    pub mean: f64,
}

/// The sweep and its choice; recorded in the bundle's manifest as `training.threshold`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdReport {
    /// The sources scored (those the network was trained on).
    pub sources: Vec<SourceKind>,
    /// Validation slices per source.
    pub n: usize,
    /// Seed of the validation slices.
    pub seed: u64,
    /// Every offset tried.
    pub trials: Vec<Trial>,
    /// The offset chosen: the best mean, the smallest |δ| among equals.
    pub chosen: f32,
}

/// The synthetic sources in a training config, each once, in order of appearance; a BraTS
/// folder has no held-out split and is left out.
pub fn sources_of(source: &SourceConfig) -> Vec<SourceKind> {
    let mut kinds = Vec::new();
    collect_sources(source, &mut kinds);
    kinds
}

fn collect_sources(source: &SourceConfig, kinds: &mut Vec<SourceKind>) {
    let kind = match source {
        SourceConfig::Phantom { .. } => SourceKind::Phantom,
        SourceConfig::Anatomy { .. } => SourceKind::Anatomy,
        SourceConfig::Brats { .. } => return,
        SourceConfig::Mix { parts } => {
            parts.iter().for_each(|p| collect_sources(p, kinds));
            return;
        }
    };
    if !kinds.contains(&kind) {
        kinds.push(kind);
    }
}

/// The weights with `offset` added to the background channel of the segmentation head's bias.
pub fn with_background_offset(weights: &Weights, offset: f32) -> Result<Weights, ExportError> {
    let bias = weights.tensor(SEGMENTATION_HEAD_BIAS)?.copy();
    let _ = bias.get(0).g_add_scalar_(f64::from(offset));
    Ok(weights.replaced(SEGMENTATION_HEAD_BIAS, bias))
}

/// The offset with the best mean; among means equal to 1e-9, the one nearest 0.
pub fn choose(trials: &[Trial]) -> Option<f32> {
    let best = trials
        .iter()
        .map(|t| t.mean)
        .fold(f64::NEG_INFINITY, f64::max);
    trials
        .iter()
        .filter(|t| t.mean >= best - 1e-9)
        .min_by(|a, b| a.offset.abs().total_cmp(&b.offset.abs()))
        .map(|t| t.offset)
}

/// Sweeps the offsets on validation slices of the config's sources and writes the bundle with
/// the chosen one to `out`; the sweep is recorded in the manifest's training recipe.
pub fn tune_and_export(
    config: &TrainConfig,
    weights: &Weights,
    model_id: &str,
    recipe: serde_json::Value,
    out: &Path,
    options: &ThresholdOptions,
) -> Result<(ThresholdReport, Exported), ThresholdError> {
    let sources = sources_of(&config.data.source);
    if sources.is_empty() {
        return Err(ThresholdError::Invalid(
            "the config trains on no synthetic source (phantom or anatomy); the threshold is \
             chosen on their validation slices — export without it (diptych-train export)"
                .into(),
        ));
    }
    if options.offsets.is_empty() || options.n == 0 {
        return Err(ThresholdError::Invalid(
            "pass at least one offset and --n of at least 1".into(),
        ));
    }
    let bar = if options.progress {
        ProgressBar::new((options.offsets.len() * sources.len()) as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "threshold {bar:40} {pos}/{len} bundles×sources {elapsed_precise} eta {eta} {msg}",
        )
        .expect("static progress template"),
    );
    let trial_dir = TrialDir::new(out);
    let mut trials = Vec::with_capacity(options.offsets.len());
    for &offset in &options.offsets {
        bar.set_message(format!("δ = {offset:+}"));
        let shifted = with_background_offset(weights, offset)?;
        export_bundle(
            config,
            &shifted,
            model_id,
            serde_json::json!({}),
            &trial_dir.0,
        )?;
        let mut dice = Vec::with_capacity(sources.len());
        for &source in &sources {
            let eval = EvalOptions {
                n: options.n,
                seed: options.seed,
                progress: false,
                source,
                ..EvalOptions::default()
            };
            dice.push(
                evaluate(&trial_dir.0, &eval)?
                    .whole_tumor_dice
                    .unwrap_or(0.0),
            );
            bar.inc(1);
        }
        let mean = dice.iter().sum::<f64>() / dice.len() as f64;
        trials.push(Trial {
            offset,
            whole_tumor_dice: dice,
            mean,
        });
    }
    bar.finish_and_clear();
    drop(trial_dir);
    let chosen = choose(&trials).expect("at least one trial ran");
    let report = ThresholdReport {
        sources,
        n: options.n,
        seed: options.seed,
        trials,
        chosen,
    };
    let mut recipe = recipe_fields(recipe);
    recipe.insert(
        "threshold".into(),
        serde_json::to_value(&report).expect("a ThresholdReport always serialises to JSON"),
    );
    let exported = export_bundle(
        config,
        &with_background_offset(weights, chosen)?,
        model_id,
        serde_json::Value::Object(recipe),
        out,
    )?;
    Ok((report, exported))
}

/// The folder trial bundles are written to, beside `out`; removed when dropped.
struct TrialDir(PathBuf);

impl TrialDir {
    fn new(out: &Path) -> Self {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(".threshold-trial");
        Self(out.with_file_name(name))
    }
}

impl Drop for TrialDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tch::Tensor;

    fn trial(offset: f32, mean: f64) -> Trial {
        Trial {
            offset,
            whole_tumor_dice: vec![mean],
            mean,
        }
    }

    #[test]
    fn the_best_mean_wins_and_ties_go_to_the_smallest_shift() {
        let trials = [
            trial(-1.0, 0.5),
            trial(0.0, 0.6),
            trial(1.0, 0.7),
            trial(2.0, 0.65),
        ];
        assert_eq!(choose(&trials), Some(1.0));
        let tied = [trial(-0.5, 0.7), trial(0.0, 0.7), trial(0.5, 0.7)];
        assert_eq!(choose(&tied), Some(0.0));
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn a_mix_lists_each_synthetic_source_once() {
        let phantom = SourceConfig::Phantom {
            seed: 1,
            healthy_fraction: 0.5,
        };
        let anatomy = SourceConfig::Anatomy {
            seed: 1,
            healthy_fraction: 0.5,
        };
        let brats = SourceConfig::Brats {
            dir: PathBuf::from("/nowhere"),
        };
        let mix = SourceConfig::Mix {
            parts: vec![anatomy.clone(), phantom.clone(), brats.clone(), anatomy],
        };
        assert_eq!(sources_of(&mix), [SourceKind::Anatomy, SourceKind::Phantom]);
        assert_eq!(sources_of(&phantom), [SourceKind::Phantom]);
        assert!(sources_of(&brats).is_empty());
    }

    #[test]
    fn the_offset_moves_the_background_bias_only() {
        let bias = Tensor::from_slice(&[0.25f64, -1.0, 2.0, 0.5]);
        let other = Tensor::from_slice(&[3.0f64]);
        let weights = Weights::from_named(HashMap::from([
            (SEGMENTATION_HEAD_BIAS.to_string(), bias),
            ("encoder.head.bias".to_string(), other),
        ]));
        let shifted = with_background_offset(&weights, 1.5).unwrap();
        let values = |w: &Weights, name: &str| {
            Vec::<f64>::try_from(w.tensor(name).unwrap().shallow_clone()).unwrap()
        };
        assert_eq!(
            values(&shifted, SEGMENTATION_HEAD_BIAS),
            [1.75, -1.0, 2.0, 0.5]
        );
        assert_eq!(values(&shifted, "encoder.head.bias"), [3.0]);
        // The original weights are untouched (the next trial starts from them).
        assert_eq!(
            values(&weights, SEGMENTATION_HEAD_BIAS),
            [0.25, -1.0, 2.0, 0.5]
        );
        let empty = Weights::from_named(HashMap::new());
        assert!(matches!(
            with_background_offset(&empty, 1.0),
            Err(ExportError::MissingTensor { .. })
        ));
    }
}
