//! The contact sheet of the atlas source: real anatomy, deformed per subject, with lesions and
//! their healthy twins (written to docs/ with `DIPTYCH_WRITE_DOCS=1`).

use std::path::PathBuf;
use std::sync::Arc;

use diptych::atlas::{AtlasConfig, AtlasGenerator, AtlasMaps};
use diptych::phantom::write_contact_sheet;

#[test]
fn atlas_contact_sheet_shows_lesions_and_anatomy() {
    let maps =
        Arc::new(AtlasMaps::open(&AtlasMaps::default_dir()).unwrap_or_else(|e| panic!("{e}")));
    let generator = AtlasGenerator::new(
        maps,
        1,
        AtlasConfig {
            healthy_fraction: 0.25,
            ..AtlasConfig::default()
        },
    );
    // Two subjects, four levels each, from low to high.
    let slices: Vec<_> = [3u64, 6, 9, 12, 19, 22, 25, 28]
        .iter()
        .map(|&i| generator.slice(i))
        .collect();
    assert!(slices.iter().filter(|s| s.has_lesion).count() >= 4);
    let dir = std::env::temp_dir().join(format!("diptych-atlas-sheet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sheet.png");
    write_contact_sheet(&slices, &path).unwrap();
    let decoded = image::open(&path).unwrap().to_rgb8();
    assert_eq!(decoded.height(), slices.len() as u32 * (192 + 4) + 4);
    std::fs::remove_dir_all(&dir).unwrap();
    if std::env::var("DIPTYCH_WRITE_DOCS").as_deref() == Ok("1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
        write_contact_sheet(&slices, &docs.join("anatomy-contact-sheet.png")).unwrap();
    }
}
