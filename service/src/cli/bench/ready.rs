//! `diptych bench ready`: what an index of N records (default 1M) costs to keep and to start.
//!
//! Builds a data folder as `diptych serve` would leave it — N records of the serving model's
//! encodings of phantom slices (replicated with small perturbations, as in the search
//! benchmark) in the code store, and N catalog documents with realistic metadata — then starts
//! `diptych serve` on it as a separate process and measures
//! - the time from process start to gRPC health SERVING (model warm, index open, search
//!   structures built), and
//! - the resident memory after a search has touched every code, minus the resident memory of
//!   the same server on an empty folder: memory per indexed slice, against the raw code bytes
//!   (2·P per record) and the catalog's bytes on disk per record.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::procs;
use super::search_run::{phantom_encodings, replicate};
use anyhow::Context;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{Query, SearchMode, SearchRequest, SliceCodes, query};
use diptych_dicom_adapter::InstanceMetadata;
use diptych_service::catalog::{Catalog, CatalogEntry, Checkpoint};
use diptych_service::encoder::Engine;
use diptych_service::index::folder_bytes;
use diptych_service::record::{RecordKeys, key_of};
use diptych_service::search::DistanceTables;
use diptych_service::store::{CodeStore, ModelStamp, NewRecord};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::engine::start_engine;

/// Options of the ready benchmark.
#[derive(Debug, Clone)]
pub struct ReadyBench {
    /// The model bundle.
    pub model: PathBuf,
    /// Records in the index.
    pub records: usize,
    /// Where to build the data folder (kept for reuse when it already holds `records`).
    pub data_dir: PathBuf,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyRow {
    /// Always "ready".
    pub bench: &'static str,
    /// Records in the index.
    pub records: usize,
    /// Seconds from process start to SERVING.
    pub ready_s: f64,
    /// Seconds from process start to SERVING on an empty folder (model load and warm-up alone).
    pub empty_ready_s: f64,
    /// Seconds of the first search after SERVING, on the first start over the built folder
    /// (no saved search projections: the search is exact but unpruned until they are fitted).
    pub first_search_s: f64,
    /// Seconds from process start to SERVING when the same folder is started again, with the
    /// search projections the first start saved.
    pub restart_ready_s: f64,
    /// Seconds of the first search after SERVING on that restart (pruned from the start).
    pub restart_first_search_s: f64,
    /// Whether the first start left search projections in `<data>/search/`.
    pub projections_saved: bool,
    /// Seconds from SERVING until the first start had fitted and saved the search projections
    /// (searches are pruned from then on); the resident size is read after that.
    pub projections_saved_after_s: Option<f64>,
    /// Resident bytes per indexed slice (loaded server minus empty server, over records).
    pub resident_bytes_per_slice: f64,
    /// Raw code bytes per slice (2·P).
    pub code_bytes_per_slice: usize,
    /// Catalog bytes on disk per slice.
    pub catalog_bytes_per_slice: f64,
    /// resident / (1.25 × code bytes + catalog bytes): at most 1 meets the bar.
    pub bar_ratio: f64,
}

/// Runs the benchmark.
pub async fn run(options: &ReadyBench) -> anyhow::Result<ReadyRow> {
    let data = options
        .data_dir
        .join(format!("records-{}", options.records));
    let positions = build(&options.model, &data, options.records).await?;
    let empty = options.data_dir.join("empty");
    let _ = std::fs::remove_dir_all(&empty);
    let (empty_ready_s, _, empty_rss, _) = measure(&options.model, &empty, positions, None).await?;
    // A first start without saved projections (a previous run's are removed), then a restart
    // that reads back what the first one saved.
    let _ = std::fs::remove_dir_all(data.join("search"));
    let (ready_s, first_search_s, rss, projections_saved_after_s) =
        measure(&options.model, &data, positions, Some(&data.join("search"))).await?;
    let projections_saved =
        std::fs::read_dir(data.join("search")).is_ok_and(|mut entries| entries.next().is_some());
    let (restart_ready_s, restart_first_search_s, _, _) =
        measure(&options.model, &data, positions, None).await?;
    let code_bytes = 2 * positions;
    let catalog_bytes = folder_bytes(&data.join("catalog")) as f64 / options.records as f64;
    let resident = (rss as f64 - empty_rss as f64) / options.records as f64;
    Ok(ReadyRow {
        bench: "ready",
        records: options.records,
        ready_s,
        empty_ready_s,
        first_search_s,
        restart_ready_s,
        restart_first_search_s,
        projections_saved,
        projections_saved_after_s,
        resident_bytes_per_slice: resident,
        code_bytes_per_slice: code_bytes,
        catalog_bytes_per_slice: catalog_bytes,
        bar_ratio: resident / (1.25 * code_bytes as f64 + catalog_bytes),
    })
}

/// Builds the data folder unless a previous run left one with the same count.
async fn build(model: &Path, data: &Path, records: usize) -> anyhow::Result<usize> {
    let engine = Arc::new(start_engine(model, 32, 2).await?);
    let positions = engine.manifest().grid.rows * engine.manifest().grid.cols;
    if data.join("complete").is_file() {
        return Ok(positions);
    }
    let built = Records::replicate(&engine, records, 2048).await?;
    write_folder(data, &built, &(0..records).collect::<Vec<_>>())?;
    Ok(positions)
}

/// N records of the serving model's codes: `seeds` encodings of phantom slices (seed 1)
/// replicated with small perturbations, as in the search benchmark.
pub struct Records {
    /// The model's stamp for the code store.
    pub stamp: ModelStamp,
    /// Normal codes, N×P.
    pub normal: Vec<u8>,
    /// Abnormal codes, N×P.
    pub abnormal: Vec<u8>,
}

impl Records {
    /// Encodes the seeds with `engine` and replicates them to `records` records.
    pub async fn replicate(engine: &Engine, records: usize, seeds: u64) -> anyhow::Result<Records> {
        let manifest = engine.manifest().clone();
        let positions = manifest.grid.rows * manifest.grid.cols;
        let seeds = phantom_encodings(engine, 1, 0, seeds).await?;
        let tables = DistanceTables::of(engine.codebooks())?;
        let (normal, abnormal) = replicate(&tables, &seeds, records, 11);
        Ok(Records {
            stamp: ModelStamp {
                model_id: manifest.model_id.clone(),
                positions,
                codebook_size: manifest.codebook_size,
            },
            normal,
            abnormal,
        })
    }

    /// Positions per code.
    pub fn positions(&self) -> usize {
        self.stamp.positions
    }
}

/// Writes records `ids` (ascending) of `records` into a fresh data folder at `data`, as `diptych
/// serve` would leave it after ingesting them in that order: record `ids[j]` becomes the
/// folder's record `j`, with the metadata of [`metadata_of`]`(ids[j])`. Marks the folder
/// `complete` last, so an interrupted build is redone.
pub fn write_folder(data: &Path, records: &Records, ids: &[usize]) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(data);
    let positions = records.positions();
    let mut store = CodeStore::open(data.join("codes"), records.stamp.clone())?;
    let catalog = Catalog::open(&data.join("catalog"))?;
    let bar = ProgressBar::new(ids.len() as u64).with_style(
        ProgressStyle::with_template(&format!(
            "building {} {{pos}}/{{len}} records [{{bar:30}}] {{per_sec}} eta {{eta}}",
            data.display()
        ))
        .context("progress template")?,
    );
    const CHUNK: usize = 10_000;
    for (chunk_at, chunk) in ids.chunks(CHUNK).enumerate() {
        let mut new = Vec::with_capacity(chunk.len());
        let mut entries = Vec::with_capacity(chunk.len());
        for (j, &i) in chunk.iter().enumerate() {
            let metadata = metadata_of(i);
            new.push(NewRecord {
                normal: records.normal[i * positions..(i + 1) * positions].to_vec(),
                abnormal: records.abnormal[i * positions..(i + 1) * positions].to_vec(),
                keys: RecordKeys {
                    patient: key_of(&metadata.patient_id),
                    study: key_of(&metadata.study_instance_uid),
                    series: key_of(&metadata.series_instance_uid),
                    instance: key_of(&metadata.sop_instance_uid),
                    frame: 0,
                },
                abnormality: (i % 100) as f32 / 100.0,
            });
            entries.push(CatalogEntry {
                record: (chunk_at * CHUNK + j) as u32,
                frame: 0,
                metadata,
                abnormality: (i % 100) as f32 / 100.0,
            });
        }
        store.append(&new)?;
        catalog.add(&entries)?;
        bar.inc(chunk.len() as u64);
    }
    store.sync()?;
    catalog.commit(Checkpoint {
        applied_seq: 0,
        records: ids.len() as u64,
        ..Default::default()
    })?;
    bar.finish_and_clear();
    std::fs::write(data.join("complete"), ids.len().to_string())?;
    Ok(())
}

/// The Study Instance UID of synthetic record `i` (one study per 150 records).
pub fn study_of(i: usize) -> String {
    format!("2.25.{}", 10_000_000 + i / 150)
}

/// Metadata of synthetic record `i`: 150 slices per series, 1 series per study, 2 studies per
/// patient, dates over five years, MR and CT (every tenth series: the 10 % `modality:CT`).
pub fn metadata_of(i: usize) -> InstanceMetadata {
    let series = i / 150;
    InstanceMetadata {
        patient_id: format!("BENCH-{:07}", series / 2),
        patient_sex: if series.is_multiple_of(2) { "F" } else { "M" }.into(),
        patient_age: format!("{:03}Y", 20 + series % 60),
        study_instance_uid: study_of(i),
        series_instance_uid: format!("2.25.{}", 20_000_000 + series),
        sop_instance_uid: format!("2.25.{}", 100_000_000 + i),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
        study_date: format!(
            "{}{:02}{:02}",
            2019 + series % 5,
            1 + series % 12,
            1 + series % 28
        ),
        study_time: "120000".into(),
        modality: if series.is_multiple_of(10) {
            "CT"
        } else {
            "MR"
        }
        .into(),
        body_part: "BRAIN".into(),
        study_description: "MRI brain with contrast".into(),
        series_description: "T1 post contrast".into(),
        institution: "Bench Hospital".into(),
        manufacturer: "Phantom".into(),
        manufacturer_model: "Synthetic".into(),
        slice_location: Some((i % 150) as f64),
        slice_thickness: Some(1.0),
        pixel_spacing: Some([1.0, 1.0]),
        rows: 192,
        columns: 160,
        number_of_frames: 1,
        sequence: "T1".into(),
        series_number: Some(1),
        instance_number: Some((i % 150) as i32 + 1),
        ..InstanceMetadata::default()
    }
}

/// One start of `diptych serve` on `data`: seconds to SERVING, seconds of the first search, the
/// settled resident size, and — when `projections` names the folder the search projections are
/// saved in — the seconds from SERVING until they were saved (the header is written last).
async fn measure(
    model: &Path,
    data: &Path,
    positions: usize,
    projections: Option<&Path>,
) -> anyhow::Result<(f64, f64, u64, Option<f64>)> {
    let addr = procs::free_addr()?;
    let started = Instant::now();
    let mut server =
        procs::start_serve("diptych serve", model, data, &addr, &["--no-dicom"], None)?;
    let ready = procs::wait_serving(&mut server, &addr, started, Duration::from_secs(300)).await?;
    let url = format!("http://{addr}");
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    let code = diptych::api::v1::Code {
        grid_rows: 16,
        grid_columns: (positions / 16) as u32,
        indices: vec![0; positions],
    };
    let searched = Instant::now();
    SearchServiceClient::new(channel)
        .search(SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Codes(SliceCodes {
                    normal: Some(code.clone()),
                    abnormal: Some(code),
                    model_id: String::new(),
                })),
            }),
            mode: SearchMode::Combined as i32,
            top_k: 10,
            ..SearchRequest::default()
        })
        .await
        .context("the warming search failed")?;
    let first_search = searched.elapsed().as_secs_f64();
    let mut saved_after = None;
    if let Some(folder) = projections {
        // Under 1M records the projections are fitted in a second; at 10M in tens of seconds.
        let header = folder.join("header.bin");
        while !header.is_file() {
            server.check_alive()?;
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(900),
                "no search projections saved in {} after 900 s",
                folder.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        saved_after = Some(started.elapsed().as_secs_f64() - ready);
    }
    // The search projections are built in the background after SERVING: wait until the
    // resident size settles (unchanged within 1 % for 2 s) before reading it.
    let pid = server.pid();
    let mut last = resident_bytes(pid)?;
    let mut stable_since = Instant::now();
    let settling = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(2)
        && settling.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = resident_bytes(pid)?;
        if (now as f64 - last as f64).abs() > 0.01 * last as f64 {
            stable_since = Instant::now();
        }
        last = now;
    }
    Ok((ready, first_search, last, saved_after))
}

/// VmRSS of a process, from /proc.
fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kb * 1024)
}

/// The row as a table.
pub fn table(r: &ReadyRow) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "records                      {}", r.records);
    let _ = writeln!(
        out,
        "start to SERVING             {:.2} s (empty folder: {:.2} s)",
        r.ready_s, r.empty_ready_s
    );
    let _ = writeln!(
        out,
        "first search                 {:.3} s (projections not yet fitted)",
        r.first_search_s
    );
    let _ = writeln!(
        out,
        "restart to SERVING           {:.2} s, first search {:.3} s (projections {})",
        r.restart_ready_s,
        r.restart_first_search_s,
        if r.projections_saved {
            "read back"
        } else {
            "NOT saved by the first start"
        }
    );
    if let Some(after) = r.projections_saved_after_s {
        let _ = writeln!(
            out,
            "projections fitted, saved    {after:.1} s after SERVING (searches pruned from then)"
        );
    }
    let _ = writeln!(
        out,
        "resident per indexed slice   {:.0} bytes",
        r.resident_bytes_per_slice
    );
    let _ = writeln!(
        out,
        "raw code bytes per slice     {}",
        r.code_bytes_per_slice
    );
    let _ = writeln!(
        out,
        "catalog on disk per slice    {:.0} bytes",
        r.catalog_bytes_per_slice
    );
    let _ = writeln!(out, "bar ratio (≤ 1 meets it)     {:.2}", r.bar_ratio);
    out
}
