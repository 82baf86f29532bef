//! The training configuration file (TOML): model sizes, loss weights, schedule and data source.
//!
//! `configs/phantom-v1.toml` is the default recipe. Every field has a documented default so a
//! config file only states what it changes; unknown keys are rejected so that a typo is an error,
//! not a silently ignored setting.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Sizes and constants of the network (docs/METHOD.md §1); travels into the model bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Side S of the square preprocessed input image.
    pub input_size: usize,
    /// Number n of stride-2 blocks; the code grid is S/2^n on a side.
    pub downsamples: usize,
    /// Codebook size K (entries per codebook).
    pub codebook_size: usize,
    /// Code dimension D (length of each codebook entry).
    pub code_dim: usize,
    /// Channel widths [w0..wn] at resolutions S, S/2, .., S/2^n (n+1 values).
    pub widths: Vec<usize>,
    /// Hidden channels of each SPADE block's shared conv.
    pub spade_hidden: usize,
    /// Number L of abnormal labels, background included (4).
    pub abnormal_labels: usize,
    /// Negative slope of the encoder's LeakyReLU.
    pub leaky_slope: f64,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// BatchNorm running-statistics momentum.
    pub bn_momentum: f64,
    /// Decay of the codebooks' exponential moving averages.
    pub ema_decay: f64,
    /// A code whose EMA usage count falls below this is re-initialised from the batch.
    pub dead_code_threshold: f64,
    /// Scale of the abnormality score, `clamp(1 − smallest per-position distance / abnormality_margin, 0, 1)`
    /// (manifest.abnormality_margin). Twice `loss.margin` by default: normal positions settle at
    /// the loss margin, so a healthy slice scores about 0.5 and a lesion raises the score, with
    /// no clamping that would tie healthy slices with small lesions.
    pub abnormality_margin: f64,
    /// Pin row 0 of the abnormal codebook to zero: the "no lesion" code. Normal positions
    /// quantise to it only with `loss.discrimination = "null"`, which pulls them onto it.
    pub abnormal_null_code: bool,
    /// At inference (the exported encoder and [`crate::model::Diptych::encode`]), a grid cell
    /// with no lesion pixel predicted by the segmentation decoder in it or in its eight
    /// neighbours takes the null code whatever code lies nearest: a healthy region's abnormal
    /// code is then exactly "no lesion", so abnormal-mode distances come from lesions only. Needs `abnormal_null_code`; off by default so that older
    /// recipes export as they were trained.
    pub null_outside_lesion: bool,
    /// Extra 3×3 conv + BatchNorm + ReLU blocks the segmentation decoder runs at each of its
    /// resolutions (the code grid and every upsampling), at that level's width: more depth to
    /// draw a lesion's outline from the codes, at little cost (the decoder is narrow). 0 (the
    /// default) is the one conv per level of docs/METHOD.md §1, as in every shipped bundle.
    pub seg_refine_convs: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            input_size: 128,
            downsamples: 3,
            codebook_size: 256,
            code_dim: 32,
            widths: vec![8, 16, 32, 64],
            spade_hidden: 16,
            abnormal_labels: 4,
            leaky_slope: 0.2,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            ema_decay: 0.99,
            dead_code_threshold: 0.01,
            abnormality_margin: 2.0,
            abnormal_null_code: true,
            null_outside_lesion: false,
            seg_refine_convs: 0,
        }
    }
}

impl ModelConfig {
    /// Side h = w of the code grid (S / 2^n).
    pub fn grid_size(&self) -> usize {
        self.input_size >> self.downsamples
    }

    /// Checks that the sizes fit together; the message says which field to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Invalid(what));
        if self.downsamples == 0 {
            return bad("model.downsamples must be at least 1".into());
        }
        if self.widths.len() != self.downsamples + 1 {
            return bad(format!(
                "model.widths has {} values but model.downsamples = {} needs {}",
                self.widths.len(),
                self.downsamples,
                self.downsamples + 1
            ));
        }
        if !self.input_size.is_multiple_of(1 << self.downsamples) || self.grid_size() == 0 {
            return bad(format!(
                "model.input_size {} is not divisible by 2^downsamples = {}",
                self.input_size,
                1 << self.downsamples
            ));
        }
        if self.codebook_size < 2 || self.code_dim == 0 || self.spade_hidden == 0 {
            return bad("model.codebook_size must be ≥ 2, code_dim and spade_hidden ≥ 1".into());
        }
        if self.widths.contains(&0) {
            return bad("model.widths must all be ≥ 1".into());
        }
        if self.abnormal_labels != diptych::phantom::ABNORMAL_LABELS.len() {
            return bad(format!(
                "model.abnormal_labels must be {} (background + NCR/NET, edema, enhancing)",
                diptych::phantom::ABNORMAL_LABELS.len()
            ));
        }
        if !(0.0..1.0).contains(&self.ema_decay) || self.abnormality_margin <= 0.0 {
            return bad("model.ema_decay must be in [0,1) and abnormality_margin > 0".into());
        }
        if self.seg_refine_convs > 4 {
            return bad(format!(
                "model.seg_refine_convs is {}; at most 4 extra convs per level are supported",
                self.seg_refine_convs
            ));
        }
        if self.null_outside_lesion && !self.abnormal_null_code {
            return bad(
                "model.null_outside_lesion needs model.abnormal_null_code = true (the code that \
                 healthy cells take)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Whether the discrimination loss is decided per latent position or per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscriminationLevel {
    /// Each grid position is abnormal when its cell holds a lesion pixel (needs label maps).
    Position,
    /// docs/METHOD.md literally: the mean commitment distance of an image, abnormal when it has a lesion.
    Image,
    /// Per grid position, onto the null code: a normal position commits to the zero "no lesion"
    /// code (row 0, so it quantises to it), a lesion position commits to its own code and stays
    /// at least the margin away from zero. Needs `model.abnormal_null_code`. With `Position`,
    /// normal positions are pushed the margin away from *every* code, the null code included,
    /// so they never quantise to it and their abnormal codes carry anatomy (README, Evaluation).
    Null,
}

/// Weights and constants of the five losses (docs/METHOD.md §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Commitment weight β of the latent loss.
    pub beta: f64,
    /// λ_lat.
    pub lambda_lat: f64,
    /// λ_dis.
    pub lambda_dis: f64,
    /// λ_seg.
    pub lambda_seg: f64,
    /// Weight, inside L_seg, of a per-image soft Dice of the whole tumour (every lesion label as
    /// one) next to the generalised Dice and the cross-entropy; 0 is the method as published.
    pub whole_tumour_dice: f64,
    /// λ_rec.
    pub lambda_rec: f64,
    /// λ_res.
    pub lambda_res: f64,
    /// λ_ssim inside the reconstruction loss.
    pub lambda_ssim: f64,
    /// λ_twin: weight of the twin loss (x̃ against the healthy twin inside the lesion, for
    /// samples whose source knows the twin). 0 is the method as published.
    pub lambda_twin: f64,
    /// Granularity of the discrimination loss.
    pub discrimination: DiscriminationLevel,
    /// Margin m of the discrimination loss: normal positions are pushed at least this far
    /// (mean squared distance per code dimension) from every abnormal code.
    pub margin: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            beta: 0.25,
            lambda_lat: 1.0,
            lambda_dis: 1.0,
            lambda_seg: 1.0,
            whole_tumour_dice: 0.0,
            lambda_rec: 10.0,
            lambda_res: 1.0,
            lambda_ssim: 0.1,
            lambda_twin: 0.0,
            discrimination: DiscriminationLevel::Position,
            margin: 1.0,
        }
    }
}

/// Optimisation schedule and output cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Number of optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak Adam learning rate.
    pub learning_rate: f64,
    /// Linear warm-up steps before the peak learning rate.
    pub warmup_steps: usize,
    /// Cosine decay ends at this fraction of the peak learning rate.
    pub final_lr_fraction: f64,
    /// Seed of torch's RNG (weights, dead-code re-initialisation) and of the data order.
    pub seed: u64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Write the loss curve, sample grid and validation figures every this many steps (0: only at the end).
    pub figure_every: usize,
    /// Held-out slices (phantom seed 2) scored at each figure step.
    pub validation_slices: usize,
    /// Start from the weights, BatchNorm statistics and codebooks of this checkpoint (a
    /// `last.ot`; its `last.json` beside it, when there is one, must name the same `[model]`)
    /// instead of a fresh network: a second stage of training with its own data, learning rate
    /// and steps, on a fresh optimiser. Relative paths are taken from the working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            steps: 5000,
            batch_size: 16,
            learning_rate: 2e-3,
            warmup_steps: 100,
            final_lr_fraction: 0.05,
            seed: 1,
            checkpoint_every: 500,
            figure_every: 500,
            validation_slices: 128,
            init: None,
        }
    }
}

/// Where training images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// The synthetic phantom generator of the `diptych` crate.
    Phantom {
        /// Generator seed (1 = training; 2 is reserved for evaluation).
        seed: u64,
        /// Share of healthy subjects.
        healthy_fraction: f32,
    },
    /// Real anatomy: the MNI152 tissue maps of `diptych::atlas`, deformed per subject, with
    /// implanted lesions (maps from `make deps-atlas`, or `DIPTYCH_ATLAS_DIR`).
    Anatomy {
        /// Generator seed (1 = training; 2 is reserved for evaluation).
        seed: u64,
        /// Share of healthy slices.
        healthy_fraction: f32,
    },
    /// A BraTS-style folder: per case `*_t1ce.nii.gz` and `*_seg.nii.gz`.
    Brats {
        /// The folder holding one sub-folder (or file pair) per case.
        dir: PathBuf,
    },
    /// Several sources, interleaved slice by slice (one share per part: a source listed twice,
    /// with another seed, gets two).
    Mix {
        /// The sources.
        parts: Vec<SourceConfig>,
    },
}

impl SourceConfig {
    /// The same sources with the held-out seed 2 (for validation); `None` for a BraTS folder,
    /// which has no held-out split of its own. A mix keeps each held-out source once: two parts
    /// of one kind (other seeds, to weight it) would otherwise validate on the same slices twice.
    pub fn held_out(&self) -> Option<SourceConfig> {
        match self {
            Self::Phantom {
                healthy_fraction, ..
            } => Some(Self::Phantom {
                seed: 2,
                healthy_fraction: *healthy_fraction,
            }),
            Self::Anatomy {
                healthy_fraction, ..
            } => Some(Self::Anatomy {
                seed: 2,
                healthy_fraction: *healthy_fraction,
            }),
            Self::Brats { .. } => None,
            Self::Mix { parts } => {
                let mut held: Vec<SourceConfig> = Vec::with_capacity(parts.len());
                for part in parts.iter().filter_map(Self::held_out) {
                    if !held.contains(&part) {
                        held.push(part);
                    }
                }
                (!held.is_empty()).then_some(Self::Mix { parts: held })
            }
        }
    }
}

/// Augmentation applied identically to image and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip.
    pub flip_probability: f32,
    /// Maximum relative scale change (0.1 = scale in [0.9, 1.1]).
    pub max_scale: f32,
    /// Maximum rotation in degrees (either direction).
    pub max_rotation_degrees: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip_probability: 0.5,
            max_scale: 0.1,
            max_rotation_degrees: 10.0,
        }
    }
}

/// Data source, pre-processing percentiles and augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// The image source.
    pub source: SourceConfig,
    /// Low intensity percentile of the shared pre-processing.
    pub low_percentile: f32,
    /// High intensity percentile of the shared pre-processing.
    pub high_percentile: f32,
    /// Augmentation.
    pub augment: AugmentConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        let p = diptych::preprocess::PreprocessParams::default();
        Self {
            source: SourceConfig::Phantom {
                seed: 1,
                healthy_fraction: 0.5,
            },
            low_percentile: p.low_percentile,
            high_percentile: p.high_percentile,
            augment: AugmentConfig::default(),
        }
    }
}

/// A whole training configuration file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Network sizes.
    pub model: ModelConfig,
    /// Loss weights.
    pub loss: LossConfig,
    /// Optimisation schedule.
    pub schedule: ScheduleConfig,
    /// Data source.
    pub data: DataConfig,
}

/// A configuration that cannot be read or does not hold together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown keys.
    #[error("config {path} is not a valid training config: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl TrainConfig {
    /// Reads and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate()?;
        if self.schedule.batch_size < 2 {
            return Err(ConfigError::Invalid(
                "schedule.batch_size must be ≥ 2 (BatchNorm needs a batch)".into(),
            ));
        }
        if self.loss.margin <= 0.0 {
            return Err(ConfigError::Invalid("loss.margin must be > 0".into()));
        }
        if self.loss.discrimination == DiscriminationLevel::Null && !self.model.abnormal_null_code {
            return Err(ConfigError::Invalid(
                "loss.discrimination = \"null\" needs model.abnormal_null_code = true (the null \
                 code normal positions commit to)"
                    .into(),
            ));
        }
        if self.schedule.learning_rate <= 0.0 {
            return Err(ConfigError::Invalid(
                "schedule.learning_rate must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// The shared pre-processing parameters this config implies.
    pub fn preprocess(&self) -> diptych::preprocess::PreprocessParams {
        diptych::preprocess::PreprocessParams {
            input_size: self.model.input_size,
            low_percentile: self.data.low_percentile,
            high_percentile: self.data.high_percentile,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_grid_is_input_over_eight() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        assert_eq!(c.model.grid_size(), 16);
    }

    #[test]
    fn shipped_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/phantom-v1.toml");
        let c = TrainConfig::load(&path).unwrap();
        assert_eq!(c.model.input_size, 128);
        assert_eq!(c.model.grid_size(), 16);
    }

    #[test]
    fn every_config_in_the_folder_loads_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c =
                    TrainConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                c.validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // a second stage names a committed checkpoint that loads into its own [model]
                if let Some(init) = &c.schedule.init {
                    let root = dir.parent().and_then(Path::parent).unwrap();
                    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
                    let _net = crate::model::Diptych::new(&vs.root(), &c.model);
                    crate::trainer::checkpoint::warm_start(&root.join(init), &c.model, &mut vs)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                seen += 1;
            }
        }
        assert!(seen >= 3, "only {seen} configs in {}", dir.display());
    }

    #[test]
    fn options_that_use_the_null_code_need_it() {
        // (config that uses the null code, the key the error must name)
        let cases = [
            ("[loss]\ndiscrimination = \"null\"\n", "abnormal_null_code"),
            (
                "[model]\nnull_outside_lesion = true\n",
                "null_outside_lesion",
            ),
        ];
        for (toml_text, key) in cases {
            let mut c: TrainConfig = toml::from_str(toml_text).unwrap();
            c.validate().unwrap();
            c.model.abnormal_null_code = false;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{toml_text}: {err}");
        }
    }

    #[test]
    fn too_deep_a_segmentation_decoder_is_refused_by_name() {
        let mut c: TrainConfig = toml::from_str("[model]\nseg_refine_convs = 2\n").unwrap();
        c.validate().unwrap();
        c.model.seg_refine_convs = 5;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("seg_refine_convs"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_widths_are_errors() {
        assert!(toml::from_str::<TrainConfig>("[model]\nwidht = 3\n").is_err());
        let c: TrainConfig = toml::from_str("[model]\nwidths = [8, 16]\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("model.widths"), "{err}");
    }

    #[test]
    fn a_mix_parses_and_holds_out_seed_2() {
        let c: TrainConfig = toml::from_str(
            "[data]\nsource = { kind = \"mix\", parts = [\
             { kind = \"phantom\", seed = 1, healthy_fraction = 0.5 }, \
             { kind = \"anatomy\", seed = 1, healthy_fraction = 0.4 }] }\n",
        )
        .unwrap();
        let held = c.data.source.held_out().unwrap();
        assert_eq!(
            held,
            SourceConfig::Mix {
                parts: vec![
                    SourceConfig::Phantom {
                        seed: 2,
                        healthy_fraction: 0.5
                    },
                    SourceConfig::Anatomy {
                        seed: 2,
                        healthy_fraction: 0.4
                    },
                ]
            }
        );
    }

    #[test]
    fn a_source_weighted_twice_is_held_out_once() {
        let c: TrainConfig = toml::from_str(
            "[data]\nsource = { kind = \"mix\", parts = [\
             { kind = \"phantom\", seed = 1, healthy_fraction = 0.5 }, \
             { kind = \"anatomy\", seed = 1, healthy_fraction = 0.5 }, \
             { kind = \"phantom\", seed = 6, healthy_fraction = 0.5 }] }\n",
        )
        .unwrap();
        let SourceConfig::Mix { parts } = c.data.source.held_out().unwrap() else {
            panic!("a mix is held out as a mix");
        };
        assert_eq!(
            parts,
            vec![
                SourceConfig::Phantom {
                    seed: 2,
                    healthy_fraction: 0.5
                },
                SourceConfig::Anatomy {
                    seed: 2,
                    healthy_fraction: 0.5
                },
            ]
        );
    }

    #[test]
    fn source_kinds_parse() {
        let c: TrainConfig =
            toml::from_str("[data.source]\nkind = \"brats\"\ndir = \"/data/brats\"\n").unwrap();
        assert_eq!(
            c.data.source,
            SourceConfig::Brats {
                dir: "/data/brats".into()
            }
        );
    }
}
