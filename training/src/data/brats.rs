//! The BraTS folder source: per case a Gd-enhanced T1 volume (`*_t1ce.nii[.gz]`) and its
//! segmentation (`*_seg.nii[.gz]`), cut into axial slices that contain brain.
//!
//! BraTS labels 1 (NCR/NET), 2 (edema), 4 (enhancing) become our 1, 2, 3 (the old label 3,
//! non-enhancing tumour, joins 1). Slice (r, c) is voxel (x = c, y = Y−1−r, z) so that anterior
//! is up. Normal labels do not exist in BraTS and are left 0.

use std::path::{Path, PathBuf};

use diptych::preprocess::{Photometric, PreprocessParams, RawFrame, place_labels, preprocess};
use ndarray::{Array3, Ix3};
use nifti::{IntoNdArray, NiftiObject, ReaderOptions};

use super::{Sample, SliceSource};

/// A slice is kept when at least this share of its pixels is non-zero brain.
const MIN_BRAIN_FRACTION: f32 = 0.02;

/// A BraTS folder that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BratsError {
    /// The folder cannot be listed.
    #[error("cannot list BraTS folder {path}: {source}")]
    List {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No case with both a `*_t1ce.nii[.gz]` and a `*_seg.nii[.gz]` was found.
    #[error("no BraTS case in {0}: expected per case a <id>_t1ce.nii.gz next to a <id>_seg.nii.gz")]
    Empty(PathBuf),
    /// A volume cannot be decoded.
    #[error("cannot read NIfTI volume {path}: {source}")]
    Nifti {
        /// The file.
        path: PathBuf,
        /// Why.
        source: nifti::NiftiError,
    },
    /// A volume is not three-dimensional, or the image and segmentation differ in shape.
    #[error("{path}: {what}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The shared pre-processing rejected a slice.
    #[error("pre-processing slice {slice} of {path}: {source}")]
    Preprocess {
        /// The image file.
        path: PathBuf,
        /// The axial index.
        slice: usize,
        /// Why.
        source: diptych::preprocess::PreprocessError,
    },
}

/// All brain-containing axial slices of a BraTS folder, preprocessed, in memory.
#[derive(Debug)]
pub struct BratsSource {
    samples: Vec<Sample>,
    cases: usize,
}

/// Image and segmentation paths of one case.
#[derive(Debug, Clone, PartialEq)]
struct Case {
    image: PathBuf,
    seg: PathBuf,
}

fn strip_suffix<'a>(name: &'a str, kind: &str) -> Option<&'a str> {
    [".nii.gz", ".nii"]
        .iter()
        .find_map(|ext| name.strip_suffix(&format!("_{kind}{ext}")))
}

fn find_seg(dir: &Path, stem: &str) -> Option<PathBuf> {
    [".nii.gz", ".nii"]
        .iter()
        .map(|ext| dir.join(format!("{stem}_seg{ext}")))
        .find(|p| p.is_file())
}

/// Cases in `dir` and its immediate sub-folders, sorted by image path.
fn find_cases(dir: &Path) -> Result<Vec<Case>, BratsError> {
    let list = |d: &Path| -> Result<Vec<PathBuf>, BratsError> {
        let entries = std::fs::read_dir(d).map_err(|source| BratsError::List {
            path: d.to_path_buf(),
            source,
        })?;
        Ok(entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
    };
    let mut folders = vec![dir.to_path_buf()];
    folders.extend(list(dir)?.into_iter().filter(|p| p.is_dir()));
    let mut cases = Vec::new();
    for folder in folders {
        for path in list(&folder)? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if let Some(stem) = strip_suffix(name, "t1ce")
                && let Some(seg) = find_seg(&folder, stem)
            {
                cases.push(Case {
                    image: path.clone(),
                    seg,
                });
            }
        }
    }
    cases.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(cases)
}

fn read_volume(path: &Path) -> Result<Array3<f32>, BratsError> {
    let nifti = |source| BratsError::Nifti {
        path: path.to_path_buf(),
        source,
    };
    let volume = ReaderOptions::new()
        .read_file(path)
        .map_err(nifti)?
        .into_volume();
    let array = volume.into_ndarray::<f32>().map_err(nifti)?;
    let shape = array.shape().to_vec();
    array
        .into_dimensionality::<Ix3>()
        .map_err(|_| BratsError::Shape {
            path: path.to_path_buf(),
            what: format!("expected a 3-D volume, got shape {shape:?}"),
        })
}

/// BraTS label → ours (1 NCR/NET, 2 edema, 4 enhancing → 3; 3 → 1; anything else → 0).
fn map_label(value: f32) -> u8 {
    match value.round() as i32 {
        1 | 3 => 1,
        2 => 2,
        4 => 3,
        _ => 0,
    }
}

impl BratsSource {
    /// Reads every case of `dir` and preprocesses its brain-containing axial slices.
    pub fn open(dir: &Path, params: &PreprocessParams) -> Result<Self, BratsError> {
        let cases = find_cases(dir)?;
        if cases.is_empty() {
            return Err(BratsError::Empty(dir.to_path_buf()));
        }
        let mut samples = Vec::new();
        for case in &cases {
            let image = read_volume(&case.image)?;
            let seg = read_volume(&case.seg)?;
            if image.shape() != seg.shape() {
                return Err(BratsError::Shape {
                    path: case.seg.clone(),
                    what: format!(
                        "segmentation shape {:?} differs from image shape {:?}",
                        seg.shape(),
                        image.shape()
                    ),
                });
            }
            let (nx, ny, nz) = image.dim();
            for z in 0..nz {
                let mut pixels = Vec::with_capacity(nx * ny);
                let mut labels = Vec::with_capacity(nx * ny);
                for r in 0..ny {
                    for c in 0..nx {
                        pixels.push(image[[c, ny - 1 - r, z]]);
                        labels.push(map_label(seg[[c, ny - 1 - r, z]]));
                    }
                }
                let brain = pixels.iter().filter(|&&v| v > 0.0).count();
                if (brain as f32) < MIN_BRAIN_FRACTION * pixels.len() as f32 {
                    continue;
                }
                let frame = RawFrame {
                    rows: ny,
                    cols: nx,
                    pixels: &pixels,
                    rescale_slope: 1.0,
                    rescale_intercept: 0.0,
                    photometric: Photometric::Monochrome2,
                };
                let pre = preprocess(&frame, params).map_err(|source| BratsError::Preprocess {
                    path: case.image.clone(),
                    slice: z,
                    source,
                })?;
                let size = params.input_size;
                samples.push(Sample {
                    size,
                    abnormal: place_labels(&labels, ny, nx, &pre.placement, size),
                    normal: vec![0; size * size],
                    image: pre.pixels,
                    twin: None,
                });
            }
        }
        Ok(Self {
            samples,
            cases: cases.len(),
        })
    }

    /// Number of cases read.
    pub fn cases(&self) -> usize {
        self.cases
    }
}

impl SliceSource for BratsSource {
    fn len(&self) -> Option<usize> {
        Some(self.samples.len())
    }

    fn sample(&self, index: u64) -> Sample {
        self.samples[(index % self.samples.len().max(1) as u64) as usize].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nifti::writer::WriterOptions;

    /// Writes one synthetic case: a 40×32×6 volume whose slices 1..5 hold a bright disc with a
    /// lesion (BraTS labels 2 around 1 around 4) in slices 2 and 3; slice 0 and 5 are empty.
    fn write_case(dir: &Path, id: &str) {
        let (nx, ny, nz) = (40, 32, 6);
        let mut image = Array3::<f32>::zeros((nx, ny, nz));
        let mut seg = Array3::<u8>::zeros((nx, ny, nz));
        for z in 1..5 {
            for x in 0..nx {
                for y in 0..ny {
                    let d2 = (x as f32 - 20.0).powi(2) + (y as f32 - 16.0).powi(2);
                    if d2 < 144.0 {
                        image[[x, y, z]] = 100.0 + x as f32;
                    }
                    if (2..4).contains(&z) && x >= 18 && (20..24).contains(&y) {
                        seg[[x, y, z]] = match x {
                            18 | 19 => 2,
                            20 | 21 => 1,
                            _ => 4,
                        };
                    }
                }
            }
        }
        let case = dir.join(id);
        std::fs::create_dir_all(&case).unwrap();
        WriterOptions::new(case.join(format!("{id}_t1ce.nii.gz")))
            .write_nifti(&image)
            .unwrap();
        WriterOptions::new(case.join(format!("{id}_seg.nii.gz")))
            .write_nifti(&seg)
            .unwrap();
    }

    #[test]
    fn reads_brain_slices_and_maps_labels() {
        let dir = std::env::temp_dir().join(format!("diptych-brats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_case(&dir, "BraTS19_TEST_001");
        // a case without segmentation is not a training case
        std::fs::write(dir.join("BraTS19_TEST_002_t1ce.nii.gz"), b"").unwrap();
        let params = PreprocessParams {
            input_size: 32,
            ..Default::default()
        };
        let source = BratsSource::open(&dir, &params).unwrap();
        assert_eq!(source.cases(), 1);
        assert_eq!(source.len(), Some(4), "slices 1..5 contain brain");
        let lesion_slices: Vec<Sample> = (0..4)
            .map(|i| source.sample(i))
            .filter(Sample::has_lesion)
            .collect();
        assert_eq!(lesion_slices.len(), 2);
        let labels: std::collections::BTreeSet<u8> =
            lesion_slices[0].abnormal.iter().copied().collect();
        assert_eq!(labels, [0, 1, 2, 3].into_iter().collect());
        let s = &lesion_slices[0];
        assert!(s.image.iter().all(|v| (0.0..=1.0).contains(v)));
        // anterior up: voxel y ∈ [20, 24) is above the centre (y = 16), so rows < 16 of 32
        let rows: Vec<usize> = (0..32 * 32)
            .filter(|&i| s.abnormal[i] != 0)
            .map(|i| i / 32)
            .collect();
        assert!(rows.iter().all(|&r| r < 16), "{rows:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_folder_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("diptych-brats-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = BratsSource::open(&dir, &PreprocessParams::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("_t1ce.nii.gz"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
