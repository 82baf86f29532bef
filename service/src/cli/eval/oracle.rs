//! The label oracle: for every query, the references whose *true* abnormal labels overlap its own
//! the most. No model can rank better on abnormal-label Dice, so its Dice@10 is the ceiling that a
//! bar on that figure should be read against — on data whose lesions sit anywhere, references
//! with a lesion at the query's place and size may simply not exist.

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

/// Per query, the `k` references of highest abnormal-label Dice (two healthy slices count as a
/// perfect match), best first.
pub fn top_by_abnormal_dice(
    queries: &[EvalSlice],
    references: &[EvalSlice],
    labels: usize,
    k: usize,
) -> Vec<Vec<usize>> {
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
            let mut scored: Vec<(f64, usize)> = refs
                .iter()
                .enumerate()
                .map(|(r, pixels)| {
                    let d = sparse_dice(&q.abnormal_labels, &counts, pixels, labels);
                    (d.unwrap_or(1.0), r)
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.into_iter().take(k).map(|(_, r)| r).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::eval::metrics::label_dice;

    fn slice(abnormal: Vec<u8>) -> EvalSlice {
        EvalSlice {
            subject: 0,
            level: 0.5,
            has_lesion: abnormal.iter().any(|&l| l != 0),
            pixels: vec![0.0; abnormal.len()],
            normal_labels: vec![0; abnormal.len()],
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
        let top = top_by_abnormal_dice(&[q], &refs, 4, 3);
        assert_eq!(top, vec![vec![2, 1, 0]]);
    }
}
