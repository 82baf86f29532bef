//! `diptych bench encode`: slices per second through the service's encoder (ONNX Runtime behind
//! the dynamic batcher) at batch 1 and 32, against PyTorch eager inference of the same weights on
//! the same slices and the same number of threads. The machine's speed drifts within minutes, so
//! the two alternate within one run (ONNX Runtime first in odd runs, PyTorch first in even ones,
//! PyTorch kept loaded in a child process between measurements), each run is printed, and a
//! row reports the medians and the median of the per-run ratios. When the bundle has an int8
//! encoder (`diptych quantize`), it is measured too, against the same float PyTorch baseline.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych::preprocess::preprocess;
use diptych_service::bundle::Bundle;
use diptych_service::encoder::Engine;
use serde::Serialize;

use crate::cli::engine::start_bundle;
use diptych_service::config::Precision;

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
    /// Alternating runs (each measures both runtimes at every batch size).
    pub runs: usize,
    /// Python with torch, onnx and onnx2torch (the `make deps-torch` venv).
    pub python: PathBuf,
    /// The PyTorch baseline script.
    pub script: PathBuf,
}

/// One line of the encode benchmark: the medians over the runs, and every run.
#[derive(Debug, Clone, Serialize)]
pub struct EncodeRow {
    /// Always "encode".
    pub bench: &'static str,
    /// Which encoder graph ONNX Runtime ran: "float" or "int8".
    pub precision: &'static str,
    /// Batch size.
    pub batch: usize,
    /// Threads of both runtimes.
    pub threads: usize,
    /// Median slices per second through the service's encoder.
    pub ort_slices_per_s: f64,
    /// Median CPU time (all threads) the service's encoder spent per slice, in milliseconds.
    pub ort_cpu_ms_per_slice: f64,
    /// Median slices per second with PyTorch eager.
    pub torch_slices_per_s: f64,
    /// Median over the runs of ort / torch.
    pub ratio: f64,
    /// Share of grid positions with the same normal code: PyTorch's and ONNX Runtime's (float),
    /// or the int8 graph's and the float graph's (int8), both through ONNX Runtime.
    pub index_agreement: f64,
    /// Each run: (ONNX Runtime slices/s, PyTorch slices/s), in the order they ran.
    pub runs: Vec<(f64, f64)>,
}

/// Runs the benchmark.
pub async fn run(options: &EncodeBench) -> anyhow::Result<Vec<EncodeRow>> {
    anyhow::ensure!(options.runs > 0, "--runs must be at least 1");
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

    // What ONNX Runtime measures: every batch size with the float graph, then with the int8
    // one when the bundle has it; each with the share of normal codes equal to the reference.
    let mut precisions = vec![Precision::Float];
    if bundle.encoder_int8.is_some() {
        precisions.push(Precision::Int8);
    }
    let mut variants = Vec::new();
    for &precision in &precisions {
        for &batch in &options.batches {
            let engine = start_bundle(bundle.clone(), precision, batch, options.threads).await?;
            variants.push((precision, batch, Arc::new(engine)));
        }
    }
    let codes = normal_codes(&variants[0].2, &inputs).await?;
    let mut int8_agreement = None;
    if let Some((_, _, int8)) = variants.iter().find(|v| v.0 == Precision::Int8) {
        let int8_codes = normal_codes(int8, &inputs).await?;
        let same = codes
            .iter()
            .zip(&int8_codes)
            .filter(|(a, b)| a == b)
            .count();
        int8_agreement = Some(same as f64 / codes.len().max(1) as f64);
    }

    let dir = tempfile::tempdir().context("a temporary folder for the slices")?;
    let inputs_path = dir.path().join("inputs.f32");
    let codes_path = dir.path().join("codes.i64");
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
    let started = TorchBaseline::start(options, &inputs_path, &codes_path, inputs.len(), size);
    drop(dir);
    let (mut torch, agreement) = started?;

    let steps = (options.runs * variants.len() * 2) as u64;
    let bar = super::progress_bar(steps, "encode");
    // Per variant: (ort rate, ort CPU ms, torch rate) of every run.
    let mut measured: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); variants.len()];
    for run in 0..options.runs {
        for (b, (precision, batch, engine)) in variants.iter().enumerate() {
            let (precision, batch) = (precision_name(*precision), *batch);
            let ort_first = run % 2 == 0;
            let mut ort = (0.0, 0.0);
            let mut theirs = 0.0;
            for turn in 0..2 {
                if (turn == 0) == ort_first {
                    bar.set_message(format!(
                        "run {}: ONNX Runtime ({precision}), batch {batch}",
                        run + 1
                    ));
                    ort = measure_ort(engine, &inputs, batch, options.seconds).await?;
                } else {
                    bar.set_message(format!("run {}: PyTorch, batch {batch}", run + 1));
                    theirs = torch.measure(batch, options.seconds)?;
                }
                bar.inc(1);
            }
            let line = format!(
                "run {}  batch {batch:>3}: ONNX Runtime ({precision}) {:.1} slices/s, PyTorch \
                 {:.1} slices/s, {:.2}x ({} first)",
                run + 1,
                ort.0,
                theirs,
                ort.0 / theirs,
                if ort_first { "ONNX Runtime" } else { "PyTorch" }
            );
            bar.suspend(|| eprintln!("{line}"));
            measured[b].push((ort.0, ort.1, theirs));
        }
    }
    bar.finish_and_clear();
    Ok(variants
        .iter()
        .zip(measured)
        .map(|((precision, batch, _), runs)| {
            let median_of =
                |f: &dyn Fn(&(f64, f64, f64)) -> f64| median(runs.iter().map(f).collect());
            EncodeRow {
                bench: "encode",
                precision: precision_name(*precision),
                batch: *batch,
                threads: options.threads,
                ort_slices_per_s: median_of(&|r| r.0),
                ort_cpu_ms_per_slice: median_of(&|r| r.1),
                torch_slices_per_s: median_of(&|r| r.2),
                ratio: median_of(&|r| r.0 / r.2),
                index_agreement: match precision {
                    Precision::Float => agreement,
                    Precision::Int8 => int8_agreement.unwrap_or(f64::NAN),
                },
                runs: runs.iter().map(|r| (r.0, r.2)).collect(),
            }
        })
        .collect())
}

/// How the table and the JSON name a precision.
fn precision_name(precision: Precision) -> &'static str {
    match precision {
        Precision::Float => "float",
        Precision::Int8 => "int8",
    }
}

/// The median of `values` (the mean of the middle two when their count is even).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The normal indices the service's encoder gives every input, in order.
async fn normal_codes(engine: &Arc<Engine>, inputs: &[Vec<f32>]) -> anyhow::Result<Vec<i64>> {
    let mut codes = Vec::new();
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
    Ok(codes)
}

/// Slices per second and CPU milliseconds per slice through `engine`, `batch` requests in
/// flight, over `seconds`.
async fn measure_ort(
    engine: &Arc<Engine>,
    inputs: &[Vec<f32>],
    batch: usize,
    seconds: f64,
) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let cpu_started = super::process_cpu_seconds()?;
    let mut done = 0usize;
    let mut next = 0usize;
    while started.elapsed().as_secs_f64() < seconds {
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
    }
    let cpu = super::process_cpu_seconds()? - cpu_started;
    Ok((
        done as f64 / started.elapsed().as_secs_f64(),
        cpu * 1e3 / done as f64,
    ))
}

/// The PyTorch baseline (`service/bench/torch_encode.py`), loaded once and asked for one
/// measurement at a time.
struct TorchBaseline {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl TorchBaseline {
    /// Starts the script and waits until it has loaded the model; returns it and the share of
    /// normal indices on which it agrees with ONNX Runtime.
    fn start(
        options: &EncodeBench,
        inputs: &Path,
        codes: &Path,
        count: usize,
        size: usize,
    ) -> anyhow::Result<(TorchBaseline, f64)> {
        let mut child = Command::new(&options.python)
            .arg(&options.script)
            .arg("--model")
            .arg(&options.model)
            .arg("--inputs")
            .arg(inputs)
            .arg("--codes")
            .arg(codes)
            .args(["--count", &count.to_string(), "--size", &size.to_string()])
            .args(["--threads", &options.threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "running the PyTorch baseline with {} (run `make deps-bench` for torch, onnx \
                     and onnx2torch)",
                    options.python.display()
                )
            })?;
        let input = child.stdin.take().context("the baseline's stdin")?;
        let output = BufReader::new(child.stdout.take().context("the baseline's stdout")?);
        let mut torch = TorchBaseline {
            child,
            input,
            output,
        };
        let hello = torch.answer()?;
        let agreement = hello["index_agreement"].as_f64().unwrap_or(f64::NAN);
        Ok((torch, agreement))
    }

    /// PyTorch's slices per second at `batch` over `seconds`.
    fn measure(&mut self, batch: usize, seconds: f64) -> anyhow::Result<f64> {
        writeln!(self.input, "{batch} {seconds}").context("asking the PyTorch baseline")?;
        self.input.flush()?;
        let answer = self.answer()?;
        answer["slices_per_s"]
            .as_f64()
            .context("the PyTorch baseline's answer has no slices_per_s")
    }

    /// The script's next JSON line.
    fn answer(&mut self) -> anyhow::Result<serde_json::Value> {
        let mut line = String::new();
        let read = self.output.read_line(&mut line)?;
        anyhow::ensure!(
            read > 0,
            "the PyTorch baseline ended early (its error is above; `make deps-bench` installs \
             torch, onnx and onnx2torch)"
        );
        serde_json::from_str(&line).context("reading the PyTorch baseline's JSON")
    }
}

impl Drop for TorchBaseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows as a table.
pub fn table(rows: &[EncodeRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>9}  {:>6}  {:>8}  {:>14}  {:>14}  {:>16}  {:>7}  {:>10}",
        "precision",
        "batch",
        "threads",
        "ort slices/s",
        "ort CPU ms/sl",
        "torch slices/s",
        "ratio",
        "agreement"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>9}  {:>6}  {:>8}  {:>14.1}  {:>14.2}  {:>16.1}  {:>6.2}x  {:>9.4}",
            r.precision,
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

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_odd_and_even_counts_and_of_nothing() {
        assert_eq!(median(vec![5.0, 1.0, 3.0, 9.0, 2.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
