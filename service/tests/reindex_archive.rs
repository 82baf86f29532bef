//! Re-index from the archive (issue #13), end to end: records without a kept frame are fetched
//! again from the archive by UID (`[archive]`, C-GET at IMAGE level) and re-encoded with the new
//! bundle.
//!
//! Orthanc from Debian holds phantom studies (multi-frame MR, loaded by dcmtk's storescu). A
//! server with `[index] keep_frames` off indexes them with `models/phantom-v1` (by backfill), then
//! re-indexes to `models/synth-v2`: every record comes from the archive, none from a kept frame,
//! and the end state — answers, records, codes, scores, catalog documents — equals a second
//! server that backfilled the same archive with synth-v2 from scratch. Back to phantom-v1 by
//! WADO-RS (Orthanc's DICOMweb plugin, `orthanc-dicomweb`) gives phantom-v1's answers again.
//! Then an instance is deleted from the archive and a re-index stops — by WADO-RS and by C-GET —
//! naming the instance and why, the serving model keeping every record: nothing is dropped
//! silently.

#[path = "support/folder.rs"]
mod folder;
#[path = "../../dicom-adapter/tests/support/orthanc.rs"]
mod orthanc;
#[path = "support/phantom.rs"]
mod phantom;
#[path = "support/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::api::v1::admin_service_client::AdminServiceClient;
use diptych::api::v1::info_service_client::InfoServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{
    GetIndexStatsRequest, GetReindexStatusRequest, IndexStats, Query, ReindexPhase, ReindexStatus,
    SearchMode, SearchRequest, SearchResponse, SliceRef, StartReindexRequest, query,
};
use folder::{Folder, same_records};
use orthanc::Orthanc;
use phantom::multiframe;
use serve::{Server, channel, free_port, settled_stats, workspace};

/// Studies in the archive, instances per study, frames per instance (each frame a record).
const STUDIES: u64 = 3;
const PER_STUDY: u64 = 4;
const FRAMES: u64 = 4;
const RECORDS: u64 = STUDIES * PER_STUDY * FRAMES;

fn sop_uid(s: u64, i: u64) -> String {
    format!("1.2.826.0.1.3680043.10.1304.{s}.1.{i}")
}

/// The archive's instances as Part-10 files: [`FRAMES`] phantom slices per multi-frame MR
/// image, 12-bit.
fn write_archive(folder: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(folder).unwrap();
    let mut files = Vec::new();
    for s in 0..STUDIES {
        for i in 0..PER_STUDY {
            let first = (s * PER_STUDY + i) * FRAMES;
            let mut instance = multiframe(29, first, FRAMES, 4095.0);
            let study = format!("1.2.826.0.1.3680043.10.1304.{s}");
            instance.set(tags::STUDY_INSTANCE_UID, VR::UI, study.clone());
            instance.set(tags::SERIES_INSTANCE_UID, VR::UI, format!("{study}.1"));
            instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop_uid(s, i));
            instance.set(tags::STUDY_DATE, VR::DA, format!("2024010{}", s + 1));
            instance.set(tags::PATIENT_ID, VR::LO, format!("REINDEX-ARCHIVE-{s}"));
            let path = folder.join(format!("{s}-{i}.dcm"));
            std::fs::write(&path, instance.to_part10()).unwrap();
            files.push(path);
        }
    }
    files
}

/// `[index] keep_frames` off, and the `[archive]` section `archive` when given.
fn config(dir: &Path, name: &str, archive: Option<&str>) -> PathBuf {
    let mut text = "[index]\nkeep_frames = false\nmin_free_bytes = 0\n".to_string();
    if let Some(archive) = archive {
        text.push_str(&format!("\n[archive]\n{archive}\ntimeout_s = 30\n"));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn start(model: &str, data: &Path, addr: &str, config: &Path, log: PathBuf) -> Server {
    let dicom_addr = format!("127.0.0.1:{}", free_port());
    Server::start_model(
        &workspace().join("models").join(model),
        data,
        addr,
        &[
            "--config",
            config.to_str().unwrap(),
            "--dicom-addr",
            &dicom_addr,
        ],
        log,
        &[],
        None,
    )
}

fn kill(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// `diptych backfill` of the whole archive into the server at `addr`; waits until indexed.
fn backfill(addr: &str, archive: &str, server: &Server) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(["backfill", "--server", &format!("http://{addr}")])
        .args(["--archive", archive])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}\n{}", server.log_tail());
    let stats = settled_stats(addr);
    assert_eq!(stats.records, RECORDS, "{said}");
    assert_eq!(stats.instances, STUDIES * PER_STUDY, "{said}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn stats(addr: &str) -> IndexStats {
    InfoServiceClient::new(channel(addr).await)
        .get_index_stats(GetIndexStatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Searches by indexed slices in each mode; the answers without their timings.
async fn answers(addr: &str) -> Vec<SearchResponse> {
    let mut client = SearchServiceClient::new(channel(addr).await);
    let mut answers = Vec::new();
    for (n, (s, i, frame)) in [(0, 0, 0), (1, 2, 3), (2, 3, 1)].into_iter().enumerate() {
        for mode in [
            SearchMode::Normal,
            SearchMode::Abnormal,
            SearchMode::Combined,
        ] {
            let request = SearchRequest {
                query: Some(Query {
                    source: Some(query::Source::Indexed(SliceRef {
                        sop_instance_uid: sop_uid(s, i),
                        frame,
                    })),
                }),
                mode: mode as i32,
                filter: if n == 1 {
                    "abnormality:>0.2".into()
                } else {
                    String::new()
                },
                top_k: 10,
                ..SearchRequest::default()
            };
            let mut answer = client.search(request).await.unwrap().into_inner();
            answer.elapsed_ms = 0.0;
            answers.push(answer);
        }
    }
    answers
}

/// Starts a re-index to `model` (or follows it, when a restart resumed it) and waits until it
/// is done or failed.
async fn reindex(addr: &str, model: &str) -> ReindexStatus {
    let mut admin = AdminServiceClient::new(channel(addr).await);
    let started = admin
        .start_reindex(StartReindexRequest {
            model_dir: workspace().join("models").join(model).display().to_string(),
        })
        .await;
    if let Err(status) = started {
        assert!(status.message().contains("already under way"), "{status:?}");
    }
    let started = Instant::now();
    loop {
        let status = admin
            .get_reindex_status(GetReindexStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if status.phase == ReindexPhase::Done as i32 || status.phase == ReindexPhase::Failed as i32
        {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn reindex_fetches_every_instance_from_the_archive_and_reports_one_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let orthanc = Orthanc::start_with(&dir.path().join("orthanc"), &[], true);
    orthanc.store_files(&write_archive(&dir.path().join("archive")));
    let archive = format!("ORTHANC@127.0.0.1:{}", orthanc.dicom.port());
    let by_cget = format!("dicom = \"{archive}\"\nmethod = \"c-get\"");
    let by_wado = format!("url = \"{}\"\nmethod = \"wado-rs\"", orthanc.dicomweb_url());

    // The reference: the archive indexed from scratch with the new bundle.
    let fresh_data = dir.path().join("fresh");
    let addr = format!("127.0.0.1:{}", free_port());
    let plain = config(dir.path(), "fresh.toml", None);
    let fresh = start(
        "synth-v2",
        &fresh_data,
        &addr,
        &plain,
        dir.path().join("fresh.log"),
    );
    backfill(&addr, &archive, &fresh);
    let new_answers = runtime().block_on(answers(&addr));
    assert!(new_answers.iter().all(|a| a.model_id == "synth-v2"));
    kill(fresh);

    // The old model's index, without kept frames, the archive configured (C-GET).
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let cget = config(dir.path(), "cget.toml", Some(&by_cget));
    let wado = config(dir.path(), "wado.toml", Some(&by_wado));
    let server = start("phantom-v1", &data, &addr, &cget, dir.path().join("a.log"));
    backfill(&addr, &archive, &server);
    let old_answers = runtime().block_on(answers(&addr));
    assert!(old_answers.iter().all(|a| a.model_id == "phantom-v1"));
    assert_ne!(
        old_answers, new_answers,
        "the two models answer differently"
    );

    // Every record is fetched again from the archive by C-GET and re-encoded with the new
    // bundle.
    let status = runtime().block_on(reindex(&addr, "synth-v2"));
    assert_eq!(
        status.phase,
        ReindexPhase::Done as i32,
        "{status:?}\n{}",
        server.log_tail()
    );
    assert_eq!(
        (
            status.records_done,
            status.from_archive,
            status.from_kept_frames
        ),
        (RECORDS, RECORDS, 0),
        "{status:?}"
    );
    assert_eq!(status.serving_model_id, "synth-v2");
    assert_eq!(runtime().block_on(answers(&addr)), new_answers);
    kill(server);
    same_records(
        &Folder::open(&fresh_data, "synth-v2"),
        &Folder::open(&data, "synth-v2"),
    );

    // And back to the old bundle by WADO-RS: the old model's answers again.
    let server = start("synth-v2", &data, &addr, &wado, dir.path().join("b.log"));
    let status = runtime().block_on(reindex(&addr, "phantom-v1"));
    assert_eq!(
        status.phase,
        ReindexPhase::Done as i32,
        "{status:?}\n{}",
        server.log_tail()
    );
    assert_eq!((status.from_archive, status.from_kept_frames), (RECORDS, 0));
    assert_eq!(runtime().block_on(answers(&addr)), old_answers);
    kill(server);

    // An instance the archive no longer holds: the re-index stops and says which and why, by
    // either method; the serving model keeps every record.
    let lost = sop_uid(1, 2);
    orthanc.delete_instance(&lost);
    for (config, log, method) in [(&wado, "c.log", "WADO-RS"), (&cget, "d.log", "C-GET")] {
        let server = start("phantom-v1", &data, &addr, config, dir.path().join(log));
        let status = runtime().block_on(reindex(&addr, "synth-v2"));
        assert_eq!(
            status.phase,
            ReindexPhase::Failed as i32,
            "{status:?}\n{}",
            server.log_tail()
        );
        let error = &status.error;
        assert!(
            error.contains(&lost)
                && error.contains("the archive did not send the instance: it no longer holds it")
                && error.contains(method),
            "{error}"
        );
        assert!(error.contains("diptych delete --instance"), "{error}");
        let (stats, after) =
            runtime().block_on(async { (stats(&addr).await, answers(&addr).await) });
        assert_eq!(
            (stats.model_id.as_str(), stats.records),
            ("phantom-v1", RECORDS)
        );
        assert_eq!(
            after, old_answers,
            "the serving model's answers are untouched"
        );
        kill(server);
    }
    drop(orthanc);
}
