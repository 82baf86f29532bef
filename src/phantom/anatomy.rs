//! Normal anatomy of a phantom subject: head, skull, cerebral and cerebellar hemispheres,
//! ventricles, at any axial level from the skull base (0) to the vertex (1).
//!
//! A [`Subject`] holds what stays fixed across a subject's slices (head shape and its smooth
//! deformation, skull thickness, midline, ventricle size); [`Subject::section`] cuts it at one
//! level into a [`Section`], which tells the tissue and normal label at any point.
//!
//! Orientation follows the radiological convention: anterior at the top of the image, the
//! patient's left on the image's right (+x).

use rand_chacha::ChaCha8Rng;

use crate::synthetic::shape::{Capsule, Outline, Point, Wobble, symmetric, uniform};

/// Tissue classes that the renderer gives an intensity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tissue {
    Background = 0,
    Scalp,
    Bone,
    /// Cerebrospinal fluid outside the brain and in the fissures.
    Csf,
    Grey,
    White,
    DeepGrey,
    Cerebellum,
    Brainstem,
    Ventricle,
}

/// Number of [`Tissue`] classes.
pub(crate) const TISSUES: usize = 10;

/// Normal label values (see `NORMAL_LABELS`).
pub(crate) mod label {
    pub const LEFT_CEREBRUM: u8 = 1;
    pub const RIGHT_CEREBRUM: u8 = 2;
    pub const LEFT_CEREBELLUM: u8 = 3;
    pub const RIGHT_CEREBELLUM: u8 = 4;
    pub const LEFT_VENTRICLE: u8 = 5;
    pub const RIGHT_VENTRICLE: u8 = 6;
}

/// The brain compartment a normal label belongs to, used to keep a lesion on its own side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compartment {
    Outside,
    LeftCerebrum,
    RightCerebrum,
    LeftCerebellum,
    RightCerebellum,
}

/// The compartment of a normal label (ventricles belong to their cerebral hemisphere).
pub(crate) fn compartment(normal_label: u8) -> Compartment {
    match normal_label {
        label::LEFT_CEREBRUM | label::LEFT_VENTRICLE => Compartment::LeftCerebrum,
        label::RIGHT_CEREBRUM | label::RIGHT_VENTRICLE => Compartment::RightCerebrum,
        label::LEFT_CEREBELLUM => Compartment::LeftCerebellum,
        label::RIGHT_CEREBELLUM => Compartment::RightCerebellum,
        _ => Compartment::Outside,
    }
}

/// What stays fixed across the slices of one subject.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    /// Head semi-axes at the widest level (x: left-right, y: front-back).
    head_a: f32,
    head_b: f32,
    head_centre: Point,
    wobble: Wobble,
    scalp: f32,
    bone: f32,
    csf: f32,
    cortex: f32,
    midline_tilt: f32,
    midline_bend: f32,
    ventricle_scale: f32,
    /// Per-side ventricle size factors (image right = patient left first).
    ventricle_sides: [f32; 2],
    /// Level below which the cerebellum shows.
    cerebellum_top: f32,
    cerebellum_width: f32,
    /// Level of the widest cross-section.
    widest_level: f32,
}

/// The subject cut at one axial level.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    /// Outer outline of the scalp; the other layers share its centre and wobble.
    head: Outline,
    /// Semi-axes of the inner edges of scalp, bone and extra-axial CSF (= the brain outline).
    layers: [(f32, f32); 3],
    cortex: f32,
    midline_x: f32,
    midline_tilt: f32,
    midline_bend: f32,
    fissure: f32,
    /// The two cerebellar hemispheres (they overlap at the vermis).
    cerebellum: Option<[Outline; 2]>,
    brainstem: Option<Outline>,
    /// Ventricle capsules per side: `[image right (patient left), image left]`.
    ventricles: [Vec<Capsule>; 2],
    ventricle_box: (Point, Point),
    deep_grey: Option<[Outline; 2]>,
}

impl Subject {
    /// Draws a subject.
    pub fn sample(rng: &mut ChaCha8Rng) -> Self {
        let head_a = uniform(rng, 0.62, 0.70);
        let head_b = uniform(rng, 0.77, 0.83);
        Self {
            head_a,
            head_b,
            head_centre: Point::new(0.015 * symmetric(rng), 0.015 * symmetric(rng)),
            wobble: Wobble::random(rng, 0.025),
            scalp: uniform(rng, 0.030, 0.045),
            bone: uniform(rng, 0.030, 0.045),
            csf: uniform(rng, 0.010, 0.022),
            cortex: uniform(rng, 0.030, 0.045),
            midline_tilt: 0.04 * symmetric(rng),
            midline_bend: 0.05 * symmetric(rng),
            ventricle_scale: uniform(rng, 0.75, 1.35),
            ventricle_sides: [1.0 + 0.12 * symmetric(rng), 1.0 + 0.12 * symmetric(rng)],
            cerebellum_top: uniform(rng, 0.24, 0.31),
            cerebellum_width: uniform(rng, 0.85, 1.0),
            widest_level: uniform(rng, 0.36, 0.44),
        }
    }

    /// Height profile of the head: 1 at the widest level, smaller towards base and vertex.
    fn profile(&self, level: f32) -> f32 {
        let t = (level - self.widest_level) / 0.68;
        (1.0 - t * t).max(0.04).sqrt()
    }

    /// The subject cut at `level` (0 skull base .. 1 vertex).
    pub fn section(&self, level: f32) -> Section {
        let g = self.profile(level);
        let (a, b) = (self.head_a * g, self.head_b * g);
        let head = Outline::aligned(self.head_centre, a, b, self.wobble);
        let mut inset = 0.0;
        let layers = [self.scalp, self.bone, self.csf].map(|t| {
            inset += t;
            ((a - inset).max(0.02), (b - inset).max(0.02))
        });
        let (ba, bb) = layers[2];
        let centre = self.head_centre;

        let cerebellum = (level < self.cerebellum_top).then(|| {
            let t = level / self.cerebellum_top;
            let c = (1.0 - t * t).sqrt();
            let k = 0.35 + 0.65 * c;
            let half = 0.5 * self.cerebellum_width;
            [1.0f32, -1.0].map(|s| {
                Outline::aligned(
                    Point::new(
                        centre.x + s * ba * half * 0.92,
                        centre.y + bb * (0.42 - 0.06 * t),
                    ),
                    ba * half * k,
                    bb * 0.50 * k,
                    Wobble::none(),
                )
            })
        });
        let brainstem = (level < self.cerebellum_top * 0.85).then(|| {
            let t = level / (self.cerebellum_top * 0.85);
            let k = 0.75 + 0.25 * t;
            Outline::aligned(
                Point::new(centre.x, centre.y - bb * 0.12),
                ba * 0.20 * k,
                bb * 0.17 * k,
                Wobble::none(),
            )
        });

        // Ventricles are sized by the subject's brain at its widest level, not this level's.
        let (va, vb) = (
            self.head_a - self.scalp - self.bone - self.csf,
            self.head_b - self.scalp - self.bone - self.csf,
        );
        let mut ventricles: [Vec<Capsule>; 2] = [Vec::new(), Vec::new()];
        let mut reach = Point::new(0.0, 0.0);
        for (side, caps) in ventricles.iter_mut().enumerate() {
            let s = if side == 0 { 1.0 } else { -1.0 };
            let size = self.ventricle_scale * self.ventricle_sides[side];
            let pt = |x: f32, y: f32| Point::new(centre.x + s * x * va, centre.y + y * vb);
            // (start, end, r0, r1, lowest level, highest level)
            let parts = [
                // frontal horn: diverging forwards and outwards (the "butterfly")
                (pt(0.07, -0.06), pt(0.20, -0.40), 0.120, 0.075, 0.36, 0.64),
                // body, along the midline
                (pt(0.07, -0.06), pt(0.15, 0.24), 0.105, 0.095, 0.44, 0.70),
                // atrium and occipital horn
                (pt(0.15, 0.22), pt(0.25, 0.50), 0.135, 0.055, 0.34, 0.57),
                // temporal horn, low and lateral
                (pt(0.36, -0.08), pt(0.40, 0.12), 0.055, 0.050, 0.27, 0.39),
            ];
            for (p0, p1, r0, r1, lo, hi) in parts {
                let w = bump(level, lo, hi);
                if w > 0.05 {
                    let k = size * w * va;
                    caps.push(Capsule {
                        p0,
                        p1,
                        r0: r0 * k,
                        r1: r1 * k,
                    });
                    reach.x = reach.x.max(0.40 * va + 0.1);
                    reach.y = reach.y.max(0.50 * vb + 0.1);
                }
            }
        }
        let ventricle_box = (
            Point::new(centre.x - reach.x, centre.y - reach.y),
            Point::new(centre.x + reach.x, centre.y + reach.y),
        );

        let deep_grey = (bump(level, 0.36, 0.56) > 0.2).then(|| {
            [1.0f32, -1.0].map(|s| {
                Outline::aligned(
                    Point::new(centre.x + s * 0.24 * va, centre.y + 0.02 * vb),
                    0.085 * va,
                    0.15 * vb,
                    Wobble::none(),
                )
            })
        });

        Section {
            head,
            layers,
            cortex: self.cortex.min(0.3 * ba),
            midline_x: centre.x,
            midline_tilt: self.midline_tilt,
            midline_bend: self.midline_bend,
            fissure: 0.012,
            cerebellum,
            brainstem,
            ventricles,
            ventricle_box,
            deep_grey,
        }
    }
}

/// A smooth bump over `[lo, hi]`: 0 outside, 1 in the middle.
fn bump(level: f32, lo: f32, hi: f32) -> f32 {
    let t = (2.0 * level - lo - hi) / (hi - lo);
    (1.0 - t * t).max(0.0).sqrt()
}

impl Section {
    /// Semi-axes of the brain outline at this level.
    pub fn brain_axes(&self) -> (f32, f32) {
        self.layers[2]
    }

    /// Centre of the head.
    pub fn centre(&self) -> Point {
        self.head.centre
    }

    /// Whether a cerebellum shows at this level.
    pub fn has_cerebellum(&self) -> bool {
        self.cerebellum.is_some()
    }

    /// Signed distance (in x) from the midline at deformed point `q`; positive = image right.
    #[inline]
    fn midline_offset(&self, q: Point) -> f32 {
        let y = q.y - self.head.centre.y;
        q.x - (self.midline_x + self.midline_tilt * y + self.midline_bend * y * y)
    }

    /// Tissue and normal label at `p`. `q` is where the tissue at `p` came from under the
    /// lesion's mass effect (`q == p` without one) and `squeeze` shrinks the ventricles (1 = not).
    #[inline]
    pub fn tissue_at(&self, p: Point, q: Point, squeeze: f32) -> (Tissue, u8) {
        let head = &self.head;
        let (dx, dy) = (p.x - head.centre.x, p.y - head.centre.y);
        let (hx, hy) = (dx / head.a, dy / head.b);
        let rh2 = hx * hx + hy * hy;
        let max = 1.0 + head.wobble.bound;
        if rh2 >= max * max {
            return (Tissue::Background, 0);
        }
        let f = if rh2 > 0.0 {
            let r = rh2.sqrt();
            head.wobble.factor(hx / r, hy / r)
        } else {
            1.0
        };
        let f2 = f * f;
        if rh2 >= f2 {
            return (Tissue::Background, 0);
        }
        let inside = |(a, b): (f32, f32)| {
            let (u, v) = (dx / a, dy / b);
            u * u + v * v
        };
        if inside(self.layers[0]) >= f2 {
            return (Tissue::Scalp, 0);
        }
        if inside(self.layers[1]) >= f2 {
            return (Tissue::Bone, 0);
        }
        let rb2 = inside(self.layers[2]);
        if rb2 >= f2 {
            return (Tissue::Csf, 0);
        }

        let offset = self.midline_offset(q);
        let left = offset >= 0.0;
        if let Some([right_lobe, left_lobe]) = &self.cerebellum {
            let l = right_lobe.level(q).min(left_lobe.level(q));
            if l < 1.0 {
                let label = if left {
                    label::LEFT_CEREBELLUM
                } else {
                    label::RIGHT_CEREBELLUM
                };
                return (Tissue::Cerebellum, label);
            }
            if l < 1.07 {
                // The tentorium and the CSF around it.
                return (Tissue::Csf, 0);
            }
        }
        if let Some(bs) = &self.brainstem {
            let l = bs.level(q);
            if l < 1.0 {
                return (Tissue::Brainstem, 0);
            }
            if l < 1.12 {
                return (Tissue::Csf, 0);
            }
        }
        let cerebrum = if left {
            label::LEFT_CEREBRUM
        } else {
            label::RIGHT_CEREBRUM
        };
        let dist_mid = offset.abs();
        if dist_mid < self.fissure {
            return (Tissue::Csf, cerebrum);
        }
        let (lo, hi) = self.ventricle_box;
        if q.x > lo.x && q.x < hi.x && q.y > lo.y && q.y < hi.y {
            let side = if left { 0 } else { 1 };
            if self.ventricles[side].iter().any(|c| c.contains(q, squeeze)) {
                let label = if left {
                    label::LEFT_VENTRICLE
                } else {
                    label::RIGHT_VENTRICLE
                };
                return (Tissue::Ventricle, label);
            }
        }
        if let Some(deep) = &self.deep_grey {
            let d = &deep[if left { 0 } else { 1 }];
            if d.level(q) < 1.0 {
                return (Tissue::DeepGrey, cerebrum);
            }
        }
        // Cortex: a band under the brain's surface and along the interhemispheric fissure.
        let (ba, bb) = self.layers[2];
        let depth = (f - rb2.sqrt()) * 0.5 * (ba + bb);
        if depth < self.cortex || dist_mid < self.fissure + self.cortex * 0.8 {
            return (Tissue::Grey, cerebrum);
        }
        (Tissue::White, cerebrum)
    }
}
