//! The encoder: ONNX Runtime sessions of the bundle's two graphs, served through dynamic
//! batching.
//!
//! | module | what it is for |
//! |---|---|
//! | [`runtime`] | find and load libonnxruntime, open sessions on CUDA or the CPU |
//! | [`batcher`] | the dynamic batcher: a bounded queue, batches of up to `max_batch` formed within `max_queue_delay`, a pool of worker threads each owning a session |
//! | [`model`] | the encoder and decoder graphs as batch runners, with their outputs checked |
//! | [`engine`] | the serving model: both batchers, started from a checked bundle, warmed up |
//! | [`loader`] | starts another bundle's engine the same way (for a re-index) |
//! | [`stats`] | what each batcher measures: queue waits, compute times, batch sizes, failures |
//! | [`remote`] | the encoder graph run by a cluster's encoder role over gRPC, as a batch runner |
//! | [`priority`] | the encoder threads' nice value, so that acknowledgements come first on shared cores |
//!
//! `Session::run` takes `&mut self`, so each session lives on its own worker thread and the
//! batcher hands it whole batches: no lock is held around inference.

pub mod batcher;
pub mod engine;
pub mod loader;
pub mod model;
pub mod priority;
pub mod remote;
pub mod runtime;
pub mod stats;

pub use batcher::{BatchError, BatchRunner, Batcher, BatcherConfig};
pub use engine::{Engine, EngineError, EngineOptions, GraphStats};
pub use loader::BundleLoader;
pub use model::{CodePair, Decoded, Geometry, RunError, SliceCode};
pub use remote::RemoteOptions;
pub use runtime::{LibraryLocation, Provider, RuntimeError};
pub use stats::BatchStats;
