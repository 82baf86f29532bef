//! The contact sheet decodes as a PNG of the expected size; with `DIPTYCH_WRITE_DOCS=1` the test
//! also refreshes `docs/phantom-contact-sheet.png`.

use std::path::PathBuf;

use diptych::phantom::{PhantomConfig, PhantomGenerator, write_contact_sheet};

/// Slices with a spread of levels, lesions and one healthy slice.
fn sample_slices() -> Vec<diptych::phantom::SyntheticSlice> {
    let generator = PhantomGenerator::new(1, PhantomConfig::default());
    let mut slices = Vec::new();
    let mut healthy = 0;
    // Slots 1, 4, 7, 10, 13 of successive subjects walk from the skull base to the vertex.
    for subject in 0..40u64 {
        let slot = [1u64, 4, 6, 8, 10, 13][slices.len() % 6];
        let slice = generator.slice(subject * 16 + slot);
        if !slice.has_lesion {
            if healthy >= 1 {
                continue;
            }
            healthy += 1;
        }
        slices.push(slice);
        if slices.len() == 6 {
            break;
        }
    }
    slices
}

#[test]
fn contact_sheet_is_a_png_grid_of_four_panels_per_slice() {
    let slices = sample_slices();
    let dir = std::env::temp_dir().join(format!("diptych-sheet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sheet.png");
    write_contact_sheet(&slices, &path).unwrap();
    let decoded = image::open(&path).unwrap().to_rgb8();
    let (rows, cols) = (slices[0].rows as u32, slices[0].cols as u32);
    assert_eq!(decoded.width(), 4 * cols + 5 * 4);
    assert_eq!(decoded.height(), slices.len() as u32 * (rows + 4) + 4);
    // The abnormal overlay panel of a diseased slice holds lesion colours.
    let coloured = decoded
        .pixels()
        .filter(|p| p[0] as i32 - p[2] as i32 > 90)
        .count();
    assert!(
        coloured > 50,
        "only {coloured} pixels carry a lesion colour"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    if std::env::var("DIPTYCH_WRITE_DOCS").as_deref() == Ok("1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        write_contact_sheet(&slices, &docs.join("phantom-contact-sheet.png")).unwrap();
    }
}

#[test]
fn contact_sheet_refuses_an_empty_list() {
    let path = std::env::temp_dir().join("diptych-empty-sheet.png");
    assert!(write_contact_sheet(&[], &path).is_err());
}
