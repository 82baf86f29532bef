//! The training loop: optimiser, schedule, checkpoints, progress and figures.
//!
//! Output folder layout: `last.ot` / `last.adam.ot` / `last.json` (checkpoint, see
//! [`checkpoint`]), `losses.json` (every step's loss terms), `validation.jsonl` (held-out scores
//! at each figure step), `loss-curve.png`, `samples.png`, and `summary.json` at the end.

mod adam;
mod bench;
pub mod checkpoint;
mod schedule;
mod validation;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tch::{Device, nn::VarStore};

pub use adam::Adam;
pub use bench::{Timing, bench};
pub use checkpoint::{CheckpointInfo, CheckpointPaths};
pub use schedule::learning_rate;
pub use validation::{Validation, ValidationSet, auc};

use crate::config::{ConfigError, DiscriminationLevel, SourceConfig, TrainConfig};
use crate::data::{self, Augmenter, Batcher, SliceSource, SourceError, open_source};
use crate::figures::{FigureError, LossHistory, write_loss_curve, write_sample_grid};
use crate::losses::total_loss;
use crate::model::Diptych;

/// Why training stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data source cannot be opened.
    #[error(transparent)]
    Data(#[from] SourceError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// libtorch failed.
    #[error("{what}: {source}")]
    Torch {
        /// What was being done.
        what: String,
        /// Why.
        source: tch::TchError,
    },
    /// A figure could not be written.
    #[error(transparent)]
    Figure(#[from] FigureError),
    /// `--resume` found nothing or something inconsistent.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// `schedule.init` names no checkpoint, or one of another model.
    #[error("cannot start from schedule.init: {0}")]
    Init(String),
    /// The loss became NaN or infinite.
    #[error("the loss diverged at step {step} ({losses}); lower schedule.learning_rate")]
    Diverged {
        /// The step.
        step: usize,
        /// The loss terms.
        losses: String,
    },
}

/// Everything `diptych-train train` needs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The configuration (file values with command-line overrides applied).
    pub config: TrainConfig,
    /// Output folder.
    pub out: PathBuf,
    /// Device to train on.
    pub device: Device,
    /// Continue from `<out>/last.*`.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Background threads that assemble batches.
    pub data_workers: usize,
}

/// What a finished run reports (also written to `<out>/summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Steps completed in total.
    pub steps: usize,
    /// Steps run in this session.
    pub session_steps: usize,
    /// Wall-clock seconds of all sessions.
    pub elapsed_seconds: f64,
    /// Mean seconds per optimiser step in this session (data waits included, figures excluded).
    pub seconds_per_step: f64,
    /// The device.
    pub device: String,
    /// Mean loss terms over the last 50 steps.
    pub final_losses: Vec<(String, f64)>,
    /// Last held-out scores, if validation ran.
    pub validation: Option<Validation>,
    /// The configuration.
    pub config: TrainConfig,
}

/// Steps between two plain progress lines when the progress bar is hidden.
const LOG_EVERY: usize = 50;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    }
}

/// Trains (or resumes training) as the options say, writing checkpoints and figures to `out`.
pub fn train(options: &TrainOptions) -> Result<TrainReport, TrainError> {
    let config = &options.config;
    config.validate()?;
    std::fs::create_dir_all(&options.out).map_err(io(&options.out))?;
    let paths = CheckpointPaths::new(&options.out);
    let schedule = &config.schedule;

    tch::manual_seed(schedule.seed as i64);
    let mut vs = VarStore::new(options.device);
    let net = Diptych::new(&vs.root(), &config.model);
    let mut adam = Adam::new(&vs);
    let history_path = options.out.join("losses.json");
    let mut history = LossHistory::default();
    let (mut start, mut elapsed_before) = (0, 0.0);
    if options.resume {
        let info = checkpoint::read_info(&paths)?;
        if info.config.model != config.model {
            return Err(TrainError::Resume(format!(
                "{} was trained with a different [model] section; resume with the same config",
                paths.info.display()
            )));
        }
        checkpoint::restore(&paths, &mut vs, &mut adam)?;
        start = info.step;
        elapsed_before = info.elapsed_seconds;
        if let Ok(text) = std::fs::read_to_string(&history_path) {
            history = serde_json::from_str(&text).unwrap_or_default();
            history.rows.retain(|r| r.0 < start);
        }
    } else if let Some(init) = &schedule.init {
        checkpoint::warm_start(init, &config.model, &mut vs)?;
    }

    let source: Arc<dyn SliceSource> = Arc::from(open_source(config)?);
    let augmenter = Augmenter::new(config.data.augment.clone());
    let batches = Batcher::spawn(
        source,
        Some(augmenter),
        schedule.batch_size,
        schedule.seed,
        start,
        options.data_workers,
    );
    let validation_set = (schedule.validation_slices > 0)
        .then(|| {
            let held_out = config
                .data
                .source
                .held_out()
                .unwrap_or(SourceConfig::Phantom {
                    seed: 2,
                    healthy_fraction: diptych::phantom::PhantomConfig::default().healthy_fraction,
                });
            data::open(&held_out, config)
                .map(|source| ValidationSet::new(source.as_ref(), schedule.validation_slices))
        })
        .transpose()?;

    let bar = if options.progress {
        ProgressBar::new(schedule.steps as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar.set_position(start as u64);

    let session_start = Instant::now();
    let mut step_time = 0.0;
    let mut last_validation = None;
    let mut batches = batches.take(schedule.steps.saturating_sub(start));
    for step in start..schedule.steps {
        let t0 = Instant::now();
        let Some(batch) = batches.next() else { break };
        // torch's RNG (dead-code re-initialisation) restarts from (seed, step): resumable exactly
        tch::manual_seed((schedule.seed.wrapping_mul(1_000_003) ^ step as u64) as i64);
        let targets = batch.targets(options.device);
        let out = net.forward_t(&targets.image, true);
        let terms = total_loss(&out, &targets, &config.loss);
        let grid = config.model.grid_size() as i64;
        let followed = match config.loss.discrimination {
            DiscriminationLevel::Position | DiscriminationLevel::Null => {
                targets.lesion_positions(grid)
            }
            DiscriminationLevel::Image => targets
                .has_lesion
                .view([-1, 1, 1])
                .expand([-1, grid, grid], false),
        };
        net.update_codebooks(
            &out,
            Some(&followed),
            schedule.seed.wrapping_mul(7919) ^ step as u64,
        );
        adam.zero_grad();
        terms.total.backward();
        adam.step(learning_rate(schedule, step));
        let values = terms.values();
        step_time += t0.elapsed().as_secs_f64();
        if !values[0].1.is_finite() {
            let losses = values
                .iter()
                .map(|(n, v)| format!("{n} {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(TrainError::Diverged { step, losses });
        }
        history.push(step, &values);
        bar.set_message(
            values
                .iter()
                .map(|(n, v)| format!("{n} {v:.3}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        bar.inc(1);

        let done = step + 1;
        let last = done == schedule.steps;
        if bar.is_hidden() && (done % LOG_EVERY == 0 || last) {
            // no progress bar (quiet, or stderr is not a terminal): a plain line for logs
            let losses: Vec<String> = values.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            eprintln!(
                "step {done}/{}: {} ({:.2} s/step)",
                schedule.steps,
                losses.join(" "),
                step_time / (done - start) as f64
            );
        }
        let due = |every: usize| last || (every > 0 && done % every == 0);
        if due(schedule.figure_every) {
            last_validation =
                write_figures(options, &net, &history, validation_set.as_ref(), done)?;
            if let Some(v) = &last_validation {
                let line = format!(
                    "step {done}: held-out dice {:.3} auc {:.3} (distance {:.3}) recon-ssim {:.3} twin-ssim in lesion {:.3} outside {:.3}",
                    v.whole_tumor_dice,
                    v.abnormality_auc,
                    v.distance_auc,
                    v.recon_ssim,
                    v.twin_ssim_in_lesion,
                    v.twin_ssim_outside
                );
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            }
        }
        if due(schedule.checkpoint_every) {
            let info = CheckpointInfo {
                step: done,
                elapsed_seconds: elapsed_before + session_start.elapsed().as_secs_f64(),
                device: device_name(options.device),
                config: config.clone(),
            };
            checkpoint::save(&paths, &vs, &adam, &info)?;
            let json = serde_json::to_string(&history).expect("history serialises");
            std::fs::write(&history_path, json).map_err(io(&history_path))?;
        }
    }
    bar.finish();

    let session_steps = schedule.steps.saturating_sub(start);
    let tail: Vec<_> = history.rows.iter().rev().take(50).collect();
    let final_losses = history
        .names
        .iter()
        .enumerate()
        .map(|(c, n)| {
            (
                n.clone(),
                tail.iter().map(|r| r.1[c]).sum::<f64>() / tail.len().max(1) as f64,
            )
        })
        .collect();
    let report = TrainReport {
        steps: schedule.steps.max(start),
        session_steps,
        elapsed_seconds: elapsed_before + session_start.elapsed().as_secs_f64(),
        seconds_per_step: step_time / session_steps.max(1) as f64,
        device: device_name(options.device),
        final_losses,
        validation: last_validation,
        config: config.clone(),
    };
    let summary = options.out.join("summary.json");
    std::fs::write(
        &summary,
        serde_json::to_string_pretty(&report).expect("report serialises"),
    )
    .map_err(io(&summary))?;
    Ok(report)
}

/// Loss curve, sample grid and one validation pass (appended to `validation.jsonl`).
fn write_figures(
    options: &TrainOptions,
    net: &Diptych,
    history: &LossHistory,
    validation_set: Option<&ValidationSet>,
    step: usize,
) -> Result<Option<Validation>, TrainError> {
    write_loss_curve(history, &options.out.join("loss-curve.png"))?;
    let Some(set) = validation_set else {
        return Ok(None);
    };
    let rows = set.grid_rows(net, options.device, 6);
    if !rows.is_empty() {
        write_sample_grid(&rows, &options.out.join("samples.png"))?;
    }
    let validation = set.score(net, options.device);
    let path = options.out.join("validation.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    let mut line = serde_json::json!({ "step": step });
    line.as_object_mut().expect("object").extend(
        serde_json::to_value(&validation)
            .expect("serialises")
            .as_object()
            .expect("object")
            .clone(),
    );
    writeln!(file, "{line}").map_err(io(&path))?;
    Ok(Some(validation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, ScheduleConfig};

    fn tiny(steps: usize, out: &Path) -> TrainOptions {
        let mut config = TrainConfig {
            model: ModelConfig {
                input_size: 32,
                downsamples: 2,
                codebook_size: 16,
                code_dim: 8,
                widths: vec![4, 8, 8],
                spade_hidden: 4,
                ..Default::default()
            },
            schedule: ScheduleConfig {
                steps,
                batch_size: 4,
                learning_rate: 3e-3,
                warmup_steps: 0,
                checkpoint_every: 3,
                figure_every: 0,
                validation_slices: 8,
                ..Default::default()
            },
            ..Default::default()
        };
        config.data.augment.max_rotation_degrees = 5.0;
        TrainOptions {
            config,
            out: out.to_path_buf(),
            device: Device::Cpu,
            resume: false,
            progress: false,
            data_workers: 1,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("diptych-train-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn weights(path: &Path) -> Vec<(String, tch::Tensor)> {
        let mut w = tch::Tensor::load_multi(path).unwrap();
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    }

    #[test]
    fn a_few_steps_reduce_the_loss_and_write_the_outputs() {
        let out = scratch("loss");
        let report = train(&tiny(40, &out)).unwrap();
        let text = std::fs::read_to_string(out.join("losses.json")).unwrap();
        let history: LossHistory = serde_json::from_str(&text).unwrap();
        assert_eq!(history.rows.len(), 40);
        let mean = |rows: &[(usize, Vec<f64>)]| {
            rows.iter().map(|r| r.1[0]).sum::<f64>() / rows.len() as f64
        };
        let (first, last) = (mean(&history.rows[..5]), mean(&history.rows[35..]));
        assert!(last < 0.8 * first, "total loss {first} → {last}");
        for file in [
            "last.ot",
            "last.adam.ot",
            "last.json",
            "loss-curve.png",
            "samples.png",
            "validation.jsonl",
            "summary.json",
        ] {
            assert!(out.join(file).is_file(), "missing {file}");
        }
        let v = report.validation.unwrap();
        assert_eq!(v.slices, 8);
        assert!((0.0..=1.0).contains(&v.recon_ssim) || v.recon_ssim.is_nan());
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn resume_restores_the_checkpoint_and_continues_reproducibly() {
        let (p, q) = (scratch("resume-p"), scratch("resume-q"));
        let mut first = tiny(3, &p);
        first.config.schedule.validation_slices = 0;
        train(&first).unwrap();
        let saved = weights(&p.join("last.ot"));
        std::fs::create_dir_all(&q).unwrap();
        for file in ["last.ot", "last.adam.ot", "last.json", "losses.json"] {
            std::fs::copy(p.join(file), q.join(file)).unwrap();
        }
        // resuming at the checkpoint's own step trains nothing and restores it exactly
        let mut noop = first.clone();
        noop.out = q.clone();
        noop.resume = true;
        assert_eq!(train(&noop).unwrap().session_steps, 0);
        for ((name, a), (_, b)) in saved.iter().zip(&weights(&q.join("last.ot"))) {
            assert!(a.equal(b), "{name} changed by a no-op resume");
        }
        // two resumptions of the same checkpoint to step 6 agree, and they did train
        let mut more = first.clone();
        more.config.schedule.steps = 6;
        more.resume = true;
        let report = train(&more).unwrap();
        assert_eq!((report.steps, report.session_steps), (6, 3));
        more.out = q.clone();
        train(&more).unwrap();
        let (wp, wq) = (weights(&p.join("last.ot")), weights(&q.join("last.ot")));
        let mut changed = false;
        for (((name, x), (_, y)), (_, z)) in wp.iter().zip(&wq).zip(&saved) {
            let diff = (x - y).abs().max().double_value(&[]);
            assert!(
                diff < 1e-5,
                "{name} differs by {diff} between two resumptions"
            );
            changed |= !x.equal(z);
        }
        assert!(changed, "the resumed steps trained");
        assert_eq!(
            checkpoint::read_info(&CheckpointPaths::new(&p))
                .unwrap()
                .step,
            6
        );
        std::fs::remove_dir_all(&p).unwrap();
        std::fs::remove_dir_all(&q).unwrap();
    }

    #[test]
    fn init_starts_from_the_checkpoints_weights_and_refuses_another_model() {
        let (p, q) = (scratch("init-p"), scratch("init-q"));
        let mut first = tiny(3, &p);
        first.config.schedule.validation_slices = 0;
        train(&first).unwrap();
        let saved = weights(&p.join("last.ot"));
        // a fresh network is not the checkpoint; warm-started, it is, codebooks and BatchNorm
        // statistics included
        let model = &first.config.model;
        let mut vs = VarStore::new(Device::Cpu);
        let _net = Diptych::new(&vs.root(), model);
        let sorted = |vs: &VarStore| {
            let mut v: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let fresh = sorted(&vs);
        assert_eq!(fresh.len(), saved.len());
        assert!(
            fresh.iter().zip(&saved).any(|((_, a), (_, b))| !a.equal(b)),
            "a fresh network equals the checkpoint"
        );
        checkpoint::warm_start(&p.join("last.ot"), model, &mut vs).unwrap();
        for ((name, a), (other, b)) in saved.iter().zip(&sorted(&vs)) {
            assert_eq!(name, other);
            assert!(a.equal(b), "{name} not taken from the checkpoint");
        }
        // a second stage trains on from there, on a fresh optimiser, from step 0
        let mut second = first.clone();
        second.out = q.clone();
        second.config.schedule.steps = 2;
        second.config.schedule.init = Some(p.join("last.ot"));
        let report = train(&second).unwrap();
        assert_eq!((report.steps, report.session_steps), (2, 2));
        let info = checkpoint::read_info(&CheckpointPaths::new(&q)).unwrap();
        assert_eq!(info.config.schedule.init, Some(p.join("last.ot")));
        // another model is refused with the reason; a missing file names itself
        let mut other = second.clone();
        other.config.model.code_dim = 4;
        let err = train(&other).unwrap_err().to_string();
        assert!(
            err.contains("schedule.init") && err.contains("[model]"),
            "{err}"
        );
        let mut missing = second.clone();
        missing.config.schedule.init = Some(p.join("nothing.ot"));
        let err = train(&missing).unwrap_err().to_string();
        assert!(
            err.contains("nothing.ot") && err.contains("does not exist"),
            "{err}"
        );
        std::fs::remove_dir_all(&p).unwrap();
        std::fs::remove_dir_all(&q).unwrap();
    }

    #[test]
    fn resume_refuses_a_different_model() {
        let out = scratch("mismatch");
        let mut first = tiny(3, &out);
        first.config.schedule.validation_slices = 0;
        train(&first).unwrap();
        let mut other = first.clone();
        other.config.model.code_dim = 4;
        other.resume = true;
        let err = train(&other).unwrap_err().to_string();
        assert!(err.contains("[model]"), "{err}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
