//! Issue #15, first slice: a cluster on this machine — three `nats-server` processes as a
//! JetStream cluster on loopback, two shards of two replicas each and two routers from the
//! built binary, the routers reading from different replicas — takes the same phantom studies
//! by storescu (through both routers) as a single `diptych serve`, and answers every search
//! exactly as the single node does: the same records, distances and order, in normal, abnormal
//! and combined modes, with and without a filter, by instance and grouped by study. Every shard
//! encodes through the cluster's encoder role. A router serves Ingest, deletes, statistics,
//! image queries, partial answers and Watch as a single node does. (Faults, each during ingest,
//! are in cluster_faults.rs.)

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

#[path = "support/serve.rs"]
mod serve;
use serve::{Server, channel, free_port, runtime};
#[path = "support/nats.rs"]
mod nats;
#[path = "support/cluster.rs"]
mod support_cluster;
use support_cluster::{
    essence, hit_essence, indexed_records, kill, phantom_image, request, serial, sop,
    start_cluster, storescu, studies_and_single_node, study, wait_records, write_study,
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

        // Image queries on a router: encoded on a shard (by the cluster's encoder), searched by
        // codes, the single node's answer; a plain query and a composite one, and the image
        // calls themselves.
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
        // Nor over STOW-RS on its HTTP port.
        let answer = serve::http_request(
            &cluster.shards[0].http_addr,
            "POST",
            "/dicomweb/studies",
            &[(
                "Content-Type",
                "multipart/related; type=\"application/dicom\"; boundary=b",
            )],
            b"anything",
        );
        assert!(
            answer.starts_with("HTTP/1.1 403") && answer.contains("cluster shard"),
            "a shard refuses STOW-RS: {answer}"
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
        kill(&mut cluster.shards[at]);
        if wipe {
            std::fs::remove_dir_all(cluster.shard_data(at)).unwrap();
        }
        cluster.restart_shard(at, "again");
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
        kill(&mut cluster.shards[at]);
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
/// model and every hit ([`hit_essence`]).
fn event_essence(event: &diptych::api::v1::WatchEvent) -> (String, u32, Vec<ModeEssence>) {
    let results = event
        .results
        .iter()
        .map(|r| {
            let hits = r.hits.iter().map(hit_essence).collect();
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
