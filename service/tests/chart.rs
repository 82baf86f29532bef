//! The deployment files: the Helm chart `charts/diptych`, the `Dockerfile` and
//! `scripts/install-deps.sh`, checked with the tools of the venv that `make deps-chart` creates in
//! `$HOME/.cache/diptych/chart-venv` (Helm's library from helm-python-sdk, kubernetes-validate,
//! hadolint, shellcheck; nothing needs a cluster, Docker or the network).
//!
//! `charts/diptych/tests/check_chart.py` lints and renders the chart's profiles and runs the
//! reviewer's checks; this test then hands each rendered configuration file, command line and
//! environment to the server's own parser (`Config::load`, `diptych serve --help`), so the chart
//! cannot name a key or flag that the server does not know. In the cluster profile that is every
//! router's, shard's and encoder's configuration with its pod's environment (the shards' remote
//! encoder URL, the encoder's provider), the routers' shard list through the router's own parser,
//! and the NATS configuration through `nats-server -t`.
//!
//! A key that belongs to a server feature not landed yet goes in `PENDING_KEYS` (empty now that
//! gRPC TLS, tokens, the HTTP port and the log format are in): left out of the parse, and checked to be
//! still unknown, so the day the server learns one of them this test fails and says to take it
//! off the list (and to check that the server means by it what the chart does).

use std::path::{Path, PathBuf};
use std::process::Command;

use diptych_service::cluster::router::Shards;
use diptych_service::config::{Config, ExecutionProvider, Overrides, Role};

/// Keys the chart writes that this server does not parse yet, as `section.key` or `section`.
const PENDING_KEYS: &[&str] = &[];

const PROFILES: [&str; 5] = ["default", "gpu", "tls", "minimal", "cluster"];

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

/// One workload's rendered configuration (`dir/diptych.toml`, without the pending keys) with its
/// pod's environment (`dir/env.json`) through the server's own loader; its command line
/// (`dir/args.json`) checked against `diptych serve --help`.
fn load_rendered(what: &str, dir: &Path, help: &str) -> Config {
    let text = std::fs::read_to_string(dir.join("diptych.toml")).unwrap();
    let parsable = dir.join("diptych.parsable.toml");
    std::fs::write(&parsable, without_pending(&text)).unwrap();
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
        panic!("{what}: the server refuses the chart's configuration: {e}\n{text}")
    });
    // Every flag of the command line is one `diptych serve` knows.
    let args: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("args.json")).unwrap()).unwrap();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")),
            "{what}: `diptych serve` has no flag {flag}:\n{help}"
        );
    }
    config
}

/// The cluster profile: every router, shard and encoder workload's configuration through the
/// server's loader (the shard and replica from the pod's environment), and the NATS configuration through
/// `nats-server -t`, with the pod name it takes from its environment and without it.
fn check_cluster_roles(dir: &Path, router: &Config, help: &str) {
    assert_eq!(router.cluster.role, Role::Router);
    let shards = router.cluster.shards;
    assert!(shards >= 2, "the cluster profile has several shards");
    assert_eq!(router.cluster.shard_addrs.len(), shards as usize);
    let roles: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("roles.json")).unwrap()).unwrap();
    let mut served = Vec::new();
    let mut encoders = 0;
    // The encoder Service that the shards' remote_url must name (the profile enables it).
    let encoder_url = "http://diptych-ci-encoder.pacs.svc:50051";
    for role in &roles {
        let name = role["dir"].as_str().unwrap();
        let config = load_rendered(name, &dir.join(name), help);
        assert_eq!(config.grpc.addr.port(), 50051, "{name}");
        if role["role"] == "encoder" {
            // The encoder role on its GPU: no remote encoder of its own, no DICOM, its HTTP
            // port (metrics for the autoscaler, probes) on the chart's http.port.
            assert_eq!(config.cluster.role, Role::Encoder, "{name}");
            assert_eq!(config.encoder.execution_provider, ExecutionProvider::Cuda);
            assert!(config.encoder.remote_url.is_empty(), "{name}");
            assert!(!config.dicom.enabled, "{name}");
            assert_eq!(config.http.addr.port(), 8080, "{name}");
            encoders += 1;
            continue;
        }
        assert_eq!(config.data_dir, PathBuf::from("/data"), "{name}");
        assert_eq!(config.cluster.shards, shards, "{name}");
        assert_eq!(config.cluster.nats_url, router.cluster.nats_url, "{name}");
        match role["role"].as_str().unwrap() {
            "router" => {
                assert_eq!(config.cluster.role, Role::Router, "{name}");
                // The router's own reading of the shard list: one entry per shard, every
                // replica an address it can connect to.
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime
                    .block_on(async { Shards::from_config(&config.cluster).map(|_| ()) })
                    .unwrap_or_else(|e| panic!("{name}: the router refuses shard_addrs: {e}"));
            }
            "shard" => {
                assert_eq!(config.cluster.role, Role::Shard, "{name}");
                assert!(!config.dicom.enabled, "{name}: a shard takes no DICOM");
                assert_eq!(config.encoder.execution_provider, ExecutionProvider::Cpu);
                // Its batches go to the encoder Service, a URL the client accepts.
                assert_eq!(config.encoder.remote_url, encoder_url, "{name}");
                tonic::transport::Endpoint::from_shared(config.encoder.remote_url.clone())
                    .unwrap_or_else(|e| panic!("{name}: remote_url: {e}"));
                // The pod's name (here the last replica's, <StatefulSet>-<ordinal>) is its
                // replica name; its StatefulSet's name ends with the shard it serves.
                let ordinal = config.cluster.replica.strip_prefix(&format!("{name}-"));
                assert!(
                    ordinal.is_some_and(|o| o.parse::<u32>().is_ok()),
                    "{name}: the replica {:?} is not named by the pod",
                    config.cluster.replica
                );
                assert_eq!(
                    name.rsplit('-').next().unwrap(),
                    config.cluster.shard.to_string(),
                    "{name}"
                );
                served.push(config.cluster.shard);
            }
            other => panic!("{name}: unknown role {other}"),
        }
    }
    assert_eq!(encoders, 1, "one encoder Deployment");
    served.sort();
    assert_eq!(
        served,
        (0..shards).collect::<Vec<_>>(),
        "one StatefulSet per shard"
    );

    let nats_conf = dir.join("nats.conf");
    let pod = std::fs::read_to_string(dir.join("nats-pod-name")).unwrap();
    run(Command::new("nats-server")
        .arg("-t")
        .arg("-c")
        .arg(&nats_conf)
        .env("POD_NAME", pod.trim()));
    // The check can fail: without the variable the configuration names, nats-server refuses it.
    let status = Command::new("nats-server")
        .arg("-t")
        .arg("-c")
        .arg(&nats_conf)
        .env_remove("POD_NAME")
        .output()
        .expect("nats-server starts (`make deps-apt`)")
        .status;
    assert!(
        !status.success(),
        "nats-server accepted server_name without POD_NAME"
    );
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
        let config = load_rendered(profile, &dir, &help);
        let expected = if profile == "gpu" {
            ExecutionProvider::Cuda
        } else {
            ExecutionProvider::Cpu
        };
        if profile == "cluster" {
            // The routers run no encoder; the shards' provider is checked with their roles.
            check_cluster_roles(&dir, &config, &help);
        } else {
            assert_eq!(config.encoder.execution_provider, expected, "{profile}");
        }
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
