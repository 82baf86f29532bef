//! `encoder.nice`: every thread the engine starts — the batchers' workers and ONNX Runtime's
//! intra-op pools — runs at the configured nice value, and nothing else changes priority (the
//! caller's threads stay where they were). Alone in its own test binary, so that no other
//! test's engine starts threads while the threads are counted.
//!
//! Needs libonnxruntime 1.31: ORT_DYLIB_PATH, or the cache `make deps-ort` fills.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use diptych_service::bundle::Bundle;
use diptych_service::encoder::runtime::{environment, locate_library};
use diptych_service::encoder::{Engine, EngineOptions};
use support::{Toy, write_toy};

/// This process's threads: id → (name, nice value), from /proc/self/task.
fn threads() -> BTreeMap<u32, (String, i64)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?;
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            // After the name: state is field 3 of stat; nice is field 19, i.e. the 17th after it.
            let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
            Some((tid, (name, nice)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_thread_the_engine_starts_runs_at_the_configured_nice_value() {
    let toy = Toy::default();
    let dir = tempfile::tempdir().unwrap();
    write_toy(dir.path(), &toy);
    let library = locate_library(None, |name| std::env::var(name).ok()).unwrap();
    let env = environment(&library.path).unwrap();
    let before = threads();
    let engine = Engine::start(
        Bundle::load(dir.path()).unwrap(),
        env,
        EngineOptions {
            nice: 7,
            ..EngineOptions::cpu(2, 2, 4, Duration::from_millis(1), 16)
        },
    )
    .unwrap();
    engine.warm_up().await.unwrap();
    let after = threads();
    let started: Vec<_> = after
        .iter()
        .filter(|(tid, _)| !before.contains_key(tid))
        .map(|(_, t)| t.clone())
        .collect();
    let workers: Vec<_> = started
        .iter()
        .filter(|(name, _)| name.starts_with("diptych-model"))
        .collect();
    // Two sessions per graph: four batcher workers; with two intra-op threads each session
    // has a pool thread of its own beside the worker that runs it.
    assert_eq!(workers.len(), 4, "{started:?}");
    assert!(started.len() >= 8, "workers and pool threads: {started:?}");
    assert!(
        started.iter().all(|(_, nice)| *nice == 7),
        "every thread the engine started: {started:?}"
    );
    for (tid, (name, nice)) in &before {
        if let Some((_, now)) = after.get(tid) {
            assert_eq!(now, nice, "thread {name} ({tid}) kept its priority");
        }
    }
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nice_value_that_would_raise_priority_is_refused_with_the_key_to_fix() {
    let toy = Toy::default();
    let dir = tempfile::tempdir().unwrap();
    write_toy(dir.path(), &toy);
    let library = locate_library(None, |name| std::env::var(name).ok()).unwrap();
    let env = environment(&library.path).unwrap();
    let refused = Engine::start(
        Bundle::load(dir.path()).unwrap(),
        env,
        EngineOptions {
            nice: -5,
            ..EngineOptions::cpu(1, 1, 4, Duration::from_millis(1), 16)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("encoder.nice"), "{refused}");
}
