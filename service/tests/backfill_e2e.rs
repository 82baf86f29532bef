//! End to end for issue #13's backfill: Orthanc from Debian as the archive, loaded with phantom
//! studies by dcmtk's storescu; `diptych backfill` (the CLI, through the AdminService) pulls
//! them into a running `diptych serve` — filters honoured, a SIGKILL of the server in the
//! middle and a resume that finishes the job, a second run that adds nothing, C-MOVE to the
//! server's own listener — checked through the index statistics.

#[path = "support/backfill.rs"]
mod backfill;
#[path = "../../dicom-adapter/tests/support/orthanc.rs"]
mod orthanc;
#[path = "support/serve.rs"]
mod serve;

use std::process::Output;

use backfill::{
    BRAIN_2024, audited_runs, counts, kill_and_resume, one_study, start_server, text, write_archive,
};
use orthanc::Orthanc;
use serve::{free_port, settled_stats};

/// `diptych backfill` against `archive`, with extra arguments.
fn backfill(addr: &str, archive: &str, extra: &[&str]) -> Output {
    backfill::backfill(addr, &[&["--archive", archive], extra].concat())
}

#[test]
fn backfill_honours_filters_resumes_after_sigkill_and_adds_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let dicom_port = free_port();
    let orthanc = Orthanc::start(&dir.path().join("orthanc"), &[("DIPTYCH", dicom_port)]);
    orthanc.store_files(&write_archive(&dir.path().join("archive")));
    let archive = format!("ORTHANC@127.0.0.1:{}", orthanc.dicom.port());
    let dicom_addr = format!("127.0.0.1:{dicom_port}");
    let serve_args = ["--dicom-addr", dicom_addr.as_str()];
    let (data, addr, mut server) = start_server(dir.path(), &serve_args);

    // A request the server cannot use is refused with what to fix.
    let bad = backfill(&addr, "ORTHANC", &[]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("AE@HOST:PORT"), "{}", text(&bad));

    // Only the CT study.
    let from = ["--archive", archive.as_str()];
    one_study(&server, &addr, &from, &["--modality", "CT"], (1, 4, 4));

    // The 2024 brain studies, one every 3 s; SIGKILL once the first is indexed; restarted, the
    // same request resumes the job and finishes it.
    let (server, said) = kill_and_resume(&mut server, dir.path(), &addr, &from, &serve_args, 8);
    assert_eq!(counts(&settled_stats(&addr)), (5, 20, 20), "{said}");

    // Again: the archive is asked anew, everything is already indexed, nothing is added.
    let again = backfill(&addr, &archive, &BRAIN_2024);
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains("0 indexed (0 instances), 4 already indexed, 0 failed"),
        "{said}"
    );
    assert_eq!(counts(&settled_stats(&addr)), (5, 20, 20));

    // The 2023 study by C-MOVE to the server's own AE title.
    let moved = ["--method", "move", "--from", "20230101", "--to", "20231231"];
    one_study(&server, &addr, &from, &moved, (6, 24, 24));

    // Each run left a `backfill` event in the audit trail: who pulled what from where.
    let runs = audited_runs(&data);
    // The CT run, the resumed run, the run that added nothing, the C-MOVE run (the killed run
    // never ended).
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(runs[3]["what"]["instances"], 4);
    assert_eq!(runs[3]["what"]["archive"], archive.as_str());
    drop(orthanc);
}
