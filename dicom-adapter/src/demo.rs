//! Phantom studies to send to a fresh diptych: a newcomer has no study at hand, so
//! `diptych demo write-studies DIR` writes a few, healthy and diseased, as DICOM files.
//!
//! Each subject of the phantom (held-out seed 2, never seen in training) becomes one patient
//! `PHANTOM-000n` with one MR study of [`SLICES_PER_SUBJECT`] axial slices from skull base to
//! vertex; about two thirds of the slices carry a lesion. Every diseased slice also gets its
//! *healthy twin* — the same anatomy and rendering without the lesion — as an instance of
//! another patient, `TWIN-000n`, in a study of its own: normal-mode search of a diseased slice
//! should find its twin first, which is the method's promise made visible.
//!
//! Layout: `DIR/PHANTOM-000n/slice-IIII.dcm` and `DIR/TWIN-000n/twin-IIII.dcm`, where `IIII` is
//! the slice's index in the phantom's sequence, so `twin-0005.dcm` is the twin of
//! `slice-0005.dcm`. UIDs are fixed (`2.25.…` from the index), so writing twice gives the same
//! instances and sending them twice is harmless.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("diptych-demo-doc-{}", std::process::id()));
//! let written = diptych_dicom_adapter::demo::write_studies(&dir, 1).unwrap();
//! assert_eq!(written.slices, 16);
//! assert_eq!(written.twins, written.diseased);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::phantom::{PhantomConfig, PhantomGenerator, SLICES_PER_SUBJECT};

use crate::synthetic::SyntheticInstance;

/// The phantom seed of the demo: held out from training (seed 1).
pub const SEED: u64 = 2;

/// What [`write_studies`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Studies of phantom patients.
    pub studies: u64,
    /// Slices of those studies.
    pub slices: u64,
    /// Slices with a lesion.
    pub diseased: u64,
    /// Healthy twins written (one per diseased slice).
    pub twins: u64,
}

/// The SOP Instance UID of phantom slice `index`.
pub fn slice_uid(index: u64) -> String {
    format!("2.25.{}", 1_000_000 + index)
}

/// The SOP Instance UID of the healthy twin of phantom slice `index`.
pub fn twin_uid(index: u64) -> String {
    format!("2.25.{}", 3_000_000 + index)
}

/// Writes `subjects` phantom studies (and the twins of their diseased slices) under `dir`,
/// creating folders as needed; returns what was written.
pub fn write_studies(dir: &Path, subjects: u64) -> std::io::Result<Written> {
    let generator = PhantomGenerator::new(SEED, PhantomConfig::default());
    let mut written = Written::default();
    for subject in 0..subjects {
        let patient = format!("PHANTOM-{subject:04}");
        let twin_patient = format!("TWIN-{subject:04}");
        let date = format!("2026{:02}15", 1 + subject % 12);
        let (folder, twin_folder) = (dir.join(&patient), dir.join(&twin_patient));
        std::fs::create_dir_all(&folder)?;
        written.studies += 1;
        for index in subject * SLICES_PER_SUBJECT..(subject + 1) * SLICES_PER_SUBJECT {
            let slice = generator.slice(index);
            let mut instance = SyntheticInstance::from_phantom(&slice);
            instance.set(tags::PATIENT_ID, VR::LO, patient.clone());
            instance.set(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                format!("2.25.{}", 2_000_000 + subject),
            );
            instance.set(tags::SOP_INSTANCE_UID, VR::UI, slice_uid(index));
            instance.set(tags::STUDY_DATE, VR::DA, date.clone());
            instance.set(
                tags::STUDY_DESCRIPTION,
                VR::LO,
                "diptych demo: phantom brain".into(),
            );
            std::fs::write(
                folder.join(format!("slice-{index:04}.dcm")),
                instance.to_part10(),
            )?;
            written.slices += 1;
            if !slice.has_lesion {
                continue;
            }
            written.diseased += 1;
            let mut twin = slice.clone();
            twin.image = slice.healthy_twin.clone();
            let mut t = SyntheticInstance::from_phantom(&twin);
            t.set(tags::PATIENT_ID, VR::LO, twin_patient.clone());
            t.set(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                format!("2.25.{}", 4_000_000 + subject),
            );
            t.set(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                format!("2.25.{}", 5_000_000 + subject),
            );
            t.set(tags::SOP_INSTANCE_UID, VR::UI, twin_uid(index));
            t.set(tags::STUDY_DATE, VR::DA, date.clone());
            t.set(
                tags::STUDY_DESCRIPTION,
                VR::LO,
                "diptych demo: healthy twins".into(),
            );
            std::fs::create_dir_all(&twin_folder)?;
            std::fs::write(
                twin_folder.join(format!("twin-{index:04}.dcm")),
                t.to_part10(),
            )?;
            written.twins += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, parse};

    #[test]
    fn studies_have_twins_that_lack_only_the_lesion() {
        let dir = std::env::temp_dir().join(format!("diptych-demo-{}", std::process::id()));
        let written = write_studies(&dir, 2).unwrap();
        assert_eq!((written.studies, written.slices), (2, 32));
        assert!(written.diseased > 0 && written.diseased < written.slices);
        assert_eq!(written.twins, written.diseased);
        let twin_file = std::fs::read_dir(dir.join("TWIN-0001"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let name = twin_file.file_name().unwrap().to_str().unwrap();
        let index: u64 = name["twin-".len()..name.len() - 4].parse().unwrap();
        let slice_file = dir.join(format!("PHANTOM-0001/slice-{index:04}.dcm"));
        let twin = parse(&std::fs::read(&twin_file).unwrap(), &Limits::default()).unwrap();
        let slice = parse(&std::fs::read(&slice_file).unwrap(), &Limits::default()).unwrap();
        assert_eq!(twin.metadata().patient_id, "TWIN-0001");
        assert_eq!(slice.metadata().patient_id, "PHANTOM-0001");
        let (a, b) = (
            twin.decode_frame(0).unwrap(),
            slice.decode_frame(0).unwrap(),
        );
        let differing = a
            .values
            .iter()
            .zip(&b.values)
            .filter(|(x, y)| x != y)
            .count();
        assert!(
            differing > 0 && differing < a.values.len() / 4,
            "the twin differs from its slice only where the lesion is ({differing} pixels)"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
