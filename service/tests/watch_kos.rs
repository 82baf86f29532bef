//! The Watch streams and the KOS sender share one similar-studies search per received study and
//! question: with three Watch streams of default parameters and the KOS sender (top-k 5, the
//! streams' 10), a received study costs one search per mode — 3, where each subscriber searching
//! for itself cost 12 — and a stream with a filter of its own gets its own, correct answer.
//! Serving fewer hits from a search of more relies on `similar_studies` for k being the prefix
//! of its answer for any larger k, which the second test checks with ties.
//!
//! Each KOS sent is a `kos` event of the audit trail naming the patients it references; one the
//! viewer never got (storescp stopped) is a failure event.
//!
//! In process: an index on the bundle under test, the SearchService handlers called directly,
//! the KOS sender C-STOREing to dcmtk's storescp, and the quiet-period clock ticked by the test.

#[path = "support/serve.rs"]
mod serve;
#[path = "support/index.rs"]
mod support_index;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::api::v1::search_service_server::SearchService;
use diptych::api::v1::{SearchMode, WatchEvent, WatchRequest};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::SyntheticInstance;
use diptych_dicom_adapter::{Limits, Uid};
use diptych_service::admin::{KosDestination, KosDestinations};
use diptych_service::audit::{Audit, AuditConfig};
use diptych_service::grpc::ServiceState;
use diptych_service::grpc::search::SearchApi;
use diptych_service::index::{AcceptOutcome, Faults, Index};
use diptych_service::search::Mode;
use serve::free_port;
use support_index::{engine, options};
use tokio::sync::mpsc;
use tonic::{Request, Status};

/// The three modes as the Watch stream and the KOS ask them (combined with weights 1 and 1).
const MODES: [(SearchMode, Mode); 3] = [
    (SearchMode::Normal, Mode::Normal),
    (SearchMode::Abnormal, Mode::Abnormal),
    (
        SearchMode::Combined,
        Mode::Combined {
            normal_weight: 1.0,
            abnormal_weight: 1.0,
        },
    ),
];

/// Study UID `n`.
fn study_uid(n: u64) -> String {
    format!("2.25.8100{n:03}")
}

/// The Patient ID of study `n`.
fn patient_id(n: u64) -> String {
    format!("PAT-KOS-{n}")
}

/// Offers study `n` of patient `n`: one phantom slice per index of `slices`, series description
/// `description`.
async fn ingest(index: &Index, n: u64, slices: &[u64], description: &str) {
    let generator = PhantomGenerator::new(3, PhantomConfig::default());
    for (i, &slice) in slices.iter().enumerate() {
        let mut instance = SyntheticInstance::from_phantom(&generator.slice(slice));
        let study = study_uid(n);
        instance.set(tags::STUDY_INSTANCE_UID, VR::UI, study.clone());
        instance.set(tags::PATIENT_ID, VR::LO, patient_id(n));
        instance.set(tags::SERIES_INSTANCE_UID, VR::UI, format!("{study}.1"));
        instance.set(tags::SOP_INSTANCE_UID, VR::UI, format!("{study}.1.{i}"));
        instance.set(tags::SERIES_DESCRIPTION, VR::LO, description.to_string());
        match index.accept(instance.to_part10()).await.unwrap() {
            AcceptOutcome::Accepted { .. } => {}
            other => panic!("study {n} slice {i}: {other:?}"),
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

/// Waits until everything offered is applied, then ticks the quiet-period clock (zero here):
/// the studies offered since the last tick are announced.
async fn receive(index: &Index) -> usize {
    wait_until("every instance applied", Duration::from_secs(120), || {
        index.counters.pending.load(Ordering::Relaxed) == 0
    })
    .await;
    index.tracker().tick(|uid| index.study_indexed(uid)).len()
}

/// A Watch stream opened through the handler.
async fn watch(
    api: &SearchApi,
    top_k: u32,
    filter: &str,
) -> mpsc::Receiver<Result<WatchEvent, Status>> {
    api.watch(Request::new(WatchRequest {
        modes: vec![],
        top_k,
        filter: filter.to_string(),
    }))
    .await
    .unwrap()
    .into_inner()
    .into_inner()
}

async fn next_event(stream: &mut mpsc::Receiver<Result<WatchEvent, Status>>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(60), stream.recv())
        .await
        .expect("a Watch event within a minute")
        .expect("the stream is open")
        .unwrap_or_else(|status| panic!("the Watch stream failed: {status:?}"))
}

/// (study, distance) per hit of each mode, in the stream's mode order.
fn event_hits(event: &WatchEvent) -> Vec<Vec<(String, f64)>> {
    event
        .results
        .iter()
        .map(|r| {
            r.hits
                .iter()
                .map(|h| (h.study_instance_uid.clone(), h.distance))
                .collect()
        })
        .collect()
}

/// (study, distance) per hit of each mode, asked of the index directly.
async fn direct_hits(
    index: &Index,
    study: u64,
    filter: &str,
    top_k: usize,
) -> Vec<Vec<(String, f64)>> {
    let uid = Uid::parse(&study_uid(study)).unwrap();
    let mut all = Vec::new();
    for (_, mode) in MODES {
        let (_, hits, _) = index
            .similar_studies(&uid, mode, filter, top_k)
            .await
            .unwrap();
        all.push(
            hits.into_iter()
                .map(|h| (h.record.metadata.study_instance_uid.clone(), h.hit.distance))
                .collect(),
        );
    }
    all
}

/// dcmtk's storescp as the KOS viewer; killed when dropped.
struct Viewer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Viewer {
    fn start(dir: PathBuf) -> Viewer {
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let child = Command::new("storescp")
            .args(["-aet", "VIEWER", "-od"])
            .arg(&dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("storescp (dcmtk) starts; run `make deps-apt`");
        Viewer { child, dir, port }
    }

    /// Waits until the viewer holds `count` files (or a minute passes); returns them.
    async fn files(&self, count: usize) -> Vec<PathBuf> {
        let started = Instant::now();
        loop {
            let found = files_in(&self.dir);
            if found.len() >= count || started.elapsed() > Duration::from_secs(60) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect()
}

/// The `kos` events of the audit file, once there are `count` (or a minute has passed).
async fn kos_events(path: &Path, count: usize) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let events: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] == "kos")
            .collect();
        if events.len() >= count {
            return events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {count} kos events in the audit trail",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_and_the_kos_share_one_search_per_received_study_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&Arc::new(Faults::default()));
    opts.quiet_period = Duration::ZERO;
    let index = Index::open(&dir.path().join("data"), engine().await, opts).unwrap();
    let state = Arc::new(ServiceState::new(Limits::default(), 64 << 20, None));
    state.set_index(index.clone());
    let api = SearchApi::new(state.clone());
    let searches = || index.counters.similar_studies.load(Ordering::SeqCst);

    // Two studies received before anyone watches: nobody searches for them.
    ingest(&index, 1, &[0, 1, 2], "alpha").await;
    ingest(&index, 2, &[10, 11, 12], "beta").await;
    assert_eq!(receive(&index).await, 2);
    assert_eq!(searches(), 0, "no subscriber, no search");

    // Three Watch streams with default parameters, and the KOS sender.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(watch(&api, 0, "").await);
    }
    let viewer = Viewer::start(dir.path().join("viewer"));
    let kos = KosDestinations::new(vec![
        KosDestination::new("VIEWER", "127.0.0.1", u32::from(viewer.port)).unwrap(),
    ]);
    let audit = Audit::start(&AuditConfig::default(), &dir.path().join("trail")).unwrap();
    let audit_path = dir.path().join("trail/audit/audit.jsonl");
    let sender = tokio::spawn(diptych_service::dicom::kos::run(
        index.clone(),
        kos,
        5,
        "DIPTYCH".into(),
        audit.clone(),
    ));
    wait_until("the KOS sender subscribed", Duration::from_secs(10), || {
        index.tracker().subscribers() == 4
    })
    .await;

    // Study 3 is received: one search per mode serves all four subscribers.
    ingest(&index, 3, &[1, 11, 20], "gamma").await;
    assert_eq!(receive(&index).await, 1);
    let mut events = Vec::new();
    for stream in &mut streams {
        events.push(next_event(stream).await);
    }
    let sent = viewer.files(1).await;
    assert_eq!(sent.len(), 1, "one KOS for study 3: {sent:?}");
    assert_eq!(
        searches(),
        3,
        "one similar-studies search per mode for 3 Watch streams and the KOS, not one each (12)"
    );
    let expected = direct_hits(&index, 3, "", 10).await;
    for event in &events {
        assert_eq!(event.study_instance_uid, study_uid(3));
        assert_eq!(event.slices, 3);
        let modes: Vec<i32> = event.results.iter().map(|r| r.mode).collect();
        assert_eq!(modes, MODES.map(|(m, _)| m as i32).to_vec());
        assert_eq!(
            event_hits(event),
            expected,
            "the answer of a search of its own"
        );
    }
    assert!(
        expected.iter().all(|hits| hits.len() == 2),
        "studies 1 and 2 are similar to 3 in every mode: {expected:?}"
    );

    // A fourth stream with a filter and a top-k of its own: its questions are searched once
    // more, for it alone; the others still share theirs.
    let mut filtered = watch(&api, 1, "series_description:alpha").await;
    let before = searches();
    ingest(&index, 4, &[2, 12, 21], "delta").await;
    assert_eq!(receive(&index).await, 1);
    let mut events = Vec::new();
    for stream in &mut streams {
        events.push(next_event(stream).await);
    }
    let own = next_event(&mut filtered).await;
    let sent = viewer.files(2).await;
    assert_eq!(sent.len(), 2, "one KOS for study 4: {sent:?}");
    assert_eq!(
        searches() - before,
        6,
        "3 searches shared by the default streams and the KOS, 3 for the filtered stream"
    );
    let expected = direct_hits(&index, 4, "", 10).await;
    for event in &events {
        assert_eq!(event.study_instance_uid, study_uid(4));
        assert_eq!(event_hits(event), expected);
    }
    assert!(expected.iter().all(|hits| hits.len() == 3), "{expected:?}");
    let expected_own = direct_hits(&index, 4, "series_description:alpha", 1).await;
    assert_eq!(own.study_instance_uid, study_uid(4));
    assert_eq!(event_hits(&own), expected_own);
    for hits in event_hits(&own) {
        assert_eq!(hits.len(), 1);
        assert_eq!(
            hits[0].0,
            study_uid(1),
            "only the alpha study passes the filter"
        );
    }

    // The KOS documents are Key Object Selection documents.
    for file in &sent {
        let dump = Command::new("dcmdump").arg(file).output().unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(text.contains("KeyObjectSelectionDocumentStorage"), "{text}");
    }
    // The audit trail: one `kos` event per document, naming the patients it showed the viewer.
    let events = kos_events(&audit_path, 2).await;
    let about_3 = &events[0];
    assert_eq!(about_3["outcome"], "success", "{about_3}");
    assert_eq!(about_3["who"]["calling_ae"], "DIPTYCH");
    assert_eq!(about_3["who"]["called_ae"], "VIEWER");
    assert_eq!(about_3["where"], format!("127.0.0.1:{}", viewer.port));
    assert_eq!(about_3["what"]["study_instance_uid"], study_uid(3));
    assert_eq!(about_3["what"]["patient_id"], patient_id(3));
    assert_eq!(about_3["what"]["status"], "0x0000");
    assert_eq!(
        about_3["what"]["instances"], 6,
        "two studies in three modes"
    );
    let mut returned: Vec<(String, String)> = about_3["what"]["returned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap().to_string();
            (text("patient_id"), text("study_instance_uid"))
        })
        .collect();
    returned.sort();
    assert_eq!(
        returned,
        [1, 2].map(|n| (patient_id(n), study_uid(n))).to_vec(),
        "the KOS of study 3 showed the viewer patients 1 and 2"
    );
    assert_eq!(events[1]["what"]["study_instance_uid"], study_uid(4));
    assert_eq!(events[1]["what"]["returned"].as_array().unwrap().len(), 3);

    // The viewer is gone: the KOS of study 5 fails, and the trail says so.
    drop(viewer);
    ingest(&index, 5, &[3, 13, 22], "epsilon").await;
    assert_eq!(receive(&index).await, 1);
    let events = kos_events(&audit_path, 3).await;
    let failed = &events[2];
    assert_eq!(failed["outcome"], "failure", "{failed}");
    assert_eq!(failed["what"]["study_instance_uid"], study_uid(5));
    assert!(failed["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(failed["what"].get("status").is_none(), "{failed}");
    assert_eq!(failed["what"]["returned"].as_array().unwrap().len(), 4);

    sender.abort();
    drop(streams);
    drop(filtered);
    index.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_studies_for_fewer_hits_are_a_prefix_of_those_for_more() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(
        &dir.path().join("data"),
        engine().await,
        options(&Arc::new(Faults::default())),
    )
    .unwrap();
    // Twelve studies of two slices; slices repeat across studies, so distances tie and the
    // order between equals comes from record ids.
    for n in 0..12u64 {
        ingest(&index, n, &[n % 4, 30 + n % 3], "any").await;
    }
    wait_until("every instance applied", Duration::from_secs(120), || {
        index.counters.pending.load(Ordering::Relaxed) == 0
    })
    .await;
    let query = Uid::parse(&study_uid(0)).unwrap();
    for (_, mode) in MODES {
        let key = |hits: &[diptych_service::index::query::HitView]| -> Vec<(u32, f64)> {
            hits.iter()
                .map(|h| (h.hit.record, h.hit.distance))
                .collect()
        };
        let (_, all, _) = index.similar_studies(&query, mode, "", 11).await.unwrap();
        assert_eq!(all.len(), 11, "every other study");
        let distances: Vec<f64> = all.iter().map(|h| h.hit.distance).collect();
        assert!(
            distances.windows(2).any(|w| w[0] == w[1]),
            "{mode:?}: the corpus has ties: {distances:?}"
        );
        for k in 1..11 {
            let (_, some, _) = index.similar_studies(&query, mode, "", k).await.unwrap();
            assert_eq!(key(&some), key(&all[..k]), "{mode:?}, k = {k}");
        }
    }
    index.close().await;
}
