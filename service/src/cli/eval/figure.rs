//! The `--figure` PNG, in the manner of the paper's Figure 3: one row per retrieval (a diseased
//! query by its normal, abnormal and combined code; a composite query), the query in the first
//! column and its top 5 after it.
//!
//! Layout, for a model input side S and a gap G = [`GAP`]: a label column of [`LABEL_WIDTH`]
//! pixels, then six columns of width S separated by G; a header of [`HEADER`] pixels; then one
//! band per row of height S + S/2 + [`ROW_GAP`]. Each tile shows the slice (S×S), and under it
//! at half size its normal-appearing image x̃ (decoded from its codes) and its predicted
//! segmentation (argmax of the decoder's logits, in `render`'s label colours) over the slice.
//! A caption in the tile's corner gives its normal and abnormal Dice to the query.
//! The whole image is therefore `LABEL_WIDTH + 6·(S + G)` × `HEADER + rows·(S + S/2 + ROW_GAP)`.

use diptych_service::render::label_colour;
use image::{Rgb, RgbImage};

use crate::cli::lettering::text;

/// Width of the row-label column, pixels.
pub const LABEL_WIDTH: u32 = 124;
/// Height of the column headers, pixels.
pub const HEADER: u32 = 22;
/// Gap before every column, pixels.
pub const GAP: u32 = 6;
/// Gap after every row band, pixels.
pub const ROW_GAP: u32 = 10;
/// Columns: the query and its top 5.
pub const COLUMNS: u32 = 6;

const BACKGROUND: Rgb<u8> = Rgb([24, 24, 28]);
const INK: Rgb<u8> = Rgb([235, 235, 235]);

/// One image of the figure with what the model makes of it.
#[derive(Debug, Clone)]
pub struct Tile {
    /// The slice (or, for a composite query, the reconstruction x̂ of its codes), S·S in [0, 1].
    pub image: Vec<f32>,
    /// x̃ decoded from the tile's codes, S·S.
    pub normal_appearing: Vec<f32>,
    /// Predicted abnormal labels, S·S.
    pub segmentation: Vec<u8>,
    /// A short caption drawn in the tile's corner (e.g. Dice to the query).
    pub caption: String,
}

/// One row: its label and the query tile followed by its results.
#[derive(Debug, Clone)]
pub struct Row {
    /// First line of the row label (e.g. `NORMAL`).
    pub label: String,
    /// Second line (e.g. `CODE`).
    pub sublabel: String,
    /// The query tile, then the results, best first.
    pub tiles: Vec<Tile>,
}

/// The figure's size in pixels for `rows` rows of tiles of side `size`.
pub fn figure_size(size: usize, rows: usize) -> (u32, u32) {
    let s = size as u32;
    (
        LABEL_WIDTH + COLUMNS * (s + GAP),
        HEADER + rows as u32 * (s + s / 2 + ROW_GAP),
    )
}

/// Draws the figure.
pub fn render(rows: &[Row], size: usize) -> RgbImage {
    let (width, height) = figure_size(size, rows.len());
    let mut sheet = RgbImage::from_pixel(width, height, BACKGROUND);
    let s = size as u32;
    for c in 0..COLUMNS {
        let title = if c == 0 {
            "QUERY".to_string()
        } else {
            format!("TOP {c}")
        };
        text(
            &mut sheet,
            LABEL_WIDTH + c * (s + GAP) + GAP,
            4,
            &title,
            2,
            INK,
        );
    }
    for (r, row) in rows.iter().enumerate() {
        let y = HEADER + r as u32 * (s + s / 2 + ROW_GAP);
        text(
            &mut sheet,
            4,
            (y + s / 2).saturating_sub(10),
            &row.label,
            2,
            INK,
        );
        text(&mut sheet, 4, y + s / 2 + 8, &row.sublabel, 2, INK);
        for (c, tile) in rows[r].tiles.iter().take(COLUMNS as usize).enumerate() {
            let x = LABEL_WIDTH + c as u32 * (s + GAP) + GAP;
            draw_tile(&mut sheet, x, y, size, tile);
        }
        if r + 1 < rows.len() {
            let line = y + s + s / 2 + ROW_GAP / 2;
            for x in 0..width {
                sheet.put_pixel(x, line, Rgb([70, 70, 80]));
            }
        }
    }
    sheet
}

fn grey(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

fn draw_tile(sheet: &mut RgbImage, x: u32, y: u32, size: usize, tile: &Tile) {
    let s = size as u32;
    for row in 0..s {
        for col in 0..s {
            let g = grey(tile.image[(row * s + col) as usize]);
            sheet.put_pixel(x + col, y + row, Rgb([g, g, g]));
        }
    }
    // Half size, 2×2 means for images, the top-left label of each 2×2 block for labels.
    let half = s / 2;
    let mean2 = |values: &[f32], r: u32, c: u32| {
        let at = |dr: u32, dc: u32| {
            let (rr, cc) = ((2 * r + dr).min(s - 1), (2 * c + dc).min(s - 1));
            values[(rr * s + cc) as usize]
        };
        (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0
    };
    for r in 0..half {
        for c in 0..half {
            let g = grey(mean2(&tile.normal_appearing, r, c));
            sheet.put_pixel(x + c, y + s + r, Rgb([g, g, g]));
            let base = grey(mean2(&tile.image, r, c));
            let label = tile.segmentation[(2 * r * s + 2 * c) as usize];
            let px = if label == 0 {
                Rgb([base, base, base])
            } else {
                let colour = label_colour(label);
                Rgb(colour.map(|k| ((u16::from(k) * 3 + u16::from(base)) / 4) as u8))
            };
            sheet.put_pixel(x + half + c, y + s + r, px);
        }
    }
    if !tile.caption.is_empty() {
        let w = tile.caption.len() as u32 * 6 + 2;
        for yy in y..y + 10 {
            for xx in x..(x + w).min(x + s) {
                sheet.put_pixel(xx, yy, Rgb([0, 0, 0]));
            }
        }
        text(sheet, x + 1, y + 1, &tile.caption, 1, Rgb([255, 230, 90]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_has_the_documented_size_and_draws_labels() {
        let size = 16;
        let tile = Tile {
            image: vec![0.5; size * size],
            normal_appearing: vec![0.25; size * size],
            segmentation: (0..size * size).map(|i| (i % 4) as u8).collect(),
            caption: "N.5".into(),
        };
        let row = Row {
            label: "NORMAL".into(),
            sublabel: "CODE".into(),
            tiles: vec![tile; 6],
        };
        let img = render(&[row.clone(), row], size);
        assert_eq!((img.width(), img.height()), figure_size(size, 2));
        assert_eq!(
            figure_size(size, 2),
            (
                LABEL_WIDTH + 6 * (16 + GAP),
                HEADER + 2 * (16 + 8 + ROW_GAP)
            )
        );
        // Some ink in the label column, grey where the first tile's slice is.
        let ink = (0..LABEL_WIDTH)
            .flat_map(|x| (HEADER..HEADER + 24).map(move |y| (x, y)))
            .filter(|&(x, y)| *img.get_pixel(x, y) == INK)
            .count();
        assert!(ink > 20, "row label not drawn");
        assert_eq!(
            *img.get_pixel(LABEL_WIDTH + GAP + 10, HEADER + 12),
            Rgb([128, 128, 128])
        );
    }
}
