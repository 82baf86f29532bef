use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};

use super::*;
use crate::record::DeleteTarget;

fn instance(tag: u64, len: usize) -> WalRecord {
    let mut dicom = vec![0u8; len];
    for (i, b) in dicom.iter_mut().enumerate() {
        *b = (tag as usize * 31 + i * 7) as u8;
    }
    WalRecord::Instance { dicom }
}

fn open(dir: &Path) -> (Wal, WalRecovery) {
    Wal::open(dir, WalOptions::default()).expect("open the log")
}

fn replay(wal: &Wal, after: u64) -> Vec<(u64, WalRecord)> {
    wal.replay_after(after)
        .collect::<Result<_, _>>()
        .expect("replay")
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

#[test]
fn entries_round_trip_across_reopen_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let records = vec![
        instance(1, 1000),
        WalRecord::Delete {
            target: DeleteTarget::Patient("PAT-1".into()),
        },
        instance(2, 0),
        WalRecord::Delete {
            target: DeleteTarget::Study("1.2.3".into()),
        },
        WalRecord::Delete {
            target: DeleteTarget::Series("1.2.3.4".into()),
        },
        WalRecord::Delete {
            target: DeleteTarget::Instance("1.2.3.4.5".into()),
        },
        instance(3, 300 << 10), // written directly, past the batch buffer
    ];
    {
        let (wal, recovery) = open(dir.path());
        assert_eq!(recovery.entries, 0);
        assert_eq!(wal.last_seq(), None);
        let seqs: Vec<u64> = records
            .iter()
            .map(|r| wal.append_blocking(r.clone()).unwrap())
            .collect();
        assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>());
        assert_eq!(wal.last_seq(), Some(records.len() as u64));
        // Readable before the reopen too.
        assert_eq!(replay(&wal, 0).len(), records.len());
    }
    let (wal, recovery) = open(dir.path());
    assert!(
        recovery.corruptions.is_empty(),
        "{:?}",
        recovery.corruptions
    );
    assert_eq!(recovery.entries, records.len() as u64);
    let all = replay(&wal, 0);
    assert_eq!(
        all.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        records
    );
    let tail = replay(&wal, 5);
    assert_eq!(
        tail.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![6, 7],
        "replay_after(5) starts at seq 6"
    );
    assert_eq!(tail[1].1, records[6]);
}

#[test]
fn concurrent_appenders_get_distinct_seqs_and_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path());
    let wal = Arc::new(wal);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    const TASKS: u64 = 16;
    const EACH: u64 = 25;
    let seqs = runtime.block_on(async {
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let wal = Arc::clone(&wal);
            handles.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    seqs.push(wal.append(instance(t * 1000 + i, 2000)).await.unwrap());
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    });
    let appends = TASKS * EACH;
    let distinct: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        appends,
        "every append has its own seq"
    );
    assert_eq!(distinct, (1..=appends).collect::<HashSet<_>>());
    let fsyncs = wal.fsyncs();
    println!("group commit: {appends} appends from {TASKS} tasks took {fsyncs} fsyncs");
    assert!(
        fsyncs * 4 <= appends,
        "{fsyncs} fsyncs for {appends} appends: group commit is not batching"
    );
    assert_eq!(replay(&wal, 0).len() as u64, appends);
}

#[test]
fn a_torn_tail_is_reported_cut_off_and_followed_by_new_entries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = open(dir.path());
        for i in 0..3 {
            wal.append_blocking(instance(i, 500)).unwrap();
        }
    }
    let segment = segment_files(dir.path()).pop().unwrap();
    let full = std::fs::metadata(&segment).unwrap().len();
    // Cut the last entry in the middle of its payload, as a crash mid-write would.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(full - 100)
        .unwrap();
    let entry_len = 8 + 9 + 500;
    {
        let (wal, recovery) = open(dir.path());
        assert_eq!(recovery.corruptions.len(), 1, "{:?}", recovery.corruptions);
        let c = &recovery.corruptions[0];
        assert_eq!(c.offset, full - entry_len);
        assert!(c.truncated && c.reason.contains("past the end"), "{c}");
        assert_eq!(recovery.entries, 2);
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            full - entry_len,
            "the segment is cut back to its last valid entry"
        );
        assert_eq!(replay(&wal, 0).len(), 2);
        assert_eq!(wal.append_blocking(instance(9, 10)).unwrap(), 3);
    }
    let (wal, recovery) = open(dir.path());
    assert!(
        recovery.corruptions.is_empty(),
        "{:?}",
        recovery.corruptions
    );
    let all = replay(&wal, 0);
    assert_eq!(all.len(), 3);
    assert_eq!(all[2], (3, instance(9, 10)));
}

#[test]
fn a_flipped_byte_stops_the_segment_at_the_entry_before_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = open(dir.path());
        for i in 0..4 {
            wal.append_blocking(instance(i, 100)).unwrap();
        }
    }
    let segment = segment_files(dir.path()).pop().unwrap();
    let entry_len = 8 + 9 + 100u64;
    let second = HEADER_LEN + entry_len;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[(second + 40) as usize] ^= 0x10;
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&bytes).unwrap();
    drop(file);
    {
        let (wal, recovery) = open(dir.path());
        assert_eq!(recovery.corruptions.len(), 1);
        let c = &recovery.corruptions[0];
        assert_eq!((c.offset, c.discarded_bytes), (second, 3 * entry_len));
        assert!(c.reason.contains("checksum"), "{c}");
        let all = replay(&wal, 0);
        assert_eq!(all, vec![(1, instance(0, 100))], "nothing after the damage");
        assert_eq!(wal.append_blocking(instance(7, 100)).unwrap(), 2);
    }
    let (wal, recovery) = open(dir.path());
    assert!(recovery.corruptions.is_empty());
    assert_eq!(
        replay(&wal, 0),
        vec![(1, instance(0, 100)), (2, instance(7, 100))]
    );
}

#[test]
fn damage_in_an_older_segment_skips_only_the_rest_of_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_bytes: HEADER_LEN + 3 * (8 + 9 + 100),
        ..WalOptions::default()
    };
    {
        let (wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
        for i in 0..7 {
            wal.append_blocking(instance(i, 100)).unwrap();
        }
        assert_eq!(wal.segment_count(), 3, "3 + 3 + 1 entries");
    }
    let first = segment_files(dir.path())[0].clone();
    let first_len = std::fs::metadata(&first).unwrap().len();
    let mut bytes = std::fs::read(&first).unwrap();
    let third = (HEADER_LEN + 2 * (8 + 9 + 100)) as usize;
    bytes[third + 4] ^= 0xff; // its checksum
    std::fs::write(&first, &bytes).unwrap();
    let (wal, recovery) = Wal::open(dir.path(), options).unwrap();
    assert_eq!(recovery.corruptions.len(), 1);
    assert!(!recovery.corruptions[0].truncated);
    assert_eq!(
        std::fs::metadata(&first).unwrap().len(),
        first_len,
        "an older segment is left as it is"
    );
    let seqs: Vec<u64> = replay(&wal, 0).into_iter().map(|(s, _)| s).collect();
    assert_eq!(seqs, vec![1, 2, 4, 5, 6, 7]);
}

#[test]
fn the_seq_continues_after_restart_even_when_every_entry_was_pruned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = open(dir.path());
        for i in 0..5 {
            wal.append_blocking(instance(i, 10)).unwrap();
        }
    }
    {
        let (wal, recovery) = open(dir.path());
        assert_eq!(recovery.last_seq, Some(5));
        assert_eq!(wal.append_blocking(instance(5, 10)).unwrap(), 6);
        wal.rotate().unwrap();
        assert_eq!(wal.prune_through(6).unwrap(), 1);
        assert!(replay(&wal, 0).is_empty());
    }
    let (wal, recovery) = open(dir.path());
    assert_eq!(recovery.entries, 0);
    assert_eq!(wal.append_blocking(instance(6, 10)).unwrap(), 7);
}

#[test]
fn prune_removes_segments_whose_entries_are_applied_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_bytes: HEADER_LEN + 2 * (8 + 9 + 50),
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    for i in 0..6 {
        wal.append_blocking(instance(i, 50)).unwrap();
    }
    // Segments: [1,2] [3,4] [5,6] (active).
    assert_eq!(segment_files(dir.path()).len(), 3);
    assert_eq!(wal.prune_through(3).unwrap(), 1, "[3,4] still holds seq 4");
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(
        wal.prune_through(100).unwrap(),
        1,
        "the active segment stays"
    );
    wal.rotate().unwrap();
    assert_eq!(wal.prune_through(6).unwrap(), 1);
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert!(replay(&wal, 0).is_empty());
    assert_eq!(wal.append_blocking(instance(7, 50)).unwrap(), 7);
    assert_eq!(replay(&wal, 0), vec![(7, instance(7, 50))]);
}

#[test]
fn oversized_entries_are_refused_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        max_entry_bytes: 1000,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    let err = wal.append_blocking(instance(0, 2000)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::EntryTooLarge {
                bytes: 2017,
                max: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("raise the WAL entry limit"));
    assert_eq!(wal.append_blocking(instance(0, 900)).unwrap(), 1);
}

#[test]
fn a_second_open_of_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_wal, _) = open(dir.path());
    let err = Wal::open(dir.path(), WalOptions::default()).err().unwrap();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn a_segment_whose_creation_was_cut_short_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = open(dir.path());
        wal.append_blocking(instance(0, 10)).unwrap();
    }
    let torn = dir.path().join(segment::file_name(2));
    std::fs::write(&torn, b"DIPTW").unwrap();
    let (wal, recovery) = open(dir.path());
    assert_eq!(recovery.corruptions.len(), 1);
    assert!(!torn.exists() || std::fs::metadata(&torn).unwrap().len() == HEADER_LEN);
    assert_eq!(wal.append_blocking(instance(1, 10)).unwrap(), 2);
    assert_eq!(replay(&wal, 0).len(), 2);
}

#[test]
fn a_foreign_file_named_like_a_segment_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join(segment::file_name(1));
    std::fs::write(&foreign, vec![7u8; 100]).unwrap();
    let err = Wal::open(dir.path(), WalOptions::default()).err().unwrap();
    assert!(matches!(err, StoreError::NotASegment { .. }), "{err}");
    assert!(err.to_string().contains(&foreign.display().to_string()));
}

#[test]
fn debug_output_never_shows_payloads() {
    let shown = format!(
        "{:?} {:?}",
        WalRecord::Instance {
            dicom: b"PATIENT-NAME".to_vec()
        },
        WalRecord::Delete {
            target: DeleteTarget::Patient("PAT-SECRET".into())
        }
    );
    assert!(
        !shown.contains("PATIENT") && !shown.contains("SECRET"),
        "{shown}"
    );
}
