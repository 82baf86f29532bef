//! The MNI152 2009 tissue-probability maps, read from NIfTI files and sampled in world
//! coordinates.
//!
//! nilearn's wheel ships the grey- and white-matter maps of the ICBM 2009a nonlinear symmetric
//! template (`mni_icbm152_{gm,wm}_tal_nlin_sym_09a_converted.nii.gz`: 197×233×189 voxels of
//! 1 mm, probabilities as bytes 0–255). No CSF map ships with them, so the CSF is derived as
//! *brain minus both*: the brain is the grey and white matter closed over a few millimetres
//! (a box average of their sum, doubled and clipped), which fills the ventricles and the sulci;
//! whatever of it is neither grey nor white matter is CSF.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use nifti::{NiftiObject, ReaderOptions};

use super::AtlasError;

/// File name of the grey-matter map inside the atlas folder.
pub const GREY_MATTER_FILE: &str = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz";
/// File name of the white-matter map inside the atlas folder.
pub const WHITE_MATTER_FILE: &str = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz";

/// Half-width (voxels) of the box average that closes grey + white matter into the brain.
const CLOSING_RADIUS: usize = 4;

/// Tissue probabilities at one point: grey matter, white matter, CSF (each in [0, 1], sum ≤ 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tissues {
    /// Grey matter.
    pub grey: f32,
    /// White matter.
    pub white: f32,
    /// Cerebrospinal fluid.
    pub csf: f32,
}

impl Tissues {
    /// Probability of any brain tissue.
    pub fn brain(&self) -> f32 {
        self.grey + self.white + self.csf
    }
}

/// The three tissue maps on the template's voxel grid.
#[derive(Debug)]
pub struct AtlasMaps {
    dims: [usize; 3],
    /// World coordinate (mm) of voxel (0, 0, 0); the grid is axis-aligned with 1 mm voxels.
    origin: [f32; 3],
    /// Per voxel, `[grey, white, csf]` as bytes 0–255, x fastest.
    voxels: Vec<[u8; 3]>,
    /// World z (mm) of the lowest and highest axial planes with a sizeable brain section.
    z_range: (f32, f32),
    dir: PathBuf,
}

impl AtlasMaps {
    /// Where the maps are looked for: `DIPTYCH_ATLAS_DIR`, else `~/.cache/diptych/mni152`
    /// (where `make deps-atlas` unpacks them).
    pub fn default_dir() -> PathBuf {
        std::env::var_os("DIPTYCH_ATLAS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/diptych/mni152")
            })
    }

    /// The maps of `dir`, read once per process and shared: the training source and its
    /// held-out validation, or the query and reference generators of an evaluation, use one copy
    /// (reading and deriving them takes ~0.4 s and 26 MB).
    pub fn shared(dir: &Path) -> Result<Arc<Self>, AtlasError> {
        static LOADED: OnceLock<Mutex<Vec<Arc<AtlasMaps>>>> = OnceLock::new();
        let loaded = LOADED.get_or_init(Default::default);
        let mut loaded = loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(maps) = loaded.iter().find(|m| m.dir == dir) {
            return Ok(Arc::clone(maps));
        }
        let maps = Arc::new(Self::open(dir)?);
        loaded.push(Arc::clone(&maps));
        Ok(maps)
    }

    /// Reads the grey- and white-matter maps from `dir` and derives the CSF.
    pub fn open(dir: &Path) -> Result<Self, AtlasError> {
        let (grey, header) = read_map(&dir.join(GREY_MATTER_FILE))?;
        let (white, white_header) = read_map(&dir.join(WHITE_MATTER_FILE))?;
        if header.dims != white_header.dims || header.origin != white_header.origin {
            return Err(AtlasError::Shape {
                path: dir.join(WHITE_MATTER_FILE),
                what: "the grey- and white-matter maps are on different grids".into(),
            });
        }
        let dims = header.dims;
        let sum: Vec<f32> = grey
            .iter()
            .zip(&white)
            .map(|(&g, &w)| (g as f32 + w as f32) / 255.0)
            .collect();
        let closed = box_average(&sum, dims, CLOSING_RADIUS);
        let voxels: Vec<[u8; 3]> = (0..sum.len())
            .map(|i| {
                let brain = (2.0 * closed[i]).clamp(0.0, 1.0).max(sum[i].min(1.0));
                let csf = ((brain - sum[i]) * 255.0).clamp(0.0, 255.0);
                [grey[i], white[i], (csf + 0.5) as u8]
            })
            .collect();
        let z_range = brain_levels(&sum, dims, header.origin[2]);
        Ok(Self {
            dims,
            origin: header.origin,
            voxels,
            z_range,
            dir: dir.to_path_buf(),
        })
    }

    /// The folder the maps were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// World z (mm) of the lowest and highest axial planes whose brain section is at least a
    /// tenth of the largest: the range the slices' levels 0..1 span.
    pub fn z_range(&self) -> (f32, f32) {
        self.z_range
    }

    /// Tissue probabilities at a world point (mm, RAS), trilinearly interpolated; zero outside.
    pub fn sample(&self, x: f32, y: f32, z: f32) -> Tissues {
        let fx = x - self.origin[0];
        let fy = y - self.origin[1];
        let fz = z - self.origin[2];
        let [nx, ny, nz] = self.dims;
        if !(fx >= 0.0 && fy >= 0.0 && fz >= 0.0)
            || fx >= (nx - 1) as f32
            || fy >= (ny - 1) as f32
            || fz >= (nz - 1) as f32
        {
            return Tissues::default();
        }
        let (ix, iy, iz) = (fx as usize, fy as usize, fz as usize);
        let (tx, ty, tz) = (fx - ix as f32, fy - iy as f32, fz - iz as f32);
        let mut acc = [0f32; 3];
        for (dz, wz) in [(0, 1.0 - tz), (1, tz)] {
            for (dy, wy) in [(0, 1.0 - ty), (1, ty)] {
                let base = ((iz + dz) * ny + iy + dy) * nx + ix;
                let w = wz * wy;
                let (a, b) = (self.voxels[base], self.voxels[base + 1]);
                for t in 0..3 {
                    acc[t] += w * ((1.0 - tx) * a[t] as f32 + tx * b[t] as f32);
                }
            }
        }
        Tissues {
            grey: acc[0] / 255.0,
            white: acc[1] / 255.0,
            csf: acc[2] / 255.0,
        }
    }
}

/// Grid of one map: its size and the world position of its first voxel.
struct Grid {
    dims: [usize; 3],
    origin: [f32; 3],
}

/// Reads one byte-valued, axis-aligned 1 mm map.
fn read_map(path: &Path) -> Result<(Vec<u8>, Grid), AtlasError> {
    if !path.exists() {
        return Err(AtlasError::Missing(path.to_path_buf()));
    }
    let object = ReaderOptions::new()
        .read_file(path)
        .map_err(|source| AtlasError::Nifti {
            path: path.to_path_buf(),
            source,
        })?;
    let header = object.header();
    let shape = |what: &str| AtlasError::Shape {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    if header.dim[0] != 3 {
        return Err(shape("expected a 3-D volume"));
    }
    let dims = [
        header.dim[1] as usize,
        header.dim[2] as usize,
        header.dim[3] as usize,
    ];
    let rows = [header.srow_x, header.srow_y, header.srow_z];
    for (axis, row) in rows.iter().enumerate() {
        for (k, &v) in row[..3].iter().enumerate() {
            let expected = if k == axis { 1.0 } else { 0.0 };
            if (v - expected).abs() > 1e-3 {
                return Err(shape(
                    "expected an axis-aligned RAS grid of 1 mm voxels (sform)",
                ));
            }
        }
    }
    let origin = [rows[0][3], rows[1][3], rows[2][3]];
    let data = object.into_volume().into_raw_data();
    if data.len() != dims.iter().product::<usize>() || dims.iter().any(|&d| d < 8) {
        return Err(shape("expected one byte per voxel (datatype uint8)"));
    }
    Ok((data, Grid { dims, origin }))
}

/// Separable box average of half-width `radius` (edges clamped).
fn box_average(values: &[f32], dims: [usize; 3], radius: usize) -> Vec<f32> {
    let strides = [1, dims[0], dims[0] * dims[1]];
    let mut current = values.to_vec();
    let mut prefix = Vec::new();
    for (&n, &stride) in dims.iter().zip(&strides) {
        let mut next = current.clone();
        // Every line along this axis starts at a voxel whose coordinate on the axis is 0.
        for outer in 0..values.len() / (stride * n) {
            for inner in 0..stride {
                let start = outer * stride * n + inner;
                prefix.clear();
                prefix.push(0f32);
                for k in 0..n {
                    prefix.push(prefix[k] + current[start + k * stride]);
                }
                for k in 0..n {
                    let (lo, hi) = (k.saturating_sub(radius), (k + radius + 1).min(n));
                    next[start + k * stride] = (prefix[hi] - prefix[lo]) / (hi - lo) as f32;
                }
            }
        }
        current = next;
    }
    current
}

/// World z of the lowest and highest planes with at least a tenth of the largest brain section.
fn brain_levels(sum: &[f32], dims: [usize; 3], z0: f32) -> (f32, f32) {
    let plane = dims[0] * dims[1];
    let areas: Vec<usize> = sum
        .chunks_exact(plane)
        .map(|p| p.iter().filter(|&&v| v > 0.5).count())
        .collect();
    let largest = areas.iter().copied().max().unwrap_or(0);
    let keep = |&(_, &a): &(usize, &usize)| a * 10 >= largest && a > 0;
    let lo = areas.iter().enumerate().find(keep).map_or(0, |(k, _)| k);
    let hi = areas
        .iter()
        .enumerate()
        .rev()
        .find(keep)
        .map_or(0, |(k, _)| k);
    (z0 + lo as f32, z0 + hi as f32)
}
