//! End to end: `diptych serve` as a process on a free port with a real model bundle, checked by a
//! Python gRPC client (service/tests/python/client_check.py) whose stubs grpcio-tools generates
//! from proto/ at run time.
//!
//! The bundle: `DIPTYCH_TEST_MODEL` if set, else the shipped `models/phantom-v1`; the test fails
//! with a message saying how to get one when neither exists. Python: the venv that `make deps-py`
//! creates in `$HOME/.cache/diptych/py-venv`. ONNX Runtime: `ORT_DYLIB_PATH` or the cache that
//! `make deps-ort` fills.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::SyntheticInstance;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The model bundle under test, or a panic that says how to get one.
fn test_bundle() -> PathBuf {
    let (path, from) = match std::env::var_os("DIPTYCH_TEST_MODEL") {
        Some(path) => (PathBuf::from(path), "DIPTYCH_TEST_MODEL"),
        None => (workspace().join("models/phantom-v1"), "the default"),
    };
    assert!(
        path.join("manifest.json").is_file(),
        "no model bundle for the end-to-end test at {} ({from}): train and export the shipped \
         model with `make train-default`, or set DIPTYCH_TEST_MODEL to a bundle folder \
         (manifest.json, encoder.onnx, decoder.onnx)",
        path.display()
    );
    path
}

fn python() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    let python = PathBuf::from(home).join(".cache/diptych/py-venv/bin/python");
    assert!(
        python.is_file(),
        "no Python venv at {}: create it with `make deps-py`",
        python.display()
    );
    python
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process; killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls gRPC health until the server reports SERVING, failing early if the process exits.
fn wait_until_serving(server: &mut Server, addr: &str, limit: Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "diptych serve exited with {status} before serving:\n{}",
                server.log_tail()
            );
        }
        let serving = runtime.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .ok()?
                .connect()
                .await
                .ok()?;
            let mut client = HealthClient::new(channel);
            let answer = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()?;
            Some(answer.into_inner().status == ServingStatus::Serving as i32)
        });
        if serving == Some(true) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "diptych serve was not SERVING after {limit:?}:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
    let log = dir.path().join("serve.log");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--model")
        .arg(&bundle)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--grpc-addr", &addr, "--execution-provider", "cpu"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting diptych serve");
    let mut server = Server { child, log };
    wait_until_serving(&mut server, &addr, Duration::from_secs(180));
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
