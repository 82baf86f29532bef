//! A full disk loses nothing acknowledged, and the service carries on once space is freed —
//! on a real file system that fills up (a small tmpfs; see `support/small_disk.rs`).

#[path = "support/small_disk.rs"]
mod small_disk;

use std::collections::BTreeMap;

use diptych_service::store::{Wal, WalOptions, WalRecord};
use small_disk::SmallDisk;

/// Entry `tag`'s bytes: the tag, then a filler of its own (~20 KB).
fn payload(tag: u64) -> Vec<u8> {
    let mut bytes = vec![(tag % 251) as u8; 20_000 + (tag as usize % 7) * 1000];
    bytes[..8].copy_from_slice(&tag.to_le_bytes());
    bytes
}

#[test]
fn the_log_refuses_while_the_disk_is_full_and_accepts_again_once_space_is_freed() {
    let Some(disk) = SmallDisk::mount(2 << 20, "the full-disk log test") else {
        return;
    };
    let dir = disk.path().join("wal");
    let options = WalOptions {
        segment_bytes: 256 << 10,
        ..WalOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut acknowledged: BTreeMap<u64, u64> = BTreeMap::new();
    let mut refused = 0;
    {
        let (wal, _) = Wal::open(&dir, options.clone()).unwrap();
        let filler = disk.path().join("filler");
        std::fs::write(&filler, vec![0u8; 1 << 20]).unwrap();
        // Appends until the disk is full (across segment rotations), then a few more.
        let mut tag = 0u64;
        while refused < 5 {
            tag += 1;
            let answer = runtime.block_on(wal.append(WalRecord::Instance {
                dicom: payload(tag),
            }));
            match answer {
                Ok(seq) => {
                    assert_eq!(
                        refused, 0,
                        "an append succeeded between refusals on a full disk"
                    );
                    acknowledged.insert(seq, tag);
                }
                Err(error) => {
                    let message = error.to_string();
                    assert!(
                        message.contains("could not write") && message.contains("retry"),
                        "the refusal says what happened and what to do: {message}"
                    );
                    refused += 1;
                }
            }
            assert!(tag < 1000, "the 2 MiB disk never filled up");
        }
        assert!(
            acknowledged.len() > 10,
            "the disk filled before the test began"
        );
        // Space is freed: the same log (no restart) accepts writes again.
        std::fs::remove_file(&filler).unwrap();
        for _ in 0..10 {
            tag += 1;
            let seq = runtime
                .block_on(wal.append(WalRecord::Instance {
                    dicom: payload(tag),
                }))
                .expect("the log accepts writes once space is free again");
            acknowledged.insert(seq, tag);
        }
    }
    // Every acknowledged entry is there once, with its bytes, in order and without a hole; no
    // refused entry is.
    let (wal, recovery) = Wal::open(&dir, options).unwrap();
    assert!(
        recovery.corruptions.is_empty(),
        "the log was cut back cleanly after each failed write: {:?}",
        recovery.corruptions
    );
    let replayed: Vec<(u64, u64)> = wal
        .replay_after(0)
        .map(|entry| {
            let (seq, record) = entry.unwrap();
            let WalRecord::Instance { dicom } = record else {
                panic!("only instances were appended")
            };
            let tag = u64::from_le_bytes(dicom[..8].try_into().unwrap());
            assert_eq!(dicom, payload(tag), "entry {seq}'s bytes are intact");
            (seq, tag)
        })
        .collect();
    let expected: Vec<(u64, u64)> = acknowledged.into_iter().collect();
    assert_eq!(replayed, expected);
    let seqs: Vec<u64> = replayed.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs continue without a hole after the refusals: {seqs:?}"
    );
}
