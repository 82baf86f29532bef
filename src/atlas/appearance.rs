//! How an atlas slice is rendered: a T1-, T2- or FLAIR-like contrast with random tissue
//! intensities, a bias field, blur, a lower acquired resolution, noise and the in-plane geometry.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::synthetic::field::BiasField;
use crate::synthetic::shape::{sin_cos, symmetric, uniform};

use super::maps::Tissues;

/// The weighting a slice imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contrast {
    /// White matter brightest, CSF dark.
    T1,
    /// CSF brightest, white matter darkest.
    T2,
    /// Grey matter brighter than white matter, CSF suppressed.
    Flair,
}

/// One draw of the appearance of a slice and its twin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rendering {
    pub contrast: Contrast,
    /// Intensities of grey matter, white matter and CSF.
    pub grey: f32,
    pub white: f32,
    pub csf: f32,
    pub bias: BiasField,
    /// Noise standard deviation relative to white matter.
    pub noise: f32,
    /// Side weight of the separable blur kernel `[a, 1 − 2a, a]`.
    pub blur: f32,
    /// Lower acquired resolution: a box average of this many pixels along one axis (1 = none).
    pub thick: usize,
    /// Whether `thick` acts along rows (else along columns).
    pub thick_rows: bool,
    gain: f32,
    /// `(sin, cos)` of the in-plane rotation.
    pub rotation: (f32, f32),
    /// Millimetres per pixel.
    pub spacing: f32,
    /// Shift of the head in the frame, mm.
    pub shift: (f32, f32),
}

impl Rendering {
    /// Draws a rendering.
    pub fn sample(rng: &mut ChaCha8Rng) -> Self {
        let contrast = match rng.random::<f32>() {
            u if u < 0.4 => Contrast::T1,
            u if u < 0.7 => Contrast::T2,
            _ => Contrast::Flair,
        };
        let (grey, white, csf) = match contrast {
            Contrast::T1 => (uniform(rng, 0.6, 0.82), 1.0, uniform(rng, 0.15, 0.35)),
            Contrast::T2 => (
                uniform(rng, 0.8, 1.0),
                uniform(rng, 0.55, 0.75),
                uniform(rng, 1.3, 1.9),
            ),
            Contrast::Flair => (
                uniform(rng, 0.9, 1.1),
                uniform(rng, 0.7, 0.85),
                uniform(rng, 0.08, 0.25),
            ),
        };
        let bias = BiasField::sample(rng, 0.25);
        let noise = uniform(rng, 0.008, 0.04);
        let sigma = uniform(rng, 0.0, 1.0);
        let blur = (0.5 * sigma * sigma).min(0.33);
        let thick = if rng.random::<f32>() < 0.3 {
            rng.random_range(2..=3)
        } else {
            1
        };
        let thick_rows = rng.random::<bool>();
        let gain = uniform(rng, 700.0, 2500.0);
        let rotation = sin_cos(10f32.to_radians() * symmetric(rng));
        let spacing = uniform(rng, 0.95, 1.15);
        let shift = (4.0 * symmetric(rng), 4.0 * symmetric(rng));
        Self {
            contrast,
            grey,
            white,
            csf,
            bias,
            noise,
            blur,
            thick,
            thick_rows,
            gain,
            rotation,
            spacing,
            shift,
        }
    }

    /// The healthy intensity of a mixture of tissues (partial volume; background is 0).
    #[inline]
    pub fn of(&self, t: &Tissues) -> f32 {
        t.grey * self.grey + t.white * self.white + t.csf * self.csf
    }

    /// Whether CSF is the brightest tissue (a T2-like sequence).
    pub fn bright_fluid(&self) -> bool {
        self.contrast == Contrast::T2
    }

    /// A stored value (whole number ≥ 0) from an intensity, the bias there and a standard normal
    /// noise sample (0 outside the brain).
    #[inline]
    pub fn stored(&self, value: f32, bias: f32, noise: f32) -> f32 {
        let v = self.gain * (value * bias + self.noise * noise);
        if v > 0.0 {
            (v + 0.5) as u32 as f32
        } else {
            0.0
        }
    }
}
