//! The cluster's encoder role (issue #15, docs/CLUSTER.md), end to end with `diptych serve`
//! processes on ONNX Runtime:
//! - a node whose `[encoder] remote_url` names an encoder role indexes the same records and
//!   codes as a node that encodes itself, scores equal up to rounding (docs/DESIGN.md,
//!   "Batches"), and answers the same searches;
//! - the encoder killed (SIGKILL): instances the node acknowledged meanwhile wait (pending),
//!   and once the encoder is back every acknowledged instance is searchable exactly once;
//! - the encoder's HTTP port: `/metrics` counts every slice the node sent in its queue-time and
//!   batch-size histograms (what the chart's autoscaler reads) and its `EncodeBatch` calls,
//!   `/readyz` says SERVING, and SIGTERM stops it cleanly;
//! - a malformed batch is refused with INVALID_ARGUMENT, and a node whose bundle differs from
//!   the encoder's refuses to start, naming both models.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::api::internal::v1::EncodeBatchRequest;
use diptych::api::internal::v1::encoder_service_client::EncoderServiceClient;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::ingest_service_client::IngestServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{
    GetIndexStatsRequest, ImageInput, IngestRequest, Query, SearchMode, SearchRequest,
    SearchResponse, SliceRef, image_input, query,
};

#[path = "support/folder.rs"]
mod folder;
#[path = "support/phantom.rs"]
mod phantom;
#[path = "support/serve.rs"]
mod serve;
use folder::{Folder, assert_rounding, same_records};
use phantom::multiframe;
use serve::{Server, channel, free_port, runtime, settled_stats, test_bundle, workspace};

/// Frames per instance (each a record).
const FRAMES: u64 = 8;
/// Instances indexed while the encoder runs.
const FIRST: u64 = 10;
/// Instances offered one by one while it is down.
const DURING: u64 = 4;

fn sop_uid(i: u64) -> String {
    format!("1.2.826.0.1.3680043.10.1501.{i}")
}

/// Instance `i`: [`FRAMES`] phantom slices as one multi-frame MR image, two per series.
fn instance(i: u64) -> Vec<u8> {
    let mut instance = multiframe(29, i * FRAMES, FRAMES, 65535.0);
    instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop_uid(i));
    instance.set(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        format!("1.2.826.0.1.3680043.10.1502.{}", i / 2),
    );
    instance.set(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        format!("1.2.826.0.1.3680043.10.1503.{}", i / 4),
    );
    instance.to_part10()
}

/// Ingests `i` alone over gRPC; whether it was acknowledged.
async fn ingest_one(addr: &str, i: u64) -> bool {
    let request = IngestRequest {
        dicom: instance(i),
        client_ref: format!("instance {i}"),
    };
    match IngestServiceClient::new(channel(addr).await)
        .ingest(tokio_stream::iter([request]))
        .await
    {
        Ok(answer) => answer.into_inner().accepted == 1,
        Err(status) => {
            assert_eq!(
                status.code(),
                tonic::Code::Unavailable,
                "an Ingest refused otherwise than UNAVAILABLE: {status:?}"
            );
            false
        }
    }
}

async fn search(addr: &str, i: u64) -> SearchResponse {
    let mut answer = SearchServiceClient::new(channel(addr).await)
        .search(SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Indexed(SliceRef {
                    sop_instance_uid: sop_uid(i),
                    frame: (i % FRAMES) as u32,
                })),
            }),
            mode: SearchMode::Combined as i32,
            top_k: 10,
            ..SearchRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    answer.elapsed_ms = 0.0;
    answer
}

/// Asserts that two answers hold the same hits in the same order with the same distances and
/// metadata, the hits' abnormality scores equal up to rounding (the nodes may have batched a
/// slice differently: docs/DESIGN.md, "Batches").
fn same_answer(mut a: SearchResponse, b: SearchResponse, what: &str) {
    assert_eq!(a.hits.len(), b.hits.len(), "{what}: hits");
    for (x, y) in a.hits.iter_mut().zip(&b.hits) {
        if let (Some(mx), Some(my)) = (x.metadata.as_mut(), y.metadata.as_ref()) {
            assert_rounding(mx.abnormality, my.abnormality, what);
            mx.abnormality = my.abnormality;
        }
    }
    assert_eq!(a, b, "{what}");
}

fn config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the encoder role serving `model` on `addr`.
fn start_encoder(model: &Path, dir: &Path, addr: &str, log: &str) -> Server {
    let toml = config(dir, "encoder.toml", "[cluster]\nrole = \"encoder\"\n");
    Server::start_model(
        model,
        &dir.join("encoder-data"),
        addr,
        &["--config", toml.to_str().unwrap()],
        dir.join(log),
        &[],
        None,
    )
}

/// A GET on an HTTP port: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let (status, _, body) = serve::http_get(addr, path, "*/*");
    (status, body)
}

/// The Prometheus text of `/metrics` on `addr`.
fn scrape(addr: &str) -> String {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample written `series` (name and labels as the exporter writes them), or
/// a panic that shows the exposition.
fn sample(text: &str, series: &str) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "one sample {series}:\n{text}");
    found[0]
}

const ENCODER_QUEUE: &str = "diptych_encoder_queue_duration_seconds_count{graph=\"encoder\"}";
const ENCODER_SLICES: &str = "diptych_encoder_batch_size_sum{graph=\"encoder\"}";
const ENCODER_BATCHES: &str = "diptych_encoder_batch_size_count{graph=\"encoder\"}";
const ENCODE_CALLS: &str = "diptych_grpc_requests_total{service=\"diptych.internal.v1.EncoderService\",method=\"EncodeBatch\",outcome=\"success\",code=\"OK\"}";

fn kill(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// SIGTERM, then the process must exit 0 within 30 s, its log saying so.
fn stop(mut server: Server) {
    let status = server.terminate("the encoder");
    assert!(status.success(), "{status}:\n{}", server.log_tail());
    assert!(
        server.log_tail().contains("encoder stopped"),
        "{}",
        server.log_tail()
    );
}

fn model_id(bundle: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    manifest["model_id"].as_str().unwrap().to_string()
}

#[test]
fn a_remote_encoder_indexes_what_a_local_one_does_and_its_loss_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let encoder_addr = format!("127.0.0.1:{}", free_port());
    let encoder = start_encoder(&test_bundle(), dir, &encoder_addr, "encoder.log");
    let remote_toml = config(
        dir,
        "remote.toml",
        &format!("[encoder]\nremote_url = \"http://{encoder_addr}\"\n"),
    );
    let (remote_addr, local_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (remote_data, local_data) = (dir.join("remote-data"), dir.join("local-data"));
    let remote = Server::start(
        &remote_data,
        &remote_addr,
        &["--config", remote_toml.to_str().unwrap(), "--no-dicom"],
        dir.join("remote.log"),
    );
    let local = Server::start(
        &local_data,
        &local_addr,
        &["--no-dicom"],
        dir.join("local.log"),
    );
    let rt = runtime();
    // The encoder's counts once both nodes are warm (the remote node warmed up through it).
    let (status, body) = get(&encoder.http_addr, "/readyz");
    assert_eq!((status, body.as_str()), (200, "SERVING\n"));
    assert_eq!(
        get(&encoder.http_addr, "/healthz"),
        (200, "ok\n".to_string())
    );
    let before = scrape(&encoder.http_addr);

    // The encoder serves: both nodes index the same instances.
    rt.block_on(async {
        for i in 0..FIRST {
            assert!(ingest_one(&remote_addr, i).await, "instance {i} (remote)");
            assert!(ingest_one(&local_addr, i).await, "instance {i} (local)");
        }
    });
    let (r, l) = (settled_stats(&remote_addr), settled_stats(&local_addr));
    assert_eq!(r.records, FIRST * FRAMES);
    assert_eq!(l.records, r.records);
    rt.block_on(async {
        for i in (0..FIRST).step_by(3) {
            same_answer(
                search(&remote_addr, i).await,
                search(&local_addr, i).await,
                &format!("search by slice of instance {i}"),
            );
        }
    });
    let served = std::fs::read_to_string(dir.join("encoder.log")).unwrap();
    assert!(
        served.contains("encoder: gRPC listening; SERVING"),
        "{served}"
    );
    // Its metrics: every slice the node indexed waited in the encoder's queue once and ran in
    // one of its batches (a search by an indexed slice encodes nothing); its calls are counted.
    let after = scrape(&encoder.http_addr);
    let slices = (FIRST * FRAMES) as f64;
    assert_eq!(
        sample(&after, ENCODER_QUEUE) - sample(&before, ENCODER_QUEUE),
        slices,
        "queue waits of the node's slices"
    );
    assert_eq!(
        sample(&after, ENCODER_SLICES) - sample(&before, ENCODER_SLICES),
        slices,
        "slices in the encoder's batches"
    );
    let batches = sample(&after, ENCODER_BATCHES) - sample(&before, ENCODER_BATCHES);
    assert!((1.0..=slices).contains(&batches), "{batches} batches");
    let calls = sample(&after, ENCODE_CALLS) - sample(&before, ENCODE_CALLS);
    assert!((1.0..=slices).contains(&calls), "{calls} EncodeBatch calls");
    assert!(
        sample(
            &after,
            "diptych_encoder_queue_duration_seconds_sum{graph=\"encoder\"}"
        ) >= 0.0
    );
    assert_eq!(sample(&after, "diptych_serving"), 1.0);
    assert_eq!(
        sample(&after, "diptych_encoder_queue_depth{graph=\"encoder\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &after,
            "diptych_encoder_failed_batches_total{graph=\"encoder\"}"
        ),
        0.0
    );
    // The node's side: not one of its batches failed.
    assert_eq!(
        sample(
            &scrape(&remote.http_addr),
            "diptych_encoder_failed_batches_total{graph=\"encoder\"}"
        ),
        0.0,
        "{}",
        remote.log_tail()
    );
    // No data folder, index or DICOM listener: none of their families.
    for absent in ["diptych_data_disk", "diptych_index_", "diptych_dicom_"] {
        assert!(!after.contains(absent), "{absent} on the encoder:\n{after}");
    }

    // The encoder killed: what the node acknowledges meanwhile waits, nothing is lost.
    kill(encoder);
    let mut acknowledged = Vec::new();
    rt.block_on(async {
        for i in FIRST..FIRST + DURING {
            if ingest_one(&remote_addr, i).await {
                acknowledged.push(i);
            }
        }
    });
    assert!(
        acknowledged.contains(&FIRST),
        "the first instance after the encoder's loss was not acknowledged"
    );
    std::thread::sleep(Duration::from_secs(2));
    let waiting = rt.block_on(async {
        InfoServiceClient::new(channel(&remote_addr).await)
            .get_index_stats(GetIndexStatsRequest {})
            .await
            .unwrap()
            .into_inner()
    });
    assert!(
        waiting.pending >= 1 && waiting.records == FIRST * FRAMES,
        "with the encoder down nothing can be indexed: {waiting:?}"
    );
    // A search that must encode its image meanwhile: UNAVAILABLE (retry later), not INTERNAL.
    let refused = rt
        .block_on(async {
            SearchServiceClient::new(channel(&remote_addr).await)
                .search(SearchRequest {
                    query: Some(Query {
                        source: Some(query::Source::Image(ImageInput {
                            source: Some(image_input::Source::Dicom(instance(FIRST + DURING))),
                            frame: 0,
                        })),
                    }),
                    mode: SearchMode::Combined as i32,
                    top_k: 10,
                    ..SearchRequest::default()
                })
                .await
        })
        .expect_err("a search by a new image with the encoder down");
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "a search by image with the encoder down: {refused:?}"
    );
    assert!(
        refused.message().contains(&encoder_addr),
        "the refusal names the encoder: {refused:?}"
    );
    let encoder = start_encoder(&test_bundle(), dir, &encoder_addr, "encoder-2.log");
    let started = Instant::now();
    let after = loop {
        let stats = settled_stats(&remote_addr);
        if stats.records == (FIRST + acknowledged.len() as u64) * FRAMES
            || started.elapsed() > Duration::from_secs(120)
        {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        after.records,
        (FIRST + acknowledged.len() as u64) * FRAMES,
        "every acknowledged instance indexed once the encoder is back:\n{}",
        remote.log_tail()
    );
    rt.block_on(async {
        for &i in &acknowledged {
            assert!(ingest_one(&local_addr, i).await, "instance {i} (local)");
        }
    });
    settled_stats(&local_addr);

    // A malformed batch: INVALID_ARGUMENT, saying what to fix.
    let refused = rt
        .block_on(async {
            EncoderServiceClient::new(channel(&encoder_addr).await)
                .encode_batch(EncodeBatchRequest {
                    model_id: model_id(&test_bundle()),
                    slices: 1,
                    pixels: vec![0; 12],
                })
                .await
        })
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("float32 values"), "{refused:?}");
    let refusals = "diptych_grpc_requests_total{service=\"diptych.internal.v1.EncoderService\",method=\"EncodeBatch\",outcome=\"failure\",code=\"INVALID_ARGUMENT\"}";
    assert_eq!(sample(&scrape(&encoder.http_addr), refusals), 1.0);
    // SIGTERM, as Kubernetes stops a pod: the encoder stops by itself, exit status 0.
    stop(encoder);
    kill(remote);
    kill(local);
    // The same records, codes, scores and catalog documents, record by record.
    let model = model_id(&test_bundle());
    same_records(
        &Folder::open(&local_data, &model),
        &Folder::open(&remote_data, &model),
    );

    // An encoder of another model: the node refuses to start, naming both.
    let other = workspace().join("models/synth-v2");
    let encoder = start_encoder(&other, dir, &encoder_addr, "encoder-3.log");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_diptych"))
        .arg("serve")
        .arg("--model")
        .arg(test_bundle())
        .arg("--data-dir")
        .arg(dir.join("mismatch-data"))
        .args(["--config", remote_toml.to_str().unwrap(), "--no-dicom"])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--execution-provider", "cpu"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started against another model");
    assert!(
        stderr.contains(&format!("serves model {:?}", model_id(&other))),
        "{stderr}"
    );
    kill(encoder);
}
