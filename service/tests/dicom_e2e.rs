//! End to end for issue #4: `diptych serve` listening for DICOM, driven by real peers — dcmtk's
//! echoscu, storescu (every transfer syntax the build decodes, converted by dcmtk and GDCM),
//! storescp (the viewer that receives the KOS documents), and pynetdicom (16 concurrent
//! associations) — and checked over gRPC: codes equal across transfer syntaxes (within a lossy
//! codec's loss), the Watch stream announcing received studies with their similar studies, a
//! KOS per study, a SIGKILL in the middle of a storescu run losing nothing acknowledged, and a
//! full ingest backlog holding senders back instead of filling memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{
    GetIndexStatsRequest, IndexStats, Query, SearchMode, SearchRequest, SliceRef, WatchRequest,
    query,
};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};

#[path = "support/serve.rs"]
mod serve;
use serve::{Server, channel, free_port, python, runtime, workspace};

/// The tests each run a server and a DICOM load; one at a time, so that timings and timeouts
/// are those of one server on this machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn tool(program: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} did not start ({e}); run `make deps-apt` (dcmtk, libgdcm-tools)")
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Polls the statistics until nothing is pending and `records` are indexed (or panics).
async fn wait_indexed(addr: &str, records: u64, limit: Duration) -> IndexStats {
    let mut info = InfoServiceClient::new(channel(addr).await);
    let started = Instant::now();
    loop {
        let stats = info
            .get_index_stats(GetIndexStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        if stats.pending == 0 && stats.records >= records {
            return stats;
        }
        assert!(
            started.elapsed() < limit,
            "not indexed after {limit:?}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A search restricted by `filter`, with an indexed query.
async fn search(
    addr: &str,
    query_sop: &str,
    filter: &str,
    top_k: u32,
) -> diptych::api::v1::SearchResponse {
    SearchServiceClient::new(channel(addr).await)
        .search(SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Indexed(SliceRef {
                    sop_instance_uid: query_sop.to_string(),
                    frame: 0,
                })),
            }),
            mode: SearchMode::Combined as i32,
            filter: filter.to_string(),
            top_k,
            ..SearchRequest::default()
        })
        .await
        .unwrap_or_else(|s| panic!("search failed: {s:?}"))
        .into_inner()
}

/// A phantom slice as a file with chosen UIDs, description, and (optionally) 8-bit samples.
fn write_instance(
    path: &Path,
    slice_index: u64,
    sop: &str,
    study: &str,
    series_description: &str,
    eight_bit: bool,
) {
    let generator = PhantomGenerator::new(2, PhantomConfig::default());
    let slice = generator.slice(slice_index);
    let mut instance = SyntheticInstance::from_phantom(&slice);
    if let StoredSamples::U16(samples) = &instance.samples {
        instance.samples = if eight_bit {
            StoredSamples::U8(samples.iter().map(|&v| (v.min(4095) / 16) as u8).collect())
        } else {
            StoredSamples::U16(samples.iter().map(|&v| v.min(4095)).collect())
        };
    }
    instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop.to_string());
    instance.set(tags::STUDY_INSTANCE_UID, VR::UI, study.to_string());
    instance.set(tags::SERIES_INSTANCE_UID, VR::UI, format!("{study}.1"));
    instance.set(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        series_description.to_string(),
    );
    let mut object = instance.object();
    let bits: u16 = if eight_bit { 8 } else { 12 };
    object.put(dicom_core::DataElement::new(
        tags::BITS_STORED,
        VR::US,
        dicom_core::PrimitiveValue::from(bits),
    ));
    object.put(dicom_core::DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        dicom_core::PrimitiveValue::from(bits - 1),
    ));
    object.write_to_file(path).unwrap();
}

/// A folder `name` under `dir` with `count` single-frame phantom instances of one study (SOP
/// Instance UIDs `{sop_prefix}{i:04}`).
fn phantom_folder(
    dir: &Path,
    name: &str,
    count: u64,
    sop_prefix: &str,
    study: &str,
    description: &str,
) -> PathBuf {
    let files = dir.join(name);
    std::fs::create_dir_all(&files).unwrap();
    for i in 0..count {
        write_instance(
            &files.join(format!("{name}{i:02}.dcm")),
            i,
            &format!("{sop_prefix}{i:04}"),
            study,
            description,
            false,
        );
    }
    files
}

/// `diptych serve` on a fresh data folder under `dir` with the DICOM listener on a free port,
/// plus `extra` arguments; returns the server, its gRPC address and its DICOM port.
fn serve_dicom(dir: &Path, extra: &[&str]) -> (Server, String, u16) {
    let dicom_port = free_port();
    let addr = format!("127.0.0.1:{}", free_port());
    let dicom_addr = format!("127.0.0.1:{dicom_port}");
    let mut args = vec!["--dicom-addr", dicom_addr.as_str()];
    args.extend_from_slice(extra);
    let server = Server::start(&dir.join("data"), &addr, &args, dir.join("serve.log"));
    (server, addr, dicom_port)
}

/// One transfer syntax: how to convert to it, what storescu must propose, and whether it loses.
struct Syntax {
    name: &'static str,
    eight_bit: bool,
    convert: Option<(&'static str, &'static [&'static str])>,
    propose: &'static [&'static str],
    lossy: bool,
}

const SYNTAXES: &[Syntax] = &[
    Syntax {
        name: "implicit-le",
        eight_bit: false,
        convert: Some(("dcmconv", &["+ti"])),
        propose: &["-xi"],
        lossy: false,
    },
    Syntax {
        name: "explicit-be",
        eight_bit: false,
        convert: Some(("dcmconv", &["+tb"])),
        propose: &["-xb", "-R"],
        lossy: false,
    },
    Syntax {
        name: "deflated",
        eight_bit: false,
        convert: Some(("dcmconv", &["+td"])),
        propose: &["-xd", "-R"],
        lossy: false,
    },
    Syntax {
        name: "jpeg-baseline",
        eight_bit: true,
        convert: Some(("dcmcjpeg", &["+eb"])),
        propose: &["-xy", "-R"],
        lossy: true,
    },
    Syntax {
        name: "jpeg-extended",
        eight_bit: true,
        convert: Some(("dcmcjpeg", &["+ee"])),
        propose: &["-xx", "-R"],
        lossy: true,
    },
    Syntax {
        name: "jpeg-lossless",
        eight_bit: false,
        convert: Some(("dcmcjpeg", &["+e1"])),
        propose: &["-xs", "-R"],
        lossy: false,
    },
    Syntax {
        name: "jpeg-ls",
        eight_bit: false,
        convert: Some(("dcmcjpls", &[])),
        propose: &["-xt", "-R"],
        lossy: false,
    },
    Syntax {
        name: "rle",
        eight_bit: false,
        convert: Some(("dcmcrle", &[])),
        propose: &["-xr", "-R"],
        lossy: false,
    },
    Syntax {
        name: "j2k-lossless",
        eight_bit: false,
        convert: Some(("gdcmconv", &["--j2k"])),
        propose: &["-xv", "-R"],
        lossy: false,
    },
    Syntax {
        name: "j2k-lossy",
        eight_bit: false,
        convert: Some(("gdcmconv", &["--j2k", "--lossy", "-r", "5"])),
        propose: &["-xw", "-R"],
        lossy: true,
    },
];

/// dcmtk's storescp as the viewer that receives KOS documents; killed when dropped.
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
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn storescu_in_every_transfer_syntax_then_watch_and_kos() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let viewer = Viewer::start(dir.path().join("viewer"));
    let dicom_port = free_port();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[dicom]\nstudy_quiet_period_s = 1.0\n\n[dicom.kos]\ndestination = \"VIEWER@127.0.0.1:{}\"\narchive = \"teaching\"\ntop_k = 3\n",
            viewer.port
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let dicom_addr = format!("127.0.0.1:{dicom_port}");
    let server = Server::start(
        &dir.path().join("data"),
        &addr,
        &[
            "--config",
            config.to_str().unwrap(),
            "--dicom-addr",
            &dicom_addr,
        ],
        dir.path().join("serve.log"),
    );
    let port = dicom_port.to_string();

    // C-ECHO.
    tool(
        "echoscu",
        &["-aet", "ECHO", "-aec", "DIPTYCH", "127.0.0.1", &port],
    );

    // The Watch stream, opened before anything arrives.
    let rt = runtime();
    let (events_tx, events_rx) = std::sync::mpsc::channel();
    let watch_addr = addr.clone();
    rt.spawn(async move {
        let mut stream = SearchServiceClient::new(channel(&watch_addr).await)
            .watch(WatchRequest {
                modes: vec![],
                top_k: 3,
                filter: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        while let Ok(Some(event)) = stream.message().await {
            let _ = events_tx.send(event);
        }
    });

    // Study A: the originals (16- and 8-bit) and the distractors; study B: one variant per
    // transfer syntax, all of the same phantom slice as the originals.
    let study_a = "2.25.7000001";
    let study_b = "2.25.7000002";
    write_instance(
        &files.join("orig16.dcm"),
        5,
        "2.25.7100016",
        study_a,
        "orig",
        false,
    );
    write_instance(
        &files.join("orig8.dcm"),
        5,
        "2.25.7100008",
        study_a,
        "orig",
        true,
    );
    for d in 0..8u64 {
        let sop = format!("2.25.72000{d:02}");
        write_instance(
            &files.join(format!("other{d}.dcm")),
            20 + d * 7,
            &sop,
            study_a,
            "other",
            false,
        );
    }
    tool(
        "storescu",
        &[
            "-aet",
            "STORESCU",
            "-aec",
            "DIPTYCH",
            "+sd",
            "127.0.0.1",
            &port,
            files.to_str().unwrap(),
        ],
    );
    let variants = dir.path().join("variants");
    std::fs::create_dir_all(&variants).unwrap();
    for (i, syntax) in SYNTAXES.iter().enumerate() {
        let source = variants.join(format!("{}-source.dcm", syntax.name));
        let sop = format!("2.25.73000{i:02}");
        write_instance(
            &source,
            5,
            &sop,
            study_b,
            &format!("variant {}", syntax.name),
            syntax.eight_bit,
        );
        let target = variants.join(format!("{}.dcm", syntax.name));
        let (program, options) = syntax.convert.unwrap();
        let mut args: Vec<&str> = options.to_vec();
        args.push(source.to_str().unwrap());
        args.push(target.to_str().unwrap());
        tool(program, &args);
        std::fs::remove_file(&source).unwrap();
        let mut args = vec!["-aet", "STORESCU", "-aec", "DIPTYCH"];
        args.extend(syntax.propose);
        args.extend(["127.0.0.1", &port, target.to_str().unwrap()]);
        tool("storescu", &args);
    }

    rt.block_on(async {
        let stats = wait_indexed(&addr, 10 + SYNTAXES.len() as u64, Duration::from_secs(120)).await;
        assert_eq!(stats.records, 10 + SYNTAXES.len() as u64, "{stats:?}");
        // Codes equal to the uncompressed file's (lossless), or nearest to it (lossy).
        for syntax in SYNTAXES {
            let original = if syntax.eight_bit { "2.25.7100008" } else { "2.25.7100016" };
            // Lossy converters give the copy a new SOP Instance UID: find it by its series.
            let same =
                search(&addr, original, &format!("series_description:\"variant {}\"", syntax.name), 1)
                    .await;
            assert_eq!(same.hits.len(), 1, "{}: the copy is indexed", syntax.name);
            let sop = same.hits[0].slice.clone().unwrap().sop_instance_uid;
            let distance = same.hits[0].distance;
            if syntax.lossy {
                let nearest = search(&addr, &sop, "series_description:orig OR series_description:other", 1).await;
                let top = &nearest.hits[0].slice.as_ref().unwrap().sop_instance_uid;
                assert!(
                    top == "2.25.7100016" || top == "2.25.7100008",
                    "{}: the lossy copy's nearest slice is {top}, not its original (distance {distance})",
                    syntax.name
                );
            } else {
                assert_eq!(distance, 0.0, "{}: codes differ from the uncompressed file's", syntax.name);
            }
        }
    });

    // Both studies go quiet: the Watch stream announces each with its similar studies.
    let mut seen = std::collections::HashMap::new();
    let started = Instant::now();
    while seen.len() < 2 {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        let event = events_rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no Watch event for both studies; got {:?}", seen.keys()));
        seen.insert(event.study_instance_uid.clone(), event);
    }
    let manifest = std::fs::read(serve::test_bundle().join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let model_id = manifest["model_id"].as_str().unwrap();
    for (study, event) in &seen {
        assert_eq!(event.results.len(), 3, "three modes for {study}");
        for result in &event.results {
            assert!(!result.hits.is_empty(), "{study} has similar studies");
            assert_eq!(result.model_id, model_id, "each answer names its model");
            assert!(
                result.hits.iter().all(|h| &h.study_instance_uid != study),
                "a study is not its own similar study"
            );
        }
    }
    assert_eq!(seen[study_a].slices, 10);
    assert_eq!(seen[study_b].slices, SYNTAXES.len() as u32);

    // And the viewer received a KOS per study.
    let started = Instant::now();
    let kos: Vec<PathBuf> = loop {
        let found: Vec<PathBuf> = std::fs::read_dir(&viewer.dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        if found.len() >= 2 || started.elapsed() > Duration::from_secs(30) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        kos.len(),
        2,
        "one KOS per received study: {kos:?}\n{}",
        server.log_tail()
    );
    for file in &kos {
        let dump = tool("dcmdump", &[file.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(text.contains("KeyObjectSelectionDocumentStorage"), "{text}");
    }
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(!log.contains("PHANTOM-0"), "the log leaks a patient ID");
}

#[test]
fn sixteen_pynetdicom_associations_of_200_instances_all_searchable() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let dicom_port = free_port();
    let addr = format!("127.0.0.1:{}", free_port());
    let dicom_addr = format!("127.0.0.1:{dicom_port}");
    let server = Server::start(
        &dir.path().join("data"),
        &addr,
        &["--dicom-addr", &dicom_addr],
        dir.path().join("serve.log"),
    );
    let template = dir.path().join("template.dcm");
    write_instance(&template, 9, "2.25.7400000", "2.25.7400001", "load", false);
    let output = Command::new(python())
        .arg(workspace().join("dicom-adapter/tests/python/scp_concurrent_store.py"))
        .args(["127.0.0.1", &dicom_port.to_string(), "DIPTYCH"])
        .arg(&template)
        .args(["16", "200", "2.25.7500"])
        .output()
        .expect("running pynetdicom");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pynetdicom failed:\n{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log_tail()
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["sent"], 3200, "{report}");
    assert_eq!(report["failures"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["stolen_responses"], 0, "{report}");
    let stats = runtime().block_on(wait_indexed(&addr, 3200, Duration::from_secs(300)));
    assert_eq!(
        stats.records, 3200,
        "every acknowledged instance is searchable: {stats:?}"
    );
    assert_eq!(stats.instances, 3200);
    eprintln!(
        "16 x 200 over pynetdicom in {} s: {stats:?}",
        report["seconds"]
    );
}

/// Writes `count` phantom files `f0000.dcm`… with SOP Instance UID `2.25.76<i>`.
fn crash_files(dir: &Path, count: u64) -> PathBuf {
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    for i in 0..count {
        write_instance(
            &files.join(format!("f{i:04}.dcm")),
            i % 64,
            &format!("2.25.76{i:05}"),
            &format!("2.25.77{:03}", i / 50),
            "crash",
            false,
        );
    }
    files
}

/// Starts a verbose storescu of `files` (it logs each file it sends and each response it
/// receives, in order, to `log`) and returns once `successes` responses were Success.
#[expect(
    clippy::zombie_processes,
    reason = "returned to the caller, which waits for it"
)]
fn storescu_until(
    files: &Path,
    dicom_port: u16,
    log: &Path,
    successes: usize,
) -> std::process::Child {
    let mut storescu = Command::new("storescu")
        .args([
            "-v",
            "-aet",
            "STORESCU",
            "-aec",
            "DIPTYCH",
            "+sd",
            "127.0.0.1",
            &dicom_port.to_string(),
        ])
        .arg(files)
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::options().append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches("Received Store Response (Success)").count() >= successes {
            return storescu;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = storescu.kill();
            let _ = storescu.wait();
            panic!("storescu made no progress:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The indices of the files storescu's log shows acknowledged: each "Sending file" followed by
/// a success response.
fn acknowledged_files(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap();
    let mut acknowledged = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(path) = line.split("Sending file: ").nth(1) {
            current = Some(path.trim().to_string());
        } else if line.contains("Received Store Response (Success)")
            && let Some(path) = current.take()
        {
            let i = Path::new(&path)
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_start_matches('f')
                .parse()
                .unwrap();
            acknowledged.push(i);
        }
    }
    acknowledged
}

/// Every acknowledged file is searchable exactly once on the server at `addr`, and no instance
/// is indexed twice.
async fn each_searchable_once(addr: &str, acknowledged: &[u64], server: &Server) -> IndexStats {
    let stats = wait_indexed(addr, acknowledged.len() as u64, Duration::from_secs(120)).await;
    assert_eq!(
        stats.records, stats.instances,
        "no instance indexed twice: {stats:?}"
    );
    for i in acknowledged {
        let sop = format!("2.25.76{i:05}");
        let answer = search(addr, &sop, &format!("sop_instance_uid:\"{sop}\""), 10).await;
        assert_eq!(
            answer.records_matched,
            1,
            "{sop} was acknowledged: searchable exactly once\n{}",
            server.log_tail()
        );
    }
    stats
}

#[test]
fn sigkill_during_storescu_loses_nothing_acknowledged() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let count = 400u64;
    let files = crash_files(dir.path(), count);
    let data = dir.path().join("data");
    let (mut server, _, dicom_port) = serve_dicom(dir.path(), &[]);
    let log = dir.path().join("storescu.log");
    let mut storescu = storescu_until(&files, dicom_port, &log, 60);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = storescu.wait();
    let acknowledged = acknowledged_files(&log);
    assert!(
        acknowledged.len() >= 30 && (acknowledged.len() as u64) < count,
        "the kill came mid-run ({} acknowledged)",
        acknowledged.len()
    );

    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&data, &addr, &["--no-dicom"], dir.path().join("serve2.log"));
    runtime().block_on(async {
        let stats = each_searchable_once(&addr, &acknowledged, &server).await;
        eprintln!(
            "{} acknowledged before SIGKILL, {} records after restart",
            acknowledged.len(),
            stats.records
        );
    });
}

/// SIGTERM (what Kubernetes sends) in the middle of a storescu run, with a Watch subscriber:
/// the stream ends with UNAVAILABLE, the server answers what is in flight, applies everything
/// acknowledged, checkpoints and exits 0 in time; the next start replays nothing.
#[test]
fn sigterm_during_storescu_stops_cleanly_and_the_next_start_replays_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let count = 400u64;
    let files = crash_files(dir.path(), count);
    let data = dir.path().join("data");
    let (mut server, addr, dicom_port) = serve_dicom(dir.path(), &[]);

    // A Watch subscriber, on its own thread: its stream must end, with UNAVAILABLE.
    let watch_addr = addr.clone();
    let watcher = std::thread::spawn(move || {
        runtime().block_on(async {
            let mut stream = SearchServiceClient::new(channel(&watch_addr).await)
                .watch(WatchRequest::default())
                .await
                .expect("watch starts")
                .into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_event)) => continue,
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        })
    });
    let log = dir.path().join("storescu.log");
    let mut storescu = storescu_until(&files, dicom_port, &log, 60);
    let signalled = Instant::now();
    let status = server.terminate("diptych serve");
    let stopped_in = signalled.elapsed();
    assert!(
        status.success(),
        "exit status 0 after SIGTERM, got {status}:\n{}",
        server.log_tail()
    );
    let _ = storescu.wait();
    let ended = watcher.join().unwrap();
    let ended = ended.expect("the Watch stream ended with a status, not a silent end");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("reconnect"), "{ended:?}");
    let first_log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        first_log.contains("every acknowledged instance is indexed and checkpointed"),
        "the final checkpoint ran:\n{}",
        server.log_tail()
    );
    let acknowledged = acknowledged_files(&log);
    assert!(
        acknowledged.len() >= 30 && (acknowledged.len() as u64) < count,
        "SIGTERM came mid-run ({} acknowledged)",
        acknowledged.len()
    );

    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&data, &addr, &["--no-dicom"], dir.path().join("serve2.log"));
    runtime().block_on(async {
        let stats = each_searchable_once(&addr, &acknowledged, &server).await;
        let second_log = std::fs::read_to_string(&server.log).unwrap();
        assert!(
            !second_log.contains("replay started"),
            "the next start replays nothing:\n{}",
            server.log_tail()
        );
        eprintln!(
            "{} acknowledged before SIGTERM, stopped in {stopped_in:?}, {} records after restart",
            acknowledged.len(),
            stats.records
        );
    });
}

#[test]
fn the_same_files_from_four_senders_at_once_are_indexed_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let files = phantom_folder(dir.path(), "f", 40, "2.25.78", "2.25.7900001", "same");
    let (server, addr, dicom_port) = serve_dicom(dir.path(), &[]);
    let senders: Vec<Child> = (0..4)
        .map(|_| {
            Command::new("storescu")
                .args([
                    "-aet",
                    "SAME",
                    "-aec",
                    "DIPTYCH",
                    "+sd",
                    "127.0.0.1",
                    &dicom_port.to_string(),
                ])
                .arg(&files)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut sender in senders {
        assert!(
            sender.wait().unwrap().success(),
            "every store succeeded (duplicates included)"
        );
    }
    let stats = runtime().block_on(wait_indexed(&addr, 40, Duration::from_secs(120)));
    assert_eq!(
        (stats.records, stats.instances),
        (40, 40),
        "each instance indexed once: {stats:?}\n{}",
        server.log_tail()
    );
}

/// With room for only two frames between acknowledgement and indexing, storescu's instances
/// wait for room instead of piling up: the statistics never show more than two pending, and
/// every instance is stored and indexed all the same.
#[test]
fn a_full_backlog_makes_senders_wait_and_loses_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let files = phantom_folder(dir.path(), "b", 60, "2.25.81", "2.25.8200001", "backlog");
    let config = dir.path().join("diptych.toml");
    std::fs::write(&config, "[index]\nmax_backlog_frames = 2\n").unwrap();
    let (server, addr, dicom_port) =
        serve_dicom(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut sender = Command::new("storescu")
        .args(["-aet", "BACKLOG", "-aec", "DIPTYCH", "+sd", "127.0.0.1"])
        .arg(dicom_port.to_string())
        .arg(&files)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runtime = runtime();
    let most_pending = runtime.block_on(async {
        let mut info = InfoServiceClient::new(channel(&addr).await);
        let mut most = 0;
        while sender.try_wait().unwrap().is_none() {
            let stats = info
                .get_index_stats(GetIndexStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            most = most.max(stats.pending);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        most
    });
    assert!(
        sender.wait().unwrap().success(),
        "every store succeeded\n{}",
        server.log_tail()
    );
    assert!(
        most_pending <= 2,
        "at most two frames wait for the indexer, saw {most_pending} pending"
    );
    let stats = runtime.block_on(wait_indexed(&addr, 60, Duration::from_secs(120)));
    assert_eq!(
        (stats.records, stats.instances),
        (60, 60),
        "every instance indexed once: {stats:?}\n{}",
        server.log_tail()
    );
}

/// Texts that would change a catalog query if one were built from them, and other non-UIDs.
fn hostile_uids() -> Vec<String> {
    [
        "1.2\" OR study_instance_uid:*",
        "x\" OR *",
        "1.2:3",
        "1.(2)",
        "*",
        "1.2.\u{e9}",
        "1..2",
        ".1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["1".repeat(10_000)])
    .collect()
}

/// The first characters of a hostile UID, for assertion messages.
fn shown(uid: &str) -> String {
    uid.chars().take(32).collect()
}

/// Issue #10: a real study is stored, then hostile UIDs arrive by C-STORE (dcmtk's storescu and
/// pynetdicom, each on one association) and in every gRPC request that names a UID. Each is
/// refused clearly — 0xC000 naming the attribute, INVALID_ARGUMENT naming the field and the
/// rule — the association and the server go on, nothing hostile reaches the catalog, and no
/// hostile UID matches the real study's records. Padded and leading-zero UIDs are tolerated.
#[test]
fn hostile_uids_are_refused_over_dicom_and_grpc_and_match_no_study() {
    use diptych::api::v1::ingest_service_client::IngestServiceClient;
    use diptych::api::v1::{
        CodeSource, CompositeQuery, DeleteRequest, DicomRef, IngestRequest, code_source, dicom_ref,
    };

    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let real_study = "2.25.8500001";
    let files = phantom_folder(dir.path(), "real", 3, "2.25.84000", real_study, "real");
    let (server, addr, dicom_port) = serve_dicom(dir.path(), &[]);
    let port = dicom_port.to_string();
    tool(
        "storescu",
        &[
            "-aet",
            "REAL",
            "-aec",
            "DIPTYCH",
            "+sd",
            "127.0.0.1",
            &port,
            files.to_str().unwrap(),
        ],
    );
    let rt = runtime();
    rt.block_on(wait_indexed(&addr, 3, Duration::from_secs(120)));

    // storescu: a hostile SOP Instance UID, then a hostile Study Instance UID (and the Series
    // UID made from it), for every hostile UID, then a good instance whose UID has a leading
    // zero — all on one association, going on after each refusal (-nh).
    let hostile = dir.path().join("hostile");
    std::fs::create_dir_all(&hostile).unwrap();
    let mut paths = Vec::new();
    for (i, uid) in hostile_uids().iter().enumerate() {
        let sop = hostile.join(format!("sop{i:02}.dcm"));
        write_instance(&sop, 1, uid, real_study, "hostile", false);
        let study = hostile.join(format!("study{i:02}.dcm"));
        write_instance(
            &study,
            2,
            &format!("2.25.86000{i:02}"),
            uid,
            "hostile",
            false,
        );
        paths.push(sop);
        paths.push(study);
    }
    let leading_zero = "2.25.084000099";
    let good = hostile.join("good.dcm");
    write_instance(&good, 3, leading_zero, real_study, "real", false);
    paths.push(good);
    let output = Command::new("storescu")
        .args([
            "-v",
            "-nh",
            "-aet",
            "HOSTILE",
            "-aec",
            "DIPTYCH",
            "127.0.0.1",
            &port,
        ])
        .args(&paths)
        .output()
        .expect("storescu (dcmtk) starts; run `make deps-apt`");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let responses: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Received Store Response"))
        .collect();
    assert_eq!(
        responses.len(),
        paths.len(),
        "every C-STORE is answered, on the one association:\n{text}\n{}",
        server.log_tail()
    );
    let (last, refused) = responses.split_last().unwrap();
    assert!(
        last.contains("Success"),
        "the good instance after them: {last}"
    );
    for line in refused {
        assert!(line.contains("CannotUnderstand"), "0xC000: {line}\n{text}");
    }
    assert!(
        text.matches("Requesting Association").count() == 1
            && text.contains("Releasing Association"),
        "one association, released, not aborted:\n{text}"
    );

    // pynetdicom: the same on its own association, with the status and comment of each.
    let template = dir.path().join("template.dcm");
    write_instance(&template, 4, "2.25.8400098", real_study, "real", false);
    let output = Command::new(python())
        .arg(workspace().join("service/tests/python/hostile_uid_store.py"))
        .args(["127.0.0.1", &port, "DIPTYCH"])
        .arg(&template)
        .arg("2.25.8400097")
        .output()
        .expect("running pynetdicom");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pynetdicom failed:\n{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log_tail()
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 16, "{report}");
    for result in results {
        assert_eq!(result["status"], 0xC000, "{result}");
        let comment = result["comment"].as_str().unwrap();
        let named = match result["attribute"].as_str().unwrap() {
            "SOPInstanceUID" => "Affected SOP Instance UID (0000,1000) is",
            _ => "StudyInstanceUID (0020,000D) is",
        };
        assert!(comment.starts_with(named), "{result}");
    }
    assert_eq!(report["good"], 0, "the association survived: {report}");

    // Only the real study's five instances are indexed: nothing hostile reached the catalog.
    let stats = rt.block_on(wait_indexed(&addr, 5, Duration::from_secs(120)));
    assert_eq!(
        (stats.records, stats.instances, stats.studies),
        (5, 5, 1),
        "{stats:?}"
    );

    rt.block_on(async {
        let channel = channel(&addr).await;
        let mut search = SearchServiceClient::new(channel.clone());
        let mut ingest = IngestServiceClient::new(channel);
        let indexed = |uid: &str| {
            Some(Query {
                source: Some(query::Source::Indexed(SliceRef {
                    sop_instance_uid: uid.to_string(),
                    frame: 0,
                })),
            })
        };
        let from_indexed = |uid: &str| CodeSource {
            source: Some(code_source::Source::Indexed(SliceRef {
                sop_instance_uid: uid.to_string(),
                frame: 0,
            })),
        };
        let real_sop = "2.25.840000000";
        let invalid = |status: tonic::Status, field: &str, uid: &str| {
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{field} {:?}: {status:?}",
                shown(uid)
            );
            let message = status.message();
            assert!(
                message.starts_with(&format!("{field}: is")) && message.contains("1 to 64"),
                "{field} {:?}: {message}",
                shown(uid)
            );
            assert!(
                !message.contains(" OR "),
                "the UID is not echoed: {message}"
            );
        };
        let mut hostile_and_empty = hostile_uids();
        hostile_and_empty.push(String::new());
        for uid in &hostile_and_empty {
            // Search by an indexed slice, plain and with exclude_query.
            for exclude_query in [false, true] {
                let status = search
                    .search(SearchRequest {
                        query: indexed(uid),
                        mode: SearchMode::Combined as i32,
                        top_k: 10,
                        exclude_query,
                        ..SearchRequest::default()
                    })
                    .await
                    .unwrap_err();
                invalid(status, "query.indexed.sop_instance_uid", uid);
            }
            // Composite queries, hostile on either side.
            for (normal, abnormal, field) in [
                (
                    uid.as_str(),
                    real_sop,
                    "query.composite.normal_from.indexed.sop_instance_uid",
                ),
                (
                    real_sop,
                    uid.as_str(),
                    "query.composite.abnormal_from.indexed.sop_instance_uid",
                ),
            ] {
                let status = search
                    .search(SearchRequest {
                        query: Some(Query {
                            source: Some(query::Source::Composite(CompositeQuery {
                                normal_from: Some(from_indexed(normal)),
                                abnormal_from: Some(from_indexed(abnormal)),
                            })),
                        }),
                        mode: SearchMode::Combined as i32,
                        top_k: 10,
                        ..SearchRequest::default()
                    })
                    .await
                    .unwrap_err();
                invalid(status, field, uid);
            }
            // Delete at every UID level.
            let levels = [
                (
                    dicom_ref::Level::StudyInstanceUid(uid.clone()),
                    "target.study_instance_uid",
                ),
                (
                    dicom_ref::Level::SeriesInstanceUid(uid.clone()),
                    "target.series_instance_uid",
                ),
                (
                    dicom_ref::Level::SopInstanceUid(uid.clone()),
                    "target.sop_instance_uid",
                ),
            ];
            for (level, field) in levels {
                let status = ingest
                    .delete(DeleteRequest {
                        target: Some(DicomRef { level: Some(level) }),
                    })
                    .await
                    .unwrap_err();
                invalid(status, field, uid);
            }
        }

        // Ingest: instances with a hostile Study Instance UID are refused, each with a reason.
        let instances: Vec<IngestRequest> = hostile_uids()
            .iter()
            .enumerate()
            .map(|(i, uid)| {
                let path = dir.path().join(format!("ingest{i:02}.dcm"));
                write_instance(
                    &path,
                    5,
                    &format!("2.25.87000{i:02}"),
                    uid,
                    "hostile",
                    false,
                );
                IngestRequest {
                    dicom: std::fs::read(&path).unwrap(),
                    client_ref: format!("hostile {i}"),
                }
            })
            .collect();
        let count = instances.len();
        let answer = ingest
            .ingest(tokio_stream::iter(instances))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (answer.accepted, answer.failures.len()),
            (0, count),
            "{answer:?}"
        );
        for failure in &answer.failures {
            assert!(
                failure
                    .reason
                    .starts_with("StudyInstanceUID (0020,000D) is"),
                "{failure:?}"
            );
        }

        // Padded and leading-zero UIDs name the slices they name, and only those.
        for uid in [
            format!("{real_sop}\0"),
            format!("{real_sop} "),
            leading_zero.to_string(),
        ] {
            let found = search
                .search(SearchRequest {
                    query: indexed(&uid),
                    mode: SearchMode::Combined as i32,
                    top_k: 10,
                    ..SearchRequest::default()
                })
                .await
                .unwrap_or_else(|s| panic!("{uid:?}: {s:?}"))
                .into_inner();
            let top = found.hits[0].slice.clone().unwrap();
            assert_eq!(top.sop_instance_uid, uid.trim_end_matches(['\0', ' ']));
            assert_eq!(found.hits[0].distance, 0.0);
            assert!(
                found
                    .hits
                    .iter()
                    .all(|h| h.study_instance_uid == real_study)
            );
        }
    });

    // The server lives on, everything is still there, and its log holds no hostile text.
    let stats = rt.block_on(wait_indexed(&addr, 5, Duration::from_secs(10)));
    assert_eq!((stats.records, stats.studies), (5, 1), "{stats:?}");
    tool(
        "echoscu",
        &["-aet", "ECHO", "-aec", "DIPTYCH", "127.0.0.1", &port],
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        !log.contains(" OR ") && !log.contains(&"1".repeat(100)),
        "a hostile UID reached the log:\n{}",
        server.log_tail()
    );
}
