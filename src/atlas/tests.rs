//! Tests of the atlas source on the real tissue maps (`make deps-atlas` puts them in the cache).

use std::path::Path;

use super::*;

fn maps() -> Arc<AtlasMaps> {
    let dir = AtlasMaps::default_dir();
    Arc::new(AtlasMaps::open(&dir).unwrap_or_else(|e| panic!("{e}")))
}

fn generator(seed: u64, healthy_fraction: f32) -> AtlasGenerator {
    AtlasGenerator::new(
        maps(),
        seed,
        AtlasConfig {
            healthy_fraction,
            ..AtlasConfig::default()
        },
    )
}

#[test]
fn generators_share_one_copy_of_the_maps() {
    let dir = AtlasMaps::default_dir();
    let a = AtlasMaps::shared(&dir).unwrap_or_else(|e| panic!("{e}"));
    let b = AtlasMaps::shared(&dir).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "the maps were read twice");
    assert!(AtlasMaps::shared(Path::new("/nonexistent/mni")).is_err());
}

#[test]
fn a_missing_folder_names_the_fix() {
    let err = AtlasMaps::open(Path::new("/nonexistent/mni")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("make deps-atlas") && text.contains(GREY_MATTER_FILE),
        "{text}"
    );
}

#[test]
fn the_maps_hold_a_brain_with_ventricles() {
    let maps = maps();
    let (z0, z1) = maps.z_range();
    assert!(z1 - z0 > 100.0, "brain spans {z0}..{z1} mm");
    // The lateral ventricles sit beside the midline just above the AC-PC plane: CSF there.
    let mut ventricle = 0f32;
    for x in -20..=-4 {
        for y in -30..=10 {
            ventricle = ventricle.max(maps.sample(x as f32, y as f32, 18.0).csf);
        }
    }
    let white = maps.sample(-25.0, -10.0, 25.0);
    assert!(ventricle > 0.5, "CSF in the lateral ventricle {ventricle}");
    assert!(
        white.white > 0.7,
        "white matter of the corona radiata {white:?}"
    );
    assert_eq!(
        maps.sample(0.0, 0.0, 500.0),
        Tissues::default(),
        "outside is empty"
    );
}

#[test]
fn slices_are_deterministic_and_twins_differ_only_in_the_lesion() {
    let generator = generator(7, 0.0);
    let mut diseased = 0;
    for index in 0..24 {
        let slice = generator.slice(index);
        assert_eq!(
            slice,
            generator.slice(index),
            "slice {index} is deterministic"
        );
        assert_eq!(slice.image.len(), 192 * 160);
        assert!(
            slice
                .image
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0 && *v == v.round())
        );
        for i in 0..slice.image.len() {
            if slice.abnormal_labels[i] == 0 {
                assert_eq!(
                    slice.image[i], slice.healthy_twin[i],
                    "slice {index} pixel {i}"
                );
            }
        }
        if slice.has_lesion {
            diseased += 1;
            assert!(slice.image != slice.healthy_twin);
            // Lesions sit in the brain: their pixels carry normal labels too.
            let outside = (0..slice.image.len())
                .filter(|&i| slice.abnormal_labels[i] != 0 && slice.normal_labels[i] == 0)
                .count();
            assert!(
                outside * 20 <= slice.lesion_pixels(),
                "slice {index}: {outside} outside"
            );
        } else {
            assert_eq!(slice.image, slice.healthy_twin);
        }
    }
    assert!(
        diseased >= 18,
        "{diseased} of 24 diseased with healthy_fraction 0"
    );
    let other = AtlasGenerator::new(maps(), 8, AtlasConfig::default());
    assert_ne!(
        generator.slice(3).image,
        other.slice(3).image,
        "seeds differ"
    );
}

#[test]
fn mid_slices_show_both_hemispheres_on_the_radiological_sides() {
    let generator = generator(3, 1.0);
    for index in [6, 7, 8, 9, 22, 24] {
        let s = generator.slice(index);
        let (mut left_on_right, mut left_on_left) = (0, 0);
        let mut present = [0usize; 7];
        for (i, &label) in s.normal_labels.iter().enumerate() {
            present[label as usize] += 1;
            if label != 0 && label % 2 == 1 {
                if i % s.cols >= s.cols / 2 {
                    left_on_right += 1;
                } else {
                    left_on_left += 1;
                }
            }
        }
        assert!(
            left_on_right > 10 * left_on_left.max(1),
            "slice {index}: the patient's left belongs on the image's right \
             ({left_on_right} vs {left_on_left})"
        );
        assert!(
            present[1..].iter().all(|&n| n > 50),
            "slice {index}: labels {present:?}"
        );
        assert!(!s.has_lesion);
    }
}

#[test]
fn levels_run_from_small_low_sections_to_large_middle_ones() {
    let generator = generator(5, 1.0);
    let area = |index: u64| {
        let s = generator.slice(index);
        s.normal_labels.iter().filter(|&&l| l != 0).count()
    };
    let subject = 2 * SLICES_PER_SUBJECT;
    let (low, middle, top) = (area(subject), area(subject + 8), area(subject + 15));
    assert!(
        middle > low && middle > top,
        "areas {low} / {middle} / {top}"
    );
    let s = generator.slice(subject + 15);
    assert!(s.level > 0.9 && generator.slice(subject).level < 0.1);
}

#[test]
fn lesions_vary_in_size_and_label_mix() {
    let generator = generator(11, 0.0);
    let (mut small, mut large, mut with_enhancing, mut without_enhancing) = (0, 0, 0, 0);
    for index in 0..60 {
        let s = generator.slice(index);
        if !s.has_lesion {
            continue;
        }
        let pixels = s.lesion_pixels();
        if pixels < 400 {
            small += 1;
        }
        if pixels > 1200 {
            large += 1;
        }
        if s.abnormal_labels.contains(&3) {
            with_enhancing += 1;
        } else {
            without_enhancing += 1;
        }
    }
    assert!(
        small >= 3 && large >= 3,
        "sizes: {small} small, {large} large"
    );
    assert!(
        with_enhancing >= 5 && without_enhancing >= 3,
        "{with_enhancing} / {without_enhancing}"
    );
}
