//! The store's durability promise against a real crash: a writer process appends to the
//! write-ahead log from many tasks and prints every acknowledged seq; it is killed with
//! SIGKILL mid-stream; the log, reopened, holds every acknowledged entry exactly once.
//!
//! The writer is this same test executable, started with `WRITER_ENV` set (no helper binary
//! is needed): the test below acts as the writer when it finds the variable.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diptych_service::store::{Wal, WalOptions, WalRecord};

const TEST_NAME: &str = "acknowledged_appends_survive_sigkill_at_any_moment";
const WRITER_ENV: &str = "DIPTYCH_STORE_TEST_WRITER_DIR";
const ROUND_ENV: &str = "DIPTYCH_STORE_TEST_WRITER_ROUND";

/// The DICOM stand-in of entry `tag`: the tag, then a filler whose length depends on the tag
/// (up to ~300 KB, so large bodies are written in several system calls and can tear).
fn payload(tag: u64) -> Vec<u8> {
    let len = 8 + (tag.wrapping_mul(7919) % 300_000) as usize;
    let mut bytes = vec![(tag % 251) as u8; len];
    bytes[..8].copy_from_slice(&tag.to_le_bytes());
    bytes
}

/// Small segments, so the crash also lands near rotations.
fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 4 << 20,
        ..WalOptions::default()
    }
}

/// The writer process: 8 tasks append until killed, printing `ACK <seq> <tag>` per answer.
fn run_writer(dir: &Path, round: u64) {
    let (wal, _) = Wal::open(dir, options()).expect("the writer opens the log");
    let wal = Arc::new(wal);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60); // never outlive a dead parent long
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let wal = Arc::clone(&wal);
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    if Instant::now() > deadline {
                        return;
                    }
                    let tag = round * 1_000_000_000 + task * 1_000_000 + i;
                    let seq = wal
                        .append(WalRecord::Instance {
                            dicom: payload(tag),
                        })
                        .await
                        .expect("append");
                    // Straight to the process's stdout (not the test harness's capture).
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {seq} {tag}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_appends_survive_sigkill_at_any_moment() {
    if let Ok(dir) = std::env::var(WRITER_ENV) {
        let round = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
        run_writer(Path::new(&dir), round);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: HashMap<u64, u64> = HashMap::new(); // seq -> tag
    for round in 1..=3u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the writer process");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 150 + 70 * round as usize;
        let mut seen = 0;
        let mut ack = |line: &str| {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (seq, tag) = rest.split_once(' ').unwrap();
                let (seq, tag) = (seq.parse::<u64>().unwrap(), tag.parse::<u64>().unwrap());
                assert!(
                    acknowledged.insert(seq, tag).is_none(),
                    "seq {seq} was acknowledged twice"
                );
                return true;
            }
            false
        };
        while seen < kill_after {
            let line = lines
                .next()
                .expect("the writer stopped before it was killed")
                .unwrap();
            seen += ack(&line) as usize;
        }
        child.kill().expect("SIGKILL the writer");
        // Acknowledgements already printed before the kill count too.
        for line in lines {
            ack(&line.unwrap());
        }
        child.wait().unwrap();

        let (wal, recovery) = Wal::open(dir.path(), options()).expect("reopen after the crash");
        for c in &recovery.corruptions {
            println!("round {round}: recovered from {c}");
        }
        let mut found: HashMap<u64, u64> = HashMap::new();
        let mut previous = 0;
        for entry in wal.replay_after(0) {
            let (seq, record) = entry.expect("every replayed entry reads back");
            assert!(seq > previous, "seqs increase: {seq} after {previous}");
            previous = seq;
            let WalRecord::Instance { dicom } = record else {
                panic!("only instances were written")
            };
            let tag = u64::from_le_bytes(dicom[..8].try_into().unwrap());
            assert_eq!(dicom, payload(tag), "entry {seq} reads back intact");
            found.insert(seq, tag);
        }
        for (seq, tag) in &acknowledged {
            assert_eq!(
                found.get(seq),
                Some(tag),
                "acknowledged seq {seq} is missing or holds another entry after round {round}"
            );
        }
        println!(
            "round {round}: {} acknowledged in total, {} in the log, {} segments, {} damaged tails",
            acknowledged.len(),
            found.len(),
            recovery.segments,
            recovery.corruptions.len()
        );
    }
}
