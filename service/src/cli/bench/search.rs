//! `diptych bench search`: the search benchmark of [`super::search_run`] on the
//! serving model's encodings of phantom slices, with progress bars.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use super::search_run::{
    FaissBaseline, SearchBenchConfig, SearchBenchReport, phantom_encodings, run_search_bench,
};
use anyhow::Context;
use diptych_service::search::DistanceTables;
use indicatif::{ProgressBar, ProgressStyle};

use super::{bench_python, script};
use crate::cli::engine::start_engine;

/// Options of the search benchmark.
#[derive(Debug, Clone)]
pub struct SearchBench {
    /// The model bundle.
    pub model: PathBuf,
    /// Records to search.
    pub records: usize,
    /// Queries per mode and filter.
    pub queries: usize,
    /// Queries per mode and filter also answered by the naive scan (the first ones).
    pub naive_queries: usize,
    /// Distinct phantom slices encoded as seeds of the records.
    pub seeds: u64,
    /// Run the FAISS baseline.
    pub faiss: bool,
}

/// Runs the benchmark.
pub async fn run(options: &SearchBench) -> anyhow::Result<SearchBenchReport> {
    let engine = Arc::new(start_engine(&options.model, 32, 2).await?);
    let spinner = ProgressBar::new_spinner().with_message("encoding phantom seeds and queries");
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    // Records grow from training-distribution slices (seed 1); queries are held out (seed 2).
    let seeds = phantom_encodings(&engine, 1, 0, options.seeds).await?;
    let held_out = phantom_encodings(&engine, 2, 0, 256).await?;
    spinner.finish_and_clear();
    let tables = DistanceTables::of(engine.codebooks())?;
    let workdir = std::env::temp_dir().join(format!("diptych-bench-search-{}", std::process::id()));
    let config = SearchBenchConfig {
        records: options.records,
        queries: options.queries,
        naive_queries: options.naive_queries.min(options.queries),
        faiss: options.faiss.then(|| FaissBaseline {
            python: bench_python(),
            script: script("faiss_search.py"),
            workdir: workdir.clone(),
        }),
        ..SearchBenchConfig::default()
    };
    let bar = ProgressBar::new(1).with_style(
        ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {elapsed}")
            .context("progress template")?,
    );
    let mut progress = |what: &str, done: u64, total: u64| {
        bar.set_message(what.to_string());
        bar.set_length(total.max(1));
        bar.set_position(done);
    };
    let report = tokio::task::block_in_place(|| {
        run_search_bench(&tables, &seeds, &held_out, &config, &mut progress)
    });
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&workdir);
    Ok(report?)
}

/// The report as a table.
pub fn table(report: &SearchBenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>9}  {:>8}  {:>6}  {:>8}  {:>8}  {:>9}  {:>9}  {:>8}  {:>8}  identical",
        "records",
        "mode",
        "filter",
        "p50 ms",
        "p99 ms",
        "naive p50",
        "faiss p50",
        "x naive",
        "x faiss"
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{:>9}  {:>8}  {:>6}  {:>8.2}  {:>8.2}  {:>9.2}  {:>9}  {:>7.1}x  {:>8}  {}",
            r.records,
            r.mode,
            r.filter,
            r.p50_ms,
            r.p99_ms,
            r.naive_p50_ms,
            r.faiss_p50_ms.map_or("-".into(), |v| format!("{v:.2}")),
            r.speedup_vs_naive,
            r.speedup_vs_faiss
                .map_or("-".into(), |v| format!("{v:.1}x")),
            r.identical
        );
    }
    let _ = writeln!(
        out,
        "search index: built in {:.2} s, {:.1} bytes/record (codes: {} bytes/record)",
        report.index_build_s, report.index_bytes_per_record, report.code_bytes_per_record
    );
    out
}
