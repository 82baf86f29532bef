//! `diptych-train`: train the diptych network, write the phantom contact sheet, export a model
//! bundle (with its lesion threshold chosen on validation slices, or as trained) and evaluate it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use diptych::phantom::{PhantomConfig, PhantomGenerator, SLICES_PER_SUBJECT};
use diptych_training::config::TrainConfig;
use diptych_training::device::{DeviceChoice, set_torch_threads};
use diptych_training::trainer::{TrainOptions, bench, train};

/// Train and ship the diptych network.
#[derive(Debug, Parser)]
#[command(name = "diptych-train", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the network from a config file; checkpoints and figures go to --out.
    Train(TrainArgs),
    /// Write a PNG contact sheet of phantom slices with their label overlays.
    PhantomSheet(SheetArgs),
    /// Time data generation and the training step of a config on this machine.
    Bench(BenchArgs),
    /// Export a checkpoint as a model bundle (encoder.onnx, decoder.onnx, manifest.json).
    Export(diptych_training::export::command::ExportArgs),
    /// Score a model bundle through ONNX Runtime on held-out phantom slices.
    Eval(diptych_training::eval::command::EvalArgs),
    /// Export a checkpoint with the lesion threshold (background-logit offset) that segments
    /// validation slices of its training sources best.
    Threshold(diptych_training::threshold::command::ThresholdArgs),
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// The training config (TOML), e.g. training/configs/phantom-v1.toml.
    #[arg(long)]
    config: PathBuf,
    /// Output folder for checkpoints (last.ot), losses and figures.
    #[arg(long)]
    out: PathBuf,
    /// Override schedule.steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Override schedule.batch_size.
    #[arg(long)]
    batch: Option<usize>,
    /// Override schedule.learning_rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Override schedule.seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override schedule.init: start from this checkpoint's weights (a last.ot) instead of the
    /// one the config names, e.g. a first stage just trained.
    #[arg(long)]
    init: Option<PathBuf>,
    /// cpu, cuda or auto (CUDA when available).
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// libtorch threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Continue from <out>/last.ot, last.adam.ot and last.json.
    #[arg(long)]
    resume: bool,
    /// Threads assembling batches in the background.
    #[arg(long, default_value_t = 1)]
    data_workers: usize,
    /// No progress bar (for logs).
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// The training config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Training steps to time (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Override schedule.batch_size.
    #[arg(long)]
    batch: Option<usize>,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// libtorch threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Args)]
struct SheetArgs {
    /// Where to write the PNG.
    #[arg(long, default_value = "docs/phantom-contact-sheet.png")]
    out: PathBuf,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of slices (from different subjects and levels).
    #[arg(long, default_value_t = 12)]
    count: u64,
}

fn run_train(args: &TrainArgs) -> Result<()> {
    let mut config = TrainConfig::load(&args.config)?;
    let s = &mut config.schedule;
    s.steps = args.steps.unwrap_or(s.steps);
    s.batch_size = args.batch.unwrap_or(s.batch_size);
    s.learning_rate = args.lr.unwrap_or(s.learning_rate);
    s.seed = args.seed.unwrap_or(s.seed);
    if let Some(init) = &args.init {
        s.init = Some(init.clone());
    }
    let device = args.device.resolve()?;
    let cores = set_torch_threads(args.threads);
    eprintln!(
        "diptych-train: {} steps, batch {}, device {device:?}, {cores} torch threads, out {}",
        config.schedule.steps,
        config.schedule.batch_size,
        args.out.display()
    );
    let options = TrainOptions {
        config,
        out: args.out.clone(),
        device,
        resume: args.resume,
        progress: !args.quiet,
        data_workers: args.data_workers,
    };
    let report = train(&options).context("training failed")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn run_sheet(args: &SheetArgs) -> Result<()> {
    let generator = PhantomGenerator::new(args.seed, PhantomConfig::default());
    // one slice per subject, walking the levels from skull base to vertex
    let slices: Vec<_> = (0..args.count)
        .map(|i| generator.slice(i * SLICES_PER_SUBJECT + (2 + i * 5) % SLICES_PER_SUBJECT))
        .collect();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    diptych::phantom::write_contact_sheet(&slices, Path::new(&args.out))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn run_bench(args: &BenchArgs) -> Result<()> {
    let mut config = TrainConfig::load(&args.config)?;
    config.schedule.batch_size = args.batch.unwrap_or(config.schedule.batch_size);
    let device = args.device.resolve()?;
    let cores = set_torch_threads(args.threads);
    let timing = bench(&config, device, args.steps)?;
    println!(
        "{}",
        serde_json::json!({
            "device": format!("{device:?}"),
            "torch_threads": cores,
            "batch_size": config.schedule.batch_size,
            "seconds_per_sample": timing.seconds_per_sample,
            "seconds_per_step": timing.seconds_per_step,
            "cpu_seconds_per_step": timing.cpu_seconds_per_step,
            "parameters": timing.parameters,
        })
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Train(args) => run_train(args),
        Command::PhantomSheet(args) => run_sheet(args),
        Command::Bench(args) => run_bench(args),
        Command::Export(args) => {
            use diptych_training::export::command;
            let exported = command::run(args).context("export failed")?;
            println!("{}", command::summary(&exported, &args.out));
            Ok(())
        }
        Command::Threshold(args) => diptych_training::threshold::command::run(args)
            .map(|_| ())
            .context("threshold failed"),
        Command::Eval(args) => diptych_training::eval::command::run(args)
            .map(|_| ())
            .context("eval failed"),
    }
}
