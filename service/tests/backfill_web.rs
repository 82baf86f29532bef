//! End to end for issue #13's backfill over DICOMweb: Orthanc from Debian with its DICOMweb
//! plugin (`orthanc-dicomweb`) as the archive, loaded with phantom studies by dcmtk's storescu;
//! `diptych backfill --archive-url` (the CLI, through the AdminService) finds them by QIDO-RS
//! and pulls them by WADO-RS into a running `diptych serve` — requests it cannot use refused
//! with the fix, an archive that cannot be reached reported, filters honoured, a SIGKILL of the
//! server in the middle and a resume that finishes the job, a second run that adds nothing,
//! every study searchable afterwards, a damaged instance refused and named in the summary — checked through the index statistics and SearchService.

#[path = "support/backfill.rs"]
mod backfill;
#[path = "../../dicom-adapter/tests/support/orthanc.rs"]
mod orthanc;
#[path = "support/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};
use std::process::Output;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};

use backfill::{
    PER_STUDY, STUDIES, audited_runs, counts, kill_and_resume, one_study, sop_uid, start_server,
    study_uid, text, write_archive,
};
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{Query, SearchMode, SearchRequest, SliceRef, query};
use orthanc::Orthanc;
use serve::{channel, free_port, runtime, settled_stats};

/// The Study Instance UID of the damaged study.
const DAMAGED_STUDY: &str = "1.2.826.0.1.3680043.10.13.99";

/// A study of 2025 with two instances: a good one, and one whose pixel data is half what its
/// rows, columns and frames declare.
fn write_damaged_study(folder: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(folder).unwrap();
    let generator = PhantomGenerator::new(11, PhantomConfig::default());
    (0..2u64)
        .map(|i| {
            let mut instance = SyntheticInstance::from_phantom(&generator.slice(i));
            if let StoredSamples::U16(samples) = &instance.samples {
                instance.samples =
                    StoredSamples::U16(samples.iter().map(|&v| v.min(4095)).collect());
            }
            if i == 1 {
                // Two frames declared, the samples of one.
                instance.set(tags::NUMBER_OF_FRAMES, VR::IS, "2".into());
            }
            instance.set(tags::STUDY_INSTANCE_UID, VR::UI, DAMAGED_STUDY.into());
            instance.set(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                format!("{DAMAGED_STUDY}.1"),
            );
            instance.set(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                format!("{DAMAGED_STUDY}.1.{}", i + 1),
            );
            instance.set(tags::STUDY_DATE, VR::DA, "20250101".into());
            instance.set(tags::MODALITY, VR::CS, "MR".into());
            instance.set(tags::PATIENT_ID, VR::LO, "BACKFILL-DAMAGED".into());
            let path = folder.join(format!("{i}.dcm"));
            std::fs::write(&path, instance.to_part10()).unwrap();
            path
        })
        .collect()
}

/// `diptych backfill --archive-url url`, with extra arguments.
fn backfill(addr: &str, url: &str, extra: &[&str]) -> Output {
    backfill::backfill(addr, &[&["--archive-url", url], extra].concat())
}

/// The Study Instance UIDs of the hits of a search by the first slice of study `s`: an error
/// when that slice is not indexed.
fn search_by(addr: &str, s: usize) -> Result<Vec<String>, tonic::Status> {
    runtime().block_on(async {
        let request = SearchRequest {
            query: Some(Query {
                source: Some(query::Source::Indexed(SliceRef {
                    sop_instance_uid: sop_uid(s, 0),
                    frame: 0,
                })),
            }),
            mode: SearchMode::Normal as i32,
            top_k: 50,
            ..SearchRequest::default()
        };
        let answer = SearchServiceClient::new(channel(addr).await)
            .search(request)
            .await?
            .into_inner();
        Ok(answer
            .hits
            .into_iter()
            .map(|hit| hit.study_instance_uid)
            .collect())
    })
}

#[test]
fn backfill_over_dicomweb_honours_filters_resumes_after_sigkill_and_adds_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let orthanc = Orthanc::start_with(&dir.path().join("orthanc"), &[], true);
    orthanc.store_files(&write_archive(&dir.path().join("archive")));
    let url = orthanc.dicomweb_url();
    let (data, addr, mut server) = start_server(dir.path(), &[]);

    // Requests the server cannot use are refused with what to fix.
    let no_url = backfill::backfill(&addr, &["--method", "wado-rs"]);
    let said = text(&no_url);
    assert!(!no_url.status.success());
    assert!(said.contains("InvalidArgument"), "{said}");
    assert!(said.contains("archive_url"), "{said}");
    assert!(said.contains("http://pacs:8042/dicom-web"), "{said}");
    let https = backfill(&addr, "https://127.0.0.1:1/dicom-web", &[]);
    assert!(!https.status.success());
    assert!(
        text(&https).contains("http://HOST:PORT/PATH"),
        "{}",
        text(&https)
    );

    // An archive that cannot be reached: the job stops and says why; nothing panics.
    let nowhere = format!("http://127.0.0.1:{}/dicom-web", free_port());
    let down = backfill(&addr, &nowhere, &[]);
    let said = text(&down);
    assert!(!down.status.success(), "{said}");
    assert!(said.contains("backfill stopped"), "{said}");
    assert!(said.contains("cannot be reached"), "{said}");
    // A server that is not a DICOMweb archive at that path: the answer is named.
    let wrong_path = format!("http://{}/not-dicom-web", orthanc.http);
    let said = text(&backfill(&addr, &wrong_path, &[]));
    assert!(said.contains("404"), "{said}");
    assert_eq!(counts(&settled_stats(&addr)), (0, 0, 0));

    // Only the CT study (modality), then only the 2023 study (date range).
    let archive = ["--archive-url", url.as_str()];
    one_study(&server, &addr, &archive, &["--modality", "CT"], (1, 4, 4));
    let old = ["--from", "20230101", "--to", "20231231"];
    one_study(&server, &addr, &archive, &old, (2, 8, 8));

    // The 2024 brain studies, one every 3 s; SIGKILL once the first is indexed; restarted, the
    // same request resumes the job and finishes it.
    let (_server, said) = kill_and_resume(&mut server, dir.path(), &addr, &archive, &[], 12);
    assert!(said.contains("0 failed"), "{said}");
    let all = (STUDIES.len() as u64, STUDIES.len() as u64 * PER_STUDY);
    assert_eq!(
        counts(&settled_stats(&addr)),
        (all.0, all.1, all.1),
        "{said}"
    );

    // Again, the whole archive: asked anew, everything already indexed, nothing added.
    let again = backfill(&addr, &url, &[]);
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains("6 studies matched, 0 indexed (0 instances), 6 already indexed, 0 failed"),
        "{said}"
    );
    assert_eq!(counts(&settled_stats(&addr)), (all.0, all.1, all.1));

    // Every study is searchable: a search by its first slice finds it.
    for s in 0..STUDIES.len() {
        let hits = search_by(&addr, s).unwrap_or_else(|e| panic!("study {s}: {e:?}"));
        assert!(hits.contains(&study_uid(s)), "study {s}: {hits:?}");
    }

    // A study the archive holds damaged: one good instance, one whose pixel data is shorter
    // than its rows and columns say. The good one is indexed, the damaged one refused here as a
    // C-STORE would be, and the summary names the study and why.
    let damaged = write_damaged_study(&dir.path().join("damaged"));
    orthanc.store_files(&damaged);
    let partial = backfill(&addr, &url, &["--from", "20250101"]);
    let said = text(&partial);
    assert!(!partial.status.success(), "{said}");
    assert!(
        said.contains("1 studies matched, 0 indexed (0 instances), 0 already indexed, 1 failed"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "failed {DAMAGED_STUDY}: 1 of its instances were refused here (first: status 0xC000: "
        )),
        "{said}"
    );
    assert!(said.contains("the rest (1) are indexed"), "{said}");
    assert_eq!(
        counts(&settled_stats(&addr)),
        (all.0 + 1, all.1 + 1, all.1 + 1)
    );

    // Each run that ended left a `backfill` event naming the DICOMweb archive (the killed run
    // never ended; the unreachable and wrong-path runs stopped before a job began).
    let runs: Vec<_> = audited_runs(&data)
        .into_iter()
        .filter(|run| run["what"]["archive"] == url.as_str())
        .collect();
    assert_eq!(runs.len(), 5, "{runs:?}");
    assert_eq!(runs[0]["what"]["instances"], 4);
    assert_eq!(runs[2]["what"]["instances"], 12);
    assert_eq!(runs[3]["what"]["instances"], 0);
    assert_eq!(runs[4]["what"]["studies_failed"], 1);
    drop(orthanc);
}
