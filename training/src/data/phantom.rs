//! The phantom source: the `diptych` generator through the shared pre-processing.

use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych::preprocess::{PreprocessParams, place_labels, preprocess};

use super::{Sample, SliceSource};

/// Endless, deterministic phantom slices (seed 1 for training, seed 2 held out).
#[derive(Debug, Clone)]
pub struct PhantomSource {
    generator: PhantomGenerator,
    params: PreprocessParams,
}

impl PhantomSource {
    /// A source of the generator's slices for `seed` with the given share of healthy slices.
    pub fn new(seed: u64, healthy_fraction: f32, params: PreprocessParams) -> Self {
        let config = PhantomConfig {
            healthy_fraction,
            ..PhantomConfig::default()
        };
        Self {
            generator: PhantomGenerator::new(seed, config),
            params,
        }
    }

    /// The underlying generator.
    pub fn generator(&self) -> &PhantomGenerator {
        &self.generator
    }
}

impl SliceSource for PhantomSource {
    fn len(&self) -> Option<usize> {
        None
    }

    fn sample(&self, index: u64) -> Sample {
        let slice = self.generator.slice(index);
        let size = self.params.input_size;
        let image = preprocess(&slice.raw_frame(), &self.params)
            .expect("phantom slices are valid frames for valid preprocess params");
        let twin = preprocess(&slice.twin_frame(), &self.params)
            .expect("phantom twins are valid frames for valid preprocess params");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_preprocessed_with_labels_and_twin() {
        let source = PhantomSource::new(
            1,
            0.0,
            PreprocessParams {
                input_size: 64,
                ..Default::default()
            },
        );
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
        assert!(found_lesion, "healthy_fraction 0 must give lesions");
        assert_eq!(source.sample(3), source.sample(3), "deterministic");
    }
}
