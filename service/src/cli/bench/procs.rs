//! The processes the server benchmarks start from the built binary — `diptych serve` in any
//! role, and Debian's `nats-server` — each killed when dropped, its log in a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    child: Child,
    /// What it is, for messages.
    pub name: String,
    /// Its stderr (None when discarded).
    pub log: Option<PathBuf>,
}

impl Proc {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 20 lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// An error unless it still runs.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited with {status}; its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address, `127.0.0.1:PORT`.
pub fn free_addr() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

/// Starts `diptych serve` (this binary) with `model` on `data`, its gRPC port on `grpc_addr`, the
/// CPU provider, an HTTP port of its own and `extra` arguments; stderr into `log` (discarded
/// when None), `RUST_LOG=warn`. Does not wait: see [`wait_serving`].
pub fn start_serve(
    name: &str,
    model: &Path,
    data: &Path,
    grpc_addr: &str,
    extra: &[&str],
    log: Option<&Path>,
) -> anyhow::Result<Proc> {
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--model")
        .arg(model)
        .arg("--data-dir")
        .arg(data)
        .args(["--grpc-addr", grpc_addr, "--http-addr", "127.0.0.1:0"])
        .args(["--execution-provider", "cpu"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting diptych serve ({name})"))?;
    Ok(Proc {
        child,
        name: name.to_string(),
        log: log.map(Path::to_path_buf),
    })
}

/// Polls gRPC health at `grpc_addr` until it says SERVING; returns the seconds since
/// `started`. Fails when the process exits or `limit` passes.
pub async fn wait_serving(
    process: &mut Proc,
    grpc_addr: &str,
    started: Instant,
    limit: Duration,
) -> anyhow::Result<f64> {
    let url = format!("http://{grpc_addr}");
    loop {
        process.check_alive()?;
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await
        {
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await;
            if answer.is_ok_and(|a| a.into_inner().status == 1) {
                return Ok(started.elapsed().as_secs_f64());
            }
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "{} was not SERVING after {limit:?}; its log ends:\n{}",
            process.name,
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain-HTTP/2 gRPC channel to `addr` (HOST:PORT).
pub async fn channel(addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// `nodes` `nats-server` processes with JetStream under `dir`, routed to each other as one
/// cluster when there are several; returns them and the client URLs (the `[cluster] nats_url`
/// form) once every client port accepts connections.
pub fn start_nats(dir: &Path, nodes: usize) -> anyhow::Result<(Vec<Proc>, String)> {
    std::fs::create_dir_all(dir)?;
    // Held together until all are chosen, so that no two are the same.
    let held: Vec<std::net::TcpListener> = (0..2 * nodes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let ports: Vec<(u16, u16)> = held
        .chunks(2)
        .map(|pair| -> std::io::Result<(u16, u16)> {
            Ok((pair[0].local_addr()?.port(), pair[1].local_addr()?.port()))
        })
        .collect::<Result<_, _>>()?;
    drop(held);
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, cluster)| format!("\"nats-route://127.0.0.1:{cluster}\""))
        .collect();
    let mut procs = Vec::new();
    for (i, (client, cluster)) in ports.iter().enumerate() {
        let store = dir.join(format!("nats-{i}"));
        std::fs::create_dir_all(&store)?;
        let cluster_block = if nodes > 1 {
            format!(
                "cluster {{\n  name: diptych-bench\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [{}]\n}}\n",
                routes.join(", ")
            )
        } else {
            String::new()
        };
        let config = dir.join(format!("nats-{i}.conf"));
        std::fs::write(
            &config,
            format!(
                "server_name: n{i}\nlisten: \"127.0.0.1:{client}\"\nmax_payload: 8388608\n\
                 jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 67108864\n  \
                 max_file_store: 4294967296\n}}\n{cluster_block}",
                store.display()
            ),
        )?;
        let log = dir.join(format!("nats-{i}.log"));
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context(
                "nats-server did not start; install it with `make deps-apt` (Debian's nats-server)",
            )?;
        procs.push(Proc {
            child,
            name: format!("nats-server {i}"),
            log: Some(log),
        });
    }
    for (process, (client, _)) in procs.iter_mut().zip(&ports) {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", *client)).is_err() {
            process.check_alive()?;
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(20),
                "{} did not listen on {client}; its log ends:\n{}",
                process.name,
                process.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let url = ports
        .iter()
        .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok((procs, url))
}
