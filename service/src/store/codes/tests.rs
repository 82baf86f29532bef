use std::time::Instant;

use super::*;

fn stamp() -> ModelStamp {
    ModelStamp {
        model_id: "phantom-v1".into(),
        positions: 16,
        codebook_size: 256,
    }
}

fn record(i: u32, positions: usize) -> NewRecord {
    NewRecord {
        normal: (0..positions).map(|p| (i as usize * 3 + p) as u8).collect(),
        abnormal: (0..positions)
            .map(|p| (i as usize * 5 + p * 2) as u8)
            .collect(),
        keys: RecordKeys {
            patient: 1000 + i as u64 / 10,
            study: 2000 + i as u64,
            series: 3000 + i as u64,
            instance: 4000 + i as u64,
            frame: i % 3,
        },
        abnormality: i as f32 * 0.25,
    }
}

fn records(range: Range<u32>) -> Vec<NewRecord> {
    range.map(|i| record(i, 16)).collect()
}

fn assert_holds(store: &CodeStore, expected: &[NewRecord]) {
    let view = store.view();
    assert_eq!(view.len(), expected.len());
    assert_eq!(view.normal().len(), expected.len() * 16);
    for (i, r) in expected.iter().enumerate() {
        assert_eq!(view.normal_code(i as u32), r.normal.as_slice());
        assert_eq!(view.abnormal_code(i as u32), r.abnormal.as_slice());
        assert_eq!(&view.normal()[i * 16..(i + 1) * 16], r.normal.as_slice());
        let entry = view.records()[i];
        assert_eq!(entry.keys(), r.keys);
        assert_eq!(entry.abnormality(), r.abnormality);
        assert!(!entry.is_deleted());
    }
}

#[test]
fn appended_records_read_back_through_the_view_past_several_growths() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CodeStore::open(dir.path(), stamp()).unwrap();
    let all = records(0..10_000);
    assert_eq!(store.append(&all[..1]).unwrap(), 0..1);
    // 4096 initial rows, then × 1.5: the remaps keep earlier rows.
    assert_eq!(store.append(&all[1..5000]).unwrap(), 1..5000);
    assert_eq!(store.append(&all[5000..]).unwrap(), 5000..10_000);
    assert_eq!((store.len(), store.live_len()), (10_000, 10_000));
    assert_holds(&store, &all);
}

#[test]
fn reopening_keeps_exactly_the_records_of_the_last_sync() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(0..300);
    {
        let mut store = CodeStore::open(dir.path(), stamp()).unwrap();
        store.append(&all[..200]).unwrap();
        store.sync().unwrap();
        assert_eq!(store.synced_len(), 200);
        // Appended after the sync: visible now, gone after a crash (here: a drop).
        store.append(&all[200..]).unwrap();
        assert_eq!(store.view().len(), 300);
    }
    let mut store = CodeStore::open(dir.path(), stamp()).unwrap();
    assert_eq!(store.len(), 200);
    assert_holds(&store, &all[..200]);
    assert_eq!(store.append(&all[200..201]).unwrap(), 200..201);
    assert_holds(&store, &all[..201]);
}

#[test]
fn tombstones_zero_the_record_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = CodeStore::open(dir.path(), stamp()).unwrap();
        store.append(&records(0..50)).unwrap();
        store.sync().unwrap();
        assert_eq!(store.tombstone(&[3, 7, 7, 49]).unwrap(), 3);
        assert_eq!(store.tombstone(&[3]).unwrap(), 0, "already deleted");
        assert_eq!(store.live_len(), 47);
        store.sync().unwrap();
    }
    let store = CodeStore::open(dir.path(), stamp()).unwrap();
    assert_eq!((store.len(), store.live_len()), (50, 47));
    let view = store.view();
    for id in [3u32, 7, 49] {
        let entry = view.records()[id as usize];
        assert!(entry.is_deleted());
        assert_eq!(
            entry.keys(),
            RecordKeys::default(),
            "no key of a deleted record stays"
        );
        assert!(view.normal_code(id).iter().all(|&c| c == 0));
        assert!(view.abnormal_code(id).iter().all(|&c| c == 0));
    }
    assert!(!view.records()[4].is_deleted());
    assert_eq!(view.normal_code(4), record(4, 16).normal.as_slice());
}

#[test]
fn tombstoning_an_unknown_record_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CodeStore::open(dir.path(), stamp()).unwrap();
    store.append(&records(0..5)).unwrap();
    let err = store.tombstone(&[1, 5]).unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange { .. }), "{err}");
    assert_eq!(store.live_len(), 5);
}

#[test]
fn truncate_drops_the_tail_durably_and_appends_reuse_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(0..100);
    {
        let mut store = CodeStore::open(dir.path(), stamp()).unwrap();
        store.append(&all).unwrap();
        store.tombstone(&[10, 90]).unwrap();
        store.sync().unwrap();
        store.truncate(60).unwrap();
        assert_eq!(
            (store.len(), store.live_len(), store.synced_len()),
            (60, 59, 60)
        );
        assert!(store.truncate(61).is_err());
    }
    let mut store = CodeStore::open(dir.path(), stamp()).unwrap();
    assert_eq!((store.len(), store.live_len()), (60, 59));
    assert_eq!(store.append(&all[..1]).unwrap(), 60..61);
    assert_eq!(store.view().normal_code(60), all[0].normal.as_slice());
}

#[test]
fn a_store_of_another_model_is_refused_naming_both_models() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = CodeStore::open(dir.path(), stamp()).unwrap();
        store.append(&records(0..3)).unwrap();
        store.sync().unwrap();
    }
    let other = ModelStamp {
        model_id: "brain-v2".into(),
        ..stamp()
    };
    let err = CodeStore::open(dir.path(), other).err().unwrap();
    let message = err.to_string();
    assert!(matches!(err, StoreError::ModelMismatch { .. }));
    for part in ["phantom-v1", "brain-v2", "--data-dir", "re-index"] {
        assert!(message.contains(part), "{message}");
    }
    let regridded = ModelStamp {
        positions: 64,
        ..stamp()
    };
    assert!(matches!(
        CodeStore::open(dir.path(), regridded),
        Err(StoreError::ModelMismatch { .. })
    ));
    // The right model still opens it, unchanged.
    assert_eq!(CodeStore::open(dir.path(), stamp()).unwrap().len(), 3);
}

#[test]
fn codebooks_larger_than_a_byte_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wide = ModelStamp {
        codebook_size: 512,
        ..stamp()
    };
    let err = CodeStore::open(dir.path().join("codes"), wide)
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::UnsupportedModel { .. }), "{err}");
    assert!(err.to_string().contains("K = 512"), "{err}");
    assert!(!dir.path().join("codes").exists(), "nothing is created");
}

#[test]
fn malformed_records_are_refused_and_the_store_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let small_k = ModelStamp {
        codebook_size: 64,
        ..stamp()
    };
    let mut store = CodeStore::open(dir.path(), small_k).unwrap();
    let good = NewRecord {
        normal: vec![63; 16],
        abnormal: vec![0; 16],
        ..record(0, 16)
    };
    let cases = [
        (
            NewRecord {
                normal: vec![0; 15],
                ..good.clone()
            },
            "15 indices",
        ),
        (
            NewRecord {
                abnormal: vec![0; 17],
                ..good.clone()
            },
            "abnormal code has 17",
        ),
        (
            NewRecord {
                normal: vec![64; 16],
                ..good.clone()
            },
            "index 64",
        ),
        (
            NewRecord {
                abnormality: f32::NAN,
                ..good.clone()
            },
            "abnormality",
        ),
    ];
    for (bad, expected) in cases {
        let err = store.append(&[good.clone(), bad]).unwrap_err();
        assert!(
            matches!(err, StoreError::BadRecord { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(expected), "{err}");
        assert_eq!(store.len(), 0, "all or nothing");
    }
    assert_eq!(store.append(&[good]).unwrap(), 0..1);
}

#[test]
fn a_header_committing_more_rows_than_the_files_hold_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(CodeStore::open(dir.path(), stamp()).unwrap());
    Header::new(&stamp(), 1_000_000).write(dir.path()).unwrap();
    let err = CodeStore::open(dir.path(), stamp()).err().unwrap();
    assert!(matches!(err, StoreError::CorruptStore { .. }), "{err}");
    assert!(err.to_string().contains("normal.u8"), "{err}");
}

#[test]
fn a_second_open_of_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = CodeStore::open(dir.path(), stamp()).unwrap();
    assert!(matches!(
        CodeStore::open(dir.path(), stamp()),
        Err(StoreError::Locked { .. })
    ));
}

/// Prints (does not assert: timings on a shared machine) how long opening a store of one
/// million records of the shipped geometry takes; opening reads only the header.
#[test]
fn opening_a_million_records_reads_only_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = ModelStamp {
        model_id: "phantom-v1".into(),
        positions: 256,
        codebook_size: 256,
    };
    let n = 1_000_000u32;
    {
        let mut store = CodeStore::open(dir.path(), stamp.clone()).unwrap();
        let chunk: Vec<NewRecord> = (0..10_000).map(|i| record(i, 256)).collect();
        for _ in 0..n / 10_000 {
            store.append(&chunk).unwrap();
        }
        store.sync().unwrap();
    }
    let started = Instant::now();
    let store = CodeStore::open(dir.path(), stamp).unwrap();
    let opened = started.elapsed();
    assert_eq!(store.len(), n as usize);
    let view = store.view();
    assert_eq!(view.normal().len(), n as usize * 256);
    assert_eq!(
        view.normal_code(n - 1),
        record(9_999, 256).normal.as_slice()
    );
    println!(
        "code store: opened {n} records ({} MiB of codes and entries) in {:.2} ms",
        (n as usize * (2 * 256 + 48)) >> 20,
        opened.as_secs_f64() * 1e3
    );
}
