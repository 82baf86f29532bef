//! The label oracle: for every query, the references whose *true* labels overlap its own the
//! most — abnormal labels, normal labels, or, for a composite pair (A, B), a weighted sum of the
//! normal-label Dice to A and the abnormal-label Dice to B. No model can rank better on those
//! figures, so the oracle's Dice@10 is the ceiling that a bar on them should be read against: on
//! data whose lesions sit anywhere, references with a lesion at the query's place and size may
//! simply not exist, and fewer still with A's anatomy as well.

use super::baselines::first_k_by;
use super::dataset::EvalSlice;

/// The lesion pixels of one slice: `(pixel index, label)` for every non-zero label below `labels`.
fn lesion_pixels(slice: &EvalSlice, labels: usize) -> Vec<(u32, u8)> {
    slice
        .abnormal_labels
        .iter()
        .enumerate()
        .filter(|&(_, &l)| l != 0 && (l as usize) < labels)
        .map(|(i, &l)| (i as u32, l))
        .collect()
}

/// Mean Dice over the labels present in either map (the figure `label_dice` gives), from the
/// query's dense map and per-label counts and the reference's lesion pixels; `None` when neither
/// has a lesion.
fn sparse_dice(
    query: &[u8],
    query_counts: &[usize],
    reference: &[(u32, u8)],
    labels: usize,
) -> Option<f64> {
    let mut ref_counts = vec![0usize; labels];
    let mut both = vec![0usize; labels];
    for &(i, l) in reference {
        ref_counts[l as usize] += 1;
        both[l as usize] += usize::from(query[i as usize] == l);
    }
    let (mut sum, mut n) = (0.0, 0);
    for l in 1..labels {
        let total = query_counts[l] + ref_counts[l];
        if total > 0 {
            sum += 2.0 * both[l] as f64 / total as f64;
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}

/// Abnormal-label Dice of every query (rows) to every reference (columns) over label values
/// `1..labels`; two healthy slices count as a perfect match.
pub fn abnormal_dice_matrix(
    queries: &[EvalSlice],
    references: &[EvalSlice],
    labels: usize,
) -> Vec<Vec<f64>> {
    let refs: Vec<Vec<(u32, u8)>> = references
        .iter()
        .map(|r| lesion_pixels(r, labels))
        .collect();
    queries
        .iter()
        .map(|q| {
            let mut counts = vec![0usize; labels];
            for &l in &q.abnormal_labels {
                if (l as usize) < labels {
                    counts[l as usize] += 1;
                }
            }
            refs.iter()
                .map(|pixels| {
                    sparse_dice(&q.abnormal_labels, &counts, pixels, labels).unwrap_or(1.0)
                })
                .collect()
        })
        .collect()
}

/// Returns the `k` highest of `scores` (indices), best first; ties go to the lower index.
fn best(scores: &[f64], k: usize) -> Vec<usize> {
    first_k_by(scores, k, |a, b| b.total_cmp(a))
}

/// A label map as one bitset per label value (bit `i` of label `l` set where pixel `i` is `l`),
/// so that the overlap of two maps is a few hundred AND-and-popcount steps per label.
struct LabelBits {
    /// 64-bit words per label.
    words: usize,
    /// `labels × words` bits; label 0 (background) stays empty.
    bits: Vec<u64>,
    /// Pixels per label.
    counts: Vec<u32>,
}

impl LabelBits {
    /// The bitsets of `map` over label values `1..labels` (other values are ignored).
    fn of(map: &[u8], labels: usize) -> Self {
        let words = map.len().div_ceil(64);
        let mut bits = vec![0u64; labels * words];
        let mut counts = vec![0u32; labels];
        for (i, &l) in map.iter().enumerate() {
            let l = l as usize;
            if l != 0 && l < labels {
                bits[l * words + i / 64] |= 1 << (i % 64);
                counts[l] += 1;
            }
        }
        Self {
            words,
            bits,
            counts,
        }
    }

    /// The bitset of label `l`.
    fn label(&self, l: usize) -> &[u64] {
        &self.bits[l * self.words..(l + 1) * self.words]
    }

    /// Mean Dice over the labels present in either map (the figure `label_dice` gives); `None`
    /// when neither has any.
    fn dice(&self, other: &Self) -> Option<f64> {
        let (mut sum, mut n) = (0.0, 0);
        for l in 1..self.counts.len() {
            let total = self.counts[l] + other.counts[l];
            if total > 0 {
                let both: u32 = self
                    .label(l)
                    .iter()
                    .zip(other.label(l))
                    .map(|(a, b)| (a & b).count_ones())
                    .sum();
                sum += 2.0 * f64::from(both) / f64::from(total);
                n += 1;
            }
        }
        (n > 0).then(|| sum / n as f64)
    }
}

/// Normal-label Dice of every query (rows) to every reference (columns) over label values
/// `1..labels`; two maps without any such label count as a perfect match.
pub fn normal_dice_matrix(
    queries: &[EvalSlice],
    references: &[EvalSlice],
    labels: usize,
) -> Vec<Vec<f64>> {
    let refs: Vec<LabelBits> = references
        .iter()
        .map(|r| LabelBits::of(&r.normal_labels, labels))
        .collect();
    queries
        .iter()
        .map(|q| {
            let q = LabelBits::of(&q.normal_labels, labels);
            refs.iter().map(|r| q.dice(r).unwrap_or(1.0)).collect()
        })
        .collect()
}

/// Per query, the `k` references of highest Dice (a row of [`normal_dice_matrix`] or
/// [`abnormal_dice_matrix`]), best first.
pub fn top_by_dice(matrix: &[Vec<f64>], k: usize) -> Vec<Vec<usize>> {
    matrix.iter().map(|row| best(row, k)).collect()
}

/// Per share `s` of `shares` and per composite pair (A, B): the `k` references of highest
/// `(1 − s) · normal Dice to A + s · abnormal Dice to B`, best first — the label oracle's answer to
/// "A's anatomy with B's lesion" at every trade-off between the two. `normal` and `abnormal` are
/// [`normal_dice_matrix`] and [`abnormal_dice_matrix`] of the queries; the result is indexed
/// `[share][pair]`.
pub fn top_by_composite_dice(
    normal: &[Vec<f64>],
    abnormal: &[Vec<f64>],
    pairs: &[(usize, usize)],
    shares: &[f64],
    k: usize,
) -> Vec<Vec<Vec<usize>>> {
    shares
        .iter()
        .map(|&s| {
            pairs
                .iter()
                .map(|&(a, b)| {
                    let scores: Vec<f64> = normal[a]
                        .iter()
                        .zip(&abnormal[b])
                        .map(|(n, d)| (1.0 - s) * n + s * d)
                        .collect();
                    best(&scores, k)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::eval::metrics::label_dice;

    fn slice(abnormal: Vec<u8>) -> EvalSlice {
        with_anatomy(vec![0; abnormal.len()], abnormal)
    }

    fn with_anatomy(normal: Vec<u8>, abnormal: Vec<u8>) -> EvalSlice {
        EvalSlice {
            subject: 0,
            level: 0.5,
            has_lesion: abnormal.iter().any(|&l| l != 0),
            pixels: vec![0.0; abnormal.len()],
            normal_labels: normal,
            abnormal_labels: abnormal,
            twin: None,
        }
    }

    #[test]
    fn sparse_dice_equals_the_dense_figure_and_the_oracle_ranks_by_it() {
        let q = slice(vec![0, 2, 2, 3, 3, 0, 1, 0]);
        let refs = vec![
            slice(vec![0, 0, 0, 0, 0, 0, 0, 0]),
            slice(vec![0, 2, 2, 3, 0, 0, 0, 0]),
            slice(vec![0, 2, 2, 3, 3, 0, 1, 0]),
            slice(vec![2, 0, 0, 0, 0, 2, 0, 3]),
        ];
        let mut counts = vec![0usize; 4];
        for &l in &q.abnormal_labels {
            counts[l as usize] += 1;
        }
        for r in &refs {
            let sparse = sparse_dice(&q.abnormal_labels, &counts, &lesion_pixels(r, 4), 4);
            let dense = label_dice(&q.abnormal_labels, &r.abnormal_labels, 4).mean;
            assert_eq!(sparse, dense);
        }
        let top = top_by_dice(&abnormal_dice_matrix(&[q], &refs, 4), 3);
        assert_eq!(top, vec![vec![2, 1, 0]]);
    }

    #[test]
    fn bitset_dice_equals_the_dense_figure_across_word_boundaries() {
        // 150 pixels: three 64-bit words, the last one partly used.
        let map =
            |seed: usize| -> Vec<u8> { (0..150).map(|i| ((i * seed + i / 7) % 4) as u8).collect() };
        for (a, b) in [(map(3), map(5)), (map(1), map(1)), (vec![0; 150], map(2))] {
            let bits = LabelBits::of(&a, 4).dice(&LabelBits::of(&b, 4));
            let dense = label_dice(&a, &b, 4).mean;
            assert_eq!(
                bits.map(|d| (d * 1e12).round()),
                dense.map(|d| (d * 1e12).round())
            );
        }
        assert_eq!(
            LabelBits::of(&[0; 70], 4).dice(&LabelBits::of(&[0; 70], 4)),
            None
        );
    }

    #[test]
    fn the_composite_oracle_moves_from_a_s_anatomy_to_b_s_lesion_with_its_share() {
        // Queries: A (anatomy 1 on the left half, no lesion) and B (anatomy 2, a lesion on the
        // right). References: 0 has A's anatomy only, 1 has B's lesion only, 2 has both.
        let queries = vec![
            with_anatomy(vec![1, 1, 0, 0], vec![0, 0, 0, 0]),
            with_anatomy(vec![2, 2, 2, 2], vec![0, 0, 3, 3]),
        ];
        let refs = vec![
            with_anatomy(vec![1, 1, 0, 0], vec![0, 0, 0, 0]),
            with_anatomy(vec![2, 2, 2, 2], vec![0, 0, 3, 3]),
            with_anatomy(vec![1, 1, 0, 0], vec![0, 0, 3, 3]),
        ];
        let matrix = normal_dice_matrix(&queries, &refs, 3);
        assert_eq!(matrix[0], vec![1.0, 0.0, 1.0]);
        assert_eq!(top_by_dice(&matrix, 2), vec![vec![0, 2], vec![1, 0]]);
        let lesions = abnormal_dice_matrix(&queries, &refs, 4);
        assert_eq!(lesions[1], vec![0.0, 1.0, 1.0]);
        let ranked = top_by_composite_dice(&matrix, &lesions, &[(0, 1)], &[0.0, 0.5, 1.0], 1);
        // Share 0: A's anatomy (ties to the lower index); ½: the reference with both; 1: B's lesion.
        assert_eq!(ranked, vec![vec![vec![0]], vec![vec![2]], vec![vec![1]]]);
    }
}
