//! The AdminService end to end (issue #11, Operations): `diptych serve` as a process with a
//! tokens file and the DICOM listener, driven by the Python grpcio client
//! (service/tests/python/admin_check.py) and dcmtk: only `admin` may call it; a peer added at
//! run time is accepted by the listener (storescu) and one removed is rejected, without a
//! restart; the lists persist across a restart and the configuration seeds them on the first
//! start only; a C-ECHO to a real storescp succeeds and one to a closed port fails clearly;
//! the recent associations page through without overlap or gaps; bad input is
//! INVALID_ARGUMENT; every change is a `config_change` event of the audit trail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::SyntheticInstance;
use serde_json::{Value, json};

#[path = "support/serve.rs"]
mod serve;
use serve::{Server, free_port, python, workspace};

const ADMIN: &str = "admin-api-admin-token-61c0d9e2a7b34f58";
const INGEST: &str = "admin-api-ingest-token-0f9e8d7c6b5a4931";
const SEARCH: &str = "admin-api-search-token-5a4b3c2d1e0f9e8d";

/// The Python client against one server.
struct Client {
    addr: String,
    stubs: PathBuf,
}

impl Client {
    /// Runs admin_check.py with `args`; panics with its output when it fails.
    fn run(&self, args: &[&str], server: &Server) -> String {
        let output = Command::new(python())
            .arg(workspace().join("service/tests/python/admin_check.py"))
            .args(args)
            .args(["--addr", &self.addr])
            .arg("--proto-dir")
            .arg(workspace().join("proto"))
            .arg("--stubs")
            .arg(&self.stubs)
            .output()
            .expect("running the Python client");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "admin_check.py {args:?} failed ({}):\n{stdout}\n{}\n--- server log ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            server.log_tail()
        );
        stdout
    }

    /// One AdminService call with `token` (None: without credentials): `Ok(answer)` or
    /// `Err((status code name, message))`.
    fn call(
        &self,
        server: &Server,
        token: Option<&str>,
        method: &str,
        body: Value,
    ) -> Result<Value, (String, String)> {
        let body = body.to_string();
        let mut args = vec!["call", method, body.as_str()];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        let line: Value = serde_json::from_str(self.run(&args, server).trim()).unwrap();
        match line.get("ok") {
            Some(answer) => Ok(answer.clone()),
            None => Err((
                line["code"].as_str().unwrap().to_string(),
                line["message"].as_str().unwrap().to_string(),
            )),
        }
    }

    /// A call as `admin` that must succeed.
    fn admin(&self, server: &Server, method: &str, body: Value) -> Value {
        self.call(server, Some(ADMIN), method, body.clone())
            .unwrap_or_else(|e| panic!("{method} {body} refused: {e:?}"))
    }

    /// A call as `admin` that must fail with `code`; returns the message.
    fn refused(&self, server: &Server, method: &str, body: Value, code: &str) -> String {
        match self.call(server, Some(ADMIN), method, body.clone()) {
            Err((got, message)) if got == code => message,
            other => panic!("{method} {body}: expected {code}, got {other:?}"),
        }
    }

    /// The allowed peers as `AE` or `AE@ip`.
    fn peers(&self, server: &Server) -> Vec<String> {
        let answer = self.admin(server, "ListPeers", json!({}));
        answer["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| match p["host"].as_str().unwrap() {
                "" => p["ae_title"].as_str().unwrap().to_string(),
                host => format!("{}@{host}", p["ae_title"].as_str().unwrap()),
            })
            .collect()
    }
}

/// A phantom slice as a DICOM file.
fn dicom_file(dir: &Path) -> PathBuf {
    let generator = PhantomGenerator::new(2, PhantomConfig::default());
    let instance = SyntheticInstance::from_phantom(&generator.slice(3));
    let path = dir.join("slice.dcm");
    std::fs::write(&path, instance.to_part10()).unwrap();
    path
}

/// Whether dcmtk's storescu, calling as `calling_ae`, got `file` stored.
fn storescu(calling_ae: &str, port: u16, file: &Path) -> bool {
    Command::new("storescu")
        .args(["-aet", calling_ae, "-aec", "DIPTYCH", "127.0.0.1"])
        .arg(port.to_string())
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("storescu (dcmtk) starts; run `make deps-apt`")
        .success()
}

/// dcmtk's storescp as a KOS destination; killed when dropped.
struct Viewer {
    child: Child,
    port: u16,
}

impl Viewer {
    fn start(dir: &Path) -> Viewer {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let child = Command::new("storescp")
            .args(["-aet", "VIEWER", "-od"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("storescp (dcmtk) starts; run `make deps-apt`");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "storescp did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Viewer { child, port }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The audit file's events of type `event`, once `done` holds of them.
fn audit_events(data: &Path, event: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let path = data.join("audit/audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == event)
            .collect();
        if done(&events) || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(dir: &Path, seed_peers: &str, kos_port: u16) -> PathBuf {
    let path = dir.join("diptych.toml");
    std::fs::write(
        &path,
        format!(
            "[dicom]\nallowed_callers = [{seed_peers}]\n\n[dicom.kos]\ndestination = \"SEEDVIEW@127.0.0.1:{kos_port}\"\narchive = \"teaching\"\n"
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, config: &Path, dicom_port: u16, tokens: &Path) -> (Server, Client) {
    let addr = format!("127.0.0.1:{}", free_port());
    let dicom_addr = format!("127.0.0.1:{dicom_port}");
    let server = Server::start(
        &dir.join("data"),
        &addr,
        &[
            "--config",
            config.to_str().unwrap(),
            "--dicom-addr",
            &dicom_addr,
            "--tokens-file",
            tokens.to_str().unwrap(),
        ],
        dir.join(format!("serve-{}.log", free_port())),
    );
    let client = Client {
        addr,
        stubs: dir.join("stubs"),
    };
    (server, client)
}

#[test]
fn peers_and_destinations_change_live_persist_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dicom_file(dir.path());
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[caller]]\nname = \"router\"\nrole = \"ingest\"\ntoken = \"{INGEST}\"\n\n\
             [[caller]]\nname = \"viewer\"\nrole = \"search\"\ntoken = \"{SEARCH}\"\n\n\
             [[caller]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n"
        ),
    )
    .unwrap();
    let tokens_json = dir.path().join("tokens.json");
    std::fs::write(
        &tokens_json,
        json!({"ingest": INGEST, "search": SEARCH, "admin": ADMIN}).to_string(),
    )
    .unwrap();
    let dicom_port = free_port();
    let closed_port = free_port();
    let seeded = config(dir.path(), "\"SEED\"", closed_port);
    let (server, client) = start(dir.path(), &seeded, dicom_port, &tokens);

    // Only admin: every RPC without a token, as ingest, as search, as admin.
    let out = client.run(
        &["roles", "--tokens", tokens_json.to_str().unwrap()],
        &server,
    );
    assert!(out.contains("\"checked\": 36"), "{out}");

    // The configuration seeded the lists on this first start.
    assert_eq!(client.peers(&server), ["SEED"]);
    let kos = client.admin(&server, "ListKosDestinations", json!({}));
    assert_eq!(kos["kos_enabled"], true);
    assert_eq!(
        kos["destinations"],
        json!([{"ae_title": "SEEDVIEW", "host": "127.0.0.1", "port": closed_port}])
    );
    assert!(data.join("admin/dicom-peers.json").is_file());

    // Not listed: rejected. Added at run time: accepted by the next association.
    assert!(
        !storescu("CT1", dicom_port, &file),
        "CT1 is not allowed yet"
    );
    let added = client.admin(
        &server,
        "AddPeer",
        json!({"peer": {"ae_title": "CT1", "host": "127.0.0.1"}}),
    );
    assert_eq!(added["ae_title"], "CT1");
    assert!(storescu("CT1", dicom_port, &file), "CT1 was just allowed");
    assert!(
        !storescu("STRANGER", dicom_port, &file),
        "STRANGER is not listed"
    );
    assert_eq!(client.peers(&server), ["SEED", "CT1@127.0.0.1"]);

    // Duplicates, unknown entries and bad input are refused with what to fix.
    let ct1 = json!({"peer": {"ae_title": "CT1", "host": "127.0.0.1"}});
    client.refused(&server, "AddPeer", ct1.clone(), "ALREADY_EXISTS");
    let message = client.refused(
        &server,
        "RemovePeer",
        json!({"peer": {"ae_title": "CT1"}}),
        "NOT_FOUND",
    );
    assert!(message.contains("CT1"), "{message}");
    let message = client.refused(
        &server,
        "AddPeer",
        json!({"peer": {"ae_title": "A_TITLE_OF_20_CHARS"}}),
        "INVALID_ARGUMENT",
    );
    assert!(message.contains("at most 16 characters"), "{message}");
    let message = client.refused(
        &server,
        "AddPeer",
        json!({"peer": {"ae_title": "CT2", "host": "ct2.hospital"}}),
        "INVALID_ARGUMENT",
    );
    assert!(message.contains("IP address"), "{message}");
    client.refused(&server, "AddPeer", json!({}), "INVALID_ARGUMENT");
    let message = client.refused(
        &server,
        "AddKosDestination",
        json!({"destination": {"ae_title": "V", "host": "127.0.0.1", "port": 70000}}),
        "INVALID_ARGUMENT",
    );
    assert!(message.contains("1 to 65535"), "{message}");

    // Removed at run time: rejected again.
    client.admin(&server, "RemovePeer", ct1.clone());
    assert!(!storescu("CT1", dicom_port, &file), "CT1 was just removed");
    // The last peer stays: an empty list would let every caller in.
    let message = client.refused(
        &server,
        "RemovePeer",
        json!({"peer": {"ae_title": "SEED"}}),
        "FAILED_PRECONDITION",
    );
    assert!(message.contains("empty list"), "{message}");
    assert!(
        storescu("SEED", dicom_port, &file),
        "SEED is allowed from anywhere"
    );

    // C-ECHO: a real storescp answers; a closed port fails with a clear error.
    let viewer = Viewer::start(&dir.path().join("viewer"));
    let destination = json!({"ae_title": "VIEWER", "host": "127.0.0.1", "port": viewer.port});
    client.admin(
        &server,
        "AddKosDestination",
        json!({"destination": destination}),
    );
    client.refused(
        &server,
        "AddKosDestination",
        json!({"destination": destination}),
        "ALREADY_EXISTS",
    );
    let echo = client.admin(
        &server,
        "EchoDestination",
        json!({"destination": {"ae_title": "VIEWER"}}),
    );
    assert_eq!(echo["success"], true, "{echo}");
    assert_eq!(echo["status"], 0);
    assert!(echo["round_trip_ms"].as_f64().unwrap() > 0.0, "{echo}");
    assert_eq!(
        echo["destination"],
        format!("VIEWER@127.0.0.1:{}", viewer.port)
    );
    let echo = client.admin(
        &server,
        "EchoDestination",
        json!({"destination": {"ae_title": "SEEDVIEW"}}),
    );
    assert_eq!(echo["success"], false, "{echo}");
    let error = echo["error"].as_str().unwrap();
    assert!(
        error.contains("cannot open an association")
            && error.contains(&format!("127.0.0.1:{closed_port}"))
            && error.contains("listens at that address"),
        "{error}"
    );
    client.refused(
        &server,
        "EchoDestination",
        json!({"destination": {"ae_title": "NOBODY"}}),
        "NOT_FOUND",
    );
    client.admin(
        &server,
        "RemoveKosDestination",
        json!({"destination": {"ae_title": "SEEDVIEW", "host": "127.0.0.1", "port": closed_port}}),
    );
    client.admin(&server, "AddPeer", json!({"peer": {"ae_title": "MR2"}}));

    // Every change is in the audit trail with who made it.
    let changes = audit_events(&data, "config_change", |e| e.len() >= 9);
    let made: Vec<(String, String, String, String)> = changes
        .iter()
        .map(|e| {
            assert_eq!(e["who"]["name"], "ops", "{e}");
            assert_eq!(e["who"]["role"], "admin", "{e}");
            let what = &e["what"];
            let field = |v: &Value| v.as_str().unwrap().to_string();
            (
                field(&what["setting"]),
                field(&what["action"]),
                field(&what["entry"]),
                field(&e["outcome"]),
            )
        })
        .collect();
    let row = |s: &str, a: &str, entry: &str, o: &str| {
        (
            s.to_string(),
            a.to_string(),
            entry.to_string(),
            o.to_string(),
        )
    };
    for expected in [
        row("dicom_peers", "add", "CT1@127.0.0.1", "success"),
        row("dicom_peers", "add", "CT1@127.0.0.1", "failure"),
        row("dicom_peers", "remove", "CT1", "failure"),
        row("dicom_peers", "remove", "CT1@127.0.0.1", "success"),
        row("dicom_peers", "remove", "SEED", "failure"),
        row(
            "kos_destinations",
            "add",
            &format!("VIEWER@127.0.0.1:{}", viewer.port),
            "success",
        ),
        row(
            "kos_destinations",
            "remove",
            &format!("SEEDVIEW@127.0.0.1:{closed_port}"),
            "success",
        ),
        row("dicom_peers", "add", "MR2", "success"),
    ] {
        assert!(made.contains(&expected), "{expected:?} not in {made:?}");
    }

    // The associations so far, newest first, in pages of 2 without overlap or gaps.
    let recorded = audit_events(&data, "association", |e| e.len() >= 5);
    assert_eq!(recorded.len(), 5, "storescu ran five times: {recorded:?}");
    let calls = |listed: &[Value], field: &str| -> Vec<String> {
        listed
            .iter()
            .map(|a| a[field].as_str().unwrap().to_string())
            .collect()
    };
    let mut listed: Vec<Value> = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client.admin(
            &server,
            "ListAssociations",
            json!({"page_size": 2, "page_token": token}),
        );
        let entries = page["associations"].as_array().unwrap();
        assert!(entries.len() <= 2, "{page}");
        listed.extend(entries.iter().cloned());
        pages += 1;
        token = page["next_page_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        calls(&listed, "calling_ae"),
        ["SEED", "CT1", "STRANGER", "CT1", "CT1"]
    );
    assert_eq!(
        calls(&listed, "end"),
        ["released", "rejected", "rejected", "released", "rejected"]
    );
    let times = calls(&listed, "time");
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    assert_eq!(listed[3]["instances_received"], 1);
    assert!(
        listed[1]["reason"].as_str().unwrap().contains("allow-list"),
        "{}",
        listed[1]
    );
    for (body, field) in [
        (json!({"page_size": -1}), "page_size"),
        (json!({"page_size": 5000}), "page_size"),
        (json!({"page_token": "not-a-token"}), "page_token"),
    ] {
        let message = client.refused(&server, "ListAssociations", body, "INVALID_ARGUMENT");
        assert!(message.starts_with(field), "{message}");
    }
    drop(server);

    // A restart with another seed in the configuration: the data folder's lists win.
    let reseeded = config(dir.path(), "\"OTHER\", \"CT1\"", closed_port);
    let (server, client) = start(dir.path(), &reseeded, dicom_port, &tokens);
    assert_eq!(client.peers(&server), ["SEED", "MR2"]);
    let kos = client.admin(&server, "ListKosDestinations", json!({}));
    assert_eq!(kos["destinations"], json!([destination]));
    assert!(
        !storescu("CT1", dicom_port, &file),
        "CT1's removal persisted"
    );
    assert!(
        storescu("MR2", dicom_port, &file),
        "MR2's addition persisted"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("differ from the lists in the data folder"),
        "the start-up log says the configuration's lists are not used:\n{log}"
    );
}

#[test]
fn a_loopback_server_without_tokens_keeps_the_admin_api_open() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        &dir.path().join("data"),
        &addr,
        &["--no-dicom"],
        dir.path().join("serve.log"),
    );
    let client = Client {
        addr,
        stubs: dir.path().join("stubs"),
    };
    let listed = client.call(&server, None, "ListPeers", json!({})).unwrap();
    assert_eq!(listed["peers"], json!([]), "no seed: any caller");
    client
        .call(
            &server,
            None,
            "AddPeer",
            json!({"peer": {"ae_title": "CT1"}}),
        )
        .unwrap();
    let refused = client
        .call(
            &server,
            None,
            "AddKosDestination",
            json!({"destination": {"ae_title": "V", "host": "127.0.0.1", "port": 104}}),
        )
        .unwrap_err();
    assert_eq!(refused.0, "FAILED_PRECONDITION");
    assert!(refused.1.contains("[dicom.kos]"), "{refused:?}");
    let empty = client
        .call(&server, None, "ListAssociations", json!({}))
        .unwrap();
    assert_eq!(empty["associations"], json!([]));
    assert_eq!(empty["next_page_token"], "");
}
