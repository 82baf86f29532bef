//! Real scans as a source of labelled slices: a folder in the layout of the BraTS challenges
//! (brain MR with glioma segmentations), read with the `nifti` crate, for `diptych eval --brats`.
//! No BraTS data ships with diptych; the user supplies the folder.
//!
//! - **Layout** ([`BratsFolder`]): one subfolder per subject, holding NIfTI volumes
//!   named `<subject>_{flair,t1,t1ce,t2,seg}.nii.gz` (BraTS 2018–2021) or
//!   `<subject>-{t2f,t1n,t1c,t2w,seg}.nii.gz` (BraTS 2023); uncompressed `.nii` works as well.
//!   One contrast is read ([`Contrast`], FLAIR by default), with the segmentation.
//! - **Orientation**: each volume is turned into the view of the atlas source's
//!   slices, whatever its voxel order, from its sform (else its qform): axial planes from the
//!   skull base up, anterior at the top of the image, the patient's left on the image's right
//!   (radiological convention). The in-plane frame is `rows × cols` voxels (192 × 160 by
//!   default, the atlas's frame) centred on the subject's brain. Voxels are taken as they are:
//!   BraTS volumes are resampled to 1 mm isotropic, about the atlas slices' pixel size.
//! - **Slices and levels**: `slices_per_subject` axial planes per subject (24 by default),
//!   evenly spaced over the brain's z-extent — the planes whose brain section is at least a
//!   tenth of the largest, the atlas's rule. Slot `s` of `n` aims at level `(s + ½) / n`; the
//!   nearest plane is taken and its own level (0 = lowest, 1 = highest plane of the extent) is
//!   reported. Slice `index` of a generator is slot `index % n` of its subject `index / n`.
//! - **Stored values**: each subject's volume is scaled linearly so that the 99th percentile of
//!   its brain voxels becomes 3000 (and its lowest brain value 0 where that is negative),
//!   rounded to whole numbers and clipped to 0..4000, background 0: the range of the synthetic
//!   sources' stored images. The image contract normalises every slice by its own percentiles
//!   anyway; the scaling keeps the stored numbers alike across sources.
//! - **Labels**: abnormal labels from the segmentation, mapped to
//!   [`ABNORMAL_LABELS`](crate::synthetic::ABNORMAL_LABELS) by [`abnormal_label`] (BraTS 1 →
//!   necrotic core, 2 → edema, 4 — or 3 in BraTS 2023 files — → enhancing tumour; any other
//!   value is an error naming the file). BraTS has no normal-anatomy labels: the normal label
//!   map is the brain mask (nonzero voxels of the image or the segmentation), label 1 of
//!   [`NORMAL_LABELS`]. A normal-label Dice on BraTS therefore measures how well brain outlines
//!   agree (size, shape, axial level), not anatomy.
//! - **No twins**: real scans have no healthy twin, so
//!   [`SliceGenerator::has_twins`](crate::synthetic::SliceGenerator::has_twins) is false and
//!   [`SyntheticSlice::healthy_twin`](crate::synthetic::SyntheticSlice::healthy_twin) is empty.
//! - **Disjoint query and reference subjects** ([`BratsSplit`]): every k-th subject of the
//!   sorted folder is a query subject, the others are references.
//! - **Memory** ([`BratsGenerator`]): a generator keeps the prepared slices of its
//!   [`SUBJECT_CACHE`] most recently used subjects (about 3 MB each at the defaults); a subject's
//!   volumes are read once however many of its slices are asked for, by however many threads.
//!
//! [`sample`] writes a small folder of this layout from simple geometry, for the tests and for
//! trying `diptych eval --brats` without data.

mod folder;
mod generator;
pub mod sample;
mod volume;

use std::path::PathBuf;

pub use folder::{BratsFolder, Naming, Subject};
pub use generator::{BratsConfig, BratsGenerator, BratsSplit, SUBJECT_CACHE};
pub use volume::abnormal_label;

/// Names of the normal labels of a BraTS slice: BraTS labels no normal anatomy, so the only
/// normal label is the brain mask (nonzero voxels).
pub const NORMAL_LABELS: [&str; 2] = ["background", "brain"];

/// The MR contrast read from each subject.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Contrast {
    /// T2-weighted FLAIR (`flair`, BraTS 2023 `t2f`).
    #[default]
    Flair,
    /// Native T1-weighted (`t1`, BraTS 2023 `t1n`).
    T1,
    /// Contrast-enhanced T1-weighted (`t1ce`, BraTS 2023 `t1c`).
    T1ce,
    /// T2-weighted (`t2`, BraTS 2023 `t2w`).
    T2,
}

impl Contrast {
    /// Every contrast.
    pub const ALL: [Contrast; 4] = [Self::Flair, Self::T1, Self::T1ce, Self::T2];

    /// The name reports and the command line use (`flair`, `t1`, `t1ce`, `t2`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Flair => "flair",
            Self::T1 => "t1",
            Self::T1ce => "t1ce",
            Self::T2 => "t2",
        }
    }
}

impl std::fmt::Display for Contrast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a BraTS folder, or one of its volumes, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BratsError {
    /// A folder cannot be listed, or a file cannot be written.
    #[error("cannot read or write {path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The path given is not a folder.
    #[error("{0} is not a folder: pass the BraTS folder that holds one subfolder per subject")]
    NotAFolder(PathBuf),
    /// The folder holds no subject folder with NIfTI volumes.
    #[error(
        "no BraTS subject folders in {0}: expected one subfolder per subject holding \
         <subject>_flair.nii.gz … <subject>_seg.nii.gz (BraTS 2018–2021) or \
         <subject>-t2f.nii.gz … <subject>-seg.nii.gz (BraTS 2023); point at the folder that \
         holds the subject folders"
    )]
    NoSubjects(PathBuf),
    /// A subject folder lacks a volume the source needs.
    #[error("subject folder {dir} has no {what}: expected {expected}{hint}")]
    MissingFile {
        /// The subject folder.
        dir: PathBuf,
        /// What is missing (`flair image`, `segmentation`).
        what: String,
        /// The file names looked for.
        expected: String,
        /// How to fix it, with its leading separator (may be empty).
        hint: &'static str,
    },
    /// A subject folder holds two files that could be the same volume.
    #[error("subject folder {dir} has two {what} files, {first} and {second}: keep one")]
    Ambiguous {
        /// The subject folder.
        dir: PathBuf,
        /// Which volume (`flair image`, `segmentation`).
        what: String,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// A volume cannot be decoded as NIfTI.
    #[error(
        "cannot read NIfTI volume {path}: {source} (is it a complete .nii or .nii.gz file? \
         re-copy or re-extract it)"
    )]
    Nifti {
        /// The file.
        path: PathBuf,
        /// Why.
        source: nifti::NiftiError,
    },
    /// A volume decodes but is not what the source can use.
    #[error("{path}: {what}")]
    Volume {
        /// The file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        what: String,
    },
    /// A segmentation holds a value that is not a BraTS label.
    #[error(
        "{path}: segmentation value {value} at voxel ({}, {}, {}) is not a BraTS label (expected \
         {allowed}); is this the segmentation of another data set?",
        voxel[0], voxel[1], voxel[2]
    )]
    UnknownLabel {
        /// The segmentation file.
        path: PathBuf,
        /// The value found.
        value: f32,
        /// Its voxel (i, j, k) in the file's own order.
        voxel: [usize; 3],
        /// The values its naming allows, in words.
        allowed: &'static str,
    },
    /// The folder has too few subjects for what was asked of it.
    #[error(
        "{dir} holds {subjects} subjects; {query_slices} query slices at {per_subject} per subject \
         need {query_subjects} query subjects and at least one reference subject: ask for fewer \
         queries or more slices per subject, or use a folder with more subjects"
    )]
    TooFewSubjects {
        /// The folder.
        dir: PathBuf,
        /// Subjects in it.
        subjects: usize,
        /// Query slices asked for.
        query_slices: usize,
        /// Slices per subject.
        per_subject: usize,
        /// Query subjects they need.
        query_subjects: usize,
    },
    /// A configuration that cannot work.
    #[error("BraTS source: {0}")]
    Config(String),
    /// A slice index past the generator's last slice.
    #[error("slice {index} is past the last slice of this BraTS generator ({count} slices)")]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// Slices the generator holds.
        count: u64,
    },
}

#[cfg(test)]
mod tests;
