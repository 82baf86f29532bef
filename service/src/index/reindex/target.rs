//! What a re-index leaves in the data folder, so that it survives a crash or a restart:
//!
//! | file | written | content |
//! |---|---|---|
//! | `reindex.json` | when a re-index starts; removed once it switched | the new bundle's folder, its model id, and the generation of the code store it fills |
//! | `serving-model.json` | just before the switch commit | the bundle folder of the model the switch makes serving |
//!
//! On start, a `reindex.json` whose generation is past the catalog's goes on
//! ([`super::super::Index::open`]); one the catalog already reached was switched (the crash came
//! between the commit and the clean-up) and is removed. A catalog whose code store holds another
//! model than the configured bundle serves the bundle `serving-model.json` names.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ReindexError;
use crate::encoder::Engine;
use crate::index::{IndexOptions, codes_dir};

/// File of the re-index under way.
const REINDEX_FILE: &str = "reindex.json";
/// File of the bundle the last switch made serving.
const SERVING_FILE: &str = "serving-model.json";

/// A re-index: which bundle, which model, into which code store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The new bundle's folder, absolute.
    pub bundle: PathBuf,
    /// Its manifest's model id.
    pub model_id: String,
    /// The generation of the code store its codes go to.
    pub generation: u32,
}

/// The re-index a crash or a stop left under way, if any; removes one already switched.
pub fn pending(data_dir: &Path, generation: u32) -> Result<Option<Target>, ReindexError> {
    let Some(target) = read::<Target>(&data_dir.join(REINDEX_FILE))? else {
        return Ok(None);
    };
    if target.generation > generation {
        return Ok(Some(target));
    }
    // Switched already: only the clean-up is left.
    finish(data_dir, generation);
    Ok(None)
}

/// Records a re-index as started (replacing any earlier one).
pub fn begin(data_dir: &Path, target: &Target) -> Result<(), ReindexError> {
    write(&data_dir.join(REINDEX_FILE), target)
}

/// Records which bundle the switch to `target` makes serving; written before the catalog commit
/// that switches, so a start after it finds the bundle. The entry of the generation serving now
/// stays beside it: if that commit fails, a start still finds the bundle of the codes it serves.
pub fn serving(data_dir: &Path, target: &Target) -> Result<(), ReindexError> {
    let path = data_dir.join(SERVING_FILE);
    let mut entries: Vec<Target> = read(&path)?.unwrap_or_default();
    entries.retain(|entry| entry.generation < target.generation);
    entries.sort_by_key(|entry| entry.generation);
    let keep_from = entries.len().saturating_sub(1);
    let mut entries = entries.split_off(keep_from);
    entries.push(target.clone());
    write(&path, &entries)
}

/// After a switch to `generation`: the re-index file and every code store of another generation
/// go. A failure only leaves files behind (logged).
pub fn finish(data_dir: &Path, generation: u32) {
    let file = data_dir.join(REINDEX_FILE);
    if let Err(error) = std::fs::remove_file(&file)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, path = %file.display(), "removing the finished re-index's file failed");
    }
    remove_other_stores(data_dir, generation, None);
}

/// Gives up the re-index under way: its file and its code store go; `serving`'s stays.
pub fn cancel(data_dir: &Path, serving: u32) -> Result<(), ReindexError> {
    let file = data_dir.join(REINDEX_FILE);
    match std::fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ReindexError::State(format!(
                "{} cannot be removed: {e}",
                file.display()
            )));
        }
    }
    remove_other_stores(data_dir, serving, None);
    Ok(())
}

/// Removes the code stores of generations other than `keep` and `also` (a re-index's).
pub fn remove_other_stores(data_dir: &Path, keep: u32, also: Option<u32>) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let generation = match name.as_str() {
            "codes" => 0,
            other => match other.strip_prefix("codes-").map(str::parse::<u32>) {
                Some(Ok(n)) => n,
                _ => continue,
            },
        };
        if generation == keep || Some(generation) == also {
            continue;
        }
        let path = codes_dir(data_dir, generation);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "the codes of a replaced model removed")
            }
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "removing the codes of a replaced model failed")
            }
        }
    }
}

/// The engine to serve: `configured`, unless the catalog's code store (of `generation`) was
/// filled by a re-index to another model — then that model's bundle, from `serving-model.json`,
/// with a warning that the configuration names another.
pub fn serving_engine(
    data_dir: &Path,
    generation: u32,
    configured: Arc<Engine>,
    options: &IndexOptions,
) -> Result<Arc<Engine>, ReindexError> {
    if generation == 0 {
        return Ok(configured);
    }
    let entries = read::<Vec<Target>>(&data_dir.join(SERVING_FILE))?.unwrap_or_default();
    let Some(target) = entries.into_iter().find(|e| e.generation == generation) else {
        return Err(ReindexError::State(format!(
            "the catalog serves the codes of re-index {generation} but {} does not name its bundle; restore it \
             from a backup of the data folder",
            data_dir.join(SERVING_FILE).display()
        )));
    };
    if target.model_id == configured.manifest().model_id {
        return Ok(configured);
    }
    let engines = options.engines.as_ref().ok_or_else(|| {
        ReindexError::State(format!(
            "this data folder was re-indexed to model {}; start with --model {}",
            target.model_id,
            target.bundle.display()
        ))
    })?;
    tracing::warn!(
        configured = %configured.manifest().model_id,
        serving = %target.model_id,
        bundle = %target.bundle.display(),
        "this data folder was re-indexed to another model than --model names; serving the re-indexed one (set --model to its bundle to silence this)"
    );
    let engine = engines.load(&target.bundle).map_err(|reason| {
        ReindexError::State(format!(
            "this data folder was re-indexed to model {} from {}, which cannot be loaded: \
             {reason}; restore that bundle or start with --model naming it",
            target.model_id,
            target.bundle.display()
        ))
    })?;
    if engine.manifest().model_id != target.model_id {
        return Err(ReindexError::State(format!(
            "{} now holds model {}, but this data folder was re-indexed to {}; restore that bundle",
            target.bundle.display(),
            engine.manifest().model_id,
            target.model_id
        )));
    }
    Ok(engine)
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ReindexError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ReindexError::State(format!(
                "{} is not valid ({e}); remove it to give up the re-index it describes",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ReindexError::State(format!(
            "{} cannot be read: {e}",
            path.display()
        ))),
    }
}

/// Replaces `path` atomically and durably (temporary file, fsync, rename, fsync folder).
fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), ReindexError> {
    let io = |e: std::io::Error| {
        ReindexError::State(format!("{} cannot be written: {e}", path.display()))
    };
    let temp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temp).map_err(io)?;
    file.write_all(&serde_json::to_vec_pretty(value).expect("a target serialises"))
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    drop(file);
    std::fs::rename(&temp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}
