//! A small BraTS-layout folder drawn from simple geometry, for the tests and for trying
//! `diptych eval --brats` without data (BraTS itself cannot be shipped).
//!
//! Each subject is an ellipsoidal brain — white matter, a grey-matter rim, two lateral
//! ventricles — with, in two subjects of three, a spherical glioma off the midline: a necrotic
//! core inside an enhancing shell inside edema. All four contrasts and the segmentation are
//! written, as 16-bit integers and bytes. The subjects vary what a reader must cope with:
//!
//! | subject `k` | naming | file | voxel grid | lesion |
//! |---|---|---|---|---|
//! | even / odd | BraTS 2021 `BraTS2021_0000k` / BraTS 2023 `BraTS-GLI-0000k-000` | `.nii` when `k % 4 == 2`, else `.nii.gz` | RAS+ when `k % 4 == 3`, else BraTS's (first axis to the patient's left, second to posterior) | none when `k % 3 == 1` |
//!
//! The enhancing tumour is label 4 in BraTS 2021 files and 3 in BraTS 2023 files.

use std::path::Path;

use ndarray::{Array3, ShapeBuilder};
use nifti::NiftiHeader;
use nifti::writer::WriterOptions;

use super::{BratsError, Contrast, Naming};

/// How a volume's voxels are laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// As BraTS files are: the first voxel axis runs to the patient's left, the second to
    /// posterior, the third up (sform and qform diag(−1, −1, 1)).
    Brats,
    /// RAS+: the first axis runs to the patient's right, the second anterior, the third up
    /// (identity sform and qform).
    Ras,
}

/// One subject of a sample folder, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSubject {
    /// The subject folder's name.
    pub name: String,
    /// Its file naming.
    pub naming: Naming,
    /// Whether its files are `.nii.gz` (else `.nii`).
    pub gzip: bool,
    /// Its voxel layout.
    pub grid: Grid,
    /// Whether it has a lesion.
    pub lesion: bool,
}

/// What [`write_sample`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleOptions {
    /// Number of subjects.
    pub subjects: usize,
    /// Voxels along the first, second and third axis (1 mm each; at least 16 along each).
    pub dims: [usize; 3],
}

impl Default for SampleOptions {
    /// 8 subjects of 64 × 64 × 40 voxels.
    fn default() -> Self {
        Self {
            subjects: 8,
            dims: [64, 64, 40],
        }
    }
}

/// The `k`-th subject of a sample folder (see the module's table).
pub fn sample_subject(k: usize) -> SampleSubject {
    let naming = if k.is_multiple_of(2) {
        Naming::Brats2021
    } else {
        Naming::Brats2023
    };
    SampleSubject {
        name: match naming {
            Naming::Brats2021 => format!("BraTS2021_{k:05}"),
            Naming::Brats2023 => format!("BraTS-GLI-{k:05}-000"),
        },
        naming,
        gzip: k % 4 != 2,
        grid: if k % 4 == 3 { Grid::Ras } else { Grid::Brats },
        lesion: k % 3 != 1,
    }
}

/// Writes a sample folder into `dir` (created if needed): one subfolder per subject with its
/// four contrasts and its segmentation. Returns the subjects in the order of `k`.
pub fn write_sample(dir: &Path, options: &SampleOptions) -> Result<Vec<SampleSubject>, BratsError> {
    if options.dims.iter().any(|&d| d < 16) {
        return Err(BratsError::Config(format!(
            "sample volumes need at least 16 voxels along each axis, got {:?}",
            options.dims
        )));
    }
    (0..options.subjects)
        .map(|k| {
            let subject = sample_subject(k);
            write_subject(dir, k, &subject, options.dims)?;
            Ok(subject)
        })
        .collect()
}

/// A header for a volume of `dims` laid out as `grid` (1 mm voxels, sform and qform set).
pub fn header(grid: Grid, dims: [usize; 3]) -> NiftiHeader {
    let [nx, ny, _] = dims.map(|d| d as f32);
    let mut h = NiftiHeader {
        pixdim: [1.0; 8],
        xyzt_units: 2,
        sform_code: 1,
        qform_code: 1,
        ..NiftiHeader::default()
    };
    match grid {
        Grid::Brats => {
            h.srow_x = [-1.0, 0.0, 0.0, nx - 1.0];
            h.srow_y = [0.0, -1.0, 0.0, ny - 1.0];
            h.srow_z = [0.0, 0.0, 1.0, 0.0];
            // A half turn about z: quaternion (0, 0, 0, 1).
            (h.quatern_b, h.quatern_c, h.quatern_d) = (0.0, 0.0, 1.0);
            (h.quatern_x, h.quatern_y, h.quatern_z) = (nx - 1.0, ny - 1.0, 0.0);
        }
        Grid::Ras => {
            h.srow_x = [1.0, 0.0, 0.0, 0.0];
            h.srow_y = [0.0, 1.0, 0.0, 0.0];
            h.srow_z = [0.0, 0.0, 1.0, 0.0];
            (h.quatern_b, h.quatern_c, h.quatern_d) = (0.0, 0.0, 0.0);
        }
    }
    h
}

/// The display position (column from the patient's right, row from anterior, plane from
/// inferior) of voxel `(i, j, k)` of a volume of `dims` laid out as `grid`.
pub fn display_of(grid: Grid, dims: [usize; 3], [i, j, k]: [usize; 3]) -> [usize; 3] {
    match grid {
        Grid::Brats => [i, j, k],
        Grid::Ras => [dims[0] - 1 - i, dims[1] - 1 - j, k],
    }
}

/// The type of the voxels a volume is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoxelType {
    /// 16-bit signed integers (BraTS images).
    Int16,
    /// Bytes (BraTS segmentations).
    Uint8,
    /// 32-bit floats.
    Float32,
}

/// The values of `f` at every voxel `[i, j, k]` of a volume of `dims`, the first axis fastest
/// (NIfTI's order, which [`write_volume`] takes).
pub fn volume_from_fn(dims: [usize; 3], mut f: impl FnMut([usize; 3]) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(dims.iter().product());
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                out.push(f([i, j, k]));
            }
        }
    }
    out
}

/// Writes `values` (one per voxel of a volume of `dims`, the first axis fastest) to `path` with
/// `header` as `voxel`s (values are cast: rounded towards zero and saturated for the integer
/// types); `.nii.gz` paths are compressed.
pub fn write_volume(
    path: &Path,
    header: &NiftiHeader,
    dims: [usize; 3],
    values: &[f32],
    voxel: VoxelType,
) -> Result<(), BratsError> {
    let values = Array3::from_shape_vec(dims.f(), values.to_vec()).map_err(|_| {
        BratsError::Config(format!(
            "{} values for a volume of {}×{}×{} voxels",
            values.len(),
            dims[0],
            dims[1],
            dims[2]
        ))
    })?;
    let writer = WriterOptions::new(path).reference_header(header);
    match voxel {
        VoxelType::Int16 => writer.write_nifti(&values.mapv(|v| v as i16)),
        VoxelType::Uint8 => writer.write_nifti(&values.mapv(|v| v as u8)),
        VoxelType::Float32 => writer.write_nifti(&values),
    }
    .map_err(|source| BratsError::Nifti {
        path: path.to_path_buf(),
        source,
    })
}

/// Tissue classes of the sample geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tissue {
    Background,
    White,
    Grey,
    Csf,
    Edema,
    Enhancing,
    Necrosis,
}

/// Relative intensity of `tissue` in `contrast`.
fn intensity(contrast: Contrast, tissue: Tissue) -> f32 {
    use Tissue::*;
    // white, grey, CSF, edema, enhancing, necrosis
    let table = match contrast {
        Contrast::Flair => [0.75, 1.0, 0.15, 1.7, 1.3, 0.6],
        Contrast::T1 => [1.0, 0.7, 0.25, 0.6, 0.8, 0.3],
        Contrast::T1ce => [1.0, 0.7, 0.25, 0.6, 1.9, 0.3],
        Contrast::T2 => [0.6, 0.85, 1.6, 1.5, 1.1, 1.8],
    };
    match tissue {
        Background => 0.0,
        White => table[0],
        Grey => table[1],
        Csf => table[2],
        Edema => table[3],
        Enhancing => table[4],
        Necrosis => table[5],
    }
}

/// The tissue of subject `k` at display position `[c, r, p]` of a volume of `dims`.
///
/// Head size and shape, the brain's place in the volume and the lesion's side, place and size
/// vary with `k` along low-discrepancy sequences (the fractional parts of `(k + 1)·α` for a few
/// irrational `α`), so that no two subjects of a sample folder share their geometry.
fn tissue(k: usize, lesion: bool, dims: [usize; 3], [c, r, p]: [usize; 3]) -> Tissue {
    let [nx, ny, nz] = dims.map(|d| d as f32);
    let u = |alpha: f32| ((k as f32 + 1.0) * alpha).fract();
    // Voxels from the volume's centre: x to the patient's left, y posterior, z up.
    let (x, y, z) = (
        c as f32 + 0.5 - nx / 2.0,
        r as f32 + 0.5 - ny / 2.0,
        p as f32 + 0.5 - nz / 2.0,
    );
    let (ax, ay, az) = (
        nx * (0.28 + 0.06 * u(0.618_034)),
        ny * (0.36 + 0.06 * u(0.754_878)),
        nz * (0.36 + 0.06 * u(0.569_840)),
    );
    let (bx, by, bz) = (
        x - nx * 0.06 * (u(0.414_214) - 0.5),
        y - ny * (0.03 + 0.04 * (u(0.732_051) - 0.5)),
        z + 0.04 * nz,
    );
    let d = ((bx / ax).powi(2) + (by / ay).powi(2) + (bz / az).powi(2)).sqrt();
    if d >= 1.0 {
        return Tissue::Background;
    }
    if lesion {
        let side = if k.is_multiple_of(2) { 1.0 } else { -1.0 };
        let (lx, ly, lz) = (
            bx - side * ax * (0.25 + 0.2 * u(0.236_068)),
            by - ay * 0.8 * (u(0.381_966) - 0.5),
            bz - az * 0.5 * (u(0.645_751) - 0.5),
        );
        let radius = ax.min(az) * (0.38 + 0.12 * u(0.162_278));
        let dl = (lx * lx + ly * ly + lz * lz).sqrt();
        if dl < 0.35 * radius {
            return Tissue::Necrosis;
        }
        if dl < 0.65 * radius {
            return Tissue::Enhancing;
        }
        if dl < radius {
            return Tissue::Edema;
        }
    }
    let ventricle = |cx: f32| {
        ((bx - cx * ax) / (0.12 * ax)).powi(2)
            + ((by + 0.05 * ay) / (0.3 * ay)).powi(2)
            + ((bz - 0.1 * az) / (0.2 * az)).powi(2)
            < 1.0
    };
    if ventricle(0.15) || ventricle(-0.15) {
        Tissue::Csf
    } else if d > 0.82 {
        Tissue::Grey
    } else {
        Tissue::White
    }
}

/// Writes subject `k` into `dir/<name>/`.
pub(crate) fn write_subject(
    dir: &Path,
    k: usize,
    subject: &SampleSubject,
    dims: [usize; 3],
) -> Result<(), BratsError> {
    let folder = dir.join(&subject.name);
    std::fs::create_dir_all(&folder).map_err(|source| BratsError::Io {
        path: folder.clone(),
        source,
    })?;
    // Per voxel (first axis fastest): its display position and its tissue.
    let mut display = Vec::with_capacity(dims.iter().product());
    volume_from_fn(dims, |v| {
        display.push(display_of(subject.grid, dims, v));
        0.0
    });
    let tissues: Vec<Tissue> = display
        .iter()
        .map(|&at| tissue(k, subject.lesion, dims, at))
        .collect();
    let header = header(subject.grid, dims);
    let gain = 500.0 + 40.0 * k as f32;
    for contrast in Contrast::ALL {
        let image: Vec<f32> = tissues
            .iter()
            .zip(&display)
            .map(|(&t, &[c, r, p])| {
                if t == Tissue::Background {
                    return 0.0;
                }
                // A fixed texture of ±3 %, so that the brain is not flat (a function of the
                // anatomical position, so that both grids hold the same subject).
                let texture = ((c * 7919 + r * 104_729 + p * 1_299_709 + k * 31) % 1000) as f32
                    / 1000.0
                    - 0.5;
                (gain * intensity(contrast, t) * (1.0 + 0.06 * texture)).round()
            })
            .collect();
        let path = folder.join(subject.naming.file_name(
            &subject.name,
            Some(contrast),
            subject.gzip,
        ));
        write_volume(&path, &header, dims, &image, VoxelType::Int16)?;
    }
    let enhancing = match subject.naming {
        Naming::Brats2021 => 4.0,
        Naming::Brats2023 => 3.0,
    };
    let seg: Vec<f32> = tissues
        .iter()
        .map(|t| match t {
            Tissue::Necrosis => 1.0,
            Tissue::Edema => 2.0,
            Tissue::Enhancing => enhancing,
            _ => 0.0,
        })
        .collect();
    let path = folder.join(subject.naming.file_name(&subject.name, None, subject.gzip));
    write_volume(&path, &header, dims, &seg, VoxelType::Uint8)
}
