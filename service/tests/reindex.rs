//! Re-index when the model changes (issue #13), end to end: `diptych serve` processes with the
//! shipped bundles on ONNX Runtime, driven over gRPC.
//!
//! A server indexes phantom studies with `models/phantom-v1` and `[index] keep_frames` on, then
//! re-indexes them with `models/synth-v2` (another model, same pre-processing) through
//! AdminService.StartReindex, while
//! - searches run all along: each answer names the model it used and equals, whole, that
//!   model's answer (the old index's, or a fresh synth-v2 index's) — never a mix;
//! - instances arrive and a series is deleted (the old model indexes them, the re-index catches
//!   up);
//! - the server is killed (SIGKILL) in the middle, and restarted: the re-index goes on from its
//!   last sync and finishes.
//!
//! Before it, a re-index started and cancelled leaves nothing behind.
//!
//! The end state equals a second server that indexed the same studies from scratch with
//! synth-v2: the same answers to the same searches (filters on the abnormality score and the
//! birth date included), and, read from both data folders, the same records, codes, scores,
//! catalog documents and kept frames. A third start of the re-indexed folder, still configured
//! with phantom-v1, serves synth-v2.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::api::v1::admin_service_client::AdminServiceClient;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::ingest_service_client::IngestServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{
    CancelReindexRequest, DeleteRequest, DicomRef, GetIndexStatsRequest, GetReindexStatusRequest,
    Grouping, IndexStats, IngestRequest, Query, ReindexPhase, ReindexStatus, SearchMode,
    SearchRequest, SearchResponse, SliceRef, StartReindexRequest, dicom_ref, query,
};

#[path = "support/folder.rs"]
mod folder;
#[path = "support/phantom.rs"]
mod phantom;
#[path = "support/serve.rs"]
mod serve;
use folder::{Folder, same_records};
use phantom::multiframe;
use serve::{Server, channel, free_port, runtime, workspace};

/// Frames per instance (each a record).
const FRAMES: u64 = 32;
/// Instances indexed before the re-index starts.
const BASE: u64 = 72;
/// Instances sent while it runs.
const EXTRA: u64 = 8;
/// Instances per series, and series per study.
const PER_SERIES: u64 = 2;
const PER_STUDY: u64 = 4;
/// The instance whose series is deleted while the re-index runs.
const DELETED: u64 = 13;

fn old_bundle() -> PathBuf {
    workspace().join("models/phantom-v1")
}

fn new_bundle() -> PathBuf {
    workspace().join("models/synth-v2")
}

fn sop_uid(i: u64) -> String {
    format!("1.2.826.0.1.3680043.10.1301.{i}")
}

fn series_uid(i: u64) -> String {
    format!("1.2.826.0.1.3680043.10.1302.{}", i / PER_SERIES)
}

fn study(i: u64) -> u64 {
    i / (PER_SERIES * PER_STUDY)
}

/// Instance `i`: [`FRAMES`] phantom slices as one multi-frame MR image, its patient born in a
/// year of its own.
fn instance(i: u64) -> Vec<u8> {
    let mut instance = multiframe(13, i * FRAMES, FRAMES, 65535.0);
    let s = study(i);
    instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop_uid(i));
    instance.set(tags::SERIES_INSTANCE_UID, VR::UI, series_uid(i));
    instance.set(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        format!("1.2.826.0.1.3680043.10.1303.{s}"),
    );
    instance.set(tags::PATIENT_ID, VR::LO, format!("REINDEX-{s:03}"));
    instance.set(
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        format!("{}0615", 1940 + 5 * s),
    );
    instance.to_part10()
}

async fn ingest(addr: &str, instances: std::ops::Range<u64>) {
    let requests: Vec<IngestRequest> = instances
        .clone()
        .map(|i| IngestRequest {
            dicom: instance(i),
            client_ref: format!("instance {i}"),
        })
        .collect();
    let answer = IngestServiceClient::new(channel(addr).await)
        .max_decoding_message_size(64 << 20)
        .ingest(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.failures.is_empty(), "{:?}", answer.failures);
    assert_eq!(u64::from(answer.accepted), instances.end - instances.start);
}

async fn delete_series(addr: &str, i: u64) {
    let answer = IngestServiceClient::new(channel(addr).await)
        .delete(DeleteRequest {
            target: Some(DicomRef {
                level: Some(dicom_ref::Level::SeriesInstanceUid(series_uid(i))),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.records_deleted, PER_SERIES * FRAMES);
}

async fn stats(addr: &str) -> IndexStats {
    InfoServiceClient::new(channel(addr).await)
        .get_index_stats(GetIndexStatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Waits until nothing is pending and `records` are in the index.
async fn indexed(addr: &str, records: u64) {
    let started = Instant::now();
    loop {
        let stats = stats(addr).await;
        if stats.pending == 0 && stats.records == records {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not indexed: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn reindex_status(addr: &str) -> ReindexStatus {
    AdminServiceClient::new(channel(addr).await)
        .get_reindex_status(GetReindexStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The searches compared: indexed queries in each mode, with and without filters on the
/// abnormality score and the birth date, by slice and by series.
fn requests() -> Vec<SearchRequest> {
    let queries = [(0, 3), (17, 20), (41, 9), (BASE + 2, 30)];
    let filters = [
        "",
        "abnormality:>0.5",
        "patient_birth_date:<19600101",
        "abnormality:<0.2 AND patient_birth_date:>19600101",
    ];
    let modes = [
        SearchMode::Normal,
        SearchMode::Abnormal,
        SearchMode::Combined,
    ];
    let mut requests = Vec::new();
    for (q, &(i, frame)) in queries.iter().enumerate() {
        for (f, filter) in filters.iter().enumerate() {
            requests.push(SearchRequest {
                query: Some(Query {
                    source: Some(query::Source::Indexed(SliceRef {
                        sop_instance_uid: sop_uid(i),
                        frame,
                    })),
                }),
                mode: modes[(q + f) % 3] as i32,
                filter: filter.to_string(),
                top_k: 12,
                grouping: if (q + f) % 2 == 0 {
                    Grouping::Instance
                } else {
                    Grouping::Series
                } as i32,
                ..SearchRequest::default()
            });
        }
    }
    requests
}

/// The answers to `requests`, without their timings; `None` for a query slice not indexed
/// (yet).
async fn answers(addr: &str, requests: &[SearchRequest]) -> Vec<Option<SearchResponse>> {
    let mut client = SearchServiceClient::new(channel(addr).await);
    let mut answers = Vec::new();
    for request in requests {
        match client.search(request.clone()).await {
            Ok(answer) => {
                let mut answer = answer.into_inner();
                answer.elapsed_ms = 0.0;
                answers.push(Some(answer));
            }
            Err(status) if status.code() == tonic::Code::NotFound => answers.push(None),
            Err(status) => panic!("search {request:?} failed: {status:?}"),
        }
    }
    answers
}

/// What one search saw while the re-index ran: its request and answer.
type Seen = Vec<(usize, SearchResponse)>;

/// Searches in a loop until `stop`, returning every answer.
async fn search_loop(addr: String, requests: Vec<SearchRequest>, stop: Arc<AtomicBool>) -> Seen {
    let mut client = SearchServiceClient::new(channel(&addr).await);
    let mut seen = Vec::new();
    for r in (0..requests.len()).cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut answer = match client.search(requests[r].clone()).await {
            Ok(answer) => answer.into_inner(),
            // A query slice that is not indexed yet.
            Err(status) if status.code() == tonic::Code::NotFound => continue,
            Err(status) => panic!("a search during the re-index failed: {status:?}"),
        };
        answer.elapsed_ms = 0.0;
        seen.push((r, answer));
    }
    seen
}

/// Every answer seen equals, whole, the answer of the model it names.
fn one_model_each(seen: &Seen, references: &[(&str, &[Option<SearchResponse>])]) -> Vec<usize> {
    let mut per_model = vec![0; references.len()];
    for (r, answer) in seen {
        let Some(m) = references
            .iter()
            .position(|(model, _)| *model == answer.model_id)
        else {
            panic!("an answer names model {:?}", answer.model_id);
        };
        assert_eq!(
            Some(answer),
            references[m].1[*r].as_ref(),
            "search {r} answered by {} differs from that model's answer",
            answer.model_id
        );
        per_model[m] += 1;
    }
    per_model
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        "[index]\nkeep_frames = true\nmin_free_bytes = 0\n\n[encoder]\nmax_batch = 32\n",
    )
    .unwrap();
    path
}

fn start(model: &Path, data: &Path, addr: &str, config: &Path, log: PathBuf) -> Server {
    Server::start_model(
        model,
        data,
        addr,
        &["--config", config.to_str().unwrap()],
        log,
        &[],
        None,
    )
}

/// Starts a server on `bundle` (with its model id) over `data`, indexes the first [`BASE`]
/// instances, and returns it with its address and its answers to `requests`, each checked to
/// name that model.
fn start_indexed(
    runtime: &tokio::runtime::Runtime,
    (bundle, model): (&Path, &str),
    data: &Path,
    config: &Path,
    log: PathBuf,
    requests: &[SearchRequest],
) -> (Server, String, Vec<Option<SearchResponse>>) {
    let addr = format!("127.0.0.1:{}", free_port());
    let server = start(bundle, data, &addr, config, log);
    let base = runtime.block_on(async {
        ingest(&addr, 0..BASE).await;
        indexed(&addr, BASE * FRAMES).await;
        answers(&addr, requests).await
    });
    assert!(base.iter().flatten().all(|a| a.model_id == model));
    (server, addr, base)
}

fn kill(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Runs the `diptych` command line; its standard output, or a panic with both outputs.
fn cli(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "diptych {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn reindex_switches_models_atomically_survives_a_kill_and_equals_a_fresh_index() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let runtime = runtime();
    let requests = requests();
    let records = (BASE + EXTRA) * FRAMES;
    let live = records - PER_SERIES * FRAMES;

    // The reference: the same studies indexed from scratch with the new bundle, in the same
    // order, the same series deleted.
    let fresh_data = dir.path().join("fresh");
    let (fresh, addr, _) = start_indexed(
        &runtime,
        (&new_bundle(), "synth-v2"),
        &fresh_data,
        &config,
        dir.path().join("fresh.log"),
        &requests,
    );
    let new_answers = runtime.block_on(async {
        ingest(&addr, BASE..BASE + EXTRA).await;
        delete_series(&addr, DELETED).await;
        indexed(&addr, live).await;
        answers(&addr, &requests).await
    });
    assert!(
        new_answers
            .iter()
            .all(|a| a.as_ref().unwrap().model_id == "synth-v2")
    );
    kill(fresh);

    // The old model's index, with kept frames.
    let data = dir.path().join("data");
    let (server, addr, old_base) = start_indexed(
        &runtime,
        (&old_bundle(), "phantom-v1"),
        &data,
        &config,
        dir.path().join("a.log"),
        &requests,
    );

    // Refusals, each saying what to fix.
    runtime.block_on(async {
        let mut admin = AdminServiceClient::new(channel(&addr).await);
        for (model_dir, code) in [
            (String::new(), tonic::Code::InvalidArgument),
            (
                dir.path().join("no-bundle").display().to_string(),
                tonic::Code::InvalidArgument,
            ),
            (
                old_bundle().display().to_string(),
                tonic::Code::FailedPrecondition,
            ),
        ] {
            let status = admin
                .start_reindex(StartReindexRequest {
                    model_dir: model_dir.clone(),
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), code, "{model_dir:?}: {status:?}");
        }
    });

    // A re-index cancelled while it encodes leaves nothing behind; the old model serves on.
    runtime.block_on(async {
        let mut admin = AdminServiceClient::new(channel(&addr).await);
        admin
            .start_reindex(StartReindexRequest {
                model_dir: new_bundle().display().to_string(),
            })
            .await
            .unwrap();
        let cancelled = admin
            .cancel_reindex(CancelReindexRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            cancelled.phase,
            ReindexPhase::Cancelled as i32,
            "{cancelled:?}"
        );
        assert_eq!(cancelled.serving_model_id, "phantom-v1");
        assert!(!data.join("codes-1").exists() && !data.join("reindex.json").exists());
        let again = admin
            .cancel_reindex(CancelReindexRequest {})
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
        assert!(again.message().contains("nothing to cancel"), "{again:?}");
        assert_eq!(answers(&addr, &requests).await, old_base);
    });

    // The re-index starts; searches meanwhile answer from the old model, whole.
    let (seen_before, old_final) = runtime.block_on(async {
        let started = AdminServiceClient::new(channel(&addr).await)
            .start_reindex(StartReindexRequest {
                model_dir: new_bundle().display().to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(started.to_model_id, "synth-v2");
        assert_eq!(started.serving_model_id, "phantom-v1");
        let again = AdminServiceClient::new(channel(&addr).await)
            .start_reindex(StartReindexRequest {
                model_dir: new_bundle().display().to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let searches = tokio::spawn(search_loop(addr.clone(), requests.clone(), stop.clone()));
        let started = Instant::now();
        loop {
            let status = reindex_status(&addr).await;
            assert_eq!(
                status.phase,
                ReindexPhase::Encoding as i32,
                "the re-index ended before the test could interrupt it: {status:?}"
            );
            if status.records_done >= 512 && started.elapsed() > Duration::from_millis(1500) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let seen = searches.await.unwrap();
        // Writes while it runs: the old model indexes them.
        ingest(&addr, BASE..BASE + EXTRA).await;
        delete_series(&addr, DELETED).await;
        indexed(&addr, live).await;
        let old_final = answers(&addr, &requests).await;
        let status = reindex_status(&addr).await;
        assert_eq!(status.phase, ReindexPhase::Encoding as i32, "{status:?}");
        (seen, old_final)
    });
    let per_model = one_model_each(&seen_before, &[("phantom-v1", &old_base)]);
    assert!(per_model[0] > 0, "no search ran during the re-index");

    // Killed in the middle; the restart goes on from the last sync, while searches continue.
    kill(server);
    let server = start(
        &old_bundle(),
        &data,
        &addr,
        &config,
        dir.path().join("b.log"),
    );
    let mut done = None;
    let seen_after = runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let searches = tokio::spawn(search_loop(addr.clone(), requests.clone(), stop.clone()));
        let started = Instant::now();
        let status = loop {
            let status = reindex_status(&addr).await;
            if status.phase == ReindexPhase::Done as i32 {
                break status;
            }
            assert_ne!(status.phase, ReindexPhase::Failed as i32, "{status:?}");
            assert!(started.elapsed() < Duration::from_secs(300), "{status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let resumed = status.resumed_at;
        assert!(
            resumed > 0 && resumed < records,
            "resumed at {resumed} of {records} records"
        );
        assert_eq!(status.records_done, records, "{status:?}");
        assert_eq!(status.serving_model_id, "synth-v2");
        assert_eq!(status.from_archive, 0);
        done = Some(status.clone());
        // A few more answers after the switch.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        searches.await.unwrap()
    });
    let per_model = one_model_each(
        &seen_after,
        &[("phantom-v1", &old_final), ("synth-v2", &new_answers)],
    );
    assert!(per_model[1] > 0, "no search answered from the new model");
    // The command line shows it.
    let status = cli(&[
        "admin",
        "reindex",
        "status",
        "--server",
        &format!("http://{addr}"),
    ]);
    assert!(
        status.contains("phase            done") && status.contains("serving          synth-v2"),
        "{status}"
    );
    let reindexed = runtime.block_on(async {
        let stats = stats(&addr).await;
        assert_eq!((stats.model_id.as_str(), stats.records), ("synth-v2", live));
        answers(&addr, &requests).await
    });
    assert_eq!(reindexed, new_answers, "the re-indexed answers");
    assert!(
        !data.join("codes").exists(),
        "the old model's codes are removed after the switch"
    );

    // Killed after the switch, started again with the old bundle configured: it serves the
    // re-indexed model.
    kill(server);
    let server = start(
        &old_bundle(),
        &data,
        &addr,
        &config,
        dir.path().join("c.log"),
    );
    let restarted = runtime.block_on(answers(&addr, &requests));
    assert_eq!(restarted, new_answers, "the answers after a restart");
    kill(server);

    let reindexed = Folder::open(&data, "synth-v2");
    // Every live record after the resume point was re-encoded from its kept frame. Record ids
    // follow the order in which instances were applied, which concurrent acceptance may change
    // (support/folder.rs), so the deleted series' records are found in the folder, not assumed.
    let done = done.expect("the re-index finished");
    let view = reindexed.codes.view();
    let deleted: Vec<u64> = (0..records)
        .filter(|&r| view.records()[r as usize].is_deleted())
        .collect();
    assert_eq!(deleted.len() as u64, PER_SERIES * FRAMES, "deleted records");
    let deleted_after = deleted.iter().filter(|&&r| r >= done.resumed_at).count() as u64;
    assert_eq!(
        done.from_kept_frames,
        records - done.resumed_at - deleted_after,
        "{done:?}"
    );
    same_records(&Folder::open(&fresh_data, "synth-v2"), &reindexed);
}
