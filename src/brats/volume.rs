//! Reading one subject's volumes and cutting them into slices: NIfTI decoding, the turn into
//! the atlas view, the label mapping, the brain's extent, the intensity scale and the frame.

use std::path::Path;

use nifti::{IntoNdArray, NiftiHeader, NiftiObject, NiftiType, ReaderOptions};

use super::generator::BratsConfig;
use super::{BratsError, Naming, Subject};

/// Largest side of a volume the source reads (voxels), so a corrupt header cannot ask for
/// gigabytes.
const MAX_SIDE: usize = 2048;
/// Largest number of voxels of a volume the source reads (1 GiB as `f32`).
const MAX_VOXELS: usize = 1 << 28;
/// The stored value of the 99th percentile of a subject's brain voxels.
pub(crate) const STORED_P99: f32 = 3000.0;
/// The largest stored value.
pub(crate) const STORED_MAX: f32 = 4000.0;

/// The abnormal label ([`ABNORMAL_LABELS`](crate::synthetic::ABNORMAL_LABELS) index) of BraTS
/// segmentation value `value` in a file of `naming`, or `None` when it is not a BraTS label:
/// 0 → background, 1 → necrotic core, 2 → edema, 4 → enhancing tumour, and 3 → enhancing
/// tumour in BraTS 2023 files (BraTS 2018–2021 do not use 3).
pub fn abnormal_label(value: f32, naming: Naming) -> Option<u8> {
    if value == 0.0 {
        Some(0)
    } else if value == 1.0 {
        Some(1)
    } else if value == 2.0 {
        Some(2)
    } else if value == 4.0 || (value == 3.0 && naming == Naming::Brats2023) {
        Some(3)
    } else {
        None
    }
}

/// The segmentation values `naming` allows, in words.
fn allowed_labels(naming: Naming) -> &'static str {
    match naming {
        Naming::Brats2021 => {
            "0, 1 necrotic core, 2 edema, 4 enhancing tumour in BraTS 2018–2021 files"
        }
        Naming::Brats2023 => {
            "0, 1 necrotic core, 2 edema, 3 (or 4) enhancing tumour in BraTS 2023 files"
        }
    }
}

/// For each display axis — column, row, plane — the voxel axis it runs along and whether it
/// runs against it.
///
/// The display is the atlas source's: columns from the patient's right to their left (world x
/// decreasing, RAS), rows from anterior to posterior (world y decreasing), planes from inferior
/// to superior (world z increasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Orientation {
    pub axes: [(usize, bool); 3],
}

/// The voxel-to-world matrix (without translation) of `header`: the sform when its code is set,
/// else the qform, else the voxel sizes alone (NIfTI's "method 1", taken as RAS).
fn voxel_to_world(header: &NiftiHeader) -> [[f64; 3]; 3] {
    let pixdim = |k: usize| {
        let d = f64::from(header.pixdim[k]).abs();
        if d > 0.0 && d.is_finite() { d } else { 1.0 }
    };
    if header.sform_code > 0 {
        let rows = [header.srow_x, header.srow_y, header.srow_z];
        return rows.map(|r| [f64::from(r[0]), f64::from(r[1]), f64::from(r[2])]);
    }
    if header.qform_code > 0 {
        let (b, c, d) = (
            f64::from(header.quatern_b),
            f64::from(header.quatern_c),
            f64::from(header.quatern_d),
        );
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let qfac = if header.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - b * b - c * c,
            ],
        ];
        let scale = [pixdim(1), pixdim(2), pixdim(3) * qfac];
        return r.map(|row| [row[0] * scale[0], row[1] * scale[1], row[2] * scale[2]]);
    }
    [
        [pixdim(1), 0.0, 0.0],
        [0.0, pixdim(2), 0.0],
        [0.0, 0.0, pixdim(3)],
    ]
}

/// How the voxel axes of `header` map to the display; each voxel axis is taken along the world
/// axis it is closest to (BraTS volumes are axis-aligned).
pub(crate) fn orientation(header: &NiftiHeader, path: &Path) -> Result<Orientation, BratsError> {
    let m = voxel_to_world(header);
    let mut world_of = [0usize; 3];
    for (j, world) in world_of.iter_mut().enumerate() {
        let column = [m[0][j].abs(), m[1][j].abs(), m[2][j].abs()];
        let (w, &largest) = column
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        if !(largest > 0.0 && largest.is_finite()) {
            return Err(BratsError::Volume {
                path: path.to_path_buf(),
                what: format!(
                    "voxel axis {j} has no direction in the sform/qform ({m:?}); fix the header's \
                     orientation (e.g. with nibabel or fslreorient2std)"
                ),
            });
        }
        *world = w;
    }
    let voxel_axis = |w: usize| world_of.iter().position(|&x| x == w);
    let (Some(x), Some(y), Some(z)) = (voxel_axis(0), voxel_axis(1), voxel_axis(2)) else {
        return Err(BratsError::Volume {
            path: path.to_path_buf(),
            what: format!(
                "two voxel axes run along the same world axis in the sform/qform ({m:?}); fix the \
                 header's orientation (e.g. with nibabel or fslreorient2std)"
            ),
        });
    };
    Ok(Orientation {
        axes: [(x, m[0][x] > 0.0), (y, m[1][y] > 0.0), (z, m[2][z] < 0.0)],
    })
}

/// A volume as stored: its size per voxel axis, how it maps to the display, and its values with
/// the first axis fastest.
pub(crate) struct Stored {
    pub dims: [usize; 3],
    pub orientation: Orientation,
    pub values: Vec<f32>,
}

/// Reads the scalar 3-D volume at `path` (a 4-D one with a single volume is accepted), with the
/// header's scale slope and intercept applied.
pub(crate) fn read_volume(path: &Path) -> Result<Stored, BratsError> {
    let nifti = |source| BratsError::Nifti {
        path: path.to_path_buf(),
        source,
    };
    let bad = |what: String| BratsError::Volume {
        path: path.to_path_buf(),
        what,
    };
    let header = NiftiHeader::from_file(path).map_err(nifti)?;
    let rank = usize::from(header.dim[0]);
    let extra = header.dim[4..=rank.clamp(3, 7)].iter().any(|&d| d > 1);
    if !(3..=7).contains(&rank) || extra {
        return Err(bad(format!(
            "expected a 3-D volume, the header says {rank} dimensions of sizes {:?}",
            &header.dim[1..=rank.clamp(1, 7)]
        )));
    }
    let dims = [1, 2, 3].map(|k| usize::from(header.dim[k]));
    if dims.iter().any(|&d| d == 0 || d > MAX_SIDE) || dims.iter().product::<usize>() > MAX_VOXELS {
        return Err(bad(format!(
            "volume size {}×{}×{} is not a brain MR volume (each side 1..{MAX_SIDE})",
            dims[0], dims[1], dims[2]
        )));
    }
    let datatype = header.data_type().map_err(nifti)?;
    if matches!(
        datatype,
        NiftiType::Complex64
            | NiftiType::Complex128
            | NiftiType::Complex256
            | NiftiType::Rgb24
            | NiftiType::Rgba32
            | NiftiType::Float128
    ) {
        return Err(bad(format!(
            "voxels of type {datatype:?}; expected one real number per voxel"
        )));
    }
    let orientation = orientation(&header, path)?;
    let object = ReaderOptions::new().read_file(path).map_err(nifti)?;
    let array = object.into_volume().into_ndarray::<f32>().map_err(nifti)?;
    // NIfTI stores the first axis fastest, and the nifti crate keeps that order (its array is
    // Fortran-ordered): take the buffer as it is, else walk the transposed view, which iterates
    // in that order too.
    let values: Vec<f32> = if array.t().is_standard_layout() {
        let (values, offset) = array.into_raw_vec_and_offset();
        if offset.unwrap_or(0) != 0 {
            return Err(bad(
                "the decoded volume does not start at its buffer's start".into(),
            ));
        }
        values
    } else {
        array.t().iter().copied().collect()
    };
    if values.len() != dims.iter().product::<usize>() {
        return Err(bad(format!(
            "holds {} voxels, its header says {}×{}×{}",
            values.len(),
            dims[0],
            dims[1],
            dims[2]
        )));
    }
    Ok(Stored {
        dims,
        orientation,
        values,
    })
}

/// A volume in the display view: `planes` axial planes from the bottom up, each `rows × cols`
/// with row 0 anterior and column 0 the patient's right.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Oriented<T> {
    pub cols: usize,
    pub rows: usize,
    pub planes: usize,
    pub values: Vec<T>,
}

/// `values` (one per voxel of a volume of `dims`, first axis fastest) in the display view.
pub(crate) fn orient<T: Copy>(
    dims: [usize; 3],
    orientation: Orientation,
    values: &[T],
) -> Oriented<T> {
    let strides = [1, dims[0], dims[0] * dims[1]];
    let [(ca, cf), (ra, rf), (pa, pf)] = orientation.axes;
    let (cols, rows, planes) = (dims[ca], dims[ra], dims[pa]);
    let voxel = |i: usize, n: usize, flip: bool| if flip { n - 1 - i } else { i };
    let mut out = Vec::with_capacity(cols * rows * planes);
    for p in 0..planes {
        let base_p = voxel(p, planes, pf) * strides[pa];
        for r in 0..rows {
            let base = base_p + voxel(r, rows, rf) * strides[ra];
            for c in 0..cols {
                out.push(values[base + voxel(c, cols, cf) * strides[ca]]);
            }
        }
    }
    Oriented {
        cols,
        rows,
        planes,
        values: out,
    }
}

/// One slice of a subject, ready to hand out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PreparedSlice {
    /// Axial level in [0, 1] over the brain's extent.
    pub level: f32,
    /// Stored values, `rows × cols`.
    pub image: Vec<u16>,
    /// The brain mask as normal label 1.
    pub normal: Vec<u8>,
    /// Abnormal labels.
    pub abnormal: Vec<u8>,
}

/// The slices of one subject, in slot order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PreparedSubject {
    pub slices: Vec<PreparedSlice>,
}

/// The abnormal labels of a segmentation volume read from `path`.
fn map_labels(seg: &Stored, path: &Path, naming: Naming) -> Result<Vec<u8>, BratsError> {
    seg.values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            abnormal_label(v, naming).ok_or_else(|| {
                let [nx, ny, _] = seg.dims;
                BratsError::UnknownLabel {
                    path: path.to_path_buf(),
                    value: v,
                    voxel: [i % nx, (i / nx) % ny, i / (nx * ny)],
                    allowed: allowed_labels(naming),
                }
            })
        })
        .collect()
}

/// Planes `lo..=hi` whose brain section is at least a tenth of the largest, or `None` when no
/// plane holds any brain.
fn brain_extent(areas: &[usize]) -> Option<(usize, usize)> {
    let largest = areas.iter().copied().max().filter(|&a| a > 0)?;
    let keep = |a: &usize| *a * 10 >= largest;
    let lo = areas.iter().position(keep)?;
    let hi = areas.iter().rposition(keep)?;
    Some((lo, hi))
}

/// The plane and level of slot `slot` of `per_subject` over the extent `lo..=hi`.
pub(crate) fn slot_plane(
    slot: usize,
    per_subject: usize,
    (lo, hi): (usize, usize),
) -> (usize, f32) {
    let target = (slot as f64 + 0.5) / per_subject as f64;
    let span = (hi - lo) as f64;
    let plane = lo + (target * span).round() as usize;
    let level = if hi > lo {
        ((plane - lo) as f64 / span) as f32
    } else {
        0.5
    };
    (plane.min(hi), level)
}

/// Reads `subject`'s image and segmentation and cuts its slices as `config` says.
pub(crate) fn prepare_subject(
    subject: &Subject,
    config: &BratsConfig,
) -> Result<PreparedSubject, BratsError> {
    // One volume as stored at a time (a 240 × 240 × 155 volume takes 36 MB as f32).
    let image = {
        let stored = read_volume(&subject.image)?;
        if let Some(i) = stored.values.iter().position(|v| !v.is_finite()) {
            return Err(BratsError::Volume {
                path: subject.image.clone(),
                what: format!(
                    "voxel {i} (first axis fastest) is {}; expected finite intensities",
                    stored.values[i]
                ),
            });
        }
        orient(stored.dims, stored.orientation, &stored.values)
    };
    let labels = {
        let stored = read_volume(&subject.segmentation)?;
        let labels = map_labels(&stored, &subject.segmentation, subject.naming)?;
        orient(stored.dims, stored.orientation, &labels)
    };
    if (labels.cols, labels.rows, labels.planes) != (image.cols, image.rows, image.planes) {
        return Err(BratsError::Volume {
            path: subject.segmentation.clone(),
            what: format!(
                "the segmentation is {}×{}×{} (columns × rows × planes, seen axially) and the image \
                 {} is {}×{}×{}; they must share one voxel grid",
                labels.cols,
                labels.rows,
                labels.planes,
                subject.image.display(),
                image.cols,
                image.rows,
                image.planes
            ),
        });
    }

    let brain: Vec<bool> = image
        .values
        .iter()
        .zip(&labels.values)
        .map(|(&v, &l)| v != 0.0 || l != 0)
        .collect();
    let plane_size = image.rows * image.cols;
    let areas: Vec<usize> = brain
        .chunks_exact(plane_size)
        .map(|p| p.iter().filter(|&&b| b).count())
        .collect();
    let Some(extent) = brain_extent(&areas) else {
        return Err(BratsError::Volume {
            path: subject.image.clone(),
            what: "every voxel is 0: no brain to slice (is it the right file?)".to_string(),
        });
    };

    // The brain's bounding box in the plane, over its extent: the frame is centred on it.
    let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0, usize::MAX, 0);
    for p in extent.0..=extent.1 {
        for r in 0..image.rows {
            for c in 0..image.cols {
                if brain[(p * image.rows + r) * image.cols + c] {
                    (r0, r1, c0, c1) = (r0.min(r), r1.max(r), c0.min(c), c1.max(c));
                }
            }
        }
    }

    // The intensity scale: the 99th percentile of the brain to STORED_P99, the lowest
    // brain value (if negative) to 0.
    let mut inside: Vec<f32> = image
        .values
        .iter()
        .zip(&brain)
        .filter(|&(_, &b)| b)
        .map(|(&v, _)| v)
        .collect();
    let lo = inside.iter().copied().fold(0f32, f32::min);
    let k = (inside.len() - 1) * 99 / 100;
    let (_, &mut p99, _) = inside.select_nth_unstable_by(k, f32::total_cmp);
    drop(inside);
    let span = p99 - lo;
    let store = |v: f32| -> u16 {
        let s = if span > 0.0 {
            (v - lo) * (STORED_P99 / span)
        } else {
            STORED_P99
        };
        (s.clamp(0.0, STORED_MAX) + 0.5) as u16
    };

    let (rows, cols) = (config.rows, config.cols);
    let top = (r0 + r1 + 1) as isize / 2 - rows as isize / 2;
    let left = (c0 + c1 + 1) as isize / 2 - cols as isize / 2;
    let slices = (0..config.slices_per_subject)
        .map(|slot| {
            let (p, level) = slot_plane(slot, config.slices_per_subject, extent);
            let mut slice = PreparedSlice {
                level,
                image: vec![0; rows * cols],
                normal: vec![0; rows * cols],
                abnormal: vec![0; rows * cols],
            };
            for r in 0..rows {
                let Some(vr) = usize::try_from(top + r as isize)
                    .ok()
                    .filter(|&vr| vr < image.rows)
                else {
                    continue;
                };
                for c in 0..cols {
                    let Some(vc) = usize::try_from(left + c as isize)
                        .ok()
                        .filter(|&vc| vc < image.cols)
                    else {
                        continue;
                    };
                    let v = (p * image.rows + vr) * image.cols + vc;
                    if brain[v] {
                        let i = r * cols + c;
                        slice.image[i] = store(image.values[v]);
                        slice.normal[i] = 1;
                        slice.abnormal[i] = labels.values[v];
                    }
                }
            }
            slice
        })
        .collect();
    Ok(PreparedSubject { slices })
}
