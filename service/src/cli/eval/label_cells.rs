//! Label-cell codes: what *perfect* codes on the bundle's grid would retrieve. Each grid cell of
//! a slice gets, in each half, the set of labels present in it (a bitmask: bit `l − 1` for label
//! `l`), read from the slice's true label maps; two cells differ by the number of labels one has
//! and the other lacks. Searched by the service's own exact search (squared L2 summed over the
//! grid, as the model's codes are), these codes show how far retrieval by a code per grid cell
//! can go on a reference set: where even they miss a bar, the grid and the sum over cells are
//! the limit, not the model (docs/METHOD.md §4).

use diptych_service::search::tables::TablesError;
use diptych_service::search::{DistanceTables, QueryCodes};

use super::dataset::EvalSlice;

/// The most label values (background included) a half may have: a cell's label set is a `u8`.
pub const MAX_LABELS: usize = 9;

/// The codes of one label map (S·S, row-major) on an h×w grid: per cell, the bitmask of the
/// labels `1..labels` with at least one pixel in it. Pixel (y, x) lies in cell
/// (y·h / S, x·w / S), so a grid that does not divide S still covers every pixel.
pub fn cell_codes(map: &[u8], size: usize, grid: (usize, usize), labels: usize) -> Vec<u8> {
    let (rows, cols) = grid;
    let mut codes = vec![0u8; rows * cols];
    for (i, &l) in map.iter().enumerate().take(size * size) {
        let l = l as usize;
        if l == 0 || l >= labels.min(MAX_LABELS) {
            continue;
        }
        let (y, x) = (i / size, i % size);
        codes[(y * rows / size) * cols + x * cols / size] |= 1 << (l - 1);
    }
    codes
}

/// The label-cell codes of a slice: normal labels in the normal half, abnormal labels in the
/// abnormal half.
pub fn slice_codes(
    slice: &EvalSlice,
    size: usize,
    grid: (usize, usize),
    labels: (usize, usize),
) -> QueryCodes {
    QueryCodes {
        normal: cell_codes(&slice.normal_labels, size, grid, labels.0),
        abnormal: cell_codes(&slice.abnormal_labels, size, grid, labels.1),
    }
}

/// Distance tables for label-cell codes of `labels` (normal, abnormal) label values: code `i` is
/// the vector of the bits of `i`, so the squared distance between two codes is the number of
/// labels in one cell and not the other. `None` when a half has more than [`MAX_LABELS`] values.
pub fn tables(labels: (usize, usize)) -> Option<Result<DistanceTables, TablesError>> {
    let bits = labels.0.max(labels.1).max(2) - 1;
    if bits + 1 > MAX_LABELS {
        return None;
    }
    let size = 1usize << bits;
    let book: Vec<f32> = (0..size)
        .flat_map(|i| (0..bits).map(move |b| ((i >> b) & 1) as f32))
        .collect();
    Some(DistanceTables::new(&book, &book, size, bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_holds_every_label_present_in_it() {
        // 4×4 map on a 2×2 grid: top-left cell labels 1 and 2, bottom-right label 3, the
        // top-right cell a label beyond the half's count (ignored).
        let mut map = [0u8; 16];
        map[0] = 1;
        map[5] = 2;
        map[15] = 3;
        map[3] = 4;
        assert_eq!(cell_codes(&map, 4, (2, 2), 4), vec![0b011, 0, 0, 0b100]);
    }

    #[test]
    fn a_grid_that_does_not_divide_the_image_covers_every_pixel() {
        // 5×5 map on a 2×2 grid: the last row and column fall in the second cells.
        let mut map = [0u8; 25];
        map[24] = 1;
        map[4] = 2;
        assert_eq!(cell_codes(&map, 5, (2, 2), 3), vec![0, 0b10, 0, 0b01]);
    }

    #[test]
    fn code_distance_counts_the_labels_one_cell_has_and_the_other_lacks() {
        let t = tables((7, 4)).unwrap().unwrap();
        assert_eq!(t.size(), 64);
        assert_eq!(t.abnormal_distance(0, 0b111), 3.0);
        assert_eq!(t.abnormal_distance(0b011, 0b110), 2.0);
        assert_eq!(t.normal_distance(0b10_1010, 0b10_1010), 0.0);
        assert_eq!(t.normal_distance(0b10_0000, 0b00_0001), 2.0);
    }

    #[test]
    fn too_many_labels_for_a_byte_give_no_tables() {
        assert!(tables((10, 4)).is_none());
        assert!(tables((9, 4)).is_some());
    }
}
