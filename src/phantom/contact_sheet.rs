//! A PNG contact sheet of phantom slices: for each slice, the image, its healthy twin, the normal
//! labels and the abnormal labels overlaid in colour.

use std::path::Path;

use image::error::{ParameterError, ParameterErrorKind};
use image::{ImageError, ImageFormat, Rgb, RgbImage};

use super::SyntheticSlice;

/// Overlay colours of the normal labels (index = label; background unused).
const NORMAL_COLOURS: [[u8; 3]; 7] = [
    [0, 0, 0],
    [70, 130, 255], // left cerebrum: blue
    [60, 200, 90],  // right cerebrum: green
    [255, 150, 40], // left cerebellum: orange
    [235, 225, 60], // right cerebellum: yellow
    [0, 230, 230],  // left ventricle: cyan
    [235, 60, 235], // right ventricle: magenta
];

/// Overlay colours of the abnormal labels, as BraTS figures draw them.
const ABNORMAL_COLOURS: [[u8; 3]; 4] = [
    [0, 0, 0],
    [235, 40, 40],  // necrotic core: red
    [40, 220, 60],  // edema: green
    [250, 230, 40], // enhancing tumour: yellow
];

/// Gap between panels, in pixels.
const GAP: u32 = 4;

/// Panels per slice: image, twin, normal overlay, abnormal overlay.
const PANELS: u32 = 4;

/// Writes a PNG grid of `slices` to `path`: one row per slice with its image, its healthy twin,
/// the normal labels and the abnormal labels over the image (both images share one window).
pub fn write_contact_sheet(slices: &[SyntheticSlice], path: &Path) -> Result<(), ImageError> {
    if slices.is_empty() {
        return Err(ImageError::Parameter(ParameterError::from_kind(
            ParameterErrorKind::Generic("a contact sheet needs at least one slice".into()),
        )));
    }
    let cell_w = slices.iter().map(|s| s.cols).max().unwrap_or(1) as u32;
    let cell_h = slices.iter().map(|s| s.rows).max().unwrap_or(1) as u32;
    let width = PANELS * cell_w + (PANELS + 1) * GAP;
    let height = slices.len() as u32 * (cell_h + GAP) + GAP;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([24, 24, 24]));

    for (k, slice) in slices.iter().enumerate() {
        let top = GAP + k as u32 * (cell_h + GAP);
        let window = display_window(&slice.image);
        let grey = |v: f32| (v / window * 255.0).clamp(0.0, 255.0) as u8;
        for panel in 0..PANELS {
            let left = GAP + panel * (cell_w + GAP);
            for r in 0..slice.rows {
                for c in 0..slice.cols {
                    let i = r * slice.cols + c;
                    let base = match panel {
                        1 => grey(slice.healthy_twin[i]),
                        _ => grey(slice.image[i]),
                    };
                    let mut rgb = [base; 3];
                    match panel {
                        2 => blend(&mut rgb, NORMAL_COLOURS, slice.normal_labels[i], 0.4),
                        3 => blend(&mut rgb, ABNORMAL_COLOURS, slice.abnormal_labels[i], 0.55),
                        _ => {}
                    }
                    sheet.put_pixel(left + c as u32, top + r as u32, Rgb(rgb));
                }
            }
        }
    }
    sheet.save_with_format(path, ImageFormat::Png)
}

/// The value shown as white: the 99.5th percentile of the image (at least 1).
fn display_window(image: &[f32]) -> f32 {
    let mut values = image.to_vec();
    let k = ((values.len() - 1) as f32 * 0.995) as usize;
    let (_, &mut v, _) = values.select_nth_unstable_by(k, f32::total_cmp);
    v.max(1.0)
}

fn blend<const N: usize>(rgb: &mut [u8; 3], colours: [[u8; 3]; N], label: u8, alpha: f32) {
    if label == 0 || label as usize >= N {
        return;
    }
    let colour = colours[label as usize];
    for (channel, &target) in rgb.iter_mut().zip(&colour) {
        *channel = (*channel as f32 * (1.0 - alpha) + target as f32 * alpha).round() as u8;
    }
}
