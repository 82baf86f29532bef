//! A deterministic generator of synthetic BraTS-like brain slices (first version: simple shapes).

use std::path::Path;

use crate::preprocess::{Photometric, RawFrame};

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

/// Names of the abnormal labels; the index is the value in an abnormal label map.
pub const ABNORMAL_LABELS: [&str; 4] = ["background", "necrotic_core", "edema", "enhancing_tumor"];

/// Ranges of the per-sample appearance randomisation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Appearance {
    /// Maximum rotation, degrees.
    pub rotation_degrees: f32,
}

impl Default for Appearance {
    fn default() -> Self {
        Self { rotation_degrees: 10.0 }
    }
}

impl Appearance {
    /// No randomisation: one fixed rendering.
    pub fn fixed() -> Self {
        Self { rotation_degrees: 0.0 }
    }
}

/// Configuration of a phantom generator.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhantomConfig {
    /// Rows of each slice.
    pub rows: usize,
    /// Columns of each slice.
    pub cols: usize,
    /// Share of slices without a lesion.
    pub healthy_fraction: f32,
    /// Appearance randomisation.
    pub appearance: Appearance,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        Self { rows: 192, cols: 160, healthy_fraction: 0.3, appearance: Appearance::default() }
    }
}

/// One generated slice with its labels and healthy twin.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomSlice {
    /// Index of the slice in the generator's sequence.
    pub index: u64,
    /// Subject the slice belongs to.
    pub subject: u64,
    /// Axial level, 0 = skull base, 1 = vertex.
    pub level: f32,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Raw MR-like stored values.
    pub image: Vec<f32>,
    /// The same anatomy and rendering without the lesion.
    pub healthy_twin: Vec<f32>,
    /// Normal label map.
    pub normal_labels: Vec<u8>,
    /// Abnormal label map.
    pub abnormal_labels: Vec<u8>,
    /// Whether the slice has a lesion.
    pub has_lesion: bool,
}

impl PhantomSlice {
    /// The image as a stored frame.
    pub fn raw_frame(&self) -> RawFrame<'_> {
        RawFrame { rows: self.rows, cols: self.cols, pixels: &self.image, rescale_slope: 1.0, rescale_intercept: 0.0, photometric: Photometric::Monochrome2 }
    }
    /// The healthy twin as a stored frame.
    pub fn twin_frame(&self) -> RawFrame<'_> {
        RawFrame { rows: self.rows, cols: self.cols, pixels: &self.healthy_twin, rescale_slope: 1.0, rescale_intercept: 0.0, photometric: Photometric::Monochrome2 }
    }
}

/// Deterministic, random-access generator of phantom slices.
#[derive(Debug, Clone)]
pub struct PhantomGenerator {
    seed: u64,
    config: PhantomConfig,
}

impl PhantomGenerator {
    /// A generator for `seed` and `config`.
    pub fn new(seed: u64, config: PhantomConfig) -> Self {
        Self { seed, config }
    }

    /// The slice at `index`.
    pub fn slice(&self, index: u64) -> PhantomSlice {
        let (rows, cols) = (self.config.rows, self.config.cols);
        let h = (self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let has_lesion = (h >> 40) as f32 / (1u64 << 24) as f32 >= self.config.healthy_fraction;
        let mut image = vec![0f32; rows * cols];
        let mut normal_labels = vec![0u8; rows * cols];
        let mut abnormal_labels = vec![0u8; rows * cols];
        let (cy, cx) = (rows as f32 / 2.0, cols as f32 / 2.0);
        for r in 0..rows {
            for c in 0..cols {
                let (y, x) = ((r as f32 - cy) / (0.4 * rows as f32), (c as f32 - cx) / (0.4 * cols as f32));
                let i = r * cols + c;
                if x * x + y * y < 1.0 {
                    normal_labels[i] = if x > 0.0 { 1 } else { 2 };
                    image[i] = 2000.0;
                }
            }
        }
        let twin = image.clone();
        if has_lesion {
            for r in 0..rows {
                for c in 0..cols {
                    let (y, x) = ((r as f32 - cy) / 10.0, (c as f32 - cx - 20.0) / 10.0);
                    let i = r * cols + c;
                    if x * x + y * y < 1.0 {
                        abnormal_labels[i] = 2;
                        image[i] = 3000.0;
                    }
                }
            }
        }
        PhantomSlice { index, subject: index / 16, level: (index % 16) as f32 / 16.0, rows, cols, image, healthy_twin: twin, normal_labels, abnormal_labels, has_lesion }
    }
}

/// Writes a PNG grid of slices with label overlays.
pub fn write_contact_sheet(slices: &[PhantomSlice], path: &Path) -> Result<(), image::ImageError> {
    let (rows, cols) = slices.first().map(|s| (s.rows, s.cols)).unwrap_or((1, 1));
    let mut img = image::GrayImage::new(cols as u32, (rows * slices.len().max(1)) as u32);
    for (k, s) in slices.iter().enumerate() {
        for (i, v) in s.image.iter().enumerate() {
            img.put_pixel((i % cols) as u32, (k * rows + i / cols) as u32, image::Luma([(v / 16.0).min(255.0) as u8]));
        }
    }
    img.save(path)
}
