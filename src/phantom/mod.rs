//! A deterministic generator of synthetic BraTS-like brain slices, each with normal labels,
//! abnormal labels and — for every diseased slice — its healthy twin.
//!
//! Real BraTS data cannot be shipped, and no real data set shows what a lesion's tissue would
//! look like without the lesion. The phantom does: it draws a subject's anatomy, cuts it at an
//! axial level, optionally grows a glioma-like lesion in it (edema ⊃ enhancing rim ⊃ necrotic
//! core, with mass effect on the ventricles and midline), and renders the slice twice with the
//! same randomised appearance: once with the lesion (`image`) and once with the tissue that would
//! be there instead (`healthy_twin`). Outside the lesion the two are identical.
//!
//! - **Random access and determinism**: slice `index` of seed `s` is a pure function of
//!   `(s, index, config)`, computed with ChaCha8 streams and IEEE arithmetic only (no platform
//!   math library), so it is the same on every machine and can be drawn in any order.
//! - **Subjects and levels**: slices `16·k .. 16·k + 15` belong to subject `k` and spread over
//!   its levels from the skull base (0: cerebellum, small cerebrum) to the vertex (1: small
//!   cerebral cross-section); the lateral ventricles show at mid levels.
//! - **Labels**: normal labels as in [`NORMAL_LABELS`], abnormal labels as in
//!   [`ABNORMAL_LABELS`]; the patient's left is on the image's right (radiological convention).
//! - **Appearance**: per-sample intensities, bias field, noise, blur, contrast, rotation and scale
//!   ([`Appearance`]), the same for a slice and its twin; labels follow the same geometry.
//!
//! ```
//! use diptych::phantom::{PhantomConfig, PhantomGenerator};
//!
//! let generator = PhantomGenerator::new(1, PhantomConfig::default());
//! let slice = generator.slice(42);
//! assert_eq!(slice.image.len(), slice.rows * slice.cols);
//! assert_eq!(slice, generator.slice(42));
//! ```

mod anatomy;
mod appearance;
mod contact_sheet;
mod lesion;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::synthetic::SliceGenerator;

pub use crate::synthetic::SyntheticSlice;
pub use appearance::Appearance;
pub use contact_sheet::write_contact_sheet;

use crate::synthetic::field::{blur, store_pair};
use crate::synthetic::shape::{self, Point};
use anatomy::{Subject, compartment};
use appearance::Rendering;
use lesion::{Lesion, abnormal};

/// Names of the normal labels; the index is the value in a normal label map.
pub const NORMAL_LABELS: [&str; 7] = [
    "background",
    "left_cerebrum",
    "right_cerebrum",
    "left_cerebellum",
    "right_cerebellum",
    "left_ventricle",
    "right_ventricle",
];

pub use crate::synthetic::ABNORMAL_LABELS;

/// Number of consecutive slice indices that belong to one subject.
pub const SLICES_PER_SUBJECT: u64 = 16;

/// Configuration of a phantom generator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhantomConfig {
    /// Rows of each slice (at least 32).
    pub rows: usize,
    /// Columns of each slice (at least 32).
    pub cols: usize,
    /// Share of slices without a lesion, in [0, 1].
    pub healthy_fraction: f32,
    /// Ranges of the per-sample appearance randomisation.
    pub appearance: Appearance,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        Self {
            rows: 192,
            cols: 160,
            healthy_fraction: 0.3,
            appearance: Appearance::default(),
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

/// A ChaCha8 stream keyed by `(seed, id, stream)`.
fn stream(seed: u64, id: u64, which: Stream) -> ChaCha8Rng {
    shape::keyed_stream(seed, id, which as u64, b"diptych\0")
}

/// Everything random about one slice except its noise.
struct Plan {
    index: u64,
    subject: u64,
    level: f32,
    section: anatomy::Section,
    lesion: Option<Lesion>,
    rendering: Rendering,
}

/// Deterministic, random-access generator of phantom slices.
#[derive(Debug, Clone)]
pub struct PhantomGenerator {
    seed: u64,
    config: PhantomConfig,
}

impl PhantomGenerator {
    /// A generator of the slices of `seed` under `config`.
    ///
    /// # Panics
    /// If `config.rows` or `config.cols` is below 32.
    pub fn new(seed: u64, config: PhantomConfig) -> Self {
        assert!(
            config.rows >= 32 && config.cols >= 32,
            "phantom slices need at least 32×32 pixels, got {}×{}",
            config.rows,
            config.cols
        );
        Self { seed, config }
    }

    /// The seed of this generator.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The configuration of this generator.
    pub fn config(&self) -> &PhantomConfig {
        &self.config
    }

    /// The subject that slice `index` belongs to.
    pub fn subject_of(index: u64) -> u64 {
        index / SLICES_PER_SUBJECT
    }

    /// The axial level of slice `index`: slot `index % 16` of its subject, jittered within the
    /// slot, so a subject's slices run from the skull base to the vertex.
    pub fn level_of(&self, index: u64) -> f32 {
        let slot = (index % SLICES_PER_SUBJECT) as f32;
        let jitter = shape::uniform(&mut stream(self.seed, index, Stream::Level), 0.0, 1.0);
        ((slot + jitter) / SLICES_PER_SUBJECT as f32).min(1.0)
    }

    /// Generates slice `index` (the same slice for the same seed, config and index).
    pub fn slice(&self, index: u64) -> SyntheticSlice {
        self.render(&self.plan(index))
    }

    /// Draws everything random about slice `index` except the noise.
    fn plan(&self, index: u64) -> Plan {
        let subject = Self::subject_of(index);
        let level = self.level_of(index);
        let anatomy = Subject::sample(&mut stream(self.seed, subject, Stream::Subject));
        let section = anatomy.section(level);
        let healthy = shape::uniform(&mut stream(self.seed, index, Stream::Health), 0.0, 1.0)
            < self.config.healthy_fraction;
        let lesion = (!healthy)
            .then(|| Lesion::sample(&mut stream(self.seed, index, Stream::Lesion), &section));
        let rendering = Rendering::sample(
            &self.config.appearance,
            &mut stream(self.seed, index, Stream::Rendering),
        );
        Plan {
            index,
            subject,
            level,
            section,
            lesion,
            rendering,
        }
    }

    /// Renders a planned slice: labels, the lesion and its twin, bias, noise and blur.
    fn render(&self, plan: &Plan) -> SyntheticSlice {
        let (rows, cols) = (self.config.rows, self.config.cols);
        let Plan {
            index,
            subject: subject_id,
            level,
            ref section,
            ref lesion,
            ref rendering,
        } = *plan;

        // Pixel → canonical frame: centre, undo rotation and scale, undo the head's shift.
        let n = rows * cols;
        let inv_unit = 1.0 / ((rows as f32 * 0.5).min(cols as f32 * 0.6) * rendering.scale);
        let (sin, cos) = rendering.rotation;
        let (shift_x, shift_y) = rendering.shift;
        let (half_rows, half_cols) = (rows as f32 * 0.5, cols as f32 * 0.5);

        let mut normal_labels = vec![0u8; n];
        let mut abnormal_labels = vec![0u8; n];
        let mut twin_field = vec![0f32; n];
        let mut lesion_field = lesion.as_ref().map(|_| vec![0f32; n]);
        let mut in_head = vec![false; n];
        for r in 0..rows {
            let y = r as f32 + 0.5 - half_rows;
            for c in 0..cols {
                let i = r * cols + c;
                let x = c as f32 + 0.5 - half_cols;
                let p = Point::new(
                    (cos * x + sin * y) * inv_unit - shift_x,
                    (cos * y - sin * x) * inv_unit - shift_y,
                );
                let (q, squeeze) = match lesion {
                    Some(l) => l.mass.deform(p),
                    None => (p, 1.0),
                };
                let (tissue, normal) = section.tissue_at(p, q, squeeze);
                let value = rendering.of(tissue);
                normal_labels[i] = normal;
                twin_field[i] = value;
                in_head[i] = tissue != anatomy::Tissue::Background;
                if let (Some(l), Some(field)) = (lesion, &mut lesion_field) {
                    let label = if normal != 0 && compartment(normal) == l.compartment {
                        l.label_at(p)
                    } else {
                        0
                    };
                    abnormal_labels[i] = label;
                    field[i] = match label {
                        0 => value,
                        abnormal::NECROTIC_CORE if l.non_enhancing() => rendering.non_enhancing,
                        _ => rendering.lesion[label as usize],
                    };
                }
            }
        }
        let has_lesion = abnormal_labels.iter().any(|&l| l != 0);

        blur(&mut twin_field, rows, cols, rendering.blur);
        if let Some(field) = &mut lesion_field {
            blur(field, rows, cols, rendering.blur);
        }

        let (image, healthy_twin) = store_pair(
            rows,
            cols,
            &twin_field,
            lesion_field.as_deref(),
            &abnormal_labels,
            &in_head,
            &rendering.bias,
            &mut stream(self.seed, index, Stream::Noise),
            |value, bias, z| rendering.stored(value, bias, z),
        );

        SyntheticSlice {
            index,
            subject: subject_id,
            level,
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

impl SliceGenerator for PhantomGenerator {
    fn name(&self) -> &'static str {
        "phantom"
    }

    fn normal_labels(&self) -> &'static [&'static str] {
        &NORMAL_LABELS
    }

    fn slices_per_subject(&self) -> u64 {
        SLICES_PER_SUBJECT
    }

    fn slice(&self, index: u64) -> SyntheticSlice {
        PhantomGenerator::slice(self, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean distance (pixels) from `centre` to the pixels with one of `labels`, and their count.
    fn spread(slice: &SyntheticSlice, labels: &[u8], centre: (f32, f32)) -> (f32, usize) {
        let (mut sum, mut n) = (0.0, 0);
        for (k, l) in slice.normal_labels.iter().enumerate() {
            if labels.contains(l) {
                let (r, c) = ((k / slice.cols) as f32, (k % slice.cols) as f32);
                sum += ((r - centre.0).powi(2) + (c - centre.1).powi(2)).sqrt();
                n += 1;
            }
        }
        (sum / n.max(1) as f32, n)
    }

    #[test]
    fn mass_effect_pushes_the_ventricles_away_from_the_lesion() {
        let generator = PhantomGenerator::new(
            21,
            PhantomConfig {
                healthy_fraction: 0.0,
                appearance: Appearance::fixed(),
                ..PhantomConfig::default()
            },
        );
        let mut checked = 0;
        for index in 0..400 {
            let plan = generator.plan(index);
            if !(0.45..0.62).contains(&plan.level) {
                continue;
            }
            let with = generator.render(&plan);
            let without = generator.render(&Plan {
                lesion: plan.lesion.as_ref().map(Lesion::without_mass_effect),
                ..generator.plan(index)
            });
            // Lesion centroid in pixels.
            let (mut rs, mut cs, mut n) = (0.0, 0.0, 0.0);
            for (k, &a) in with.abnormal_labels.iter().enumerate() {
                if a != 0 {
                    rs += (k / with.cols) as f32;
                    cs += (k % with.cols) as f32;
                    n += 1.0;
                }
            }
            let centre = (rs / n, cs / n);
            let (far, count) = spread(&with, &[5, 6], centre);
            let (near, _) = spread(&without, &[5, 6], centre);
            assert!(
                far > near,
                "slice {index}: ventricles at {far:.1} px with mass effect, {near:.1} without"
            );
            assert!(count > 0, "slice {index}: the ventricles vanished");
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} mid-level slices");
    }
}
