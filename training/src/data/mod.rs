//! Training data: sources of slices (phantom, BraTS folder), augmentation and batching.
//!
//! Every source goes through the shared pre-processing of the `diptych` crate, so the model sees
//! exactly what the service will feed it.

mod augment;
mod batcher;
mod brats;
mod phantom;
mod sample;

pub use augment::{Augmenter, Transform};
pub use batcher::{Batch, Batcher};
pub use brats::{BratsError, BratsSource};
pub use phantom::PhantomSource;
pub use sample::Sample;

use crate::config::{SourceConfig, TrainConfig};

/// A random-access collection of preprocessed training slices.
pub trait SliceSource: Send + Sync {
    /// Number of distinct slices; `None` for a generator without end.
    fn len(&self) -> Option<usize>;

    /// Whether the source holds no slice at all.
    fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The slice at `index` (taken modulo the length for finite sources).
    fn sample(&self, index: u64) -> Sample;
}

/// The source a training config names.
pub fn open_source(config: &TrainConfig) -> Result<Box<dyn SliceSource>, BratsError> {
    let params = config.preprocess();
    Ok(match &config.data.source {
        SourceConfig::Phantom {
            seed,
            healthy_fraction,
        } => Box::new(PhantomSource::new(*seed, *healthy_fraction, params)),
        SourceConfig::Brats { dir } => Box::new(BratsSource::open(dir, &params)?),
    })
}
