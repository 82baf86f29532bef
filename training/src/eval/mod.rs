//! `diptych-train eval`: scores a model bundle through ONNX Runtime on held-out synthetic slices.
//!
//! Slices come from a synthetic source — the phantom or the atlas (real anatomy) — with seed 2
//! (training uses seed 1) and 30 % healthy slices; image and healthy twin go through the shared pre-processing with the
//! bundle's parameters, the abnormal labels through `place_labels`. Figures (see [`metrics`] for
//! the definitions of SSIM and PSNR):
//!
//! - Dice of each abnormal label, averaged over the slices where that label is present in the
//!   truth or the prediction (argmax of the segmentation logits); the same for the whole tumour
//!   (labels 1|2|3), with its breakdown: the diseased slices alone and by true lesion size, and
//!   the share of healthy slices with any predicted lesion pixel (each scores a Dice of 0);
//! - x̃ (normal-appearing) against the healthy twin: SSIM and PSNR inside the true lesion
//!   (averaged over diseased slices) and outside it (all pixels of the frame not in the lesion,
//!   averaged over all slices);
//! - ROC AUC of the abnormality score between healthy and diseased slices, and the score's
//!   distribution (10th, 50th, 90th percentile) on healthy and on diseased slices: calibration;
//! - x̂ (reconstruction) against the input: whole-image SSIM and PSNR, averaged over all slices.

pub mod command;
pub mod metrics;
pub mod runtime;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use diptych::phantom::PhantomConfig;
use diptych::preprocess::{PreprocessError, PreprocessParams, place_labels, preprocess};
use diptych::synthetic::{ABNORMAL_LABELS, SourceKind, SyntheticSlice, lesion_size};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use self::metrics::{dice, masked_mean, psnr, roc_auc, ssim_map};
use self::runtime::{BundleRunner, RuntimeError};

/// The phantom seed reserved for evaluation (training uses seed 1).
pub const EVAL_SEED: u64 = 2;
/// Slices per ONNX Runtime call.
pub const EVAL_BATCH: usize = 32;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The bundle could not be loaded or run.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A phantom slice could not be pre-processed with the bundle's parameters.
    #[error("pre-processing a phantom slice with the bundle's parameters: {0}")]
    Preprocess(#[from] PreprocessError),
    /// The bundle segments other labels than the phantom's.
    #[error(
        "the bundle's abnormal labels {0:?} are not the phantom's {ABNORMAL_LABELS:?}; \
         phantom evaluation needs a bundle trained on these labels"
    )]
    Labels(Vec<String>),
    /// Nothing to score.
    #[error("--n must be at least 1")]
    Empty,
    /// The source's data cannot be loaded.
    #[error(transparent)]
    Source(#[from] diptych::atlas::AtlasError),
}

/// What to evaluate and how.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Number of held-out slices.
    pub n: usize,
    /// Phantom seed of the held-out slices.
    pub seed: u64,
    /// Slices per ONNX Runtime call.
    pub batch: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// The synthetic source of the slices.
    pub source: SourceKind,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            n: 1000,
            seed: EVAL_SEED,
            batch: EVAL_BATCH,
            progress: true,
            source: SourceKind::Phantom,
        }
    }
}

/// The mean whole-tumour Dice of one lesion-size bin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SizeBin {
    /// Diseased slices in the bin.
    pub slices: usize,
    /// Their mean whole-tumour Dice (`null` for an empty bin).
    pub dice: Option<f64>,
}

/// Dice per abnormal label (background excluded), `null` where no slice had the label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelDice {
    /// NCR/NET.
    pub necrotic_core: Option<f64>,
    /// Peritumoral edema.
    pub edema: Option<f64>,
    /// Enhancing tumour.
    pub enhancing_tumor: Option<f64>,
}

/// The figures of one evaluation; serialised as the JSON line of `diptych-train eval --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The bundle's model id.
    pub model_id: String,
    /// The synthetic source of the slices.
    pub source: SourceKind,
    /// Slices scored.
    pub n: usize,
    /// Phantom seed of the slices.
    pub seed: u64,
    /// Slices with a lesion.
    pub diseased: usize,
    /// Slices without.
    pub healthy: usize,
    /// Mean Dice of the whole tumour (labels 1|2|3).
    pub whole_tumor_dice: Option<f64>,
    /// Mean whole-tumour Dice of the diseased slices alone.
    pub whole_tumor_dice_diseased: Option<f64>,
    /// Mean whole-tumour Dice of the diseased slices by true lesion size (the bins of
    /// [`lesion_size`]: under 0.5 % of the frame, up to 2 %, larger), with the slice counts.
    pub whole_tumor_dice_by_size: [SizeBin; 3],
    /// Share of healthy slices with at least one pixel predicted as lesion: each counts as a
    /// whole-tumour Dice of 0.
    pub healthy_with_predicted_lesion: Option<f64>,
    /// Mean Dice of NCR/NET.
    pub dice_necrotic_core: Option<f64>,
    /// Mean Dice of edema.
    pub dice_edema: Option<f64>,
    /// Mean Dice of enhancing tumour.
    pub dice_enhancing_tumor: Option<f64>,
    /// ROC AUC of the abnormality score, diseased vs healthy slices.
    pub abnormality_auc: Option<f64>,
    /// SSIM of x̃ against the healthy twin inside the lesion.
    pub twin_ssim_in_lesion: Option<f64>,
    /// SSIM of x̃ against the healthy twin outside the lesion.
    pub twin_ssim_outside_lesion: Option<f64>,
    /// PSNR (dB) of x̃ against the healthy twin inside the lesion.
    pub twin_psnr_in_lesion: Option<f64>,
    /// PSNR (dB) of x̃ against the healthy twin outside the lesion.
    pub twin_psnr_outside_lesion: Option<f64>,
    /// Whole-image SSIM of x̂ against the input.
    pub recon_ssim: Option<f64>,
    /// Whole-image PSNR (dB) of x̂ against the input.
    pub recon_psnr: Option<f64>,
    /// Mean abnormality score of diseased slices.
    pub abnormality_mean_diseased: Option<f64>,
    /// Mean abnormality score of healthy slices.
    pub abnormality_mean_healthy: Option<f64>,
    /// 10th, 50th and 90th percentile of the abnormality score on healthy slices.
    pub abnormality_healthy_percentiles: Option<[f64; 3]>,
    /// 10th, 50th and 90th percentile of the abnormality score on diseased slices.
    pub abnormality_diseased_percentiles: Option<[f64; 3]>,
    /// Distinct rows of the normal codebook that the slices' normal codes use (of K).
    pub normal_codes_used: usize,
    /// Distinct rows of the abnormal codebook that the slices' abnormal codes use (of K; the
    /// "no lesion" row counts as one): how much of the codebook the lesions draw on.
    pub abnormal_codes_used: usize,
    /// Wall time of the evaluation, seconds.
    pub seconds: f64,
}

/// A running mean that ignores undefined values.
#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    count: usize,
}

impl Mean {
    fn add(&mut self, value: Option<f64>) {
        if let Some(v) = value {
            self.sum += v;
            self.count += 1;
        }
    }

    fn get(self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// Accumulates per-slice figures.
#[derive(Debug, Default)]
struct Tally {
    label_dice: [Mean; 3],
    whole_dice: Mean,
    whole_dice_diseased: Mean,
    whole_dice_by_size: [Mean; 3],
    healthy_flagged: Mean,
    twin_ssim_in: Mean,
    twin_ssim_out: Mean,
    twin_psnr_in: Mean,
    twin_psnr_out: Mean,
    recon_ssim: Mean,
    recon_psnr: Mean,
    scores: Vec<f64>,
    diseased: Vec<bool>,
    normal_codes: BTreeSet<i64>,
    abnormal_codes: BTreeSet<i64>,
}

/// One held-out slice ready for the model.
struct Sample {
    image: Vec<f32>,
    twin: Vec<f32>,
    labels: Vec<u8>,
    has_lesion: bool,
}

fn sample(slice: &SyntheticSlice, params: &PreprocessParams) -> Result<Sample, PreprocessError> {
    let image = preprocess(&slice.raw_frame(), params)?;
    let twin = preprocess(&slice.twin_frame(), params)?;
    let labels = place_labels(
        &slice.abnormal_labels,
        slice.rows,
        slice.cols,
        &image.placement,
        image.size,
    );
    Ok(Sample {
        image: image.pixels,
        twin: twin.pixels,
        labels,
        has_lesion: slice.has_lesion,
    })
}

/// Scores the bundle in `model` on `options.n` held-out slices of `options.source`.
pub fn evaluate(model: &Path, options: &EvalOptions) -> Result<EvalReport, EvalError> {
    if options.n == 0 {
        return Err(EvalError::Empty);
    }
    let started = Instant::now();
    let mut runner = BundleRunner::open(model)?;
    let params = runner.manifest.preprocess;
    let size = params.input_size;
    let pixels = size * size;
    let labels = runner.manifest.abnormal_labels.len();
    if runner.manifest.abnormal_labels != ABNORMAL_LABELS {
        return Err(EvalError::Labels(runner.manifest.abnormal_labels.clone()));
    }
    let generator = options
        .source
        .open(options.seed, PhantomConfig::default().healthy_fraction)?;
    let bar = if options.progress {
        ProgressBar::new(options.n as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "eval {bar:40} {pos}/{len} slices {elapsed_precise} eta {eta}",
        )
        .expect("static progress template"),
    );

    let mut tally = Tally::default();
    let batch = options.batch.max(1);
    for start in (0..options.n).step_by(batch) {
        let end = (start + batch).min(options.n);
        let samples = (start..end)
            .map(|i| sample(&generator.slice(i as u64), &params))
            .collect::<Result<Vec<_>, _>>()?;
        let images: Vec<f32> = samples
            .iter()
            .flat_map(|s| s.image.iter().copied())
            .collect();
        let encoded = runner.encode(&images)?;
        let decoded = runner.decode(&encoded.normal_indices, &encoded.abnormal_indices)?;
        tally.normal_codes.extend(&encoded.normal_indices);
        tally.abnormal_codes.extend(&encoded.abnormal_indices);
        for (k, s) in samples.iter().enumerate() {
            let logits = &decoded.segmentation[k * labels * pixels..(k + 1) * labels * pixels];
            let predicted = argmax_channels(logits, labels, pixels);
            let recon = &decoded.reconstruction[k * pixels..(k + 1) * pixels];
            let normal = &decoded.normal_appearing[k * pixels..(k + 1) * pixels];
            tally.add_slice(s, &predicted, recon, normal, size);
            tally.scores.push(f64::from(encoded.abnormality[k]));
            tally.diseased.push(s.has_lesion);
        }
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();

    let diseased = tally.diseased.iter().filter(|&&d| d).count();
    let mean_score = |want: bool| {
        let mut m = Mean::default();
        for (s, d) in tally.scores.iter().zip(&tally.diseased) {
            if *d == want {
                m.add(Some(*s));
            }
        }
        m.get()
    };
    let percentiles = |want: bool| {
        let mut scores: Vec<f64> = tally
            .scores
            .iter()
            .zip(&tally.diseased)
            .filter(|(_, d)| **d == want)
            .map(|(s, _)| *s)
            .collect();
        scores.sort_by(f64::total_cmp);
        let at = |q: f64| scores[((scores.len() - 1) as f64 * q).round() as usize];
        (!scores.is_empty()).then(|| [at(0.1), at(0.5), at(0.9)])
    };
    Ok(EvalReport {
        model_id: runner.manifest.model_id.clone(),
        source: options.source,
        n: options.n,
        seed: options.seed,
        diseased,
        healthy: options.n - diseased,
        whole_tumor_dice: tally.whole_dice.get(),
        dice_necrotic_core: tally.label_dice[0].get(),
        whole_tumor_dice_diseased: tally.whole_dice_diseased.get(),
        whole_tumor_dice_by_size: tally.whole_dice_by_size.map(|m| SizeBin {
            slices: m.count,
            dice: m.get(),
        }),
        healthy_with_predicted_lesion: tally.healthy_flagged.get(),
        dice_edema: tally.label_dice[1].get(),
        dice_enhancing_tumor: tally.label_dice[2].get(),
        abnormality_auc: roc_auc(&tally.scores, &tally.diseased),
        twin_ssim_in_lesion: tally.twin_ssim_in.get(),
        twin_ssim_outside_lesion: tally.twin_ssim_out.get(),
        twin_psnr_in_lesion: tally.twin_psnr_in.get(),
        twin_psnr_outside_lesion: tally.twin_psnr_out.get(),
        recon_ssim: tally.recon_ssim.get(),
        recon_psnr: tally.recon_psnr.get(),
        abnormality_mean_diseased: mean_score(true),
        abnormality_mean_healthy: mean_score(false),
        abnormality_healthy_percentiles: percentiles(false),
        abnormality_diseased_percentiles: percentiles(true),
        normal_codes_used: tally.normal_codes.len(),
        abnormal_codes_used: tally.abnormal_codes.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl Tally {
    fn add_slice(
        &mut self,
        s: &Sample,
        predicted: &[u8],
        recon: &[f32],
        normal: &[f32],
        size: usize,
    ) {
        for (l, mean) in self.label_dice.iter_mut().enumerate() {
            let label = (l + 1) as u8;
            let p: Vec<bool> = predicted.iter().map(|&v| v == label).collect();
            let t: Vec<bool> = s.labels.iter().map(|&v| v == label).collect();
            mean.add(dice(&p, &t));
        }
        let lesion: Vec<bool> = s.labels.iter().map(|&v| v != 0).collect();
        let predicted_lesion: Vec<bool> = predicted.iter().map(|&v| v != 0).collect();
        let whole = dice(&predicted_lesion, &lesion);
        self.whole_dice.add(whole);
        if s.has_lesion {
            self.whole_dice_diseased.add(whole);
            let bin = lesion_size::bin(lesion_size::share(&s.labels));
            self.whole_dice_by_size[bin].add(whole);
        } else {
            let flagged = predicted_lesion.iter().any(|&v| v);
            self.healthy_flagged.add(Some(f64::from(u8::from(flagged))));
        }

        let outside: Vec<bool> = lesion.iter().map(|&v| !v).collect();
        let twin_map = ssim_map(normal, &s.twin, size);
        self.twin_ssim_in.add(masked_mean(&twin_map, Some(&lesion)));
        self.twin_ssim_out
            .add(masked_mean(&twin_map, Some(&outside)));
        self.twin_psnr_in.add(psnr(normal, &s.twin, Some(&lesion)));
        self.twin_psnr_out
            .add(psnr(normal, &s.twin, Some(&outside)));

        let recon_map = ssim_map(recon, &s.image, size);
        self.recon_ssim.add(masked_mean(&recon_map, None));
        self.recon_psnr.add(psnr(recon, &s.image, None));
    }
}

/// The label of the largest logit per pixel of `[L, P]` logits (ties → lowest label).
fn argmax_channels(logits: &[f32], labels: usize, pixels: usize) -> Vec<u8> {
    (0..pixels)
        .map(|p| {
            let mut best = 0;
            for l in 1..labels {
                if logits[l * pixels + p] > logits[best * pixels + p] {
                    best = l;
                }
            }
            best as u8
        })
        .collect()
}
