//! End to end for issue #11's HTTP port: `diptych serve` as a process with JSON logs; dcmtk's
//! storescu sends three phantom instances, one of them again, and one with a broken SOP
//! Instance UID; a Search succeeds (with an `x-request-id`) and one fails. `/metrics` is scraped
//! before and after and parsed by the Prometheus project's own parsers (prometheus_client in
//! the test venv: text 0.0.4, and strict OpenMetrics 1.0), and the values must have moved by
//! exactly what was sent: acknowledged, indexed, duplicates, C-STORE statuses by code, the
//! Search RPC's success and failure counters and histogram, the encoder's batches. `/healthz`
//! and `/readyz` answer 200; the request id comes back and is on the call's log lines, which
//! are JSON and free of patient IDs; SIGTERM stops the whole server, HTTP port included.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{GetIndexStatsRequest, Query, SearchMode, SearchRequest, SliceRef, query};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::SyntheticInstance;
use serde_json::Value;

#[path = "support/serve.rs"]
mod serve;
use serve::{Server, free_port, python, workspace};

/// A GET on the server's HTTP port: status, lower-cased head, body (sized, never chunked).
fn get(addr: &str, path: &str, accept: &str) -> (u16, String, String) {
    let (status, head, body) = serve::http_get(addr, path, accept);
    assert!(!head.contains("chunked"), "a sized body: {head}");
    (status, head, body)
}

/// The samples of an exposition, as prometheus_client parses it.
struct Scrape {
    families: Vec<Value>,
}

impl Scrape {
    fn parse(text: &str, openmetrics: bool) -> Scrape {
        let mut command = Command::new(python());
        command.arg(workspace().join("service/tests/python/metrics_parse.py"));
        if openmetrics {
            command.arg("--openmetrics");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running the Python parser");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "prometheus_client refused the exposition (openmetrics: {openmetrics}):\n{}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
        Scrape {
            families: parsed["families"].as_array().unwrap().clone(),
        }
    }

    fn of(http: &str) -> Scrape {
        let (status, head, body) = get(http, "/metrics", "text/plain");
        assert_eq!(status, 200, "{body}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        Scrape::parse(&body, false)
    }

    /// The value of the sample `name` whose labels include `labels`; 0 when there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut found = None;
        for family in &self.families {
            for sample in family["samples"].as_array().unwrap() {
                if sample["name"] == name
                    && labels
                        .iter()
                        .all(|(k, v)| sample["labels"][*k].as_str() == Some(*v))
                {
                    assert!(found.is_none(), "{name} {labels:?} matches twice");
                    found = Some(sample["value"].as_f64().unwrap_or(f64::INFINITY));
                }
            }
        }
        found.unwrap_or(0.0)
    }

    /// The type of a family (the parsers name a counter's family without `_total`).
    fn type_of(&self, family: &str) -> String {
        let bare = family.trim_end_matches("_total");
        self.families
            .iter()
            .find(|f| f["name"] == family || f["name"] == bare)
            .unwrap_or_else(|| panic!("no family {family}"))["type"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// A phantom instance with SOP Instance UID `sop`.
fn write_instance(path: &Path, index: u64, sop: &str) {
    let slice = PhantomGenerator::new(2, PhantomConfig::default()).slice(index);
    let mut instance = SyntheticInstance::from_phantom(&slice);
    instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop.to_string());
    std::fs::write(path, instance.to_part10()).unwrap();
}

fn storescu(port: u16, files: &[&Path]) -> String {
    let output = Command::new("storescu")
        .args([
            "-v",
            "-nh",
            "-aet",
            "METRICS",
            "-aec",
            "DIPTYCH",
            "127.0.0.1",
        ])
        .arg(port.to_string())
        .args(files)
        .output()
        .expect("storescu (dcmtk) starts; run `make deps-apt`");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn search_request(sop: &str, request_id: &str) -> tonic::Request<SearchRequest> {
    let mut request = tonic::Request::new(SearchRequest {
        query: Some(Query {
            source: Some(query::Source::Indexed(SliceRef {
                sop_instance_uid: sop.to_string(),
                frame: 0,
            })),
        }),
        mode: SearchMode::Combined as i32,
        top_k: 2,
        ..SearchRequest::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request
}

#[test]
fn metrics_move_by_what_was_sent_and_probes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..3u64)
        .map(|i| {
            let path = dir.path().join(format!("good{i}.dcm"));
            write_instance(&path, i, &format!("2.25.7100{i}"));
            path
        })
        .collect();
    let broken = dir.path().join("broken.dcm");
    write_instance(&broken, 9, "1..2");

    let addr = format!("127.0.0.1:{}", free_port());
    let dicom_port = free_port();
    let dicom_addr = format!("127.0.0.1:{dicom_port}");
    let mut server = Server::start(
        &dir.path().join("data"),
        &addr,
        &["--dicom-addr", &dicom_addr, "--log-format", "json"],
        dir.path().join("serve.log"),
    );
    let http = server.http_addr.clone();

    // Probes.
    assert_eq!(get(&http, "/healthz", "*/*").0, 200);
    let (status, _, body) = get(&http, "/readyz", "*/*");
    assert_eq!((status, body.as_str()), (200, "SERVING\n"), "{body}");

    let before = Scrape::of(&http);
    assert_eq!(before.value("diptych_serving", &[]), 1.0);
    assert_eq!(
        before.value("diptych_encoder_info", &[("execution_provider", "cpu")]),
        1.0,
        "the execution provider is a label of the info metric"
    );

    // Three instances and a broken one on one association, then the first again.
    let log = storescu(
        dicom_port,
        &[&files[0], &files[1], &files[2], broken.as_path()],
    );
    assert_eq!(
        log.matches("Received Store Response (Success)").count(),
        3,
        "{log}"
    );
    let again = storescu(dicom_port, &[&files[0]]);
    assert!(
        again.contains("Received Store Response (Success)"),
        "{again}"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let echoed = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut info = InfoServiceClient::new(channel.clone());
        let started = Instant::now();
        loop {
            let stats = info
                .get_index_stats(GetIndexStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            if stats.pending == 0 && stats.records >= 3 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not indexed: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut search = SearchServiceClient::new(channel);
        let found = search
            .search(search_request("2.25.71000", "metrics-test-search-1"))
            .await
            .expect("the search succeeds");
        assert_eq!(found.get_ref().hits.len(), 2);
        let missing = search
            .search(search_request("2.25.79999", "metrics-test-search-2"))
            .await
            .expect_err("an unknown slice is not found");
        assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
        found
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_string())
    });
    assert_eq!(echoed.as_deref(), Some("metrics-test-search-1"));

    // The association ends just after its release is answered.
    let started = Instant::now();
    let after = loop {
        let after = Scrape::of(&http);
        if after.value("diptych_dicom_associations_open", &[]) == 0.0
            || started.elapsed() > Duration::from_secs(10)
        {
            break after;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(
        moved("diptych_index_instances_acknowledged_total", &[]),
        3.0
    );
    assert_eq!(moved("diptych_index_instances_indexed_total", &[]), 3.0);
    assert_eq!(moved("diptych_index_instances_duplicate_total", &[]), 1.0);
    // Every acknowledged instance went through each stage once; the duplicate was examined but
    // not written. The stages add up to at most the whole.
    let stage = |name: &str, stage: &str| moved(name, &[("stage", stage)]);
    assert_eq!(
        after.type_of("diptych_accept_stage_duration_seconds"),
        "histogram"
    );
    for (name, count) in [
        ("examine", 4.0),
        ("backlog", 3.0),
        ("claim", 3.0),
        ("durable", 3.0),
        ("total", 3.0),
    ] {
        assert_eq!(
            stage("diptych_accept_stage_duration_seconds_count", name),
            count,
            "{name}"
        );
    }
    let sum = |name: &str| stage("diptych_accept_stage_duration_seconds_sum", name);
    assert!(sum("durable") > 0.0, "the log's fsync takes time");
    assert!(
        sum("backlog") + sum("claim") + sum("durable") <= sum("total") + 1e-9,
        "stages within the whole"
    );
    assert_eq!(after.value("diptych_index_pending", &[]), 0.0);
    assert_eq!(
        after.value("diptych_index_records", &[("state", "live")]),
        3.0
    );
    let store = |status| [("service", "C-STORE"), ("status", status)];
    assert_eq!(
        after.value("diptych_dicom_responses_total", &store("0x0000")),
        4.0,
        "three instances and the duplicate"
    );
    assert_eq!(
        after.value("diptych_dicom_responses_total", &store("0xC000")),
        1.0,
        "the broken SOP Instance UID"
    );
    assert_eq!(
        after.value(
            "diptych_dicom_associations_total",
            &[("outcome", "accepted")]
        ),
        2.0
    );
    assert_eq!(after.value("diptych_dicom_associations_open", &[]), 0.0);
    let search = [
        ("service", "diptych.v1.SearchService"),
        ("method", "Search"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut labels = search.to_vec();
        labels.extend_from_slice(extra);
        labels
    };
    assert_eq!(
        moved(
            "diptych_grpc_requests_total",
            &with(&[("outcome", "success"), ("code", "OK")])
        ),
        1.0
    );
    assert_eq!(
        moved(
            "diptych_grpc_requests_total",
            &with(&[("outcome", "failure"), ("code", "NOT_FOUND")])
        ),
        1.0
    );
    assert_eq!(
        moved("diptych_grpc_request_duration_seconds_count", &search),
        2.0
    );
    assert_eq!(
        moved(
            "diptych_grpc_request_duration_seconds_bucket",
            &with(&[("le", "+Inf")])
        ),
        2.0
    );
    assert!(moved("diptych_grpc_request_duration_seconds_sum", &search) > 0.0);
    assert_eq!(after.value("diptych_grpc_requests_in_flight", &search), 0.0);
    assert!(
        after.value(
            "diptych_grpc_requests_total",
            &[("method", "GetIndexStats"), ("outcome", "success")]
        ) >= 1.0
    );
    let encoder = [("graph", "encoder")];
    assert_eq!(
        moved("diptych_encoder_batch_size_sum", &encoder),
        3.0,
        "one frame per indexed instance; the duplicate and the search encode nothing"
    );
    assert_eq!(
        moved("diptych_encoder_queue_duration_seconds_count", &encoder),
        3.0
    );
    assert!(moved("diptych_encoder_compute_duration_seconds_count", &encoder) >= 1.0);
    assert_eq!(after.value("diptych_encoder_queue_depth", &encoder), 0.0);
    assert!(after.value("diptych_data_disk_free_bytes", &[]) > 0.0);
    assert_eq!(
        after.value(
            "diptych_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        after.type_of("diptych_grpc_request_duration_seconds"),
        "histogram"
    );
    assert_eq!(after.type_of("diptych_dicom_responses_total"), "counter");

    // The same exposition as OpenMetrics, through the strict parser.
    let (status, head, body) = get(&http, "/metrics", "application/openmetrics-text");
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let open = Scrape::parse(&body, true);
    assert_eq!(open.type_of("diptych_dicom_responses"), "counter");
    assert_eq!(open.type_of("diptych_encoder"), "info");
    assert_eq!(
        open.value("diptych_dicom_responses_total", &store("0x0000")),
        4.0
    );

    // JSON log lines; the search's request id is on its audit line; no patient ID anywhere.
    let text = std::fs::read_to_string(&server.log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let in_call = |line: &Value, id: &str| {
        line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == id))
    };
    assert!(
        lines.iter().any(|l| in_call(l, "metrics-test-search-1")),
        "the search's log lines carry its request id:\n{text}"
    );
    // The audit trail's event of that search names the same request id.
    let audit = std::fs::read_to_string(dir.path().join("data/audit/audit.jsonl")).unwrap();
    assert!(
        audit.lines().any(|l| {
            let event: Value = serde_json::from_str(l).unwrap();
            event["event"] == "search" && event["request_id"] == "metrics-test-search-1"
        }),
        "the audit event of the search carries its request id:\n{audit}"
    );
    assert!(
        audit.lines().any(|l| {
            let event: Value = serde_json::from_str(l).unwrap();
            event["event"] == "search"
                && event["outcome"] == "failure"
                && event["request_id"] == "metrics-test-search-2"
        }),
        "the failed search is audited with its request id:\n{audit}"
    );
    assert!(
        !text.contains("PHANTOM-"),
        "the log leaks a patient ID:\n{text}"
    );

    // SIGTERM stops everything, the HTTP port last; the exit status is 0.
    let status = server.terminate("diptych serve");
    assert!(status.success(), "{status}:\n{}", server.log_tail());
    assert!(
        TcpStream::connect(&http).is_err(),
        "the HTTP port is closed once the server stopped"
    );
    let text = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        text.contains("HTTP server stopped"),
        "{}",
        server.log_tail()
    );
}
