//! DICOM over TLS as a second port beside plain DICOM (issue #11): one `diptych serve` with
//! `dicom.addr` and `dicom.tls_addr`, real dcmtk peers — `storescu` on the plain port and
//! `storescu +tls` with a client certificate on the TLS port, both instances stored and
//! searchable; a plain association and a stalled handshake on the TLS port fail while a plain
//! association on the plain port completes; each refused handshake is counted in /metrics and
//! written to the audit trail with the peer's address. Then TLS-only (`dicom.plain = false`):
//! the plain port is gone, TLS still stores; and `plain = false` without TLS is refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "support/certs.rs"]
mod certs;
#[path = "support/secured.rs"]
mod secured;
#[path = "support/serve.rs"]
mod serve;
use serve::{Server, free_port};

/// Runs a dcmtk tool in `dir` with a 10 s network timeout.
fn dcmtk(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .current_dir(dir)
        .args(["-to", "10", "-aec", "DIPTYCH"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (apt-get install dcmtk): {e}"))
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `diptych ARGS` against the server's loopback gRPC port: success and output.
fn diptych(args: &[&str], grpc: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(args)
        .args(["--server", &format!("http://{grpc}")])
        .output()
        .expect("running diptych");
    (output.status.success(), said(&output))
}

/// Polls `diptych stats` until `instances` are indexed and nothing is pending.
fn wait_indexed(grpc: &str, instances: u64, server: &Server) {
    let started = Instant::now();
    let want = format!("instances        {instances}\n");
    loop {
        let (ok, out) = diptych(&["stats"], grpc);
        if ok && out.contains(&want) && out.contains("pending          0\n") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{instances} instances were not indexed:\n{out}\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The body of GET /metrics.
fn metrics(http: &str) -> String {
    let mut stream = TcpStream::connect(http).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// The `connection_refused` events of the audit file, once there are at least `n`.
fn refused_events(audit: &Path, n: usize) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let events: Vec<serde_json::Value> = std::fs::read_to_string(audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["event"] == "connection_refused")
            .collect();
        if events.len() >= n || started.elapsed() > Duration::from_secs(20) {
            return events;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A configuration file with `[dicom]` on `plain` (or none) and `tls`, TLS files from `dir`.
fn config(dir: &Path, name: &str, plain: Option<u16>, tls: u16) -> String {
    let file = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let plain = match plain {
        Some(port) => format!("addr = \"127.0.0.1:{port}\"\n"),
        None => "plain = false\n".to_string(),
    };
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[dicom]\n{plain}tls_addr = \"127.0.0.1:{tls}\"\nread_timeout_s = 2\n\
             tls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n",
            file("server.crt"),
            file("server.key"),
            file("ca.crt")
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn plain_and_tls_ports_side_by_side_then_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs::ca(d, "ca");
    certs::ca(d, "rogue-ca");
    certs::leaf(d, "server", "localhost", "serverAuth", "ca");
    certs::leaf(d, "client", "modality", "clientAuth", "ca");
    certs::leaf(d, "rogue", "modality", "clientAuth", "rogue-ca");
    let plain_file = secured::phantom_slice(d, 3);
    let tls_file = secured::phantom_slice(d, 4);
    let (plain_port, tls_port) = (free_port(), free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let both = config(d, "both.toml", Some(plain_port), tls_port);
    let server = Server::start(
        &d.join("data"),
        &grpc,
        &["--config", &both],
        d.join("serve.log"),
    );
    let (plain, tls) = (plain_port.to_string(), tls_port.to_string());
    let storescu_tls = |key: &str, cert: &str, file: &Path| {
        let file = file.to_str().unwrap();
        dcmtk(
            d,
            "storescu",
            &["+tls", key, cert, "+cf", "ca.crt", "127.0.0.1", &tls, file],
        )
    };

    // A stalled handshake holds the TLS port's connection; a plain association meanwhile.
    let mut stalled = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    let stored = dcmtk(
        d,
        "storescu",
        &["127.0.0.1", &plain, plain_file.path.to_str().unwrap()],
    );
    assert!(
        stored.status.success(),
        "plain storescu:\n{}",
        said(&stored)
    );
    // Plain DICOM to the TLS port fails, and does not disturb the port.
    let wrong_port = dcmtk(d, "echoscu", &["127.0.0.1", &tls]);
    assert!(
        !wrong_port.status.success(),
        "plain DICOM must not pass the TLS port"
    );
    let rogue = storescu_tls("rogue.key", "rogue.crt", &tls_file.path);
    assert!(
        !rogue.status.success(),
        "a certificate of another CA is refused"
    );
    let secure = storescu_tls("client.key", "client.crt", &tls_file.path);
    assert!(
        secure.status.success(),
        "storescu +tls:\n{}\n{}",
        said(&secure),
        server.log_tail()
    );
    // The stalled handshake times out (read_timeout_s = 2): the server closes it.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(stalled.read(&mut byte), Ok(0) | Err(_)),
        "the stalled handshake is closed"
    );

    // Both stored, both searchable; GetCapabilities names both ports.
    wait_indexed(&grpc, 2, &server);
    let (ok, out) = diptych(&["stats"], &grpc);
    assert!(
        ok && out.contains(&format!("(port {plain_port}, TLS port {tls_port})")),
        "stats with both listeners:\n{out}"
    );
    for uid in [&plain_file.sop_instance_uid, &tls_file.sop_instance_uid] {
        let (ok, out) = diptych(&["search", uid.as_str(), "--top-k", "2"], &grpc);
        assert!(ok && out.contains(uid.as_str()), "search {uid}:\n{out}");
    }

    // Counted and audited: the plain echo, the rogue certificate, the stalled handshake.
    let body = metrics(&server.http_addr);
    let failures: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("diptych_dicom_tls_handshake_failures_total "))
        .unwrap_or_else(|| panic!("no handshake counter in /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(failures, 3.0, "{body}");
    let events = refused_events(&d.join("data/audit/audit.jsonl"), 3);
    assert_eq!(events.len(), 3, "{events:#?}");
    for event in &events {
        assert_eq!(event["outcome"], "failure");
        assert_eq!(event["what"]["listener"], "dicom-tls");
        assert_eq!(event["what"]["listener_addr"], format!("127.0.0.1:{tls}"));
        assert!(event["where"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(
            event["reason"]
                .as_str()
                .unwrap()
                .starts_with("TLS handshake")
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["reason"].as_str().unwrap().contains("timed out")),
        "{events:#?}"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains(&format!("DICOM listening (plain) on 127.0.0.1:{plain}"))
            && log.contains(&format!("DICOM-TLS listening on 127.0.0.1:{tls}")),
        "the log names each listener:\n{log}"
    );
    drop(server);

    // TLS only: the plain port does not listen; TLS still stores.
    let tls_port = free_port();
    let tls = tls_port.to_string();
    let only = config(d, "tls-only.toml", None, tls_port);
    let grpc = format!("127.0.0.1:{}", free_port());
    let plain_addr = format!("127.0.0.1:{plain_port}");
    let server = Server::start(
        &d.join("data-tls-only"),
        &grpc,
        &["--config", &only, "--dicom-addr", &plain_addr],
        d.join("serve-tls-only.log"),
    );
    let refused = dcmtk(d, "echoscu", &["127.0.0.1", &plain]);
    assert!(
        !refused.status.success(),
        "TLS-only: the plain port is closed"
    );
    let secure = dcmtk(
        d,
        "storescu",
        &[
            "+tls",
            "client.key",
            "client.crt",
            "+cf",
            "ca.crt",
            "127.0.0.1",
            &tls,
            tls_file.path.to_str().unwrap(),
        ],
    );
    assert!(
        secure.status.success(),
        "TLS-only storescu:\n{}",
        said(&secure)
    );
    wait_indexed(&grpc, 1, &server);
    let (ok, out) = diptych(&["stats"], &grpc);
    assert!(
        ok && out.contains(&format!("(port off, TLS port {tls_port})")),
        "stats on a TLS-only node:\n{out}"
    );
    drop(server);

    // plain = false without TLS: refused before anything starts.
    let bad = d.join("no-port.toml");
    std::fs::write(&bad, "[dicom]\nplain = false\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(["config", "check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = said(&output);
    assert!(
        !output.status.success() && text.contains("dicom.plain") && text.contains("tls_cert"),
        "{text}"
    );
}
