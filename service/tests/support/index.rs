//! An index in the test process: the bundle under test on the CPU, in a data folder of the
//! test's own, with injectable faults.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use diptych_dicom_adapter::Limits;
use diptych_service::bundle::Bundle;
use diptych_service::config::ExecutionProvider;
use diptych_service::encoder::runtime::{environment, locate_library};
use diptych_service::encoder::{BatcherConfig, Engine, EngineOptions};
use diptych_service::index::{Faults, IndexOptions};

use super::serve;

/// The engine of the bundle under test, one CPU session.
pub async fn engine() -> Arc<Engine> {
    let library = locate_library(None, |name| std::env::var(name).ok()).unwrap();
    let env = environment(&library.path).unwrap();
    let bundle = Bundle::load(serve::test_bundle()).unwrap();
    let options = EngineOptions {
        remote: None,
        execution_provider: ExecutionProvider::Cpu,
        sessions: 1,
        intra_threads: 1,
        intra_op_spinning: false,
        precision: Default::default(),
        nice: 0,
        batcher: BatcherConfig {
            max_batch: 16,
            max_delay: Duration::from_millis(2),
            queue_capacity: 256,
        },
    };
    Arc::new(
        tokio::task::spawn_blocking(move || Engine::start(bundle, env, options))
            .await
            .unwrap()
            .unwrap(),
    )
}

/// Index options for tests: no free-space floor, `faults` armed by the test.
pub fn options(faults: &Arc<Faults>) -> IndexOptions {
    IndexOptions {
        limits: Limits::default(),
        quiet_period: Duration::from_secs(1),
        max_backlog_frames: 4096,
        min_free_bytes: 0,
        faults: faults.clone(),
        keep_frames: false,
        engines: None,
        fetcher: None,
    }
}
