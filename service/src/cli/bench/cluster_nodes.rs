//! The processes of `diptych bench cluster`, all from this binary on this machine: NATS
//! JetStream, one replica of each shard on its own data folder, one router in front of them, and
//! a single node to compare with. Every process is killed when its value is dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::procs::{self, Proc};

/// A `diptych serve` process and where it listens.
pub struct Node {
    /// The process.
    pub process: Proc,
    /// Its gRPC address, HOST:PORT.
    pub grpc: String,
    /// Its DICOM port, when it has a listener.
    pub dicom_port: Option<u16>,
}

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The model bundle of every role.
    pub model: PathBuf,
    /// Configuration files and logs go here.
    pub dir: PathBuf,
    /// One data folder per shard, in shard order.
    pub shard_dirs: Vec<PathBuf>,
    /// `nats-server` processes (one JetStream cluster when more than one).
    pub nats_nodes: usize,
    /// `[cluster] stream_replicas`: copies of the ingest stream (at most `nats_nodes`).
    pub stream_replicas: usize,
    /// Whether the router takes DICOM.
    pub dicom: bool,
}

/// A running cluster.
pub struct Cluster {
    /// The router.
    pub router: Node,
    /// One replica of each shard, in shard order.
    pub shards: Vec<Node>,
    /// The NATS servers, held so that they stop with the cluster (dropped last).
    _nats: Vec<Proc>,
}

/// The `[cluster]` section of a shard.
pub fn shard_config(nats_url: &str, shards: usize, shard: usize, stream_replicas: usize) -> String {
    format!(
        "[cluster]\nrole = \"shard\"\nnats_url = \"{nats_url}\"\nshards = {shards}\n\
         shard = {shard}\nreplica = \"a\"\nstream_replicas = {stream_replicas}\n"
    )
}

/// The `[cluster]` section of a router over the shards at `shard_grpc` (HOST:PORT each).
pub fn router_config(nats_url: &str, shard_grpc: &[String], stream_replicas: usize) -> String {
    let addrs: Vec<String> = shard_grpc
        .iter()
        .map(|a| format!("\"http://{a}\""))
        .collect();
    format!(
        "[cluster]\nrole = \"router\"\nnats_url = \"{nats_url}\"\nshards = {}\n\
         stream_replicas = {stream_replicas}\nshard_addrs = [{}]\n",
        shard_grpc.len(),
        addrs.join(", ")
    )
}

const START_LIMIT: Duration = Duration::from_secs(300);

/// Starts NATS, the shards and the router; returns once every role is SERVING.
pub async fn start_cluster(spec: &ClusterSpec) -> anyhow::Result<Cluster> {
    std::fs::create_dir_all(&spec.dir)?;
    let (nats, url) = procs::start_nats(&spec.dir.join("nats"), spec.nats_nodes)?;
    let count = spec.shard_dirs.len();
    let started = Instant::now();
    let mut shards = Vec::with_capacity(count);
    for (i, data) in spec.shard_dirs.iter().enumerate() {
        let config = spec.dir.join(format!("shard-{i}.toml"));
        std::fs::write(&config, shard_config(&url, count, i, spec.stream_replicas))?;
        let grpc = procs::free_addr()?;
        let process = procs::start_serve(
            &format!("shard {i}"),
            &spec.model,
            data,
            &grpc,
            &["--config", &config.display().to_string(), "--no-dicom"],
            Some(&spec.dir.join(format!("shard-{i}.log"))),
        )?;
        shards.push(Node {
            process,
            grpc,
            dicom_port: None,
        });
    }
    let shard_grpc: Vec<String> = shards.iter().map(|s| s.grpc.clone()).collect();
    let config = spec.dir.join("router.toml");
    std::fs::write(
        &config,
        router_config(&url, &shard_grpc, spec.stream_replicas),
    )?;
    let router = start_node(
        "router",
        &spec.model,
        &spec.dir.join("router-data"),
        &["--config", &config.display().to_string()],
        spec.dicom,
        &spec.dir.join("router.log"),
    )?;
    let mut cluster = Cluster {
        router,
        shards,
        _nats: nats,
    };
    for node in cluster
        .shards
        .iter_mut()
        .chain(std::iter::once(&mut cluster.router))
    {
        procs::wait_serving(&mut node.process, &node.grpc, started, START_LIMIT).await?;
    }
    Ok(cluster)
}

/// Starts `diptych serve` (a single node, or another role through `extra`) on `data`, with a
/// DICOM listener when `dicom`; does not wait.
fn start_node(
    name: &str,
    model: &Path,
    data: &Path,
    extra: &[&str],
    dicom: bool,
    log: &Path,
) -> anyhow::Result<Node> {
    let grpc = procs::free_addr()?;
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let dicom_port = if dicom {
        let addr = procs::free_addr()?;
        let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
        args.extend(["--dicom-addr".to_string(), addr]);
        port
    } else {
        args.push("--no-dicom".into());
        None
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let process = procs::start_serve(name, model, data, &grpc, &args, Some(log))?;
    Ok(Node {
        process,
        grpc,
        dicom_port,
    })
}

/// Starts a single node on `data` and waits until it is SERVING.
pub async fn start_single(
    model: &Path,
    data: &Path,
    dicom: bool,
    log: &Path,
) -> anyhow::Result<Node> {
    let started = Instant::now();
    let mut node = start_node("the single node", model, data, &[], dicom, log)?;
    procs::wait_serving(&mut node.process, &node.grpc, started, START_LIMIT).await?;
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_configurations_load_as_the_roles_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = "nats://127.0.0.1:4222";
        let shard = dir.path().join("shard.toml");
        std::fs::write(&shard, shard_config(url, 2, 1, 1)).unwrap();
        let router = dir.path().join("router.toml");
        let addrs = ["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        std::fs::write(&router, router_config(url, &addrs, 1)).unwrap();
        for (path, role) in [
            (shard, diptych_service::config::Role::Shard),
            (router, diptych_service::config::Role::Router),
        ] {
            let config = diptych_service::config::Config::load(
                &diptych_service::config::Overrides {
                    config: Some(path.clone()),
                    ..Default::default()
                },
                |_| None,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(config.cluster.role, role);
            assert_eq!(config.cluster.shards, 2);
        }
    }
}
