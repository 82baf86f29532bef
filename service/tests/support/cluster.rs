//! The cluster of the cluster tests (service/tests/cluster.rs, cluster_faults.rs): three
//! `nats-server` processes as a JetStream cluster on loopback, shards and routers from the built
//! binary, phantom studies written as DICOM files and sent with storescu, and the search helpers
//! that compare answers. The including test declares `mod serve` (support/serve.rs) and
//! `mod nats` (support/nats.rs) beside this module.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::{
    GetIndexStatsRequest, Grouping, Query, SearchMode, SearchRequest, SearchResponse, SliceRef,
    query,
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

/// What must be identical between two answers: every hit's rank, slice, study, distances and
/// group size, and the counts.
pub fn essence(response: &SearchResponse) -> (Vec<String>, u64, u64, bool, String) {
    let hits = response
        .hits
        .iter()
        .map(|h| {
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
        })
        .collect();
    (
        hits,
        response.records_matched,
        response.records_total,
        response.exact,
        response.model_id.clone(),
    )
}

/// Writes a TOML configuration file for a cluster role.
pub fn cluster_config(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, body).unwrap();
    path.to_path_buf()
}

pub struct Cluster {
    pub nats: NatsCluster,
    pub shards: Vec<Server>,
    pub shard_addrs: Vec<String>,
    pub shard_configs: Vec<PathBuf>,
    pub routers: Vec<(Server, String, u16)>,
}

/// NATS, two shards of `replicas` replicas each (named a, b, ...) and two routers under `dir`.
/// `shards`, `shard_addrs` and `shard_configs` list replica r of shard i at `2 * r + i`; router
/// 0 tries the replicas of a shard in order a, b, ..., router 1 in the reverse order, so that
/// with two replicas the routers' answers come from different replicas.
pub fn start_cluster(dir: &Path, replicas: usize) -> Cluster {
    let nats = NatsCluster::start(dir, 3);
    let url = nats.url();
    let shard_addrs: Vec<String> = (0..2 * replicas)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut shards = Vec::new();
    let mut shard_configs = Vec::new();
    for (at, addr) in shard_addrs.iter().enumerate() {
        let (i, name) = (at % 2, (b'a' + (at / 2) as u8) as char);
        let config = cluster_config(
            &dir.join(format!("shard{i}{name}.toml")),
            &format!(
                "[cluster]\nrole = \"shard\"\nnats_url = \"{url}\"\nshards = 2\nshard = {i}\n\
                 replica = \"{name}\"\nstream_replicas = 3\n"
            ),
        );
        let config_arg = config.display().to_string();
        shards.push(Server::start(
            &dir.join(format!("shard{i}{name}")),
            addr,
            &["--config", &config_arg],
            dir.join(format!("shard{i}{name}.log")),
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
                 stream_replicas = 3\nshard_addrs = [{}]\n",
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
    }
}
