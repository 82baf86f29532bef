//! Checkpoints: `<out>/last.ot` (the VarStore: weights, BatchNorm statistics, codebooks),
//! `<out>/last.adam.ot` (optimiser moments) and `<out>/last.json` (step and recipe), each
//! written to a temporary file and renamed, so a crash never leaves a torn checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use super::TrainError;
use super::adam::Adam;
use crate::config::{ModelConfig, TrainConfig};

/// The JSON half of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Optimiser steps completed.
    pub step: usize,
    /// Wall-clock seconds of training so far (all sessions).
    pub elapsed_seconds: f64,
    /// The device that trained it ("cpu", "cuda:0").
    pub device: String,
    /// The full configuration in force.
    pub config: TrainConfig,
}

/// Paths of the checkpoint files in an output folder.
#[derive(Debug, Clone)]
pub struct CheckpointPaths {
    /// `last.ot`.
    pub weights: PathBuf,
    /// `last.adam.ot`.
    pub optimizer: PathBuf,
    /// `last.json`.
    pub info: PathBuf,
}

impl CheckpointPaths {
    /// The checkpoint files of `out`.
    pub fn new(out: &Path) -> Self {
        Self {
            weights: out.join("last.ot"),
            optimizer: out.join("last.adam.ot"),
            info: out.join("last.json"),
        }
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes all three files.
pub fn save(
    paths: &CheckpointPaths,
    vs: &VarStore,
    adam: &Adam,
    info: &CheckpointInfo,
) -> Result<(), TrainError> {
    let torch = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Torch {
            what: format!("writing {}", path.display()),
            source,
        }
    };
    let tmp = temporary(&paths.weights);
    vs.save(&tmp).map_err(torch(&paths.weights))?;
    std::fs::rename(&tmp, &paths.weights).map_err(io(&paths.weights))?;
    let tmp = temporary(&paths.optimizer);
    adam.save(&tmp).map_err(torch(&paths.optimizer))?;
    std::fs::rename(&tmp, &paths.optimizer).map_err(io(&paths.optimizer))?;
    let tmp = temporary(&paths.info);
    let json = serde_json::to_string_pretty(info).expect("checkpoint info serialises");
    std::fs::write(&tmp, json).map_err(io(&paths.info))?;
    std::fs::rename(&tmp, &paths.info).map_err(io(&paths.info))?;
    Ok(())
}

/// Reads the JSON half.
pub fn read_info(paths: &CheckpointPaths) -> Result<CheckpointInfo, TrainError> {
    parse_info(&paths.info, TrainError::Resume)
}

/// Reads a checkpoint's JSON half at `path`; a file that is not one becomes `error`.
fn parse_info(path: &Path, error: fn(String) -> TrainError) -> Result<CheckpointInfo, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text)
        .map_err(|e| error(format!("{} is not a checkpoint: {e}", path.display())))
}

/// Loads `weights` (a `last.ot`) into an already built network; `why` says which run asked.
fn load_weights(vs: &mut VarStore, weights: &Path, why: &str) -> Result<(), TrainError> {
    vs.load(weights).map_err(|source| TrainError::Torch {
        what: format!(
            "loading {} ({why}was it written by a different model config?)",
            weights.display()
        ),
        source,
    })
}

/// Loads weights and optimiser state into an already built network and optimiser.
pub fn restore(
    paths: &CheckpointPaths,
    vs: &mut VarStore,
    adam: &mut Adam,
) -> Result<(), TrainError> {
    load_weights(vs, &paths.weights, "")?;
    adam.load(&paths.optimizer)
        .map_err(|source| TrainError::Torch {
            what: format!("loading {}", paths.optimizer.display()),
            source,
        })
}

/// Loads the weights, BatchNorm statistics and codebooks of the checkpoint `weights` (a
/// `last.ot`) into a freshly built network (`schedule.init`); the `last.json` beside it, when
/// there is one, must name the same `model`.
pub fn warm_start(
    weights: &Path,
    model: &ModelConfig,
    vs: &mut VarStore,
) -> Result<(), TrainError> {
    if !weights.is_file() {
        return Err(TrainError::Init(format!(
            "{} does not exist: point schedule.init at a checkpoint's last.ot",
            weights.display()
        )));
    }
    let info = weights.with_extension("json");
    if info.is_file() && parse_info(&info, TrainError::Init)?.config.model != *model {
        return Err(TrainError::Init(format!(
            "{} was trained with a different [model] section; a second stage keeps the \
             first stage's [model]",
            weights.display()
        )));
    }
    load_weights(vs, weights, "schedule.init; ")
}
