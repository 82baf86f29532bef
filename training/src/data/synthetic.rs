//! The synthetic sources — the phantom and the atlas — through the shared pre-processing.

use diptych::preprocess::{PreprocessParams, place_labels, preprocess};
use diptych::synthetic::{SliceGenerator, SourceKind};

use super::{Sample, SliceSource};

/// Endless, deterministic synthetic slices with labels and healthy twins (seed 1 trains, seed 2
/// is held out).
pub struct SyntheticSource {
    generator: Box<dyn SliceGenerator>,
    params: PreprocessParams,
}

impl std::fmt::Debug for SyntheticSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSource")
            .field("generator", &self.generator.name())
            .field("params", &self.params)
            .finish()
    }
}

impl SyntheticSource {
    /// A source of `kind`'s slices for `seed` with the given share of healthy slices.
    pub fn new(
        kind: SourceKind,
        seed: u64,
        healthy_fraction: f32,
        params: PreprocessParams,
    ) -> Result<Self, diptych::atlas::AtlasError> {
        Ok(Self {
            generator: kind.open(seed, healthy_fraction)?,
            params,
        })
    }

    /// The underlying generator.
    pub fn generator(&self) -> &dyn SliceGenerator {
        self.generator.as_ref()
    }
}

impl SliceSource for SyntheticSource {
    fn len(&self) -> Option<usize> {
        None
    }

    fn sample(&self, index: u64) -> Sample {
        let slice = self.generator.slice(index);
        let size = self.params.input_size;
        let image = preprocess(&slice.raw_frame(), &self.params)
            .expect("synthetic slices are valid frames for valid preprocess params");
        let twin = preprocess(&slice.twin_frame(), &self.params)
            .expect("synthetic twins are valid frames for valid preprocess params");
        let place =
            |labels: &[u8]| place_labels(labels, slice.rows, slice.cols, &image.placement, size);
        Sample {
            size,
            abnormal: place(&slice.abnormal_labels),
            normal: place(&slice.normal_labels),
            image: image.pixels,
            twin: Some(twin.pixels),
        }
    }
}

/// Several sources in turn: slice `i` is slice `i / n` of part `i mod n`.
pub struct MixedSource {
    parts: Vec<Box<dyn SliceSource>>,
}

impl MixedSource {
    /// Interleaves `parts` (at least one).
    pub fn new(parts: Vec<Box<dyn SliceSource>>) -> Self {
        assert!(!parts.is_empty(), "a mixed source needs at least one part");
        Self { parts }
    }
}

impl SliceSource for MixedSource {
    fn len(&self) -> Option<usize> {
        let lens: Option<Vec<usize>> = self.parts.iter().map(|p| p.len()).collect();
        lens.map(|l| l.iter().min().copied().unwrap_or(0) * self.parts.len())
    }

    fn sample(&self, index: u64) -> Sample {
        let n = self.parts.len() as u64;
        self.parts[(index % n) as usize].sample(index / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> PreprocessParams {
        PreprocessParams {
            input_size: 64,
            ..Default::default()
        }
    }

    #[test]
    fn slices_are_preprocessed_with_labels_and_twin() {
        for kind in [SourceKind::Phantom, SourceKind::Anatomy] {
            let source = SyntheticSource::new(kind, 1, 0.0, params()).unwrap();
            let mut found_lesion = false;
            for index in 0..8 {
                let s = source.sample(index);
                assert_eq!(s.image.len(), 64 * 64);
                assert_eq!(s.abnormal.len(), 64 * 64);
                assert!(s.image.iter().all(|v| (0.0..=1.0).contains(v)));
                assert!(s.abnormal.iter().all(|&l| l < 4) && s.normal.iter().all(|&l| l < 7));
                let twin = s.twin.as_ref().unwrap();
                if s.has_lesion() {
                    found_lesion = true;
                    assert!(twin != &s.image, "a diseased slice differs from its twin");
                }
            }
            assert!(
                found_lesion,
                "{kind:?}: healthy_fraction 0 must give lesions"
            );
            assert_eq!(source.sample(3), source.sample(3), "deterministic");
        }
    }

    #[test]
    fn a_mixed_source_interleaves_its_parts() {
        let part = |kind| -> Box<dyn SliceSource> {
            Box::new(SyntheticSource::new(kind, 1, 0.5, params()).unwrap())
        };
        let phantom = part(SourceKind::Phantom);
        let anatomy = part(SourceKind::Anatomy);
        let mixed = MixedSource::new(vec![part(SourceKind::Phantom), part(SourceKind::Anatomy)]);
        assert_eq!(mixed.sample(4), phantom.sample(2));
        assert_eq!(mixed.sample(7), anatomy.sample(3));
    }
}
