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

use diptych::api::v1::image_service_client::ImageServiceClient;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::ingest_service_client::IngestServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{
    CodeSource, CompositeQuery, DeleteRequest, DicomRef, EncodeRequest, GetIndexStatsRequest,
    Grouping, ImageInput, IngestRequest, IngestResponse, Query, SearchMode, SearchRequest,
    SliceRef, WatchRequest, code_source, dicom_ref, image_input, query,
};
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};

#[path = "support/serve.rs"]
mod serve;
use serve::{Server, channel, free_port, runtime};
#[path = "support/nats.rs"]
mod nats;
#[path = "support/cluster.rs"]
mod support_cluster;
use support_cluster::{
    essence, indexed_records, request, serial, sop, start_cluster, storescu,
    studies_and_single_node, study, wait_records, write_study,
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

/// Every file of `folders` (in name order) sent over gRPC to `addr`, one Ingest call per
/// file so that the order of arrival is the order of the files (ties between equal distances
/// are broken by it), then one call with an instance that is not DICOM and an empty one; the
/// answers added up.
async fn ingest_grpc(addr: &str, folders: &[PathBuf]) -> IngestResponse {
    let mut client = IngestServiceClient::new(channel(addr).await);
    let mut calls = Vec::new();
    for folder in folders {
        let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            calls.push(vec![IngestRequest {
                dicom: std::fs::read(&file).unwrap(),
                client_ref: file.display().to_string(),
            }]);
        }
    }
    calls.push(vec![
        IngestRequest {
            dicom: b"not a DICOM file at all".to_vec(),
            client_ref: "garbage".into(),
        },
        IngestRequest {
            dicom: Vec::new(),
            client_ref: "empty".into(),
        },
    ]);
    let mut sum = IngestResponse::default();
    for messages in calls {
        let answer = client
            .ingest(tokio_stream::iter(messages))
            .await
            .unwrap_or_else(|s| panic!("Ingest to {addr}: {s:?}"))
            .into_inner();
        sum.accepted += answer.accepted;
        sum.slices += answer.slices;
        sum.duplicates += answer.duplicates;
        sum.non_image += answer.non_image;
        sum.failures.extend(answer.failures);
    }
    sum
}

/// Records of the server at `addr` that `filter` keeps.
async fn matching(addr: &str, filter: &str) -> u64 {
    // A query by codes from the server's own encoder: the filter alone decides the count.
    let codes = ImageServiceClient::new(channel(addr).await)
        .encode(EncodeRequest {
            image: Some(phantom_image()),
        })
        .await
        .unwrap()
        .into_inner()
        .codes;
    SearchServiceClient::new(channel(addr).await)
        .search(SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Codes(codes.unwrap())),
            }),
            mode: SearchMode::Normal as i32,
            filter: filter.to_string(),
            top_k: 1,
            ..SearchRequest::default()
        })
        .await
        .unwrap_or_else(|s| panic!("search on {addr}: {s:?}"))
        .into_inner()
        .records_matched
}

/// A query image: a phantom slice that no study of the tests holds.
fn phantom_image() -> ImageInput {
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

/// Waits until the replica at `addr` holds `records` records, nothing pending; a replica
/// rebuilding from the stream may hold more on the way (deletions come after instances).
async fn wait_exactly(addr: &str, records: u64, what: &str) {
    let started = Instant::now();
    loop {
        let now = indexed_records(&[addr.to_string()]).await;
        if now == records {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{what}: {now} records, not {records}, after 180 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_router_serves_ingest_deletes_statistics_images_and_partial_answers() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (studies, slices) = (8u64, 4u64);
    let (folders, single_addr, _single) = studies_and_single_node(dir.path(), studies, slices);
    let mut cluster = start_cluster(dir.path(), 2);
    let total = studies * slices;
    let (router0, router1) = (cluster.routers[0].1.clone(), cluster.routers[1].1.clone());
    runtime().block_on(async {
        // Ingest over gRPC through a router: the same answer as a single node's, the garbage
        // and the empty instance refused with the single node's reasons.
        let want = ingest_grpc(&single_addr, &folders).await;
        let got = ingest_grpc(&router0, &folders).await;
        assert_eq!(got, want, "a router's Ingest answers as a single node's");
        assert_eq!((got.accepted, got.slices), (total as u32, total as u32));
        assert_eq!(got.failures.len(), 2, "{got:?}");
        wait_records(std::slice::from_ref(&single_addr), total, "single node").await;
        for (r, set) in cluster.shard_addrs.chunks(2).enumerate() {
            wait_records(set, total, &format!("replica set {r}")).await;
        }
        // The same stream again through the other router: stored once.
        let again = ingest_grpc(&router1, &folders).await;
        assert_eq!(again.accepted + again.duplicates, total as u32, "{again:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (r, set) in cluster.shard_addrs.chunks(2).enumerate() {
            wait_records(set, total, &format!("replica set {r} after a resend")).await;
        }
        // Searchable exactly once, through either router.
        let mut client = SearchServiceClient::new(channel(&router1).await);
        for s in 0..studies {
            for j in 0..slices {
                let uid = sop(s, j);
                let answer = client
                    .search(SearchRequest {
                        filter: format!("sop_instance_uid:\"{uid}\""),
                        exclude_query: false,
                        ..request(&uid, SearchMode::Combined, "", Grouping::Instance)
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(answer.records_matched, 1, "{uid} searchable exactly once");
                assert_eq!(
                    (answer.shards_answered.clone(), answer.shards_total),
                    (vec![0, 1], 2)
                );
            }
        }

        // Statistics summed over the shards: the single node's counts.
        let stats = |addr: String| async move {
            InfoServiceClient::new(channel(&addr).await)
                .get_index_stats(GetIndexStatsRequest {})
                .await
                .unwrap()
                .into_inner()
        };
        let (single_stats, router_stats) = (
            stats(single_addr.clone()).await,
            stats(router0.clone()).await,
        );
        assert_eq!(
            (
                router_stats.records,
                router_stats.instances,
                router_stats.series,
                router_stats.studies,
                router_stats.model_id.clone()
            ),
            (
                single_stats.records,
                single_stats.instances,
                single_stats.series,
                single_stats.studies,
                single_stats.model_id.clone()
            )
        );

        // Image queries on a router: encoded on a shard, searched by codes, the single node's
        // answer; a plain query and a composite one, and the image calls themselves.
        let mut single = SearchServiceClient::new(channel(&single_addr).await);
        let image_request = |grouping: Grouping| SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Image(phantom_image())),
            }),
            mode: SearchMode::Combined as i32,
            top_k: 12,
            grouping: grouping as i32,
            ..SearchRequest::default()
        };
        let composite = SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Composite(CompositeQuery {
                    normal_from: Some(CodeSource {
                        source: Some(code_source::Source::Image(phantom_image())),
                    }),
                    abnormal_from: Some(CodeSource {
                        source: Some(code_source::Source::Indexed(SliceRef {
                            sop_instance_uid: sop(3, 1),
                            frame: 0,
                        })),
                    }),
                })),
            }),
            mode: SearchMode::Combined as i32,
            top_k: 12,
            ..SearchRequest::default()
        };
        for r in [
            image_request(Grouping::Instance),
            image_request(Grouping::Study),
            composite,
        ] {
            let want = single.search(r.clone()).await.unwrap().into_inner();
            let got = client.search(r.clone()).await.unwrap().into_inner();
            assert!(!want.hits.is_empty());
            assert_eq!(essence(&got), essence(&want), "{r:?}");
        }
        let encode = |addr: String| async move {
            ImageServiceClient::new(channel(&addr).await)
                .encode(EncodeRequest {
                    image: Some(phantom_image()),
                })
                .await
                .unwrap()
                .into_inner()
        };
        assert_eq!(
            encode(router0.clone()).await,
            encode(single_addr.clone()).await
        );
        let bad = ImageServiceClient::new(channel(&router0).await)
            .encode(EncodeRequest {
                image: Some(ImageInput {
                    source: Some(image_input::Source::Dicom(b"garbage".to_vec())),
                    frame: 0,
                }),
            })
            .await
            .expect_err("garbage is no image");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

        // A shard takes instances and deletions only from the stream.
        let refused = IngestServiceClient::new(channel(&cluster.shard_addrs[0]).await)
            .delete(DeleteRequest {
                target: Some(DicomRef {
                    level: Some(dicom_ref::Level::StudyInstanceUid(study(0))),
                }),
            })
            .await
            .expect_err("a shard refuses a deletion that is not in the stream");
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        let refused = IngestServiceClient::new(channel(&cluster.shard_addrs[1]).await)
            .ingest(tokio_stream::iter(vec![IngestRequest {
                dicom: b"anything".to_vec(),
                client_ref: String::new(),
            }]))
            .await
            .expect_err("a shard refuses instances that are not in the stream");
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );

        // Deletes through a router: a study (on one shard), an instance and a patient (asked of
        // every shard); the single node's counts, NOT_FOUND for what is not there.
        // A patient whose studies sit on both shards: its deletion must reach both.
        let mut patient = None;
        for p in 0..studies.div_ceil(3) {
            let filter = format!("patient_id:\"PAT-{p}\"");
            if matching(&cluster.shard_addrs[0], &filter).await > 0
                && matching(&cluster.shard_addrs[1], &filter).await > 0
            {
                patient = Some(format!("PAT-{p}"));
                break;
            }
        }
        let patient = patient.expect("some patient has studies on both shards");
        let targets = [
            dicom_ref::Level::StudyInstanceUid(study(1)),
            dicom_ref::Level::SopInstanceUid(sop(2, 0)),
            dicom_ref::Level::PatientId(patient.clone()),
            dicom_ref::Level::SeriesInstanceUid(format!("{}.1", study(1))),
        ];
        let mut deleted = 0;
        for target in targets {
            let delete = |addr: String, target: dicom_ref::Level| async move {
                IngestServiceClient::new(channel(&addr).await)
                    .delete(DeleteRequest {
                        target: Some(DicomRef {
                            level: Some(target),
                        }),
                    })
                    .await
            };
            let want = delete(single_addr.clone(), target.clone()).await;
            let got = delete(router0.clone(), target.clone()).await;
            match (&want, &got) {
                (Ok(w), Ok(g)) => {
                    assert_eq!(g.get_ref(), w.get_ref(), "delete {target:?}");
                    deleted += w.get_ref().records_deleted;
                }
                (Err(w), Err(g)) => {
                    assert_eq!((g.code(), g.message()), (w.code(), w.message()))
                }
                _ => panic!("delete {target:?}: single {want:?}, router {got:?}"),
            }
        }
        assert!(
            deleted > (slices + 1),
            "the patient held records: {deleted}"
        );
        eprintln!("{deleted} of {total} records deleted; patient {patient:?}");
        let left = total - deleted;
        // Every replica applied every deletion: the replica sets agree with the single node,
        // the twins with each other, and no replica holds a deleted record.
        wait_records(
            std::slice::from_ref(&single_addr),
            left,
            "single node after deletes",
        )
        .await;
        for (r, set) in cluster.shard_addrs.chunks(2).enumerate() {
            wait_records(set, left, &format!("replica set {r} after deletes")).await;
        }
        for (at, addr) in cluster.shard_addrs.iter().enumerate() {
            let held = indexed_records(std::slice::from_ref(addr)).await;
            let twin = indexed_records(std::slice::from_ref(&cluster.shard_addrs[at ^ 2])).await;
            assert_eq!(held, twin, "replica {at} and its twin after deletes");
            for filter in [
                format!("study_instance_uid:\"{}\"", study(1)),
                format!("sop_instance_uid:\"{}\"", sop(2, 0)),
                format!("patient_id:\"{patient}\""),
            ] {
                assert_eq!(matching(addr, &filter).await, 0, "{filter} on replica {at}");
            }
        }
    });

    // A replica restarted keeps the deletions; one whose volume is lost rebuilds from the
    // stream, deletions replayed in order, and holds what its twin holds.
    for (at, wipe) in [(0usize, false), (1usize, true)] {
        let shard = &mut cluster.shards[at];
        shard.child.kill().unwrap();
        shard.child.wait().unwrap();
        let (i, name) = (at % 2, (b'a' + (at / 2) as u8) as char);
        let data = dir.path().join(format!("shard{i}{name}"));
        if wipe {
            std::fs::remove_dir_all(&data).unwrap();
        }
        let config_arg = cluster.shard_configs[at].display().to_string();
        cluster.shards[at] = Server::start(
            &data,
            &cluster.shard_addrs[at],
            &["--config", &config_arg],
            dir.path().join(format!("shard{i}{name}-again.log")),
        );
    }
    runtime().block_on(async {
        for at in [0usize, 1] {
            let twin = indexed_records(std::slice::from_ref(&cluster.shard_addrs[at ^ 2])).await;
            wait_exactly(
                &cluster.shard_addrs[at],
                twin,
                &format!("replica {at} after its restart"),
            )
            .await;
            assert_eq!(
                matching(
                    &cluster.shard_addrs[at],
                    &format!("study_instance_uid:\"{}\"", study(1))
                )
                .await,
                0
            );
        }
    });

    // Partial answers: with both replicas of shard 1 gone, a search fails UNAVAILABLE naming
    // it, unless the caller allows a partial answer, which then covers shard 0 and says so.
    let shard0_records = runtime().block_on(indexed_records(std::slice::from_ref(
        &cluster.shard_addrs[0],
    )));
    for at in [1usize, 3] {
        cluster.shards[at].child.kill().unwrap();
        cluster.shards[at].child.wait().unwrap();
    }
    runtime().block_on(async {
        let mut client = SearchServiceClient::new(channel(&router0).await);
        let r = SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Image(phantom_image())),
            }),
            mode: SearchMode::Combined as i32,
            top_k: 5,
            ..SearchRequest::default()
        };
        let status = client.search(r.clone()).await.expect_err("shard 1 is gone");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shard 1"), "{status:?}");
        let partial = client
            .search(SearchRequest {
                allow_partial: true,
                ..r
            })
            .await
            .unwrap_or_else(|s| panic!("a partial answer was allowed: {s:?}"))
            .into_inner();
        assert!(!partial.exact, "{partial:?}");
        assert_eq!(
            (partial.shards_answered.clone(), partial.shards_total),
            (vec![0], 2)
        );
        assert_eq!(partial.records_total, shard0_records);
        assert!(shard0_records > 0, "shard 0 should still hold records");
        eprintln!(
            "partial answer over shard 0's {shard0_records} records: {} hits",
            partial.hits.len()
        );
        assert_eq!(
            partial.hits.len(),
            5.min(shard0_records as usize),
            "{partial:?}"
        );
    });
}

/// The next Watch event about `study_uid` on `stream` (others skipped), within 90 s.
async fn event_of(
    stream: &mut tonic::Streaming<diptych::api::v1::WatchEvent>,
    study_uid: &str,
    what: &str,
) -> diptych::api::v1::WatchEvent {
    let started = Instant::now();
    loop {
        let left = Duration::from_secs(90).saturating_sub(started.elapsed());
        let event = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("{what}: no Watch event for {study_uid} within 90 s"))
            .unwrap_or_else(|s| panic!("{what}: the Watch stream failed: {s:?}"))
            .unwrap_or_else(|| panic!("{what}: the Watch stream ended"));
        if event.study_instance_uid == study_uid {
            return event;
        }
    }
}

/// Per mode of a Watch event: the mode, the model, and every hit as text.
type ModeEssence = (i32, String, Vec<String>);

/// What must be identical between two Watch events: the study, its slices, and per mode the
/// model and every hit's rank, slice, study and distances.
fn event_essence(event: &diptych::api::v1::WatchEvent) -> (String, u32, Vec<ModeEssence>) {
    let results = event
        .results
        .iter()
        .map(|r| {
            let hits = r
                .hits
                .iter()
                .map(|h| {
                    let slice = h.slice.clone().unwrap_or_default();
                    format!(
                        "#{} {}/{} study {} d={:?} dn={:?} da={:?}",
                        h.rank,
                        slice.sop_instance_uid,
                        slice.frame,
                        h.study_instance_uid,
                        h.distance,
                        h.normal_distance,
                        h.abnormal_distance
                    )
                })
                .collect();
            (r.mode, r.model_id.clone(), hits)
        })
        .collect();
    (event.study_instance_uid.clone(), event.slices, results)
}

#[test]
fn a_router_watch_streams_the_similar_studies_a_single_node_finds() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (studies, slices) = (7u64, 3u64);
    let (folders, single_addr, _single) = studies_and_single_node(dir.path(), studies, slices);
    let cluster = start_cluster(dir.path(), 1);
    let router = cluster.routers[1].1.clone();
    runtime().block_on(async {
        let before = &folders[..folders.len() - 1];
        ingest_grpc(&single_addr, before).await;
        ingest_grpc(&router, before).await;
        let indexed = (studies - 1) * slices;
        wait_records(std::slice::from_ref(&single_addr), indexed, "single node").await;
        wait_records(&cluster.shard_addrs, indexed, "cluster").await;
        // Past the quiet period ([dicom] study_quiet_period_s, 10 s): these studies are
        // announced before anyone watches.
        tokio::time::sleep(Duration::from_secs(12)).await;

        let bad = SearchServiceClient::new(channel(&router).await)
            .watch(WatchRequest {
                filter: "modality:(".into(),
                ..WatchRequest::default()
            })
            .await
            .expect_err("a malformed filter is refused at once");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

        let subscribe = |addr: String| async move {
            SearchServiceClient::new(channel(&addr).await)
                .watch(WatchRequest {
                    modes: Vec::new(),
                    top_k: 4,
                    filter: String::new(),
                })
                .await
                .unwrap_or_else(|s| panic!("Watch on {addr}: {s:?}"))
                .into_inner()
        };
        let mut on_single = subscribe(single_addr.clone()).await;
        let mut on_router = subscribe(router.clone()).await;
        let last = &folders[folders.len() - 1..];
        ingest_grpc(&single_addr, last).await;
        ingest_grpc(&router, last).await;
        let uid = study(studies - 1);
        let want = event_of(&mut on_single, &uid, "single node").await;
        let got = event_of(&mut on_router, &uid, "router").await;
        assert_eq!(want.results.len(), 3);
        assert!(want.results.iter().all(|r| r.hits.len() == 4), "{want:?}");
        assert_eq!(event_essence(&got), event_essence(&want));
        // Both shards contributed: the study's own (left out there) and the other (by codes).
        let mut from = [0, 0];
        for hit in got.results.iter().flat_map(|r| &r.hits) {
            let filter = format!("study_instance_uid:\"{}\"", hit.study_instance_uid);
            for (shard, addr) in cluster.shard_addrs.iter().enumerate() {
                from[shard] += matching(addr, &filter).await.min(1);
            }
        }
        assert!(from[0] > 0 && from[1] > 0, "hits per shard: {from:?}");
    });
}
