//! The `diptych` command: `diptych serve` starts the server (see `diptych serve --help`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use diptych_service::config::{Config, ExecutionProvider, Overrides};

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
    /// reflection). Settings: defaults < --config file < DIPTYCH_* environment < flags.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (also DIPTYCH_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder for the service's data [default: data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Model bundle folder [default: models/phantom-v1].
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:50051].
    #[arg(long, value_name = "HOST:PORT")]
    grpc_addr: Option<SocketAddr>,
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
}

fn parse_provider(text: &str) -> Result<ExecutionProvider, String> {
    text.parse()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        config: args.config,
        data_dir: args.data_dir,
        model: args.model,
        grpc_addr: args.grpc_addr,
        execution_provider: args.execution_provider,
        ort_library: args.ort_library,
        dicom_addr: args.dicom_addr,
        ae_title: args.ae_title,
        no_dicom: args.no_dicom,
    };
    let config = Config::load(&overrides, |name| std::env::var(name).ok())
        .context("reading the configuration")?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        model = %config.model.display(),
        grpc_addr = %config.grpc.addr,
        execution_provider = ?config.encoder.execution_provider,
        "diptych serve {}",
        env!("CARGO_PKG_VERSION")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("diptych-rt")
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(diptych_service::server::run(
            config,
            diptych_service::server::shutdown_signal(),
        ))
        .context("diptych serve stopped")?;
    Ok(())
}
