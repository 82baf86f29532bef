//! Training data: sources of slices (phantom, atlas, BraTS folder, mixtures of them),
//! augmentation and batching.
//!
//! Every source goes through the shared pre-processing of the `diptych` crate, so the model sees
//! exactly what the service will feed it.

mod augment;
mod batcher;
mod brats;
mod sample;
mod synthetic;

pub use augment::{Augmenter, Transform};
pub use batcher::{Batch, Batcher};
pub use brats::{BratsError, BratsSource};
pub use sample::Sample;
pub use synthetic::{MixedSource, SyntheticSource};

use diptych::synthetic::SourceKind;

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

/// Why a configured source cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The BraTS folder is unusable.
    #[error(transparent)]
    Brats(#[from] BratsError),
    /// The atlas maps are unusable.
    #[error(transparent)]
    Atlas(#[from] diptych::atlas::AtlasError),
    /// A mixture without parts.
    #[error("data.source: a mix needs at least one part in `parts`")]
    EmptyMix,
}

/// The source a training config names.
pub fn open_source(config: &TrainConfig) -> Result<Box<dyn SliceSource>, SourceError> {
    open(&config.data.source, config)
}

/// Opens one source description with the config's pre-processing.
pub fn open(
    source: &SourceConfig,
    config: &TrainConfig,
) -> Result<Box<dyn SliceSource>, SourceError> {
    let params = config.preprocess();
    Ok(match source {
        SourceConfig::Phantom {
            seed,
            healthy_fraction,
        } => Box::new(SyntheticSource::new(
            SourceKind::Phantom,
            *seed,
            *healthy_fraction,
            params,
        )?),
        SourceConfig::Anatomy {
            seed,
            healthy_fraction,
        } => Box::new(SyntheticSource::new(
            SourceKind::Anatomy,
            *seed,
            *healthy_fraction,
            params,
        )?),
        SourceConfig::Brats { dir } => Box::new(BratsSource::open(dir, &params)?),
        SourceConfig::Mix { parts } => {
            if parts.is_empty() {
                return Err(SourceError::EmptyMix);
            }
            let opened = parts
                .iter()
                .map(|part| open(part, config))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(MixedSource::new(opened))
        }
    })
}
