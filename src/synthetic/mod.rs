//! Synthetic labelled slices: what every generator of the project hands to training, to
//! evaluation and to the tests.
//!
//! Two generators exist: the cartoon [`phantom`](crate::phantom) (drawn anatomy, six normal labels
//! by structure) and the [`atlas`](crate::atlas) source (real anatomy from the MNI152 tissue maps,
//! deformed per subject, six normal labels by tissue and hemisphere). Both give, for every slice,
//! the stored image, its *healthy twin* (the same anatomy and rendering without the lesion), a
//! normal label map, an abnormal label map with the BraTS labels ([`ABNORMAL_LABELS`]) and the
//! slice's axial level, so that anything written against [`SliceGenerator`] works on either.
//!
//! A third source reads real scans: a [`brats`](crate::brats) folder. It has no healthy twins
//! ([`SliceGenerator::has_twins`]), one normal label (the brain mask), a finite number of slices
//! ([`SliceGenerator::slice_count`]) and can fail on a malformed file
//! ([`SliceGenerator::try_slice`]).

pub(crate) mod field;
pub mod lesion_size;
pub(crate) mod shape;

use crate::preprocess::{Photometric, RawFrame};

/// Names of the abnormal labels, shared by every generator; the index is the value in an
/// abnormal label map.
pub const ABNORMAL_LABELS: [&str; 4] = ["background", "necrotic_core", "edema", "enhancing_tumor"];

/// Why a source could not give a slice: only sources that read files fail (an unreadable or
/// malformed volume, an index past the last slice); the message names the file and the fix.
pub type SliceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A deterministic, random-access source of labelled slices.
///
/// Slice `index` is a pure function of the generator's seed, configuration and `index`; two
/// generators with different seeds share no subject, which is how query and reference sets are
/// kept disjoint. (A BraTS folder has no seed: its query and reference generators are given
/// disjoint subjects of the folder instead.)
pub trait SliceGenerator: Send + Sync {
    /// Short name of the source, as used in configs and reports (`phantom`, `anatomy`, `brats`).
    fn name(&self) -> &'static str;

    /// Names of the normal labels; the index is the value in a normal label map.
    fn normal_labels(&self) -> &'static [&'static str];

    /// Number of consecutive slice indices that belong to one subject.
    fn slices_per_subject(&self) -> u64;

    /// Generates slice `index`.
    ///
    /// Sources that read files panic here on a file they cannot read; code that may meet such a
    /// source calls [`try_slice`](Self::try_slice) instead.
    fn slice(&self, index: u64) -> SyntheticSlice;

    /// Slice `index`, or why the source cannot give it. The generated sources never fail (the
    /// default calls [`slice`](Self::slice)); evaluation calls this so that a malformed file ends
    /// in an error naming it.
    fn try_slice(&self, index: u64) -> Result<SyntheticSlice, SliceError> {
        Ok(self.slice(index))
    }

    /// Whether every diseased slice comes with its healthy twin (true for the generated sources;
    /// real scans have none, and their [`SyntheticSlice::healthy_twin`] is empty).
    fn has_twins(&self) -> bool {
        true
    }

    /// Number of slices the source holds (indices `0..n`), or `None` when every index is a slice
    /// (the generated sources).
    fn slice_count(&self) -> Option<u64> {
        None
    }
}

/// One generated slice with its labels and healthy twin.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSlice {
    /// Index of the slice in its generator's sequence.
    pub index: u64,
    /// Subject the slice belongs to (slices of one subject share its anatomy).
    pub subject: u64,
    /// Axial level, 0 = the lowest brain slice of the subject (skull base), 1 = the vertex.
    pub level: f32,
    /// Rows (image height).
    pub rows: usize,
    /// Columns (image width).
    pub cols: usize,
    /// MR-like stored values (whole numbers, about 0..4000, background 0), row-major.
    pub image: Vec<f32>,
    /// The same anatomy and rendering without the lesion; equal to `image` outside the lesion
    /// and for healthy slices. Empty when the source has no twins
    /// ([`SliceGenerator::has_twins`] is false).
    pub healthy_twin: Vec<f32>,
    /// Normal label per pixel (index into the generator's [`SliceGenerator::normal_labels`]).
    pub normal_labels: Vec<u8>,
    /// Abnormal label per pixel (index into [`ABNORMAL_LABELS`]); all 0 for healthy slices.
    pub abnormal_labels: Vec<u8>,
    /// Whether the slice has a lesion.
    pub has_lesion: bool,
}

impl SyntheticSlice {
    fn frame<'a>(&self, pixels: &'a [f32]) -> RawFrame<'a> {
        RawFrame {
            rows: self.rows,
            cols: self.cols,
            pixels,
            rescale_slope: 1.0,
            rescale_intercept: 0.0,
            photometric: Photometric::Monochrome2,
        }
    }

    /// The image as a stored frame (slope 1, intercept 0, MONOCHROME2), ready for
    /// [`preprocess`](crate::preprocess::preprocess).
    pub fn raw_frame(&self) -> RawFrame<'_> {
        self.frame(&self.image)
    }

    /// The healthy twin as a stored frame (slope 1, intercept 0, MONOCHROME2).
    pub fn twin_frame(&self) -> RawFrame<'_> {
        self.frame(&self.healthy_twin)
    }

    /// Pixels carrying any abnormal label (the whole tumour).
    pub fn lesion_pixels(&self) -> usize {
        self.abnormal_labels.iter().filter(|&&l| l != 0).count()
    }
}

/// Which synthetic source to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The cartoon phantom ([`crate::phantom`]).
    Phantom,
    /// Real anatomy from the MNI152 tissue maps ([`crate::atlas`]).
    Anatomy,
}

impl SourceKind {
    /// Opens a generator of this kind for `seed` with the given share of healthy slices; the
    /// anatomy source shares the maps of [`crate::atlas::AtlasMaps::default_dir`], read once.
    pub fn open(
        self,
        seed: u64,
        healthy_fraction: f32,
    ) -> Result<Box<dyn SliceGenerator>, crate::atlas::AtlasError> {
        Ok(match self {
            Self::Phantom => Box::new(crate::phantom::PhantomGenerator::new(
                seed,
                crate::phantom::PhantomConfig {
                    healthy_fraction,
                    ..Default::default()
                },
            )),
            Self::Anatomy => {
                let maps =
                    crate::atlas::AtlasMaps::shared(&crate::atlas::AtlasMaps::default_dir())?;
                Box::new(crate::atlas::AtlasGenerator::new(
                    maps,
                    seed,
                    crate::atlas::AtlasConfig {
                        healthy_fraction,
                        ..Default::default()
                    },
                ))
            }
        })
    }
}
