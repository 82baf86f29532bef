//! The report of `diptych eval`: a markdown table for people, and one line of JSON for
//! `make eval` and the tests, with flat keys `<row>_<metric>` (e.g.
//! `normal_mode_normal_dice_at10`, `pixel_l2_normal_dice_at10`, `random_lesion_precision_at10`)
//! beside the detailed rows.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::metrics::{KS, RowSummary};

/// One method and mode of the report.
#[derive(Debug, Clone, Serialize)]
pub struct MethodRow {
    /// `codes`, `latent`, `pixel L2` or `random`.
    pub method: &'static str,
    /// `normal`, `abnormal`, `combined`, or `-` for methods without modes.
    pub mode: &'static str,
    /// Prefix of the row's flat JSON keys (e.g. `normal_mode`, `pixel_l2`).
    pub key: &'static str,
    /// The figures; `None` when the method could not run (JSON null).
    pub scores: Option<RowSummary>,
}

/// The composite check of one method: A's normal representation with B's abnormal one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompositeScores {
    /// Pairs (A, B) searched.
    pub pairs: usize,
    /// Normal-label Dice@10 of the results to A.
    pub normal_dice_to_a_at10: Option<f64>,
    /// Abnormal-label Dice@10 of the results to B.
    pub abnormal_dice_to_b_at10: Option<f64>,
    /// That normal Dice over the normal mode's normal Dice@10 of the same A's.
    pub normal_ratio: Option<f64>,
    /// That abnormal Dice over the abnormal mode's abnormal Dice@10 of the same B's.
    pub abnormal_ratio: Option<f64>,
}

/// The composite check on the codes at one combined-mode balance (normal weight 1).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompositeBalance {
    /// Weight of the abnormal distance.
    pub abnormal_weight: f32,
    /// Composite normal ratio at this weight.
    pub normal_ratio: Option<f64>,
    /// Composite abnormal ratio at this weight.
    pub abnormal_ratio: Option<f64>,
}

impl CompositeBalance {
    /// The smaller of the two ratios: how much of both single modes this weight keeps at once.
    pub fn kept_of_both(&self) -> Option<f64> {
        match (self.normal_ratio, self.abnormal_ratio) {
            (Some(n), Some(a)) => Some(n.min(a)),
            _ => None,
        }
    }
}

/// The composite check of the label-cell codes (perfect codes on the model's grid, see
/// `label_cells`): at their own label-free balance, and across weights.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelCellsComposites {
    /// Their label-free balance `E[d_n] / E[d_a]`, the abnormal weight of their combined rows.
    pub balance: f32,
    /// The composite check at that balance (`None` without composite pairs).
    pub composite: Option<CompositeScores>,
    /// The composite check across combined-mode weights.
    pub composite_balance: Vec<CompositeBalance>,
}

/// The label oracle's composite check at one trade-off: references ranked by
/// `(1 − share) · normal-label Dice to A + share · abnormal-label Dice to B`, the ratios taken
/// to the oracle's own normal and abnormal rows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompositeOracle {
    /// Share of the abnormal-label Dice to B in the ranking.
    pub abnormal_share: f64,
    /// The composite figures at this share.
    pub scores: CompositeScores,
}

impl CompositeOracle {
    /// The smaller of the two ratios: how much of both single modes this ranking keeps at once.
    pub fn kept_of_both(&self) -> Option<f64> {
        match (self.scores.normal_ratio, self.scores.abnormal_ratio) {
            (Some(n), Some(a)) => Some(n.min(a)),
            _ => None,
        }
    }
}

/// What a run on a BraTS folder used of it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BratsSummary {
    /// The folder.
    pub folder: String,
    /// Subjects in the folder.
    pub subjects: usize,
    /// Axial slices per subject, evenly spaced over the brain.
    pub slices_per_subject: usize,
    /// Subjects the queries came from.
    pub query_subjects: usize,
    /// Subjects the references came from (disjoint from the query subjects).
    pub reference_subjects: usize,
    /// What the normal labels are, since BraTS labels no normal anatomy.
    pub normal_labels: &'static str,
}

/// What the normal labels of a BraTS slice are, in the report's words.
pub const BRATS_NORMAL_LABELS: &str = "the brain mask (nonzero voxels): normal Dice measures how \
     well brain outlines agree (size, shape, axial level), not anatomy";

/// Everything one `diptych eval` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The model's id.
    pub model_id: String,
    /// The source (`phantom`, `anatomy`, `brats`).
    pub source: String,
    /// The MR contrast read, for a BraTS folder (`flair`, `t1`, `t1ce`, `t2`); left out of the
    /// JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contrast: Option<String>,
    /// The BraTS folder's subjects and the split; left out of the JSON for synthetic sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brats: Option<BratsSummary>,
    /// Queries.
    pub queries: usize,
    /// References.
    pub references: usize,
    /// Queries with a lesion.
    pub diseased_queries: usize,
    /// References with a lesion.
    pub diseased_references: usize,
    /// Share of healthy slices the generators were asked for; for a BraTS folder, which decides
    /// it, the share measured over both sets.
    pub healthy_fraction: f32,
    /// Generator seed of the queries (`None` for a BraTS folder: JSON null).
    pub seed_queries: Option<u64>,
    /// Generator seed of the references (`None` for a BraTS folder: JSON null).
    pub seed_references: Option<u64>,
    /// Whether the encoder graph gave continuous latents (the `latent` rows).
    pub latent_baseline: bool,
    /// Share of grid positions where the continuous latents quantise to the service's codes
    /// (a check that the outputs are z_n and z_a; abnormal positions given the null code are
    /// left out, see `null_outside_lesion`); `None` without latents.
    pub latent_code_agreement: Option<f64>,
    /// How the abnormal codes of both sets use the null code; `None` for bundles without one.
    pub null_code: Option<super::null_code::NullCodeUse>,
    /// Every method and mode.
    pub rows: Vec<MethodRow>,
    /// The composite check on the codes.
    pub composite: Option<CompositeScores>,
    /// The composite check on the continuous latents.
    pub latent_composite: Option<CompositeScores>,
    /// The composite check on the codes across combined-mode balances.
    pub composite_balance: Vec<CompositeBalance>,
    /// The label-cell codes' composite checks; `None` when the source has too many labels
    /// for them.
    pub label_cells: Option<LabelCellsComposites>,
    /// The label oracle's composite check across trade-offs (empty without composite pairs).
    pub composite_oracle: Vec<CompositeOracle>,
    /// Abnormal-mode Dice@10 of the diseased queries by lesion size, codes and label oracle.
    pub abnormal_dice_at10_by_lesion_size: Vec<super::by_size::SizeBinDice>,
    /// The bundle's combined-mode balance (`Manifest::combined_balance`): the abnormal weight of
    /// the combined rows and of the composites.
    pub combined_balance: f32,
    /// The label-free balance `E[d_n] / E[d_a]` over query–reference pairs
    /// (`search::balance`).
    pub mean_balance: f32,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// The figure written, if any.
    pub figure: Option<String>,
}

impl EvalReport {
    /// The report as one JSON object: the run's description, the flat keys, and the detailed
    /// rows.
    pub fn to_json(&self) -> Value {
        let mut flat = Map::new();
        for row in &self.rows {
            let s = row.scores.as_ref();
            let mut put = |name: String, value: Option<f64>| {
                flat.insert(format!("{}_{name}", row.key), json!(value));
            };
            for (i, k) in KS.iter().enumerate() {
                put(
                    format!("normal_dice_at{k}"),
                    s.and_then(|s| s.normal_dice[i]),
                );
                put(
                    format!("abnormal_dice_at{k}"),
                    s.and_then(|s| s.abnormal_dice[i]),
                );
                put(
                    format!("lesion_precision_at{k}"),
                    s.and_then(|s| s.lesion_precision[i]),
                );
                put(
                    format!("level_error_at{k}"),
                    s.and_then(|s| s.level_error[i]),
                );
            }
            put(
                "abnormal_dice_at10_diseased".into(),
                s.and_then(|s| s.abnormal_dice_at10_diseased),
            );
            // Null where the source has no healthy twins (a BraTS folder).
            put("twin_top5".into(), s.and_then(|s| s.twin_top5));
        }
        let cells_composite = self.label_cells.as_ref().and_then(|c| c.composite.as_ref());
        for (prefix, c) in [
            ("composite", self.composite.as_ref()),
            ("latent_composite", self.latent_composite.as_ref()),
            ("label_cells_composite", cells_composite),
        ] {
            let mut put = |name: &str, value: Option<f64>| {
                flat.insert(format!("{prefix}_{name}"), json!(value));
            };
            put(
                "normal_dice_to_a_at10",
                c.and_then(|c| c.normal_dice_to_a_at10),
            );
            put(
                "abnormal_dice_to_b_at10",
                c.and_then(|c| c.abnormal_dice_to_b_at10),
            );
            put("normal_ratio", c.and_then(|c| c.normal_ratio));
            put("abnormal_ratio", c.and_then(|c| c.abnormal_ratio));
        }
        // The most of both single modes that any weighting of the true labels keeps at once: the
        // ceiling of the composite ratios on this reference set.
        flat.insert(
            "oracle_composite_kept_of_both".into(),
            json!(
                self.composite_oracle
                    .iter()
                    .filter_map(CompositeOracle::kept_of_both)
                    .max_by(f64::total_cmp)
            ),
        );
        // The same for the codes and the label-cell codes, over their combined-mode weights.
        let kept = |sweep: &[CompositeBalance]| {
            sweep
                .iter()
                .filter_map(CompositeBalance::kept_of_both)
                .max_by(f64::total_cmp)
        };
        flat.insert(
            "composite_kept_of_both".into(),
            json!(kept(&self.composite_balance)),
        );
        flat.insert(
            "label_cells_composite_kept_of_both".into(),
            json!(
                self.label_cells
                    .as_ref()
                    .and_then(|c| kept(&c.composite_balance))
            ),
        );
        flat.insert(
            "abnormal_null_share_healthy_cells".into(),
            json!(self.null_code.map(|u| u.healthy_cells_on_null)),
        );
        flat.insert(
            "abnormal_code_share_lesion_cells".into(),
            json!(self.null_code.map(|u| u.lesion_cells_off_null)),
        );
        let mut out = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        out.extend(flat);
        Value::Object(out)
    }

    /// The report as markdown: a table of methods × modes, then the composite check.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        let source = match &self.contrast {
            Some(contrast) => format!("{}, {contrast} contrast", self.source),
            None => self.source.clone(),
        };
        let _ = writeln!(
            out,
            "Retrieval on {source} ({} queries, {} diseased; {} references), model {}\n",
            self.queries, self.diseased_queries, self.references, self.model_id
        );
        if let Some(b) = &self.brats {
            let _ = writeln!(
                out,
                "BraTS folder {}: {} subjects, {} axial slices each; queries from {} subjects, \
                 references from {} others. The normal labels are {}. Real scans have no healthy \
                 twins: the twin check is absent (n/a).\n",
                b.folder,
                b.subjects,
                b.slices_per_subject,
                b.query_subjects,
                b.reference_subjects,
                b.normal_labels
            );
        }
        let _ = writeln!(
            out,
            "| method | mode | normal Dice@1 | @5 | @10 | abnormal Dice@1 | @5 | @10 | \
             abnormal Dice@10 (diseased) | lesion P@10 | \\|Δ level\\|@10 | twin in top 5 |"
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for row in &self.rows {
            let _ = write!(out, "| {} | {} ", row.method, row.mode);
            match &row.scores {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        f(s.normal_dice[0]),
                        f(s.normal_dice[1]),
                        f(s.normal_dice[2]),
                        f(s.abnormal_dice[0]),
                        f(s.abnormal_dice[1]),
                        f(s.abnormal_dice[2]),
                        f(s.abnormal_dice_at10_diseased),
                        f(s.lesion_precision[2]),
                        f(s.level_error[2]),
                        f(s.twin_top5),
                    );
                }
                None => {
                    let _ = writeln!(out, "{}", "| absent ".repeat(10) + "|");
                }
            }
        }
        let _ = writeln!(
            out,
            "\nComposite queries (A's normal + B's abnormal representation, combined mode at the \
             bundle's balance {} for the codes, 1 for the latents, and their own for the label \
             cells, top 10):\n",
            self.combined_balance
        );
        let cells_composite = self.label_cells.as_ref().and_then(|c| c.composite.as_ref());
        let _ = writeln!(
            out,
            "| method | pairs | normal Dice@10 to A | abnormal Dice@10 to B | normal ratio | abnormal ratio |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for (method, c) in [
            ("codes", self.composite.as_ref()),
            ("latent", self.latent_composite.as_ref()),
            ("label cells", cells_composite),
        ] {
            match c {
                Some(c) => {
                    let _ = writeln!(
                        out,
                        "| {method} | {} | {} | {} | {} | {} |",
                        c.pairs,
                        f(c.normal_dice_to_a_at10),
                        f(c.abnormal_dice_to_b_at10),
                        f(c.normal_ratio),
                        f(c.abnormal_ratio)
                    );
                }
                None => {
                    let _ = writeln!(out, "| {method} | absent | | | | |");
                }
            }
        }
        if !self.composite_balance.is_empty() {
            let _ = writeln!(
                out,
                "\nComposite check on the codes by combined-mode balance (normal weight 1; the \
                 label-free balance E[d_n] / E[d_a] is {:.2}):\n",
                self.mean_balance
            );
            sweep_table(&mut out, &self.composite_balance);
        }
        if let Some(cells) = self
            .label_cells
            .as_ref()
            .filter(|c| !c.composite_balance.is_empty())
        {
            let _ = writeln!(
                out,
                "\nComposite check on the label-cell codes (each grid cell's true label set: \
                 perfect codes on this grid) by combined-mode balance (normal weight 1; their \
                 label-free balance is {:.2}):\n",
                cells.balance
            );
            sweep_table(&mut out, &cells.composite_balance);
        }
        if !self.composite_oracle.is_empty() {
            let _ = writeln!(
                out,
                "\nComposite check with the label oracle (references ranked by (1 − s) · normal \
                 Dice to A + s · abnormal Dice to B; ratios to the oracle's own normal and \
                 abnormal rows):\n"
            );
            let _ = writeln!(
                out,
                "| share s | normal Dice@10 to A | abnormal Dice@10 to B | normal ratio | abnormal ratio |"
            );
            let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
            for c in &self.composite_oracle {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    c.abnormal_share,
                    f(c.scores.normal_dice_to_a_at10),
                    f(c.scores.abnormal_dice_to_b_at10),
                    f(c.scores.normal_ratio),
                    f(c.scores.abnormal_ratio)
                );
            }
        }
        if self
            .abnormal_dice_at10_by_lesion_size
            .iter()
            .any(|b| b.queries > 0)
        {
            let _ = writeln!(
                out,
                "\nAbnormal mode by the diseased query's lesion size (share of the frame), \
                 abnormal-label Dice@10:\n"
            );
            let _ = writeln!(
                out,
                "| lesion size | queries | codes | label cells | label oracle |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|");
            for b in &self.abnormal_dice_at10_by_lesion_size {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    b.bin,
                    b.queries,
                    f(b.codes),
                    f(b.label_cells),
                    f(b.oracle)
                );
            }
        }
        if let Some(u) = self.null_code {
            let _ = writeln!(
                out,
                "\nNull code: {:.1} % of healthy grid cells take the \"no lesion\" code, {:.1} % of \
                 lesion cells a code of their own.",
                100.0 * u.healthy_cells_on_null,
                100.0 * u.lesion_cells_off_null
            );
        }
        let _ = writeln!(
            out,
            "\nRatios: composite Dice over the Dice of the single-mode search on the same A (normal \
             mode) or B (abnormal mode). Dice is undefined, and left out, where neither map has a \
             label (abnormal labels of two healthy slices). {:.1} s.",
            self.seconds
        );
        out
    }
}

/// Writes a composite sweep as a markdown table: abnormal weight, normal and abnormal ratio.
fn sweep_table(out: &mut String, sweep: &[CompositeBalance]) {
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    let _ = writeln!(out, "| abnormal weight | normal ratio | abnormal ratio |");
    let _ = writeln!(out, "|---:|---:|---:|");
    for c in sweep {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            c.abnormal_weight,
            f(c.normal_ratio),
            f(c.abnormal_ratio)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(v: f64) -> RowSummary {
        RowSummary {
            normal_dice: [Some(v); 3],
            abnormal_dice: [Some(v); 3],
            lesion_precision: [Some(v); 3],
            level_error: [Some(v); 3],
            abnormal_dice_at10_diseased: Some(v),
            twin_top5: None,
            normal_dice_per_label_at10: [("a".to_string(), Some(v))].into(),
            abnormal_dice_per_label_at10: Default::default(),
            queries_with_abnormal_dice_at10: 3,
        }
    }

    #[test]
    fn json_has_flat_keys_and_nulls_for_absent_rows() {
        let report = EvalReport {
            model_id: "m".into(),
            source: "phantom".into(),
            contrast: None,
            brats: None,
            queries: 3,
            references: 30,
            diseased_queries: 2,
            diseased_references: 20,
            healthy_fraction: 0.3,
            seed_queries: Some(4),
            seed_references: Some(3),
            latent_baseline: false,
            latent_code_agreement: None,
            null_code: None,
            rows: vec![
                MethodRow {
                    method: "codes",
                    mode: "normal",
                    key: "normal_mode",
                    scores: Some(summary(0.5)),
                },
                MethodRow {
                    method: "latent",
                    mode: "normal",
                    key: "latent_normal_mode",
                    scores: None,
                },
            ],
            composite: Some(CompositeScores {
                pairs: 3,
                normal_dice_to_a_at10: Some(0.4),
                abnormal_dice_to_b_at10: Some(0.2),
                normal_ratio: Some(0.8),
                abnormal_ratio: Some(0.5),
            }),
            latent_composite: None,
            composite_balance: [(1.0, 0.9, 0.2), (8.0, 0.6, 0.65), (64.0, 0.3, 0.95)]
                .into_iter()
                .map(|(w, n, a)| CompositeBalance {
                    abnormal_weight: w,
                    normal_ratio: Some(n),
                    abnormal_ratio: Some(a),
                })
                .collect(),
            label_cells: Some(LabelCellsComposites {
                balance: 20.0,
                composite: Some(CompositeScores {
                    pairs: 3,
                    normal_dice_to_a_at10: Some(0.5),
                    abnormal_dice_to_b_at10: Some(0.25),
                    normal_ratio: Some(0.85),
                    abnormal_ratio: Some(0.4),
                }),
                composite_balance: vec![CompositeBalance {
                    abnormal_weight: 20.0,
                    normal_ratio: Some(0.85),
                    abnormal_ratio: Some(0.4),
                }],
            }),
            composite_oracle: [(0.0, 1.0, 0.3), (0.5, 0.9, 0.7), (1.0, 0.2, 1.0)]
                .into_iter()
                .map(|(share, n, a)| CompositeOracle {
                    abnormal_share: share,
                    scores: CompositeScores {
                        pairs: 3,
                        normal_dice_to_a_at10: Some(n / 2.0),
                        abnormal_dice_to_b_at10: Some(a / 2.0),
                        normal_ratio: Some(n),
                        abnormal_ratio: Some(a),
                    },
                })
                .collect(),
            abnormal_dice_at10_by_lesion_size: vec![super::super::by_size::SizeBinDice {
                bin: "≥ 2 %",
                queries: 2,
                codes: Some(0.25),
                label_cells: Some(0.4),
                oracle: Some(0.5),
            }],
            mean_balance: 1.0,
            combined_balance: 1.0,
            seconds: 1.0,
            figure: None,
        };
        let v = report.to_json();
        assert_eq!(v["normal_mode_normal_dice_at10"], json!(0.5));
        assert_eq!(v["normal_mode_twin_top5"], Value::Null);
        assert_eq!(v["latent_normal_mode_normal_dice_at10"], Value::Null);
        assert_eq!(v["composite_normal_ratio"], json!(0.8));
        // The oracle keeps 70 % of both at its middle share, less at either end.
        assert_eq!(v["oracle_composite_kept_of_both"], json!(0.7));
        // The codes keep at most 60 % of both (weight 8); the label cells 40 %.
        assert_eq!(v["composite_kept_of_both"], json!(0.6));
        assert_eq!(v["label_cells_composite_kept_of_both"], json!(0.4));
        assert_eq!(v["label_cells_composite_normal_ratio"], json!(0.85));
        assert_eq!(v["source"], json!("phantom"));
        assert_eq!(v["seed_queries"], json!(4));
        assert_eq!(
            v["abnormal_dice_at10_by_lesion_size"][0]["oracle"],
            json!(0.5)
        );
        // A synthetic source's report has no BraTS keys.
        assert!(v.get("contrast").is_none() && v.get("brats").is_none());
        assert!(!serde_json::to_string(&v).unwrap().contains('\n'));
        let md = report.markdown();
        assert!(md.starts_with("Retrieval on phantom (3 queries"));
        assert!(md.contains("| codes | normal | 0.500 |"));
        assert!(md.contains("| latent | normal | absent"));
        assert!(
            md.contains("| label cells | 3 | 0.500 | 0.250 | 0.850 | 0.400 |"),
            "{md}"
        );
        assert!(md.contains("their label-free balance is 20.00"), "{md}");
        assert!(md.contains("| 8 | 0.600 | 0.650 |"), "{md}");
        assert!(md.contains("| 20 | 0.850 | 0.400 |"), "{md}");
        assert!(md.contains("| ≥ 2 % | 2 | 0.250 | 0.400 | 0.500 |"), "{md}");
        assert!(
            md.contains("| 0.5 | 0.450 | 0.350 | 0.900 | 0.700 |"),
            "{md}"
        );

        let brats = EvalReport {
            source: "brats".into(),
            contrast: Some("flair".into()),
            brats: Some(BratsSummary {
                folder: "/data/brats".into(),
                subjects: 10,
                slices_per_subject: 24,
                query_subjects: 1,
                reference_subjects: 2,
                normal_labels: BRATS_NORMAL_LABELS,
            }),
            seed_queries: None,
            seed_references: None,
            ..report
        };
        let v = brats.to_json();
        assert_eq!(v["contrast"], json!("flair"));
        assert_eq!(v["brats"]["query_subjects"], json!(1));
        assert_eq!(v["seed_queries"], Value::Null);
        let md = brats.markdown();
        assert!(
            md.starts_with("Retrieval on brats, flair contrast (3 queries"),
            "{md}"
        );
        assert!(
            md.contains("brain mask") && md.contains("no healthy twins"),
            "{md}"
        );
    }
}
