//! The `diptych` client commands against a secured server (issue #11): `diptych serve` with gRPC
//! TLS and a tokens file, driven by the real `diptych ingest|search|stats|delete` processes over
//! https:// — with the token and the CA they work; without the token, with a wrong one, without
//! the CA or over http:// they fail with a message that says what to pass; a search token cannot
//! delete; under mutual TLS a client certificate is the credential. No token is ever echoed.

use std::path::Path;
use std::process::Command;

#[path = "support/certs.rs"]
mod certs;
#[path = "support/secured.rs"]
mod secured;
#[path = "support/serve.rs"]
mod serve;
use secured::token;
use serve::{ProbeTls, Server, free_port};

/// Runs `diptych ARGS` with `env` (and no DIPTYCH_* or SSL_CERT_FILE of the test's own
/// environment); its success and its stdout and stderr together.
fn diptych<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(args)
        .env_remove("DIPTYCH_TOKEN")
        .env_remove("DIPTYCH_SERVER")
        .env_remove("SSL_CERT_FILE")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("running diptych");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate
/// `gateway.example`, all signed by it.
fn certificates(dir: &Path) {
    certs::ca(dir, "ca");
    certs::leaf(dir, "server", "localhost", "serverAuth", "ca");
    certs::leaf(dir, "client", "gateway.example", "clientAuth", "ca");
}

#[test]
fn the_cli_speaks_tls_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (dicom, patient) = secured::dicom_file(dir.path());
    let dicom = dicom.to_str().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (search, admin, wrong) = (token(), token(), token());
    let tokens_file = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens_file,
        format!(
            "[[caller]]\nname = \"viewer\"\nrole = \"search\"\ntoken = \"{search}\"\n\n\
             [[caller]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{admin}\"\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(
        &dir.path().join("data"),
        &addr,
        &["--no-dicom", "--tokens-file", tokens_file.to_str().unwrap()],
        dir.path().join("serve.log"),
        &[
            ("DIPTYCH_GRPC_TLS_CERT", &file("server.crt")),
            ("DIPTYCH_GRPC_TLS_KEY", &file("server.key")),
        ],
        Some(&ProbeTls {
            ca_pem: std::fs::read(dir.path().join("ca.crt")).unwrap(),
            identity: None,
        }),
    );
    let url = format!("https://{addr}");
    let ca = file("ca.crt");
    let secure = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        args.extend([
            "--server".into(),
            url.clone(),
            "--ca-cert".into(),
            ca.clone(),
        ]);
        args
    };
    let no_token_echoed = |out: &str| {
        for secret in [&search, &admin, &wrong] {
            assert!(!out.contains(secret.as_str()), "a token was echoed:\n{out}");
        }
    };

    // With the token and the CA: ingest (admin), search (search role), stats from DIPTYCH_TOKEN.
    let (ok, out) = diptych(&secure(&["ingest", dicom, "--token", &admin]), &[]);
    assert!(
        ok && out.contains("indexed 1 instances"),
        "ingest:\n{out}\n{}",
        server.log_tail()
    );
    // Indexing is asynchronous: stats (token from DIPTYCH_TOKEN) until the slice is in.
    let started = std::time::Instant::now();
    loop {
        let (ok, out) = diptych(&secure(&["stats"]), &[("DIPTYCH_TOKEN", &admin)]);
        assert!(ok, "stats by DIPTYCH_TOKEN:\n{out}");
        if out.contains("instances        1") && out.contains("pending          0") {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "the slice was not indexed:\n{out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (ok, out) = diptych(&secure(&["search", dicom, "--token", &search]), &[]);
    assert!(
        ok && out.contains("1 of 1 records matched"),
        "search:\n{out}"
    );
    // The flag wins over the environment.
    let (ok, out) = diptych(
        &secure(&["stats", "--token", &admin]),
        &[("DIPTYCH_TOKEN", &wrong)],
    );
    assert!(ok, "--token wins over DIPTYCH_TOKEN:\n{out}");
    no_token_echoed(&out);

    // Without a token, with a wrong one: UNAUTHENTICATED, and what to pass.
    let (ok, out) = diptych(&secure(&["stats"]), &[]);
    assert!(
        !ok && out.contains("pass --token or set DIPTYCH_TOKEN"),
        "no token:\n{out}"
    );
    let (ok, out) = diptych(&secure(&["search", dicom]), &[("DIPTYCH_TOKEN", &wrong)]);
    assert!(
        !ok && out.contains("not authenticated") && out.contains("--token"),
        "wrong token:\n{out}"
    );
    no_token_echoed(&out);

    // A search token cannot delete: the role needed is named, and nothing is deleted.
    let (ok, out) = diptych(
        &secure(&["delete", "--patient", &patient, "--token", &search]),
        &[],
    );
    assert!(
        !ok && out.contains("permission denied") && out.contains("role admin"),
        "delete with a search token:\n{out}"
    );
    no_token_echoed(&out);
    let (_, out) = diptych(&secure(&["stats", "--token", &admin]), &[]);
    assert!(
        out.contains("instances        1"),
        "nothing was deleted:\n{out}"
    );

    // Without the CA (the system bundle does not know the test CA), and over plain http://.
    let (ok, out) = diptych(&["stats", "--server", &url, "--token", &admin], &[]);
    assert!(
        !ok && out.contains("over TLS") && out.contains("--ca-cert"),
        "without the CA:\n{out}"
    );
    let (ok, out) = diptych(
        &[
            "stats",
            "--server",
            &format!("http://{addr}"),
            "--token",
            &admin,
        ],
        &[],
    );
    assert!(
        !ok && out.contains("https://"),
        "http:// to a TLS port:\n{out}"
    );
    no_token_echoed(&out);

    // `diptych admin` takes the same options, after its nested subcommand too: the admin token
    // changes the DICOM peers, a search token is told which role it lacks.
    let (ok, out) = diptych(
        &secure(&[
            "admin", "peers", "add", "CT1", "--host", "10.0.0.5", "--token", &admin,
        ]),
        &[],
    );
    assert!(ok, "admin peers add by admin:\n{out}");
    let (ok, out) = diptych(
        &secure(&["admin", "peers", "list"]),
        &[("DIPTYCH_TOKEN", &admin)],
    );
    assert!(
        ok && out.contains("CT1@10.0.0.5"),
        "admin peers list:\n{out}"
    );
    let (ok, out) = diptych(
        &secure(&[
            "admin", "peers", "remove", "CT1", "--host", "10.0.0.5", "--token", &search,
        ]),
        &[],
    );
    assert!(
        !ok && out.contains("permission denied") && out.contains("role admin"),
        "admin peers remove by a search token:\n{out}"
    );
    no_token_echoed(&out);

    // The admin token deletes.
    let (ok, out) = diptych(
        &secure(&["delete", "--patient", &patient, "--token", &admin]),
        &[],
    );
    assert!(
        ok && out.contains("deleted 1 records"),
        "delete by admin:\n{out}"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    no_token_echoed(&log);
}

#[test]
fn under_mutual_tls_the_client_certificate_is_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let config = dir.path().join("mtls.toml");
    // No tokens file: any certificate of the client CA may call everything.
    std::fs::write(
        &config,
        format!(
            "[grpc]\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n",
            file("server.crt"),
            file("server.key"),
            file("ca.crt"),
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(
        &dir.path().join("data"),
        &addr,
        &["--no-dicom", "--config", config.to_str().unwrap()],
        dir.path().join("serve.log"),
        &[],
        Some(&ProbeTls {
            ca_pem: read("ca.crt"),
            identity: Some((read("client.crt"), read("client.key"))),
        }),
    );
    let url = format!("https://{addr}");
    let (ca, cert, key) = (file("ca.crt"), file("client.crt"), file("client.key"));
    let (ok, out) = diptych(
        &[
            "stats",
            "--server",
            &url,
            "--ca-cert",
            &ca,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ],
        &[],
    );
    assert!(
        ok && out.contains("records (slices) 0"),
        "mTLS stats:\n{out}\n{}",
        server.log_tail()
    );
    // Without the client certificate the server ends the handshake.
    let (ok, out) = diptych(&["stats", "--server", &url, "--ca-cert", &ca], &[]);
    assert!(
        !ok && out.contains("--client-cert"),
        "without a client certificate:\n{out}"
    );
    // A certificate without its key is a usage error.
    let (ok, out) = diptych(
        &[
            "stats",
            "--server",
            &url,
            "--ca-cert",
            &ca,
            "--client-cert",
            &cert,
        ],
        &[],
    );
    assert!(
        !ok && out.contains("--client-key"),
        "certificate without key:\n{out}"
    );
}
