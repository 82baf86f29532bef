//! Security of the gRPC port end to end (issue #11): `diptych serve` as a process with a tokens
//! file, TLS and client certificates, driven by the Python grpcio client
//! (service/tests/python/auth_check.py): every role against every RPC, missing, wrong and
//! malformed tokens, TLS with and without client certificates, the closed default on a network
//! address without tokens — and no token ever in the server's log.
//!
//! Certificates are made by `openssl` in a temporary folder, as the DICOM-TLS tests do.

use std::path::Path;
use std::process::Command;

#[path = "support/certs.rs"]
mod certs;
#[path = "support/secured.rs"]
mod secured;
#[path = "support/serve.rs"]
mod serve;
use secured::token;
use serve::{ProbeTls, Server, free_port, python, workspace};

/// Logs at trace level for the service (the gate logs admissions and refusals), so the
/// no-token-in-the-log check covers every line the gate could write.
const RUST_LOG: &str = "info,diptych_service=trace,tonic=debug";

/// Runs auth_check.py `scenario` against `addr` with `extra` arguments; panics with the
/// client's output and the server's log when a check fails.
fn python_check(scenario: &str, addr: &str, dicom: &Path, extra: &[&str], server: &Server) {
    let output = Command::new(python())
        .arg(workspace().join("service/tests/python/auth_check.py"))
        .arg(scenario)
        .args(["--addr", addr])
        .arg("--proto-dir")
        .arg(workspace().join("proto"))
        .arg("--dicom")
        .arg(dicom)
        .args(extra)
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "auth_check.py {scenario} failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
        output.status,
        server.log_tail()
    );
    eprintln!("auth_check.py {scenario}: {}", stdout.trim());
}

/// The server's log, checked to hold none of `secrets`.
fn log_without(server: &Server, secrets: &[&str]) -> String {
    let log = std::fs::read_to_string(&server.log).unwrap();
    for secret in secrets {
        assert!(
            !log.contains(secret),
            "the server log carries a token:\n{log}"
        );
    }
    log
}

#[test]
fn every_role_against_every_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let (dicom, _) = secured::dicom_file(dir.path());
    let (ingest, search, admin, wrong) = (token(), token(), token(), token());
    // One token per way of giving it: a file beside the tokens file, an environment variable,
    // inline.
    std::fs::write(dir.path().join("ingest.token"), format!("{ingest}\n")).unwrap();
    let tokens_file = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens_file,
        format!(
            "[[caller]]\nname = \"router\"\nrole = \"ingest\"\ntoken_file = \"ingest.token\"\n\n\
             [[caller]]\nname = \"viewer\"\nrole = \"search\"\ntoken_env = \"DIPTYCH_TEST_SEARCH_TOKEN\"\n\n\
             [[caller]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{admin}\"\n"
        ),
    )
    .unwrap();
    let tokens_json = dir.path().join("tokens.json");
    std::fs::write(
        &tokens_json,
        serde_json::json!({"ingest": ingest, "search": search, "admin": admin, "wrong": wrong})
            .to_string(),
    )
    .unwrap();

    // Loopback, where no tokens file would mean an open server: the file turns the gate on.
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(
        &dir.path().join("data"),
        &addr,
        &["--no-dicom", "--tokens-file", tokens_file.to_str().unwrap()],
        dir.path().join("serve.log"),
        &[
            ("RUST_LOG", RUST_LOG),
            ("DIPTYCH_TEST_SEARCH_TOKEN", search.as_str()),
        ],
        None,
    );
    python_check(
        "roles",
        &addr,
        &dicom,
        &["--tokens", tokens_json.to_str().unwrap()],
        &server,
    );
    let log = log_without(&server, &[&ingest, &search, &admin, &wrong]);
    assert!(
        log.contains("gRPC authentication on: 3 caller(s)"),
        "the start-up log says authentication is on:\n{log}"
    );
    assert!(
        log.contains("gRPC call refused") && log.contains("gRPC call admitted"),
        "the gate logs at trace level, so the check above saw its lines:\n{log}"
    );
}

/// A test CA and, signed by it, a server certificate for localhost and client certificates
/// `gateway.example` and `stranger`; a `rogue` client certificate signed by another CA.
fn certificates(dir: &Path) {
    certs::ca(dir, "ca");
    certs::ca(dir, "rogue-ca");
    for (name, cn, usage, ca) in [
        ("server", "localhost", "serverAuth", "ca"),
        ("client", "gateway.example", "clientAuth", "ca"),
        ("stranger", "stranger", "clientAuth", "ca"),
        ("rogue", "gateway.example", "clientAuth", "rogue-ca"),
    ] {
        certs::leaf(dir, name, cn, usage, ca);
    }
}

#[test]
fn tls_with_tokens_and_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (dicom, _) = secured::dicom_file(dir.path());
    certificates(dir.path());
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let (search, admin) = (token(), token());
    let tokens_file = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens_file,
        format!(
            "[[caller]]\nname = \"viewer\"\nrole = \"search\"\ntoken = \"{search}\"\n\n\
             [[caller]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{admin}\"\n\n\
             [[caller]]\nname = \"gateway\"\nrole = \"search\"\nclient_cert_cn = \"gateway.example\"\n"
        ),
    )
    .unwrap();

    // Server TLS only; tokens authenticate. The TLS files come from the environment.
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(
        &dir.path().join("data-tls"),
        &addr,
        &["--no-dicom", "--tokens-file", tokens_file.to_str().unwrap()],
        dir.path().join("serve-tls.log"),
        &[
            ("RUST_LOG", RUST_LOG),
            ("DIPTYCH_GRPC_TLS_CERT", &file("server.crt")),
            ("DIPTYCH_GRPC_TLS_KEY", &file("server.key")),
        ],
        Some(&ProbeTls {
            ca_pem: read("ca.crt"),
            identity: None,
        }),
    );
    python_check(
        "tls",
        &addr,
        &dicom,
        &["--ca", &file("ca.crt"), "--token", &search],
        &server,
    );
    log_without(&server, &[&search, &admin]);
    drop(server);

    // Mutual TLS from the configuration file: a client certificate of the CA is required; the
    // tokens file maps gateway.example to a caller.
    let config = dir.path().join("mtls.toml");
    std::fs::write(
        &config,
        format!(
            "[grpc]\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n\n[auth]\ntokens_file = {:?}\n",
            file("server.crt"),
            file("server.key"),
            file("ca.crt"),
            tokens_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(
        &dir.path().join("data-mtls"),
        &addr,
        &["--no-dicom", "--config", config.to_str().unwrap()],
        dir.path().join("serve-mtls.log"),
        &[("RUST_LOG", RUST_LOG)],
        Some(&ProbeTls {
            ca_pem: read("ca.crt"),
            identity: Some((read("client.crt"), read("client.key"))),
        }),
    );
    python_check(
        "mtls",
        &addr,
        &dicom,
        &[
            "--ca",
            &file("ca.crt"),
            "--token",
            &admin,
            "--client-cert",
            &file("client.crt"),
            "--client-key",
            &file("client.key"),
            "--stranger-cert",
            &file("stranger.crt"),
            "--stranger-key",
            &file("stranger.key"),
            "--rogue-cert",
            &file("rogue.crt"),
            "--rogue-key",
            &file("rogue.key"),
        ],
        &server,
    );
    log_without(&server, &[&search, &admin]);
}

#[test]
fn without_tokens_a_network_address_refuses_every_call_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let (dicom, _) = secured::dicom_file(dir.path());
    let port = free_port();
    let server = Server::start_with(
        &dir.path().join("data"),
        &format!("0.0.0.0:{port}"),
        &["--no-dicom"],
        dir.path().join("serve.log"),
        &[],
        None,
    );
    python_check("closed", &format!("127.0.0.1:{port}"), &dicom, &[], &server);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("WARN") && log.contains("REFUSES EVERY CALL") && log.contains("tokens_file"),
        "start-up warns loudly and says what to set:\n{log}"
    );
}
