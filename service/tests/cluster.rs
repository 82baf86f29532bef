//! Issue #15, first slice: a cluster on this machine — three `nats-server` processes as a
//! JetStream cluster on loopback, two shards of two replicas each and two routers from the
//! built binary, the routers reading from different replicas — takes the same phantom studies
//! by storescu (through both routers) as a single `diptych serve`, and answers every search
//! exactly as the single node does: the same records, distances and order, in normal, abnormal
//! and combined modes, with and without a filter, by instance and grouped by study. Then a
//! shard killed with SIGKILL in the middle of an ingest: searches say UNAVAILABLE while it is
//! gone, and once it is back it holds every acknowledged instance exactly once.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{GetIndexStatsRequest, Grouping, SearchMode, SearchRequest};

#[path = "support/serve.rs"]
mod serve;
use serve::{Server, channel, free_port, runtime};
#[path = "support/nats.rs"]
mod nats;
#[path = "support/cluster.rs"]
mod support_cluster;
use support_cluster::{
    essence, indexed_records, request, serial, sop, start_cluster, storescu, wait_records,
    write_study,
};

#[test]
fn cluster_answers_exactly_as_a_single_node() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (studies, slices) = (12u64, 6u64);
    let folders: Vec<PathBuf> = (0..studies)
        .map(|s| write_study(dir.path(), s, slices))
        .collect();

    let single_addr = format!("127.0.0.1:{}", free_port());
    let single_dicom = free_port();
    let single_dicom_arg = format!("127.0.0.1:{single_dicom}");
    let _single = Server::start(
        &dir.path().join("single"),
        &single_addr,
        &["--dicom-addr", &single_dicom_arg],
        dir.path().join("single.log"),
    );
    let cluster = start_cluster(dir.path(), 2);

    // The same studies in the same order: one at a time, alternately through the two routers.
    for (s, folder) in folders.iter().enumerate() {
        storescu(folder, single_dicom);
        storescu(folder, cluster.routers[s % 2].2);
    }
    let total = studies * slices;
    runtime().block_on(async {
        wait_records(std::slice::from_ref(&single_addr), total, "single node").await;
        // Each replica set (one replica of every shard) holds the whole corpus, both shards
        // hold some of it (the placement really splits the corpus), and the two replicas of a
        // shard hold the same number of records.
        for (r, set) in cluster.shard_addrs.chunks(2).enumerate() {
            wait_records(set, total, &format!("replica set {r}")).await;
        }
        for (at, addr) in cluster.shard_addrs.iter().enumerate() {
            let held = indexed_records(std::slice::from_ref(addr)).await;
            assert!(held > 0, "shard replica {at} at {addr} is empty");
            let twin = indexed_records(std::slice::from_ref(&cluster.shard_addrs[at ^ 2])).await;
            assert_eq!(held, twin, "the two replicas of shard {} differ", at % 2);
        }

        let mut single_client = SearchServiceClient::new(channel(&single_addr).await);
        let mut compared = 0;
        for (router, addr, _) in &cluster.routers {
            let mut client = SearchServiceClient::new(channel(addr).await);
            for query_sop in [sop(0, 2), sop(5, 0), sop(11, 5)] {
                for mode in [
                    SearchMode::Normal,
                    SearchMode::Abnormal,
                    SearchMode::Combined,
                ] {
                    for filter in ["", "series_description:alpha"] {
                        for grouping in [Grouping::Instance, Grouping::Study] {
                            let r = request(&query_sop, mode, filter, grouping);
                            let want = single_client.search(r.clone()).await.unwrap().into_inner();
                            let got = client
                                .search(r.clone())
                                .await
                                .unwrap_or_else(|s| {
                                    panic!(
                                        "router search {r:?} failed: {s:?}\n{}",
                                        router.log_tail()
                                    )
                                })
                                .into_inner();
                            assert!(!want.hits.is_empty(), "{r:?} found nothing");
                            assert_eq!(
                                essence(&got),
                                essence(&want),
                                "{query_sop} {mode:?} filter {filter:?} {grouping:?}"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        // Ties really were broken: some answer held two equal distances.
        let r = request(&sop(3, 1), SearchMode::Normal, "", Grouping::Instance);
        let want = single_client.search(r).await.unwrap().into_inner();
        let tied = want.hits.windows(2).any(|w| w[0].distance == w[1].distance);
        assert!(
            tied,
            "the data should hold equal distances: {:?}",
            essence(&want).0
        );
        eprintln!("{compared} searches identical between the cluster and the single node");
    });
    drop(cluster.shards);
}

#[test]
fn a_shard_killed_during_ingest_keeps_every_acknowledged_instance_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (studies, slices) = (30u64, 8u64);
    let folders: Vec<PathBuf> = (0..studies)
        .map(|s| write_study(dir.path(), s, slices))
        .collect();
    let mut cluster = start_cluster(dir.path(), 1);

    // Senders through both routers while shard 0 is killed and restarted: routers keep
    // acknowledging (JetStream holds the instances), and the shard catches up.
    let ports: Vec<u16> = cluster.routers.iter().map(|r| r.2).collect();
    let sender = std::thread::spawn({
        let folders = folders.clone();
        move || {
            for (s, folder) in folders.iter().enumerate() {
                storescu(folder, ports[s % 2]);
            }
        }
    });
    // Kill once shard 0 has taken something, long before it has taken everything.
    let started = Instant::now();
    let first = cluster.shard_addrs[0].clone();
    let at_kill = runtime().block_on(async {
        loop {
            let stats = InfoServiceClient::new(channel(&first).await)
                .get_index_stats(GetIndexStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            if stats.records + stats.pending > 0 {
                break stats.records + stats.pending;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "shard 0 took nothing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let killed = &mut cluster.shards[0];
    killed.child.kill().unwrap(); // SIGKILL
    killed.child.wait().unwrap();
    // With a shard gone, a search cannot be exact: it fails UNAVAILABLE, naming the shard.
    runtime().block_on(async {
        let mut client = SearchServiceClient::new(channel(&cluster.routers[1].1).await);
        let status = client
            .search(request(
                &sop(0, 0),
                SearchMode::Normal,
                "",
                Grouping::Instance,
            ))
            .await
            .expect_err("a search with shard 0 down must not answer");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shard 0"), "{status:?}");
    });
    let config_arg = cluster.shard_configs[0].display().to_string();
    let restarted = Server::start(
        &dir.path().join("shard0"),
        &cluster.shard_addrs[0],
        &["--config", &config_arg],
        dir.path().join("shard0-restarted.log"),
    );
    cluster.shards[0] = restarted;
    sender
        .join()
        .expect("every instance acknowledged by the routers");

    let total = studies * slices;
    runtime().block_on(async {
        wait_records(&cluster.shard_addrs, total, "cluster after the kill").await;
        let shard0 = indexed_records(std::slice::from_ref(&first)).await;
        assert!(
            shard0 > at_kill,
            "the kill came mid-ingest: shard 0 had {at_kill} records then, {shard0} now"
        );
        eprintln!("shard 0 killed at {at_kill} of its {shard0} records");
        let mut client = SearchServiceClient::new(channel(&cluster.routers[0].1).await);
        for s in 0..studies {
            for j in 0..slices {
                let uid = sop(s, j);
                let r = SearchRequest {
                    filter: format!("sop_instance_uid:\"{uid}\""),
                    ..request(&uid, SearchMode::Combined, "", Grouping::Instance)
                };
                let answer = client
                    .search(SearchRequest {
                        exclude_query: false,
                        ..r
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(
                    answer.records_matched, 1,
                    "{uid} was acknowledged: searchable exactly once"
                );
                assert_eq!(answer.records_total, total);
            }
        }
    });
}
