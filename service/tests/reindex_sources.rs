//! Where a re-index takes its input from (issue #13): kept frames are reused only when the new
//! bundle pre-processes as they were made; otherwise — or with `[index] keep_frames` off — the
//! records would have to be fetched again from the archive, and with no archive fetcher
//! configured the re-index is refused with the reason, the serving model untouched. A bundle
//! with the same pre-processing re-indexes a small index at once.
//!
//! In-process, on toy bundles (support/mod.rs) that differ only in model id and pre-processing,
//! with ONNX Runtime.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::Limits;
use diptych_dicom_adapter::synthetic::SyntheticInstance;
use diptych_service::encoder::runtime::{environment, locate_library};
use diptych_service::encoder::{BundleLoader, EngineOptions};
use diptych_service::index::{
    AcceptOutcome, EngineLoader, Index, IndexOptions, ReindexError, ReindexPhase,
};
use support::{Toy, decoder, encoder, manifest, write_bundle};

/// A toy bundle in `dir` with its own model id and low percentile of the intensity window.
fn toy(dir: &Path, model_id: &str, low_percentile: f32) {
    let toy = Toy::default();
    let mut m = manifest(&toy);
    m.model_id = model_id.to_string();
    m.preprocess.low_percentile = low_percentile;
    write_bundle(dir, &m, &encoder(&toy), &decoder(&toy));
}

fn loader() -> Arc<BundleLoader> {
    let library = locate_library(None, |name| std::env::var(name).ok()).unwrap();
    let env = environment(&library.path).unwrap();
    Arc::new(BundleLoader::new(
        env,
        EngineOptions::cpu(1, 1, 8, Duration::from_millis(2), 64),
    ))
}

/// An index on the bundle in `bundle`, with `keep_frames`, holding `slices` phantom slices.
async fn index(data: &Path, bundle: &Path, keep_frames: bool, slices: u64) -> Arc<Index> {
    let loader = loader();
    let engine = loader.load(bundle).unwrap();
    let index = Index::open(
        data,
        engine,
        IndexOptions {
            limits: Limits::default(),
            quiet_period: Duration::from_secs(1),
            max_backlog_frames: 4096,
            min_free_bytes: 0,
            faults: Default::default(),
            keep_frames,
            engines: Some(loader),
            fetcher: None,
        },
    )
    .unwrap();
    let generator = PhantomGenerator::new(5, PhantomConfig::default());
    for s in 0..slices {
        let instance = SyntheticInstance::from_phantom(&generator.slice(s));
        match index.accept(instance.to_part10()).await.unwrap() {
            AcceptOutcome::Accepted { .. } => {}
            other => panic!("slice {s}: {other:?}"),
        }
    }
    let started = Instant::now();
    while index.counters.pending.load(Ordering::Relaxed) > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    index
}

fn refusal(outcome: Result<impl std::fmt::Debug, ReindexError>) -> String {
    match outcome {
        Err(ReindexError::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_frames_are_reused_only_with_the_same_preprocessing_and_otherwise_the_reason_is_given()
{
    let dir = tempfile::tempdir().unwrap();
    let (old, same, other) = (
        dir.path().join("old"),
        dir.path().join("same"),
        dir.path().join("other"),
    );
    toy(&old, "toy-old", 0.5);
    toy(&same, "toy-same", 0.5);
    toy(&other, "toy-other", 2.0);

    // Kept frames, a bundle that pre-processes differently: refused, saying why.
    let data = dir.path().join("kept");
    let kept = index(&data, &old, true, 6).await;
    let message = refusal(kept.start_reindex(&other).await);
    assert!(
        message.contains("pre-processes differently") && message.contains("not reused"),
        "{message}"
    );
    assert!(
        message.contains("no archive is configured") && message.contains("[archive]"),
        "{message}"
    );
    assert_eq!(kept.serving().model_id(), "toy-old");
    assert!(!data.join("codes-1").exists() && !data.join("reindex.json").exists());

    // The same pre-processing: re-indexed from the kept frames, switched at once.
    kept.start_reindex(&same).await.unwrap();
    let started = Instant::now();
    let status = loop {
        let status = kept.reindex_status();
        if status.phase == ReindexPhase::Done {
            break status;
        }
        assert_ne!(status.phase, ReindexPhase::Failed, "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(60), "{status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((status.from_kept_frames, status.from_archive), (6, 0));
    assert_eq!(kept.serving().model_id(), "toy-same");
    assert!(!data.join("codes").exists(), "the old codes are removed");
    kept.close().await;

    // Without kept frames: refused, saying so.
    let data = dir.path().join("none");
    let none = index(&data, &old, false, 2).await;
    let message = refusal(none.start_reindex(&same).await);
    assert!(message.contains("keep_frames is off"), "{message}");
    assert_eq!(none.serving().model_id(), "toy-old");
    none.close().await;
}
