//! An archive's worth of phantom studies for the backfill tests (DIMSE and DICOMweb), the
//! `diptych backfill` command, and a SIGKILL of the server in the middle of a job. Shared with
//! `#[path]`; the test declares `mod serve` beside it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use diptych::api::v1::IndexStats;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};

use crate::serve::{Server, free_port, settled_stats};

/// Instances per study.
pub const PER_STUDY: u64 = 4;

/// The archive's studies: (date, modality, description).
pub const STUDIES: [(&str, &str, &str); 6] = [
    ("20240105", "MR", "BRAIN MR"),
    ("20240212", "MR", "BRAIN MR FOLLOW-UP"),
    ("20240320", "MR", "BRAIN MR"),
    ("20240402", "MR", "BRAIN MR"),
    ("20240515", "CT", "HEAD CT"),
    ("20230707", "MR", "BRAIN MR 2023"),
];

/// The 2024 brain studies: four of [`STUDIES`].
pub const BRAIN_2024: [&str; 6] = [
    "--from",
    "20240101",
    "--to",
    "20241231",
    "--description",
    "BRAIN*",
];

/// The Study Instance UID of study `s` of [`STUDIES`].
pub fn study_uid(s: usize) -> String {
    format!("1.2.826.0.1.3680043.10.13.{}", s + 1)
}

/// The SOP Instance UID of instance `i` of study `s`.
pub fn sop_uid(s: usize, i: u64) -> String {
    format!("{}.1.{}", study_uid(s), i + 1)
}

/// Phantom slices as Part-10 files, [`PER_STUDY`] per study of [`STUDIES`].
pub fn write_archive(folder: &Path) -> Vec<PathBuf> {
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
            instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop_uid(s, i));
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

/// `diptych backfill` into the server at `addr` with `args`.
pub fn backfill(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(["backfill", "--server", &format!("http://{addr}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// What a command printed, stdout then stderr.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// (studies, instances, records) of the index.
pub fn counts(stats: &IndexStats) -> (u64, u64, u64) {
    (stats.studies, stats.instances, stats.records)
}

/// A `diptych serve` on `dir/data` with `extra` arguments, its log in `dir/serve1.log`: the
/// data folder, the gRPC address and the server.
pub fn start_server(dir: &Path, extra: &[&str]) -> (PathBuf, String, Server) {
    let data = dir.join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&data, &addr, extra, dir.join("serve1.log"));
    (data, addr, server)
}

/// `diptych backfill` from the archive `archive` names (`--archive AE@…` or `--archive-url …`)
/// with `extra` arguments, which must find and index one study of [`PER_STUDY`] instances and
/// leave the index at `want` ([`counts`]).
pub fn one_study(
    server: &Server,
    addr: &str,
    archive: &[&str],
    extra: &[&str],
    want: (u64, u64, u64),
) {
    let run = backfill(addr, &[archive, extra].concat());
    let said = text(&run);
    assert!(run.status.success(), "{said}\n{}", server.log_tail());
    assert!(
        said.contains("1 studies matched, 1 indexed (4 instances)"),
        "{said}"
    );
    assert_eq!(counts(&settled_stats(addr)), want, "{said}");
}

/// The 2024 brain studies ([`BRAIN_2024`]) from the archive `archive` names (`--archive AE@…`
/// or `--archive-url …`), one every 3 s, the server killed once the index holds `instances`
/// instances ([`kill_mid_job`]); then the server started again on `dir/data` with `extra`
/// (its log in `dir/serve2.log`) and the same request run again, which must resume the job and
/// finish it. The restarted server and what the resumed run printed.
pub fn kill_and_resume(
    server: &mut Server,
    dir: &Path,
    addr: &str,
    archive: &[&str],
    extra: &[&str],
    instances: u64,
) -> (Server, String) {
    let data = dir.join("data");
    let slow = [archive, &["--per-minute", "20"], &BRAIN_2024[..]].concat();
    kill_mid_job(server, addr, &data, &slow, instances);
    let server = Server::start(&data, addr, extra, dir.join("serve2.log"));
    let resumed = backfill(addr, &[archive, &BRAIN_2024[..]].concat());
    let said = text(&resumed);
    assert!(resumed.status.success(), "{said}\n{}", server.log_tail());
    assert!(said.contains("backfill done: 4 studies matched"), "{said}");
    assert!(said.contains("finished before this run"), "{said}");
    (server, said)
}

/// Starts `diptych backfill` with `args` (which should pace it slowly), waits until the index
/// holds `instances` instances, then SIGKILLs the server; the position left in `data` must
/// show the job was cut in the middle (some of its 4 studies finished, not all).
pub fn kill_mid_job(server: &mut Server, addr: &str, data: &Path, args: &[&str], instances: u64) {
    let mut slow = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(["backfill", "--server", &format!("http://{addr}")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while settled_stats(addr).instances < instances {
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
}

/// The `backfill` events of the audit trail in `data`, oldest first.
pub fn audited_runs(data: &Path) -> Vec<serde_json::Value> {
    let audit = std::fs::read_to_string(data.join("audit/audit.jsonl")).unwrap();
    audit
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == "backfill")
        .collect()
}
