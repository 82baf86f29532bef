//! `diptych bench cluster`: a cluster against a single node on the same machine (issue #15's
//! numbers).
//!
//! 1. **Search** at N records (default 1M): the records of [`super::ready`]'s builder in one data
//!    folder for the single node and split by the shard map into one folder per shard
//!    ([`super::cluster_data`]); one NATS server (search does not touch the stream), one
//!    replica of each shard on its folder, a router, and the single node; the same queries
//!    alternate between the router and the single node, and must get identical answers
//!    ([`super::cluster_search`]).
//! 2. **Ingest**: the same distinct phantom studies by storescu to a router in front of fresh
//!    shards and to a fresh single node, alternating; acknowledged/s and searchable/s
//!    ([`super::cluster_ingest`]).
//! 3. **On paper**: nodes and search latency for 100M and 1B slices from the measured figures
//!    ([`super::projection`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cluster_data;
use super::cluster_ingest::{self, IngestOptions, IngestRow};
use super::cluster_nodes::{ClusterSpec, start_cluster, start_single};
use super::cluster_search::{self, SearchRow, Targets};
use super::projection::{Projection, ProjectionInputs, project};
use super::search_run::phantom_encodings;
use crate::cli::engine::start_engine;

/// Options of the cluster benchmark.
#[derive(Debug, Clone)]
pub struct ClusterBench {
    /// The model bundle of every process.
    pub model: PathBuf,
    /// Records searched.
    pub records: usize,
    /// Shards (one replica each).
    pub shards: u32,
    /// Queries per mode and filter on each side.
    pub queries: usize,
    /// Data folders (kept for reuse), files and logs.
    pub work: PathBuf,
    /// Phantom subjects of the ingest comparison (16 slices each, plus healthy twins).
    pub ingest_subjects: u64,
    /// Runs of the ingest comparison (0: skip it).
    pub ingest_runs: usize,
    /// NATS servers and copies of the ingest stream in the ingest comparison.
    pub stream_replicas: usize,
}

/// Everything measured and projected.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// One row per mode and filter.
    pub search: Vec<SearchRow>,
    /// The router's and the single node's ingest.
    pub ingest: Vec<IngestRow>,
    /// 100M and 1B slices.
    pub projections: Vec<Projection>,
}

impl ClusterReport {
    /// Every row as JSON, for `--json`.
    pub fn json_rows(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut rows = Vec::new();
        for r in &self.search {
            rows.push(serde_json::to_value(r)?);
        }
        for r in &self.ingest {
            rows.push(serde_json::to_value(r)?);
        }
        for r in &self.projections {
            rows.push(serde_json::to_value(r)?);
        }
        Ok(rows)
    }

    /// Whether the router answered every query exactly as the single node did.
    pub fn identical(&self) -> bool {
        self.search.iter().all(|r| r.identical)
    }
}

/// Runs the benchmark.
pub async fn run(options: &ClusterBench) -> anyhow::Result<ClusterReport> {
    let spinner = indicatif::ProgressBar::new_spinner()
        .with_message("building the records and encoding the queries");
    spinner.enable_steady_tick(Duration::from_millis(200));
    let engine = start_engine(&options.model, 32, 2).await?;
    let folders =
        cluster_data::build(&engine, &options.work, options.records, options.shards).await?;
    // Queries are held-out encodings (seed 2), as in the search benchmark.
    let queries = phantom_encodings(&engine, 2, 0, options.queries.clamp(1, 64) as u64).await?;
    let grid = &engine.manifest().grid;
    let grid = (grid.rows as u32, grid.cols as u32);
    drop(engine);
    spinner.finish_and_clear();

    let steps =
        (cluster_search::MODES.len() * 2 * options.queries + 2 * options.ingest_runs) as u64;
    let bar = super::progress_bar(steps, "cluster");
    let mut tick = |what: &str| {
        bar.set_message(what.to_string());
        bar.inc(1);
    };

    let search = {
        bar.set_message("starting NATS, the shards, the router and the single node");
        let dir = options.work.join("search-run");
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = start_cluster(&ClusterSpec {
            model: options.model.clone(),
            dir: dir.clone(),
            shard_dirs: folders.shards.clone(),
            nats_nodes: 1,
            stream_replicas: 1,
            dicom: false,
        })
        .await?;
        let single = start_single(
            &options.model,
            &folders.single,
            false,
            &dir.join("single.log"),
        )
        .await?;
        bar.set_message("waiting for the search projections");
        let sized = std::iter::once((&folders.single, options.records)).chain(
            folders
                .shards
                .iter()
                .zip(folders.shard_records.iter().copied()),
        );
        for (folder, records) in sized {
            if records >= diptych_service::index::PROJECTIONS_FROM {
                wait_projections(folder).await?;
            }
        }
        let shard_addrs: Vec<String> = cluster.shards.iter().map(|s| s.grpc.clone()).collect();
        let rows = cluster_search::run(
            &Targets {
                single: &single.grpc,
                router: &cluster.router.grpc,
                shards: &shard_addrs,
            },
            &queries,
            options.queries,
            grid,
            options.records,
            &folders.shard_records,
            &mut tick,
        )
        .await?;
        drop(single);
        drop(cluster);
        rows
    };

    let ingest = if options.ingest_runs == 0 {
        Vec::new()
    } else {
        cluster_ingest::run(
            &IngestOptions {
                model: options.model.clone(),
                work: options.work.clone(),
                subjects: options.ingest_subjects,
                runs: options.ingest_runs,
                shards: options.shards as usize,
                stream_replicas: options.stream_replicas,
            },
            &mut tick,
        )
        .await?
    };
    bar.finish_and_clear();

    let (hop_ms, scan_ms_per_million) = measured_for_projection(&search);
    let projections = [100_000_000, 1_000_000_000]
        .into_iter()
        .map(|slices| {
            project(&ProjectionInputs::with_measured(
                slices,
                hop_ms,
                scan_ms_per_million,
            ))
        })
        .collect();
    Ok(ClusterReport {
        search,
        ingest,
        projections,
    })
}

/// The hop (router p50 − single p50) and the shards' scan ms per million records, both of
/// combined mode without a filter (the README's headline search row).
pub fn measured_for_projection(search: &[SearchRow]) -> (f64, f64) {
    let Some(row) = search
        .iter()
        .find(|r| r.mode == "combined" && r.filter == "none")
    else {
        return (f64::NAN, f64::NAN);
    };
    let rates: Vec<f64> = row
        .shard_p50_ms
        .iter()
        .zip(&row.shard_records)
        .filter(|(_, n)| **n > 0)
        .map(|(ms, n)| ms / (*n as f64 / 1e6))
        .collect();
    let rate = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    (row.hop_ms, rate)
}

/// Waits until `data/search/header.bin` exists: the server fitted and saved its search
/// projections (in the background after SERVING on a first start, from
/// [`diptych_service::index::PROJECTIONS_FROM`] records on), so searches are pruned.
async fn wait_projections(data: &Path) -> anyhow::Result<()> {
    let header = data.join("search").join("header.bin");
    let started = Instant::now();
    while !header.is_file() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "no search projections saved in {} after 900 s",
            header.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The report as tables.
pub fn table(report: &ClusterReport) -> String {
    let mut out = String::new();
    if let Some(first) = report.search.first() {
        let shards: Vec<String> = first.shard_records.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(
            out,
            "search: {} records, single node against a router over {} shards ({} records), {} \
             queries per row, top 10, ms on the client over gRPC",
            first.records,
            first.shard_records.len(),
            shards.join(" + "),
            first.queries
        );
    }
    let _ = writeln!(
        out,
        "{:>8}  {:>11}  {:>10}  {:>10}  {:>10}  {:>10}  {:>7}  {:>16}  identical",
        "mode",
        "filter",
        "single p50",
        "single p99",
        "router p50",
        "router p99",
        "hop",
        "shards alone p50"
    );
    for r in &report.search {
        let shards: Vec<String> = r.shard_p50_ms.iter().map(|v| format!("{v:.2}")).collect();
        let _ = writeln!(
            out,
            "{:>8}  {:>11}  {:>10.2}  {:>10.2}  {:>10.2}  {:>10.2}  {:>7.2}  {:>16}  {}",
            r.mode,
            r.filter,
            r.single_p50_ms,
            r.single_p99_ms,
            r.router_p50_ms,
            r.router_p99_ms,
            r.hop_ms,
            shards.join(" / "),
            if r.identical { "yes" } else { "NO" }
        );
        if let Some(d) = &r.first_difference {
            let _ = writeln!(out, "          first difference: {d}");
        }
    }
    if let Some(first) = report.ingest.first() {
        let _ = writeln!(
            out,
            "\ningest: {} distinct instances over one storescu association, {} runs (medians)",
            first.instances,
            first.ack_runs.len()
        );
        let _ = writeln!(
            out,
            "{:>28}  {:>8}  {:>12}  {:>24}  {:>24}",
            "target", "ack/s", "searchable/s", "ack/s runs", "searchable/s runs"
        );
        for r in &report.ingest {
            let target = if r.target == "router" {
                format!("router, {} shards, stream R{}", r.shards, r.stream_replicas)
            } else {
                "single node".to_string()
            };
            let runs = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "{target:>28}  {:>8.1}  {:>12.1}  {:>24}  {:>24}",
                r.ack_per_s,
                r.searchable_per_s,
                runs(&r.ack_runs),
                runs(&r.searchable_runs)
            );
        }
    }
    if let Some(first) = report.projections.first() {
        let _ = writeln!(
            out,
            "\non paper (shard p50/p99 at 10M and {} B/slice from the README; hop {:.2} ms and \
             {:.2} ms per million per shard measured here):",
            first.inputs.resident_bytes_per_slice,
            first.inputs.hop_ms,
            first.inputs.scan_ms_per_million
        );
        for p in &report.projections {
            let _ = writeln!(
                out,
                "{:>6} slices: {} shards × {} copies on {} nodes, search ~{:.0} ms (slowest shard \
                 {:.0} ms; linear check of a shard: {:.0} ms)\n    {}",
                format!("{}M", p.inputs.slices / 1_000_000),
                p.shards,
                p.inputs.replicas,
                p.nodes,
                p.latency_p50_ms,
                p.latency_slowest_ms,
                p.linear_shard_ms,
                p.arithmetic
            );
        }
    }
    out
}
