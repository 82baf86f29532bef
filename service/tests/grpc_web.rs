//! gRPC-Web on the gRPC port (issue #12), end to end: `diptych serve` as a process with a tokens
//! file and a CORS allow-list, and service/tests/python/grpc_web_check.py speaking gRPC-Web
//! over plain HTTP/1.1 — both content types, the same tokens and roles as native gRPC, a bad
//! request's message, and CORS preflights from an allowed and a refused origin. The browser's
//! side of it is in web_page.rs.

#[path = "support/secured.rs"]
mod secured;
#[path = "support/serve.rs"]
mod serve;

use std::process::Command;

use secured::token;
use serve::{Server, free_port, python, workspace};

#[test]
fn grpc_web_answers_with_the_same_gate_and_cors_admits_only_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let (search, admin) = (token(), token());
    let tokens_file = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens_file,
        format!(
            "[[caller]]\nname = \"viewer\"\nrole = \"search\"\ntoken = \"{search}\"\n\n\
             [[caller]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{admin}\"\n"
        ),
    )
    .unwrap();
    let tokens_json = dir.path().join("tokens.json");
    std::fs::write(
        &tokens_json,
        serde_json::json!({"search": search, "admin": admin}).to_string(),
    )
    .unwrap();
    let allowed = "http://viewer.hospital.example:3000";
    let config = dir.path().join("diptych.toml");
    std::fs::write(
        &config,
        format!("[grpc]\nweb_allowed_origins = [\"{allowed}/\"]\n"),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        &dir.path().join("data"),
        &addr,
        &[
            "--no-dicom",
            "--tokens-file",
            tokens_file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        dir.path().join("serve.log"),
    );
    let output = Command::new(python())
        .arg(workspace().join("service/tests/python/grpc_web_check.py"))
        .args(["--addr", &addr, "--allowed-origin", allowed])
        .arg("--proto-dir")
        .arg(workspace().join("proto"))
        .arg("--tokens")
        .arg(&tokens_json)
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "grpc_web_check.py failed:\n{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log_tail()
    );
    eprintln!("grpc_web_check.py: {}", stdout.trim());
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("gRPC-Web: pages of these origins may call")
            && log.contains("http://viewer.hospital.example:3000"),
        "the start-up log names the admitted origins:\n{log}"
    );
    assert!(
        !log.contains(&search) && !log.contains(&admin),
        "no token in the log"
    );
}

#[test]
fn an_allow_list_entry_that_is_not_an_origin_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("diptych.toml");
    std::fs::write(
        &config,
        "[grpc]\nweb_allowed_origins = [\"https://ohif.example/viewer\"]\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        text.contains("grpc.web_allowed_origins")
            && text.contains("https://ohif.example/viewer")
            && text.contains("scheme://host[:port]"),
        "{text}"
    );
}
