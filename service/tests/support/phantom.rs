//! Multi-frame MR images made of phantom slices, for tests that index many records per
//! instance. Shared by the re-index and persistence tests (`#[path]`).

#![allow(dead_code)]

use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};

/// Slices `first..first + frames` of the phantom generator seeded `seed` as one multi-frame MR
/// image (the first slice's attributes), samples rounded and clamped to `0..=max`.
pub fn multiframe(seed: u64, first: u64, frames: u64, max: f32) -> SyntheticInstance {
    let generator = PhantomGenerator::new(seed, PhantomConfig::default());
    let slices: Vec<_> = (first..first + frames)
        .map(|n| generator.slice(n))
        .collect();
    let mut instance = SyntheticInstance::from_phantom(&slices[0]);
    instance.samples = StoredSamples::U16(
        slices
            .iter()
            .flat_map(|s| s.image.iter().map(|&v| v.round().clamp(0.0, max) as u16))
            .collect(),
    );
    instance
}
