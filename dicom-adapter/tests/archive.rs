//! What real archives send (issue #10): colour layouts, palette colour, non-image objects with
//! pixel data, and file meta groups with slightly malformed UIDs. The files are written by
//! pydicom (`tests/python/archive_objects.py`) and converted by dcmtk and GDCM; each decoded
//! frame is compared against the luma of the known picture they all hold.

use std::path::{Path, PathBuf};
use std::process::Command;

use diptych_dicom_adapter::{AdapterError, Limits, parse};

const ROWS: usize = 48;
const COLS: usize = 64;

/// The known picture: RGB(x, y) = (4x % 256, 5y % 256, 3(x + y) % 256).
fn known_rgb(x: usize, y: usize) -> [f32; 3] {
    [
        ((4 * x) % 256) as f32,
        ((5 * y) % 256) as f32,
        ((3 * (x + y)) % 256) as f32,
    ]
}

fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// Luma of the known picture, row-major.
fn known_luma() -> Vec<f32> {
    (0..ROWS)
        .flat_map(|y| (0..COLS).map(move |x| luma(known_rgb(x, y))))
        .collect()
}

/// Luma of the palette images (index (x + 2y) % 256, LUT R = i, G = 255 - i, B = 7i % 256), on
/// the 8-bit scale.
fn known_palette_luma() -> Vec<f32> {
    (0..ROWS)
        .flat_map(|y| {
            (0..COLS).map(move |x| {
                let i = (x + 2 * y) % 256;
                luma([i as f32, (255 - i) as f32, ((7 * i) % 256) as f32])
            })
        })
        .collect()
}

fn python() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME is set");
    let python = Path::new(&home).join(".cache/diptych/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: create it with `python3 -m venv ~/.cache/diptych/py-venv && ~/.cache/diptych/py-venv/bin/pip install pynetdicom pydicom numpy`",
        python.display()
    );
    python
}

/// Writes the objects of `archive_objects.py` into a fresh folder.
fn archive_objects(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diptych-archive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/archive_objects.py");
    let output = Command::new(python())
        .arg("-W")
        .arg("ignore")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "archive_objects.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

fn tool(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (apt-get install dcmtk libgdcm-tools): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn decode(path: &Path) -> Result<Vec<f32>, AdapterError> {
    let instance = parse(&std::fs::read(path).unwrap(), &Limits::default())?;
    Ok(instance.decode_frame(0)?.values)
}

fn largest_error(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f32::max)
}

#[test]
fn colour_layouts_decode_to_the_luma_of_the_known_picture() {
    let dir = archive_objects("colour");
    let expected = known_luma();
    // RLE and planar configuration 1 made by real tools from the colour-by-pixel file.
    let rgb = dir.join("rgb.dcm");
    let gdcm_planar = dir.join("rgb_gdcm_planar.dcm");
    tool(
        "gdcmconv",
        &[
            "--raw",
            "--planar-configuration",
            "1",
            rgb.to_str().unwrap(),
            gdcm_planar.to_str().unwrap(),
        ],
    );
    let rle = dir.join("rgb_rle.dcm");
    tool("dcmcrle", &[rgb.to_str().unwrap(), rle.to_str().unwrap()]);
    let planar_rle = dir.join("rgb_planar_rle.dcm");
    tool(
        "dcmcrle",
        &[
            dir.join("rgb_planar.dcm").to_str().unwrap(),
            planar_rle.to_str().unwrap(),
        ],
    );
    let planar_ybr = dir.join("ybr_full_planar_dcmconv.dcm");
    tool(
        "dcmconv",
        &[
            "+ti",
            dir.join("ybr_full_planar.dcm").to_str().unwrap(),
            planar_ybr.to_str().unwrap(),
        ],
    );
    // (file, largest error against the known luma): YBR holds Y rounded to an integer.
    for (file, tolerance) in [
        ("rgb.dcm", 1e-3),
        ("rgb_planar.dcm", 1e-3),
        ("rgb_gdcm_planar.dcm", 1e-3),
        ("rgb_rle.dcm", 1e-3),
        ("rgb_planar_rle.dcm", 1e-3),
        ("ybr_full.dcm", 0.51),
        ("ybr_full_planar.dcm", 0.51),
        ("ybr_full_planar_dcmconv.dcm", 0.51),
        ("ybr_full_422.dcm", 0.51),
    ] {
        let actual = decode(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let error = largest_error(&actual, &expected);
        assert!(error <= tolerance, "{file}: largest luma error {error}");
    }
    // Lossy JPEG of the colour picture (dcmtk writes YBR_FULL_422): close, not exact.
    let jpeg = dir.join("rgb_jpeg.dcm");
    tool(
        "dcmcjpeg",
        &[
            "+eb",
            "+q",
            "95",
            rgb.to_str().unwrap(),
            jpeg.to_str().unwrap(),
        ],
    );
    let actual = decode(&jpeg).unwrap();
    let mean = actual
        .iter()
        .zip(&expected)
        .map(|(a, e)| (a - e).abs())
        .sum::<f32>()
        / expected.len() as f32;
    assert!(mean < 3.0, "JPEG colour: mean luma error {mean}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn palette_colour_images_index_the_luma_of_their_palette() {
    let dir = archive_objects("palette");
    let expected = known_palette_luma();
    // (file, scale of the palette entries)
    let rle = dir.join("palette16_rle.dcm");
    tool(
        "dcmcrle",
        &[
            dir.join("palette16_lut16.dcm").to_str().unwrap(),
            rle.to_str().unwrap(),
        ],
    );
    for (file, scale) in [
        ("palette8_lut16.dcm", 257.0),
        ("palette8_lut8.dcm", 1.0),
        ("palette16_lut16.dcm", 257.0),
        ("palette16_rle.dcm", 257.0),
    ] {
        let actual: Vec<f32> = decode(&dir.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .iter()
            .map(|v| v / scale)
            .collect();
        let error = largest_error(&actual, &expected);
        assert!(error <= 1e-3, "{file}: largest luma error {error}");
    }
    let error = decode(&dir.join("palette_segmented.dcm")).unwrap_err();
    assert!(
        matches!(error, AdapterError::Palette { .. }) && error.to_string().contains("segmented"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn thirty_two_bit_monochrome_images_decode_to_their_modality_values() {
    let dir = archive_objects("mono32");
    // Stored 40000·(x + 2y) + offset, rescaled by 0.25 and -10 (see archive_objects.py).
    let expected = |offset: f64| -> Vec<f32> {
        let mut values = Vec::new();
        for y in 0..48 {
            for x in 0..64 {
                values.push(((40_000 * (x + 2 * y)) as f64 + offset) * 0.25 - 10.0);
            }
        }
        values.into_iter().map(|v| v as f32).collect()
    };
    for (file, offset, frames) in [
        ("mono32_unsigned.dcm", 3.0, 1),
        ("mono32_signed.dcm", -2_000_000.0, 2),
    ] {
        let instance = parse(&std::fs::read(dir.join(file)).unwrap(), &Limits::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(instance.is_image(), "{file}");
        assert_eq!(instance.frame_count().unwrap(), frames, "{file}");
        for frame in 0..frames {
            let decoded = instance
                .decode_frame(frame)
                .unwrap_or_else(|e| panic!("{file} frame {frame}: {e}"));
            let error = largest_error(&decoded.values, &expected(offset));
            assert!(error <= 0.5, "{file} frame {frame}: largest error {error}");
        }
    }
    // A deflated data set decodes too; a big endian one is refused with the fix in the message.
    let deflated = dir.join("mono32_deflated.dcm");
    tool(
        "dcmconv",
        &[
            "+td",
            dir.join("mono32_unsigned.dcm").to_str().unwrap(),
            deflated.to_str().unwrap(),
        ],
    );
    let values = decode(&deflated).unwrap_or_else(|e| panic!("deflated: {e}"));
    assert!(
        largest_error(&values, &expected(3.0)) <= 0.5,
        "deflated data sets decode too"
    );
    let big = dir.join("mono32_big_endian.dcm");
    tool(
        "dcmconv",
        &[
            "+tb",
            dir.join("mono32_unsigned.dcm").to_str().unwrap(),
            big.to_str().unwrap(),
        ],
    );
    let error = decode(&big).unwrap_err();
    assert!(error.to_string().contains("little endian"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segmentations_dose_grids_plans_and_reports_are_valid_but_not_images() {
    let dir = archive_objects("non-image");
    for file in ["seg.dcm", "rtdose.dcm", "rtplan.dcm", "sr.dcm"] {
        let instance = parse(&std::fs::read(dir.join(file)).unwrap(), &Limits::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        instance.uids().unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!instance.is_image(), "{file} counted as an image");
        let error = instance.geometry().unwrap_err();
        assert!(
            matches!(error, AdapterError::NotAnImage { .. }),
            "{file}: {error}"
        );
    }
    let seg = parse(
        &std::fs::read(dir.join("seg.dcm")).unwrap(),
        &Limits::default(),
    )
    .unwrap();
    assert!(
        seg.not_a_picture().unwrap().contains("segmentation"),
        "{:?}",
        seg.not_a_picture()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_meta_groups_with_slightly_malformed_uids_are_read_on() {
    let dir = archive_objects("meta");
    let expected = known_luma();
    for file in [
        "meta_trailing_space.dcm",
        "meta_trailing_nul.dcm",
        "meta_leading_zero.dcm",
        "meta_padding_differs.dcm",
    ] {
        let instance = parse(&std::fs::read(dir.join(file)).unwrap(), &Limits::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            instance.transfer_syntax(),
            "1.2.840.10008.1.2.1",
            "{file}: transfer syntax as read"
        );
        let uids = instance.uids().unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            uids.sop_instance
                .as_str()
                .starts_with("1.2.826.0.1.3680043.10.1047.10.3")
        );
        let actual = instance
            .decode_frame(0)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .values;
        assert!(largest_error(&actual, &expected) < 1e-3, "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
