//! Where one side of a `diptych search` query comes from; shared by the search command and its
//! montage, so that neither imports the other.

use std::path::{Path, PathBuf};

use diptych_dicom_adapter::Uid;

/// Where one side of a query comes from: a DICOM file, or the SOP Instance UID of an indexed slice.
#[derive(Debug, Clone)]
pub enum Source {
    /// A DICOM file and its frame.
    File(PathBuf, u32),
    /// An indexed SOP Instance UID and frame.
    Uid(Uid, u32),
}

impl Source {
    /// A path when it names an existing file, otherwise a SOP Instance UID, checked against the
    /// UID rule.
    pub fn parse(text: &str, frame: u32) -> anyhow::Result<Source> {
        if Path::new(text).is_file() {
            return Ok(Source::File(PathBuf::from(text), frame));
        }
        match Uid::parse(text) {
            Ok(uid) => Ok(Source::Uid(uid, frame)),
            Err(problem) => {
                let shown: String = text.chars().take(80).collect();
                anyhow::bail!(
                    "{shown:?} is not an existing file, and as a SOP Instance UID it {problem}"
                )
            }
        }
    }
}
