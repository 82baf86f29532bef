//! The balance of combined mode: how much the abnormal distance must weigh so that both halves
//! of a code count alike on average (docs/METHOD.md §3).
//!
//! The two distances live on different scales: `d_n` sums codebook distances over every grid
//! cell of the anatomy, while `d_a` is zero wherever both slices take the abnormal codebook's
//! "no lesion" code, so with weights 1 and 1 the normal half decides almost every ranking. The
//! balance is the ratio of their means over pairs of slices, `E[d_n] / E[d_a]`: the abnormal
//! weight at which, on average, the two halves move a combined distance by the same amount. It
//! needs no labels, only codes of a sample of slices like those the index will hold.

use super::DistanceTables;
use super::QueryCodes;

/// Mean normal and abnormal distances over every pair (one of `a`, one of `b`).
pub fn mean_distances(tables: &DistanceTables, a: &[QueryCodes], b: &[QueryCodes]) -> (f64, f64) {
    let (mut normal, mut abnormal, mut pairs) = (0f64, 0f64, 0u64);
    for x in a {
        for y in b {
            let n: f32 = x
                .normal
                .iter()
                .zip(&y.normal)
                .map(|(&i, &j)| tables.normal_distance(i, j))
                .sum();
            let ab: f32 = x
                .abnormal
                .iter()
                .zip(&y.abnormal)
                .map(|(&i, &j)| tables.abnormal_distance(i, j))
                .sum();
            normal += f64::from(n);
            abnormal += f64::from(ab);
            pairs += 1;
        }
    }
    if pairs == 0 {
        return (0.0, 0.0);
    }
    (normal / pairs as f64, abnormal / pairs as f64)
}

/// The abnormal weight (normal weight 1) at which both halves count alike on average:
/// `E[d_n] / E[d_a]`; 1 when either mean is zero (nothing to balance).
pub fn balance(tables: &DistanceTables, a: &[QueryCodes], b: &[QueryCodes]) -> f32 {
    let (normal, abnormal) = mean_distances(tables, a, b);
    if normal > 0.0 && abnormal > 0.0 {
        (normal / abnormal) as f32
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(normal: &[u8], abnormal: &[u8]) -> QueryCodes {
        QueryCodes {
            normal: normal.to_vec(),
            abnormal: abnormal.to_vec(),
        }
    }

    /// Codebooks on a line: entry i is the 1-vector (i), so ‖C[i] − C[j]‖² = (i − j)².
    fn tables() -> DistanceTables {
        let book: Vec<f32> = (0..4).map(|i| i as f32).collect();
        DistanceTables::new(&book, &book, 4, 1).unwrap()
    }

    #[test]
    fn means_are_over_every_pair_and_the_balance_is_their_ratio() {
        let t = tables();
        // Normal codes differ at both cells, abnormal codes (the null code 0 elsewhere) at one.
        let a = [codes(&[0, 0], &[0, 0]), codes(&[1, 1], &[0, 0])];
        let b = [codes(&[2, 2], &[0, 1])];
        let (n, ab) = mean_distances(&t, &a, &b);
        // Pairs: (0,0)-(2,2) = 4 + 4, (1,1)-(2,2) = 1 + 1; abnormal 1 and 1.
        assert_eq!(n, 5.0);
        assert_eq!(ab, 1.0);
        assert_eq!(balance(&t, &a, &b), 5.0);
    }

    #[test]
    fn nothing_to_balance_gives_the_plain_sum() {
        let t = tables();
        let same = [codes(&[1, 2], &[0, 0])];
        assert_eq!(
            balance(&t, &same, &same),
            1.0,
            "no abnormal distance at all"
        );
        assert_eq!(balance(&t, &[], &same), 1.0, "no pairs");
    }
}
