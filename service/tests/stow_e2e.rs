//! End to end for issue #13's STOW-RS: `diptych serve` receives DICOM over DICOMweb from a real
//! client (dicomweb-client on PyPI, in the test venv) on its HTTP port — bearer tokens checked,
//! each instance listed only once durable, a partial failure with its PS3.18 reason — and an
//! HTTP port on a network address without a tokens file refuses to store.

#[path = "support/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};
use serve::{Server, free_port, python, settled_stats, workspace};

fn phantom_files(dir: &Path, n: u64) -> Vec<PathBuf> {
    let generator = PhantomGenerator::new(11, PhantomConfig::default());
    (0..n)
        .map(|i| {
            let mut instance = SyntheticInstance::from_phantom(&generator.slice(i));
            if let StoredSamples::U16(samples) = &instance.samples {
                instance.samples =
                    StoredSamples::U16(samples.iter().map(|&v| v.min(4095)).collect());
            }
            instance.set(tags::SOP_INSTANCE_UID, VR::UI, format!("2.25.1313{i}"));
            let path = dir.join(format!("stow-{i}.dcm"));
            std::fs::write(&path, instance.to_part10()).unwrap();
            path
        })
        .collect()
}

/// (instances, records) of the index once nothing is pending.
fn indexed(addr: &str) -> (u64, u64) {
    let stats = settled_stats(addr);
    (stats.instances, stats.records)
}

fn token() -> String {
    format!("{:032x}", rand_token())
}

fn rand_token() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ u128::from(std::process::id())
}

#[test]
fn dicomweb_client_stores_through_the_accept_path_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let files = phantom_files(dir.path(), 3);
    let (ingest, search) = (token(), format!("{}s", token()));
    std::fs::write(dir.path().join("ingest.token"), &ingest).unwrap();
    std::fs::write(dir.path().join("search.token"), &search).unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[caller]]\nname = \"modality-gateway\"\nrole = \"ingest\"\ntoken_file = \"ingest.token\"\n\n\
         [[caller]]\nname = \"viewer\"\nrole = \"search\"\ntoken_file = \"search.token\"\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        &dir.path().join("data"),
        &addr,
        &["--no-dicom", "--tokens-file", tokens.to_str().unwrap()],
        dir.path().join("serve.log"),
    );
    let url = format!("http://{}/dicomweb", server.http_addr);
    let output = Command::new(python())
        .arg(workspace().join("service/tests/python/stow_check.py"))
        .args([&url, &ingest, &search])
        .args(&files)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{said}\n(dicomweb-client comes with `make deps-py`)\n{}",
        server.log_tail()
    );
    assert!(said.contains("\"stored_by_dicomweb_client\": 3"), "{said}");
    // Three instances acknowledged, though the first was sent three times (then a duplicate).
    let metrics = http_get(&server.http_addr, "/metrics");
    let acknowledged = metric(&metrics, "diptych_index_instances_acknowledged_total");
    assert_eq!(acknowledged, 3.0, "{metrics}");
    assert!(
        !std::fs::read_to_string(&server.log)
            .unwrap()
            .contains(&ingest)
    );
}

#[test]
fn a_network_http_port_without_tokens_refuses_to_store() {
    let dir = tempfile::tempdir().unwrap();
    let files = phantom_files(dir.path(), 1);
    let addr = format!("127.0.0.1:{}", free_port());
    let http = format!("0.0.0.0:{}", free_port());
    let server = Server::start(
        &dir.path().join("data"),
        &addr,
        &["--no-dicom", "--http-addr", &http],
        dir.path().join("serve.log"),
    );
    let part10 = std::fs::read(&files[0]).unwrap();
    let mut body = b"--b\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(&part10);
    body.extend_from_slice(b"\r\n--b--\r\n");
    let probe = http.replace("0.0.0.0", "127.0.0.1");
    let answer = http_post(
        &probe,
        "/dicomweb/studies",
        "multipart/related; type=\"application/dicom\"; boundary=b",
        &body,
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("tokens_file"), "{answer}");
    assert_eq!(indexed(&addr), (0, 0), "{}", server.log_tail());
}

fn http_get(addr: &str, path: &str) -> String {
    serve::http_request(addr, "GET", path, &[], &[])
}

fn http_post(addr: &str, path: &str, content_type: &str, body: &[u8]) -> String {
    serve::http_request(addr, "POST", path, &[("Content-Type", content_type)], body)
}

/// The value of an unlabelled sample in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}
