//! Augmentation by horizontal flip, random scale and small rotation, applied identically to the
//! image, its twin and its label maps (bilinear for intensities, nearest for labels).

use rand::Rng;

use super::Sample;
use crate::config::AugmentConfig;

/// One geometric transform about the image centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Mirror left–right.
    pub flip: bool,
    /// Zoom factor (> 1 enlarges the content).
    pub scale: f32,
    /// Rotation in radians (counter-clockwise on screen).
    pub angle: f32,
}

impl Transform {
    /// The identity.
    pub const IDENTITY: Self = Self {
        flip: false,
        scale: 1.0,
        angle: 0.0,
    };

    /// Source coordinates (row, col) in the input of output pixel (r, c) in an S×S image.
    fn source(&self, r: usize, c: usize, size: usize) -> (f32, f32) {
        let centre = (size as f32 - 1.0) * 0.5;
        let mut dx = c as f32 - centre;
        let dy = r as f32 - centre;
        if self.flip {
            dx = -dx;
        }
        let (sin, cos) = self.angle.sin_cos();
        let sx = (cos * dx - sin * dy) / self.scale;
        let sy = (sin * dx + cos * dy) / self.scale;
        (sy + centre, sx + centre)
    }

    /// Resamples an S×S intensity image bilinearly (outside → 0).
    pub fn apply_image(&self, pixels: &[f32], size: usize) -> Vec<f32> {
        let at = |r: isize, c: isize| -> f32 {
            if r < 0 || c < 0 || r >= size as isize || c >= size as isize {
                0.0
            } else {
                pixels[r as usize * size + c as usize]
            }
        };
        let mut out = vec![0.0; size * size];
        for r in 0..size {
            for c in 0..size {
                let (sr, sc) = self.source(r, c, size);
                let (r0, c0) = (sr.floor(), sc.floor());
                let (fr, fc) = (sr - r0, sc - c0);
                let (r0, c0) = (r0 as isize, c0 as isize);
                let top = at(r0, c0) * (1.0 - fc) + at(r0, c0 + 1) * fc;
                let bottom = at(r0 + 1, c0) * (1.0 - fc) + at(r0 + 1, c0 + 1) * fc;
                out[r * size + c] = (top * (1.0 - fr) + bottom * fr).clamp(0.0, 1.0);
            }
        }
        out
    }

    /// Resamples an S×S label map by nearest neighbour (outside → 0).
    pub fn apply_labels(&self, labels: &[u8], size: usize) -> Vec<u8> {
        let mut out = vec![0u8; size * size];
        for r in 0..size {
            for c in 0..size {
                let (sr, sc) = self.source(r, c, size);
                let (sr, sc) = (sr.round(), sc.round());
                if sr >= 0.0 && sc >= 0.0 && sr < size as f32 && sc < size as f32 {
                    out[r * size + c] = labels[sr as usize * size + sc as usize];
                }
            }
        }
        out
    }

    /// The transformed sample (image, twin and both label maps alike).
    pub fn apply(&self, sample: &Sample) -> Sample {
        let s = sample.size;
        Sample {
            size: s,
            image: self.apply_image(&sample.image, s),
            abnormal: self.apply_labels(&sample.abnormal, s),
            normal: self.apply_labels(&sample.normal, s),
            twin: sample.twin.as_ref().map(|t| self.apply_image(t, s)),
        }
    }
}

/// Draws random transforms within the configured ranges.
#[derive(Debug, Clone)]
pub struct Augmenter {
    config: AugmentConfig,
}

impl Augmenter {
    /// An augmenter for the given ranges.
    pub fn new(config: AugmentConfig) -> Self {
        Self { config }
    }

    /// A random transform.
    pub fn draw(&self, rng: &mut impl Rng) -> Transform {
        let c = &self.config;
        let flip = rng.random::<f32>() < c.flip_probability;
        let scale = 1.0 + c.max_scale * (rng.random::<f32>() * 2.0 - 1.0);
        let angle = c.max_rotation_degrees.to_radians() * (rng.random::<f32>() * 2.0 - 1.0);
        Transform { flip, scale, angle }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        let size = 16;
        let image: Vec<f32> = (0..size * size)
            .map(|i| (i % size) as f32 / size as f32)
            .collect();
        let mut abnormal = vec![0u8; size * size];
        abnormal[5 * size + 3] = 2; // row 5, col 3
        Sample {
            size,
            twin: Some(image.clone()),
            image,
            normal: abnormal.clone(),
            abnormal,
        }
    }

    #[test]
    fn identity_changes_nothing() {
        let s = sample();
        assert_eq!(Transform::IDENTITY.apply(&s), s);
    }

    #[test]
    fn flip_mirrors_image_and_labels_together() {
        let s = sample();
        let t = Transform {
            flip: true,
            ..Transform::IDENTITY
        };
        let out = t.apply(&s);
        assert_eq!(out.abnormal[5 * 16 + 12], 2, "col 3 → col 12");
        assert_eq!(out.abnormal.iter().filter(|&&l| l != 0).count(), 1);
        assert!((out.image[12] - s.image[3]).abs() < 1e-6);
        assert_eq!(out.twin.as_ref().unwrap(), &out.image);
    }

    #[test]
    fn quarter_turn_moves_labels_with_the_image() {
        let size = 16;
        let mut s = sample();
        s.image = s
            .abnormal
            .iter()
            .map(|&l| if l != 0 { 1.0 } else { 0.0 })
            .collect();
        let t = Transform {
            angle: std::f32::consts::FRAC_PI_2,
            ..Transform::IDENTITY
        };
        let out = t.apply(&s);
        let label_at = out.abnormal.iter().position(|&l| l != 0).unwrap();
        let bright_at = (0..size * size)
            .max_by(|&a, &b| out.image[a].total_cmp(&out.image[b]))
            .unwrap();
        assert_eq!(label_at, bright_at, "the label follows its pixel");
        assert_ne!(label_at, 5 * size + 3, "and both moved");
    }

    #[test]
    fn zoom_enlarges_a_lesion() {
        let size = 32;
        let mut abnormal = vec![0u8; size * size];
        for r in 14..18 {
            for c in 14..18 {
                abnormal[r * size + c] = 1;
            }
        }
        let s = Sample {
            size,
            image: vec![0.0; size * size],
            normal: abnormal.clone(),
            abnormal,
            twin: None,
        };
        let t = Transform {
            scale: 1.5,
            ..Transform::IDENTITY
        };
        let area = t.apply(&s).abnormal.iter().filter(|&&l| l != 0).count();
        assert!(area > 16 + 8, "area {area}");
    }
}
