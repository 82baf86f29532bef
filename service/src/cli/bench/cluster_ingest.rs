//! Ingest through a router against a single node: the same distinct phantom studies
//! (`diptych demo write-studies`, written once) sent by one dcmtk `storescu` association to a
//! router in front of the shards and to a single node, each started afresh on empty folders per
//! run, the two alternating which goes first. Acknowledged/s: instances over the time from
//! starting storescu until it exits with every store answered Success; searchable/s: instances
//! over the time until `InfoService.GetIndexStats` (summed over the shards on a router) counts
//! them all as records with nothing pending.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use diptych::api::v1::GetIndexStatsRequest;
use diptych::api::v1::info_service_client::InfoServiceClient;
use serde::Serialize;

use super::cluster_nodes::{ClusterSpec, Node, start_cluster, start_single};
use super::procs::channel;
use super::search_run::percentile;

/// What to measure.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The model bundle.
    pub model: PathBuf,
    /// Files, folders and logs go here (`files/` is kept; each run's folders are replaced).
    pub work: PathBuf,
    /// Phantom subjects written (16 slices each, plus the healthy twins of the diseased ones).
    pub subjects: u64,
    /// Runs; the table gives medians.
    pub runs: usize,
    /// Shards behind the router (one replica each).
    pub shards: usize,
    /// NATS servers, and copies of the ingest stream.
    pub stream_replicas: usize,
}

/// One side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct IngestRow {
    /// Always "cluster-ingest".
    pub bench: &'static str,
    /// `router` or `single`.
    pub target: &'static str,
    /// Shards behind the router (0 for the single node).
    pub shards: usize,
    /// Copies of the ingest stream (0 for the single node, which keeps a local log).
    pub stream_replicas: usize,
    /// Distinct instances sent per run.
    pub instances: usize,
    /// Median of the runs' acknowledged instances per second.
    pub ack_per_s: f64,
    /// Median of the runs' searchable instances per second.
    pub searchable_per_s: f64,
    /// Every run's acknowledged/s.
    pub ack_runs: Vec<f64>,
    /// Every run's searchable/s.
    pub searchable_runs: Vec<f64>,
}

/// The phantom files, written once into `work/files-<subjects>/`; every `.dcm` file, sorted.
fn files(work: &Path, subjects: u64) -> anyhow::Result<Vec<PathBuf>> {
    let dir = work.join(format!("files-{subjects}"));
    let done = dir.join("complete");
    if !done.is_file() {
        let _ = std::fs::remove_dir_all(&dir);
        diptych_dicom_adapter::demo::write_studies(&dir, subjects)
            .with_context(|| format!("writing phantom studies into {}", dir.display()))?;
        std::fs::write(&done, "")?;
    }
    let mut out = Vec::new();
    for folder in std::fs::read_dir(&dir)? {
        let folder = folder?.path();
        if folder.is_dir() {
            for file in std::fs::read_dir(&folder)? {
                let file = file?.path();
                if file.extension().is_some_and(|e| e == "dcm") {
                    out.push(file);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Sends `files` over one association to `port`; fails unless every store was answered
/// Success. Nagle off, as the C-STORE benchmark sends (Debian's dcmtk leaves it on otherwise,
/// and a delayed ACK per file would cap any server near 22 instances/s).
fn storescu(files: &[PathBuf], port: u16) -> anyhow::Result<()> {
    let output = Command::new("storescu")
        .args(["-v", "-aet", "STORESCU", "-aec", "DIPTYCH", "127.0.0.1"])
        .arg(port.to_string())
        .args(files)
        .env("TCP_NODELAY", "1")
        .output()
        .context("storescu did not start; install dcmtk with `make deps-apt`")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let successes = text.matches("Received Store Response (Success)").count();
    anyhow::ensure!(
        output.status.success() && successes == files.len(),
        "storescu to port {port}: {successes} of {} acknowledged; its output ends:\n{}",
        files.len(),
        text.lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// Sends the files to `node` and returns (acknowledged/s, searchable/s).
async fn measure(node: &mut Node, files: &[PathBuf]) -> anyhow::Result<(f64, f64)> {
    let port = node
        .dicom_port
        .context("the node was started without a DICOM listener")?;
    let mut info = InfoServiceClient::new(channel(&node.grpc).await?);
    let started = Instant::now();
    let sent = files.to_vec();
    tokio::task::spawn_blocking(move || storescu(&sent, port)).await??;
    let acknowledged = started.elapsed().as_secs_f64();
    let want = files.len() as u64;
    loop {
        let stats = info
            .get_index_stats(GetIndexStatsRequest {})
            .await?
            .into_inner();
        if stats.records == want && stats.pending == 0 {
            break;
        }
        anyhow::ensure!(
            stats.records <= want,
            "{} records after sending {want} distinct instances",
            stats.records
        );
        node.process.check_alive()?;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "{} of {want} instances searchable after 600 s",
            stats.records
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let searchable = started.elapsed().as_secs_f64();
    Ok((want as f64 / acknowledged, want as f64 / searchable))
}

/// Runs the comparison; `tick` is called after each measurement.
pub async fn run(
    options: &IngestOptions,
    tick: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<IngestRow>> {
    let files = files(&options.work, options.subjects)?;
    anyhow::ensure!(!files.is_empty(), "no phantom files were written");
    let mut router_runs = Vec::new();
    let mut single_runs = Vec::new();
    for run in 0..options.runs {
        let dir = options.work.join("ingest").join(format!("run-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        for router_side in [run % 2 == 0, run % 2 == 1] {
            if router_side {
                let spec = ClusterSpec {
                    model: options.model.clone(),
                    dir: dir.join("cluster"),
                    shard_dirs: (0..options.shards)
                        .map(|s| dir.join("cluster").join(format!("shard-{s}-data")))
                        .collect(),
                    nats_nodes: options.stream_replicas,
                    stream_replicas: options.stream_replicas,
                    dicom: true,
                };
                let mut cluster = start_cluster(&spec).await?;
                router_runs.push(measure(&mut cluster.router, &files).await?);
                tick("ingest through the router");
            } else {
                std::fs::create_dir_all(&dir)?;
                let mut single = start_single(
                    &options.model,
                    &dir.join("single-data"),
                    true,
                    &dir.join("single.log"),
                )
                .await?;
                single_runs.push(measure(&mut single, &files).await?);
                tick("ingest into the single node");
            }
        }
    }
    let row = |target, runs: &[(f64, f64)], shards, stream_replicas| {
        let ack: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let searchable: Vec<f64> = runs.iter().map(|r| r.1).collect();
        IngestRow {
            bench: "cluster-ingest",
            target,
            shards,
            stream_replicas,
            instances: files.len(),
            ack_per_s: median(&ack),
            searchable_per_s: median(&searchable),
            ack_runs: ack,
            searchable_runs: searchable,
        }
    };
    Ok(vec![
        row(
            "router",
            &router_runs,
            options.shards,
            options.stream_replicas,
        ),
        row("single", &single_runs, 0, 0),
    ])
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}
