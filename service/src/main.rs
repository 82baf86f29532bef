//! The `diptych` command: `diptych serve` starts the server; `ingest`, `search`, `stats`,
//! `delete`, `admin` and `backfill` talk to a running server over gRPC (see `diptych --help`).

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use diptych_service::config::{Config, ExecutionProvider, LogFormat, Overrides};

/// diptych: content-based retrieval of medical image slices by normal and abnormal anatomy.
#[derive(Debug, Parser)]
#[command(name = "diptych", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the model over gRPC (Encode, Decompose, model card, capabilities, health,
    /// reflection), DICOM and HTTP (/metrics, /healthz, /readyz). Settings: defaults < --config
    /// file < DIPTYCH_* environment < flags (every key: `diptych config reference`).
    Serve(ServeArgs),
    /// Check a configuration file, or print the configuration reference.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Send DICOM files and folders (walked recursively) to a running server; prints a summary
    /// of what was indexed and why anything was refused.
    Ingest {
        /// Files or folders of DICOM instances.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        server: cli::ServerArgs,
    },
    /// Find the slices (series, studies) most similar to a DICOM file or an indexed slice.
    Search(SearchArgs),
    /// Print the index statistics and the server's capabilities.
    Stats {
        #[command(flatten)]
        server: cli::ServerArgs,
    },
    /// Delete every record of a patient, study, series or instance, completely and durably.
    Delete(DeleteArgs),
    /// Change who may send DICOM and where KOS documents go, without a restart; C-ECHO a
    /// destination; list recent associations (role admin).
    Admin(cli::network_admin::AdminArgs),
    /// Index the studies an archive already holds: C-FIND or QIDO-RS (date range, modality,
    /// description), then C-GET, C-MOVE or WADO-RS of every study not yet indexed, as a
    /// resumable job in the server, with a progress bar and a summary of what failed (role
    /// admin).
    Backfill(cli::backfill::BackfillArgs),
    /// Benchmarks of the README's performance section (in-process; no server needed).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Something to look at on a fresh install: phantom studies to send.
    #[command(subcommand)]
    Demo(DemoCommand),
    /// Retrieval quality on synthetic slices or a BraTS folder through the service's encoder and
    /// exact search: label Dice of the top-k in each mode, lesion agreement, twins and
    /// composites, against random, raw-pixel and continuous-latent baselines (in-process; no
    /// server needed).
    Eval(EvalArgs),
    /// Measure a bundle's combined-mode balance (the abnormal weight at which both halves of a
    /// code count alike, E[d_n] / E[d_a] on held-out synthetic slices) and write it into its
    /// manifest; searches that name no weights use it (in-process; no server needed).
    Calibrate(CalibrateArgs),
    /// Write an int8 copy of a bundle's encoder (ONNX Runtime's static quantisation, calibrated
    /// on held-out synthetic slices) and record it in the manifest only if its codes agree with
    /// the float graph's on other held-out slices; `[encoder] precision = "int8"` serves it.
    Quantize(QuantizeArgs),
}

#[derive(Debug, Subcommand)]
enum DemoCommand {
    /// Write phantom brain studies as DICOM files (held-out phantom seed 2): one MR study per
    /// patient PHANTOM-000n, healthy and diseased slices, and for every diseased slice its
    /// healthy twin (patient TWIN-000n). Send them with `diptych ingest DIR` or storescu.
    WriteStudies {
        /// Folder to write into (created if missing).
        dir: PathBuf,
        /// Phantom patients, 16 slices each.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=100))]
        subjects: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a TOML configuration file without starting anything: every key known, every value
    /// in range, the [dicom] allow-list and TLS files readable. Prints one line and exits 0, or
    /// names the key at fault and exits 1. The environment and flags are not applied.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print the configuration reference (every key, default, environment variable and flag)
    /// as markdown: docs/CONFIGURATION.md.
    Reference,
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// Model bundle.
    #[arg(long, default_value = "models/synth-v9")]
    model: PathBuf,
    /// Synthetic source of queries and references (anatomy reads the MNI152 maps that
    /// `make deps-atlas` unpacks, or DIPTYCH_ATLAS_DIR).
    #[arg(long, value_enum, default_value_t = SourceArg::Anatomy, conflicts_with = "brats")]
    source: SourceArg,
    /// Evaluate on a BraTS folder instead of a synthetic source: one subfolder per subject with
    /// <subject>_{flair,t1,t1ce,t2,seg}.nii.gz (BraTS 2018–2021) or
    /// <subject>-{t2f,t1n,t1c,t2w,seg}.nii.gz (BraTS 2023), .nii also read. Queries and
    /// references come from disjoint subjects; the normal labels are the brain mask; there are
    /// no healthy twins.
    #[arg(long, value_name = "DIR")]
    brats: Option<PathBuf>,
    /// The contrast read from each BraTS subject.
    #[arg(long, value_enum, default_value_t = ContrastArg::Flair, requires = "brats")]
    brats_contrast: ContrastArg,
    /// Axial slices per BraTS subject, evenly spaced over the brain.
    #[arg(long, default_value_t = 24, requires = "brats")]
    brats_slices_per_subject: usize,
    /// Queries (generator seed --seed-queries; with --brats, from ⌈queries / slices per
    /// subject⌉ subjects).
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// References (generator seed --seed-references; with --brats, at most what the other
    /// subjects hold).
    #[arg(long, default_value_t = 5000)]
    references: usize,
    /// Generator seed of the queries (seed 1 trains the model, seed 2 is its held-out set).
    #[arg(long, default_value_t = 4, conflicts_with = "brats")]
    seed_queries: u64,
    /// Generator seed of the references.
    #[arg(long, default_value_t = 3, conflicts_with = "brats")]
    seed_references: u64,
    /// Share of healthy slices in both sets (a BraTS folder's data decides its own).
    #[arg(long, default_value_t = 0.3, conflicts_with = "brats")]
    healthy_fraction: f32,
    /// Threads for generation, encoding, search and the brute-force baselines.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Write a figure (queries and their top 5 in each mode, and a composite) to this PNG.
    #[arg(long, value_name = "PNG")]
    figure: Option<PathBuf>,
    /// End stdout with one line of JSON holding every figure.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CalibrateArgs {
    /// Model bundle (its manifest.json is rewritten).
    #[arg(long)]
    model: PathBuf,
    /// Synthetic sources of the slices, as the bundle was trained on (anatomy reads the MNI152
    /// maps that `make deps-atlas` unpacks, or DIPTYCH_ATLAS_DIR).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SourceArg::Phantom, SourceArg::Anatomy])]
    source: Vec<SourceArg>,
    /// Slices per source (held-out seed 2, half healthy).
    #[arg(long, default_value_t = 300)]
    slices: usize,
    /// Threads for generation and encoding.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print one JSON line instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct QuantizeArgs {
    /// Model bundle (encoder.int8.onnx is written into it and its manifest.json rewritten).
    #[arg(long)]
    model: PathBuf,
    /// Synthetic sources of the slices, as the bundle was trained on.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SourceArg::Phantom, SourceArg::Anatomy])]
    source: Vec<SourceArg>,
    /// Calibration slices per source (held-out seed 5, half healthy).
    #[arg(long, default_value_t = 256)]
    calibration_slices: usize,
    /// Slices per source the agreement is measured on (held-out seed 2, half healthy).
    #[arg(long, default_value_t = 300)]
    check_slices: usize,
    /// The least share of grid positions whose normal and abnormal codes equal the float graph's.
    #[arg(long, default_value_t = 0.995)]
    min_agreement: f64,
    /// Convolutions (ONNX node names) to keep in float; default: the first one and the
    /// encoder's 1x1 head.
    #[arg(long, value_delimiter = ',')]
    keep_float: Option<Vec<String>>,
    /// Python with onnx and onnxruntime (default: the `make deps-py` venv).
    #[arg(long)]
    python: Option<PathBuf>,
    /// service/tools/quantize_encoder.py (default: the one of the checkout in the current
    /// directory, else the one beside the workspace this binary was built from).
    #[arg(long)]
    script: Option<PathBuf>,
    /// Threads for generation and encoding.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print one JSON line instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
enum SourceArg {
    /// The cartoon phantom.
    Phantom,
    /// Real anatomy from the MNI152 maps.
    Anatomy,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ContrastArg {
    /// T2-weighted FLAIR (BraTS 2023: t2f).
    Flair,
    /// Native T1-weighted (BraTS 2023: t1n).
    T1,
    /// Contrast-enhanced T1-weighted (BraTS 2023: t1c).
    T1ce,
    /// T2-weighted (BraTS 2023: t2w).
    T2,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Slices/s through the encoder at batch 1 and 32 against PyTorch eager on the same weights,
    /// alternating within one run; medians of the runs.
    Encode {
        /// Model bundle.
        #[arg(long, default_value = "models/synth-v9")]
        model: PathBuf,
        /// Threads for both runtimes.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Runs, each measuring both runtimes at both batch sizes (alternating which goes
        /// first); the table reports medians.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Top-10 latency over replicated encodings in each mode, with and without a 10% filter,
    /// against the naive scan and FAISS IndexPQ.
    Search {
        /// Model bundle.
        #[arg(long, default_value = "models/synth-v9")]
        model: PathBuf,
        /// Records to search.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Queries per mode and filter.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Queries per mode and filter that the naive scan also answers, to check that the
        /// hits are identical (about 1 s per query per million records).
        #[arg(long, default_value_t = 10)]
        naive_queries: usize,
        /// Skip the FAISS baseline.
        #[arg(long)]
        no_faiss: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-index rate from kept frames (start to switch) beside the new encoder's own
    /// throughput on the same frames.
    Reindex {
        /// The bundle the index is built with.
        #[arg(long, default_value = "models/phantom-v1")]
        from_model: PathBuf,
        /// The bundle it is re-indexed to (same pre-processing).
        #[arg(long, default_value = "models/synth-v2")]
        model: PathBuf,
        /// Records in the index.
        #[arg(long, default_value_t = 8192)]
        records: usize,
        /// Encoder threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Where the benchmark's data folder goes (emptied first).
        #[arg(long, default_value = "target/bench-reindex")]
        data_dir: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Resident memory per indexed slice and start-to-SERVING time of `diptych serve` on an
    /// index of N records.
    Ready {
        /// Model bundle.
        #[arg(long, default_value = "models/synth-v9")]
        model: PathBuf,
        /// Records in the index.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Where the benchmark's data folders go (reused across runs).
        #[arg(long, default_value = "target/bench-ready")]
        data_dir: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A router over shards against a single node on this machine: search p50/p99 at N records
    /// (identical answers checked), the extra hop, ingest by storescu; and on paper the nodes
    /// and latency for 100M and 1B slices.
    Cluster {
        /// Model bundle of every process.
        #[arg(long, default_value = "models/synth-v9")]
        model: PathBuf,
        /// Records searched.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Shards (one replica each).
        #[arg(long, default_value_t = 2)]
        shards: u32,
        /// Queries per mode and filter on each side.
        #[arg(long, default_value_t = 100)]
        queries: usize,
        /// Phantom subjects sent in the ingest comparison (16 slices each, plus the healthy
        /// twins of the diseased ones: about 26 instances per subject).
        #[arg(long, default_value_t = 12)]
        ingest_subjects: u64,
        /// Runs of the ingest comparison (0 skips it).
        #[arg(long, default_value_t = 3)]
        ingest_runs: usize,
        /// NATS servers, and copies of the ingest stream, in the ingest comparison.
        #[arg(long, default_value_t = 1)]
        stream_replicas: usize,
        /// Data folders (kept for reuse), files and logs
        /// [default: ~/.cache/diptych/bench-cluster].
        #[arg(long)]
        work: Option<PathBuf>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct SearchArgs {
    /// The query: a DICOM file, or the SOP Instance UID of an indexed slice.
    query: Option<String>,
    /// Frame of a multi-frame query.
    #[arg(long, default_value_t = 0)]
    frame: u32,
    /// Composite query: take the normal (anatomy) code from this file or UID …
    #[arg(
        long,
        value_name = "FILE|UID",
        requires = "abnormal_from",
        conflicts_with = "query"
    )]
    normal_from: Option<String>,
    /// … and the abnormal (lesion) code from this one.
    #[arg(long, value_name = "FILE|UID", requires = "normal_from")]
    abnormal_from: Option<String>,
    /// Which codes to compare.
    #[arg(long, value_enum, default_value_t = ModeArg::Combined)]
    mode: ModeArg,
    /// Weight of the normal distance in combined mode.
    #[arg(long, default_value_t = 1.0)]
    normal_weight: f32,
    /// Weight of the abnormal distance in combined mode.
    #[arg(long, default_value_t = 1.0)]
    abnormal_weight: f32,
    /// Metadata filter, e.g. 'modality:MR AND study_date:[20190101 TO 20191231]'.
    #[arg(long, default_value = "")]
    filter: String,
    /// Hits to return (1..1000).
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    /// One hit per slice, series or study.
    #[arg(long, value_enum, default_value_t = GroupArg::Instance)]
    group: GroupArg,
    /// A group's distance is the mean of its best N slices (default: its best slice).
    #[arg(long, value_name = "N")]
    mean_of_best: Option<u32>,
    /// Leave the query slice (its series or study with --group) out; for indexed queries.
    #[arg(long)]
    exclude_query: bool,
    /// On a cluster router: answer from the shards that answer when one does not (the answer
    /// then says it is not exact) instead of failing.
    #[arg(long)]
    allow_partial: bool,
    /// Write the query and the hits, each above its normal-appearing image, to this PNG.
    #[arg(long, value_name = "PNG")]
    montage: Option<PathBuf>,
    #[command(flatten)]
    server: cli::ServerArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Normal,
    Abnormal,
    Combined,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GroupArg {
    Instance,
    Series,
    Study,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false)))]
struct DeleteArgs {
    /// Delete every record of this Patient ID.
    #[arg(long, group = "target")]
    patient: Option<String>,
    /// Delete every record of this Study Instance UID.
    #[arg(long, group = "target")]
    study: Option<String>,
    /// Delete every record of this Series Instance UID.
    #[arg(long, group = "target")]
    series: Option<String>,
    /// Delete every record of this SOP Instance UID.
    #[arg(long, group = "target")]
    instance: Option<String>,
    #[command(flatten)]
    server: cli::ServerArgs,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (also DIPTYCH_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder for the service's data [default: data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Model bundle folder [default: models/synth-v9].
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:50051].
    #[arg(long, value_name = "HOST:PORT")]
    grpc_addr: Option<SocketAddr>,
    /// HTTP listen address for /metrics, /healthz and /readyz [default: 0.0.0.0:8080].
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<SocketAddr>,
    /// Log lines as text or JSON objects [default: text].
    #[arg(long, value_name = "text|json", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// ONNX Runtime execution provider: auto (CUDA if it registers, else CPU), cuda, cpu.
    #[arg(long, value_name = "auto|cuda|cpu", value_parser = parse_provider)]
    execution_provider: Option<ExecutionProvider>,
    /// Path of libonnxruntime.so 1.31 [default: ORT_DYLIB_PATH, then the `make deps-ort` cache].
    #[arg(long, value_name = "PATH")]
    ort_library: Option<PathBuf>,
    /// DICOM listen address [default: 0.0.0.0:11112].
    #[arg(long, value_name = "HOST:PORT")]
    dicom_addr: Option<SocketAddr>,
    /// DICOM AE title of this node [default: DIPTYCH].
    #[arg(long, value_name = "TITLE")]
    ae_title: Option<String>,
    /// Do not listen for DICOM (gRPC only).
    #[arg(long)]
    no_dicom: bool,
    /// Tokens file: who may call the gRPC API, with which role (also DIPTYCH_TOKENS_FILE)
    /// [default: none; then the API is open on a loopback --grpc-addr only].
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
}

fn parse_provider(text: &str) -> Result<ExecutionProvider, String> {
    text.parse()
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    text.parse()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `serve` logs in the format its configuration names, once it is read.
    if !matches!(cli.command, Command::Serve(_)) {
        diptych_service::logging::init(LogFormat::Text);
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Config(ConfigCommand::Check { file }) => {
            // One clear message and status 1 (not an error chain with a backtrace).
            match check_config(&file) {
                Ok(summary) => println!("{summary}"),
                Err(message) => {
                    eprintln!("{message}");
                    std::process::exit(1);
                }
            }
            Ok(())
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", diptych_service::config::reference::markdown());
            Ok(())
        }
        Command::Ingest { paths, server } => client(cli::ingest::run(&server, &paths)),
        Command::Search(args) => {
            let server = args.server.clone();
            client(cli::search::run(&server, search_options(args)?))
        }
        Command::Stats { server } => client(cli::admin::stats(&server)),
        Command::Admin(args) => client(cli::network_admin::run(args)),
        Command::Backfill(args) => client(cli::backfill::run(args)),
        Command::Bench(bench) => client(run_bench(bench)),
        Command::Demo(DemoCommand::WriteStudies { dir, subjects }) => {
            let written = diptych_dicom_adapter::demo::write_studies(&dir, subjects)
                .with_context(|| format!("writing phantom studies into {}", dir.display()))?;
            println!(
                "wrote {} studies ({} slices, {} with a lesion) and {} healthy twins into {}; \
                 send them with: diptych ingest {}",
                written.studies,
                written.slices,
                written.diseased,
                written.twins,
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        Command::Eval(args) => client(run_eval(args)),
        Command::Calibrate(args) => client(run_calibrate(args)),
        Command::Quantize(args) => client(run_quantize(args)),
        Command::Delete(args) => {
            use cli::admin::Level;
            let level = match (args.patient, args.study, args.series, args.instance) {
                (Some(id), ..) => Level::Patient(id),
                (_, Some(id), ..) => Level::Study(id),
                (_, _, Some(id), _) => Level::Series(id),
                (.., Some(id)) => Level::Instance(id),
                _ => {
                    anyhow::bail!("name what to delete: --patient, --study, --series or --instance")
                }
            };
            client(cli::admin::delete(&args.server, level))
        }
    }
}

async fn run_bench(bench: BenchCommand) -> anyhow::Result<()> {
    use cli::bench::{self, cluster, encode, ready, reindex, search};
    match bench {
        BenchCommand::Encode {
            model,
            threads,
            seconds,
            runs,
            json,
        } => {
            let rows = encode::run(&encode::EncodeBench {
                model,
                slices: 256,
                batches: vec![1, 32],
                threads,
                seconds,
                runs,
                python: bench::bench_python(),
                script: bench::script("torch_encode.py"),
            })
            .await?;
            bench::report(json, &encode::table(&rows), &rows)
        }
        BenchCommand::Search {
            model,
            records,
            queries,
            naive_queries,
            no_faiss,
            json,
        } => {
            let report = search::run(&search::SearchBench {
                model,
                records,
                queries,
                naive_queries,
                seeds: 2048,
                faiss: !no_faiss,
            })
            .await?;
            bench::report(json, &search::table(&report), &report.rows)
        }
        BenchCommand::Reindex {
            from_model,
            model,
            records,
            threads,
            data_dir,
            json,
        } => {
            let row = reindex::run(&reindex::ReindexBench {
                from_model,
                to_model: model,
                records,
                threads,
                data_dir,
            })
            .await?;
            bench::report(json, &reindex::table(&row), &[row])
        }
        BenchCommand::Ready {
            model,
            records,
            data_dir,
            json,
        } => {
            let row = ready::run(&ready::ReadyBench {
                model,
                records,
                data_dir,
            })
            .await?;
            bench::report(json, &ready::table(&row), &[row])
        }
        BenchCommand::Cluster {
            model,
            records,
            shards,
            queries,
            ingest_subjects,
            ingest_runs,
            stream_replicas,
            work,
            json,
        } => {
            anyhow::ensure!(
                (1..=3).contains(&stream_replicas),
                "--stream-replicas is {stream_replicas}: give 1 or 3 (one NATS server per copy)"
            );
            anyhow::ensure!(
                records > 0 && queries > 0,
                "--records and --queries must be above 0"
            );
            let work = match work {
                Some(work) => work,
                None => std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .context("HOME is not set: give --work")?
                    .join(".cache/diptych/bench-cluster"),
            };
            let report = cluster::run(&cluster::ClusterBench {
                model,
                records,
                shards,
                queries,
                work,
                ingest_subjects,
                ingest_runs,
                stream_replicas,
            })
            .await?;
            bench::report(json, &cluster::table(&report), &report.json_rows()?)?;
            anyhow::ensure!(
                report.identical(),
                "the router's answers differ from the single node's (see the table)"
            );
            Ok(())
        }
    }
}

async fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    use cli::eval::{self, BratsOptions, EvalOptions, EvalSource};
    use diptych::brats::Contrast;
    use diptych::synthetic::SourceKind;
    let source = match args.brats {
        Some(dir) => EvalSource::Brats(BratsOptions {
            dir,
            contrast: match args.brats_contrast {
                ContrastArg::Flair => Contrast::Flair,
                ContrastArg::T1 => Contrast::T1,
                ContrastArg::T1ce => Contrast::T1ce,
                ContrastArg::T2 => Contrast::T2,
            },
            slices_per_subject: args.brats_slices_per_subject,
        }),
        None => EvalSource::Synthetic(match args.source {
            SourceArg::Phantom => SourceKind::Phantom,
            SourceArg::Anatomy => SourceKind::Anatomy,
        }),
    };
    let report = eval::run(&EvalOptions {
        model: args.model,
        source,
        queries: args.queries,
        references: args.references,
        seed_queries: args.seed_queries,
        seed_references: args.seed_references,
        healthy_fraction: args.healthy_fraction,
        threads: args.threads,
        figure: args.figure,
    })
    .await?;
    eval::print(&report, args.json)
}

/// The generators the `--source` arguments name.
fn source_kinds(sources: &[SourceArg]) -> Vec<diptych::synthetic::SourceKind> {
    use diptych::synthetic::SourceKind;
    sources
        .iter()
        .map(|s| match s {
            SourceArg::Phantom => SourceKind::Phantom,
            SourceArg::Anatomy => SourceKind::Anatomy,
        })
        .collect()
}

async fn run_quantize(args: QuantizeArgs) -> anyhow::Result<()> {
    use cli::quantize::{self, QuantizeOptions};
    let options = QuantizeOptions {
        model: args.model,
        sources: source_kinds(&args.source),
        calibration_slices: args.calibration_slices,
        check_slices: args.check_slices,
        min_agreement: args.min_agreement,
        keep_float: args.keep_float,
        python: args.python.unwrap_or_else(quantize::default_python),
        script: args.script.unwrap_or_else(quantize::default_script),
        threads: args.threads,
    };
    let q = quantize::run(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string(&q)?);
    } else {
        println!(
            "{}: {} written; its codes equal the float encoder's at {:.2} % (normal) and {:.2} % \
             (abnormal) of the positions of {} held-out slices, scores within {:.4} on average; \
             serve it with [encoder] precision = \"int8\"",
            q.model_id,
            options.model.join(&q.file).display(),
            100.0 * q.normal_agreement,
            100.0 * q.abnormal_agreement,
            q.checked_slices,
            q.score_mean_abs_difference
        );
    }
    Ok(())
}

async fn run_calibrate(args: CalibrateArgs) -> anyhow::Result<()> {
    let sources = source_kinds(&args.source);
    let c = cli::calibrate::run(&args.model, &sources, args.slices, args.threads).await?;
    if args.json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        println!(
            "{}: combined_balance {:.3} (was {:.3}) = E[d_n] {:.2} / E[d_a] {:.2} over {} slices \
             of {} (seed {}); written to {}",
            c.model_id,
            c.combined_balance,
            c.previous_balance,
            c.mean_normal_distance,
            c.mean_abnormal_distance,
            c.slices,
            c.sources.join(" + "),
            cli::calibrate::SEED,
            args.model.join(diptych::manifest::MANIFEST_FILE).display()
        );
    }
    Ok(())
}

/// Runs a client command on a small runtime.
fn client(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(command)
}

fn search_options(args: SearchArgs) -> anyhow::Result<cli::search::SearchOptions> {
    use cli::search::{SearchOptions, Source};
    use diptych::api::v1::{Grouping, SearchMode};
    let source = |text: Option<&str>| text.map(|q| Source::parse(q, args.frame)).transpose();
    Ok(SearchOptions {
        query: source(args.query.as_deref())?,
        normal_from: source(args.normal_from.as_deref())?,
        abnormal_from: source(args.abnormal_from.as_deref())?,
        mode: match args.mode {
            ModeArg::Normal => SearchMode::Normal,
            ModeArg::Abnormal => SearchMode::Abnormal,
            ModeArg::Combined => SearchMode::Combined,
        },
        weights: (args.normal_weight, args.abnormal_weight),
        filter: args.filter,
        top_k: args.top_k,
        grouping: match args.group {
            GroupArg::Instance => Grouping::Instance,
            GroupArg::Series => Grouping::Series,
            GroupArg::Study => Grouping::Study,
        },
        mean_of_best: args.mean_of_best,
        exclude_query: args.exclude_query,
        allow_partial: args.allow_partial,
        montage: args.montage,
    })
}

/// `diptych config check FILE`: the file alone, as `serve` would read it; the summary line, or
/// what is wrong (each message names the file or the key).
fn check_config(file: &std::path::Path) -> Result<String, String> {
    let config = Config::from_file(file).map_err(|e| e.to_string())?;
    let in_file = |e: &dyn std::fmt::Display| format!("{}: {e}", file.display());
    config.validate().map_err(|e| in_file(&e))?;
    diptych_service::dicom::DicomSettings::from_config(&config.dicom, &config.images)
        .map_err(|e| in_file(&e))?;
    Ok(format!("{}: valid; {}", file.display(), config.summary()))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        config: args.config,
        data_dir: args.data_dir,
        model: args.model,
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        log_format: args.log_format,
        execution_provider: args.execution_provider,
        ort_library: args.ort_library,
        dicom_addr: args.dicom_addr,
        ae_title: args.ae_title,
        no_dicom: args.no_dicom,
        tokens_file: args.tokens_file,
    };
    let config = Config::load(&overrides, |name| std::env::var(name).ok())
        .context("reading the configuration")?;
    diptych_service::logging::init(config.log.format);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        model = %config.model.display(),
        grpc_addr = %config.grpc.addr,
        http_addr = %config.http.addr,
        execution_provider = ?config.encoder.execution_provider,
        "diptych serve {}",
        env!("CARGO_PKG_VERSION")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("diptych-rt")
        .build()
        .context("starting the async runtime")?;
    if config.cluster.role == diptych_service::config::Role::Router {
        runtime
            .block_on(diptych_service::cluster::router::run(
                config,
                diptych_service::server::shutdown_signal(),
            ))
            .context("diptych serve (cluster router) stopped")?;
        return Ok(());
    }
    if config.cluster.role == diptych_service::config::Role::Encoder {
        runtime
            .block_on(diptych_service::cluster::encoder::run(
                config,
                diptych_service::server::shutdown_signal(),
            ))
            .context("diptych serve (cluster encoder) stopped")?;
        return Ok(());
    }
    runtime
        .block_on(diptych_service::server::run(
            config,
            diptych_service::server::shutdown_signal(),
        ))
        .context("diptych serve stopped")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use diptych_service::config::reference::KEYS;
    use std::collections::BTreeSet;

    #[test]
    fn every_serve_flag_is_in_the_configuration_reference() {
        let command = Cli::command();
        let serve = command
            .find_subcommand("serve")
            .expect("the serve subcommand");
        let flags: BTreeSet<String> = serve
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|long| *long != "help")
            .map(|long| format!("--{long}"))
            .collect();
        let mut listed: BTreeSet<String> = KEYS
            .iter()
            .filter_map(|k| k.flag)
            .map(String::from)
            .collect();
        listed.insert("--config".to_string());
        assert_eq!(
            flags, listed,
            "the flags of `diptych serve` and reference::KEYS differ"
        );
    }
}
