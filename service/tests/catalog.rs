//! The metadata catalog through its public API: every field round trip, the filters of the
//! issue, error messages, deletes at each level, durability of deletes and checkpoints, and a
//! timing at 100k records.

use std::collections::BTreeSet;
use std::time::Instant;

use diptych_dicom_adapter::{InstanceMetadata, Uid};
use diptych_service::catalog::{
    Catalog, CatalogCounts, CatalogEntry, CatalogError, Checkpoint, FieldKind, UidField, UidLookup,
};
use diptych_service::record::{DeleteTarget, RecordId};

const MODALITIES: [&str; 3] = ["MR", "CT", "PT"];
const BODY_PARTS: [&str; 3] = ["BRAIN", "CHEST", "KNEE"];
const SERIES_DESCRIPTIONS: [&str; 3] = ["AX T2 FLAIR", "SAG T1 MPRAGE", "COR DWI"];

/// A fully filled metadata of record `i`, varied over every field.
fn metadata(i: u32) -> InstanceMetadata {
    let patient = i / 16;
    let study = i / 8;
    let series = i / 4;
    let instance = i / 2;
    InstanceMetadata {
        patient_id: format!("PAT-{patient:03}"),
        patient_sex: if patient.is_multiple_of(2) { "F" } else { "M" }.into(),
        patient_age: format!("{:03}Y", 30 + patient),
        patient_birth_date: format!("{}0615", 1950 + patient),
        study_instance_uid: format!("1.2.826.0.1.{study}"),
        series_instance_uid: format!("1.2.826.0.2.{series}"),
        sop_instance_uid: format!("1.2.826.0.3.{instance}"),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
        study_date: format!("{}{:02}15", 2018 + study / 2 % 3, 1 + study % 12),
        study_time: format!("{:02}3000", 8 + study % 10),
        modality: MODALITIES[(study % 3) as usize].into(),
        body_part: BODY_PARTS[(study / 4 % 3) as usize].into(),
        study_description: format!("Study number {study} routine"),
        series_description: SERIES_DESCRIPTIONS[(series % 3) as usize].into(),
        institution: "General Hospital North".into(),
        manufacturer: if i.is_multiple_of(2) {
            "SIEMENS"
        } else {
            "GE MEDICAL SYSTEMS"
        }
        .into(),
        manufacturer_model: "Skyra Fit".into(),
        slice_location: Some(f64::from(i) * 2.5 - 40.0),
        slice_thickness: Some(1.0 + f64::from(i % 4) * 0.5),
        pixel_spacing: Some([0.5 + f64::from(i % 3) * 0.25, 0.6]),
        rows: 256 << (i % 2),
        columns: 256 + 64 * (i % 3),
        number_of_frames: 2,
        sequence: if series.is_multiple_of(2) { "SE" } else { "GR" }.into(),
        series_number: Some(series as i32 + 1),
        instance_number: Some(-(instance as i32)),
    }
}

/// Which records a filter should keep.
type Keep = Box<dyn Fn(u32, &InstanceMetadata) -> bool>;

fn abnormality(i: u32) -> f32 {
    (i % 10) as f32 / 10.0 + 0.05
}

fn entry(i: u32) -> CatalogEntry {
    CatalogEntry {
        record: i,
        frame: i % 2,
        metadata: metadata(i),
        abnormality: abnormality(i),
    }
}

/// A committed catalog of `n` records in a fresh folder.
fn catalog_of(n: u32) -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path()).unwrap();
    let entries: Vec<_> = (0..n).map(entry).collect();
    catalog.add(&entries).unwrap();
    catalog
        .commit(Checkpoint {
            applied_seq: u64::from(n),
            records: u64::from(n),
            ..Default::default()
        })
        .unwrap();
    (dir, catalog)
}

fn ids(catalog: &Catalog, filter: &str) -> Vec<RecordId> {
    catalog
        .filter(filter)
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .iter()
        .collect()
}

fn expected(n: u32, keep: impl Fn(u32, &InstanceMetadata) -> bool) -> Vec<RecordId> {
    (0..n).filter(|&i| keep(i, &metadata(i))).collect()
}

fn filter_error(catalog: &Catalog, filter: &str) -> String {
    match catalog.filter(filter) {
        Err(CatalogError::Filter(message)) => {
            println!("{filter:?} -> {message}");
            message
        }
        other => panic!("{filter}: expected a filter error, got {other:?}"),
    }
}

#[test]
fn every_field_round_trips_and_birth_date_is_never_returned() {
    let (_dir, catalog) = catalog_of(40);
    let shown = catalog.entries(&[7, 39, 1000, 0]).unwrap();
    assert!(shown[2].is_none(), "record 1000 was never added");
    for (record, stored) in [(7, &shown[0]), (39, &shown[1]), (0, &shown[3])] {
        let stored = stored.as_ref().unwrap();
        let mut want = metadata(record);
        want.patient_birth_date.clear();
        assert_eq!(stored.record, record);
        assert_eq!(stored.frame, record % 2);
        assert_eq!(stored.abnormality, abnormality(record));
        assert_eq!(stored.metadata, want, "record {record}");
    }
}

#[test]
fn absent_values_stay_absent() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path()).unwrap();
    let sparse = InstanceMetadata {
        sop_instance_uid: "9.9".into(),
        number_of_frames: 1,
        ..Default::default()
    };
    catalog
        .add(&[CatalogEntry {
            record: 3,
            frame: 0,
            metadata: sparse.clone(),
            abnormality: 0.25,
        }])
        .unwrap();
    catalog.commit(Checkpoint::default()).unwrap();
    let stored = catalog.entries(&[3]).unwrap().remove(0).unwrap();
    assert_eq!(stored.metadata, sparse);
    assert!(ids(&catalog, "study_date:[0 TO 99999999]").is_empty());
    assert!(ids(&catalog, "slice_location:[-1000 TO 1000]").is_empty());
    assert_eq!(ids(&catalog, "abnormality:0.25"), [3]);
}

#[test]
fn each_field_filters_its_own_value() {
    let n = 40;
    let (_dir, catalog) = catalog_of(n);
    // Record 21's value of each field, and which records share it.
    let m21 = metadata(21);
    let cases: Vec<(String, Keep)> = vec![
        ("record:21".into(), Box::new(|i, _| i == 21)),
        ("frame:1".into(), Box::new(|i, _| i % 2 == 1)),
        (
            "patient_id:\"PAT-001\"".into(),
            Box::new(|_, m| m.patient_id == "PAT-001"),
        ),
        (
            "patient_sex:M".into(),
            Box::new(|_, m| m.patient_sex == "M"),
        ),
        (
            "patient_age:031Y".into(),
            Box::new(|_, m| m.patient_age == "031Y"),
        ),
        (
            "patient_birth_date:19510615".into(),
            Box::new(|_, m| m.patient_birth_date == "19510615"),
        ),
        (
            format!("study_instance_uid:{}", m21.study_instance_uid),
            Box::new(|i, _| i / 8 == 2),
        ),
        (
            format!("series_instance_uid:\"{}\"", m21.series_instance_uid),
            Box::new(|i, _| i / 4 == 5),
        ),
        (
            format!("sop_instance_uid:{}", m21.sop_instance_uid),
            Box::new(|i, _| i / 2 == 10),
        ),
        (
            "sop_class_uid:1.2.840.10008.5.1.4.1.1.4".into(),
            Box::new(|_, _| true),
        ),
        (
            format!("study_date:{}", m21.study_date),
            Box::new(move |_, m| m.study_date == metadata(21).study_date),
        ),
        (
            "study_time:103000".into(),
            Box::new(|_, m| m.study_time == "103000"),
        ),
        ("modality:CT".into(), Box::new(|_, m| m.modality == "CT")),
        (
            "body_part:CHEST".into(),
            Box::new(|_, m| m.body_part == "CHEST"),
        ),
        ("study_description:2".into(), Box::new(|i, _| i / 8 == 2)),
        (
            "series_description:mprage".into(),
            Box::new(|_, m| m.series_description.contains("MPRAGE")),
        ),
        ("institution:north".into(), Box::new(|_, _| true)),
        ("manufacturer:ge".into(), Box::new(|i, _| i % 2 == 1)),
        ("manufacturer_model:skyra".into(), Box::new(|_, _| true)),
        ("slice_location:12.5".into(), Box::new(|i, _| i == 21)),
        ("slice_thickness:1.5".into(), Box::new(|i, _| i % 4 == 1)),
        ("pixel_spacing:0.75".into(), Box::new(|i, _| i % 3 == 1)),
        ("rows:512".into(), Box::new(|i, _| i % 2 == 1)),
        ("columns:320".into(), Box::new(|i, _| i % 3 == 1)),
        ("sequence:GR".into(), Box::new(|_, m| m.sequence == "GR")),
        ("series_number:6".into(), Box::new(|i, _| i / 4 == 5)),
        (
            "instance_number:\"-10\"".into(),
            Box::new(|i, _| i / 2 == 10),
        ),
        (
            "abnormality:[0.1 TO 0.2]".into(),
            Box::new(|i, _| i % 10 == 1),
        ),
    ];
    let covered: BTreeSet<String> = cases
        .iter()
        .map(|(f, _)| f.split(':').next().unwrap().to_owned())
        .collect();
    for info in Catalog::fields() {
        assert!(
            covered.contains(info.name),
            "no filter test for {}",
            info.name
        );
    }
    for (filter, keep) in &cases {
        let want = expected(n, keep);
        assert!(!want.is_empty(), "{filter} should match something");
        assert_eq!(ids(&catalog, filter), want, "{filter}");
    }
}

#[test]
fn the_issue_filters_keep_exactly_the_matching_records() {
    let n = 400;
    let (_dir, catalog) = catalog_of(n);
    let date = |m: &InstanceMetadata| m.study_date.parse::<u32>().unwrap();
    let cases: Vec<(&str, Keep)> = vec![
        (
            "modality:MR AND study_date:[20190101 TO 20191231] AND abnormality:>0.5",
            Box::new(move |i, m| {
                m.modality == "MR"
                    && (20190101..=20191231).contains(&date(m))
                    && abnormality(i) > 0.5
            }),
        ),
        (
            "body_part:BRAIN AND NOT patient_sex:F",
            Box::new(|_, m| m.body_part == "BRAIN" && m.patient_sex != "F"),
        ),
        (
            "study_date:>=20200101",
            Box::new(move |_, m| date(m) >= 20200101),
        ),
        (
            "study_date:<20190101",
            Box::new(move |_, m| date(m) < 20190101),
        ),
        (
            "series_description:flair",
            Box::new(|_, m| m.series_description.contains("FLAIR")),
        ),
        (
            "series_description:\"t2 flair\"",
            Box::new(|_, m| m.series_description.contains("T2 FLAIR")),
        ),
        (
            "slice_location:[-10 TO 10]",
            Box::new(|_, m| (-10.0..=10.0).contains(&m.slice_location.unwrap())),
        ),
        (
            "slice_location:<0",
            Box::new(|_, m| m.slice_location.unwrap() < 0.0),
        ),
        ("slice_location:{-40 TO -35}", Box::new(|i, _| i == 1)),
        ("rows:>=512", Box::new(|_, m| m.rows >= 512)),
        (
            "rows:[0 TO 300] AND columns:>256",
            Box::new(|_, m| m.rows <= 300 && m.columns > 256),
        ),
        ("NOT patient_sex:F", Box::new(|_, m| m.patient_sex != "F")),
        (
            "modality:MR OR NOT body_part:BRAIN",
            Box::new(|_, m| m.modality == "MR" || m.body_part != "BRAIN"),
        ),
        (
            "NOT (modality:MR OR modality:CT)",
            Box::new(|_, m| m.modality != "MR" && m.modality != "CT"),
        ),
        (
            "modality:MR AND NOT (body_part:BRAIN OR patient_sex:F)",
            Box::new(|_, m| m.modality == "MR" && m.body_part != "BRAIN" && m.patient_sex != "F"),
        ),
        ("NOT NOT modality:CT", Box::new(|_, m| m.modality == "CT")),
        (
            "(modality:CT OR modality:PT) AND -body_part:KNEE",
            Box::new(|_, m| m.modality != "MR" && m.body_part != "KNEE"),
        ),
        (
            "modality:MR body_part:CHEST",
            Box::new(|_, m| m.modality == "MR" && m.body_part == "CHEST"),
        ),
        (
            "patient_birth_date:[19500101 TO 19551231]",
            Box::new(|i, _| i / 16 <= 5),
        ),
        ("instance_number:<-100", Box::new(|i, _| i / 2 > 100)),
        ("", Box::new(|_, _| true)),
        ("   ", Box::new(|_, _| true)),
    ];
    for (filter, keep) in &cases {
        let want = expected(n, keep);
        assert!(
            !want.is_empty() && (want.len() < n as usize || filter.trim().is_empty()),
            "{filter} is not selective"
        );
        assert_eq!(ids(&catalog, filter), want, "{filter}");
    }
}

#[test]
fn keywords_match_whole_values_without_regard_to_case() {
    let (_dir, catalog) = catalog_of(48);
    let mr = expected(48, |_, m| m.modality == "MR");
    assert_eq!(ids(&catalog, "modality:MR"), mr);
    assert_eq!(ids(&catalog, "modality:mr"), mr);
    assert_eq!(
        ids(&catalog, "body_part:Brain"),
        expected(48, |_, m| m.body_part == "BRAIN")
    );
    assert_eq!(
        ids(&catalog, "patient_id:\"pat-002\""),
        (32..48).collect::<Vec<_>>()
    );
    // A keyword is matched whole: part of a UID or patient ID matches nothing.
    assert!(ids(&catalog, "patient_id:PAT").is_empty());
    assert!(ids(&catalog, "sop_instance_uid:1.2.826").is_empty());
}

#[test]
fn malformed_filters_say_what_is_wrong() {
    let (_dir, catalog) = catalog_of(8);
    let message = filter_error(&catalog, "modality:(MR");
    assert!(message.contains("syntax error"), "{message}");
    let message = filter_error(&catalog, "study_date:[2019 TO");
    assert!(message.contains("syntax error"), "{message}");
    let message = filter_error(&catalog, "abnormality:>high");
    assert!(message.contains("not a number"), "{message}");
    let message = filter_error(&catalog, "study_date:2019-01-01");
    assert!(message.contains("YYYYMMDD"), "{message}");
    let message = filter_error(&catalog, "brain");
    assert!(
        message.contains("names no field") && message.contains("body_part"),
        "{message}"
    );
    // The message reaches the user through the error's Display.
    let shown = catalog.filter("modality:(MR").unwrap_err().to_string();
    assert!(shown.starts_with("invalid filter:"), "{shown}");
}

#[test]
fn unknown_fields_are_named_with_the_known_ones() {
    let (_dir, catalog) = catalog_of(8);
    for filter in [
        "modalty:MR",
        "modality:MR AND birth:[1 TO 2]",
        "patient_key:1",
        "column_spacing:0.6",
    ] {
        let message = filter_error(&catalog, filter);
        assert!(message.contains("unknown field"), "{message}");
        for known in [
            "modality",
            "study_date",
            "abnormality",
            "series_description",
        ] {
            assert!(message.contains(known), "{message} should list {known}");
        }
    }
    assert!(filter_error(&catalog, "modalty:MR").contains("\"modalty\""));
}

#[test]
fn commits_are_visible_at_once_and_pending_adds_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path()).unwrap();
    catalog.add(&[entry(0), entry(1)]).unwrap();
    assert!(ids(&catalog, "").is_empty(), "pending adds are not visible");
    catalog
        .commit(Checkpoint {
            applied_seq: 2,
            records: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ids(&catalog, ""), [0, 1]);
    catalog.add(&[entry(2)]).unwrap();
    catalog
        .commit(Checkpoint {
            applied_seq: 3,
            records: 3,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ids(&catalog, ""), [0, 1, 2]);
}

#[test]
fn checkpoints_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(catalog.checkpoint(), Checkpoint::default());
        catalog.add(&[entry(0)]).unwrap();
        let checkpoint = Checkpoint {
            applied_seq: 17,
            records: 1,
            ..Default::default()
        };
        catalog.commit(checkpoint).unwrap();
        assert_eq!(catalog.checkpoint(), checkpoint);
        catalog
            .commit(Checkpoint {
                applied_seq: 18,
                records: 1,
                ..Default::default()
            })
            .unwrap();
    }
    let catalog = Catalog::open(dir.path()).unwrap();
    assert_eq!(
        catalog.checkpoint(),
        Checkpoint {
            applied_seq: 18,
            records: 1,
            ..Default::default()
        }
    );
    assert_eq!(ids(&catalog, ""), [0]);
}

#[test]
fn a_second_writer_is_refused_with_a_reason() {
    let (dir, _catalog) = catalog_of(1);
    match Catalog::open(dir.path()) {
        Err(error @ CatalogError::Locked { .. }) => {
            assert!(error.to_string().contains("another process"), "{error}")
        }
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn deletes_remove_exactly_the_target_and_persist() {
    let n = 64;
    type Level = (fn(&InstanceMetadata) -> String, fn(String) -> DeleteTarget);
    let levels: [Level; 4] = [
        (|m| m.patient_id.clone(), DeleteTarget::Patient),
        (|m| m.study_instance_uid.clone(), DeleteTarget::Study),
        (|m| m.series_instance_uid.clone(), DeleteTarget::Series),
        (|m| m.sop_instance_uid.clone(), DeleteTarget::Instance),
    ];
    for (identifier, target) in levels {
        let victim = identifier(&metadata(37));
        let doomed = expected(n, |_, m| identifier(m) == victim);
        let kept = expected(n, |_, m| identifier(m) != victim);
        assert!(doomed.len() >= 2 && doomed.contains(&37));
        let (dir, catalog) = catalog_of(n);
        let target = target(victim.clone());
        assert_eq!(catalog.delete(&target).unwrap(), doomed, "{target:?}");
        catalog
            .commit(Checkpoint {
                applied_seq: 99,
                records: 64,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(&catalog, ""), kept, "{target:?}");
        assert!(
            catalog
                .entries(&doomed)
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        assert_eq!(catalog.delete(&target).unwrap(), Vec::<RecordId>::new());
        drop(catalog);
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(ids(&catalog, ""), kept, "{target:?} after reopen");
        assert_eq!(ids(&catalog, "record:37"), Vec::<RecordId>::new());
        assert_eq!(catalog.counts().unwrap().records, kept.len() as u64);
    }
}

#[test]
fn a_delete_needs_an_identifier() {
    let (_dir, catalog) = catalog_of(4);
    assert!(matches!(
        catalog.delete(&DeleteTarget::Patient(String::new())),
        Err(CatalogError::EmptyTarget { level: "patient" })
    ));
}

#[test]
fn instances_list_their_frames_and_counts_are_distinct() {
    let (_dir, catalog) = catalog_of(64);
    let uid = Uid::parse(&metadata(21).sop_instance_uid).unwrap();
    assert_eq!(
        catalog.records_with(&UidLookup::instance(&uid)).unwrap(),
        [(20, 0), (21, 1)]
    );
    let unknown = Uid::parse("1.2.3.999").unwrap();
    assert!(
        catalog
            .records_with(&UidLookup::instance(&unknown))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        catalog.counts().unwrap(),
        CatalogCounts {
            records: 64,
            instances: 32,
            series: 16,
            studies: 8,
            patients: 4
        }
    );
    catalog
        .delete(&DeleteTarget::Study(metadata(0).study_instance_uid))
        .unwrap();
    catalog.commit(Checkpoint::default()).unwrap();
    assert_eq!(
        catalog.counts().unwrap(),
        CatalogCounts {
            records: 56,
            instances: 28,
            series: 14,
            studies: 7,
            patients: 4
        }
    );
}

#[test]
fn uid_lookups_match_exactly_and_agree_with_their_filters() {
    let n = 200;
    let (_dir, catalog) = catalog_of(n);
    type Level = (UidField, fn(&InstanceMetadata) -> String);
    let levels: [Level; 3] = [
        (UidField::Study, |m| m.study_instance_uid.clone()),
        (UidField::Series, |m| m.series_instance_uid.clone()),
        (UidField::SopInstance, |m| m.sop_instance_uid.clone()),
    ];
    for (field, identifier) in levels {
        // Record 10's study 1.2.826.0.1.1 is a prefix of studies 1.2.826.0.1.10 to .19, which a
        // prefix or wildcard match would take in.
        for record in [1, 10, 81, 199] {
            let text = identifier(&metadata(record));
            let uid = Uid::parse(&text).unwrap();
            let lookup = UidLookup::new(field, &uid);
            let want = expected(n, |_, m| identifier(m) == text);
            let got: Vec<RecordId> = catalog
                .records_with(&lookup)
                .unwrap()
                .into_iter()
                .map(|(record, _)| record)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            assert_eq!(got, want, "{lookup:?}");
            assert_eq!(ids(&catalog, &lookup.to_filter()), want, "{lookup:?}");
            // Narrowed to the frame of `record`.
            let frame = record % 2;
            let one = lookup.frame(frame);
            let want = expected(n, |i, m| identifier(m) == text && i % 2 == frame);
            let got: Vec<RecordId> = catalog
                .records_with(&one)
                .unwrap()
                .into_iter()
                .map(|(record, f)| {
                    assert_eq!(f, frame);
                    record
                })
                .collect();
            assert_eq!(got, want, "{one:?}");
            assert_eq!(ids(&catalog, &one.to_filter()), want, "{one:?}");
        }
    }
}

/// Why lookups take a `Uid` and never format a filter from what a peer sent: a quote in the
/// "UID" turns the filter into another query, here one that keeps every record. None of these
/// texts becomes a `Uid`, so none reaches a lookup.
#[test]
fn a_hostile_uid_cannot_become_a_lookup() {
    let (_dir, catalog) = catalog_of(32);
    let every = ids(&catalog, "");
    let hostile = format!(
        "{}\" OR record:>=0 OR study_instance_uid:\"0",
        metadata(0).study_instance_uid
    );
    assert_eq!(
        ids(&catalog, &format!("study_instance_uid:\"{hostile}\"")),
        every,
        "the injection the lookups avoid"
    );
    for text in [
        hostile.as_str(),
        "x\" OR *",
        "1.2\" OR study_instance_uid:*",
        "*",
        "1.2.826.0.1.*",
        "1.2.826.0.1.(0)",
        "study_instance_uid:1.2",
    ] {
        assert!(Uid::parse(text).is_err(), "{text}");
    }
}

#[test]
fn fields_describe_the_vocabulary() {
    let fields = Catalog::fields();
    let kind = |name: &str| fields.iter().find(|f| f.name == name).map(|f| f.kind);
    assert_eq!(kind("study_date"), Some(FieldKind::Date));
    assert_eq!(kind("modality"), Some(FieldKind::Keyword));
    assert_eq!(kind("series_description"), Some(FieldKind::Text));
    assert_eq!(kind("abnormality"), Some(FieldKind::Float));
    assert_eq!(kind("rows"), Some(FieldKind::Integer));
    assert_eq!(
        kind("patient_key"),
        None,
        "internal fields are not advertised"
    );
    assert!(fields.iter().all(|f| !f.description.is_empty()));
}

#[test]
fn hundred_thousand_records_add_commit_and_filter() {
    let n = 100_000u32;
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path()).unwrap();
    let entries: Vec<_> = (0..n).map(entry).collect();
    let start = Instant::now();
    for chunk in entries.chunks(1000) {
        catalog.add(chunk).unwrap();
    }
    let added = start.elapsed();
    catalog
        .commit(Checkpoint {
            applied_seq: 1,
            records: u64::from(n),
            ..Default::default()
        })
        .unwrap();
    let committed = start.elapsed();
    // abnormality(i) > 0.9 for i % 10 == 9: 10% of the records.
    let filter = "abnormality:>0.9";
    let mut times = Vec::new();
    let mut kept = 0;
    for _ in 0..5 {
        let t = Instant::now();
        kept = catalog.filter(filter).unwrap().len();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    assert_eq!(kept, n as usize / 10);
    let t = Instant::now();
    let mr = catalog
        .filter("modality:MR AND study_date:[20190101 TO 20191231]")
        .unwrap();
    let keyword_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let all = catalog.filter("").unwrap().len();
    let all_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(all, n as usize);
    times.sort_by(f64::total_cmp);
    println!(
        "catalog at {n} records: add {:.2} s ({:.0} records/s), add+commit {:.2} s \
         ({:.0} records/s); filter {filter:?} keeps {kept}: median {:.2} ms (min {:.2}); \
         modality+date keeps {}: {keyword_ms:.2} ms; empty filter: {all_ms:.2} ms",
        added.as_secs_f64(),
        f64::from(n) / added.as_secs_f64(),
        committed.as_secs_f64(),
        f64::from(n) / committed.as_secs_f64(),
        times[2],
        times[0],
        mr.len(),
    );
}
