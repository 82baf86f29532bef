//! The cluster of the cluster tests (service/tests/cluster.rs, cluster_faults.rs): three
//! `nats-server` processes as a JetStream cluster on loopback, one encoder, shards and routers
//! from the built binary (the shards and routers encode through the encoder), phantom studies
//! written as DICOM files and sent with storescu, and the search helpers that compare answers. The including test declares `mod serve` (support/serve.rs) and
//! `mod nats` (support/nats.rs) beside this module.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::{
    GetIndexStatsRequest, Grouping, ImageInput, Query, SearchHit, SearchMode, SearchRequest,
    SearchResponse, SliceRef, image_input, query,
};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};

use crate::nats::NatsCluster;
use crate::serve::{Server, channel, free_port};

/// One test at a time: each runs eight processes on a small machine.
pub static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The SOP Instance UID of slice `j` of study `s`.
pub fn sop(s: u64, j: u64) -> String {
    format!("2.25.9{s:03}{j:03}")
}

/// The Study Instance UID of study `s`.
pub fn study(s: u64) -> String {
    format!("2.25.8{s:03}")
}

/// Studies `0..studies` of `slices` files each (see [`write_study`]) in `dir`, and a single node
/// with `--no-dicom` on `dir/single` to compare the cluster with: the folders, the node's gRPC
/// address and the node.
pub fn studies_and_single_node(
    dir: &Path,
    studies: u64,
    slices: u64,
) -> (Vec<PathBuf>, String, Server) {
    let folders = (0..studies).map(|s| write_study(dir, s, slices)).collect();
    let addr = format!("127.0.0.1:{}", free_port());
    let single = Server::start(
        &dir.join("single"),
        &addr,
        &["--no-dicom"],
        dir.join("single.log"),
    );
    (folders, addr, single)
}

/// Study `s` as `slices` phantom files in a folder of its own. Neighbouring studies share
/// phantom slices (slice j of study s is phantom slice 2s + j), so equal distances between
/// different records are common and ties must be broken alike. Even studies are "alpha", odd
/// ones "beta" (series description), for the filter; patient `PAT-<s / 3>`.
pub fn write_study(dir: &Path, s: u64, slices: u64) -> PathBuf {
    let folder = dir.join(format!("study{s:03}"));
    std::fs::create_dir_all(&folder).unwrap();
    let generator = PhantomGenerator::new(7, PhantomConfig::default());
    for j in 0..slices {
        let slice = generator.slice(2 * s + j);
        let mut instance = SyntheticInstance::from_phantom(&slice);
        if let StoredSamples::U16(samples) = &instance.samples {
            instance.samples = StoredSamples::U16(samples.iter().map(|&v| v.min(4095)).collect());
        }
        instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop(s, j));
        instance.set(tags::STUDY_INSTANCE_UID, VR::UI, study(s));
        instance.set(tags::SERIES_INSTANCE_UID, VR::UI, format!("{}.1", study(s)));
        let description = if s.is_multiple_of(2) { "alpha" } else { "beta" };
        instance.set(tags::SERIES_DESCRIPTION, VR::LO, description.to_string());
        // Three studies per patient, so that a patient's studies may sit on several shards.
        instance.set(tags::PATIENT_ID, VR::LO, format!("PAT-{}", s / 3));
        let mut object = instance.object();
        object.put(dicom_core::DataElement::new(
            tags::BITS_STORED,
            VR::US,
            dicom_core::PrimitiveValue::from(12u16),
        ));
        object.put(dicom_core::DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            dicom_core::PrimitiveValue::from(11u16),
        ));
        object
            .write_to_file(folder.join(format!("{j:03}.dcm")))
            .unwrap();
    }
    folder
}

/// Sends every file of `folder` (in name order) with storescu to `port`; panics unless all
/// were acknowledged.
pub fn storescu(folder: &Path, port: u16) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let output = Command::new("storescu")
        .args(["-v", "-aet", "STORESCU", "-aec", "DIPTYCH", "127.0.0.1"])
        .arg(port.to_string())
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("storescu did not start ({e}); run `make deps-apt` (dcmtk)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let successes = text.matches("Received Store Response (Success)").count();
    assert!(
        output.status.success() && successes == files.len(),
        "storescu to port {port}: {successes} of {} acknowledged:\n{text}",
        files.len()
    );
}

/// The records of the servers at `addrs` together, once nothing is pending there.
pub async fn indexed_records(addrs: &[String]) -> u64 {
    let mut total = 0;
    for addr in addrs {
        let stats = InfoServiceClient::new(channel(addr).await)
            .get_index_stats(GetIndexStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        if stats.pending > 0 {
            return 0;
        }
        total += stats.records;
    }
    total
}

/// Waits until the servers at `addrs` hold `records` records together.
pub async fn wait_records(addrs: &[String], records: u64, what: &str) {
    let started = Instant::now();
    loop {
        let now = indexed_records(addrs).await;
        if now == records {
            return;
        }
        assert!(
            now < records,
            "{what}: {now} records, more than the {records} sent"
        );
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{what}: {now} of {records} records after 180 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn request(
    query_sop: &str,
    mode: SearchMode,
    filter: &str,
    grouping: Grouping,
) -> SearchRequest {
    SearchRequest {
        query: Some(Query {
            source: Some(query::Source::Indexed(SliceRef {
                sop_instance_uid: query_sop.to_string(),
                frame: 0,
            })),
        }),
        mode: mode as i32,
        filter: filter.to_string(),
        top_k: 15,
        grouping: grouping as i32,
        exclude_query: grouping == Grouping::Instance,
        ..SearchRequest::default()
    }
}

/// What must be identical between two hits: rank, slice, study, distances and group size.
pub fn hit_essence(h: &SearchHit) -> String {
    let slice = h.slice.clone().unwrap_or_default();
    format!(
        "#{} {}/{} study {} d={:?} dn={:?} da={:?} n={}",
        h.rank,
        slice.sop_instance_uid,
        slice.frame,
        h.study_instance_uid,
        h.distance,
        h.normal_distance,
        h.abnormal_distance,
        h.group_slices
    )
}

/// What must be identical between two answers: every hit ([`hit_essence`]) and the counts.
pub fn essence(response: &SearchResponse) -> (Vec<String>, u64, u64, bool, String) {
    (
        response.hits.iter().map(hit_essence).collect(),
        response.records_matched,
        response.records_total,
        response.exact,
        response.model_id.clone(),
    )
}

/// A query image: a phantom slice that no study of the tests holds.
pub fn phantom_image() -> ImageInput {
    let slice = PhantomGenerator::new(11, PhantomConfig::default()).slice(3);
    let mut instance = SyntheticInstance::from_phantom(&slice);
    if let StoredSamples::U16(samples) = &instance.samples {
        instance.samples = StoredSamples::U16(samples.iter().map(|&v| v.min(4095)).collect());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("query.dcm");
    instance.object().write_to_file(&path).unwrap();
    ImageInput {
        source: Some(image_input::Source::Dicom(std::fs::read(&path).unwrap())),
        frame: 0,
    }
}

/// Writes a TOML configuration file for a cluster role.
pub fn cluster_config(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, body).unwrap();
    path.to_path_buf()
}

/// The processes of a test cluster, killed when dropped.
pub struct Cluster {
    pub nats: NatsCluster,
    pub shards: Vec<Server>,
    pub shard_addrs: Vec<String>,
    pub shard_configs: Vec<PathBuf>,
    pub routers: Vec<(Server, String, u16)>,
    /// The encoder role every shard and router names in `[encoder] remote_url`.
    pub encoder: Server,
    /// Its gRPC address.
    pub encoder_addr: String,
    /// Its configuration file (to start it again on the same ports).
    pub encoder_config: PathBuf,
    /// The folder of every process's files.
    pub dir: PathBuf,
}

/// Kills `server` with SIGKILL and reaps it.
pub fn kill(server: &mut Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

impl Cluster {
    /// The data folder of shard replica `at` (replica `at / 2` of shard `at % 2`).
    pub fn shard_data(&self, at: usize) -> PathBuf {
        self.dir.join(shard_name(at))
    }

    /// Starts shard replica `at` again on its address, configuration and data folder (which
    /// may have been emptied), its log in `<name>-<log>.log`; waits until it serves.
    pub fn restart_shard(&mut self, at: usize, log: &str) {
        let config = self.shard_configs[at].display().to_string();
        self.shards[at] = Server::start(
            &self.shard_data(at),
            &self.shard_addrs[at],
            &["--config", &config],
            self.dir.join(format!("{}-{log}.log", shard_name(at))),
        );
    }

    /// Starts the encoder again on its ports, its log in `encoder-<log>.log`; waits until it
    /// serves.
    pub fn restart_encoder(&mut self, log: &str) {
        let http = self.encoder.http_addr.clone();
        self.encoder = start_encoder(
            &self.dir,
            &self.encoder_addr,
            &http,
            &self.encoder_config,
            log,
        );
    }
}

/// Shard replica `at`'s name: `shard<i><r>`, replica r (a, b, ...) of shard i.
fn shard_name(at: usize) -> String {
    format!("shard{}{}", at % 2, (b'a' + (at / 2) as u8) as char)
}

/// The encoder role on gRPC `addr` and HTTP `http` (the `[http] addr` of `config`), its log in
/// `encoder-<log>.log`.
fn start_encoder(dir: &Path, addr: &str, http: &str, config: &Path, log: &str) -> Server {
    let config = config.display().to_string();
    Server::start(
        &dir.join("encoder"),
        addr,
        &["--config", &config, "--http-addr", http],
        dir.join(format!("encoder-{log}.log")),
    )
}

/// NATS, one encoder, two shards of `replicas` replicas each (named a, b, ...) and two routers
/// under `dir`, every shard and router encoding through the encoder. `shards`, `shard_addrs`
/// and `shard_configs` list replica r of shard i at `2 * r + i`; router 0 tries the replicas of
/// a shard in order a, b, ..., router 1 in the reverse order, so that with two replicas the
/// routers' answers come from different replicas.
pub fn start_cluster(dir: &Path, replicas: usize) -> Cluster {
    let nats = NatsCluster::start(dir, 3);
    let url = nats.url();
    // The encoder first: a shard checks the encoder's model when it warms up. Its HTTP port is
    // a free one of its own (the default 0.0.0.0:8080 would collide between processes).
    let encoder_addr = format!("127.0.0.1:{}", free_port());
    let encoder_http = format!("127.0.0.1:{}", free_port());
    let encoder_config = cluster_config(
        &dir.join("encoder.toml"),
        &format!("[cluster]\nrole = \"encoder\"\n[http]\naddr = \"{encoder_http}\"\n"),
    );
    let encoder = start_encoder(dir, &encoder_addr, &encoder_http, &encoder_config, "first");
    let remote = format!("[encoder]\nremote_url = \"http://{encoder_addr}\"\n");
    let shard_addrs: Vec<String> = (0..2 * replicas)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut shards = Vec::new();
    let mut shard_configs = Vec::new();
    for (at, addr) in shard_addrs.iter().enumerate() {
        let (i, name) = (at % 2, (b'a' + (at / 2) as u8) as char);
        let config = cluster_config(
            &dir.join(format!("{}.toml", shard_name(at))),
            &format!(
                "[cluster]\nrole = \"shard\"\nnats_url = \"{url}\"\nshards = 2\nshard = {i}\n\
                 replica = \"{name}\"\nstream_replicas = 3\n{remote}"
            ),
        );
        let config_arg = config.display().to_string();
        shards.push(Server::start(
            &dir.join(shard_name(at)),
            addr,
            &["--config", &config_arg],
            dir.join(format!("{}.log", shard_name(at))),
        ));
        shard_configs.push(config);
    }
    let mut routers = Vec::new();
    for router in 0..2 {
        let addr = format!("127.0.0.1:{}", free_port());
        let dicom_port = free_port();
        let entries: Vec<String> = (0..2)
            .map(|i| {
                let mut order: Vec<String> = (0..replicas)
                    .map(|r| format!("http://{}", shard_addrs[2 * r + i]))
                    .collect();
                if router == 1 {
                    order.reverse();
                }
                format!("\"{}\"", order.join("|"))
            })
            .collect();
        let config = cluster_config(
            &dir.join(format!("router{router}.toml")),
            &format!(
                "[cluster]\nrole = \"router\"\nnats_url = \"{url}\"\nshards = 2\n\
                 stream_replicas = 3\nshard_addrs = [{}]\n{remote}",
                entries.join(", ")
            ),
        );
        let (config_arg, dicom_arg) = (
            config.display().to_string(),
            format!("127.0.0.1:{dicom_port}"),
        );
        let server = Server::start(
            &dir.join(format!("router{router}")),
            &addr,
            &["--config", &config_arg, "--dicom-addr", &dicom_arg],
            dir.join(format!("router{router}.log")),
        );
        routers.push((server, addr, dicom_port));
    }
    Cluster {
        nats,
        shards,
        shard_addrs,
        shard_configs,
        routers,
        encoder,
        encoder_addr,
        encoder_config,
        dir: dir.to_path_buf(),
    }
}
