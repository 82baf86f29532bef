//! How a phantom slice is rendered: tissue intensities, bias field, noise, blur, contrast and
//! geometry, randomised per sample the way domain-randomised training does.
//!
//! [`Appearance`] holds the ranges; a [`Rendering`] is one draw from them, applied identically to
//! a slice and its healthy twin (and, for the geometry, to its label maps).

use serde::{Deserialize, Serialize};

use rand_chacha::ChaCha8Rng;

use super::anatomy::{TISSUES, Tissue};
use crate::synthetic::field::BiasField;
use crate::synthetic::shape::{sin_cos, symmetric, uniform};

/// Ranges of the per-sample appearance randomisation of the phantom.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Appearance {
    /// Relative spread of each tissue's intensity (±; lesion intensities vary 1.5× as much).
    pub intensity_jitter: f32,
    /// Largest relative amplitude of the smooth multiplicative bias field.
    pub bias_amplitude: f32,
    /// Smallest standard deviation of the Gaussian noise, relative to white matter.
    pub noise_min: f32,
    /// Largest standard deviation of the Gaussian noise, relative to white matter.
    pub noise_max: f32,
    /// Largest Gaussian blur, in pixels (standard deviation).
    pub blur_max: f32,
    /// Largest strength of the gamma-like contrast curve `t + g·t·(1 − t)` (|g| ≤ this, ≤ 0.35).
    pub contrast: f32,
    /// Largest in-plane rotation, in degrees (±).
    pub rotation_degrees: f32,
    /// Largest relative change of scale (±).
    pub scale: f32,
    /// Largest shift of the head, as a fraction of half the slice height (±, each axis).
    pub shift: f32,
}

impl Default for Appearance {
    /// Domain randomisation on: varied intensities, bias, mild noise and blur, ±10° and ±10%.
    fn default() -> Self {
        Self {
            intensity_jitter: 0.08,
            bias_amplitude: 0.15,
            noise_min: 0.005,
            noise_max: 0.016,
            blur_max: 0.8,
            contrast: 0.25,
            rotation_degrees: 10.0,
            scale: 0.10,
            shift: 0.03,
        }
    }
}

impl Appearance {
    /// No randomisation: nominal intensities, no bias, noise or blur, no rotation or scaling.
    pub fn fixed() -> Self {
        Self {
            intensity_jitter: 0.0,
            bias_amplitude: 0.0,
            noise_min: 0.0,
            noise_max: 0.0,
            blur_max: 0.0,
            contrast: 0.0,
            rotation_degrees: 0.0,
            scale: 0.0,
            shift: 0.0,
        }
    }
}

/// Nominal T1-weighted, Gd-enhanced intensities relative to white matter, by [`Tissue`].
const TISSUE_INTENSITY: [f32; TISSUES] = [
    0.0,  // background
    2.2,  // scalp (fat is the brightest tissue in T1, brighter than enhancement)
    0.12, // bone
    0.28, // CSF
    0.78, // grey matter
    1.0,  // white matter
    0.88, // deep grey matter
    0.84, // cerebellum
    0.95, // brainstem
    0.28, // ventricle
];

/// Nominal lesion intensities by abnormal label: necrotic core, edema, enhancing tumour.
const LESION_INTENSITY: [f32; 4] = [0.0, 0.35, 0.62, 1.60];

/// Nominal intensity of a non-enhancing tumour core (labelled NCR/NET).
const NON_ENHANCING_INTENSITY: f32 = 0.52;

/// Stored value of intensity 1 / [`SCALE`] at nominal gain (before the contrast curve).
const GAIN: f32 = 3000.0;

/// Intensity to contrast-curve input: white matter (1) at 0.4, scalp fat (2.2) at 0.88.
const SCALE: f32 = 0.4;

/// One draw of the appearance: everything needed to render one slice and its twin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rendering {
    pub tissue: [f32; TISSUES],
    /// By abnormal label (index 0 unused).
    pub lesion: [f32; 4],
    pub non_enhancing: f32,
    /// The smooth multiplicative bias field.
    pub bias: BiasField,
    /// Noise standard deviation relative to white matter.
    pub noise: f32,
    /// Side weight `a` of the separable blur kernel `[a, 1 − 2a, a]`.
    pub blur: f32,
    contrast: f32,
    gain: f32,
    /// `(sin, cos)` of the rotation.
    pub rotation: (f32, f32),
    pub scale: f32,
    pub shift: (f32, f32),
}

impl Rendering {
    /// Draws a rendering from the ranges of `appearance`.
    pub fn sample(appearance: &Appearance, rng: &mut ChaCha8Rng) -> Self {
        let j = appearance.intensity_jitter;
        let mut tissue = TISSUE_INTENSITY;
        for t in tissue.iter_mut().skip(1) {
            *t *= 1.0 + j * symmetric(rng);
        }
        let mut lesion = LESION_INTENSITY;
        for l in lesion.iter_mut().skip(1) {
            *l *= 1.0 + 1.5 * j * symmetric(rng);
        }
        let non_enhancing = NON_ENHANCING_INTENSITY * (1.0 + 1.5 * j * symmetric(rng));
        let gain = GAIN * (1.0 + 2.5 * j * symmetric(rng));
        let amp = appearance.bias_amplitude;
        let bias = BiasField::sample(rng, amp);
        let noise = uniform(rng, appearance.noise_min, appearance.noise_max);
        let sigma = appearance.blur_max * uniform(rng, 0.0, 1.0);
        let blur = (0.5 * sigma * sigma).min(0.33);
        let contrast = appearance.contrast.min(0.35) * symmetric(rng);
        let angle = appearance.rotation_degrees.to_radians() * symmetric(rng);
        let rotation = sin_cos(angle);
        let scale = 1.0 + appearance.scale * symmetric(rng);
        let shift = (
            appearance.shift * symmetric(rng),
            appearance.shift * symmetric(rng),
        );
        Self {
            tissue,
            lesion,
            non_enhancing,
            bias,
            noise,
            blur,
            contrast,
            gain,
            rotation,
            scale,
            shift,
        }
    }

    /// The intensity of a tissue.
    #[inline]
    pub fn of(&self, tissue: Tissue) -> f32 {
        self.tissue[tissue as usize]
    }

    /// Turns a blurred intensity into a stored value, given the bias there and a standard
    /// normal noise sample (0 outside the head).
    #[inline]
    pub fn stored(&self, value: f32, bias: f32, noise: f32) -> f32 {
        let t = SCALE * (value * bias + self.noise * noise);
        let t = t + self.contrast * t * (1.0 - t);
        let v = self.gain * t;
        // Rounds half up; cheaper than `f32::round`, which is a library call on baseline x86-64.
        if v > 0.0 {
            (v + 0.5) as u32 as f32
        } else {
            0.0
        }
    }
}
