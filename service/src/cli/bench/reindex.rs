//! `diptych bench reindex`: how fast a re-index re-encodes an index from its kept frames,
//! beside the new encoder's own throughput on the same frames, in one run.
//!
//! An index is built in-process, as `diptych serve` keeps it (write-ahead log, code store,
//! catalog, `[index] keep_frames` on), from N phantom slices encoded by the old bundle; then
//! - **encoder**: the new bundle's engine (same options) encodes the same pre-processed slices,
//!   32 requests in flight, as fast as it can: the ceiling;
//! - **re-index**: [`Index::start_reindex`] with the new bundle, timed from the call to the
//!   switch (loading the bundle, reading the kept frames, encoding, appending to the new code
//!   store with its syncs, the catalog's re-scoring and the switch commit).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych::preprocess::preprocess;
use diptych_dicom_adapter::Limits;
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};
use diptych_service::config::ExecutionProvider;
use diptych_service::encoder::runtime::{environment, locate_library};
use diptych_service::encoder::{BatcherConfig, BundleLoader, EngineOptions};
use diptych_service::index::{AcceptOutcome, EngineLoader, Index, IndexOptions, ReindexPhase};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Slices per instance sent to the index (one multi-frame instance each).
const FRAMES: usize = 32;
/// Encode requests in flight for the encoder's own throughput.
const IN_FLIGHT: usize = 32;

/// Options of the re-index benchmark.
#[derive(Debug, Clone)]
pub struct ReindexBench {
    /// The bundle the index is built with.
    pub from_model: PathBuf,
    /// The bundle it is re-indexed to (same pre-processing, so the kept frames are reused).
    pub to_model: PathBuf,
    /// Records in the index.
    pub records: usize,
    /// Threads of the encoder (intra-op).
    pub threads: usize,
    /// The data folder it builds (emptied first).
    pub data_dir: PathBuf,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReindexRow {
    /// Always "reindex".
    pub bench: &'static str,
    /// The new model.
    pub model_id: String,
    /// Records re-indexed.
    pub records: usize,
    /// Encoder threads.
    pub threads: usize,
    /// Kept frames' bytes per record (input_size² × 4).
    pub kept_frame_bytes: usize,
    /// Records per second from the start call to the switch.
    pub reindex_per_s: f64,
    /// Slices per second through the new encoder alone, on the same frames.
    pub encoder_per_s: f64,
    /// reindex / encoder.
    pub ratio: f64,
}

/// Runs the benchmark.
pub async fn run(options: &ReindexBench) -> anyhow::Result<ReindexRow> {
    let library = locate_library(None, |name| std::env::var(name).ok())?;
    let env = environment(&library.path)?;
    let engine_options = EngineOptions {
        remote: None,
        execution_provider: ExecutionProvider::Cpu,
        sessions: 1,
        intra_threads: options.threads,
        intra_op_spinning: false,
        precision: Default::default(),
        nice: 0,
        batcher: BatcherConfig {
            max_batch: 32,
            max_delay: Duration::from_millis(5),
            queue_capacity: 256,
        },
    };
    let loader = Arc::new(BundleLoader::new(env, engine_options));
    let load = |dir: &PathBuf| {
        let loader = loader.clone();
        let dir = dir.clone();
        async move {
            let shown = dir.display().to_string();
            tokio::task::spawn_blocking(move || loader.load(&dir))
                .await?
                .map_err(|reason| anyhow::anyhow!("{shown}: {reason}"))
        }
    };
    let old = load(&options.from_model).await?;
    let new = load(&options.to_model).await?;
    let params = new.manifest().preprocess;
    anyhow::ensure!(
        old.manifest().preprocess == params,
        "the two bundles pre-process differently, so a re-index would not reuse kept frames; \
         pick two with the same `preprocess` in their manifests"
    );

    if options.data_dir.exists() {
        std::fs::remove_dir_all(&options.data_dir)
            .with_context(|| format!("emptying {}", options.data_dir.display()))?;
    }
    let index = Index::open(
        &options.data_dir,
        old.clone(),
        IndexOptions {
            limits: Limits::default(),
            quiet_period: Duration::from_secs(1),
            max_backlog_frames: 4096,
            min_free_bytes: 0,
            faults: Default::default(),
            keep_frames: true,
            engines: Some(loader.clone()),
            fetcher: None,
        },
    )?;
    let instances = options.records.div_ceil(FRAMES);
    let generator = PhantomGenerator::new(7, PhantomConfig::default());
    let bar = progress(instances as u64, "index with the old model");
    for i in 0..instances {
        match index.accept(instance(&generator, i)).await? {
            AcceptOutcome::Accepted { .. } => bar.inc(1),
            other => anyhow::bail!("instance {i} was not accepted: {other:?}"),
        }
    }
    while index.counters.pending.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    let records = index.record_counts().0;

    // The ceiling: the new encoder alone, on the same kind of frames.
    let frames: Vec<Vec<f32>> = (0..256u64)
        .map(|s| preprocess(&generator.slice(s).raw_frame(), &params).map(|p| p.pixels))
        .collect::<Result<_, _>>()
        .context("pre-processing phantom slices")?;
    let bar = progress(records as u64, "the new encoder alone");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..records {
        if tasks.len() >= IN_FLIGHT {
            tasks.join_next().await.expect("a task in flight")??;
            bar.inc(1);
        }
        let (engine, pixels) = (new.clone(), frames[s % frames.len()].clone());
        tasks.spawn(async move { engine.encode(pixels).await.map(|_| ()) });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
        bar.inc(1);
    }
    let encoder_per_s = records as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    drop(new);

    // The re-index, from the call to the switch.
    let bar = progress(records as u64, "re-index from kept frames");
    let started = Instant::now();
    index
        .start_reindex(&options.to_model)
        .await
        .context("starting the re-index")?;
    let status = loop {
        let status = index.reindex_status();
        bar.set_position(status.records_done);
        match status.phase {
            ReindexPhase::Done => break status,
            ReindexPhase::Failed | ReindexPhase::Cancelled | ReindexPhase::Idle => {
                anyhow::bail!("the re-index stopped: {:?}", status.error)
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let reindex_per_s = records as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    anyhow::ensure!(
        status.from_kept_frames as usize == records,
        "only {} of {records} records came from kept frames",
        status.from_kept_frames
    );
    index.close().await;
    Ok(ReindexRow {
        bench: "reindex",
        model_id: status.to_model_id,
        records,
        threads: options.threads,
        kept_frame_bytes: params.input_size * params.input_size * 4,
        reindex_per_s,
        encoder_per_s,
        ratio: reindex_per_s / encoder_per_s,
    })
}

fn progress(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    )
}

/// Instance `i`: [`FRAMES`] phantom slices as one multi-frame MR image (its SOP Instance UID
/// is its first slice's).
fn instance(generator: &PhantomGenerator, i: usize) -> Vec<u8> {
    let slices: Vec<_> = (0..FRAMES as u64)
        .map(|f| generator.slice((i * FRAMES) as u64 + f))
        .collect();
    let mut instance = SyntheticInstance::from_phantom(&slices[0]);
    let samples = slices
        .iter()
        .flat_map(|s| {
            s.image
                .iter()
                .map(|&v| v.round().clamp(0.0, 65535.0) as u16)
        })
        .collect();
    instance.samples = StoredSamples::U16(samples);
    instance.to_part10()
}

/// The result as a table.
pub fn table(row: &ReindexRow) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "re-index to {} of {} records from kept frames ({} KiB each), {} encoder threads",
        row.model_id,
        row.records,
        row.kept_frame_bytes / 1024,
        row.threads
    );
    let _ = writeln!(out, "{:<28} {:>12}", "", "records/s");
    let _ = writeln!(
        out,
        "{:<28} {:>12.0}",
        "re-index (start to switch)", row.reindex_per_s
    );
    let _ = writeln!(
        out,
        "{:<28} {:>12.0}",
        "the new encoder alone", row.encoder_per_s
    );
    let _ = writeln!(out, "{:<28} {:>12.2}", "ratio", row.ratio);
    out
}
