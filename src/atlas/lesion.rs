//! Lesions implanted in atlas slices: glioma-like geometry (edema around a core, which may hold
//! an enhancing rim and a necrotic centre), mass effect, and a randomised appearance, so that
//! "abnormal" means "not brain tissue as it should be here", not one intensity pattern.
//!
//! Geometry is in the slice's own frame, in millimetres. Labels follow BraTS: necrotic and
//! non-enhancing core (1), edema (2), enhancing tumour (3).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::synthetic::shape::{Outline, Point, Wobble, sin_cos, uniform, unit_vector};

/// Abnormal label values (see `ABNORMAL_LABELS`).
pub(crate) const NECROTIC_CORE: u8 = 1;
pub(crate) const EDEMA: u8 = 2;
pub(crate) const ENHANCING_TUMOR: u8 = 3;

/// Thinnest enhancing rim and edema margin, in millimetres.
const RIM_MM: f32 = 1.6;
const MARGIN_MM: f32 = 2.0;

/// What the tumour core holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Core {
    /// Enhancing rim around a necrotic centre.
    Ring,
    /// Solid enhancing tumour.
    Solid,
    /// Non-enhancing tumour (labelled NCR/NET), no rim.
    NonEnhancing,
    /// Non-enhancing tumour with a necrotic (fluid) centre, no rim.
    NonEnhancingNecrotic,
}

/// How each part of the lesion looks, relative to the tissue it replaces or to white matter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LesionLook {
    /// Edema: a factor on the tissue underneath (hyper- or hypointense; the anatomy shows through).
    pub edema: f32,
    /// Enhancing tumour, relative to white matter.
    pub enhancing: f32,
    /// Non-enhancing tumour, relative to white matter.
    pub non_enhancing: f32,
    /// Necrosis, relative to white matter.
    pub necrosis: f32,
    /// Amplitude of the multiplicative texture inside the lesion.
    pub texture: f32,
    texture_waves: [(f32, f32, f32); 3],
}

impl LesionLook {
    /// Draws an appearance; `bright_fluid` is whether the sequence shows CSF bright (T2-like).
    pub fn sample(rng: &mut ChaCha8Rng, bright_fluid: bool, csf: f32) -> Self {
        // Edema is hyperintense on T2 and FLAIR, hypointense on T1, but either may occur.
        let hyper = rng.random::<f32>() < if bright_fluid { 0.8 } else { 0.35 };
        let edema = if hyper {
            uniform(rng, 1.2, 1.7)
        } else {
            uniform(rng, 0.45, 0.8)
        };
        let enhancing = uniform(rng, 1.3, 2.1);
        let non_enhancing = if rng.random::<f32>() < 0.5 {
            uniform(rng, 1.15, 1.8)
        } else {
            uniform(rng, 0.35, 0.8)
        };
        let necrosis = (csf * uniform(rng, 0.8, 1.4)).max(0.05);
        let texture = uniform(rng, 0.0, 0.18);
        let texture_waves = [0; 3].map(|_| {
            let (ux, uy) = unit_vector(rng);
            let k = std::f32::consts::TAU / uniform(rng, 4.0, 14.0);
            (
                ux * k,
                uy * k,
                std::f32::consts::TAU * uniform(rng, 0.0, 1.0),
            )
        });
        Self {
            edema,
            enhancing,
            non_enhancing,
            necrosis,
            texture,
            texture_waves,
        }
    }

    /// The texture factor at `p` (mm): `1 + texture · mean of three waves`.
    #[inline]
    pub fn texture_at(&self, p: Point) -> f32 {
        let sum: f32 = self
            .texture_waves
            .iter()
            .map(|&(kx, ky, phase)| sin_cos(kx * p.x + ky * p.y + phase).0)
            .sum();
        1.0 + self.texture * sum / 3.0
    }
}

/// Radial displacement of the anatomy away from the lesion: the tissue shown at `p` comes from
/// `c + (p − c)(1 − s·R²/(|p − c|² + R²))`, one-to-one for `s < 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MassEffect {
    centre: Point,
    r2: f32,
    strength: f32,
}

impl MassEffect {
    /// Where the tissue shown at `p` came from.
    #[inline]
    pub fn deform(&self, p: Point) -> Point {
        let (dx, dy) = (p.x - self.centre.x, p.y - self.centre.y);
        let k = 1.0 - self.strength * self.r2 / (dx * dx + dy * dy + self.r2);
        Point::new(self.centre.x + dx * k, self.centre.y + dy * k)
    }
}

/// One lesion in a slice's frame (mm).
#[derive(Debug, Clone)]
pub(crate) struct Lesion {
    edema: Outline,
    core: Outline,
    necrosis: Option<Outline>,
    kind: Core,
    pub mass: MassEffect,
    pub look: LesionLook,
    rim_level: f32,
    margin_level: f32,
    bounds: (Point, Point),
}

impl Lesion {
    /// Draws a lesion centred at `at` (a point of brain parenchyma, mm).
    pub fn sample(rng: &mut ChaCha8Rng, at: Point, look: LesionLook) -> Self {
        let edema_radius = uniform(rng, 7.0, 30.0);
        let core_radius = (edema_radius * uniform(rng, 0.35, 0.75)).max(3.5);
        let kind = match rng.random::<f32>() {
            u if u < 0.45 => Core::Ring,
            u if u < 0.65 => Core::Solid,
            u if u < 0.85 => Core::NonEnhancing,
            _ => Core::NonEnhancingNecrotic,
        };
        let aniso = uniform(rng, 0.8, 1.25);
        let core_wobble = uniform(rng, 0.03, 0.2);
        let core = Outline {
            centre: at,
            a: core_radius * aniso,
            b: core_radius / aniso,
            orientation: unit_vector(rng),
            wobble: Wobble::random(rng, core_wobble),
        };
        let necrosis = matches!(kind, Core::Ring | Core::NonEnhancingNecrotic).then(|| {
            let k = uniform(rng, 0.35, 0.75);
            Outline {
                a: core.a * k,
                b: core.b * k,
                wobble: Wobble::random(rng, 0.12),
                ..core
            }
        });
        let (ox, oy) = unit_vector(rng);
        let shift = (edema_radius - core_radius).max(0.0) * uniform(rng, 0.0, 0.5);
        let aniso = uniform(rng, 0.7, 1.4);
        let edema_wobble = uniform(rng, 0.08, 0.3);
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
            strength: uniform(rng, 0.15, 0.6),
        };
        let minor = core.a.min(core.b);
        let rim_level = 1.0 - RIM_MM / minor;
        let margin_level = 1.0 + MARGIN_MM / minor;
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
            mass,
            look,
            rim_level,
            margin_level,
            bounds,
        }
    }

    /// The abnormal label at `p`, ignoring the brain's boundary.
    #[inline]
    pub fn label_at(&self, p: Point) -> u8 {
        let (lo, hi) = self.bounds;
        if p.x < lo.x || p.x > hi.x || p.y < lo.y || p.y > hi.y {
            return 0;
        }
        let core = self.core.level(p);
        if core < 1.0 {
            if let Some(n) = &self.necrosis {
                let inside_rim = self.kind != Core::Ring || core < self.rim_level;
                if inside_rim && n.level(p) < 1.0 {
                    return NECROTIC_CORE;
                }
            }
            return match self.kind {
                Core::Ring | Core::Solid => ENHANCING_TUMOR,
                Core::NonEnhancing | Core::NonEnhancingNecrotic => NECROTIC_CORE,
            };
        }
        if core < self.margin_level || self.edema.level(p) < 1.0 {
            return EDEMA;
        }
        0
    }

    /// The intensity of the lesion at `p` with label `label`, given the healthy tissue's value
    /// there and white matter's.
    #[inline]
    pub fn value(&self, p: Point, label: u8, tissue: f32, white: f32) -> f32 {
        let necrotic = self
            .necrosis
            .as_ref()
            .is_some_and(|n| n.level(p) < 1.0 && self.core.level(p) < 1.0);
        let base = match label {
            EDEMA => tissue * self.look.edema,
            ENHANCING_TUMOR => white * self.look.enhancing,
            _ if necrotic => white * self.look.necrosis,
            _ => white * self.look.non_enhancing,
        };
        base * self.look.texture_at(p)
    }
}
