//! `diptych calibrate`: measures a bundle's combined-mode balance and records it in its manifest
//! (`Manifest::combined_balance`, docs/METHOD.md §3).
//!
//! The slices are like the training data's: each synthetic source the bundle was trained on
//! (the phantom, and the atlas source when its maps are at hand), held-out seed 2, half of them
//! healthy. They are pre-processed by the bundle's image contract and encoded by the service's
//! own encoder, so the balance is that of the codes the index will hold. No labels are used:
//! the balance is `E[d_n] / E[d_a]` over pairs of two disjoint halves of the sample
//! (`diptych_service::search::balance`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use diptych::manifest::Manifest;
use diptych::synthetic::SourceKind;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::engine::start_engine;
use crate::cli::eval::dataset::build_set;
use crate::cli::eval::{encode_all, source_name};
use diptych_service::search::DistanceTables;
use diptych_service::search::balance::mean_distances;

/// Held-out generator seed of the calibration slices (seed 1 trains; `diptych eval` uses 3 and 4).
pub const SEED: u64 = 2;

/// What a calibration measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Calibration {
    /// The bundle's model id.
    pub model_id: String,
    /// The sources the slices came from.
    pub sources: Vec<&'static str>,
    /// Slices encoded.
    pub slices: usize,
    /// Mean normal distance `E[d_n]` over the pairs.
    pub mean_normal_distance: f64,
    /// Mean abnormal distance `E[d_a]` over the pairs.
    pub mean_abnormal_distance: f64,
    /// `E[d_n] / E[d_a]`, now the manifest's `combined_balance`.
    pub combined_balance: f32,
    /// The balance the manifest held before.
    pub previous_balance: f32,
}

/// Encodes `per_source` slices of each source, measures the balance and writes it into the
/// bundle's manifest.
pub async fn run(
    model: &Path,
    sources: &[SourceKind],
    per_source: usize,
    threads: usize,
) -> anyhow::Result<Calibration> {
    anyhow::ensure!(
        per_source >= 2,
        "--slices must be at least 2 (two halves are compared)"
    );
    anyhow::ensure!(!sources.is_empty(), "name at least one --source");
    let engine = Arc::new(start_engine(model, 32, threads.max(1)).await?);
    let params = engine.manifest().preprocess;
    let style = ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} {elapsed}")
        .expect("a valid progress template");
    let mut codes = Vec::new();
    for &kind in sources {
        let generator = kind
            .open(SEED, 0.5)
            .with_context(|| format!("opening the {} source (seed {SEED})", source_name(kind)))?;
        let bar = ProgressBar::new(per_source as u64)
            .with_style(style.clone())
            .with_message(format!("{} slices", source_name(kind)));
        let slices = tokio::task::block_in_place(|| {
            build_set(
                generator.as_ref(),
                per_source,
                &params,
                false,
                threads,
                &bar,
            )
        })?;
        bar.finish_and_clear();
        let bar = ProgressBar::new(per_source as u64)
            .with_style(style.clone())
            .with_message(format!("encoding {}", source_name(kind)));
        let images: Vec<&[f32]> = slices.iter().map(|s| s.pixels.as_slice()).collect();
        codes.extend(encode_all(&engine, &images, &bar).await?);
        bar.finish_and_clear();
    }
    // Interleave the sources, then compare the even slices with the odd ones: two disjoint
    // halves, each a mix of every source, and no slice paired with itself.
    let (even, odd): (Vec<_>, Vec<_>) =
        codes.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let even: Vec<_> = even.into_iter().map(|(_, c)| c).collect();
    let odd: Vec<_> = odd.into_iter().map(|(_, c)| c).collect();
    let tables = DistanceTables::of(engine.codebooks())?;
    let (normal, abnormal) = tokio::task::block_in_place(|| mean_distances(&tables, &even, &odd));
    anyhow::ensure!(
        normal > 0.0 && abnormal > 0.0,
        "the sample's codes do not vary (E[d_n] = {normal}, E[d_a] = {abnormal}): nothing to \
         balance; is this a trained bundle?"
    );
    let balance = (normal / abnormal) as f32;
    let mut manifest = Manifest::load(model)
        .with_context(|| format!("reading the manifest of {}", model.display()))?;
    let previous = manifest.combined_balance;
    manifest.combined_balance = balance;
    manifest.validate()?;
    manifest
        .write(model)
        .with_context(|| format!("writing the manifest of {}", model.display()))?;
    Ok(Calibration {
        model_id: manifest.model_id,
        sources: sources.iter().map(|&k| source_name(k)).collect(),
        slices: even.len() + odd.len(),
        mean_normal_distance: normal,
        mean_abnormal_distance: abnormal,
        combined_balance: balance,
        previous_balance: previous,
    })
}
