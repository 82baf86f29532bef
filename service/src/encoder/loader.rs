//! Starting the engine of another bundle with the serving one's ONNX Runtime and options: what
//! a re-index uses to load the new model ([`crate::index::EngineLoader`]).

use std::path::Path;
use std::sync::Arc;

use ort::environment::Environment;

use super::{Engine, EngineOptions};
use crate::bundle::Bundle;
use crate::index::EngineLoader;

/// Loads bundles with one ONNX Runtime environment and one set of engine options.
pub struct BundleLoader {
    env: &'static Environment,
    options: EngineOptions,
}

impl BundleLoader {
    /// A loader that starts engines in `env` with `options`.
    pub fn new(env: &'static Environment, options: EngineOptions) -> BundleLoader {
        BundleLoader { env, options }
    }
}

impl EngineLoader for BundleLoader {
    fn load(&self, dir: &Path) -> Result<Arc<Engine>, String> {
        let bundle = Bundle::load(dir).map_err(|e| e.to_string())?;
        let engine =
            Engine::start(bundle, self.env, self.options.clone()).map_err(|e| e.to_string())?;
        Ok(Arc::new(engine))
    }
}
