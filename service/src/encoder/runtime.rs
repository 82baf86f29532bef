//! ONNX Runtime: finding the shared library, loading it once per process, and opening sessions
//! on the chosen execution provider.
//!
//! The library is `libonnxruntime.so` 1.31, loaded at run time (`ort`'s `load-dynamic`) from where
//! the bundle contract's rules find it ([`diptych::bundle::library`], shared with the
//! evaluator): the configured path (`encoder.ort_library`, `DIPTYCH_ORT_LIBRARY`,
//! `--ort-library`), then `ORT_DYLIB_PATH`, then the project cache that `make deps-ort` fills.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use thiserror::Error;

use crate::config::ExecutionProvider;

pub use diptych::bundle::library::{LibraryLocation, ORT_VERSION};
use diptych::bundle::library::{LibraryMissing, locate_with};

/// The execution provider a session actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// NVIDIA CUDA.
    Cuda,
    /// ONNX Runtime's CPU provider.
    Cpu,
}

impl Provider {
    /// "cuda" or "cpu", as reported by the capabilities call.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }
}

/// Why ONNX Runtime could not be started or a session opened.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// No library file at the path the rules give.
    #[error(transparent)]
    LibraryMissing(#[from] LibraryMissing),
    /// The file exists but could not be loaded as ONNX Runtime.
    #[error(
        "cannot load ONNX Runtime from {path}: {message}; it must be libonnxruntime.so \
         {ORT_VERSION} (`make deps-ort` fetches it)"
    )]
    LibraryLoad {
        /// The library file.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The ONNX Runtime environment could not be created.
    #[error("cannot start ONNX Runtime: {0}")]
    Environment(String),
    /// CUDA was required but does not register.
    #[error(
        "the CUDA execution provider is not available: {0}; use the onnxruntime-gpu library with \
         CUDA 12/13 and cuDNN 9 installed, or choose --execution-provider cpu or auto"
    )]
    CudaUnavailable(String),
    /// A graph could not be loaded into a session.
    #[error("ONNX Runtime cannot load {graph}: {message}")]
    Session {
        /// Which graph ("encoder.onnx").
        graph: String,
        /// ONNX Runtime's message.
        message: String,
    },
}

/// Finds the library by the rules of [`diptych::bundle::library`]; `env` reads environment
/// variables.
pub fn locate_library(
    configured: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LibraryLocation, RuntimeError> {
    Ok(locate_with(configured, env)?)
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Loads the library (once per process; later calls return the first environment) and creates
/// the ONNX Runtime environment.
pub fn environment(library: &Path) -> Result<&'static Environment, RuntimeError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let builder = ort::init_from(library).map_err(|e| RuntimeError::LibraryLoad {
        path: library.to_path_buf(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("diptych")
        .build()
        .map_err(|e| RuntimeError::Environment(e.to_string()))?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// Opens a session on `graph` (bytes of an ONNX file named `name`) with the requested provider,
/// `intra_threads` threads that spin when idle only if `spinning`; returns the session and the
/// provider it actually runs on.
pub fn open_session(
    env: &Environment,
    name: &str,
    graph: &[u8],
    requested: ExecutionProvider,
    intra_threads: usize,
    spinning: bool,
) -> Result<(Session, Provider), RuntimeError> {
    let session_error = |e: &dyn std::fmt::Display| RuntimeError::Session {
        graph: name.to_string(),
        message: e.to_string(),
    };
    let builder = || -> Result<_, RuntimeError> {
        Session::builder(env)
            .map_err(|e| session_error(&e))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| session_error(&e))?
            .with_intra_threads(intra_threads.max(1))
            .map_err(|e| session_error(&e))?
            .with_intra_op_spinning(spinning)
            .map_err(|e| session_error(&e))
    };
    if requested != ExecutionProvider::Cpu {
        let cuda = ort::ep::CUDA::default().build().error_on_failure();
        let attempt = builder()?
            .with_execution_providers([cuda])
            .map_err(|e| e.to_string())
            .and_then(|mut b| b.commit_from_memory(graph).map_err(|e| e.to_string()));
        match attempt {
            Ok(session) => return Ok((session, Provider::Cuda)),
            Err(message) if requested == ExecutionProvider::Cuda => {
                return Err(RuntimeError::CudaUnavailable(message));
            }
            Err(message) => {
                tracing::info!(graph = name, reason = %message, "CUDA is not available; using the CPU");
            }
        }
    }
    let session = builder()?
        .commit_from_memory(graph)
        .map_err(|e| session_error(&e))?;
    Ok((session, Provider::Cpu))
}

/// Threads per session when the configuration says 0: the machine's cores shared among the
/// sessions of both graphs' pools that run at once (at least 1).
pub fn default_intra_threads(sessions: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / sessions.max(1)).max(1)
}
