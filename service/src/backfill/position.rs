//! A backfill job's durable position, in `<data>/backfill/`:
//!
//! - `job.json`: what the job pulls ([`JobSpec`]) and the studies the archive matched, written
//!   once per job, atomically (temporary file, fsync, rename, fsync of the folder — as the
//!   administration lists are);
//! - `finished.jsonl`: one line per study finished (indexed, skipped or failed), appended and
//!   fsynced as each one ends, so a crash loses at most the studies in flight — pulled again on
//!   resume, where the index drops the instances it already holds. A torn last line is ignored.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::JobSpec;

/// The folder under the data folder.
pub fn folder(data_dir: &Path) -> PathBuf {
    data_dir.join("backfill")
}

/// A study the archive matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStudy {
    /// Study Instance UID.
    pub uid: String,
    /// Number of Study Related Instances, when the archive said.
    pub instances: Option<u32>,
}

/// `job.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    /// Format version (1).
    pub version: u32,
    /// What the job pulls.
    pub spec: JobSpec,
    /// The studies matched, in the archive's order.
    pub studies: Vec<PlannedStudy>,
}

/// How a study ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Finished {
    /// Pulled: this many instances made durable.
    Indexed {
        /// Instances stored.
        instances: u32,
    },
    /// Already indexed here: not pulled.
    Skipped,
    /// Could not be pulled completely.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One line of `finished.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedLine {
    /// Study Instance UID.
    pub study: String,
    /// How it ended.
    #[serde(flatten)]
    pub finished: Finished,
}

/// Why the position cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}; check the data folder's permissions and free space")]
pub struct PositionError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// The job of the data folder and what of it is finished: `None` without a readable job file.
pub fn load(data_dir: &Path) -> Option<(JobFile, HashMap<String, Finished>)> {
    let dir = folder(data_dir);
    let job: JobFile = serde_json::from_slice(&std::fs::read(dir.join("job.json")).ok()?).ok()?;
    let mut finished = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("finished.jsonl")) {
        // A line cut by a crash does not parse: it and anything after it are not finished.
        for line in text.lines() {
            match serde_json::from_str::<FinishedLine>(line) {
                Ok(line) => {
                    finished.insert(line.study, line.finished);
                }
                Err(_) => break,
            }
        }
    }
    Some((job, finished))
}

/// Starts a new job: writes `job.json` atomically and empties `finished.jsonl`.
pub fn start(data_dir: &Path, job: &JobFile) -> Result<(), PositionError> {
    let dir = folder(data_dir);
    let path = dir.join("job.json");
    let io = |source| PositionError {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let finished = dir.join("finished.jsonl");
    match std::fs::remove_file(&finished) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let temporary = dir.join("job.json.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(&serde_json::to_vec_pretty(job).expect("the job serializes"))
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io)?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// The journal of finished studies, appended to and fsynced line by line.
pub struct Journal {
    file: std::fs::File,
    path: PathBuf,
}

impl Journal {
    /// Opens `finished.jsonl` for appending (created if absent).
    pub fn open(data_dir: &Path) -> Result<Journal, PositionError> {
        let path = folder(data_dir).join("finished.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| PositionError {
                path: path.clone(),
                source,
            })?;
        Ok(Journal { file, path })
    }

    /// Records a finished study durably.
    pub fn record(&mut self, line: &FinishedLine) -> Result<(), PositionError> {
        let mut bytes = serde_json::to_vec(line).expect("a line serializes");
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| PositionError {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::spec::{Archive, Method, Source};

    #[test]
    fn a_job_reads_back_with_its_finished_studies_and_a_torn_line_is_not_finished() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_none());
        let job = JobFile {
            version: 1,
            spec: JobSpec {
                archive: Source::Dicom(Archive::parse("PACS@127.0.0.1:104").unwrap()),
                query: Default::default(),
                method: Method::CGet,
            },
            studies: vec![
                PlannedStudy {
                    uid: "1.2.3".into(),
                    instances: Some(4),
                },
                PlannedStudy {
                    uid: "1.2.4".into(),
                    instances: None,
                },
            ],
        };
        start(dir.path(), &job).unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal
            .record(&FinishedLine {
                study: "1.2.3".into(),
                finished: Finished::Indexed { instances: 4 },
            })
            .unwrap();
        drop(journal);
        let path = folder(dir.path()).join("finished.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"study\":\"1.2.4\",\"outc").unwrap();
        let (read, finished) = load(dir.path()).unwrap();
        assert_eq!(read, job);
        assert_eq!(finished.len(), 1);
        assert_eq!(finished["1.2.3"], Finished::Indexed { instances: 4 });
        // A new job starts with nothing finished.
        start(dir.path(), &job).unwrap();
        assert!(load(dir.path()).unwrap().1.is_empty());
    }
}
