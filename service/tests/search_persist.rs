//! The search projections survive a restart: an index large enough to fit them saves them with
//! its checkpoints, and the next [`Index::open`] reads them back, so the first search after a
//! restart is pruned instead of scanning every record while they are fitted again. A torn or
//! corrupted file is ignored (and fitted anew), never trusted. Every search, before and after,
//! equals the naive scan.
//!
//! On the code before this test existed, the reopened index had no projections until a
//! background fit finished.

#[path = "support/phantom.rs"]
mod phantom;
#[path = "support/serve.rs"]
mod serve;
#[path = "support/index.rs"]
mod support_index;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych_service::encoder::Engine;
use diptych_service::index::QuerySource;
use diptych_service::index::{
    AcceptOutcome, FaultPoint, Faults, Index, PROJECTIONS_FROM, SearchSpec,
};
use diptych_service::record::{DeleteTarget, RecordId, RecordKeys, RecordSet};
use diptych_service::search::{
    Corpus, DistanceTables, GroupScore, Grouping, Hit, Mode, QueryCodes, SearchRequest,
    naive_search,
};
use phantom::multiframe;
use support_index::{engine, options};

/// Frames per instance: few instances, each a record per frame.
const FRAMES: u64 = 64;

/// Instances whose frames just pass [`PROJECTIONS_FROM`].
fn instances() -> u64 {
    (PROJECTIONS_FROM as u64).div_ceil(FRAMES) + 1
}

fn sop_uid(i: u64) -> String {
    format!("1.2.826.0.1.3680043.10.1002.{i}")
}

/// Instance `i`: [`FRAMES`] phantom slices as one multi-frame MR image, one series per
/// instance.
fn instance(i: u64) -> Vec<u8> {
    let mut instance = multiframe(11, i * FRAMES, FRAMES, 65535.0);
    instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop_uid(i));
    instance.set(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        format!("1.2.826.0.1.3680043.10.1003.{i}"),
    );
    instance.to_part10()
}

async fn send(index: &Index, range: std::ops::Range<u64>) {
    for i in range {
        match index.accept(instance(i)).await.unwrap() {
            AcceptOutcome::Accepted { .. } => {}
            other => panic!("instance {i}: {other:?}"),
        }
    }
}

async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn applied(index: &Index) {
    wait_until(
        "every acknowledged instance applied",
        Duration::from_secs(300),
        || index.counters.pending.load(Ordering::Relaxed) == 0,
    )
    .await;
}

/// Waits for the background fit of the projections over every record.
async fn fitted(index: &Index) {
    let records = index.record_counts().0;
    wait_until(
        "the search projections fitted",
        Duration::from_secs(120),
        || index.search_index_records() == Some(records),
    )
    .await;
}

/// The searches compared across restarts: queries from a spread of indexed records (and a
/// composite), every mode, instance and series grouping.
fn requests(index: &Index) -> Vec<SearchRequest> {
    let records = index.record_counts().0 as RecordId;
    let live: Vec<(Vec<u8>, Vec<u8>)> = (0..records)
        .step_by(397)
        .filter_map(|id| index.codes_of(id))
        .collect();
    let mut queries: Vec<QueryCodes> = live
        .iter()
        .map(|(normal, abnormal)| QueryCodes {
            normal: normal.clone(),
            abnormal: abnormal.clone(),
        })
        .collect();
    queries.push(QueryCodes {
        normal: live[0].0.clone(),
        abnormal: live[live.len() - 1].1.clone(),
    });
    let modes = [
        Mode::Normal,
        Mode::Abnormal,
        Mode::Combined {
            normal_weight: 1.0,
            abnormal_weight: 0.5,
        },
    ];
    let mut requests = Vec::new();
    for (q, query) in queries.into_iter().enumerate() {
        for (m, mode) in modes.iter().enumerate() {
            let grouping = if (q + m) % 3 == 0 {
                Grouping::Series
            } else {
                Grouping::Instance
            };
            requests.push(SearchRequest {
                query: query.clone(),
                mode: *mode,
                grouping,
                group_score: GroupScore::BestSlice,
                top_k: [1, 10, 50][(q + m) % 3],
                exclude: None,
            });
        }
    }
    requests
}

/// The hits of every request through the index's search.
async fn search_all(index: &Index, requests: &[SearchRequest]) -> Vec<Vec<Hit>> {
    let mut all = Vec::new();
    for request in requests {
        let outcome = index
            .search(SearchSpec {
                query: QuerySource::Codes(request.query.clone()),
                mode: request.mode,
                filter: String::new(),
                top_k: request.top_k,
                grouping: request.grouping,
                group_score: request.group_score,
                include_thumbnails: false,
                exclude_query: false,
            })
            .await
            .unwrap();
        all.push(outcome.hits.into_iter().map(|h| h.hit).collect());
    }
    all
}

/// Every instance-grouped request's hits equal the naive scan over the store's codes.
fn equals_naive(index: &Index, requests: &[SearchRequest], hits: &[Vec<Hit>]) {
    let engine = index.engine();
    let tables = DistanceTables::of(engine.codebooks()).unwrap();
    let records = index.record_counts().0;
    let positions = engine.manifest().grid.rows * engine.manifest().grid.cols;
    let mut normal = vec![0u8; records * positions];
    let mut abnormal = vec![0u8; records * positions];
    let mut deleted = RecordSet::default();
    for id in 0..records {
        match index.codes_of(id as RecordId) {
            Some((n, a)) => {
                normal[id * positions..(id + 1) * positions].copy_from_slice(&n);
                abnormal[id * positions..(id + 1) * positions].copy_from_slice(&a);
            }
            None => deleted.insert(id as RecordId),
        }
    }
    let keys = |_: RecordId| RecordKeys::default();
    let corpus = Corpus {
        normal: &normal,
        abnormal: &abnormal,
        positions,
        keys: &keys,
        deleted: &deleted,
        filter: None,
    };
    let mut compared = 0;
    for (request, hits) in requests.iter().zip(hits) {
        if request.grouping != Grouping::Instance {
            continue;
        }
        let naive = naive_search(&tables, &corpus, request).unwrap();
        assert_eq!(hits, &naive, "{request:?}");
        compared += 1;
    }
    assert!(compared > 10);
}

/// Opens `dir` again with nothing injected.
fn reopen(dir: &Path, engine: &Arc<Engine>) -> Arc<Index> {
    reopen_with(dir, engine, &Arc::new(Faults::default()))
}

/// Opens `dir` again with `faults` to inject.
fn reopen_with(dir: &Path, engine: &Arc<Engine>, faults: &Arc<Faults>) -> Arc<Index> {
    Index::open(dir, engine.clone(), options(faults)).unwrap()
}

/// An index in `dir` with enough records for the projections, fitted, and the hits of
/// [`requests`] on it, after it is closed.
async fn populated(dir: &Path, engine: &Arc<Engine>) -> (Vec<SearchRequest>, Vec<Vec<Hit>>) {
    let index = reopen(dir, engine);
    send(&index, 0..instances()).await;
    applied(&index).await;
    assert!(index.record_counts().0 >= PROJECTIONS_FROM);
    fitted(&index).await;
    let requests = requests(&index);
    let hits = search_all(&index, &requests).await;
    equals_naive(&index, &requests, &hits);
    index.close().await;
    (requests, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_searches_are_pruned_at_once_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine().await;
    let (requests, before) = populated(dir.path(), &engine).await;

    let faults = Arc::new(Faults::default());
    let index = reopen_with(dir.path(), &engine, &faults);
    let records = index.record_counts().0;
    assert_eq!(
        index.search_index_records(),
        Some(records),
        "the projections are there as soon as the index is open"
    );
    assert_eq!(
        index.counters.search_index_loaded.load(Ordering::Relaxed),
        records as u64,
        "read back, not fitted"
    );
    let after = search_all(&index, &requests).await;
    assert_eq!(after, before, "the same hits as before the restart");
    equals_naive(&index, &requests, &after);

    // More records and a delete after the restart are saved too: appended summaries, and the
    // deleted records' summaries rewritten. The new records' first checkpoint fails: the
    // rollback drops their summaries with their codes, and the redo summarises them again.
    faults.fail_next(FaultPoint::Checkpoint, 1);
    send(&index, instances()..instances() + 1).await;
    applied(&index).await;
    assert_eq!(
        faults.injected(FaultPoint::Checkpoint),
        1,
        "rolled back once"
    );
    assert_eq!(index.record_counts().0, records + FRAMES as usize);
    assert_eq!(
        index.search_index_records(),
        Some(records + FRAMES as usize),
        "the projections outlive the rollback"
    );
    let live = index.record_counts().1;
    let deleted = index
        .delete(DeleteTarget::Instance(sop_uid(3)))
        .await
        .expect("the delete and its cleanup succeed");
    assert_eq!(deleted.records, FRAMES);
    applied(&index).await;
    assert_eq!(index.record_counts().1, live - FRAMES as usize, "deleted");
    let records = index.record_counts().0;
    assert_eq!(index.search_index_records(), Some(records));
    let before = search_all(&index, &requests).await;
    equals_naive(&index, &requests, &before);
    index.close().await;
    drop(index);

    let index = reopen(dir.path(), &engine);
    assert_eq!(index.search_index_records(), Some(records));
    assert_eq!(
        index.counters.search_index_loaded.load(Ordering::Relaxed),
        records as u64,
        "every record's summary was saved"
    );
    let after = search_all(&index, &requests).await;
    assert_eq!(after, before);
    equals_naive(&index, &requests, &after);
    index.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_or_corrupted_file_is_ignored_and_fitted_anew() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine().await;
    let (requests, before) = populated(dir.path(), &engine).await;
    let file = dir.path().join("search").join("index.bin");
    let good = std::fs::read(&file).unwrap();
    let flipped = |good: &[u8]| {
        let mut bad = good.to_vec();
        let at = bad.len() - 20;
        bad[at] ^= 1;
        bad
    };
    let cut = |good: &[u8]| good[..good.len() / 2].to_vec();
    let corruptions = [
        ("a flipped bit in the last summary", flipped(&good)),
        ("a file cut short", cut(&good)),
    ];
    for (what, bad) in &corruptions {
        std::fs::write(&file, bad).unwrap();
        let index = reopen(dir.path(), &engine);
        assert_eq!(
            index.counters.search_index_loaded.load(Ordering::Relaxed),
            0,
            "{what}: not read back"
        );
        // Exact with or without the projections while they are fitted again.
        let during = search_all(&index, &requests).await;
        assert_eq!(during, before, "{what}: while fitting");
        fitted(&index).await;
        let after = search_all(&index, &requests).await;
        assert_eq!(after, before, "{what}: fitted anew");
        equals_naive(&index, &requests, &after);
        index.close().await;
        drop(index);
        // The new fit was saved: the next start reads it back.
        let index = reopen(dir.path(), &engine);
        assert_eq!(
            index.counters.search_index_loaded.load(Ordering::Relaxed),
            index.record_counts().0 as u64,
            "{what}: the new fit is read back"
        );
        assert_eq!(search_all(&index, &requests).await, before);
        index.close().await;
    }
}
