//! `diptych-train export`: a checkpoint and its training config in, a model bundle out.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{ExportError, Exported, Weights, export_bundle};
use crate::config::TrainConfig;

/// Files beside a checkpoint that hold its training recipe, most complete first (the trainer
/// writes `summary.json` at the end of a run and `last.json` with every checkpoint).
pub const RECIPE_FILES: [&str; 2] = ["summary.json", "last.json"];

/// Arguments of `diptych-train export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The trained weights (`last.ot` written by `diptych-train train`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The training config (TOML) the checkpoint was trained with.
    #[arg(long)]
    pub config: PathBuf,
    /// The bundle folder to write (created if missing), e.g. models/phantom-v1.
    #[arg(long)]
    pub out: PathBuf,
    /// The model id recorded in the manifest [default: the name of --out].
    #[arg(long)]
    pub model_id: Option<String>,
    /// A JSON file with the training recipe to record [default: summary.json or last.json beside
    /// the checkpoint].
    #[arg(long)]
    pub recipe: Option<PathBuf>,
}

/// Runs the export and returns what was written.
pub fn run(args: &ExportArgs) -> Result<Exported, ExportError> {
    let config = TrainConfig::load(&args.config)?;
    let weights = Weights::load(&args.checkpoint)?;
    export_bundle(
        &config,
        &weights,
        &model_id(args)?,
        recipe(args)?,
        &args.out,
    )
}

/// The model id: `--model-id`, else the name of the `--out` folder.
pub fn model_id(args: &ExportArgs) -> Result<String, ExportError> {
    match &args.model_id {
        Some(id) => Ok(id.clone()),
        None => args
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                ExportError::Config(format!(
                    "cannot derive a model id from --out {}; pass --model-id",
                    args.out.display()
                ))
            }),
    }
}

/// The recipe JSON: `--recipe`, else the first of [`RECIPE_FILES`] beside the checkpoint, else `{}`.
pub fn recipe(args: &ExportArgs) -> Result<serde_json::Value, ExportError> {
    let beside = args
        .checkpoint
        .parent()
        .map(|dir| RECIPE_FILES.map(|f| dir.join(f)))
        .into_iter()
        .flatten()
        .find(|p| p.is_file());
    let Some(path) = args.recipe.clone().or(beside) else {
        return Ok(serde_json::json!({}));
    };
    let value = read_json(&path)?;
    // Only the file name: the manifest ships, the machine's folders are nobody's business.
    let file = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok(match value {
        serde_json::Value::Object(mut map) => {
            map.insert("recipe_file".into(), serde_json::Value::String(file));
            serde_json::Value::Object(map)
        }
        other => serde_json::json!({ "recipe": other, "recipe_file": file }),
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value, ExportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| {
        ExportError::Config(format!(
            "recipe {} is not JSON ({e}); pass a JSON file to --recipe",
            path.display()
        ))
    })
}

/// A short human-readable account of an export.
pub fn summary(exported: &Exported, out: &Path) -> String {
    let m = &exported.manifest;
    format!(
        "wrote model bundle {} ({} bytes): model id {}, grid {}×{}, K {}, D {}, opset {}\n  {} \
         sha256 {}\n  {} sha256 {}",
        out.display(),
        exported.bundle_bytes,
        m.model_id,
        m.grid.rows,
        m.grid.cols,
        m.codebook_size,
        m.code_dim,
        m.opset,
        m.encoder.file,
        m.encoder.sha256,
        m.decoder.file,
        m.decoder.sha256
    )
}
