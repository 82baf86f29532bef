//! The audit trail end to end (issue #11): a real `diptych serve` at `RUST_LOG=trace` receives a
//! study with a planted patient name, ID and birth date over DICOM (dcmtk's storescu), a search
//! returns it, and a call with a wrong token is refused. None of the planted values appears in
//! any log line; the audit file names the patient ID of the returned hit, the association, and
//! the refused call without its token. Then the syslog sink against real receivers: rsyslog
//! (Debian package `rsyslog`) over TCP with octet-counted framing, and — because rsyslog's TLS
//! needs its GnuTLS/OpenSSL driver and certificates set up — a Python `ssl` server reading the
//! octet-counted frames over TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{GetIndexStatsRequest, Query, SearchMode, SearchRequest, SliceRef, query};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::SyntheticInstance;
use diptych_service::audit::{Audit, AuditConfig, AuditEvent, Outcome, What, Who};

#[path = "support/certs.rs"]
mod certs;
#[path = "support/serve.rs"]
mod serve;
use serve::{Server, channel, free_port, python, runtime, workspace};

const PATIENT_NAME: &str = "Quillfeather^Ottoline";
const PATIENT_ID: &str = "PID-AUDIT-73190";
const BIRTH_DATE: &str = "19510623";
const ADMIN_TOKEN: &str = "audit-admin-token-5f2e9c1d7a3b8e46";
const SEARCH_TOKEN: &str = "audit-search-token-0c4d8e2f6a1b9d37";
const WRONG_TOKEN: &str = "wrong-token-never-logged-9a8b7c6d5e4f";

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Lines of the audit file (and its rotated files) parsed, once `done` holds of them.
fn audit_lines(path: &Path, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
            .collect();
        if done(&lines) || started.elapsed() > Duration::from_secs(20) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The planted study's SOP Instance and Study Instance UIDs.
const SOP: &str = "2.25.7319000000000000000000000000001";
const STUDY: &str = "2.25.7319000000000000000000000000002";

/// The study, planted with a name, an ID and a birth date, as a DICOM file in `dir`.
fn planted_file(dir: &Path) -> PathBuf {
    let generator = PhantomGenerator::new(2, PhantomConfig::default());
    let mut instance = SyntheticInstance::from_phantom(&generator.slice(4));
    instance.set(tags::PATIENT_NAME, VR::PN, PATIENT_NAME.to_string());
    instance.set(tags::PATIENT_ID, VR::LO, PATIENT_ID.to_string());
    instance.set(tags::PATIENT_BIRTH_DATE, VR::DA, BIRTH_DATE.to_string());
    instance.set(tags::SOP_INSTANCE_UID, VR::UI, SOP.to_string());
    instance.set(tags::STUDY_INSTANCE_UID, VR::UI, STUDY.to_string());
    instance.set(tags::SERIES_INSTANCE_UID, VR::UI, format!("{STUDY}.1"));
    let file = dir.join("planted.dcm");
    instance.object().write_to_file(&file).unwrap();
    file
}

/// `diptych serve` with the tokens of `ops` (admin) and `viewer` (search), its DICOM port on
/// `dicom_port`, the audit file at `audit_path`, `env`, and the `[audit]` lines `audit` in a
/// configuration file.
fn start_server(
    dir: &Path,
    addr: &str,
    dicom_port: u16,
    audit_path: &Path,
    env: &[(&str, &str)],
    audit: &str,
) -> Server {
    let config = dir.join("diptych.toml");
    std::fs::write(&config, format!("[audit]\n{audit}\n")).unwrap();
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[caller]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN_TOKEN}\"\n\n\
             [[caller]]\nname = \"viewer\"\nrole = \"search\"\ntoken = \"{SEARCH_TOKEN}\"\n"
        ),
    )
    .unwrap();
    let dicom_addr = format!("127.0.0.1:{dicom_port}");
    let mut env = env.to_vec();
    env.push(("DIPTYCH_AUDIT_PATH", audit_path.to_str().unwrap()));
    Server::start_with(
        &dir.join("data"),
        addr,
        &[
            "--dicom-addr",
            &dicom_addr,
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        dir.join("serve.log"),
        &env,
        None,
    )
}

/// C-STOREs `file` to the server's DICOM port with dcmtk's storescu.
fn store(file: &Path, dicom_port: u16) {
    let output = Command::new("storescu")
        .args(["-aet", "AUDITSCU", "-aec", "DIPTYCH", "127.0.0.1"])
        .arg(dicom_port.to_string())
        .arg(file)
        .output()
        .expect("storescu (dcmtk) starts; run `make deps-apt`");
    assert!(
        output.status.success(),
        "storescu failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until the index holds a record and nothing is pending.
async fn wait_indexed(addr: &str, server: &Server) {
    let mut info = InfoServiceClient::new(channel(addr).await);
    let started = Instant::now();
    loop {
        let stats = info
            .get_index_stats(with_token(GetIndexStatsRequest {}, ADMIN_TOKEN))
            .await
            .unwrap()
            .into_inner();
        if stats.pending == 0 && stats.records >= 1 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not indexed: {stats:?}\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn no_patient_data_in_the_log_and_the_audit_trail_names_who_saw_what() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = planted_file(dir.path());
    let (sop, study) = (SOP, STUDY);
    let dicom_port = free_port();
    let addr = format!("127.0.0.1:{}", free_port());
    let audit_path = dir.path().join("trail/audit.jsonl");
    let log = dir.path().join("serve.log");
    let server = start_server(
        dir.path(),
        &addr,
        dicom_port,
        &audit_path,
        &[("RUST_LOG", "trace")],
        "",
    );
    store(&file, dicom_port);

    runtime().block_on(async {
        wait_indexed(&addr, &server).await;
        let request = || SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Indexed(SliceRef {
                    sop_instance_uid: sop.to_string(),
                    frame: 0,
                })),
            }),
            mode: SearchMode::Combined as i32,
            top_k: 5,
            ..SearchRequest::default()
        };
        let mut search = SearchServiceClient::new(channel(&addr).await);
        let answer = search
            .search(with_token(request(), SEARCH_TOKEN))
            .await
            .unwrap()
            .into_inner();
        assert!(
            answer.hits.iter().any(|h| h.study_instance_uid == study),
            "the planted study is returned: {answer:?}"
        );
        let refused = search
            .search(with_token(request(), WRONG_TOKEN))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    });

    let events = audit_lines(&audit_path, |lines| {
        ["search", "association", "auth_refused"]
            .iter()
            .all(|kind| lines.iter().any(|l| l["event"] == *kind))
    });
    let text = std::fs::read_to_string(&audit_path).unwrap();
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in the audit trail:\n{text}"))
    };
    let search = find("search");
    assert_eq!(search["outcome"], "success");
    assert_eq!(search["who"]["name"], "viewer");
    assert_eq!(search["who"]["role"], "search");
    assert!(search["where"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(search["what"]["query_kind"], "indexed");
    let returned = search["what"]["returned"].as_array().unwrap();
    assert!(
        returned
            .iter()
            .any(|r| r["patient_id"] == PATIENT_ID && r["study_instance_uid"] == study),
        "the search event names the returned patient: {search}"
    );
    let association = find("association");
    assert_eq!(association["who"]["calling_ae"], "AUDITSCU");
    assert_eq!(association["who"]["called_ae"], "DIPTYCH");
    assert_eq!(association["what"]["instances_received"], 1);
    assert_eq!(association["what"]["statuses"]["0x0000"], 1);
    assert_eq!(association["what"]["end"], "released");
    let refused = find("auth_refused");
    assert_eq!(refused["outcome"], "failure");
    assert_eq!(refused["what"]["code"], "UNAUTHENTICATED");
    assert_eq!(
        refused["what"]["method"],
        "/diptych.v1.SearchService/Search"
    );
    assert!(refused["where"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(!text.contains(WRONG_TOKEN) && !text.contains(SEARCH_TOKEN));
    // The trail never holds names or birth dates either.
    assert!(!text.contains("Quillfeather") && !text.contains(BIRTH_DATE));

    drop(server);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.lines().count() > 100 && log_text.contains("TRACE"),
        "the server logged at trace level"
    );
    for (what, value) in [
        ("patient name", "Quillfeather"),
        ("patient name", "Ottoline"),
        ("patient ID", PATIENT_ID),
        ("birth date", BIRTH_DATE),
        ("a token", WRONG_TOKEN),
        ("a token", SEARCH_TOKEN),
    ] {
        let leaks: Vec<&str> = log_text.lines().filter(|l| l.contains(value)).collect();
        assert!(leaks.is_empty(), "the log holds the {what}: {leaks:#?}");
    }
}

/// Runs audit_check.py `scenario` against `addr` with `args`; the JSON facts it printed.
fn audit_check(scenario: &str, addr: &str, args: &[&str], server: &Server) -> serde_json::Value {
    let output = Command::new(python())
        .arg(workspace().join("service/tests/python/audit_check.py"))
        .arg(scenario)
        .args(["--addr", addr])
        .arg("--proto-dir")
        .arg(workspace().join("proto"))
        .args(args)
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "audit_check.py {scenario} failed ({}):\n{stdout}\n{}\n--- server log ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        server.log_tail()
    );
    serde_json::from_str(stdout.trim()).expect("audit_check.py prints one JSON line")
}

/// Encode, Decompose and the InfoService calls, from the grpcio client: one event each, naming
/// the caller, the method and — for a DICOM input — the patient and UIDs of its header; a
/// refused Decompose is a failure with its reason. Never a pixel.
#[test]
fn image_and_info_calls_name_the_caller_and_the_patient_of_a_dicom_input() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = planted_file(dir.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let audit_path = dir.path().join("audit.jsonl");
    let server = start_server(dir.path(), &addr, free_port(), &audit_path, &[], "");
    let file_arg = file.to_str().unwrap();
    audit_check(
        "calls",
        &addr,
        &["--token", ADMIN_TOKEN, "--dicom", file_arg],
        &server,
    );
    let ids = [
        "audit-encode",
        "audit-decompose",
        "audit-decompose-empty",
        "audit-stats",
        "audit-card",
        "audit-capabilities",
    ];
    let events = audit_lines(&audit_path, |lines| {
        ids.iter()
            .all(|id| lines.iter().any(|l| l["request_id"] == *id))
    });
    let text = std::fs::read_to_string(&audit_path).unwrap();
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e["request_id"] == id)
            .unwrap_or_else(|| panic!("no event of {id} in the audit trail:\n{text}"))
    };
    let encode = by_id("audit-encode");
    assert_eq!(encode["event"], "image", "{encode}");
    assert_eq!(encode["outcome"], "success");
    assert_eq!(encode["who"]["name"], "ops");
    assert_eq!(encode["who"]["role"], "admin");
    assert!(encode["where"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(encode["what"]["method"], "encode");
    assert_eq!(encode["what"]["input"], "dicom");
    assert_eq!(encode["what"]["patient_id"], PATIENT_ID);
    assert_eq!(encode["what"]["study_instance_uid"], STUDY);
    assert_eq!(encode["what"]["sop_instance_uid"], SOP);
    let decompose = by_id("audit-decompose");
    assert_eq!(decompose["event"], "image");
    assert_eq!(decompose["outcome"], "success");
    assert_eq!(decompose["what"]["method"], "decompose");
    assert_eq!(decompose["what"]["input"], "raw");
    assert!(decompose["what"].get("patient_id").is_none(), "{decompose}");
    let refused = by_id("audit-decompose-empty");
    assert_eq!(refused["outcome"], "failure");
    assert_eq!(refused["what"]["input"], "none");
    assert!(
        refused["reason"].as_str().unwrap().contains("image"),
        "{refused}"
    );
    for (id, method) in [
        ("audit-stats", "get_index_stats"),
        ("audit-card", "get_model_card"),
        ("audit-capabilities", "get_capabilities"),
    ] {
        let event = by_id(id);
        assert_eq!(event["event"], "info", "{event}");
        assert_eq!(event["outcome"], "success");
        assert_eq!(event["what"]["method"], method);
        assert_eq!(event["who"]["name"], "ops");
    }
    // Neither pixels nor the planted name or birth date.
    assert!(!text.contains("Quillfeather") && !text.contains(BIRTH_DATE));
    assert!(
        text.lines().all(|l| l.len() < 2000),
        "no line carries pixel data"
    );
}

/// The search events are written before the answers go out: 400 searches over 8 connections,
/// the server SIGKILLed by the client the moment the last answer is in, restarted — and every
/// search the client saw answered has its event in the audit file. Both ways: written to the
/// operating system (the default), and fsynced (`sync_before_answer`, where the fsync makes
/// the window between answer and write wide enough that an answer not waiting for its event
/// loses events here every time).
#[test]
fn every_answered_search_is_in_the_audit_file_after_a_sigkill() {
    let _one = serial();
    for audit in ["", "sync_before_answer = true"] {
        let dir = tempfile::tempdir().unwrap();
        let file = planted_file(dir.path());
        let dicom_port = free_port();
        let addr = format!("127.0.0.1:{}", free_port());
        let audit_path = dir.path().join("audit.jsonl");
        let mut server = start_server(dir.path(), &addr, dicom_port, &audit_path, &[], audit);
        store(&file, dicom_port);
        runtime().block_on(wait_indexed(&addr, &server));
        let pid = server.child.id().to_string();
        let facts = audit_check(
            "searches",
            &addr,
            &[
                "--token",
                SEARCH_TOKEN,
                "--sop",
                SOP,
                "--count",
                "400",
                "--threads",
                "8",
                "--kill",
                &pid,
            ],
            &server,
        );
        let status = server.child.wait().unwrap();
        assert!(!status.success(), "the server was killed: {status}");
        let answered: Vec<String> = facts["answered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_string())
            .collect();
        assert_eq!(answered.len(), 400);
        eprintln!(
            "[audit] {audit:?}: 400 searches, mean {} ms each",
            facts["mean_ms"]
        );
        drop(server);

        // Restarted on the same data and audit file: nothing answered is missing.
        let _restarted = start_server(dir.path(), &addr, free_port(), &audit_path, &[], audit);
        let recorded: std::collections::HashSet<String> = std::fs::read_to_string(&audit_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("each audit line is JSON"))
            .filter(|e| e["event"] == "search" && e["outcome"] == "success")
            .filter_map(|e| e["request_id"].as_str().map(str::to_string))
            .collect();
        let missing: Vec<&String> = answered
            .iter()
            .filter(|id| !recorded.contains(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "[audit] {audit:?}: {} of {} answered searches have no audit event after the kill: \
             {missing:?}",
            missing.len(),
            answered.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Syslog against real receivers.

fn event(i: u32) -> AuditEvent {
    AuditEvent::now(
        Outcome::Success,
        Who {
            name: Some("viewer".to_string()),
            ..Who::default()
        },
        Some("10.0.0.7:5000".to_string()),
        What::Delete {
            level: "study".to_string(),
            identifier: format!("2.25.{i}"),
            records: u64::from(i),
            instances: 1,
        },
    )
}

/// A process killed when dropped.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `path` until it has `n` lines containing `needle`.
fn wait_for_lines(path: &Path, needle: &str, n: usize, what: &str) -> Vec<String> {
    let started = Instant::now();
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} received {} of {n} messages:\n{}",
            lines.len(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_rsyslog(dir: &Path, port: u16) -> (Reaper, PathBuf) {
    let out = dir.join("received.log");
    let work = dir.join("rsyslog-work");
    std::fs::create_dir_all(&work).unwrap();
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{work}\")\n\
             module(load=\"imtcp\")\n\
             template(name=\"raw\" type=\"string\" string=\"%PRI%|%TIMESTAMP:::date-rfc3339%|%HOSTNAME%|%APP-NAME%|%MSGID%|%msg%\\n\")\n\
             ruleset(name=\"audit\") {{ action(type=\"omfile\" file=\"{out}\" template=\"raw\") }}\n\
             input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\" ruleset=\"audit\")\n",
            work = work.display(),
            out = out.display()
        ),
    )
    .unwrap();
    let child = Command::new("rsyslogd")
        .arg("-n")
        .arg("-iNONE")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("rsyslogd.stderr")).unwrap())
        .spawn()
        .expect("rsyslogd starts (apt-get install rsyslog)");
    // Ready once it accepts connections.
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "rsyslogd did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (Reaper(child), out)
}

/// RFC 5424 over TCP, octet-counted, into rsyslog; and the writer reconnects after rsyslog is
/// restarted.
#[test]
fn syslog_over_tcp_reaches_rsyslog_and_reconnects() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (rsyslog, out) = start_rsyslog(dir.path(), port);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let config = AuditConfig {
        syslog_addr: Some(format!("127.0.0.1:{port}")),
        ..AuditConfig::default()
    };
    let audit = Audit::start(&config, dir.path()).unwrap();
    for i in 0..3 {
        audit.record(event(i));
    }
    let lines = wait_for_lines(&out, "|diptych|delete|", 3, "rsyslog");
    for (i, line) in lines.iter().enumerate() {
        // PRI: authpriv (10) × 8 + notice (5).
        let fields: Vec<&str> = line.splitn(6, '|').collect();
        assert_eq!(fields[0], "85", "{line}");
        assert!(
            fields[1].ends_with('Z') || fields[1].contains('+'),
            "{line}"
        );
        let json = fields[5].trim_start_matches('\u{feff}');
        let value: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("the message is the event's JSON ({e}): {line}"));
        assert_eq!(value["what"]["identifier"], format!("2.25.{i}"));
        assert_eq!(value["who"]["name"], "viewer");
    }
    // rsyslog goes away and comes back: the writer reconnects and sends later events.
    drop(rsyslog);
    audit.record(event(10)); // may be lost into the dead connection (TCP has no acknowledgement)
    std::thread::sleep(Duration::from_millis(300));
    let (_rsyslog, out) = start_rsyslog(dir.path(), port);
    let started = Instant::now();
    let mut n = 11;
    loop {
        audit.record(event(n));
        std::thread::sleep(Duration::from_millis(500));
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains(&format!("\"2.25.{n}\"")) || text.contains("\"2.25.11\"") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no event reached the restarted rsyslog:\n{text}"
        );
        n += 1;
    }
}

/// RFC 5425-style: the same frames inside TLS, the receiver verified against a CA file; the
/// receiver is Python's `ssl` module reading octet-counted frames.
#[test]
fn syslog_over_tls_is_verified_and_octet_counted() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs::ca(d, "ca");
    certs::leaf(d, "server", "localhost", "serverAuth", "ca");
    let port = free_port();
    let out = d.join("frames.txt");
    let script = r#"
import socket, ssl, sys
port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(4)
while True:
    raw, _ = listener.accept()
    try:
        conn = context.wrap_socket(raw, server_side=True)
    except ssl.SSLError:
        continue
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        while b" " in data:
            length, rest = data.split(b" ", 1)
            n = int(length)
            if len(rest) < n:
                break
            with open(out, "ab") as f:
                f.write(rest[:n].replace(b"\n", b" ") + b"\n")
            data = rest[n:]
"#;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let _receiver = Reaper(
        Command::new(python)
            .arg("-c")
            .arg(script)
            .arg(port.to_string())
            .arg(d.join("server.crt"))
            .arg(d.join("server.key"))
            .arg(&out)
            .spawn()
            .expect("python3 starts"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the TLS receiver did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let config = AuditConfig {
        syslog_addr: Some(format!("localhost:{port}")),
        syslog_tls_ca: Some(d.join("ca.crt")),
        ..AuditConfig::default()
    };
    let audit = Audit::start(&config, d).unwrap();
    for i in 0..3 {
        audit.record(event(i));
    }
    let frames = wait_for_lines(&out, "diptych", 3, "the TLS receiver");
    for (i, frame) in frames.iter().enumerate() {
        assert!(frame.starts_with("<85>1 "), "{frame}");
        assert!(
            frame.contains(" diptych ") && frame.contains(" delete - \u{feff}{"),
            "{frame}"
        );
        assert!(
            frame.contains(&format!("\"identifier\":\"2.25.{i}\"")),
            "{frame}"
        );
    }
    // A CA that did not sign the receiver's certificate: nothing is sent.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(d.join("server.crt"), other.path().join("not-a-ca.pem")).unwrap();
    let stranger = Audit::start(
        &AuditConfig {
            syslog_addr: Some(format!("localhost:{port}")),
            syslog_tls_ca: Some(d.join("server.crt")),
            ..AuditConfig::default()
        },
        other.path(),
    )
    .unwrap();
    stranger.record(event(99));
    std::thread::sleep(Duration::from_secs(2));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        !text.contains("2.25.99"),
        "an unverified receiver got an event"
    );
}
