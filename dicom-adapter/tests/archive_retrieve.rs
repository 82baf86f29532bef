//! Query/retrieve against a real archive: Orthanc from Debian, loaded by dcmtk's storescu with
//! synthetic studies; C-FIND with each filter, C-GET of a study into a sink (and refused by
//! one), C-MOVE to a listener of this crate.

#[path = "support/orthanc.rs"]
mod orthanc;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use diptych_dicom_adapter::Uid;
use diptych_dicom_adapter::output::{
    Destination, FetchOptions, FetchTarget, RetrieveError, StudyQuery, fetch, find_studies, move_to,
};
use diptych_dicom_adapter::scp::{self, ReceivedInstance, ScpConfig, StoreOutcome, StoreSink};
use diptych_dicom_adapter::synthetic::{StoredSamples, SyntheticInstance};
use orthanc::Orthanc;

/// A study of the test archive.
struct Study {
    uid: &'static str,
    date: &'static str,
    modality: &'static str,
    description: &'static str,
    instances: u64,
}

const STUDIES: [Study; 3] = [
    Study {
        uid: "1.2.826.0.1.3680043.10.1001",
        date: "20240110",
        modality: "MR",
        description: "BRAIN MR",
        instances: 3,
    },
    Study {
        uid: "1.2.826.0.1.3680043.10.1002",
        date: "20230505",
        modality: "CT",
        description: "CHEST CT",
        instances: 2,
    },
    Study {
        uid: "1.2.826.0.1.3680043.10.1003",
        date: "20240220",
        modality: "MR",
        description: "KNEE MR",
        instances: 2,
    },
];

fn sop_uid(study: &Study, i: u64) -> String {
    format!("{}.3.{}", study.uid, i + 1)
}

/// Writes the studies as Part-10 files in `folder`.
fn write_studies(folder: &std::path::Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(folder).unwrap();
    let mut files = Vec::new();
    for (s, study) in STUDIES.iter().enumerate() {
        for i in 0..study.instances {
            let samples = (0..64u16).map(|v| v * (i as u16 + 1)).collect();
            let mut instance = SyntheticInstance::new(8, 8, StoredSamples::U16(samples), i);
            if study.modality == "CT" {
                instance.sop_class_uid = uids::CT_IMAGE_STORAGE.to_string();
            }
            instance.set(tags::STUDY_INSTANCE_UID, VR::UI, study.uid.to_string());
            instance.set(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                format!("{}.2", study.uid),
            );
            instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop_uid(study, i));
            instance.set(tags::MODALITY, VR::CS, study.modality.to_string());
            instance.set(tags::STUDY_DATE, VR::DA, study.date.to_string());
            instance.set(
                tags::STUDY_DESCRIPTION,
                VR::LO,
                study.description.to_string(),
            );
            instance.set(tags::PATIENT_ID, VR::LO, format!("PAT-{s}"));
            let path = folder.join(format!("{s}-{i}.dcm"));
            std::fs::write(&path, instance.to_part10()).unwrap();
            files.push(path);
        }
    }
    files
}

/// Keeps the SOP Instance UIDs it receives; refuses everything when `refuse`.
#[derive(Default)]
struct Collect {
    received: Mutex<Vec<String>>,
    refuse: bool,
}

impl StoreSink for Collect {
    fn store(
        &self,
        instance: ReceivedInstance,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = StoreOutcome> + Send + '_>> {
        Box::pin(async move {
            if self.refuse {
                return StoreOutcome::OutOfResources("test sink is full".into());
            }
            // The sink gets what the listener would hand it: a Part-10 file that parses back.
            assert_eq!(
                instance.parsed.sop_instance_uid().as_str(),
                instance.sop_instance_uid
            );
            self.received
                .lock()
                .unwrap()
                .push(instance.sop_instance_uid);
            StoreOutcome::Stored
        })
    }
}

fn archive(orthanc: &Orthanc) -> Destination {
    Destination {
        addr: orthanc.dicom,
        called_ae: orthanc.ae_title.into(),
        calling_ae: "DIPTYCH".into(),
    }
}

async fn found(orthanc: &Orthanc, query: StudyQuery) -> BTreeSet<String> {
    let found = find_studies(&archive(orthanc), &query, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((found.malformed, found.outside_query), (0, 0));
    found
        .studies
        .iter()
        .map(|s| s.study_instance_uid.as_str().to_string())
        .collect()
}

fn uids_of(indices: &[usize]) -> BTreeSet<String> {
    indices
        .iter()
        .map(|&i| STUDIES[i].uid.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn studies_are_found_by_each_filter_and_fetched_by_c_get_and_c_move() {
    let scratch = tempfile::tempdir().unwrap();
    // diptych's own listener, known to Orthanc as the C-MOVE destination DIPTYCH.
    let listener = scp::bind(ScpConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ae_title: "DIPTYCH".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let moved = Arc::new(Collect::default());
    let listen_port = listener.local_addr().port();
    let serving = tokio::spawn({
        let sink = moved.clone();
        async move { listener.serve(sink, std::future::pending()).await }
    });
    let orthanc = Orthanc::start(&scratch.path().join("orthanc"), &[("DIPTYCH", listen_port)]);
    orthanc.store_files(&write_studies(&scratch.path().join("files")));

    // C-FIND: everything, then each filter alone.
    let all = find_studies(
        &archive(&orthanc),
        &StudyQuery::default(),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(all.studies.len(), 3);
    let brain = all
        .studies
        .iter()
        .find(|s| s.study_instance_uid.as_str() == STUDIES[0].uid)
        .unwrap();
    assert_eq!(brain.instances, Some(3));
    assert_eq!(brain.study_date.as_deref(), Some("20240110"));
    assert_eq!(brain.modalities, ["MR"]);
    let in_2024 = StudyQuery {
        date_from: Some("20240101".into()),
        date_to: Some("20241231".into()),
        ..Default::default()
    };
    assert_eq!(found(&orthanc, in_2024).await, uids_of(&[0, 2]));
    let ct = StudyQuery {
        modality: Some("CT".into()),
        ..Default::default()
    };
    assert_eq!(found(&orthanc, ct).await, uids_of(&[1]));
    let brain_only = StudyQuery {
        description: Some("*BRAIN*".into()),
        ..Default::default()
    };
    assert_eq!(found(&orthanc, brain_only).await, uids_of(&[0]));

    // C-GET of one study: every instance reaches the sink, and the archive counts them.
    let sink = Collect::default();
    let study = FetchTarget::Study(Uid::parse(STUDIES[0].uid).unwrap());
    let report = fetch(&archive(&orthanc), &study, &sink, FetchOptions::default())
        .await
        .unwrap();
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.stored, 3);
    assert_eq!(report.archive_counts.completed, 3);
    let got: BTreeSet<String> = sink.received.lock().unwrap().iter().cloned().collect();
    let expected: BTreeSet<String> = (0..3).map(|i| sop_uid(&STUDIES[0], i)).collect();
    assert_eq!(got, expected);

    // One instance by its UIDs.
    let one = Collect::default();
    let target = FetchTarget::Instance {
        study: Uid::parse(STUDIES[2].uid).unwrap(),
        series: Uid::parse(&format!("{}.2", STUDIES[2].uid)).unwrap(),
        instance: Uid::parse(&sop_uid(&STUDIES[2], 1)).unwrap(),
    };
    let report = fetch(&archive(&orthanc), &target, &one, FetchOptions::default())
        .await
        .unwrap();
    assert!(report.complete(), "{report:?}");
    assert_eq!(*one.received.lock().unwrap(), [sop_uid(&STUDIES[2], 1)]);

    // A sink that refuses: the archive is told, and the fetch is not complete.
    let full = Collect {
        refuse: true,
        ..Default::default()
    };
    match fetch(&archive(&orthanc), &study, &full, FetchOptions::default()).await {
        Ok(report) => {
            assert!(!report.complete());
            assert_eq!(report.refused.len(), 3, "{report:?}");
            assert_eq!(report.refused[0].status, 0xA700);
        }
        Err(RetrieveError::Failed { status, .. }) => assert_ne!(status, 0),
        Err(other) => panic!("unexpected error: {other}"),
    }

    // C-MOVE to diptych's own listener.
    let target = FetchTarget::Study(Uid::parse(STUDIES[1].uid).unwrap());
    let (status, counts) = move_to(
        &archive(&orthanc),
        &target,
        "DIPTYCH",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!((status, counts.completed, counts.failed), (0, 2, 0));
    let got: BTreeSet<String> = moved.received.lock().unwrap().iter().cloned().collect();
    let expected: BTreeSet<String> = (0..2).map(|i| sop_uid(&STUDIES[1], i)).collect();
    assert_eq!(got, expected);
    serving.abort();
}

#[tokio::test]
async fn an_archive_that_does_not_listen_is_named_and_bad_keys_are_refused() {
    let closed = Destination {
        addr: ([127, 0, 0, 1], orthanc::free_port()).into(),
        called_ae: "PACS".into(),
        calling_ae: "DIPTYCH".into(),
    };
    let error = find_studies(&closed, &StudyQuery::default(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(error, RetrieveError::Associate { .. }), "{error}");
    assert!(error.to_string().contains("PACS@127.0.0.1"), "{error}");
    let bad = StudyQuery {
        date_from: Some("2024".into()),
        ..Default::default()
    };
    let error = find_studies(&closed, &bad, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("YYYYMMDD"), "{error}");
}
