//! The state file of the administration API: the allowed DICOM peers and the KOS destinations,
//! as JSON in the data folder (`<data>/admin/dicom-peers.json`), replaced atomically on every
//! change (a temporary file, fsync, rename, fsync of the folder): a crash leaves the old list
//! or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::entries::{KosDestination, Peer};

/// The file's path under the data folder.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin").join("dicom-peers.json")
}

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkState {
    /// The format's version (1).
    pub version: u32,
    /// Calling AE titles allowed to associate (empty: any).
    pub peers: Vec<Peer>,
    /// Where KOS documents go.
    pub kos_destinations: Vec<KosDestination>,
}

/// Why the state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}; check the data folder's permissions and free space")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected JSON.
    #[error(
        "{path} is not a list of DICOM peers diptych wrote ({message}); fix it, or move it away to seed the lists again from the configuration"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        message: String,
    },
}

/// Reads the file; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<NetworkState>, StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StateFileError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Replaces the file with `state`, atomically and durably.
pub fn save(path: &Path, state: &NetworkState) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(io)?;
    let mut json = serde_json::to_vec_pretty(state).expect("the state serializes");
    json.push(b'\n');
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(&json).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io)?;
    // The rename is durable once the folder is.
    std::fs::File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_reads_back_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        assert_eq!(load(&file).unwrap(), None);
        let state = NetworkState {
            version: 1,
            peers: vec![Peer::new("CT1", "10.0.0.5").unwrap()],
            kos_destinations: vec![KosDestination::parse("V@viewer:104").unwrap()],
        };
        save(&file, &state).unwrap();
        assert_eq!(load(&file).unwrap(), Some(state));
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dicom-peers.json"]);
        std::fs::write(&file, "{\"peers\": 3}").unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(err.contains("move it away"), "{err}");
    }
}
