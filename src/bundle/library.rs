//! Where the ONNX Runtime shared library is looked for: one rule for the service, the evaluator
//! (`diptych-train eval`) and the tests.
//!
//! The library is `libonnxruntime.so` 1.31 from the `onnxruntime` (CPU) or `onnxruntime-gpu`
//! wheel, loaded at run time (`ort`'s `load-dynamic`) by the crate that runs graphs. It is looked
//! for, in order, at the path the caller was configured with (the service's
//! `encoder.ort_library`, `DIPTYCH_ORT_LIBRARY`, `--ort-library`), at `ORT_DYLIB_PATH`, and in the
//! project cache that `make deps-ort` fills
//! (`$HOME/.cache/diptych/onnxruntime-1.31.0/libonnxruntime.so.1.31.0`).
//!
//! Only the lookup lives here: this crate does not link ONNX Runtime.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The ONNX Runtime version diptych is built and tested against.
pub const ORT_VERSION: &str = "1.31.0";

/// The environment variable naming the library (ort's own convention).
pub const ORT_DYLIB_VAR: &str = "ORT_DYLIB_PATH";

/// Where the library was found, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryLocation {
    /// The library file.
    pub path: PathBuf,
    /// Which rule gave it: "configuration", "ORT_DYLIB_PATH" or "project cache".
    pub source: &'static str,
}

/// No library file where the rules lead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "the ONNX Runtime library was not found at {} (from the {}); run `make deps-ort` to fetch \
     ONNX Runtime {ORT_VERSION} into the project cache, or set {ORT_DYLIB_VAR} (or the \
     service's --ort-library) to a libonnxruntime.so of version {ORT_VERSION}",
    .0.path.display(), .0.source
)]
pub struct LibraryMissing(pub LibraryLocation);

/// The library file in the project cache under `home`.
pub fn project_cache(home: &Path) -> PathBuf {
    home.join(".cache/diptych")
        .join(format!("onnxruntime-{ORT_VERSION}"))
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// Finds the library by the rules of the module docs; `env` reads environment variables.
pub fn locate_with(
    configured: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LibraryLocation, LibraryMissing> {
    let location = if let Some(path) = configured {
        LibraryLocation {
            path: path.to_path_buf(),
            source: "configuration",
        }
    } else if let Some(path) = env(ORT_DYLIB_VAR).filter(|p| !p.is_empty()) {
        LibraryLocation {
            path: PathBuf::from(path),
            source: ORT_DYLIB_VAR,
        }
    } else {
        let home = env("HOME").unwrap_or_else(|| "~".to_string());
        LibraryLocation {
            path: project_cache(Path::new(&home)),
            source: "project cache",
        }
    };
    if location.path.is_file() {
        Ok(location)
    } else {
        Err(LibraryMissing(location))
    }
}

/// Finds the library by the rules of the module docs, reading this process's environment.
pub fn locate(configured: Option<&Path>) -> Result<LibraryLocation, LibraryMissing> {
    locate_with(configured, |name| std::env::var(name).ok())
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
        let found = locate_with(Some(&other), env_with(Some(&lib), dir.path())).unwrap();
        assert_eq!(
            (found.path.as_path(), found.source),
            (other.as_path(), "configuration")
        );

        let found = locate_with(None, env_with(Some(&lib), dir.path())).unwrap();
        assert_eq!(
            (found.path.as_path(), found.source),
            (lib.as_path(), "ORT_DYLIB_PATH")
        );

        let cache = dir.path().join(".cache/diptych/onnxruntime-1.31.0");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("libonnxruntime.so.1.31.0"), b"").unwrap();
        let found = locate_with(None, env_with(None, dir.path())).unwrap();
        assert_eq!(found.source, "project cache");
        assert!(found.path.starts_with(dir.path()));
    }

    #[test]
    fn a_missing_library_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_string_lossy().to_string();
        let err = locate_with(None, move |name: &str| {
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
