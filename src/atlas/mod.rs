//! Real anatomy for synthetic subjects: the MNI152 2009 tissue-probability maps, deformed per
//! subject in the manner of SynthSeg, rendered with random contrasts, with glioma-like lesions
//! implanted and the healthy twin of every diseased slice.
//!
//! The phantom ([`crate::phantom`]) draws a cartoon of a brain; a model trained on it alone learns
//! that cartoon. This source keeps the folds, ventricles and proportions of a real brain (the
//! ICBM 2009a nonlinear symmetric template, whose grey- and white-matter maps ship inside
//! nilearn's wheel on PyPI; `make deps-atlas` unpacks them into the cache, nothing is fetched at
//! run time) and randomises everything a scanner and a population vary:
//!
//! - **Subjects** ([`SubjectWarp`](warp)): per subject a random affine (head size and shape,
//!   pitch, roll and yaw) and a smooth non-linear displacement of a few millimetres. Slices
//!   `16·k .. 16·k + 15` belong to subject `k` and spread over its axial levels, from the lowest
//!   plane with a sizeable brain section (level 0) to the vertex (level 1).
//! - **Appearance** ([`Rendering`](appearance)): T1-, T2- or FLAIR-like contrast with random
//!   tissue intensities, a smooth bias field, blur, sometimes a thicker acquisition (a box
//!   average along one axis), noise, in-plane rotation, scale and shift. Images are skull-stripped
//!   like BraTS: background is 0.
//! - **Lesions** ([`Lesion`](lesion)): edema around a core that may be enhancing (rim or solid)
//!   or not, with or without a necrotic centre, irregular outlines, hypo- or hyperintense edema
//!   through which the anatomy shows, textured, with mass effect on the tissue around. The
//!   healthy twin is the same subject, level, mass effect, rendering and noise without the lesion;
//!   outside the lesion the two are identical.
//! - **Labels**: normal labels are the dominant tissue by hemisphere ([`NORMAL_LABELS`]; the
//!   patient's left on the image's right), taken from the anatomy the twin shows; abnormal labels
//!   are BraTS's ([`ABNORMAL_LABELS`](crate::synthetic::ABNORMAL_LABELS)).
//!
//! Slice `index` of seed `s` is a pure function of `(s, index, config)` and the maps, computed
//! with IEEE arithmetic only, like the phantom.

mod appearance;
mod lesion;
mod maps;
mod warp;

use std::path::PathBuf;
use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::synthetic::field::{blur, box_along, store_pair};
use crate::synthetic::shape::{Point, keyed_stream, uniform};
use crate::synthetic::{SliceGenerator, SyntheticSlice};

pub use maps::{AtlasMaps, GREY_MATTER_FILE, Tissues, WHITE_MATTER_FILE};

use appearance::Rendering;
use lesion::{Lesion, LesionLook};
use warp::SubjectWarp;

/// Names of the atlas source's normal labels (dominant tissue by hemisphere); the index is the
/// value in a normal label map.
pub const NORMAL_LABELS: [&str; 7] = [
    "background",
    "left_grey_matter",
    "right_grey_matter",
    "left_white_matter",
    "right_white_matter",
    "left_csf",
    "right_csf",
];

/// Number of consecutive slice indices that belong to one atlas subject.
pub const SLICES_PER_SUBJECT: u64 = 16;

/// World y (mm) of the middle of the brain, front to back, in the template.
const BRAIN_CENTRE_Y: f32 = -17.0;

/// Why the tissue maps cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AtlasError {
    /// A map file is missing.
    #[error(
        "MNI152 tissue map {0} not found: run `make deps-atlas` (it unpacks the maps from \
         nilearn's wheel into the cache) or point DIPTYCH_ATLAS_DIR at a folder holding them"
    )]
    Missing(PathBuf),
    /// A map cannot be decoded.
    #[error("cannot read NIfTI map {path}: {source}")]
    Nifti {
        /// The file.
        path: PathBuf,
        /// Why.
        source: nifti::NiftiError,
    },
    /// A map is not what the source expects.
    #[error("{path}: {what}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Configuration of an atlas generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AtlasConfig {
    /// Rows of each slice (at least 32).
    pub rows: usize,
    /// Columns of each slice (at least 32).
    pub cols: usize,
    /// Share of slices without a lesion, in [0, 1].
    pub healthy_fraction: f32,
}

impl Default for AtlasConfig {
    fn default() -> Self {
        Self {
            rows: 192,
            cols: 160,
            healthy_fraction: 0.3,
        }
    }
}

/// The independent random streams of one slice or subject.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
enum Stream {
    Subject = 1,
    Level,
    Health,
    Lesion,
    Rendering,
    Noise,
}

/// Deterministic, random-access generator of atlas-based slices.
#[derive(Debug, Clone)]
pub struct AtlasGenerator {
    maps: Arc<AtlasMaps>,
    seed: u64,
    config: AtlasConfig,
}

/// Everything random about one slice except its noise.
struct Plan {
    index: u64,
    subject: u64,
    level: f32,
    z: f32,
    warp: SubjectWarp,
    rendering: Rendering,
    lesion: Option<Lesion>,
}

impl AtlasGenerator {
    /// A generator of the slices of `seed` from `maps` under `config`.
    ///
    /// # Panics
    /// If `config.rows` or `config.cols` is below 32.
    pub fn new(maps: Arc<AtlasMaps>, seed: u64, config: AtlasConfig) -> Self {
        assert!(
            config.rows >= 32 && config.cols >= 32,
            "atlas slices need at least 32×32 pixels, got {}×{}",
            config.rows,
            config.cols
        );
        Self { maps, seed, config }
    }

    /// The configuration of this generator.
    pub fn config(&self) -> &AtlasConfig {
        &self.config
    }

    fn stream(&self, id: u64, which: Stream) -> ChaCha8Rng {
        keyed_stream(self.seed, id, which as u64, b"atlas\0\0\0")
    }

    /// Generates slice `index`.
    pub fn slice(&self, index: u64) -> SyntheticSlice {
        self.render(&self.plan(index))
    }

    /// The template point shown at frame position `p` (mm) of a slice at world height `z`.
    #[inline]
    fn template_point(warp: &SubjectWarp, p: Point, z: f32) -> [f32; 3] {
        // The image's right is the patient's left (−x); down the image is posterior (−y).
        warp.apply([-p.x, BRAIN_CENTRE_Y - p.y, z])
    }

    fn plan(&self, index: u64) -> Plan {
        let subject = index / SLICES_PER_SUBJECT;
        let slot = (index % SLICES_PER_SUBJECT) as f32;
        let jitter = uniform(&mut self.stream(index, Stream::Level), 0.0, 1.0);
        let level = ((slot + jitter) / SLICES_PER_SUBJECT as f32).min(1.0);
        let (z0, z1) = self.maps.z_range();
        let z = z0 + level * (z1 - z0);
        let warp = SubjectWarp::sample(&mut self.stream(subject, Stream::Subject));
        let rendering = Rendering::sample(&mut self.stream(index, Stream::Rendering));
        let healthy = uniform(&mut self.stream(index, Stream::Health), 0.0, 1.0)
            < self.config.healthy_fraction;
        let lesion = if healthy {
            None
        } else {
            let mut rng = self.stream(index, Stream::Lesion);
            let look = LesionLook::sample(&mut rng, rendering.bright_fluid(), rendering.csf);
            self.lesion_site(&mut rng, &warp, z)
                .map(|at| Lesion::sample(&mut rng, at, look))
        };
        Plan {
            index,
            subject,
            level,
            z,
            warp,
            rendering,
            lesion,
        }
    }

    /// A point of cerebral parenchyma in the slice's frame (mm), if the slice has one.
    fn lesion_site(&self, rng: &mut ChaCha8Rng, warp: &SubjectWarp, z: f32) -> Option<Point> {
        for _ in 0..400 {
            let p = Point::new(
                70.0 * (2.0 * rng.random::<f32>() - 1.0),
                90.0 * (2.0 * rng.random::<f32>() - 1.0),
            );
            let [x, y, zt] = Self::template_point(warp, p, z);
            let t = self.maps.sample(x, y, zt);
            if t.grey + t.white >= 0.85 && t.white >= 0.3 {
                return Some(p);
            }
        }
        None
    }

    fn render(&self, plan: &Plan) -> SyntheticSlice {
        let (rows, cols) = (self.config.rows, self.config.cols);
        let n = rows * cols;
        let rendering = &plan.rendering;
        let (sin, cos) = rendering.rotation;
        let (shift_x, shift_y) = rendering.shift;
        let (half_rows, half_cols) = (rows as f32 * 0.5, cols as f32 * 0.5);

        let mut normal_labels = vec![0u8; n];
        let mut abnormal_labels = vec![0u8; n];
        let mut twin_field = vec![0f32; n];
        let mut lesion_field = plan.lesion.as_ref().map(|_| vec![0f32; n]);
        let mut in_brain = vec![false; n];
        for r in 0..rows {
            let y = (r as f32 + 0.5 - half_rows) * rendering.spacing;
            for c in 0..cols {
                let i = r * cols + c;
                let x = (c as f32 + 0.5 - half_cols) * rendering.spacing;
                let p = Point::new(cos * x + sin * y - shift_x, cos * y - sin * x - shift_y);
                let q = plan.lesion.as_ref().map_or(p, |l| l.mass.deform(p));
                let [tx, ty, tz] = Self::template_point(&plan.warp, q, plan.z);
                let tissues = self.maps.sample(tx, ty, tz);
                let value = rendering.of(&tissues);
                let brain = tissues.brain();
                twin_field[i] = value;
                in_brain[i] = brain >= 0.05;
                normal_labels[i] = normal_label(&tissues, tx);
                if let (Some(lesion), Some(field)) = (&plan.lesion, &mut lesion_field) {
                    let label = if brain >= 0.5 { lesion.label_at(p) } else { 0 };
                    abnormal_labels[i] = label;
                    field[i] = if label == 0 {
                        value
                    } else {
                        lesion.value(p, label, value, rendering.white)
                    };
                }
            }
        }
        let has_lesion = abnormal_labels.iter().any(|&l| l != 0);

        for field in std::iter::once(&mut twin_field).chain(lesion_field.as_mut()) {
            box_along(field, rows, cols, rendering.thick, rendering.thick_rows);
            blur(field, rows, cols, rendering.blur);
        }

        let (image, healthy_twin) = store_pair(
            rows,
            cols,
            &twin_field,
            lesion_field.as_deref(),
            &abnormal_labels,
            &in_brain,
            &rendering.bias,
            &mut self.stream(plan.index, Stream::Noise),
            |value, bias, z| rendering.stored(value, bias, z),
        );

        SyntheticSlice {
            index: plan.index,
            subject: plan.subject,
            level: plan.level,
            rows,
            cols,
            image,
            healthy_twin,
            normal_labels,
            abnormal_labels,
            has_lesion,
        }
    }
}

/// The normal label of a mixture of tissues at template x `x`: the dominant tissue where brain
/// makes up at least half of the point, by hemisphere (x > 0 is the patient's right).
#[inline]
fn normal_label(t: &Tissues, x: f32) -> u8 {
    if t.brain() < 0.5 {
        return 0;
    }
    let tissue = if t.grey >= t.white && t.grey >= t.csf {
        0
    } else if t.white >= t.csf {
        1
    } else {
        2
    };
    1 + 2 * tissue + u8::from(x > 0.0)
}

impl SliceGenerator for AtlasGenerator {
    fn name(&self) -> &'static str {
        "anatomy"
    }

    fn normal_labels(&self) -> &'static [&'static str] {
        &NORMAL_LABELS
    }

    fn slices_per_subject(&self) -> u64 {
        SLICES_PER_SUBJECT
    }

    fn slice(&self, index: u64) -> SyntheticSlice {
        AtlasGenerator::slice(self, index)
    }
}

#[cfg(test)]
mod tests;
