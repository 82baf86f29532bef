//! End to end for issue #13's backfill: Orthanc from Debian as the archive, loaded with phantom
//! studies by dcmtk's storescu; `diptych backfill` (the CLI, through the AdminService) pulls
//! them into a running `diptych serve` — filters honoured, a SIGKILL of the server in the
//! middle and a resume that finishes the job, a second run that adds nothing, C-MOVE to the
//! server's own listener — checked through the index statistics.

#[path = "../../dicom-adapter/tests/support/orthanc.rs"]
mod orthanc;
#[path = "support/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use diptych::api::v1::IndexStats;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};
use orthanc::Orthanc;
use serve::{Server, free_port, settled_stats};

/// Instances per study.
const PER_STUDY: u64 = 4;

/// The archive's studies: (date, modality, description).
const STUDIES: [(&str, &str, &str); 6] = [
    ("20240105", "MR", "BRAIN MR"),
    ("20240212", "MR", "BRAIN MR FOLLOW-UP"),
    ("20240320", "MR", "BRAIN MR"),
    ("20240402", "MR", "BRAIN MR"),
    ("20240515", "CT", "HEAD CT"),
    ("20230707", "MR", "BRAIN MR 2023"),
];

fn study_uid(s: usize) -> String {
    format!("1.2.826.0.1.3680043.10.13.{}", s + 1)
}

/// Phantom slices as Part-10 files, [`PER_STUDY`] per study of [`STUDIES`].
fn write_archive(folder: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(folder).unwrap();
    let generator = PhantomGenerator::new(7, PhantomConfig::default());
    let mut files = Vec::new();
    for (s, (date, modality, description)) in STUDIES.iter().enumerate() {
        for i in 0..PER_STUDY {
            let slice = generator.slice(s as u64 * 16 + i);
            let mut instance = SyntheticInstance::from_phantom(&slice);
            if let StoredSamples::U16(samples) = &instance.samples {
                instance.samples =
                    StoredSamples::U16(samples.iter().map(|&v| v.min(4095)).collect());
            }
            if *modality == "CT" {
                instance.sop_class_uid = uids::CT_IMAGE_STORAGE.to_string();
            }
            let study = study_uid(s);
            instance.set(tags::STUDY_INSTANCE_UID, VR::UI, study.clone());
            instance.set(tags::SERIES_INSTANCE_UID, VR::UI, format!("{study}.1"));
            instance.set(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                format!("{study}.1.{}", i + 1),
            );
            instance.set(tags::STUDY_DATE, VR::DA, date.to_string());
            instance.set(tags::MODALITY, VR::CS, modality.to_string());
            instance.set(tags::STUDY_DESCRIPTION, VR::LO, description.to_string());
            instance.set(tags::PATIENT_ID, VR::LO, format!("BACKFILL-{s}"));
            let path = folder.join(format!("{s}-{i}.dcm"));
            std::fs::write(&path, instance.to_part10()).unwrap();
            files.push(path);
        }
    }
    files
}

/// `diptych backfill` against `archive`, with extra arguments.
fn backfill(addr: &str, archive: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(["backfill", "--server", &format!("http://{addr}")])
        .args(["--archive", archive])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// (studies, instances, records) of the index.
fn counts(stats: &IndexStats) -> (u64, u64, u64) {
    (stats.studies, stats.instances, stats.records)
}

#[test]
fn backfill_honours_filters_resumes_after_sigkill_and_adds_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let dicom_port = free_port();
    let orthanc = Orthanc::start(&dir.path().join("orthanc"), &[("DIPTYCH", dicom_port)]);
    orthanc.store_files(&write_archive(&dir.path().join("archive")));
    let archive = format!("ORTHANC@127.0.0.1:{}", orthanc.dicom.port());
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let dicom_addr = format!("127.0.0.1:{dicom_port}");
    let serve_args = ["--dicom-addr", dicom_addr.as_str()];
    let mut server = Server::start(&data, &addr, &serve_args, dir.path().join("serve1.log"));

    // A request the server cannot use is refused with what to fix.
    let bad = backfill(&addr, "ORTHANC", &[]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("AE@HOST:PORT"), "{}", text(&bad));

    // Only the CT study.
    let ct = backfill(&addr, &archive, &["--modality", "CT"]);
    assert!(ct.status.success(), "{}\n{}", text(&ct), server.log_tail());
    assert!(
        text(&ct).contains("1 studies matched, 1 indexed (4 instances)"),
        "{}",
        text(&ct)
    );
    assert_eq!(counts(&settled_stats(&addr)), (1, 4, 4));

    // The 2024 brain studies, one every 3 s; SIGKILL once the first is indexed.
    let brain = [
        "--from",
        "20240101",
        "--to",
        "20241231",
        "--description",
        "BRAIN*",
    ];
    let mut slow = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(["backfill", "--server", &format!("http://{addr}")])
        .args(["--archive", &archive, "--per-minute", "20"])
        .args(brain)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while settled_stats(&addr).instances < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = slow.wait();
    let position = std::fs::read_to_string(data.join("backfill/finished.jsonl")).unwrap();
    assert!(
        (1..4).contains(&position.lines().count()),
        "the kill came mid-job: {position}"
    );

    // Restart; the same request resumes the job and finishes it.
    let server = Server::start(&data, &addr, &serve_args, dir.path().join("serve2.log"));
    let resumed = backfill(&addr, &archive, &brain);
    let said = text(&resumed);
    assert!(resumed.status.success(), "{said}\n{}", server.log_tail());
    assert!(said.contains("backfill done: 4 studies matched"), "{said}");
    assert!(said.contains("finished before this run"), "{said}");
    assert_eq!(counts(&settled_stats(&addr)), (5, 20, 20), "{said}");

    // Again: the archive is asked anew, everything is already indexed, nothing is added.
    let again = backfill(&addr, &archive, &brain);
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains("0 indexed (0 instances), 4 already indexed, 0 failed"),
        "{said}"
    );
    assert_eq!(counts(&settled_stats(&addr)), (5, 20, 20));

    // The 2023 study by C-MOVE to the server's own AE title.
    let moved = backfill(
        &addr,
        &archive,
        &["--method", "move", "--from", "20230101", "--to", "20231231"],
    );
    let said = text(&moved);
    assert!(moved.status.success(), "{said}\n{}", server.log_tail());
    assert!(
        said.contains("1 studies matched, 1 indexed (4 instances)"),
        "{said}"
    );
    assert_eq!(counts(&settled_stats(&addr)), (6, 24, 24));

    // Each run left a `backfill` event in the audit trail: who pulled what from where.
    let audit = std::fs::read_to_string(data.join("audit/audit.jsonl")).unwrap();
    let runs: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == "backfill")
        .collect();
    // The CT run, the resumed run, the run that added nothing, the C-MOVE run (the killed run
    // never ended).
    assert_eq!(runs.len(), 4, "{audit}");
    assert_eq!(runs[3]["what"]["instances"], 4);
    assert_eq!(runs[3]["what"]["archive"], archive.as_str());
    drop(orthanc);
}
