//! How the abnormal code uses its null code: on healthy grid cells it should be the "no lesion"
//! code (row 0, the zero vector), on lesion cells a code of its own. A model whose healthy cells
//! take other codes carries anatomy in its abnormal code, and abnormal-mode search then finds
//! anatomy as much as lesions (README, Evaluation).

use serde::Serialize;

use diptych_service::bundle::Codebook;

/// Null-code use over a set of slices; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NullCodeUse {
    /// Share of grid cells without a lesion pixel whose abnormal code is the null code.
    pub healthy_cells_on_null: f64,
    /// Share of grid cells holding a lesion pixel whose abnormal code is not the null code.
    pub lesion_cells_off_null: f64,
}

/// Whether row 0 of `codebook` is the zero vector, i.e. the bundle has a null code.
pub fn has_null_code(codebook: &Codebook) -> bool {
    codebook.size > 0 && codebook.vector(0).iter().all(|&v| v == 0.0)
}

/// Counts, over slices given as (abnormal codes h·w, abnormal labels S·S), the cells on and
/// off the null code; `None` when no slice has a cell of either kind to count.
pub fn null_code_use<'a>(
    slices: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    size: usize,
    grid: (usize, usize),
) -> Option<NullCodeUse> {
    let (rows, cols) = grid;
    let (cell_h, cell_w) = (size / rows.max(1), size / cols.max(1));
    let (mut healthy, mut healthy_null, mut lesion, mut lesion_off) = (0u64, 0u64, 0u64, 0u64);
    for (codes, labels) in slices {
        for r in 0..rows {
            for c in 0..cols {
                let has_lesion = (r * cell_h..(r + 1) * cell_h).any(|y| {
                    labels
                        .get(y * size + c * cell_w..y * size + (c + 1) * cell_w)
                        .is_some_and(|row| row.iter().any(|&l| l != 0))
                });
                let on_null = codes.get(r * cols + c) == Some(&0);
                if has_lesion {
                    lesion += 1;
                    lesion_off += u64::from(!on_null);
                } else {
                    healthy += 1;
                    healthy_null += u64::from(on_null);
                }
            }
        }
    }
    let share = |part: u64, whole: u64| part as f64 / whole.max(1) as f64;
    (healthy + lesion > 0).then(|| NullCodeUse {
        healthy_cells_on_null: share(healthy_null, healthy),
        lesion_cells_off_null: share(lesion_off, lesion),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cells_by_their_labels() {
        // 4×4 image, 2×2 grid: a lesion pixel in the top-left cell only.
        let mut labels = [0u8; 16];
        labels[1] = 2;
        // top-left off null (lesion coded), top-right on null, bottom-left off null (a healthy
        // cell with a code: anatomy leaking), bottom-right on null
        let codes = [7u8, 0, 3, 0];
        let u = null_code_use([(&codes[..], &labels[..])], 4, (2, 2)).unwrap();
        assert_eq!(u.lesion_cells_off_null, 1.0);
        assert!((u.healthy_cells_on_null - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_zero_row_zero_is_a_null_code() {
        let book = |values: Vec<f32>| Codebook {
            size: 2,
            dim: 2,
            values,
        };
        assert!(has_null_code(&book(vec![0.0, 0.0, 1.0, 2.0])));
        assert!(!has_null_code(&book(vec![0.0, 0.5, 1.0, 2.0])));
    }
}
