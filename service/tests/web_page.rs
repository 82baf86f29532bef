//! The page at `/` in a real browser (issue #12): headless Chromium driven by Selenium
//! (service/tests/python/page_check.py) against `diptych serve` as a process, with phantom
//! studies written by `diptych demo write-studies` and sent by `diptych ingest` while the page
//! watches — the decomposition, the top 5 in each mode, a composite, filters (empty and
//! malformed), a viewer deep link, and cross-origin pages that the CORS allow-list admits and
//! refuses.
//!
//! Screenshots land in a temporary folder; with `DIPTYCH_SCREENSHOTS_DIR=docs` they replace the
//! README's (`docs/page-*.png`).

#[path = "support/serve.rs"]
mod serve;

use std::path::PathBuf;
use std::process::Command;

use serve::{Server, free_port, python, workspace};

#[test]
fn the_page_shows_what_diptych_sees_in_a_real_browser() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: install Debian's chromium and chromium-driver with `make deps-apt`"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let studies = dir.path().join("studies");
    let diptych = env!("CARGO_BIN_EXE_diptych");
    let written = Command::new(diptych)
        .args(["demo", "write-studies", "--subjects", "2"])
        .arg(&studies)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&written.stdout);
    assert!(
        written.status.success() && said.contains("wrote 2 studies (32 slices"),
        "{said}{}",
        String::from_utf8_lossy(&written.stderr)
    );

    let (allowed, refused) = (free_port(), free_port());
    let config = dir.path().join("diptych.toml");
    std::fs::write(
        &config,
        format!(
            "viewer_url_template = \"http://127.0.0.1:{allowed}/viewer.html?study={{study_instance_uid}}\"\n\
             [grpc]\nweb_allowed_origins = [\"http://127.0.0.1:{allowed}\"]\n\
             [dicom]\nstudy_quiet_period_s = 1.0\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let dicom = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        &dir.path().join("data"),
        &addr,
        &[
            "--config",
            config.to_str().unwrap(),
            "--http-addr",
            &http,
            "--dicom-addr",
            &dicom,
        ],
        dir.path().join("serve.log"),
    );
    let screenshots = std::env::var_os("DIPTYCH_SCREENSHOTS_DIR")
        .map(|d| workspace().join(PathBuf::from(d)))
        .unwrap_or_else(|| dir.path().join("screenshots"));
    let output = Command::new(python())
        .arg(workspace().join("service/tests/python/page_check.py"))
        .args(["--page", &format!("http://{http}/")])
        .args(["--grpc", &format!("http://{addr}")])
        .arg("--studies")
        .arg(&studies)
        .args(["--allowed-port", &allowed.to_string()])
        .args(["--refused-port", &refused.to_string()])
        .arg("--screenshots")
        .arg(&screenshots)
        .args(["--", diptych, "ingest"])
        .arg(&studies)
        .args(["--server", &format!("http://{addr}")])
        .output()
        .expect("running the browser check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "page_check.py failed:\n{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log_tail()
    );
    eprintln!("page_check.py: {}", stdout.trim());
    for shot in [
        "page-search.png",
        "page-side-by-side.png",
        "page-composite.png",
        "page-overview.png",
    ] {
        let bytes = std::fs::read(screenshots.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
}
