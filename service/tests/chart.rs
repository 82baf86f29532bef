//! The deployment files: the Helm chart `charts/diptych`, the `Dockerfile` and
//! `scripts/install-deps.sh`, checked with the tools of the venv that `make deps-chart` creates in
//! `$HOME/.cache/diptych/chart-venv` (Helm's library from helm-python-sdk, kubernetes-validate,
//! hadolint, shellcheck; nothing needs a cluster, Docker or the network).
//!
//! `charts/diptych/tests/check_chart.py` lints and renders the chart's profiles and runs the
//! reviewer's checks; this test then hands each rendered configuration file, command line and
//! environment to the server's own parser (`Config::load`, `diptych serve --help`), so the chart
//! cannot name a key or flag that the server does not know.
//!
//! A key that belongs to a server feature not landed yet goes in `PENDING_KEYS` (empty now that
//! gRPC TLS, tokens, the HTTP port and the log format are in): left out of the parse, and checked to be
//! still unknown, so the day the server learns one of them this test fails and says to take it
//! off the list (and to check that the server means by it what the chart does).

use std::path::{Path, PathBuf};
use std::process::Command;

use diptych_service::config::{Config, ExecutionProvider, Overrides};

/// Keys the chart writes that this server does not parse yet, as `section.key` or `section`.
const PENDING_KEYS: &[&str] = &[];

const PROFILES: [&str; 4] = ["default", "gpu", "tls", "minimal"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A tool of the chart venv, or a panic that says how to get it.
fn tool(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    let path = PathBuf::from(home)
        .join(".cache/diptych/chart-venv/bin")
        .join(name);
    assert!(
        path.is_file(),
        "no {name} at {}: create the chart venv with `make deps-chart`",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the tool starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// `text` as TOML without the keys of `PENDING_KEYS`.
fn without_pending(text: &str) -> String {
    let mut table: toml::Table = text.parse().expect("the chart's configuration is TOML");
    for key in PENDING_KEYS {
        match key.split_once('.') {
            Some((section, key)) => {
                if let Some(toml::Value::Table(section)) = table.get_mut(section) {
                    section.remove(key);
                }
            }
            None => {
                table.remove(*key);
            }
        }
    }
    toml::to_string(&table).unwrap()
}

fn serve_help() -> String {
    run(Command::new(env!("CARGO_BIN_EXE_diptych")).args(["serve", "--help"]))
}

#[test]
fn the_chart_lints_renders_validates_and_the_server_parses_its_configuration() {
    let out = tempfile::tempdir().unwrap();
    let report = run(Command::new(tool("python"))
        .arg(workspace().join("charts/diptych/tests/check_chart.py"))
        .arg(workspace().join("charts/diptych"))
        .arg(out.path()));
    assert!(report.contains(" passed, 0 failed"), "{report}");

    let help = serve_help();
    for profile in PROFILES {
        let dir = out.path().join(profile);
        let toml_path = dir.join("diptych.toml");
        let text = std::fs::read_to_string(&toml_path).unwrap();
        let parsable = dir.join("diptych.parsable.toml");
        std::fs::write(&parsable, without_pending(&text)).unwrap();

        // The configuration, with the pod's environment, through the server's own loader.
        let env: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("env.json")).unwrap()).unwrap();
        let overrides = Overrides {
            config: Some(parsable.clone()),
            ..Overrides::default()
        };
        let config = Config::load(&overrides, |name| {
            env.get(name).and_then(|v| v.as_str()).map(str::to_string)
        })
        .unwrap_or_else(|e| {
            panic!("{profile}: the server refuses the chart's configuration: {e}\n{text}")
        });
        let expected = if profile == "gpu" {
            ExecutionProvider::Cuda
        } else {
            ExecutionProvider::Cpu
        };
        assert_eq!(config.encoder.execution_provider, expected, "{profile}");
        assert_eq!(config.data_dir, PathBuf::from("/data"), "{profile}");
        assert_eq!(config.grpc.addr.port(), 50051, "{profile}");
        assert_eq!(config.dicom.enabled, profile != "minimal", "{profile}");
        // DICOM on 11112, and DICOM-TLS on 2762 beside it in the TLS profile: in the server's
        // configuration and on the DICOM Service.
        let manifests = std::fs::read_to_string(dir.join("manifests.yaml")).unwrap();
        let dicom_service = manifests
            .split("\n---\n")
            .find(|doc| doc.contains("kind: Service\n") && doc.contains("component: dicom\n"));
        if config.dicom.enabled {
            let service = dicom_service.unwrap_or_else(|| panic!("{profile}: no DICOM Service"));
            let tls = profile == "tls";
            assert!(config.dicom.plain, "{profile}");
            assert_eq!(config.dicom.addr.port(), 11112, "{profile}");
            assert_eq!(config.dicom.tls_addr.port(), 2762, "{profile}");
            assert_eq!(config.dicom.tls_cert.is_some(), tls, "{profile}");
            assert!(service.contains("port: 11112\n"), "{profile}:\n{service}");
            assert_eq!(
                service.contains("port: 2762\n") && service.contains("name: dicom-tls\n"),
                tls,
                "{profile}: the DICOM-TLS port is on the Service iff TLS is on:\n{service}"
            );
        } else {
            assert!(dicom_service.is_none(), "{profile}");
        }
        if profile == "tls" {
            assert!(config.dicom.tls_cert.is_some() && config.dicom.tls_client_ca.is_some());
            assert!(config.dicom.kos.is_some());
            assert_eq!(config.dicom.allowed_callers, ["CT1", "PACS@10.20.0.5"]);
        }

        // Every flag of the command line is one `diptych serve` knows.
        let args: Vec<String> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("args.json")).unwrap()).unwrap();
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")),
                "{profile}: `diptych serve` has no flag {flag}:\n{help}"
            );
        }
    }
}

#[test]
fn the_pending_keys_are_still_unknown_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    for key in PENDING_KEYS {
        let text = match key.split_once('.') {
            Some((section, key)) => format!("[{section}]\n{key} = \"/x\"\n"),
            None => format!("[{key}]\n"),
        };
        let path = dir.path().join("pending.toml");
        std::fs::write(&path, &text).unwrap();
        assert!(
            Config::from_file(&path).is_err(),
            "the server now parses `{key}`: check that it means what charts/diptych renders for \
             it, then take it off PENDING_KEYS in service/tests/chart.rs"
        );
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let dockerfile = workspace().join("Dockerfile");
    run(Command::new(tool("hadolint"))
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(&dockerfile));
    // The check can fail: a Dockerfile with an unpinned base image and apt without
    // --no-install-recommends is refused.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "FROM debian\nRUN apt-get install -y curl\n").unwrap();
    let status = Command::new(tool("hadolint"))
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(bad.path())
        .output()
        .unwrap()
        .status;
    assert!(!status.success(), "hadolint accepted a bad Dockerfile");
}

#[test]
fn the_dockerfile_installs_through_the_makefiles_script() {
    // The images and `make` share scripts/install-deps.sh: the Dockerfile calls it for the build
    // tools, GDCM's 12-bit JPEG library and ONNX Runtime, and installs nothing by itself.
    let text = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    let dockerfile: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for step in [
        "build-tools",
        "jpeg12-dev",
        "ort /opt/onnxruntime cpu",
        "ort /opt/onnxruntime gpu",
    ] {
        assert!(
            dockerfile.contains(&format!("install-deps.sh {step}")),
            "the Dockerfile does not run install-deps.sh {step}"
        );
    }
    for direct in ["apt-get", "pip ", "pip3 ", "curl ", "wget "] {
        assert!(
            !dockerfile.contains(direct),
            "the Dockerfile runs {direct} itself: put the step in scripts/install-deps.sh"
        );
    }
    let makefile = std::fs::read_to_string(workspace().join("Makefile")).unwrap();
    for step in [
        "ort-version",
        "build-tools",
        "test-peers",
        "ort $(ORT_DIR) cpu",
    ] {
        assert!(
            makefile.contains(step),
            "the Makefile does not use install-deps.sh {step}"
        );
    }
}

#[test]
fn the_shell_scripts_pass_shellcheck() {
    run(Command::new(tool("shellcheck"))
        .arg(workspace().join("scripts/install-deps.sh"))
        .arg(workspace().join("scripts/check-one-build.sh"))
        .arg(workspace().join(".ci/run")));
    let ort_version = run(Command::new("bash")
        .arg(workspace().join("scripts/install-deps.sh"))
        .arg("ort-version"));
    // The Makefile's cache path and the images' library come from this one answer.
    assert!(
        ort_version.trim().starts_with("1.31."),
        "ort {ort_version:?}: ort 2.0.0-rc.15 (Cargo.toml) loads ONNX Runtime 1.31"
    );
}
