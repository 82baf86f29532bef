//! Tests of the BraTS source on folders written by [`sample`] (nothing is downloaded).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::sample::{
    Grid, SampleOptions, SampleSubject, VoxelType, header, sample_subject, volume_from_fn,
    write_sample, write_subject, write_volume,
};
use super::volume::{orientation, slot_plane};
use super::*;
use crate::synthetic::{ABNORMAL_LABELS, SliceGenerator};

/// Small volumes: quick to write and read, still with a few dozen brain planes.
const DIMS: [usize; 3] = [48, 48, 30];

/// Slices of 48 × 48 volumes in a 64 × 64 frame, 6 per subject.
const CONFIG: BratsConfig = BratsConfig {
    slices_per_subject: 6,
    rows: 64,
    cols: 64,
};

fn sample(subjects: usize) -> (tempfile::TempDir, Vec<SampleSubject>) {
    let dir = tempfile::tempdir().unwrap();
    let written = write_sample(
        dir.path(),
        &SampleOptions {
            subjects,
            dims: DIMS,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (dir, written)
}

fn open(dir: &Path, contrast: Contrast) -> Arc<BratsFolder> {
    Arc::new(BratsFolder::open(dir, contrast).unwrap_or_else(|e| panic!("{e}")))
}

fn generator(dir: &Path) -> BratsGenerator {
    BratsGenerator::all(open(dir, Contrast::Flair), CONFIG).unwrap()
}

/// The path of subject `s`'s volume (`None`: the segmentation).
fn file(dir: &Path, s: &SampleSubject, contrast: Option<Contrast>) -> PathBuf {
    dir.join(&s.name)
        .join(s.naming.file_name(&s.name, contrast, s.gzip))
}

#[test]
fn finds_subjects_in_both_namings_compressed_or_not() {
    let (dir, written) = sample(6);
    let folder = open(dir.path(), Contrast::Flair);
    let mut expected = written.clone();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = folder.subjects().iter().map(|s| s.name.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, want, "subjects sorted by folder name");
    for (found, s) in folder.subjects().iter().zip(&expected) {
        assert_eq!(found.naming, s.naming, "{}", s.name);
        assert_eq!(found.image, file(dir.path(), s, Some(Contrast::Flair)));
        assert_eq!(found.segmentation, file(dir.path(), s, None));
    }
    assert!(written.iter().any(|s| !s.gzip) && written.iter().any(|s| s.gzip));
    assert!(
        written.iter().any(|s| s.naming == Naming::Brats2021)
            && written.iter().any(|s| s.naming == Naming::Brats2023)
    );
    // Another contrast: the BraTS 2023 subjects give their t1c file for T1ce.
    let t1ce = open(dir.path(), Contrast::T1ce);
    let s = t1ce
        .subjects()
        .iter()
        .find(|s| s.naming == Naming::Brats2023)
        .unwrap();
    assert!(s.image.to_string_lossy().ends_with("-t1c.nii.gz"), "{s:?}");
}

#[test]
fn a_missing_segmentation_names_the_folder_and_the_files_expected() {
    let (dir, written) = sample(3);
    std::fs::remove_file(file(dir.path(), &written[0], None)).unwrap();
    let err = BratsFolder::open(dir.path(), Contrast::Flair).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BratsError::MissingFile { .. }), "{text}");
    for part in [
        written[0].name.as_str(),
        "segmentation",
        "BraTS2021_00000_seg.nii.gz",
        "BraTS2021_00000-seg.nii.gz",
        "training set",
    ] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
}

#[test]
fn a_missing_contrast_or_a_duplicate_file_is_named() {
    let (dir, written) = sample(2);
    std::fs::remove_file(file(dir.path(), &written[1], Some(Contrast::T2))).unwrap();
    let text = BratsFolder::open(dir.path(), Contrast::T2)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("t2 image") && text.contains("BraTS-GLI-00001-000-t2w.nii.gz"),
        "{text}"
    );
    // The other contrasts are still there.
    open(dir.path(), Contrast::Flair);

    let flair = file(dir.path(), &written[0], Some(Contrast::Flair));
    let copy = flair.with_file_name("BraTS2021_00000_flair.nii");
    std::fs::copy(&flair, &copy).unwrap();
    let err = BratsFolder::open(dir.path(), Contrast::Flair).unwrap_err();
    assert!(matches!(err, BratsError::Ambiguous { .. }), "{err}");
    assert!(err.to_string().contains("keep one"), "{err}");
}

#[test]
fn a_folder_without_subject_folders_says_where_to_point() {
    let dir = tempfile::tempdir().unwrap();
    let err = BratsFolder::open(dir.path(), Contrast::Flair).unwrap_err();
    assert!(matches!(err, BratsError::NoSubjects(_)), "{err}");
    // The parent of the data set's folder: its only subfolder holds folders, not volumes.
    let inner = dir.path().join("TrainingData");
    write_sample(
        &inner,
        &SampleOptions {
            subjects: 1,
            dims: DIMS,
        },
    )
    .unwrap();
    let text = BratsFolder::open(dir.path(), Contrast::Flair)
        .unwrap_err()
        .to_string();
    assert!(text.contains("subfolder per subject"), "{text}");
    assert_eq!(open(&inner, Contrast::Flair).subjects().len(), 1);
    let missing = BratsFolder::open(&dir.path().join("nope"), Contrast::Flair).unwrap_err();
    assert!(matches!(missing, BratsError::NotAFolder(_)), "{missing}");
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn brats_labels_map_to_the_abnormal_labels() {
    assert_eq!(ABNORMAL_LABELS[1], "necrotic_core");
    assert_eq!(ABNORMAL_LABELS[2], "edema");
    assert_eq!(ABNORMAL_LABELS[3], "enhancing_tumor");
    for naming in Naming::ALL {
        assert_eq!(abnormal_label(0.0, naming), Some(0));
        assert_eq!(abnormal_label(1.0, naming), Some(1));
        assert_eq!(abnormal_label(2.0, naming), Some(2));
        assert_eq!(abnormal_label(4.0, naming), Some(3));
        for bad in [5.0, -1.0, 1.5, f32::NAN, 255.0] {
            assert_eq!(abnormal_label(bad, naming), None, "{bad}");
        }
    }
    assert_eq!(abnormal_label(3.0, Naming::Brats2023), Some(3));
    assert_eq!(abnormal_label(3.0, Naming::Brats2021), None);
}

/// Rewrites subject `s`'s segmentation with `value` at voxel (10, 11, 12) of its own.
fn poke_segmentation(dir: &Path, s: &SampleSubject, value: f32) -> PathBuf {
    let path = file(dir, s, None);
    let seg = volume_from_fn(DIMS, |v| if v == [10, 11, 12] { value } else { 0.0 });
    write_volume(&path, &header(s.grid, DIMS), DIMS, &seg, VoxelType::Float32).unwrap();
    path
}

#[test]
fn an_unknown_label_names_the_file_the_value_and_the_voxel() {
    let (dir, written) = sample(2);
    let path = poke_segmentation(dir.path(), &written[0], 5.0);
    let g = generator(dir.path());
    // Sorted: the BraTS 2023 subject (k = 1) first, then k = 0.
    let err = g.try_slice(CONFIG.slices_per_subject as u64).unwrap_err();
    let text = err.to_string();
    assert!(matches!(*err, BratsError::UnknownLabel { .. }), "{text}");
    let shown = path.display().to_string();
    for part in [shown.as_str(), "value 5", "(10, 11, 12)", "4 enhancing"] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
    // The first subject still reads; the error repeats for every slice of the bad one.
    g.try_slice(0).unwrap();
    assert!(g.try_slice(CONFIG.slices_per_subject as u64 + 1).is_err());

    // 3 is no BraTS 2021 label, but is BraTS 2023's enhancing tumour.
    poke_segmentation(dir.path(), &written[0], 3.0);
    let text = generator(dir.path())
        .try_slice(CONFIG.slices_per_subject as u64)
        .unwrap_err()
        .to_string();
    assert!(text.contains("value 3"), "{text}");
    poke_segmentation(dir.path(), &written[1], 3.0);
    generator(dir.path()).try_slice(0).unwrap();
}

#[test]
fn a_malformed_volume_is_an_error_naming_the_file_not_a_panic() {
    let (dir, written) = sample(1);
    let flair = file(dir.path(), &written[0], Some(Contrast::Flair));
    // A truncated gzip stream, then bytes that are no NIfTI at all.
    let bytes = std::fs::read(&flair).unwrap();
    std::fs::write(&flair, &bytes[..bytes.len() / 2]).unwrap();
    let g = generator(dir.path());
    let text = g.try_slice(0).unwrap_err().to_string();
    assert!(text.contains(&flair.display().to_string()), "{text}");
    std::fs::write(&flair, b"not a NIfTI file at all").unwrap();
    let text = SliceGenerator::try_slice(&generator(dir.path()), 0)
        .unwrap_err()
        .to_string();
    assert!(text.contains(&flair.display().to_string()), "{text}");

    // A segmentation on another grid.
    let (dir, written) = sample(1);
    let seg = file(dir.path(), &written[0], None);
    let small = [DIMS[0], DIMS[1], DIMS[2] - 2];
    let zeros = vec![0.0; small.iter().product()];
    write_volume(
        &seg,
        &header(written[0].grid, small),
        small,
        &zeros,
        VoxelType::Uint8,
    )
    .unwrap();
    let text = generator(dir.path()).try_slice(0).unwrap_err().to_string();
    assert!(text.contains("share one voxel grid"), "{text}");

    // An empty image.
    let (dir, written) = sample(1);
    let s = &written[0];
    let empty = vec![0.0; DIMS.iter().product()];
    write_volume(
        &file(dir.path(), s, Some(Contrast::Flair)),
        &header(s.grid, DIMS),
        DIMS,
        &empty,
        VoxelType::Int16,
    )
    .unwrap();
    // Values that do not fill the volume are refused before anything is written.
    let err = write_volume(
        &dir.path().join("short.nii"),
        &header(s.grid, DIMS),
        DIMS,
        &empty[1..],
        VoxelType::Int16,
    )
    .unwrap_err();
    assert!(err.to_string().contains("values for a volume"), "{err}");
    poke_segmentation(dir.path(), s, 0.0);
    let text = generator(dir.path()).try_slice(0).unwrap_err().to_string();
    assert!(text.contains("no brain"), "{text}");
}

#[test]
fn orientation_comes_from_the_sform_else_the_qform() {
    let path = Path::new("x.nii");
    let brats = header(Grid::Brats, DIMS);
    assert_eq!(
        orientation(&brats, path).unwrap().axes,
        [(0, false), (1, false), (2, false)]
    );
    let ras = header(Grid::Ras, DIMS);
    assert_eq!(
        orientation(&ras, path).unwrap().axes,
        [(0, true), (1, true), (2, false)]
    );
    let mut qform_only = brats.clone();
    qform_only.sform_code = 0;
    qform_only.srow_x = [9.0, 9.0, 9.0, 0.0];
    assert_eq!(
        orientation(&qform_only, path).unwrap().axes,
        [(0, false), (1, false), (2, false)]
    );
    // A sagittal acquisition: voxel axes (y, z, x), stored inferior-up.
    let mut sagittal = brats.clone();
    sagittal.srow_x = [0.0, 0.0, 1.0, 0.0];
    sagittal.srow_y = [1.0, 0.0, 0.0, 0.0];
    sagittal.srow_z = [0.0, -1.0, 0.0, 0.0];
    assert_eq!(
        orientation(&sagittal, path).unwrap().axes,
        [(2, true), (0, true), (1, true)]
    );
    let mut degenerate = brats;
    degenerate.srow_z = [0.0, 2.0, 1.0, 0.0];
    let text = orientation(&degenerate, path).unwrap_err().to_string();
    assert!(text.contains("same world axis"), "{text}");
}

/// Writes one subject whose brain is a box and whose only lesion voxels lie in the patient's
/// right, anterior, upper corner of it, on `grid`.
fn marker_subject(dir: &Path, grid: Grid) {
    let s = SampleSubject {
        name: "BraTS2021_00000".into(),
        naming: Naming::Brats2021,
        gzip: false,
        grid,
        lesion: true,
    };
    let folder = dir.join(&s.name);
    std::fs::create_dir_all(&folder).unwrap();
    let inside = |[c, r, p]: [usize; 3]| {
        (8..40).contains(&c) && (8..40).contains(&r) && (2..28).contains(&p)
    };
    let image = volume_from_fn(DIMS, |v| {
        if inside(sample::display_of(grid, DIMS, v)) {
            100.0
        } else {
            0.0
        }
    });
    let seg = volume_from_fn(DIMS, |v| {
        let [c, r, p] = sample::display_of(grid, DIMS, v);
        if inside([c, r, p]) && c < 14 && r < 14 && p >= 22 {
            4.0
        } else {
            0.0
        }
    });
    let h = header(grid, DIMS);
    let path = |c| folder.join(s.naming.file_name(&s.name, c, false));
    write_volume(
        &path(Some(Contrast::Flair)),
        &h,
        DIMS,
        &image,
        VoxelType::Float32,
    )
    .unwrap();
    write_volume(&path(None), &h, DIMS, &seg, VoxelType::Uint8).unwrap();
}

#[test]
fn slices_show_the_atlas_view_whatever_the_voxel_grid() {
    let mut seen = Vec::new();
    for grid in [Grid::Brats, Grid::Ras] {
        let dir = tempfile::tempdir().unwrap();
        marker_subject(dir.path(), grid);
        let g = generator(dir.path());
        let slices: Vec<_> = (0..6).map(|i| g.try_slice(i).unwrap()).collect();
        // The lesion sits in the upper planes, top-left of the image: anterior at the top, the
        // patient's right on the image's left.
        let top = &slices[5];
        assert!(top.has_lesion && !slices[0].has_lesion, "{grid:?}");
        let (rows, cols) = (top.rows, top.cols);
        for (i, &l) in top.abnormal_labels.iter().enumerate() {
            if l != 0 {
                assert_eq!(l, 3, "BraTS 4 is the enhancing tumour");
                assert!(
                    i / cols < rows / 2 && i % cols < cols / 2,
                    "{grid:?}: pixel {i}"
                );
            }
        }
        // The 32 × 32 brain is centred in the 64 × 64 frame.
        let brain = top.normal_labels.iter().filter(|&&l| l == 1).count();
        assert_eq!(brain, 32 * 32);
        assert_eq!(top.normal_labels[16 * cols + 16], 1);
        assert_eq!(top.normal_labels[15 * cols + 16], 0);
        seen.push(slices);
    }
    assert_eq!(
        seen[0], seen[1],
        "the same subject on two grids gives the same slices"
    );
}

#[test]
fn a_sample_subject_reads_the_same_on_either_grid() {
    let mut seen = Vec::new();
    for grid in [Grid::Brats, Grid::Ras] {
        let dir = tempfile::tempdir().unwrap();
        let s = SampleSubject {
            grid,
            ..sample_subject(0)
        };
        write_subject(dir.path(), 0, &s, DIMS).unwrap();
        let g = generator(dir.path());
        seen.push((0..6).map(|i| g.try_slice(i).unwrap()).collect::<Vec<_>>());
    }
    assert!(seen[0].iter().any(|s| s.has_lesion));
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn levels_spread_evenly_over_the_brain() {
    // Slot s of 4 over planes 10..=30 aims at (s + ½)/4: planes 13 (2.5 rounds up), 18, 23, 28.
    let planes: Vec<(usize, f32)> = (0..4).map(|s| slot_plane(s, 4, (10, 30))).collect();
    assert_eq!(
        planes.iter().map(|p| p.0).collect::<Vec<_>>(),
        [13, 18, 23, 28]
    );
    assert_eq!(planes[1].1, 0.4);
    assert_eq!(slot_plane(0, 3, (7, 7)), (7, 0.5));

    let (dir, _) = sample(2);
    let g = generator(dir.path());
    let levels: Vec<f32> = (0..6).map(|i| g.try_slice(i).unwrap().level).collect();
    assert!(levels.windows(2).all(|w| w[0] < w[1]), "{levels:?}");
    assert!(levels.iter().all(|l| (0.0..=1.0).contains(l)), "{levels:?}");
    for (s, l) in levels.iter().enumerate() {
        let target = (s as f32 + 0.5) / 6.0;
        assert!(
            (l - target).abs() < 0.05,
            "slot {s}: level {l}, aimed at {target}"
        );
    }
}

#[test]
fn slices_carry_whole_stored_values_the_brain_mask_and_the_lesion() {
    let (dir, written) = sample(3);
    let g = generator(dir.path());
    assert_eq!(g.name(), "brats");
    assert_eq!(g.normal_labels(), &NORMAL_LABELS);
    assert!(!g.has_twins());
    assert_eq!(g.slice_count(), Some(18));
    assert_eq!(SliceGenerator::slices_per_subject(&g), 6);
    let mut brain_values = Vec::new();
    let mut lesion_subjects = std::collections::BTreeSet::new();
    let mut labels_seen = [false; 4];
    for i in 0..18 {
        let s = g.try_slice(i).unwrap();
        assert_eq!((s.index, s.subject), (i, i / 6));
        assert_eq!((s.rows, s.cols), (64, 64));
        assert!(s.healthy_twin.is_empty());
        assert_eq!(s.image.len(), 64 * 64);
        for ((&v, &n), &a) in s.image.iter().zip(&s.normal_labels).zip(&s.abnormal_labels) {
            assert!(v.fract() == 0.0 && (0.0..=4000.0).contains(&v), "{v}");
            assert!(n <= 1 && a <= 3);
            if n == 0 {
                assert_eq!((v, a), (0.0, 0), "background is 0 and has no lesion");
            } else {
                brain_values.push(v);
            }
        }
        assert_eq!(s.has_lesion, s.abnormal_labels.iter().any(|&a| a != 0));
        if s.has_lesion {
            lesion_subjects.insert(s.subject);
        }
        for &a in &s.abnormal_labels {
            labels_seen[usize::from(a)] = true;
        }
    }
    assert_eq!(labels_seen, [true; 4], "every abnormal label shows");
    brain_values.sort_by(f32::total_cmp);
    let p99 = brain_values[(brain_values.len() - 1) * 99 / 100];
    assert!((2500.0..=3500.0).contains(&p99), "99th percentile {p99}");
    // Subjects sorted: k = 1 (healthy), k = 0 and k = 2 (lesions).
    let sick: Vec<u64> = lesion_subjects.into_iter().collect();
    assert_eq!(sick, [1, 2]);
    assert!(!written[1].lesion);
}

#[test]
fn slices_are_deterministic_and_random_access() {
    let (dir, _) = sample(3);
    let (a, b) = (generator(dir.path()), generator(dir.path()));
    let forward: Vec<_> = (0..18).map(|i| a.try_slice(i).unwrap()).collect();
    let backward: Vec<_> = (0..18).rev().map(|i| b.try_slice(i).unwrap()).collect();
    assert!(forward.iter().eq(backward.iter().rev()));
    assert_eq!(a.try_slice(7).unwrap(), forward[7]);
    let err = a.try_slice(18).unwrap_err();
    assert!(matches!(*err, BratsError::OutOfRange { .. }), "{err}");
}

#[test]
fn a_subject_is_read_once_and_the_cache_stays_bounded() {
    let (dir, _) = sample(SUBJECT_CACHE + 2);
    let g = generator(dir.path());
    // Four threads read the slices of subjects 0 and 1 at once: each subject is read once.
    std::thread::scope(|s| {
        for t in 0..4 {
            let g = &g;
            s.spawn(move || {
                for i in 0..12 {
                    g.try_slice((i + 3 * t) % 12).unwrap();
                }
            });
        }
    });
    assert_eq!(g.subjects_read(), 2);
    // Use every subject once: subject 0 then left the cache and is read again.
    for subject in 0..SUBJECT_CACHE as u64 + 2 {
        g.try_slice(subject * 6).unwrap();
    }
    assert_eq!(g.subjects_read(), SUBJECT_CACHE as u64 + 2);
    g.try_slice(0).unwrap();
    assert_eq!(g.subjects_read(), SUBJECT_CACHE as u64 + 3);
    // The most recent subject is still there.
    g.try_slice(5).unwrap();
    assert_eq!(g.subjects_read(), SUBJECT_CACHE as u64 + 3);
}

#[test]
fn query_and_reference_subjects_are_disjoint_and_fixed() {
    let (dir, _) = sample(8);
    let folder = open(dir.path(), Contrast::Flair);
    // 12 queries at 6 per subject: 2 query subjects, every 4th of 8.
    let split = BratsSplit::new(Arc::clone(&folder), 12, CONFIG).unwrap();
    assert_eq!(split.queries.subjects(), [3, 7]);
    assert_eq!(split.references.subjects(), [0, 1, 2, 4, 5, 6]);
    assert_eq!(split.queries.len(), 12);
    assert_eq!(split.references.slice_count(), Some(36));
    // As many query subjects, the same split; one more, another.
    let again = BratsSplit::new(Arc::clone(&folder), 7, CONFIG).unwrap();
    assert_eq!(again.queries.subjects(), [3, 7]);
    let three = BratsSplit::new(Arc::clone(&folder), 13, CONFIG).unwrap();
    assert_eq!(three.queries.subjects(), [1, 3, 5]);
    assert_eq!(three.references.subjects(), [0, 2, 4, 6, 7]);
    // Seven query subjects leave one reference subject; eight leave none.
    let seven = BratsSplit::new(Arc::clone(&folder), 42, CONFIG).unwrap();
    assert_eq!(seven.references.subjects(), [7]);
    let err = BratsSplit::new(Arc::clone(&folder), 43, CONFIG).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("holds 8 subjects") && text.contains("need 8 query subjects"),
        "{text}"
    );
    let err = BratsSplit::new(
        folder,
        12,
        BratsConfig {
            slices_per_subject: 0,
            ..CONFIG
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}
