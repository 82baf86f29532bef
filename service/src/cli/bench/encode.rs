//! `diptych bench encode`: slices per second through the service's encoder (ONNX Runtime behind
//! the dynamic batcher) at batch 1 and 32, side by side in one run with PyTorch eager inference
//! of the same weights on the same slices and the same number of threads.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych::preprocess::preprocess;
use diptych_service::bundle::Bundle;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::cli::engine::start_engine;

/// Options of the encode benchmark.
#[derive(Debug, Clone)]
pub struct EncodeBench {
    /// The model bundle.
    pub model: PathBuf,
    /// Distinct held-out phantom slices to encode (cycled).
    pub slices: usize,
    /// Batch sizes to measure.
    pub batches: Vec<usize>,
    /// Threads for both ONNX Runtime and PyTorch.
    pub threads: usize,
    /// Seconds per measurement.
    pub seconds: f64,
    /// Python with torch, onnx and onnx2torch (the `make deps-torch` venv).
    pub python: PathBuf,
    /// The PyTorch baseline script.
    pub script: PathBuf,
}

/// One line of the encode benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct EncodeRow {
    /// Always "encode".
    pub bench: &'static str,
    /// Batch size.
    pub batch: usize,
    /// Threads of both runtimes.
    pub threads: usize,
    /// Slices per second through the service's encoder.
    pub ort_slices_per_s: f64,
    /// CPU time (all threads) the service's encoder spent per slice, in milliseconds.
    pub ort_cpu_ms_per_slice: f64,
    /// Slices per second with PyTorch eager.
    pub torch_slices_per_s: f64,
    /// ort / torch.
    pub ratio: f64,
    /// Share of grid positions where PyTorch and ONNX Runtime chose the same normal code.
    pub index_agreement: f64,
}

/// Runs the benchmark.
pub async fn run(options: &EncodeBench) -> anyhow::Result<Vec<EncodeRow>> {
    let bundle = Bundle::load(&options.model)?;
    let params = bundle.manifest.preprocess;
    let size = params.input_size;
    let generator = PhantomGenerator::new(2, PhantomConfig::default());
    let inputs: Vec<Vec<f32>> = (0..options.slices as u64)
        .map(|i| {
            let slice = generator.slice(i);
            preprocess(&slice.raw_frame(), &params).map(|p| p.pixels)
        })
        .collect::<Result<_, _>>()
        .context("pre-processing phantom slices")?;

    let mut ort_rates = Vec::new();
    let mut codes = Vec::new();
    for &batch in &options.batches {
        let engine = Arc::new(start_engine(&options.model, batch, options.threads).await?);
        if codes.is_empty() {
            for chunk in inputs.chunks(32) {
                let mut tasks = tokio::task::JoinSet::new();
                for (i, pixels) in chunk.iter().enumerate() {
                    let engine = engine.clone();
                    let pixels = pixels.clone();
                    tasks.spawn(async move { (i, engine.encode(pixels).await) });
                }
                let mut got = vec![Vec::new(); chunk.len()];
                while let Some(done) = tasks.join_next().await {
                    let (i, code) = done?;
                    got[i] = code?.normal;
                }
                codes.extend(got.into_iter().flatten().map(i64::from));
            }
        }
        let bar = ProgressBar::new_spinner().with_message(format!("ONNX Runtime, batch {batch}"));
        let started = Instant::now();
        let cpu_started = super::process_cpu_seconds()?;
        let mut done = 0usize;
        let mut next = 0usize;
        while started.elapsed().as_secs_f64() < options.seconds {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..batch {
                let engine = engine.clone();
                let pixels = inputs[next % inputs.len()].clone();
                next += 1;
                tasks.spawn(async move { engine.encode(pixels).await });
            }
            while let Some(done_one) = tasks.join_next().await {
                done_one??;
                done += 1;
            }
            bar.set_position(done as u64);
        }
        bar.finish_and_clear();
        let cpu = super::process_cpu_seconds()? - cpu_started;
        ort_rates.push((
            done as f64 / started.elapsed().as_secs_f64(),
            cpu * 1e3 / done as f64,
        ));
    }

    let dir = tempfile_dir()?;
    let inputs_path = dir.join("inputs.f32");
    let codes_path = dir.join("codes.i64");
    std::fs::write(
        &inputs_path,
        inputs
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )?;
    std::fs::write(
        &codes_path,
        codes
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )?;
    let torch = torch_baseline(options, &inputs_path, &codes_path, inputs.len(), size)?;
    let _ = std::fs::remove_dir_all(&dir);
    let agreement = torch["index_agreement"].as_f64().unwrap_or(f64::NAN);
    Ok(options
        .batches
        .iter()
        .zip(ort_rates)
        .map(|(&batch, (ort, ort_cpu_ms))| {
            let torch_rate = torch["batch"][batch.to_string()]
                .as_f64()
                .unwrap_or(f64::NAN);
            EncodeRow {
                bench: "encode",
                batch,
                threads: options.threads,
                ort_slices_per_s: ort,
                ort_cpu_ms_per_slice: ort_cpu_ms,
                torch_slices_per_s: torch_rate,
                ratio: ort / torch_rate,
                index_agreement: agreement,
            }
        })
        .collect())
}

fn torch_baseline(
    options: &EncodeBench,
    inputs: &Path,
    codes: &Path,
    count: usize,
    size: usize,
) -> anyhow::Result<serde_json::Value> {
    let batches: Vec<String> = options.batches.iter().map(usize::to_string).collect();
    let output = Command::new(&options.python)
        .arg(&options.script)
        .arg("--model")
        .arg(&options.model)
        .arg("--inputs")
        .arg(inputs)
        .arg("--codes")
        .arg(codes)
        .args(["--count", &count.to_string(), "--size", &size.to_string()])
        .args(["--threads", &options.threads.to_string()])
        .args(["--batches", &batches.join(",")])
        .args(["--seconds", &options.seconds.to_string()])
        .output()
        .with_context(|| {
            format!(
                "running the PyTorch baseline with {} (run `make deps-bench` for torch, onnx and \
                 onnx2torch)",
                options.python.display()
            )
        })?;
    if !output.status.success() {
        anyhow::bail!(
            "the PyTorch baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .context("the PyTorch baseline printed nothing")?;
    serde_json::from_str(line).context("reading the PyTorch baseline's JSON")
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("diptych-bench-encode-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The rows as a table.
pub fn table(rows: &[EncodeRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:>8}  {:>14}  {:>14}  {:>16}  {:>7}  {:>10}",
        "batch", "threads", "ort slices/s", "ort CPU ms/sl", "torch slices/s", "ratio", "agreement"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>6}  {:>8}  {:>14.1}  {:>14.2}  {:>16.1}  {:>6.2}x  {:>9.4}",
            r.batch,
            r.threads,
            r.ort_slices_per_s,
            r.ort_cpu_ms_per_slice,
            r.torch_slices_per_s,
            r.ratio,
            r.index_agreement
        );
    }
    out
}
