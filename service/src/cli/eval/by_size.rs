//! Abnormal-mode retrieval of diseased queries broken down by the size of the query's lesion
//! (the bins of [`diptych::synthetic::lesion_size`], as `diptych-train eval` breaks down its
//! whole-tumour Dice): the codes' abnormal-label Dice@10 beside the label cells' (perfect codes
//! on the same grid) and the label oracle's, to show which lesions the gaps come from.

use diptych::synthetic::lesion_size;
use serde::Serialize;

use super::dataset::EvalSlice;
use super::metrics::{Mean, QueryScores};

/// Abnormal-label Dice@10 of the diseased queries of one lesion-size bin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeBinDice {
    /// The bin (`< 0.5 %`, `0.5–2 %`, `≥ 2 %` of the frame).
    pub bin: &'static str,
    /// Diseased queries whose lesion falls in the bin.
    pub queries: usize,
    /// Their mean abnormal-label Dice@10 in abnormal mode on the codes (`null` for an empty bin).
    pub codes: Option<f64>,
    /// The same with label-cell codes (`null` for an empty bin or without them).
    pub label_cells: Option<f64>,
    /// The same with the label oracle's ranking: the ceiling on this reference set.
    pub oracle: Option<f64>,
}

/// The abnormal-mode Dice@10 of `codes`, `label_cells` (when there are any) and `oracle`
/// (per-query scores in the order of `queries`) over the diseased queries of each lesion-size
/// bin.
pub fn abnormal_dice_by_lesion_size(
    queries: &[EvalSlice],
    codes: &[QueryScores],
    label_cells: Option<&[QueryScores]>,
    oracle: &[QueryScores],
) -> Vec<SizeBinDice> {
    let mut bins = [(0usize, Mean::default(), Mean::default(), Mean::default()); 3];
    for (i, ((q, c), o)) in queries.iter().zip(codes).zip(oracle).enumerate() {
        if !q.has_lesion {
            continue;
        }
        let bin = &mut bins[lesion_size::bin(lesion_size::share(&q.abnormal_labels))];
        bin.0 += 1;
        bin.1.push(c.abnormal_dice[2]);
        bin.2
            .push(label_cells.and_then(|l| l.get(i)?.abnormal_dice[2]));
        bin.3.push(o.abnormal_dice[2]);
    }
    bins.iter()
        .zip(lesion_size::NAMES)
        .map(|((n, c, l, o), bin)| SizeBinDice {
            bin,
            queries: *n,
            codes: c.get(),
            label_cells: l.get(),
            oracle: o.get(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(lesion_pixels: usize) -> EvalSlice {
        let mut abnormal_labels = vec![0u8; 1000];
        abnormal_labels[..lesion_pixels].fill(2);
        EvalSlice {
            subject: 0,
            level: 0.5,
            has_lesion: lesion_pixels > 0,
            pixels: Vec::new(),
            normal_labels: Vec::new(),
            abnormal_labels,
            twin: None,
        }
    }

    fn scores(at10: f64) -> QueryScores {
        QueryScores {
            normal_dice: [None; 3],
            abnormal_dice: [None, None, Some(at10)],
            lesion_precision: [None; 3],
            level_error: [None; 3],
            normal_per_label: Vec::new(),
            abnormal_per_label: Vec::new(),
        }
    }

    #[test]
    fn diseased_queries_fall_into_their_lesions_bins_and_healthy_ones_into_none() {
        // 0.2 %, 1 %, 1.5 %, 5 % of the frame, and a healthy query.
        let queries: Vec<EvalSlice> = [2, 10, 15, 50, 0].into_iter().map(slice).collect();
        let codes: Vec<QueryScores> = [0.1, 0.2, 0.4, 0.8, 0.9].map(scores).into();
        let oracle: Vec<QueryScores> = [0.3, 0.5, 0.7, 1.0, 1.0].map(scores).into();
        let cells: Vec<QueryScores> = [0.2, 0.3, 0.5, 0.9, 1.0].map(scores).into();
        let bins = abnormal_dice_by_lesion_size(&queries, &codes, Some(&cells), &oracle);
        let got: Vec<_> = bins
            .iter()
            .map(|b| {
                let round = |v: Option<f64>| v.map(|v| (v * 1e6).round() / 1e6);
                (
                    b.bin,
                    b.queries,
                    round(b.codes),
                    round(b.label_cells),
                    round(b.oracle),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("< 0.5 %", 1, Some(0.1), Some(0.2), Some(0.3)),
                ("0.5–2 %", 2, Some(0.3), Some(0.4), Some(0.6)),
                ("≥ 2 %", 1, Some(0.8), Some(0.9), Some(1.0)),
            ]
        );
        assert!(
            abnormal_dice_by_lesion_size(&queries[4..], &codes[4..], None, &oracle[4..])
                .iter()
                .all(|b| b.queries == 0 && b.codes.is_none() && b.label_cells.is_none())
        );
        // Without label cells the other figures stay.
        let bins = abnormal_dice_by_lesion_size(&queries, &codes, None, &oracle);
        assert!(
            bins.iter()
                .all(|b| b.label_cells.is_none() && b.oracle.is_some())
        );
    }
}
