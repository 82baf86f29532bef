//! The sample grid: per row input x, reconstruction x̂, normal-appearing x̃, predicted and true
//! segmentation (overlaid on x), and the healthy twin when the source has one.

use std::path::Path;

use image::{Rgb, RgbImage};
use plotters::prelude::*;

use super::{FigureError, font::text_available};

/// Overlay colours of the abnormal labels 1 NCR/NET (red), 2 edema (yellow), 3 enhancing (blue).
const LABEL_COLOURS: [[u8; 3]; 4] = [[0, 0, 0], [230, 50, 50], [250, 210, 40], [60, 120, 255]];
const GAP: u32 = 4;

/// Colour of pixel i of one tile.
type TilePixel<'a> = Box<dyn Fn(usize) -> [u8; 3] + 'a>;
const HEADER: u32 = 24;

/// One row of the grid; all images S×S row-major in [0,1], labels 0..3.
#[derive(Debug, Clone)]
pub struct GridRow {
    /// Side S.
    pub size: usize,
    /// Input x.
    pub input: Vec<f32>,
    /// Reconstruction x̂.
    pub recon: Vec<f32>,
    /// Normal-appearing x̃.
    pub normal_appearing: Vec<f32>,
    /// Predicted abnormal labels (argmax of ŷ).
    pub predicted: Vec<u8>,
    /// True abnormal labels.
    pub truth: Vec<u8>,
    /// The healthy twin, if known.
    pub twin: Option<Vec<f32>>,
}

fn grey(v: f32) -> [u8; 3] {
    let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    [g, g, g]
}

fn overlay(v: f32, label: u8) -> [u8; 3] {
    let base = grey(v);
    if label == 0 {
        return base;
    }
    let c = LABEL_COLOURS[label.min(3) as usize];
    std::array::from_fn(|i| ((base[i] as u16 + c[i] as u16 * 2) / 3) as u8)
}

/// Writes the grid as a PNG; tiles are drawn at 2× when S ≤ 128.
pub fn write_sample_grid(rows: &[GridRow], path: &Path) -> Result<(), FigureError> {
    let Some(first) = rows.first() else {
        return Err(FigureError::Draw("the sample grid: no rows".into()));
    };
    let s = first.size as u32;
    let zoom = if s <= 128 { 2 } else { 1 };
    let tile = s * zoom;
    let columns = if rows.iter().any(|r| r.twin.is_some()) {
        6
    } else {
        5
    };
    let text = text_available();
    let header = if text { HEADER } else { 0 };
    let width = columns * tile + (columns + 1) * GAP;
    let height = header + rows.len() as u32 * (tile + GAP) + GAP;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        let y0 = header + GAP + r as u32 * (tile + GAP);
        let tiles: [Option<TilePixel>; 6] = [
            Some(Box::new(|i| grey(row.input[i]))),
            Some(Box::new(|i| grey(row.recon[i]))),
            Some(Box::new(|i| grey(row.normal_appearing[i]))),
            Some(Box::new(|i| overlay(row.input[i], row.predicted[i]))),
            Some(Box::new(|i| overlay(row.input[i], row.truth[i]))),
            row.twin
                .as_ref()
                .map(|t| Box::new(move |i: usize| grey(t[i])) as TilePixel),
        ];
        for (c, pixel) in tiles.iter().take(columns as usize).enumerate() {
            let x0 = GAP + c as u32 * (tile + GAP);
            for y in 0..tile {
                for x in 0..tile {
                    let i = ((y / zoom) * s + x / zoom) as usize;
                    let colour = pixel.as_ref().map_or([235, 235, 235], |f| f(i));
                    canvas.put_pixel(x0 + x, y0 + y, Rgb(colour));
                }
            }
        }
    }
    if text {
        let titles = [
            "input x",
            "reconstruction x̂",
            "normal-appearing x̃",
            "predicted seg",
            "true seg",
            "healthy twin",
        ];
        let mut buffer = canvas.into_raw();
        {
            let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
            for (c, title) in titles.iter().take(columns as usize).enumerate() {
                let x = (GAP + c as u32 * (tile + GAP) + 4) as i32;
                root.draw_text(title, &("sans-serif", 16).into_font().color(&BLACK), (x, 4))
                    .map_err(|e| FigureError::Draw(format!("the sample grid titles: {e}")))?;
            }
            root.present()
                .map_err(|e| FigureError::Draw(format!("the sample grid: {e}")))?;
        }
        canvas = RgbImage::from_raw(width, height, buffer).expect("buffer matches size");
    }
    canvas.save(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_rows_with_label_colours() {
        let size = 8;
        let mut truth = vec![0u8; 64];
        truth[27] = 3;
        let row = GridRow {
            size,
            input: vec![0.5; 64],
            recon: vec![0.4; 64],
            normal_appearing: vec![0.3; 64],
            predicted: vec![0; 64],
            truth,
            twin: Some(vec![0.2; 64]),
        };
        let path = std::env::temp_dir().join(format!("diptych-grid-{}.png", std::process::id()));
        write_sample_grid(&[row.clone(), row], &path).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        let tile = 16;
        let header = if text_available() { HEADER } else { 0 };
        assert_eq!(image.width(), 6 * tile + 7 * GAP);
        assert_eq!(image.height(), header + 2 * (tile + GAP) + GAP);
        // the enhancing pixel of the true-seg tile (column 4) is tinted blue
        let (x, y) = (GAP + 4 * (tile + GAP) + 3 * 2, header + GAP + 3 * 2);
        let p = image.get_pixel(x, y).0;
        assert!(p[2] > p[0] + 50, "{p:?}");
        std::fs::remove_file(&path).unwrap();
    }
}
