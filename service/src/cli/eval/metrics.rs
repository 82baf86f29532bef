//! The retrieval metrics: label overlap (Dice) between a query and its results, agreement on
//! "has a lesion", distance in slice position, and the ratios of the composite check.
//!
//! Conventions:
//! - Dice of two label maps: for every label value other than 0 (background) present in
//!   either map, `2|A∩B| / (|A| + |B|)`; the map's Dice is the mean over those labels. When no
//!   label is present in either map (two slices without a lesion, for abnormal labels) the Dice
//!   is undefined and left out of every mean.
//! - Dice@k of a query: the mean over its first k results of the defined pair Dice values; the
//!   figure of a method is the mean over queries whose Dice@k is defined.
//! - precision@k: the share of the first k results whose `has_lesion` equals the query's.
//! - |Δ level|@k: the mean absolute difference of axial level over the first k results.

use std::collections::BTreeMap;

use serde::Serialize;

use super::dataset::EvalSlice;

/// The cut-offs every metric is reported at.
pub const KS: [usize; 3] = [1, 5, 10];

/// Results per query that the metrics need (the largest of [`KS`]).
pub const TOP_K: usize = 10;

/// A running mean that ignores undefined values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mean {
    sum: f64,
    count: usize,
}

impl Mean {
    /// Adds a value (nothing when undefined).
    pub fn push(&mut self, value: Option<f64>) {
        if let Some(v) = value {
            self.sum += v;
            self.count += 1;
        }
    }

    /// The mean, or `None` when no value was added.
    pub fn get(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Values added.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// The overlap of two label maps.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelDice {
    /// Dice per label value (index = value; entry 0, background, is always `None`); `None`
    /// where the label is in neither map.
    pub per_label: Vec<Option<f64>>,
    /// Mean over the labels present in either map; `None` when there is none.
    pub mean: Option<f64>,
}

/// Dice of two label maps of equal size over label values `1..labels` (values ≥ `labels` are
/// ignored).
pub fn label_dice(a: &[u8], b: &[u8], labels: usize) -> LabelDice {
    assert_eq!(a.len(), b.len(), "label maps of different sizes");
    let mut in_a = [0usize; 256];
    let mut in_b = [0usize; 256];
    let mut both = [0usize; 256];
    for (&x, &y) in a.iter().zip(b) {
        in_a[x as usize] += 1;
        in_b[y as usize] += 1;
        both[x as usize] += usize::from(x == y);
    }
    let mut per_label = vec![None; labels.max(1)];
    let mut mean = Mean::default();
    for l in 1..labels.min(256) {
        let total = in_a[l] + in_b[l];
        if total > 0 {
            let d = 2.0 * both[l] as f64 / total as f64;
            per_label[l] = Some(d);
            mean.push(Some(d));
        }
    }
    LabelDice {
        per_label,
        mean: mean.get(),
    }
}

/// Share of `results` whose lesion flag equals `query`'s (`None` for no results).
pub fn lesion_precision(query: bool, results: &[bool]) -> Option<f64> {
    (!results.is_empty())
        .then(|| results.iter().filter(|&&r| r == query).count() as f64 / results.len() as f64)
}

/// `mean(numerator) / mean(denominator)` over the pairs where both are defined; `None` when
/// there is no such pair or the denominator's mean is 0.
pub fn ratio_of_means(pairs: &[(Option<f64>, Option<f64>)]) -> Option<f64> {
    let (mut num, mut den) = (Mean::default(), Mean::default());
    for &(n, d) in pairs {
        if let (Some(n), Some(d)) = (n, d) {
            num.push(Some(n));
            den.push(Some(d));
        }
    }
    match (num.get(), den.get()) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// Per-query figures of one query and its results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryScores {
    /// Normal-label Dice@k for each k of [`KS`].
    pub normal_dice: [Option<f64>; 3],
    /// Abnormal-label Dice@k for each k of [`KS`].
    pub abnormal_dice: [Option<f64>; 3],
    /// Lesion precision@k for each k of [`KS`].
    pub lesion_precision: [Option<f64>; 3],
    /// Mean |Δ level| over the first k results for each k of [`KS`].
    pub level_error: [Option<f64>; 3],
    /// Normal-label Dice per label over the first [`TOP_K`] results.
    pub normal_per_label: Vec<Option<f64>>,
    /// Abnormal-label Dice per label over the first [`TOP_K`] results.
    pub abnormal_per_label: Vec<Option<f64>>,
}

/// Scores one query's results (ranked, nearest first) with labels of `normal_labels` and
/// `abnormal_labels` values (background included in the counts). The normal and abnormal
/// references may differ: a composite query has A's anatomy and B's lesion.
pub fn score_query(
    normal_ref: &EvalSlice,
    abnormal_ref: &EvalSlice,
    results: &[&EvalSlice],
    normal_labels: usize,
    abnormal_labels: usize,
) -> QueryScores {
    let normal: Vec<LabelDice> = results
        .iter()
        .map(|r| label_dice(&normal_ref.normal_labels, &r.normal_labels, normal_labels))
        .collect();
    let abnormal: Vec<LabelDice> = results
        .iter()
        .map(|r| {
            label_dice(
                &abnormal_ref.abnormal_labels,
                &r.abnormal_labels,
                abnormal_labels,
            )
        })
        .collect();
    let at = |values: &dyn Fn(usize) -> Option<f64>, k: usize| {
        let mut m = Mean::default();
        for i in 0..k.min(results.len()) {
            m.push(values(i));
        }
        m.get()
    };
    let per_label = |dice: &[LabelDice], labels: usize| {
        (0..labels.max(1))
            .map(|l| {
                let mut m = Mean::default();
                for d in dice.iter().take(TOP_K) {
                    m.push(d.per_label.get(l).copied().flatten());
                }
                m.get()
            })
            .collect()
    };
    let lesions: Vec<bool> = results.iter().map(|r| r.has_lesion).collect();
    QueryScores {
        normal_dice: KS.map(|k| at(&|i| normal[i].mean, k)),
        abnormal_dice: KS.map(|k| at(&|i| abnormal[i].mean, k)),
        lesion_precision: KS
            .map(|k| lesion_precision(normal_ref.has_lesion, &lesions[..k.min(lesions.len())])),
        level_error: KS.map(|k| {
            at(
                &|i| Some((results[i].level as f64 - normal_ref.level as f64).abs()),
                k,
            )
        }),
        normal_per_label: per_label(&normal, normal_labels),
        abnormal_per_label: per_label(&abnormal, abnormal_labels),
    }
}

/// The figures of one method and mode over all queries.
#[derive(Debug, Clone, Default)]
pub struct RowScores {
    normal_dice: [Mean; 3],
    abnormal_dice: [Mean; 3],
    lesion_precision: [Mean; 3],
    level_error: [Mean; 3],
    normal_per_label: Vec<Mean>,
    abnormal_per_label: Vec<Mean>,
    abnormal_dice_diseased: Mean,
    twin_top5: Mean,
}

impl RowScores {
    /// Adds one query's scores; `diseased` says whether the query has a lesion.
    pub fn add(&mut self, q: &QueryScores, diseased: bool) {
        for i in 0..KS.len() {
            self.normal_dice[i].push(q.normal_dice[i]);
            self.abnormal_dice[i].push(q.abnormal_dice[i]);
            self.lesion_precision[i].push(q.lesion_precision[i]);
            self.level_error[i].push(q.level_error[i]);
        }
        if diseased {
            self.abnormal_dice_diseased.push(q.abnormal_dice[2]);
        }
        let grow = |means: &mut Vec<Mean>, values: &[Option<f64>]| {
            if means.len() < values.len() {
                means.resize(values.len(), Mean::default());
            }
            for (m, v) in means.iter_mut().zip(values) {
                m.push(*v);
            }
        };
        grow(&mut self.normal_per_label, &q.normal_per_label);
        grow(&mut self.abnormal_per_label, &q.abnormal_per_label);
    }

    /// Adds the twin check of one diseased query: whether its healthy twin came in the top 5.
    pub fn add_twin(&mut self, in_top5: bool) {
        self.twin_top5.push(Some(if in_top5 { 1.0 } else { 0.0 }));
    }

    /// The means, with label names for the per-label figures.
    pub fn summary(&self, normal_names: &[&str], abnormal_names: &[&str]) -> RowSummary {
        let named = |means: &[Mean], names: &[&str]| {
            names
                .iter()
                .enumerate()
                .skip(1)
                .map(|(l, name)| ((*name).to_string(), means.get(l).and_then(|m| m.get())))
                .collect()
        };
        RowSummary {
            normal_dice: self.normal_dice.map(|m| m.get()),
            abnormal_dice: self.abnormal_dice.map(|m| m.get()),
            lesion_precision: self.lesion_precision.map(|m| m.get()),
            level_error: self.level_error.map(|m| m.get()),
            abnormal_dice_at10_diseased: self.abnormal_dice_diseased.get(),
            twin_top5: self.twin_top5.get(),
            normal_dice_per_label_at10: named(&self.normal_per_label, normal_names),
            abnormal_dice_per_label_at10: named(&self.abnormal_per_label, abnormal_names),
            queries_with_abnormal_dice_at10: self.abnormal_dice[2].count(),
        }
    }
}

/// The means of one method and mode (`None`: undefined, JSON null).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowSummary {
    /// Normal-label Dice@1, @5, @10.
    pub normal_dice: [Option<f64>; 3],
    /// Abnormal-label Dice@1, @5, @10 (queries whose Dice is defined).
    pub abnormal_dice: [Option<f64>; 3],
    /// Lesion precision@1, @5, @10.
    pub lesion_precision: [Option<f64>; 3],
    /// Mean |Δ level| @1, @5, @10.
    pub level_error: [Option<f64>; 3],
    /// Abnormal-label Dice@10 over the diseased queries only.
    pub abnormal_dice_at10_diseased: Option<f64>,
    /// Share of diseased queries whose healthy twin is in the top 5.
    pub twin_top5: Option<f64>,
    /// Normal-label Dice@10 per label (background left out).
    pub normal_dice_per_label_at10: BTreeMap<String, Option<f64>>,
    /// Abnormal-label Dice@10 per label (background left out).
    pub abnormal_dice_per_label_at10: BTreeMap<String, Option<f64>>,
    /// Queries whose abnormal Dice@10 is defined.
    pub queries_with_abnormal_dice_at10: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(normal: Vec<u8>, abnormal: Vec<u8>, level: f32) -> EvalSlice {
        EvalSlice {
            subject: 0,
            level,
            has_lesion: abnormal.iter().any(|&l| l != 0),
            pixels: vec![0.0; normal.len()],
            normal_labels: normal,
            abnormal_labels: abnormal,
            twin: None,
        }
    }

    #[test]
    fn dice_of_known_maps() {
        // Label 1: A has 4 pixels, B has 2, they share 2 → 2·2/6. Label 2: only in A → 0.
        // Label 3: in neither → left out.
        let a = [1, 1, 1, 1, 2, 0, 0, 0];
        let b = [1, 1, 0, 0, 0, 0, 0, 0];
        let d = label_dice(&a, &b, 4);
        assert_eq!(d.per_label[0], None);
        assert!((d.per_label[1].unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(d.per_label[2], Some(0.0));
        assert_eq!(d.per_label[3], None);
        assert!((d.mean.unwrap() - 2.0 / 6.0).abs() < 1e-12);
        // Identical maps: 1; two empty maps: undefined; disjoint: 0.
        assert_eq!(label_dice(&a, &a, 4).mean, Some(1.0));
        assert_eq!(label_dice(&[0; 8], &[0; 8], 4).mean, None);
        assert_eq!(label_dice(&[1, 0], &[0, 1], 2).mean, Some(0.0));
    }

    #[test]
    fn precision_counts_agreement_either_way() {
        assert_eq!(
            lesion_precision(true, &[true, false, true, true]),
            Some(0.75)
        );
        assert_eq!(
            lesion_precision(false, &[true, false, true, true]),
            Some(0.25)
        );
        assert_eq!(lesion_precision(false, &[]), None);
    }

    #[test]
    fn ratio_uses_only_pairs_defined_on_both_sides() {
        let pairs = [
            (Some(0.4), Some(0.8)),
            (Some(0.2), Some(0.4)),
            (None, Some(1.0)),
            (Some(1.0), None),
        ];
        assert!((ratio_of_means(&pairs).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(ratio_of_means(&[(Some(0.3), Some(0.0))]), None);
        assert_eq!(ratio_of_means(&[]), None);
    }

    #[test]
    fn query_scores_at_each_cutoff() {
        let q = slice(vec![1, 1, 2, 2], vec![0, 3, 0, 0], 0.5);
        let same = slice(vec![1, 1, 2, 2], vec![0, 3, 0, 0], 0.6);
        let other = slice(vec![2, 2, 1, 1], vec![0, 0, 0, 0], 0.1);
        let results = [&same, &other, &other, &other, &other];
        let s = score_query(&q, &q, &results, 3, 4);
        assert_eq!(s.normal_dice[0], Some(1.0));
        assert!((s.normal_dice[1].unwrap() - 0.2).abs() < 1e-12);
        // Fewer results than k: the mean over those there are.
        assert!((s.normal_dice[2].unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(s.lesion_precision[0], Some(1.0));
        assert!((s.lesion_precision[1].unwrap() - 0.2).abs() < 1e-12);
        assert!((s.level_error[0].unwrap() - 0.1).abs() < 1e-6);
        // Abnormal: 1 for the twin-like result, 0 for healthy ones (label 3 in the query only).
        assert!((s.abnormal_dice[1].unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(s.abnormal_per_label[3], Some(0.2));
        assert_eq!(s.abnormal_per_label[1], None);

        let mut row = RowScores::default();
        row.add(&s, true);
        row.add(&score_query(&other, &other, &[&other], 3, 4), false);
        row.add_twin(true);
        row.add_twin(false);
        let sum = row.summary(&["bg", "a", "b"], &["bg", "x", "y", "z"]);
        assert_eq!(sum.normal_dice[0], Some(1.0));
        // The healthy query against a healthy result: abnormal Dice undefined, left out.
        assert_eq!(sum.queries_with_abnormal_dice_at10, 1);
        assert_eq!(sum.twin_top5, Some(0.5));
        assert_eq!(sum.normal_dice_per_label_at10.len(), 2);
    }
}
