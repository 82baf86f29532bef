//! An encoder started in-process for the benchmarks: ONNX Runtime on the CPU, one session.

use std::path::Path;
use std::time::Duration;

use diptych_service::bundle::Bundle;
use diptych_service::config::Precision;
use diptych_service::encoder::runtime::{environment, locate_library};
use diptych_service::encoder::{Engine, EngineOptions};

/// Loads `model`, opens one CPU session with `threads` threads behind a batcher of `max_batch`,
/// and warms it up.
pub async fn start_engine(
    model: &Path,
    max_batch: usize,
    threads: usize,
) -> anyhow::Result<Engine> {
    start_bundle(Bundle::load(model)?, Precision::Float, max_batch, threads).await
}

/// [`start_engine`] on a loaded bundle, running its encoder graph of `precision`.
pub async fn start_bundle(
    bundle: Bundle,
    precision: Precision,
    max_batch: usize,
    threads: usize,
) -> anyhow::Result<Engine> {
    let library = locate_library(None, |name| std::env::var(name).ok())?;
    let env = environment(&library.path)?;
    let engine = Engine::start(
        bundle,
        env,
        EngineOptions {
            precision,
            nice: diptych_service::config::EncoderConfig::default().nice,
            ..EngineOptions::cpu(
                1,
                threads,
                max_batch,
                Duration::from_millis(if max_batch == 1 { 0 } else { 5 }),
                4 * max_batch.max(64),
            )
        },
    )?;
    engine.warm_up().await?;
    Ok(engine)
}
