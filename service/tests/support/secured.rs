//! What the tests of a secured server share: random bearer tokens and a phantom DICOM file to
//! ingest and search with.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::SyntheticInstance;

/// A random token of 48 hex digits.
pub fn token() -> String {
    (0..3)
        .map(|_| {
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u64(std::process::id() as u64);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}

/// A phantom slice written as `dir/slice.dcm`, and its Patient ID.
pub fn dicom_file(dir: &Path) -> (PathBuf, String) {
    let slice = phantom_slice(dir, 3);
    (slice.path, slice.patient_id)
}

/// A phantom DICOM file of one subject's slice `index`.
pub struct PhantomSlice {
    /// Where it was written.
    pub path: PathBuf,
    /// Its Patient ID.
    pub patient_id: String,
    /// Its SOP Instance UID.
    pub sop_instance_uid: String,
}

/// Slice `index` of the phantom, written as `dir/slice.dcm` (`dir/slice-INDEX.dcm` but for 3).
pub fn phantom_slice(dir: &Path, index: u64) -> PhantomSlice {
    let generator = PhantomGenerator::new(2, PhantomConfig::default());
    let instance = SyntheticInstance::from_phantom(&generator.slice(index));
    let attribute = |tag| {
        instance
            .attributes
            .iter()
            .find(|(t, _, _)| *t == tag)
            .map(|(_, _, value)| value.clone())
            .expect("a phantom instance has its identifiers")
    };
    let path = match index {
        3 => dir.join("slice.dcm"),
        _ => dir.join(format!("slice-{index}.dcm")),
    };
    std::fs::write(&path, instance.to_part10()).unwrap();
    PhantomSlice {
        patient_id: attribute(dicom_dictionary_std::tags::PATIENT_ID),
        sop_instance_uid: attribute(dicom_dictionary_std::tags::SOP_INSTANCE_UID),
        path,
    }
}
