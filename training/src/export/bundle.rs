//! Writing a model bundle folder: both graphs, then `manifest.json` with their checksums, then a
//! read-back through `Manifest::load` so that a bundle that would be refused is never left behind
//! silently; and reading an initializer back out of an exported graph.

use std::path::{Path, PathBuf};

use diptych::bundle::names::{CODEBOOK_ABNORMAL, CODEBOOK_NORMAL, DECODER_FILE, ENCODER_FILE};
use diptych::bundle::onnx::{ModelProto, tensor_proto::DataType};
use diptych::manifest::{CodebookNames, FORMAT_VERSION, GraphFile, Grid, Manifest, sha256_file};
use diptych::phantom::{ABNORMAL_LABELS, NORMAL_LABELS};
use prost::Message;

use super::graph::OPSET;
use super::network::{decoder_graph, encoder_graph};
use super::{ExportError, Weights};
use crate::config::TrainConfig;
/// The size a shipped bundle must stay under (issue #2: < 16 MB).
pub const BUNDLE_LIMIT_BYTES: u64 = 16_000_000;

/// What [`export_bundle`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The manifest as written (and read back and verified).
    pub manifest: Manifest,
    /// Size of the three files together, in bytes.
    pub bundle_bytes: u64,
}

/// The fields of a training recipe: an object's own, none for `null`, anything else as `notes`.
pub fn recipe_fields(training: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match training {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("notes".to_string(), other)]),
    }
}

/// Writes `encoder.onnx`, `decoder.onnx` and `manifest.json` into `out` (created if missing).
///
/// `training` is the recipe recorded in the manifest (seed, steps, time, device, figures); the
/// training config itself is added under `training.config`.
pub fn export_bundle(
    config: &TrainConfig,
    weights: &Weights,
    model_id: &str,
    training: serde_json::Value,
    out: &Path,
) -> Result<Exported, ExportError> {
    let model = &config.model;
    let encoder = encoder_graph(model, weights)?;
    let decoder = decoder_graph(model, weights)?;
    std::fs::create_dir_all(out).map_err(|source| ExportError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let encoder = write_graph(&encoder, &out.join(ENCODER_FILE))?;
    let decoder = write_graph(&decoder, &out.join(DECODER_FILE))?;

    let mut recipe = recipe_fields(training);
    recipe.insert(
        "config".into(),
        serde_json::to_value(config).expect("a TrainConfig always serialises to JSON"),
    );
    let grid = model.grid_size();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        model_id: model_id.to_string(),
        preprocess: config.preprocess(),
        grid: Grid {
            rows: grid,
            cols: grid,
        },
        codebook_size: model.codebook_size,
        code_dim: model.code_dim,
        normal_labels: NORMAL_LABELS.iter().map(|s| s.to_string()).collect(),
        abnormal_labels: ABNORMAL_LABELS.iter().map(|s| s.to_string()).collect(),
        abnormality_margin: model.abnormality_margin as f32,
        opset: OPSET,
        encoder,
        decoder,
        codebooks: CodebookNames {
            normal: CODEBOOK_NORMAL.to_string(),
            abnormal: CODEBOOK_ABNORMAL.to_string(),
        },
        training: serde_json::Value::Object(recipe),
        // Measured on the exported graphs by `diptych calibrate` (Makefile: train-default).
        combined_balance: 1.0,
        encoder_int8: None,
    };
    manifest.validate()?;
    manifest.write(out)?;
    let manifest = Manifest::load(out)?;
    let bundle_bytes = [ENCODER_FILE, DECODER_FILE, diptych::manifest::MANIFEST_FILE]
        .iter()
        .map(|f| std::fs::metadata(out.join(f)).map_or(0, |m| m.len()))
        .sum();
    Ok(Exported {
        manifest,
        bundle_bytes,
    })
}

/// Encodes one graph to `path` and returns its manifest entry.
fn write_graph(model: &ModelProto, path: &Path) -> Result<GraphFile, ExportError> {
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, model.encode_to_vec()).map_err(io)?;
    Ok(GraphFile {
        file: path
            .file_name()
            .expect("bundle graph paths end in a file name")
            .to_string_lossy()
            .into_owned(),
        sha256: sha256_file(path)?,
    })
}

/// Reads the float initializer `name` of the ONNX file at `path`: its shape and values.
pub fn read_initializer(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>), ExportError> {
    let bytes = std::fs::read(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|source| ExportError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    let missing = || ExportError::MissingInitializer {
        path: PathBuf::from(path),
        name: name.to_string(),
    };
    let tensor = model
        .graph
        .as_ref()
        .and_then(|g| {
            g.initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(name))
        })
        .filter(|t| t.data_type == Some(DataType::Float as i32))
        .ok_or_else(missing)?;
    let dims = tensor.dims.iter().map(|&d| d as usize).collect();
    let values = match &tensor.raw_data {
        Some(raw) => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        None => tensor.float_data.clone(),
    };
    Ok((dims, values))
}
