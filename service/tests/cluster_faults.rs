//! Issue #15, faults: the cluster of service/tests/cluster.rs (three `nats-server` processes as a
//! JetStream cluster on loopback, one encoder, two shards, two routers from the built binary)
//! loses a part with SIGKILL while storescu senders run through both routers:
//!
//! - a router: the senders go on through the other one, and the router restarted on its ports
//!   takes instances again;
//! - a shard replica: its twin answers every search exactly while it is gone, and restarted on
//!   its volume it catches up and holds what its twin holds;
//! - the NATS node that leads the ingest stream: the stream elects another leader, both routers
//!   acknowledge again while the node is still down (each router on its own, so that one that
//!   never reconnects cannot hide behind the other), and the node rejoins;
//! - the encoder: the routers go on acknowledging, nothing is indexed while it is gone (a query
//!   image cannot be encoded: UNAVAILABLE, naming the encoder), and once it is back every
//!   acknowledged instance is indexed;
//! - a shard's volume: the shard restarted on an empty data folder rebuilds from the stream and
//!   answers every search exactly as before.
//!
//! "Acknowledged" is measured on the sender side: storescu's log says, file by file, which
//! C-STORE was answered Success (0x0000); an instance that was not is sent again, through the
//! other router first. Afterwards every acknowledged instance is searchable exactly once and the
//! index holds nothing twice; searches asked during the fault either answer exactly what they
//! answer afterwards or fail UNAVAILABLE.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{GetIndexStatsRequest, Grouping, Query, SearchMode, SearchRequest, query};

#[path = "support/serve.rs"]
mod serve;
use serve::{Server, channel, runtime};
#[path = "support/nats.rs"]
mod nats;
#[path = "support/cluster.rs"]
mod support_cluster;
use support_cluster::{
    Cluster, essence, indexed_records, kill, phantom_image, request, serial, sop, start_cluster,
    study, wait_records, write_study,
};

/// The probe's answer that must not change: hits, records matched, exact.
type Stable = (Vec<String>, u64, bool);

const SLICES: u64 = 6;
/// The senders' pause between studies: the ingest lasts several seconds, so that the fault
/// (at a quarter of it) and the recovery happen while the senders still send.
const PACE: Duration = Duration::from_millis(400);

/// What the senders know: which instance each file is, and which were acknowledged.
struct Ledger {
    uid_of: BTreeMap<PathBuf, String>,
    acked: Mutex<BTreeSet<String>>,
    /// storescu runs that left an instance unacknowledged (each retried).
    failed_runs: AtomicUsize,
}

impl Ledger {
    /// Nothing acknowledged yet of the files in `uid_of`.
    fn new(uid_of: BTreeMap<PathBuf, String>) -> Ledger {
        Ledger {
            uid_of,
            acked: Mutex::new(BTreeSet::new()),
            failed_runs: AtomicUsize::new(0),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// One storescu association over `files` to the router's DICOM `port`: the files answered
/// Success, read from storescu's verbose log ("Sending file: F" … "Received Store Response
/// (Success)"), and the log. A DIMSE timeout keeps a hung publish from hanging the sender.
fn store_once(files: &[PathBuf], port: u16) -> (Vec<PathBuf>, String) {
    let output = Command::new("storescu")
        .args(["-v", "-td", "40", "-ta", "40", "-to", "10"])
        .args(["-aet", "STORESCU", "-aec", "DIPTYCH", "127.0.0.1"])
        .arg(port.to_string())
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("storescu did not start ({e}); run `make deps-apt` (dcmtk)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut acked = Vec::new();
    let mut current: Option<PathBuf> = None;
    for line in text.lines() {
        if let Some(file) = line.split_once("Sending file: ").map(|(_, f)| f.trim()) {
            current = Some(PathBuf::from(file));
        } else if line.contains("Received Store Response (Success)") {
            acked.extend(current.take());
        }
    }
    assert!(
        acked.len() < files.len() || output.status.success(),
        "storescu failed although every file was acknowledged:\n{text}"
    );
    (acked, text)
}

/// Sends every file of `folders`, one study per association, through `ports[0]`; what is not
/// acknowledged goes again through the other router, then back, until all is acknowledged or
/// two minutes pass for one study. `pace` between studies spreads the ingest over the fault.
fn send(folders: Vec<PathBuf>, ports: [u16; 2], ledger: Arc<Ledger>, pace: Duration) {
    for folder in folders {
        let mut left: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        left.sort();
        let started = Instant::now();
        let mut attempt = 0;
        let mut last_log = String::new();
        while !left.is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{} still unacknowledged after 120 s of retries; last storescu log:\n{last_log}",
                folder.display()
            );
            let (acked, log) = store_once(&left, ports[attempt % 2]);
            {
                let mut set = ledger.acked.lock().unwrap();
                for file in &acked {
                    set.insert(ledger.uid_of[file].clone());
                }
            }
            left.retain(|f| !acked.contains(f));
            if !left.is_empty() {
                ledger.failed_runs.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                last_log = log;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        std::thread::sleep(pace);
    }
}

/// Writes `studies` phantom studies under `dir`: their folders and the ledger that maps each
/// file to its SOP Instance UID.
fn corpus(dir: &Path, studies: u64) -> (Vec<PathBuf>, Arc<Ledger>) {
    let folders: Vec<PathBuf> = (0..studies).map(|s| write_study(dir, s, SLICES)).collect();
    let mut uid_of = BTreeMap::new();
    for (s, folder) in folders.iter().enumerate() {
        for j in 0..SLICES {
            uid_of.insert(folder.join(format!("{j:03}.dcm")), sop(s as u64, j));
        }
    }
    (folders, Arc::new(Ledger::new(uid_of)))
}

/// Two senders, one per router (each falling back on the other), the studies dealt between them.
fn start_senders(
    folders: &[PathBuf],
    cluster: &Cluster,
    ledger: &Arc<Ledger>,
    pace: Duration,
) -> Vec<std::thread::JoinHandle<()>> {
    let ports = [cluster.routers[0].2, cluster.routers[1].2];
    (0..2)
        .map(|k| {
            let mine: Vec<PathBuf> = folders.iter().skip(k).step_by(2).cloned().collect();
            let ledger = ledger.clone();
            std::thread::spawn(move || send(mine, [ports[k], ports[1 - k]], ledger, pace))
        })
        .collect()
}

/// Waits until `count` instances are acknowledged (or panics after a minute).
fn wait_acked(ledger: &Ledger, count: usize, what: &str) {
    let started = Instant::now();
    while ledger.acked() < count {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: only {} of {count} instances acknowledged after 60 s",
            ledger.acked()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The probe asked during a fault: the slices of study 0 most like its first slice, within
/// study 0 (which is whole before the fault), so that its answer cannot change while other
/// studies arrive.
fn probe() -> SearchRequest {
    SearchRequest {
        exclude_query: false,
        ..request(
            &sop(0, 0),
            SearchMode::Combined,
            &format!("study_instance_uid:\"{}\"", study(0)),
            Grouping::Instance,
        )
    }
}

/// The part of an answer that must not change while other studies arrive: every hit and the
/// records matched (not the records in the index).
fn stable(response: &diptych::api::v1::SearchResponse) -> Stable {
    let (hits, matched, _total, exact, _model) = essence(response);
    (hits, matched, exact)
}

/// Waits until a router answers the probe with all of study 0.
async fn wait_study_zero(addr: &str) -> Stable {
    let started = Instant::now();
    loop {
        let mut client = SearchServiceClient::new(channel(addr).await);
        if let Ok(answer) = client.search(probe()).await {
            let answer = answer.into_inner();
            if answer.records_matched == SLICES {
                return stable(&answer);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "study 0 never became searchable through {addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How the searches asked during a fault went.
#[derive(Debug, Default)]
struct DuringFault {
    exact: usize,
    unavailable: usize,
}

/// Asks the probe through every router in `addrs` for `window`: each answer must be the
/// `expected` one, exact, or fail UNAVAILABLE (a router that is gone, a shard that did not
/// answer).
async fn search_during(
    addrs: &[String],
    expected: &Stable,
    window: Duration,
) -> BTreeMap<String, DuringFault> {
    let mut outcomes: BTreeMap<String, DuringFault> = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < window {
        for addr in addrs {
            let tally = outcomes.entry(addr.clone()).or_default();
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(2));
            let answer = match endpoint.connect().await {
                Err(_) => {
                    // Nothing listens: the caller is told it cannot be served.
                    tally.unavailable += 1;
                    continue;
                }
                Ok(channel) => SearchServiceClient::new(channel).search(probe()).await,
            };
            match answer {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    assert!(
                        answer.exact,
                        "{addr}: an answer during the fault says it is not exact"
                    );
                    assert_eq!(
                        &stable(&answer),
                        expected,
                        "{addr}: an answer during the fault differs from the answer before it"
                    );
                    tally.exact += 1;
                }
                Err(status) => {
                    assert_eq!(
                        status.code(),
                        tonic::Code::Unavailable,
                        "{addr}: a search during the fault failed otherwise than UNAVAILABLE: {status:?}"
                    );
                    tally.unavailable += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outcomes
}

/// After the senders are done: every instance sent was acknowledged (the senders retry until
/// it is), every replica set (one replica of each shard) holds each exactly once, and each is
/// found exactly once by a search through `router`; the probe answers as before through every
/// router.
fn verify(cluster: &Cluster, ledger: &Ledger, router: &str, expected: &Stable) {
    let acked = ledger.acked.lock().unwrap().clone();
    let sent: BTreeSet<String> = ledger.uid_of.values().cloned().collect();
    assert_eq!(acked, sent, "every instance was acknowledged in the end");
    let total = acked.len() as u64;
    runtime().block_on(async {
        // wait_records fails as soon as the shards hold more records than were sent: a
        // duplicate anywhere.
        for (r, set) in cluster.shard_addrs.chunks(2).enumerate() {
            wait_records(set, total, &format!("replica set {r} after the fault")).await;
        }
        let mut client = SearchServiceClient::new(channel(router).await);
        for uid in &acked {
            let answer = client
                .search(SearchRequest {
                    filter: format!("sop_instance_uid:\"{uid}\""),
                    exclude_query: false,
                    ..request(uid, SearchMode::Combined, "", Grouping::Instance)
                })
                .await
                .unwrap_or_else(|s| panic!("search for {uid}: {s:?}"))
                .into_inner();
            assert_eq!(
                answer.records_matched, 1,
                "{uid} was acknowledged: searchable exactly once"
            );
            assert_eq!(
                answer.records_total, total,
                "{uid}: the index holds nothing twice"
            );
        }
        for (_, addr, _) in &cluster.routers {
            let after = SearchServiceClient::new(channel(addr).await)
                .search(probe())
                .await
                .unwrap_or_else(|s| panic!("the probe through {addr}: {s:?}"))
                .into_inner();
            assert_eq!(
                &stable(&after),
                expected,
                "{addr}: the probe answers as before the fault"
            );
        }
    });
}

/// Sends one more study through the router at DICOM `port` alone and requires it acknowledged
/// within `limit` (retrying through that router only): the router works on its own.
fn router_alone_acknowledges(dir: &Path, s: u64, port: u16, ledger: &Arc<Ledger>, limit: Duration) {
    let folder = write_study(dir, s, SLICES);
    let mut left: Vec<PathBuf> = (0..SLICES)
        .map(|j| folder.join(format!("{j:03}.dcm")))
        .collect();
    let started = Instant::now();
    let mut log = String::new();
    while !left.is_empty() {
        assert!(
            started.elapsed() < limit,
            "the router on DICOM port {port} acknowledged {} of {SLICES} within {limit:?} on its own:\n{log}",
            SLICES as usize - left.len()
        );
        let (acked, text) = store_once(&left, port);
        log = text;
        left.retain(|f| !acked.contains(f));
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let mut set = ledger.acked.lock().unwrap();
    for j in 0..SLICES {
        set.insert(sop(s, j));
    }
}

/// The ledger extended with the extra studies `range` (sent by [`router_alone_acknowledges`]).
fn expect_extra(ledger: Ledger, dir: &Path, range: std::ops::Range<u64>) -> Ledger {
    let mut uid_of = ledger.uid_of;
    for s in range {
        for j in 0..SLICES {
            uid_of.insert(
                dir.join(format!("study{s:03}")).join(format!("{j:03}.dcm")),
                sop(s, j),
            );
        }
    }
    Ledger { uid_of, ..ledger }
}

/// A fault test's cluster and its corpus; one test at a time (the guard is dropped last).
struct Scene {
    cluster: Cluster,
    ledger: Arc<Ledger>,
    folders: Vec<PathBuf>,
    /// The routers' gRPC addresses.
    addrs: Vec<String>,
    studies: u64,
    dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

/// An ingest under way: the probe's answer before the fault, and the senders.
struct Ingest {
    expected: Stable,
    senders: Vec<JoinHandle<()>>,
}

impl Ingest {
    /// Waits until the senders are done (every instance acknowledged).
    fn finish(self) {
        for sender in self.senders {
            sender.join().expect("a sender failed");
        }
    }
}

impl Scene {
    /// `studies` phantom studies of [`SLICES`] files, and a cluster of two shards of
    /// `replicas` replicas each.
    fn new(studies: u64, replicas: usize) -> Scene {
        let serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let (folders, ledger) = corpus(dir.path(), studies);
        let cluster = start_cluster(dir.path(), replicas);
        let addrs = cluster.routers.iter().map(|r| r.1.clone()).collect();
        Scene {
            cluster,
            ledger,
            folders,
            addrs,
            studies,
            dir,
            _serial: serial,
        }
    }

    /// Every instance of the corpus.
    fn total(&self) -> usize {
        (self.studies * SLICES) as usize
    }

    /// Sends study 0 alone and waits until every router finds all of it (with two replicas,
    /// each router asks another one), then starts the senders on the others at [`PACE`];
    /// returns once a quarter of the corpus is acknowledged, with the probe's answer: the one
    /// every search during and after the fault must give.
    fn ingest_until_a_quarter(&self) -> Ingest {
        let ports = [self.cluster.routers[0].2, self.cluster.routers[1].2];
        send(
            vec![self.folders[0].clone()],
            ports,
            self.ledger.clone(),
            Duration::ZERO,
        );
        let answers: Vec<Stable> = runtime().block_on(async {
            let mut answers = Vec::new();
            for addr in &self.addrs {
                answers.push(wait_study_zero(addr).await);
            }
            answers
        });
        assert_eq!(answers[0], answers[1], "the routers answer the probe alike");
        let senders = start_senders(&self.folders[1..], &self.cluster, &self.ledger, PACE);
        wait_acked(&self.ledger, self.total() / 4, "before the fault");
        Ingest {
            expected: answers[0].clone(),
            senders,
        }
    }

    /// The ledger, once the senders are done, extended with the studies after the corpus that
    /// [`router_alone_acknowledges`] sent (`extra` of them).
    fn ledger_with_extra(&mut self, extra: u64) -> Ledger {
        let ledger = std::mem::replace(&mut self.ledger, Arc::new(Ledger::new(BTreeMap::new())));
        expect_extra(
            Arc::into_inner(ledger).expect("the senders are done"),
            self.dir.path(),
            self.studies..self.studies + extra,
        )
    }
}

#[test]
fn a_router_killed_during_ingest_loses_no_acknowledged_instance() {
    let mut scene = Scene::new(30, 1);
    let ingest = scene.ingest_until_a_quarter();
    let (addrs, total) = (scene.addrs.clone(), scene.total());

    let at_kill = scene.ledger.acked();
    let (addr, dicom_port) = (
        scene.cluster.routers[0].1.clone(),
        scene.cluster.routers[0].2,
    );
    kill(&mut scene.cluster.routers[0].0);
    let during = runtime().block_on(search_during(
        &addrs,
        &ingest.expected,
        Duration::from_secs(4),
    ));
    let at_restart = scene.ledger.acked();
    assert!(
        at_restart > at_kill,
        "the senders went on through the other router: {at_kill} acknowledged at the kill, \
         {at_restart} four seconds later"
    );
    assert!(
        during[&addrs[1]].exact > 0,
        "the other router answered no search during the fault: {during:?}"
    );

    // The router back on its ports takes instances on its own.
    let dir = scene.dir.path();
    let config = dir.join("router0.toml").display().to_string();
    let dicom_arg = format!("127.0.0.1:{dicom_port}");
    scene.cluster.routers[0].0 = Server::start(
        &dir.join("router0"),
        &addr,
        &["--config", &config, "--dicom-addr", &dicom_arg],
        dir.join("router0-restarted.log"),
    );
    router_alone_acknowledges(
        dir,
        scene.studies,
        dicom_port,
        &scene.ledger,
        Duration::from_secs(30),
    );
    let expected = ingest.expected.clone();
    ingest.finish();
    eprintln!(
        "router 0 killed at {at_kill} of {total} acknowledged; {} storescu runs retried; \
         searches during the fault: {during:?}",
        scene.ledger.failed_runs.load(Ordering::Relaxed)
    );
    let ledger = scene.ledger_with_extra(1);
    verify(&scene.cluster, &ledger, &addrs[0], &expected);
}

/// The records matching the probe on the server at `addr` (a shard answers for its own).
async fn probe_matches(addr: &str) -> u64 {
    SearchServiceClient::new(channel(addr).await)
        .search(probe())
        .await
        .unwrap_or_else(|s| panic!("the probe on {addr}: {s:?}"))
        .into_inner()
        .records_matched
}

#[test]
fn a_shard_replica_killed_during_ingest_loses_nothing_while_its_twin_answers() {
    let mut scene = Scene::new(30, 2);
    let ingest = scene.ingest_until_a_quarter();
    let (addrs, total) = (scene.addrs.clone(), scene.total());

    // Replica a of the shard that holds study 0, so that every probe during the fault is
    // answered by its twin (router 0 asks replica a first, router 1 replica b).
    let cluster = &mut scene.cluster;
    let (at, taken) = runtime().block_on(async {
        let at = if probe_matches(&cluster.shard_addrs[0]).await == SLICES {
            0
        } else {
            1
        };
        assert_eq!(probe_matches(&cluster.shard_addrs[at + 2]).await, SLICES);
        (
            at,
            counts(std::slice::from_ref(&cluster.shard_addrs[at])).await,
        )
    });
    assert!(
        taken.0 + taken.1 > 0,
        "replica {at} took nothing before the kill"
    );
    let at_kill = scene.ledger.acked();
    kill(&mut cluster.shards[at]);
    let during = runtime().block_on(search_during(
        &addrs,
        &ingest.expected,
        Duration::from_secs(4),
    ));
    let at_restart = scene.ledger.acked();
    assert!(
        at_restart > at_kill,
        "the routers went on acknowledging: {at_kill} acknowledged at the kill, {at_restart} \
         four seconds later"
    );
    for (addr, tally) in &during {
        assert!(
            tally.exact > 0 && tally.unavailable == 0,
            "{addr}: with the twin up every search answers exactly: {during:?}"
        );
    }
    cluster.restart_shard(at, "restarted");
    let expected = ingest.expected.clone();
    ingest.finish();
    // The restarted replica caught up from its checkpoint and holds what its twin holds.
    let (held, twin) = runtime().block_on(async {
        for (r, set) in cluster.shard_addrs.chunks(2).enumerate() {
            wait_records(set, total as u64, &format!("replica set {r}")).await;
        }
        (
            indexed_records(std::slice::from_ref(&cluster.shard_addrs[at])).await,
            indexed_records(std::slice::from_ref(&cluster.shard_addrs[at + 2])).await,
        )
    });
    assert_eq!(
        held, twin,
        "the restarted replica holds what its twin holds"
    );
    assert!(
        held > taken.0 + taken.1,
        "the kill came mid-ingest: replica {at} had {taken:?} (records, pending) then, {held} now"
    );
    eprintln!(
        "shard {at} replica a killed at {at_kill} of {total} acknowledged, holding {taken:?} \
         (records, pending), {held} after its restart; {} storescu runs retried; searches \
         during the fault: {during:?}",
        scene.ledger.failed_runs.load(Ordering::Relaxed)
    );
    // Router 0 asks replica a first: every instance is found once on the restarted replica.
    verify(&scene.cluster, &scene.ledger, &addrs[0], &expected);
}

/// The name of the NATS server that leads the ingest stream.
async fn stream_leader(url: &str) -> String {
    let urls: Vec<&str> = url.split(',').collect();
    let client = async_nats::connect(urls.as_slice()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("DIPTYCH_INGEST").await.unwrap();
    let info = stream.info().await.unwrap();
    info.cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the ingest stream has a leader")
}

#[test]
fn the_nats_node_leading_the_stream_killed_during_ingest_loses_no_acknowledged_instance() {
    let mut scene = Scene::new(30, 1);
    let ingest = scene.ingest_until_a_quarter();
    let (addrs, total) = (scene.addrs.clone(), scene.total());

    let leader = runtime().block_on(stream_leader(&scene.cluster.nats.url()));
    let node: usize = leader.trim_start_matches('n').parse().unwrap();
    let at_kill = scene.ledger.acked();
    let mut child = scene.cluster.nats.nodes[node].child.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = Instant::now();
    let during = runtime().block_on(search_during(
        &addrs,
        &ingest.expected,
        Duration::from_secs(4),
    ));
    // The stream's replicas elect a new leader (seconds: NATS' Raft election timeout), while
    // the routers retry each publish within [cluster] publish_timeout_s; the senders' instances
    // are acknowledged again well within it.
    let resumed = Instant::now();
    wait_acked(&scene.ledger, at_kill + 1, "after the leader's kill");
    let resumed_after = killed_at.elapsed();
    let waited = resumed.elapsed();
    // With the leader still down, each router on its own acknowledges a study: a router whose
    // client stayed with the dead node would fail here instead of hiding behind the other.
    for (k, router) in scene.cluster.routers.iter().enumerate() {
        router_alone_acknowledges(
            scene.dir.path(),
            scene.studies + k as u64,
            router.2,
            &scene.ledger,
            Duration::from_secs(40),
        );
    }
    let new_leader = runtime().block_on(stream_leader(&scene.cluster.nats.url()));
    assert_ne!(new_leader, leader, "the stream elected another leader");
    scene.cluster.nats.nodes[node].start();
    scene.cluster.nats.nodes[node].wait_listening();
    let expected = ingest.expected.clone();
    ingest.finish();
    eprintln!(
        "NATS {leader} (the stream's leader) killed at {at_kill} of {total} acknowledged, \
         acknowledged again {resumed_after:?} after the kill ({waited:?} after the searches), \
         {new_leader} led then; {} storescu runs retried; searches during the fault: {during:?}",
        scene.ledger.failed_runs.load(Ordering::Relaxed)
    );
    assert!(
        resumed_after < Duration::from_secs(20),
        "the senders' instances were acknowledged again only {resumed_after:?} after the kill"
    );
    for (addr, tally) in &during {
        assert!(
            tally.exact > 0,
            "{addr} answered no search while NATS lost a node: {during:?}"
        );
    }
    let ledger = scene.ledger_with_extra(2);
    verify(&scene.cluster, &ledger, &addrs[1], &expected);
}

/// (records, pending) of the servers at `addrs` together, as they are now.
async fn counts(addrs: &[String]) -> (u64, u64) {
    let mut sum = (0, 0);
    for addr in addrs {
        let stats = InfoServiceClient::new(channel(addr).await)
            .get_index_stats(GetIndexStatsRequest {})
            .await
            .unwrap_or_else(|s| panic!("statistics of {addr}: {s:?}"))
            .into_inner();
        sum = (sum.0 + stats.records, sum.1 + stats.pending);
    }
    sum
}

/// A search by a query image through the router at `addr`: the image is encoded first.
async fn search_by_image(addr: &str) -> Result<diptych::api::v1::SearchResponse, tonic::Status> {
    SearchServiceClient::new(channel(addr).await)
        .search(SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Image(phantom_image())),
            }),
            mode: SearchMode::Combined as i32,
            top_k: 5,
            ..SearchRequest::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

#[test]
fn the_encoder_killed_during_ingest_loses_no_acknowledged_instance() {
    let mut scene = Scene::new(30, 1);
    let ingest = scene.ingest_until_a_quarter();
    let (addrs, total) = (scene.addrs.clone(), scene.total());

    let at_kill = scene.ledger.acked();
    kill(&mut scene.cluster.encoder);
    // What was encoded before the kill is committed within a checkpoint (100 ms); after that
    // nothing more can be indexed.
    std::thread::sleep(Duration::from_secs(1));
    let shards = scene.cluster.shard_addrs.clone();
    let held = runtime().block_on(counts(&shards));
    let during = runtime().block_on(search_during(
        &addrs,
        &ingest.expected,
        Duration::from_secs(4),
    ));
    // A query image cannot be encoded: the router says it could not answer, and why.
    runtime().block_on(async {
        for addr in &addrs {
            let status = search_by_image(addr)
                .await
                .expect_err("a query image cannot be encoded without the encoder");
            assert_eq!(
                status.code(),
                tonic::Code::Unavailable,
                "{addr}: {status:?}"
            );
            assert!(
                status.message().contains("remote encoder"),
                "{addr}: {status:?}"
            );
        }
    });
    let still = runtime().block_on(counts(&shards));
    let at_restart = scene.ledger.acked();
    assert!(
        at_restart > at_kill,
        "the routers acknowledge without the encoder (the stream keeps what the shards cannot \
         index yet): {at_kill} acknowledged at the kill, {at_restart} five seconds later"
    );
    assert_eq!(
        still.0, held.0,
        "nothing is indexed without the encoder: {held:?} then {still:?} (records, pending)"
    );
    assert!(
        still.1 > 0,
        "the shards hold acknowledged instances they cannot index yet: {still:?}"
    );
    for (addr, tally) in &during {
        assert!(
            tally.exact > 0 && tally.unavailable == 0,
            "{addr}: a search by an indexed slice needs no encoder; every one answers exactly: \
             {during:?}"
        );
    }

    scene.cluster.restart_encoder("restarted");
    let expected = ingest.expected.clone();
    ingest.finish();
    eprintln!(
        "the encoder killed at {at_kill} of {total} acknowledged, the shards holding {held:?} \
         (records, pending) then and {still:?} five seconds later; {} storescu runs retried; \
         searches during the fault: {during:?}",
        scene.ledger.failed_runs.load(Ordering::Relaxed)
    );
    verify(&scene.cluster, &scene.ledger, &addrs[0], &expected);
    // The encoder is back: query images are encoded again.
    runtime().block_on(async {
        for addr in &addrs {
            let answer = search_by_image(addr)
                .await
                .unwrap_or_else(|s| panic!("{addr}: a query image after the restart: {s:?}"));
            assert!(answer.exact && answer.hits.len() == 5, "{addr}: {answer:?}");
        }
    });
}

#[test]
fn a_shard_whose_volume_is_lost_rebuilds_from_the_stream_and_answers_as_before() {
    let mut scene = Scene::new(16, 1);
    for sender in start_senders(
        &scene.folders,
        &scene.cluster,
        &scene.ledger,
        Duration::ZERO,
    ) {
        sender.join().expect("a sender failed");
    }
    let total = scene.total() as u64;
    assert_eq!(
        scene.ledger.acked() as u64,
        total,
        "every instance acknowledged"
    );
    let addrs = scene.addrs.clone();
    let cluster = &mut scene.cluster;
    let queries: Vec<SearchRequest> = [sop(0, 2), sop(7, 0), sop(15, 5)]
        .iter()
        .flat_map(|q| {
            [
                SearchMode::Normal,
                SearchMode::Abnormal,
                SearchMode::Combined,
            ]
            .into_iter()
            .flat_map(move |mode| {
                [Grouping::Instance, Grouping::Study]
                    .into_iter()
                    .map(move |grouping| request(q, mode, "", grouping))
            })
        })
        .collect();
    let ask = |addr: String, queries: Vec<SearchRequest>| async move {
        let mut client = SearchServiceClient::new(channel(&addr).await);
        let mut answers = Vec::new();
        for q in queries {
            answers.push(essence(&client.search(q).await.unwrap().into_inner()));
        }
        answers
    };
    let (before, held) = runtime().block_on(async {
        wait_records(&cluster.shard_addrs, total, "before the loss").await;
        let held = indexed_records(std::slice::from_ref(&cluster.shard_addrs[0])).await;
        (ask(addrs[0].clone(), queries.clone()).await, held)
    });
    assert!(held > 0 && held < total, "shard 0 holds {held} of {total}");

    // The volume is gone: kill the shard, delete its data folder, start it on an empty one.
    kill(&mut cluster.shards[0]);
    std::fs::remove_dir_all(cluster.shard_data(0)).unwrap();
    runtime().block_on(async {
        let status = SearchServiceClient::new(channel(&addrs[1]).await)
            .search(queries[0].clone())
            .await
            .expect_err("a search with shard 0 down must not answer");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shard 0"), "{status:?}");
    });
    cluster.restart_shard(0, "rebuilt");
    let after = runtime().block_on(async {
        wait_records(&cluster.shard_addrs, total, "after the rebuild").await;
        let rebuilt = indexed_records(std::slice::from_ref(&cluster.shard_addrs[0])).await;
        assert_eq!(rebuilt, held, "the rebuilt shard holds what it held");
        ask(addrs[0].clone(), queries.clone()).await
    });
    for ((q, want), got) in queries.iter().zip(&before).zip(&after) {
        assert_eq!(got, want, "{q:?}: the rebuilt shard answers otherwise");
    }
    eprintln!(
        "shard 0 rebuilt {held} records from the stream; {} searches answered as before",
        queries.len()
    );
}
