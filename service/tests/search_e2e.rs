//! End to end for issue #3: `diptych serve` as a process, a folder of phantom DICOM files sent
//! with `diptych ingest`, and a Python grpcio client (service/tests/python/search_check.py)
//! searching in every mode, with composites, filters and grouping, ingesting and deleting. Then
//! the server is killed with SIGKILL and restarted on the same data folder: every record is
//! still there, the deleted study still gone, and `diptych search` / `stats` / `delete` work as
//! commands.
//!
//! The data: 12 held-out phantom subjects (seed 2, 16 slices each, one study per subject), plus,
//! for every diseased slice, its healthy twin as an instance of another patient (`TWIN-…`), so
//! the test can ask whether normal-mode search finds the twin. `truth.json` records what each
//! file is, including its lesion cells on the model's 16×16 grid.

use std::path::Path;
use std::process::Command;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::phantom::{PhantomConfig, PhantomGenerator, SyntheticSlice};
use diptych::preprocess::{PreprocessParams, place_labels, preprocess};
use diptych_dicom_adapter::synthetic::SyntheticInstance;

#[path = "support/serve.rs"]
mod serve;
use serve::{Server, free_port, python, workspace};

const SUBJECTS: u64 = 12;
const SLICES_PER_SUBJECT: u64 = 16;

/// Lesion cells of a slice on the model's grid (row-major indices of 16×16 cells).
fn lesion_cells(slice: &SyntheticSlice, params: &PreprocessParams, grid: usize) -> Vec<usize> {
    let input = preprocess(&slice.raw_frame(), params).unwrap();
    let size = params.input_size;
    let labels = place_labels(
        &slice.abnormal_labels,
        slice.rows,
        slice.cols,
        &input.placement,
        size,
    );
    let cell = size / grid;
    (0..grid * grid)
        .filter(|&c| {
            let (r0, c0) = ((c / grid) * cell, (c % grid) * cell);
            (r0..r0 + cell).any(|r| (c0..c0 + cell).any(|col| labels[r * size + col] > 0))
        })
        .collect()
}

/// Writes the phantom folder and its truth.json; returns an extra, not-ingested file.
fn write_data(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let generator = PhantomGenerator::new(2, PhantomConfig::default());
    let params = PreprocessParams::default();
    let mut truth = Vec::new();
    for index in 0..SUBJECTS * SLICES_PER_SUBJECT {
        let slice = generator.slice(index);
        let year = if slice.subject.is_multiple_of(2) {
            2019
        } else {
            2020
        };
        let date = format!("{year}0{}15", 1 + slice.subject % 9);
        let mut instance = SyntheticInstance::from_phantom(&slice);
        instance.set(tags::STUDY_DATE, VR::DA, date.clone());
        let sop = format!("2.25.{}", 1_000_000 + index);
        instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop.clone());
        let file = format!("slice-{index:04}.dcm");
        let patient = format!("PHANTOM-{:04}", slice.subject);
        let study = format!("2.25.{}", 2_000_000 + slice.subject);
        instance.set(tags::STUDY_INSTANCE_UID, VR::UI, study.clone());
        std::fs::write(dir.join(&file), instance.to_part10()).unwrap();
        let twin_sop = format!("2.25.{}", 3_000_000 + index);
        if slice.has_lesion {
            // The healthy twin: same anatomy and rendering, no lesion, another patient and study.
            let mut twin = slice.clone();
            twin.image = slice.healthy_twin.clone();
            twin.abnormal_labels = vec![0; slice.abnormal_labels.len()];
            twin.has_lesion = false;
            let mut t = SyntheticInstance::from_phantom(&twin);
            t.set(
                tags::PATIENT_ID,
                VR::LO,
                format!("TWIN-{:04}", slice.subject),
            );
            t.set(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                format!("2.25.{}", 4_000_000 + slice.subject),
            );
            t.set(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                format!("2.25.{}", 5_000_000 + slice.subject),
            );
            t.set(tags::SOP_INSTANCE_UID, VR::UI, twin_sop.clone());
            t.set(tags::STUDY_DATE, VR::DA, date.clone());
            let twin_file = format!("twin-{index:04}.dcm");
            std::fs::write(dir.join(&twin_file), t.to_part10()).unwrap();
            truth.push(serde_json::json!({
                "sop": twin_sop, "file": twin_file, "patient": format!("TWIN-{:04}", slice.subject),
                "study": format!("2.25.{}", 4_000_000 + slice.subject), "twin": true, "lesion": [],
                "study_date": date,
            }));
        }
        truth.push(serde_json::json!({
            "sop": sop, "file": file, "patient": patient, "study": study, "twin": false,
            "twin_sop": if slice.has_lesion { twin_sop } else { String::new() },
            "lesion": lesion_cells(&slice, &params, 16), "study_date": date,
        }));
    }
    std::fs::write(
        dir.join("truth.json"),
        serde_json::to_string(&truth).unwrap(),
    )
    .unwrap();
    // One more slice (another subject), kept outside the folder for the Python ingest check.
    let extra = generator.slice(SUBJECTS * SLICES_PER_SUBJECT + 3);
    let path = dir.parent().unwrap().join("extra.dcm");
    std::fs::write(&path, SyntheticInstance::from_phantom(&extra).to_part10()).unwrap();
    path
}

fn diptych(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running diptych");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn search_ingest_and_delete_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    let extra = write_data(&data);
    let store = dir.path().join("store");
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{addr}");
    let mut server = Server::start(&store, &addr, &[], dir.path().join("serve.log"));

    // `diptych ingest` walks the folder (truth.json is not DICOM: refused with a reason).
    let (ok, out) = diptych(&["ingest", data.to_str().unwrap(), "--server", &url]);
    assert!(ok, "diptych ingest failed:\n{out}\n{}", server.log_tail());
    let truth: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(data.join("truth.json")).unwrap()).unwrap();
    assert!(
        out.contains(&format!("indexed {} instances", truth.len())) && out.contains("1 refused"),
        "{out}"
    );
    assert!(
        out.contains("truth.json"),
        "the refusal names the file:\n{out}"
    );

    let output = Command::new(python())
        .arg(workspace().join("service/tests/python/search_check.py"))
        .args(["--addr", &addr])
        .arg("--proto-dir")
        .arg(workspace().join("proto"))
        .arg("--data")
        .arg(&data)
        .arg("--extra")
        .arg(&extra)
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "the Python client failed:\n{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log_tail()
    );
    let facts: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("search_check: {facts}");
    let records_after = facts["records_after"].as_u64().unwrap();
    let deleted_study = facts["deleted_study"].as_str().unwrap().to_string();

    // SIGKILL, restart on the same folder: what was acknowledged is there, the delete held.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{addr}");
    let server = Server::start(&store, &addr, &[], dir.path().join("serve2.log"));
    let (ok, out) = diptych(&["stats", "--server", &url]);
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("records") && l.ends_with(&format!(" {records_after}"))),
        "after a restart the index holds {records_after} records:\n{out}\n{}",
        server.log_tail()
    );

    // `diptych search` by file prints a table and writes a montage.
    let query = data.join("slice-0003.dcm");
    let montage = dir.path().join("montage.png");
    let (ok, out) = diptych(&[
        "search",
        query.to_str().unwrap(),
        "--mode",
        "normal",
        "--top-k",
        "4",
        "--montage",
        montage.to_str().unwrap(),
        "--server",
        &url,
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("rank") && out.lines().count() >= 6, "{out}");
    let sheet = image::open(&montage).unwrap();
    // Five columns of 128 px with 4 px gaps; a 14 px title band, then two tiles and a gap.
    assert_eq!(
        (sheet.width(), sheet.height()),
        (5 * 128 + 4 * 4, 14 + 2 * 128 + 4)
    );
    // By the slice's SOP Instance UID: the montage finds the query slice's own reconstruction
    // through a UID lookup sent as a filter. Something that is neither a file nor a UID is
    // refused before anything is sent.
    let by_uid = dir.path().join("montage-uid.png");
    let (ok, out) = diptych(&[
        "search",
        "2.25.1000003",
        "--mode",
        "normal",
        "--top-k",
        "4",
        "--montage",
        by_uid.to_str().unwrap(),
        "--server",
        &url,
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        image::open(&by_uid).unwrap().width(),
        5 * 128 + 4 * 4,
        "the query and four hits"
    );
    let (ok, out) = diptych(&[
        "search",
        "2.25.1000003\" OR sop_instance_uid:*",
        "--montage",
        by_uid.to_str().unwrap(),
        "--server",
        &url,
    ]);
    assert!(
        !ok && out.contains("not an existing file") && out.contains("character 13 is '\"'"),
        "{out}"
    );
    let (ok, out) = diptych(&[
        "search",
        "--normal-from",
        query.to_str().unwrap(),
        "--abnormal-from",
        "2.25.1000005",
        "--filter",
        "modality:(MR",
        "--server",
        &url,
    ]);
    assert!(
        !ok && out.contains("InvalidArgument") && out.contains("filter"),
        "{out}"
    );

    // `diptych delete` and the restart kept the deleted study out.
    let (ok, out) = diptych(&["delete", "--study", &deleted_study, "--server", &url]);
    assert!(!ok && out.contains("no indexed record"), "{out}");
    let (ok, out) = diptych(&["delete", "--patient", "PHANTOM-0001", "--server", &url]);
    assert!(ok && out.contains("deleted 16 records"), "{out}");

    // The logs never carry a patient ID.
    for log in ["serve.log", "serve2.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        assert!(
            !text.contains("PHANTOM-0") && !text.contains("TWIN-0"),
            "{log} leaks a patient ID"
        );
    }
}
