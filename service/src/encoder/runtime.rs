//! ONNX Runtime: finding the shared library, loading it once per process, and opening sessions
//! on the chosen execution provider.
//!
//! The library is `libonnxruntime.so` 1.31 from the `onnxruntime` (CPU) or `onnxruntime-gpu`
//! wheel, loaded at run time (`ort`'s `load-dynamic`). It is looked for, in order, at the path
//! the configuration gives (`encoder.ort_library`, `DIPTYCH_ORT_LIBRARY`, `--ort-library`), at
//! `ORT_DYLIB_PATH`, and in the project cache that `make deps-ort` fills
//! (`$HOME/.cache/diptych/onnxruntime-1.31.0/libonnxruntime.so.1.31.0`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use thiserror::Error;

use crate::config::ExecutionProvider;

/// The ONNX Runtime version the service is built and tested against.
pub const ORT_VERSION: &str = "1.31.0";

/// Where the ONNX Runtime library was found, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryLocation {
    /// The library file.
    pub path: PathBuf,
    /// Which rule gave it: "configuration", "ORT_DYLIB_PATH" or "project cache".
    pub source: &'static str,
}

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
    #[error(
        "the ONNX Runtime library was not found at {} (from the {}); run `make deps-ort` to \
         fetch ONNX Runtime {ORT_VERSION} into the project cache, or set ORT_DYLIB_PATH (or \
         --ort-library) to a libonnxruntime.so of version {ORT_VERSION}",
        .0.path.display(), .0.source
    )]
    LibraryMissing(LibraryLocation),
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

/// Finds the library by the rules of the module docs; `env` reads environment variables.
pub fn locate_library(
    configured: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LibraryLocation, RuntimeError> {
    let location = if let Some(path) = configured {
        LibraryLocation {
            path: path.to_path_buf(),
            source: "configuration",
        }
    } else if let Some(path) = env("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        LibraryLocation {
            path: PathBuf::from(path),
            source: "ORT_DYLIB_PATH",
        }
    } else {
        let home = env("HOME").unwrap_or_else(|| "~".to_string());
        LibraryLocation {
            path: PathBuf::from(home)
                .join(".cache/diptych")
                .join(format!("onnxruntime-{ORT_VERSION}"))
                .join(format!("libonnxruntime.so.{ORT_VERSION}")),
            source: "project cache",
        }
    };
    if location.path.is_file() {
        Ok(location)
    } else {
        Err(RuntimeError::LibraryMissing(location))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_is_looked_for_in_configuration_then_env_then_cache() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libonnxruntime.so.1.31.0");
        std::fs::write(&lib, b"not really a library").unwrap();
        let other = dir.path().join("other.so");
        std::fs::write(&other, b"").unwrap();

        let env_with = |ort: Option<&Path>, home: &Path| {
            let ort = ort.map(|p| p.to_string_lossy().to_string());
            let home = home.to_string_lossy().to_string();
            move |name: &str| match name {
                "ORT_DYLIB_PATH" => ort.clone(),
                "HOME" => Some(home.clone()),
                _ => None,
            }
        };
        let found = locate_library(Some(&other), env_with(Some(&lib), dir.path())).unwrap();
        assert_eq!(
            (found.path.as_path(), found.source),
            (other.as_path(), "configuration")
        );

        let found = locate_library(None, env_with(Some(&lib), dir.path())).unwrap();
        assert_eq!(
            (found.path.as_path(), found.source),
            (lib.as_path(), "ORT_DYLIB_PATH")
        );

        let cache = dir.path().join(".cache/diptych/onnxruntime-1.31.0");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("libonnxruntime.so.1.31.0"), b"").unwrap();
        let found = locate_library(None, env_with(None, dir.path())).unwrap();
        assert_eq!(found.source, "project cache");
        assert!(found.path.starts_with(dir.path()));
    }

    #[test]
    fn a_missing_library_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_string_lossy().to_string();
        let err = locate_library(None, move |name: &str| {
            (name == "HOME").then(|| home.clone())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("make deps-ort") && err.contains("ORT_DYLIB_PATH"),
            "{err}"
        );
        assert!(err.contains("project cache"), "{err}");
    }
}
