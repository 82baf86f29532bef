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
    let generator = PhantomGenerator::new(2, PhantomConfig::default());
    let instance = SyntheticInstance::from_phantom(&generator.slice(3));
    let patient = instance
        .attributes
        .iter()
        .find(|(tag, _, _)| *tag == dicom_dictionary_std::tags::PATIENT_ID)
        .map(|(_, _, value)| value.clone())
        .expect("a phantom instance has a Patient ID");
    let path = dir.join("slice.dcm");
    std::fs::write(&path, instance.to_part10()).unwrap();
    (path, patient)
}
