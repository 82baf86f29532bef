//! The image contract on known arrays: modality LUT, MONOCHROME1, normalisation, resize, padding
//! and label placement.

use std::time::Instant;

use diptych::preprocess::{
    Photometric, PreprocessError, PreprocessParams, RawFrame, place_labels, placement_for,
    preprocess, preprocess_with_window, window,
};

fn frame(rows: usize, cols: usize, pixels: &[f32]) -> RawFrame<'_> {
    RawFrame {
        rows,
        cols,
        pixels,
        rescale_slope: 1.0,
        rescale_intercept: 0.0,
        photometric: Photometric::Monochrome2,
    }
}

/// Parameters that map the minimum to 0 and the maximum to 1.
fn full_range(input_size: usize) -> PreprocessParams {
    PreprocessParams {
        input_size,
        low_percentile: 0.0,
        high_percentile: 100.0,
    }
}

fn assert_close(actual: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "pixel {i}: {a} vs {e}");
    }
}

#[test]
fn defaults_match_the_contract() {
    let p = PreprocessParams::default();
    assert_eq!(
        (p.input_size, p.low_percentile, p.high_percentile),
        (128, 0.5, 99.5)
    );
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(
        json,
        r#"{"input_size":128,"low_percentile":0.5,"high_percentile":99.5}"#
    );
}

#[test]
fn same_size_square_frame_is_only_normalised() {
    let pixels = [10.0, 20.0, 30.0, 50.0];
    let out = preprocess(&frame(2, 2, &pixels), &full_range(2)).unwrap();
    assert_close(&out.pixels, &[0.0, 0.25, 0.5, 1.0], 1e-6);
    assert_eq!(out.size, 2);
    assert_eq!(out.placement.offset_row, 0);
    assert_eq!(out.placement.content_cols, 2);
}

#[test]
fn modality_lut_is_applied_before_normalisation() {
    // Stored 0..3 with slope −2: values 0, −2, −4, −6, i.e. the order is reversed.
    let stored = [0.0, 1.0, 2.0, 3.0];
    let mut f = frame(2, 2, &stored);
    f.rescale_slope = -2.0;
    f.rescale_intercept = 1000.0;
    let out = preprocess(&f, &full_range(2)).unwrap();
    assert_close(&out.pixels, &[1.0, 2.0 / 3.0, 1.0 / 3.0, 0.0], 1e-6);

    // A positive rescale gives the same result as rescaled stored values.
    let mut f = frame(2, 2, &stored);
    f.rescale_slope = 2.5;
    f.rescale_intercept = -1024.0;
    let rescaled: Vec<f32> = stored.iter().map(|v| v * 2.5 - 1024.0).collect();
    let a = preprocess(&f, &PreprocessParams::default()).unwrap();
    let b = preprocess(&frame(2, 2, &rescaled), &PreprocessParams::default()).unwrap();
    assert_close(&a.pixels, &b.pixels, 1e-6);
}

#[test]
fn monochrome1_is_inverted() {
    let pixels = [0.0, 100.0, 300.0, 400.0];
    let m2 = preprocess(&frame(2, 2, &pixels), &full_range(2)).unwrap();
    let mut f = frame(2, 2, &pixels);
    f.photometric = Photometric::Monochrome1;
    let m1 = preprocess(&f, &full_range(2)).unwrap();
    assert_close(&m1.pixels, &[1.0, 0.75, 0.25, 0.0], 1e-6);
    for (a, b) in m1.pixels.iter().zip(&m2.pixels) {
        assert!((a + b - 1.0).abs() < 1e-6);
    }
}

#[test]
fn percentiles_map_to_zero_and_one_and_clip_outside() {
    // The values 0..=100 in a 1×101 frame.
    let pixels: Vec<f32> = (0..=100).map(|v| v as f32).collect();
    let params = PreprocessParams {
        input_size: 101,
        low_percentile: 10.0,
        high_percentile: 90.0,
    };
    // 1×101 enlarges to 101×101 by bilinear rows (identity along columns): row 0 of the
    // content holds the normalised values.
    let out = preprocess(&frame(1, 101, &pixels), &params).unwrap();
    assert_eq!(out.placement.content_rows, 1);
    assert_eq!(out.placement.offset_row, 50);
    let row = &out.pixels[50 * 101..51 * 101];
    let expected: Vec<f32> = (0..=100)
        .map(|v| ((v as f32 - 10.0) / 80.0).clamp(0.0, 1.0))
        .collect();
    assert_close(row, &expected, 1e-6);

    // The default 0.5/99.5 percentiles interpolate between order statistics.
    let pixels: Vec<f32> = (0..=200).map(|v| v as f32).collect();
    let out = preprocess(
        &frame(1, 201, &pixels),
        &PreprocessParams {
            input_size: 201,
            ..PreprocessParams::default()
        },
    )
    .unwrap();
    let row = &out.pixels[100 * 201..101 * 201];
    assert_eq!(row[0], 0.0);
    assert_eq!(row[1], 0.0);
    assert!((row[2] - 1.0 / 198.0).abs() < 1e-6);
    assert_eq!(row[199], 1.0);
    assert_eq!(row[200], 1.0);
}

#[test]
fn constant_and_nearly_constant_frames_do_not_divide_by_zero() {
    let constant = vec![7.0f32; 64];
    let out = preprocess(&frame(8, 8, &constant), &PreprocessParams::default()).unwrap();
    assert!(out.pixels.iter().all(|&v| v == 0.0));

    // One bright pixel among 400: both percentiles fall on the background, so the min/max
    // fallback keeps the pixel visible.
    let mut sparse = vec![0.0f32; 400];
    sparse[210] = 5.0;
    let out = preprocess(&frame(20, 20, &sparse), &full_range(20)).unwrap();
    let defaults = preprocess(
        &frame(20, 20, &sparse),
        &PreprocessParams {
            input_size: 20,
            ..PreprocessParams::default()
        },
    )
    .unwrap();
    assert_eq!(out.pixels[210], 1.0);
    assert_eq!(defaults.pixels[210], 1.0);
    assert!(defaults.pixels.iter().all(|v| v.is_finite()));
}

#[test]
fn shrinking_averages_areas() {
    // 4×4 blocks of 2×2 with values 0, 1, 2, ... → each output pixel is one block's value.
    let mut pixels = vec![0.0f32; 64];
    for r in 0..8 {
        for c in 0..8 {
            pixels[r * 8 + c] = ((r / 2) * 4 + c / 2) as f32;
        }
    }
    let out = preprocess(&frame(8, 8, &pixels), &full_range(4)).unwrap();
    let expected: Vec<f32> = (0..16).map(|v| v as f32 / 15.0).collect();
    assert_close(&out.pixels, &expected, 1e-6);

    // A fine checkerboard averages to flat grey (no aliasing).
    let checker: Vec<f32> = (0..64).map(|i| ((i / 8 + i % 8) % 2) as f32).collect();
    let out = preprocess(&frame(8, 8, &checker), &full_range(4)).unwrap();
    assert_close(&out.pixels, &[0.5; 16], 1e-6);

    // A non-integer factor still preserves the mean.
    let ramp: Vec<f32> = (0..49).map(|i| (i % 7) as f32).collect();
    let out = preprocess(&frame(7, 7, &ramp), &full_range(3)).unwrap();
    let mean: f32 = out.pixels.iter().sum::<f32>() / 9.0;
    assert!((mean - 0.5).abs() < 1e-5, "mean {mean}");
}

#[test]
fn enlarging_interpolates_bilinearly() {
    let pixels = [0.0, 1.0, 0.0, 1.0];
    let out = preprocess(&frame(2, 2, &pixels), &full_range(4)).unwrap();
    let row = [0.0, 0.25, 0.75, 1.0];
    for r in 0..4 {
        assert_close(&out.pixels[r * 4..(r + 1) * 4], &row, 1e-6);
    }
}

#[test]
fn non_square_frames_are_centred_with_zero_padding() {
    // Tall: 6×4 into 12×12 → content 12×8, two padding columns each side.
    let tall = vec![1.0f32; 24];
    let mut tall_with_range = tall.clone();
    tall_with_range[0] = 0.0;
    let out = preprocess(&frame(6, 4, &tall_with_range), &full_range(12)).unwrap();
    let p = out.placement;
    assert_eq!(
        (p.content_rows, p.content_cols, p.offset_row, p.offset_col),
        (12, 8, 0, 2)
    );
    assert!((p.scale - 2.0).abs() < 1e-6);
    for r in 0..12 {
        for c in 0..12 {
            let v = out.pixels[r * 12 + c];
            if !(2..10).contains(&c) {
                assert_eq!(v, 0.0, "padding at {r},{c}");
            } else if r > 2 || c > 4 {
                assert_eq!(v, 1.0, "content at {r},{c}");
            }
        }
    }

    // Wide: 4×6 into 12×12 → content 8×12, two padding rows above and below.
    let p = placement_for(4, 6, 12);
    assert_eq!(
        (p.content_rows, p.content_cols, p.offset_row, p.offset_col),
        (8, 12, 2, 0)
    );

    // The phantom's 192×160 into 128: 128×107 content, 10 columns of padding on the left.
    let p = placement_for(192, 160, 128);
    assert_eq!(
        (p.content_rows, p.content_cols, p.offset_row, p.offset_col),
        (128, 107, 0, 10)
    );
}

#[test]
fn labels_land_on_the_structure_they_label() {
    // A bright rectangle in a 16×8 frame, labelled 3; into 8×8 the scale is exactly 1/2.
    let (rows, cols) = (16, 8);
    let mut pixels = vec![0.0f32; rows * cols];
    let mut labels = vec![0u8; rows * cols];
    for r in 4..10 {
        for c in 2..6 {
            pixels[r * cols + c] = 100.0;
            labels[r * cols + c] = 3;
        }
    }
    let out = preprocess(&frame(rows, cols, &pixels), &full_range(8)).unwrap();
    let placed = place_labels(&labels, rows, cols, &out.placement, 8);
    assert_eq!(placed.len(), 64);
    for (i, (&l, &v)) in placed.iter().zip(&out.pixels).enumerate() {
        if l == 3 {
            assert_eq!(v, 1.0, "labelled pixel {i} is not on the rectangle");
        } else {
            assert_eq!(v, 0.0, "unlabelled pixel {i} is on the rectangle");
        }
    }
    assert_eq!(placed.iter().filter(|&&l| l == 3).count(), 3 * 2);

    // Enlarging: each source pixel becomes a 3×3 block of its label, padded with 0.
    let labels = [1u8, 2, 3, 4, 5, 6];
    let p = placement_for(2, 3, 9);
    let placed = place_labels(&labels, 2, 3, &p, 9);
    assert_eq!((p.offset_row, p.content_rows), (1, 6));
    assert!(placed[..9].iter().all(|&l| l == 0));
    assert!(placed[7 * 9..].iter().all(|&l| l == 0));
    assert_eq!(&placed[9..18], &[1, 1, 1, 2, 2, 2, 3, 3, 3]);
    assert_eq!(&placed[6 * 9..7 * 9], &[4, 4, 4, 5, 5, 5, 6, 6, 6]);
}

#[test]
fn bad_frames_and_parameters_are_refused_with_the_reason() {
    let pixels = [1.0f32; 6];
    let params = PreprocessParams::default();
    let check = |f: RawFrame, p: &PreprocessParams| preprocess(&f, p).unwrap_err();

    assert!(matches!(
        check(frame(0, 6, &[]), &params),
        PreprocessError::EmptyGeometry { rows: 0, cols: 6 }
    ));
    assert!(matches!(
        check(frame(2, 0, &[]), &params),
        PreprocessError::EmptyGeometry { .. }
    ));
    let err = check(frame(2, 4, &pixels), &params);
    assert!(matches!(
        err,
        PreprocessError::PixelCountMismatch {
            expected: 8,
            actual: 6,
            ..
        }
    ));
    assert!(err.to_string().contains("needs 8 pixels"));
    assert!(matches!(
        check(frame(2, 3, &[]), &params),
        PreprocessError::PixelCountMismatch { actual: 0, .. }
    ));
    for (slope, intercept) in [
        (f32::NAN, 0.0),
        (f32::INFINITY, 0.0),
        (0.0, 0.0),
        (1.0, f32::NAN),
    ] {
        let mut f = frame(2, 3, &pixels);
        f.rescale_slope = slope;
        f.rescale_intercept = intercept;
        assert!(matches!(
            check(f, &params),
            PreprocessError::BadRescale { .. }
        ));
    }
    let with_nan = [1.0, 2.0, f32::NAN, 4.0, 5.0, 6.0];
    assert!(matches!(
        check(frame(2, 3, &with_nan), &params),
        PreprocessError::NonFinitePixel { index: 2, .. }
    ));
    let zero = PreprocessParams {
        input_size: 0,
        ..params
    };
    assert_eq!(
        check(frame(2, 3, &pixels), &zero),
        PreprocessError::ZeroInputSize
    );
    for (low, high) in [(50.0, 50.0), (-1.0, 99.0), (1.0, 100.5), (f32::NAN, 99.0)] {
        let bad = PreprocessParams {
            low_percentile: low,
            high_percentile: high,
            ..params
        };
        assert!(matches!(
            check(frame(2, 3, &pixels), &bad),
            PreprocessError::BadPercentiles { .. }
        ));
    }
}

#[test]
fn output_is_in_unit_range_and_fast() {
    // An MR-like 192×160 frame with outliers on both sides.
    let (rows, cols) = (192, 160);
    let pixels: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let (r, c) = ((i / cols) as f32, (i % cols) as f32);
            let d = ((r - 96.0).powi(2) / 80.0f32.powi(2) + (c - 80.0).powi(2) / 64.0f32.powi(2))
                .sqrt();
            if d < 1.0 {
                1500.0 + 300.0 * (r * 0.3).sin() + (i % 7) as f32
            } else {
                (i % 3) as f32
            }
        })
        .collect();
    let f = frame(rows, cols, &pixels);
    let params = PreprocessParams::default();
    let out = preprocess(&f, &params).unwrap();
    assert_eq!(out.pixels.len(), 128 * 128);
    assert!(out.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(out.pixels.iter().any(|&v| v > 0.9));

    let n = if cfg!(debug_assertions) { 5 } else { 500 };
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(preprocess(std::hint::black_box(&f), &params).unwrap());
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    println!("preprocess: {ms:.3} ms per 192×160 → 128×128 frame");
    if !cfg!(debug_assertions) {
        // Target well under 1 ms; the bound leaves room for a busy shared machine.
        assert!(ms < 3.0, "{ms:.3} ms per frame");
    }
}

#[test]
fn a_companion_frame_can_share_the_window_of_its_image() {
    let image: Vec<f32> = (0..100).map(|v| v as f32).collect();
    // The companion lacks the bright end of the image.
    let twin: Vec<f32> = (0..100).map(|v| (v as f32).min(50.0)).collect();
    let params = PreprocessParams {
        input_size: 10,
        ..PreprocessParams::default()
    };
    let f = frame(10, 10, &image);
    let w = window(&f, &params).unwrap();
    assert!(
        (w.low - 0.495).abs() < 1e-4 && (w.high - 98.505).abs() < 1e-3,
        "{w:?}"
    );
    let own = preprocess(&f, &params).unwrap();
    let shared = preprocess_with_window(&f, &params, &w).unwrap();
    assert_eq!(own, shared, "the same window gives the same pixels");

    let t = frame(10, 10, &twin);
    let twin_own = preprocess(&t, &params).unwrap();
    let twin_shared = preprocess_with_window(&t, &params, &w).unwrap();
    // On its own the twin stretches 50 to 1; on the image's scale 50 stays mid-grey, as in the
    // image.
    assert!(twin_own.pixels[99] > 0.999_99);
    assert!((twin_shared.pixels[99] - own.pixels[50]).abs() < 1e-6);
    assert_eq!(&twin_shared.pixels[..50], &own.pixels[..50]);

    let mut inverted = frame(10, 10, &image);
    inverted.photometric = Photometric::Monochrome1;
    let w = window(&inverted, &params).unwrap();
    assert!(
        w.high < 0.0,
        "MONOCHROME1 windows are on negated values: {w:?}"
    );
    assert!(window(&frame(0, 10, &[]), &params).is_err());
}
