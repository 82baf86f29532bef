//! Glioma-like lesions: edema around a tumour core, an enhancing rim around a necrotic centre,
//! and the mass effect that pushes the surrounding anatomy away.
//!
//! A lesion is three nested wobbly blobs. Its core (enhancing tumour, or necrotic/non-enhancing
//! tumour for non-enhancing lesions) may hold a necrotic centre; the edema surrounds the core,
//! usually off-centre. The abnormal label of a point is decided innermost first, so a necrotic
//! core lies inside the enhancing tumour and both lie inside the whole-tumour region.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::anatomy::{Compartment, Section, Tissue, compartment, label};
use crate::synthetic::shape::{Outline, Point, Wobble, uniform, unit_vector};

/// Abnormal label values (see `ABNORMAL_LABELS`).
pub(crate) mod abnormal {
    pub const NECROTIC_CORE: u8 = 1;
    pub const EDEMA: u8 = 2;
    pub const ENHANCING_TUMOR: u8 = 3;
}

/// Smallest thickness of the enhancing rim, in canonical units (about 1.7 px at 192 rows).
const RIM: f32 = 0.018;

/// Smallest thickness of edema around the core, in canonical units (about 2.5 px at 192 rows).
const MARGIN: f32 = 0.026;

/// How the tumour core looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CoreKind {
    /// An enhancing rim around a necrotic centre (the classic glioblastoma).
    Ring,
    /// A solid enhancing core without necrosis.
    Solid,
    /// A non-enhancing core (labelled NCR/NET), as in lower-grade gliomas.
    NonEnhancing,
}

/// Radial displacement of the anatomy away from a lesion.
///
/// The tissue shown at `p` comes from `q = c + (p − c)(1 − s·R²/(|p − c|² + R²))`, a one-to-one
/// map for `s < 1` that pushes tissue outwards by up to `s·R/2` and fades with distance; the
/// ventricles are also narrowed by `1 − k·R²/(|p − c|² + R²)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MassEffect {
    centre: Point,
    r2: f32,
    strength: f32,
    squeeze: f32,
}

impl MassEffect {
    /// Where the tissue at `p` came from, and the ventricle narrowing factor there.
    #[inline]
    pub fn deform(&self, p: Point) -> (Point, f32) {
        let (dx, dy) = (p.x - self.centre.x, p.y - self.centre.y);
        let w = self.r2 / (dx * dx + dy * dy + self.r2);
        let k = 1.0 - self.strength * w;
        (
            Point::new(self.centre.x + dx * k, self.centre.y + dy * k),
            1.0 - self.squeeze * w,
        )
    }
}

/// One lesion in canonical coordinates.
#[derive(Debug, Clone)]
pub(crate) struct Lesion {
    edema: Outline,
    core: Outline,
    necrosis: Option<Outline>,
    kind: CoreKind,
    /// The compartment (hemisphere) the lesion grows in; it does not cross into another.
    pub compartment: Compartment,
    pub mass: MassEffect,
    /// Core levels below this may be necrotic: keeps an enhancing rim of at least ~1.5 px.
    rim_level: f32,
    /// Core levels below this are at least edema: keeps the core inside the whole tumour.
    margin_level: f32,
    bounds: (Point, Point),
}

impl Lesion {
    /// Draws a lesion that sits in the brain of `section`.
    pub fn sample(rng: &mut ChaCha8Rng, section: &Section) -> Self {
        let (ba, bb) = section.brain_axes();
        let centre = section.centre();
        let cerebellar = section.has_cerebellum() && rng.random::<f32>() < 0.15;
        let mut site = None;
        for _ in 0..200 {
            let (ux, uy) = unit_vector(rng);
            let r = 0.85 * rng.random::<f32>().sqrt();
            let p = Point::new(centre.x + ux * r * ba, centre.y + uy * r * bb);
            let (tissue, normal) = section.tissue_at(p, p, 1.0);
            let parenchyma = matches!(
                tissue,
                Tissue::White | Tissue::Grey | Tissue::DeepGrey | Tissue::Cerebellum
            );
            let wanted = if cerebellar {
                matches!(normal, label::LEFT_CEREBELLUM | label::RIGHT_CEREBELLUM)
            } else {
                matches!(normal, label::LEFT_CEREBRUM | label::RIGHT_CEREBRUM)
            };
            if parenchyma && wanted {
                site = Some((p, compartment(normal)));
                break;
            }
        }
        // Every level has cerebral white matter half-way out in the front of the brain.
        let (at, compartment) = site.unwrap_or_else(|| {
            let p = Point::new(centre.x + 0.3 * ba, centre.y - 0.4 * bb);
            let (_, normal) = section.tissue_at(p, p, 1.0);
            (p, self::compartment(normal))
        });

        let room = if cerebellar {
            0.5 * ba.min(bb)
        } else {
            ba.min(bb)
        };
        let edema_radius = (room * uniform(rng, 0.22, 0.48)).max(0.10);
        let core_radius = edema_radius * uniform(rng, 0.38, 0.72);
        let kind = match rng.random::<f32>() {
            u if u < 0.55 => CoreKind::Ring,
            u if u < 0.80 => CoreKind::Solid,
            _ => CoreKind::NonEnhancing,
        };

        let aniso = uniform(rng, 0.85, 1.18);
        let core_wobble = uniform(rng, 0.02, 0.08);
        let core = Outline {
            centre: at,
            a: core_radius * aniso,
            b: core_radius / aniso,
            orientation: unit_vector(rng),
            wobble: Wobble::random(rng, core_wobble),
        };
        let necrosis = (kind == CoreKind::Ring).then(|| {
            let k = uniform(rng, 0.40, 0.72);
            Outline {
                a: core.a * k,
                b: core.b * k,
                wobble: Wobble::random(rng, 0.05),
                ..core
            }
        });
        let (ox, oy) = unit_vector(rng);
        let shift = (edema_radius - core_radius) * uniform(rng, 0.0, 0.35);
        let aniso = uniform(rng, 0.8, 1.25);
        let edema_wobble = uniform(rng, 0.05, 0.14);
        let edema = Outline {
            centre: Point::new(at.x + ox * shift, at.y + oy * shift),
            a: edema_radius * aniso,
            b: edema_radius / aniso,
            orientation: unit_vector(rng),
            wobble: Wobble::random(rng, edema_wobble),
        };
        let radius = 0.5 * (core_radius + edema_radius);
        let mass = MassEffect {
            centre: at,
            r2: radius * radius,
            strength: uniform(rng, 0.25, 0.65),
            squeeze: uniform(rng, 0.3, 0.6),
        };
        let core_minor = core.a.min(core.b);
        let rim_level = 1.0 - RIM / core_minor;
        let margin_level = 1.0 + MARGIN / core_minor;
        let (e0, e1) = edema.bounds();
        let (c0, c1) = Outline {
            a: core.a * margin_level,
            b: core.b * margin_level,
            ..core
        }
        .bounds();
        let bounds = (
            Point::new(e0.x.min(c0.x), e0.y.min(c0.y)),
            Point::new(e1.x.max(c1.x), e1.y.max(c1.y)),
        );
        Self {
            edema,
            core,
            necrosis,
            kind,
            compartment,
            mass,
            rim_level,
            margin_level,
            bounds,
        }
    }

    /// The abnormal label at `p`, ignoring the brain's boundaries.
    #[inline]
    pub fn label_at(&self, p: Point) -> u8 {
        let (lo, hi) = self.bounds;
        if p.x < lo.x || p.x > hi.x || p.y < lo.y || p.y > hi.y {
            return 0;
        }
        let core = self.core.level(p);
        if core < 1.0 {
            if let Some(n) = &self.necrosis
                && core < self.rim_level
                && n.level(p) < 1.0
            {
                return abnormal::NECROTIC_CORE;
            }
            return match self.kind {
                CoreKind::Ring | CoreKind::Solid => abnormal::ENHANCING_TUMOR,
                CoreKind::NonEnhancing => abnormal::NECROTIC_CORE,
            };
        }
        if core < self.margin_level || self.edema.level(p) < 1.0 {
            return abnormal::EDEMA;
        }
        0
    }

    /// The same lesion without mass effect (for tests that measure the mass effect).
    #[cfg(test)]
    pub fn without_mass_effect(&self) -> Self {
        let mut lesion = self.clone();
        lesion.mass.strength = 0.0;
        lesion.mass.squeeze = 0.0;
        lesion
    }

    /// Whether the core is non-enhancing (its NCR/NET label then gets a brighter intensity).
    pub fn non_enhancing(&self) -> bool {
        self.kind == CoreKind::NonEnhancing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mass_effect_pushes_tissue_outwards_and_fades_with_distance() {
        let mass = MassEffect {
            centre: Point::new(0.1, 0.2),
            r2: 0.01,
            strength: 0.6,
            squeeze: 0.5,
        };
        let mut previous = 0.0;
        for step in 1..60 {
            let r = step as f32 * 0.01;
            let (q, squeeze) = mass.deform(Point::new(0.1 + r, 0.2));
            let from = q.x - 0.1;
            // Tissue shown at distance r came from closer to the lesion, in the same direction,
            // and the map stays one-to-one (monotone in r).
            assert!(from > previous && from < r, "r {r}: from {from}");
            assert!((q.y - 0.2).abs() < 1e-6);
            assert!((0.5..1.0).contains(&squeeze));
            previous = from;
        }
        let (q, squeeze) = mass.deform(Point::new(5.1, 0.2));
        assert!((q.x - 5.1).abs() < 0.002 && squeeze > 0.999);
    }
}
