//! The synthetic sources promise the same slices on every machine (IEEE arithmetic only, keyed
//! random streams): their output is pinned by a SHA-256 of a dozen slices. A change to a
//! generator that is meant to change its slices must update the fingerprint here, knowingly —
//! every model trained or scored on the old slices no longer matches them.

use std::sync::Arc;

use diptych::atlas::{AtlasConfig, AtlasGenerator, AtlasMaps};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych::synthetic::SliceGenerator;
use sha2::{Digest, Sha256};

fn fingerprint(generator: &dyn SliceGenerator) -> String {
    let mut hash = Sha256::new();
    for i in 0..12u64 {
        let s = generator.slice(i * 7);
        for v in s.image.iter().chain(&s.healthy_twin) {
            hash.update(v.to_bits().to_le_bytes());
        }
        hash.update(&s.normal_labels);
        hash.update(&s.abnormal_labels);
    }
    hex::encode(hash.finalize())
}

#[test]
fn phantom_slices_are_the_same_everywhere() {
    let generator = PhantomGenerator::new(1, PhantomConfig::default());
    assert_eq!(
        fingerprint(&generator),
        "ca2b6f91ca5489a6e321048eb2851f4f32473c26aa545ce9fbf4799d229b6c72"
    );
}

#[test]
fn atlas_slices_are_the_same_everywhere() {
    let maps = AtlasMaps::open(&AtlasMaps::default_dir()).unwrap_or_else(|e| panic!("{e}"));
    let generator = AtlasGenerator::new(Arc::new(maps), 1, AtlasConfig::default());
    assert_eq!(
        fingerprint(&generator),
        "a877d6b42c7513dd8662d16f2a138361a77423c023f33d16c39d264cb953849d"
    );
}
