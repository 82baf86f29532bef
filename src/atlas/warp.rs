//! A subject's shape: the random affine and smooth non-linear deformation that take a point of
//! the subject's head to the template, in the manner of SynthSeg's spatial augmentation.

use rand_chacha::ChaCha8Rng;

use crate::synthetic::shape::{sin_cos, symmetric, uniform, unit_vector};

/// Sinusoidal components of the displacement along each axis.
const COMPONENTS: usize = 3;

/// One smooth displacement component: `a · sin(ω · p + φ)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Wave {
    amplitude: f32,
    frequency: [f32; 3],
    phase: f32,
}

impl Wave {
    fn sample(rng: &mut ChaCha8Rng, max_amplitude: f32) -> Self {
        let (ux, uy) = unit_vector(rng);
        let uz = symmetric(rng);
        let norm = (ux * ux + uy * uy + uz * uz).sqrt();
        // Wavelengths of 60–160 mm: the brain bends, it does not ripple.
        let k = std::f32::consts::TAU / uniform(rng, 60.0, 160.0) / norm;
        Self {
            amplitude: max_amplitude * uniform(rng, 0.2, 1.0),
            frequency: [ux * k, uy * k, uz * k],
            phase: std::f32::consts::TAU * uniform(rng, 0.0, 1.0),
        }
    }

    #[inline]
    fn at(&self, p: [f32; 3]) -> f32 {
        let f = &self.frequency;
        let angle = f[0] * p[0] + f[1] * p[1] + f[2] * p[2] + self.phase;
        self.amplitude * sin_cos(angle).0
    }
}

/// Subject space → template space: `t = A · p + d(p)`, with `A` a rotation (tilts of the head),
/// per-axis scaling (head size and shape), and `d` a smooth displacement of a few millimetres.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SubjectWarp {
    matrix: [[f32; 3]; 3],
    waves: [[Wave; COMPONENTS]; 3],
}

impl SubjectWarp {
    /// Draws a subject: scaling 0.88–1.12 per axis, pitch ±8°, roll ±5°, yaw ±4°, displacement
    /// up to about 4 mm.
    pub fn sample(rng: &mut ChaCha8Rng) -> Self {
        let scale = [0; 3].map(|_| 1.0 / uniform(rng, 0.88, 1.12));
        let pitch = 8f32.to_radians() * symmetric(rng);
        let roll = 5f32.to_radians() * symmetric(rng);
        let yaw = 4f32.to_radians() * symmetric(rng);
        let rx = rotation(0, pitch);
        let ry = rotation(1, roll);
        let rz = rotation(2, yaw);
        let r = multiply(&rz, &multiply(&ry, &rx));
        let mut matrix = r;
        for row in &mut matrix {
            for (k, v) in row.iter_mut().enumerate() {
                *v *= scale[k];
            }
        }
        let waves = [0; 3].map(|_| [0; COMPONENTS].map(|_| Wave::sample(rng, 2.0)));
        Self { matrix, waves }
    }

    /// The template point that subject point `p` (world mm) shows.
    #[inline]
    pub fn apply(&self, p: [f32; 3]) -> [f32; 3] {
        let m = &self.matrix;
        let mut t = [0f32; 3];
        for (axis, out) in t.iter_mut().enumerate() {
            let linear = m[axis][0] * p[0] + m[axis][1] * p[1] + m[axis][2] * p[2];
            let displacement: f32 = self.waves[axis].iter().map(|w| w.at(p)).sum();
            *out = linear + displacement;
        }
        t
    }
}

/// Rotation by `angle` about axis `axis`.
fn rotation(axis: usize, angle: f32) -> [[f32; 3]; 3] {
    let (s, c) = sin_cos(angle);
    let (i, j) = ((axis + 1) % 3, (axis + 2) % 3);
    let mut m = [[0f32; 3]; 3];
    m[axis][axis] = 1.0;
    m[i][i] = c;
    m[j][j] = c;
    m[i][j] = -s;
    m[j][i] = s;
    m
}

fn multiply(a: &[[f32; 3]; 3], b: &[[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let mut m = [[0f32; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}
