//! End to end: `diptych serve` as a process on a free port with a real model bundle, checked by a
//! Python gRPC client (service/tests/python/client_check.py) whose stubs grpcio-tools generates
//! from proto/ at run time.
//!
//! The bundle: `DIPTYCH_TEST_MODEL` if set, else the shipped `models/phantom-v1`; the test fails
//! with a message saying how to get one when neither exists. Python: the venv that `make deps-py`
//! creates in `$HOME/.cache/diptych/py-venv`. ONNX Runtime: `ORT_DYLIB_PATH` or the cache that
//! `make deps-ort` fills.

use std::process::Command;
use std::time::Instant;

use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::SyntheticInstance;

#[path = "support/serve.rs"]
mod serve;
use serve::{Server, free_port, python, test_bundle, workspace};

#[test]
fn serve_answers_a_python_grpc_client() {
    let bundle = test_bundle();
    let python = python();
    let dir = tempfile::tempdir().unwrap();

    // A diseased held-out phantom slice as a DICOM file, and its stored values as raw uint16.
    let generator = PhantomGenerator::new(2, PhantomConfig::default());
    let slice = (0..64)
        .map(|i| generator.slice(i))
        .find(|s| s.has_lesion)
        .unwrap();
    let instance = SyntheticInstance::from_phantom(&slice);
    let dicom = dir.path().join("slice.dcm");
    std::fs::write(&dicom, instance.to_part10()).unwrap();
    let stored: Vec<u8> = match &instance.samples {
        diptych_dicom_adapter::synthetic::StoredSamples::U16(values) => {
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        other => panic!("phantom instances store uint16, not {other:?}"),
    };
    let raw = dir.path().join("slice.u16");
    std::fs::write(&raw, stored).unwrap();

    // A configuration file for what the flags do not cover: a small message limit the client
    // checks, and a batcher shaped for the concurrent requests.
    let config = dir.path().join("serve.toml");
    let max_message_bytes = 4 * 1024 * 1024;
    std::fs::write(
        &config,
        format!(
            "[grpc]\nmax_message_bytes = {max_message_bytes}\n\n\
             [encoder]\nmax_batch = 8\nmax_queue_delay_ms = 5\n"
        ),
    )
    .unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let server = Server::start(
        &dir.path().join("data"),
        &addr,
        &["--config", config.to_str().unwrap()],
        dir.path().join("serve.log"),
    );
    let ready = started.elapsed();

    let output = Command::new(&python)
        .arg(workspace().join("service/tests/python/client_check.py"))
        .args(["--addr", &addr])
        .arg("--proto-dir")
        .arg(workspace().join("proto"))
        .arg("--dicom")
        .arg(&dicom)
        .arg("--raw")
        .arg(&raw)
        .args([
            "--rows",
            &slice.rows.to_string(),
            "--cols",
            &slice.cols.to_string(),
        ])
        .args(["--provider", "cpu"])
        .args(["--max-message-bytes", &max_message_bytes.to_string()])
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
        output.status,
        server.log_tail()
    );

    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the client's last line is not JSON ({e}):\n{stdout}"));
    let manifest = diptych::manifest::Manifest::read(&bundle).unwrap();
    assert_eq!(summary["model_id"], manifest.model_id.as_str());
    assert_eq!(summary["execution_provider"], "cpu");
    assert_eq!(summary["input_size"], manifest.input_size());
    assert!(summary["checks"].as_u64().unwrap() > 60, "{summary}");
    eprintln!("ready after {ready:?}; client: {summary}");

    // The log says what runs where, and never carries the patient ID of the instance.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("SERVING") && log.contains("execution_provider"),
        "{log}"
    );
    let patient = format!("PHANTOM-{:04}", slice.subject);
    assert!(
        !log.contains(&patient),
        "the log leaks a patient ID:\n{log}"
    );
}
