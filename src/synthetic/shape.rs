//! Geometric and random primitives of the synthetic sources: points, smooth random outlines and
//! capsules, keyed random streams, uniform and normal samples, sine and cosine.
//!
//! Everything here uses only `+ − × ÷` and `sqrt` (all correctly rounded in IEEE 754), never a
//! platform math library, so that a synthetic slice is bit-identical on every machine.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A point in the phantom's canonical frame (x to the image right, y towards the back of the
/// head, i.e. down the image; one unit is about half the slice height).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }
}

/// A ChaCha8 stream keyed by `(seed, id, stream, tag)`: independent for every combination, so
/// any slice or subject can be drawn in any order.
pub(crate) fn keyed_stream(seed: u64, id: u64, stream: u64, tag: &[u8; 8]) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&id.to_le_bytes());
    key[16..24].copy_from_slice(&stream.to_le_bytes());
    key[24..].copy_from_slice(tag);
    ChaCha8Rng::from_seed(key)
}

/// An approximately standard normal sample (sum of four uniforms; mean 0, variance 1).
#[inline]
pub(crate) fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    let v = rng.next_u64();
    let sum = (v & 0xffff) + ((v >> 16) & 0xffff) + ((v >> 32) & 0xffff) + (v >> 48);
    ((sum as f32 + 2.0) / 65536.0 - 2.0) * 1.732_050_8
}

/// Uniform sample in `[lo, hi)`.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// Uniform sample in `[-1, 1)`.
pub(crate) fn symmetric(rng: &mut ChaCha8Rng) -> f32 {
    2.0 * rng.random::<f32>() - 1.0
}

/// A uniformly random direction `(cos φ, sin φ)`, without trigonometric functions.
pub(crate) fn unit_vector(rng: &mut ChaCha8Rng) -> (f32, f32) {
    loop {
        let (x, y) = (symmetric(rng), symmetric(rng));
        let r2 = x * x + y * y;
        if r2 > 1e-4 && r2 <= 1.0 {
            let r = r2.sqrt();
            return (x / r, y / r);
        }
    }
}

/// `(sin a, cos a)` for an angle in radians, by range reduction to `[-π/4, π/4]` and Taylor
/// polynomials in f64 (accurate to well below f32 precision).
pub(crate) fn sin_cos(angle: f32) -> (f32, f32) {
    use std::f64::consts::FRAC_PI_2;
    let a = angle as f64;
    let quadrant = (a / FRAC_PI_2).round();
    let r = a - quadrant * FRAC_PI_2;
    let r2 = r * r;
    let s = r * (1.0 - r2 / 6.0 * (1.0 - r2 / 20.0 * (1.0 - r2 / 42.0 * (1.0 - r2 / 72.0))));
    let c = 1.0 - r2 / 2.0 * (1.0 - r2 / 12.0 * (1.0 - r2 / 30.0 * (1.0 - r2 / 56.0)));
    let (s, c) = match (quadrant as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    };
    (s as f32, c as f32)
}

/// Number of harmonics of a [`Outline`].
const HARMONICS: usize = 4;

/// A smooth random perturbation of a circle's radius: `1 + Σ a_k cos(kθ − φ_k)`, k = 2..=5.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Wobble {
    /// `(a_k cos φ_k, a_k sin φ_k)` for k = 2..=5.
    terms: [(f32, f32); HARMONICS],
    /// `Σ |a_k|`: the largest possible deviation from 1.
    pub bound: f32,
}

impl Wobble {
    /// No perturbation (a plain ellipse).
    pub fn none() -> Self {
        Self {
            terms: [(0.0, 0.0); HARMONICS],
            bound: 0.0,
        }
    }

    /// A random perturbation whose k-th amplitude is at most `amplitude / (k − 1)`.
    pub fn random(rng: &mut ChaCha8Rng, amplitude: f32) -> Self {
        let mut terms = [(0.0, 0.0); HARMONICS];
        let mut bound = 0.0;
        for (i, term) in terms.iter_mut().enumerate() {
            let a = amplitude * rng.random::<f32>() / (i as f32 + 1.0);
            let (c, s) = unit_vector(rng);
            *term = (a * c, a * s);
            bound += a;
        }
        Self { terms, bound }
    }

    /// The radius factor in the direction `(c, s)` (a unit vector).
    #[inline]
    pub fn factor(&self, c: f32, s: f32) -> f32 {
        // (c + i s)^k by repeated complex multiplication, starting from k = 2.
        let (mut ck, mut sk) = (c * c - s * s, 2.0 * c * s);
        let mut f = 1.0;
        for &(ac, as_) in &self.terms {
            f += ck * ac + sk * as_;
            let next = (ck * c - sk * s, ck * s + sk * c);
            ck = next.0;
            sk = next.1;
        }
        f
    }
}

/// A rotated ellipse with a wobbly outline: the basic blob of the phantom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Outline {
    pub centre: Point,
    /// Semi-axis along the outline's own x direction.
    pub a: f32,
    /// Semi-axis along the outline's own y direction.
    pub b: f32,
    /// `(cos, sin)` of the outline's orientation.
    pub orientation: (f32, f32),
    pub wobble: Wobble,
}

impl Outline {
    /// An axis-aligned outline.
    pub fn aligned(centre: Point, a: f32, b: f32, wobble: Wobble) -> Self {
        Self {
            centre,
            a,
            b,
            orientation: (1.0, 0.0),
            wobble,
        }
    }

    /// Normalised radius: below 1 inside, 1 on the outline, above 1 outside.
    #[inline]
    pub fn level(&self, p: Point) -> f32 {
        let (dx, dy) = (p.x - self.centre.x, p.y - self.centre.y);
        let (c, s) = self.orientation;
        let u = (dx * c + dy * s) / self.a;
        let v = (dy * c - dx * s) / self.b;
        let r2 = u * u + v * v;
        let max = 1.0 + self.wobble.bound;
        if r2 > 4.0 * max * max {
            return 2.0;
        }
        if r2 == 0.0 {
            return 0.0;
        }
        let r = r2.sqrt();
        if self.wobble.bound == 0.0 {
            return r;
        }
        r / self.wobble.factor(u / r, v / r)
    }

    /// An axis-aligned box `(min, max)` that contains the whole outline.
    pub fn bounds(&self) -> (Point, Point) {
        let reach = self.a.max(self.b) * (1.0 + self.wobble.bound);
        (
            Point::new(self.centre.x - reach, self.centre.y - reach),
            Point::new(self.centre.x + reach, self.centre.y + reach),
        )
    }
}

/// A segment with a radius that tapers linearly from `r0` at `p0` to `r1` at `p1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Capsule {
    pub p0: Point,
    pub p1: Point,
    pub r0: f32,
    pub r1: f32,
}

impl Capsule {
    /// Whether `p` lies inside the capsule with its radius multiplied by `squeeze`.
    #[inline]
    pub fn contains(&self, p: Point, squeeze: f32) -> bool {
        let (ex, ey) = (self.p1.x - self.p0.x, self.p1.y - self.p0.y);
        let (dx, dy) = (p.x - self.p0.x, p.y - self.p0.y);
        let len2 = ex * ex + ey * ey;
        let t = if len2 > 0.0 {
            ((dx * ex + dy * ey) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let (fx, fy) = (dx - t * ex, dy - t * ey);
        let r = (self.r0 + (self.r1 - self.r0) * t) * squeeze;
        fx * fx + fy * fy < r * r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sin_cos_matches_the_platform_to_f32_precision() {
        for i in -400..=400 {
            let a = i as f32 * 0.0157;
            let (s, c) = sin_cos(a);
            assert!((s - a.sin()).abs() < 1e-6, "sin({a})");
            assert!((c - a.cos()).abs() < 1e-6, "cos({a})");
        }
    }

    #[test]
    fn wobble_factor_is_the_fourier_series() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let w = Wobble::random(&mut rng, 0.3);
        for i in 0..64 {
            let t = i as f32 * 0.1;
            let mut expected = 1.0;
            for (k, &(ac, as_)) in w.terms.iter().enumerate() {
                let k = (k + 2) as f32;
                expected += ac * (k * t).cos() + as_ * (k * t).sin();
            }
            assert!((w.factor(t.cos(), t.sin()) - expected).abs() < 1e-5);
            assert!((w.factor(t.cos(), t.sin()) - 1.0).abs() <= w.bound + 1e-6);
        }
    }

    #[test]
    fn outline_level_is_one_on_the_ellipse() {
        let o = Outline {
            centre: Point::new(0.2, -0.1),
            a: 0.5,
            b: 0.25,
            orientation: (0.0, 1.0),
            wobble: Wobble::none(),
        };
        // Rotated by 90°: the long axis points along y.
        assert!((o.level(Point::new(0.2, 0.4)) - 1.0).abs() < 1e-6);
        assert!((o.level(Point::new(0.45, -0.1)) - 1.0).abs() < 1e-6);
        assert!(o.level(Point::new(0.2, -0.1)) < 1e-6);
    }

    #[test]
    fn capsule_contains_its_axis_not_far_points() {
        let cap = Capsule {
            p0: Point::new(0.0, 0.0),
            p1: Point::new(1.0, 0.0),
            r0: 0.2,
            r1: 0.1,
        };
        assert!(cap.contains(Point::new(0.5, 0.14), 1.0));
        assert!(!cap.contains(Point::new(0.5, 0.16), 1.0));
        assert!(!cap.contains(Point::new(0.5, 0.14), 0.5));
        assert!(!cap.contains(Point::new(1.2, 0.0), 1.0));
    }
}
