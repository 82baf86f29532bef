//! The search benchmark on the shipped model's encodings of phantom slices.
//!
//! Runs as a test (libtest skips tests under `cargo bench`):
//!
//! ```text
//! DIPTYCH_BENCH_RECORDS=1000000 DIPTYCH_BENCH_FAISS_PYTHON=~/.cache/diptych/py-venv/bin/python \
//!   cargo test -p diptych-service --release --bench search -- --nocapture
//! ```
//!
//! Without the variables it builds 20 000 records and checks that fast and naive agree.
//! Needs libonnxruntime 1.31 (ORT_DYLIB_PATH, or the cache `make deps-ort` fills).

use std::path::PathBuf;
use std::time::Duration;

use diptych_service::bundle::Bundle;
use diptych_service::config::ExecutionProvider;
use diptych_service::encoder::runtime::{environment, locate_library};
use diptych_service::encoder::{BatcherConfig, Engine, EngineOptions};
use diptych_service::search::DistanceTables;
use diptych_service::search::bench::{
    FaissBaseline, SearchBenchConfig, phantom_encodings, run_search_bench,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_bench_on_phantom_encodings() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let library = locate_library(None, |name| std::env::var(name).ok()).unwrap();
    let env = environment(&library.path).unwrap();
    let bundle = Bundle::load(root.join("models/phantom-v1")).unwrap();
    let engine = Engine::start(
        bundle,
        env,
        EngineOptions {
            execution_provider: ExecutionProvider::Cpu,
            sessions: 1,
            intra_threads: 2,
            intra_op_spinning: false,
            batcher: BatcherConfig {
                max_batch: 32,
                max_delay: Duration::from_millis(2),
                queue_capacity: 1024,
            },
        },
    )
    .unwrap();
    let tables = DistanceTables::of(engine.codebooks()).unwrap();
    let seeds = phantom_encodings(&engine, 11, 0, env_usize("DIPTYCH_BENCH_SEEDS", 640) as u64)
        .await
        .unwrap();
    let held_out = phantom_encodings(&engine, 12, 0, 64).await.unwrap();
    let records = env_usize("DIPTYCH_BENCH_RECORDS", 20_000);
    let faiss = std::env::var("DIPTYCH_BENCH_FAISS_PYTHON")
        .ok()
        .map(|python| FaissBaseline {
            python: python.into(),
            script: root.join("service/bench/faiss_search.py"),
            workdir: std::env::temp_dir().join(format!("diptych-faiss-{records}")),
        });
    let config = SearchBenchConfig {
        records,
        queries: env_usize("DIPTYCH_BENCH_QUERIES", 64),
        naive_queries: env_usize("DIPTYCH_BENCH_NAIVE_QUERIES", 5),
        faiss: faiss.clone(),
        ..SearchBenchConfig::default()
    };
    let mut last = String::new();
    let report = tokio::task::spawn_blocking(move || {
        run_search_bench(
            &tables,
            &seeds,
            &held_out,
            &config,
            &mut |phase, done, total| {
                if phase != last || done == total {
                    eprintln!("{phase}: {done}/{total}");
                    last = phase.to_string();
                }
            },
        )
    })
    .await
    .unwrap()
    .unwrap();
    if let Some(f) = faiss.filter(|_| std::env::var_os("DIPTYCH_BENCH_KEEP").is_none()) {
        let _ = std::fs::remove_dir_all(f.workdir);
    }
    println!(
        "index: built in {:.2} s, {:.1} bytes per record (codes: {} bytes)",
        report.index_build_s, report.index_bytes_per_record, report.code_bytes_per_record
    );
    for row in &report.rows {
        println!("{}", serde_json::to_string(row).unwrap());
    }
    assert!(
        report.rows.iter().all(|r| r.identical),
        "fast and naive disagree"
    );
    assert!(
        report
            .rows
            .iter()
            .all(|r| r.faiss_agreement.is_none_or(|a| a >= 0.9))
    );
}
