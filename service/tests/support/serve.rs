//! A `diptych serve` process for end-to-end tests: the bundle under test, the Python venv, a
//! free port, and waiting for gRPC health to say SERVING.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::{GetIndexStatsRequest, IndexStats};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The model bundle under test, or a panic that says how to get one.
pub fn test_bundle() -> PathBuf {
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

pub fn python() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    let python = PathBuf::from(home).join(".cache/diptych/py-venv/bin/python");
    assert!(
        python.is_file(),
        "no Python venv at {}: create it with `make deps-py`",
        python.display()
    );
    python
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process; killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its stderr, captured.
    pub log: PathBuf,
    /// Its HTTP port's address (/metrics, /healthz, /readyz).
    pub http_addr: String,
}

impl Server {
    /// The last 40 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends SIGTERM and waits for the process to exit, at most 30 s (else the test fails with
    /// the log's tail, naming `what`); returns its exit status.
    pub fn terminate(&mut self, what: &str) -> std::process::ExitStatus {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let signalled = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                signalled.elapsed() < Duration::from_secs(30),
                "{what} did not stop within 30 s of SIGTERM:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the health probe reaches a server with TLS on its gRPC port: the CA that signed the
/// server's certificate (which names `localhost`), and a client certificate and key when the
/// server requires one.
pub struct ProbeTls {
    pub ca_pem: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Polls gRPC health until the server reports SERVING, failing early if the process exits.
fn wait_until_serving(server: &mut Server, addr: &str, tls: Option<&ProbeTls>, limit: Duration) {
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
            let channel = match tls {
                None => tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?,
                Some(tls) => {
                    let mut config = tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem))
                        .domain_name("localhost");
                    if let Some((cert, key)) = &tls.identity {
                        config = config.identity(tonic::transport::Identity::from_pem(cert, key));
                    }
                    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                        .ok()?
                        .tls_config(config)
                        .ok()?
                }
            }
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

impl Server {
    /// Starts `diptych serve` on the bundle under test with `data_dir`, the CPU provider, the
    /// given gRPC address, the HTTP port on a free local port (unless `extra` names one) and
    /// extra arguments; waits until it is SERVING.
    pub fn start(data_dir: &Path, addr: &str, extra: &[&str], log: PathBuf) -> Server {
        Self::start_with(data_dir, addr, extra, log, &[], None)
    }

    /// [`Server::start`] with environment variables for the process (after `RUST_LOG=info`, so
    /// they may replace it) and, for a TLS port, how the health probe connects. A listen
    /// address of 0.0.0.0 is probed on 127.0.0.1.
    pub fn start_with(
        data_dir: &Path,
        addr: &str,
        extra: &[&str],
        log: PathBuf,
        env: &[(&str, &str)],
        tls: Option<&ProbeTls>,
    ) -> Server {
        Self::start_model(&test_bundle(), data_dir, addr, extra, log, env, tls)
    }

    /// [`Server::start_with`] serving the bundle in `model` instead of the one under test.
    pub fn start_model(
        model: &Path,
        data_dir: &Path,
        addr: &str,
        extra: &[&str],
        log: PathBuf,
        env: &[(&str, &str)],
        tls: Option<&ProbeTls>,
    ) -> Server {
        let http_addr = match extra.iter().position(|a| *a == "--http-addr") {
            Some(i) => extra[i + 1].to_string(),
            None => format!("127.0.0.1:{}", free_port()),
        };
        let http = if extra.contains(&"--http-addr") {
            Vec::new()
        } else {
            vec!["--http-addr", http_addr.as_str()]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_diptych"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--grpc-addr", addr, "--execution-provider", "cpu"])
            .args(&http)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting diptych serve");
        let mut server = Server {
            child,
            log,
            http_addr,
        };
        let probe = addr.replace("0.0.0.0:", "127.0.0.1:");
        wait_until_serving(&mut server, &probe, tls, Duration::from_secs(180));
        server
    }
}

/// The index statistics of the server at `addr` once nothing is pending (at most 60 s).
pub fn settled_stats(addr: &str) -> IndexStats {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut info = InfoServiceClient::new(channel);
        let started = Instant::now();
        loop {
            let stats = info
                .get_index_stats(GetIndexStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            if stats.pending == 0 {
                return stats;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{stats:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// The tokio runtime end-to-end tests drive their gRPC clients on: two worker threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A plain-HTTP/2 gRPC channel to `addr` (HOST:PORT).
pub async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One HTTP/1.1 request to `addr` (`Connection: close`, a 30 s read timeout) with the header
/// lines `headers` and `body` (sized); the whole answer as it came, head and body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("HTTP {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A GET asking for `accept`: the status, the head lower-cased, and the body.
pub fn http_get(addr: &str, path: &str, accept: &str) -> (u16, String, String) {
    let answer = http_request(addr, "GET", path, &[("Accept", accept)], &[]);
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}
