//! Whole-image fields of the synthetic sources: the smooth bias of a coil, blur, a thicker
//! acquisition, and the last step of every rendering — bias and noise applied to a slice and its
//! healthy twin alike, so that the two differ only inside the lesion.

use rand_chacha::ChaCha8Rng;

use super::shape::{standard_normal, symmetric};

/// A smooth multiplicative bias: `1 + b·(u, w, uw, u² − ⅓, w² − ⅓)` over image coordinates
/// `(u, w)` in [−1, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BiasField {
    coefficients: [f32; 5],
}

impl BiasField {
    /// A random field whose linear terms reach `amplitude / 2`.
    pub fn sample(rng: &mut ChaCha8Rng, amplitude: f32) -> Self {
        Self {
            coefficients: [0.5, 0.5, 0.3, 0.25, 0.25].map(|w| w * amplitude * symmetric(rng)),
        }
    }

    /// The bias at image coordinates `(u, w)`.
    #[inline]
    pub fn at(&self, u: f32, w: f32) -> f32 {
        let b = &self.coefficients;
        1.0 + b[0] * u + b[1] * w + b[2] * u * w + b[3] * (u * u - 0.33) + b[4] * (w * w - 0.33)
    }
}

/// In-place separable blur with the kernel `[a, 1 − 2a, a]` (edges replicated).
pub(crate) fn blur(field: &mut [f32], rows: usize, cols: usize, a: f32) {
    if a <= 0.0 {
        return;
    }
    let centre = 1.0 - 2.0 * a;
    let mut line = vec![0f32; rows.max(cols)];
    for row in field.chunks_exact_mut(cols) {
        line[..cols].copy_from_slice(row);
        for c in 0..cols {
            let left = line[c.saturating_sub(1)];
            let right = line[(c + 1).min(cols - 1)];
            row[c] = centre * line[c] + a * (left + right);
        }
    }
    let mut prev = vec![0f32; cols];
    let mut cur = vec![0f32; cols];
    prev.copy_from_slice(&field[..cols]);
    for r in 0..rows {
        cur.copy_from_slice(&field[r * cols..(r + 1) * cols]);
        let next_row = (r + 1).min(rows - 1);
        for c in 0..cols {
            let next = field[next_row * cols + c];
            field[r * cols + c] = centre * cur[c] + a * (prev[c] + next);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
}

/// Box average of `width` pixels along rows or columns, in place (a thicker acquisition).
pub(crate) fn box_along(
    field: &mut [f32],
    rows: usize,
    cols: usize,
    width: usize,
    along_rows: bool,
) {
    if width <= 1 {
        return;
    }
    let source = field.to_vec();
    let (n, stride, lines, line_stride) = if along_rows {
        (rows, cols, cols, 1)
    } else {
        (cols, 1, rows, cols)
    };
    let before = (width - 1) / 2;
    for line in 0..lines {
        let base = line * line_stride;
        for k in 0..n {
            let lo = k.saturating_sub(before);
            let hi = (lo + width).min(n);
            let sum: f32 = (lo..hi).map(|j| source[base + j * stride]).sum();
            field[base + k * stride] = sum / (hi - lo) as f32;
        }
    }
}

/// The two stored images of a slice from its blurred intensity fields: the twin everywhere, and
/// the lesion field where `abnormal` is non-zero, each with the bias and one noise sample per
/// pixel (drawn from `noise` only where `noisy`), turned into stored values by `store(value,
/// bias, noise)`. Returns `(image, healthy_twin)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_pair(
    rows: usize,
    cols: usize,
    twin_field: &[f32],
    lesion_field: Option<&[f32]>,
    abnormal: &[u8],
    noisy: &[bool],
    bias: &BiasField,
    noise: &mut ChaCha8Rng,
    store: impl Fn(f32, f32, f32) -> f32,
) -> (Vec<f32>, Vec<f32>) {
    let n = rows * cols;
    let (half_rows, half_cols) = (rows as f32 * 0.5, cols as f32 * 0.5);
    let mut twin = vec![0f32; n];
    let mut image = vec![0f32; n];
    for r in 0..rows {
        let w = (r as f32 + 0.5) / half_rows - 1.0;
        for c in 0..cols {
            let i = r * cols + c;
            let u = (c as f32 + 0.5) / half_cols - 1.0;
            let b = bias.at(u, w);
            let z = if noisy[i] {
                standard_normal(noise)
            } else {
                0.0
            };
            twin[i] = store(twin_field[i], b, z);
            image[i] = match lesion_field {
                Some(field) if abnormal[i] != 0 => store(field[i], b, z),
                _ => twin[i],
            };
        }
    }
    (image, twin)
}
