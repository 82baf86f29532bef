//! Nothing acknowledged is lost, whatever fails after the acknowledgement.
//!
//! Each test acknowledges instances while a failure is injected into the apply worker — the
//! encoder, the code store's append (ENOSPC), the catalog's add, a checkpoint — or happens for
//! real (a small disk that fills up), lets the cause clear, and then shows every acknowledged
//! instance searchable exactly once: in the running index, and again after a restart that has
//! nothing left to replay. On the code before this test existed, each of these lost instances.

#[path = "support/serve.rs"]
mod serve;
#[path = "support/small_disk.rs"]
mod small_disk;
#[path = "support/index.rs"]
mod support_index;

use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support_index::{engine, options};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::Uid;
use diptych_dicom_adapter::synthetic::SyntheticInstance;
use diptych_service::catalog::UidLookup;
use diptych_service::encoder::Engine;
use diptych_service::index::{AcceptOutcome, DeleteCounts, FaultPoint, Faults, Index, Refusal};
use diptych_service::record::DeleteTarget;
use diptych_service::store::{Wal, WalOptions, WalRecord};

fn sop_uid(i: u64) -> String {
    format!("1.2.826.0.1.3680043.10.1001.{i}")
}

/// Phantom slice `i` as DICOM with SOP Instance UID [`sop_uid`]`(i)`.
fn instance(i: u64) -> Vec<u8> {
    let slice = PhantomGenerator::new(7, PhantomConfig::default()).slice(i);
    let mut instance = SyntheticInstance::from_phantom(&slice);
    instance.set(tags::SOP_INSTANCE_UID, VR::UI, sop_uid(i));
    instance.to_part10()
}

/// Offers instances `range` and returns those acknowledged.
async fn send(index: &Index, range: std::ops::Range<u64>) -> Vec<u64> {
    let mut acknowledged = Vec::new();
    for i in range {
        match index.accept(instance(i)).await.unwrap() {
            AcceptOutcome::Accepted { .. } => acknowledged.push(i),
            AcceptOutcome::Refused { refusal, .. } => {
                assert!(
                    !matches!(refusal, Refusal::CannotUnderstand(_)),
                    "instance {i} is valid: {refusal}"
                );
            }
            other => panic!("instance {i}: {other:?}"),
        }
    }
    acknowledged
}

async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn applied(index: &Index) {
    wait_until(
        "every acknowledged instance applied",
        Duration::from_secs(120),
        || index.counters.pending.load(Ordering::Relaxed) == 0,
    )
    .await;
}

/// Every instance of `acknowledged` has exactly one record in the catalog and the store, and
/// nothing else is indexed.
fn exactly_once(index: &Index, acknowledged: &[u64]) {
    for &i in acknowledged {
        let uid = Uid::parse(&sop_uid(i)).unwrap();
        let records = index
            .catalog()
            .records_with(&UidLookup::instance(&uid))
            .unwrap();
        assert_eq!(records.len(), 1, "instance {i} is indexed exactly once");
        assert!(
            index.codes_of(records[0].0).is_some(),
            "instance {i}'s record has its codes in the store"
        );
    }
    let counts = index.catalog().counts().unwrap();
    assert_eq!(counts.records, acknowledged.len() as u64, "catalog records");
    assert_eq!(
        index.record_counts().1,
        acknowledged.len(),
        "live store records"
    );
}

/// `/metrics` counts each of the `n` instances acknowledged and indexed once, redone work and
/// copies read back from the log included.
fn counted_once(index: &Index, n: u64) {
    let counted = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(
        (
            counted(&index.counters.acknowledged),
            counted(&index.counters.indexed)
        ),
        (n, n),
        "each instance acknowledged and indexed once"
    );
}

/// Closes the index, opens the folder again with nothing injected, and checks that nothing
/// was left to replay and everything is there once.
async fn restart_and_check(
    dir: &Path,
    engine: &Arc<Engine>,
    index: Arc<Index>,
    acknowledged: &[u64],
) {
    index.close().await;
    drop(index);
    let faults = Arc::new(Faults::default());
    let reopened = Index::open(dir, engine.clone(), options(&faults)).unwrap();
    assert_eq!(
        reopened.counters.pending.load(Ordering::Relaxed),
        0,
        "the restart finds nothing to replay: everything acknowledged was checkpointed"
    );
    exactly_once(&reopened, acknowledged);
    reopened.close().await;
}

/// Acknowledges 12 instances while `point` fails `times` times, then checks.
async fn survives(point: FaultPoint, times: u32) {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine().await;
    let faults = Arc::new(Faults::default());
    let index = Index::open(dir.path(), engine.clone(), options(&faults)).unwrap();
    // Some work is committed before the failures begin.
    let mut acknowledged = send(&index, 0..4).await;
    applied(&index).await;
    faults.fail_next(point, times);
    acknowledged.extend(send(&index, 4..12).await);
    assert_eq!(
        acknowledged.len(),
        12,
        "a short failure does not refuse anything"
    );
    applied(&index).await;
    assert_eq!(faults.injected(point), times, "the failures happened");
    exactly_once(&index, &acknowledged);
    counted_once(&index, 12);
    assert!(index.health().fault().is_none(), "the index recovered");
    restart_and_check(dir.path(), &engine, index, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_encoder_loses_nothing() {
    survives(FaultPoint::Encode, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_append_failing_with_enospc_loses_nothing() {
    survives(FaultPoint::StoreAppend, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_catalog_add_loses_nothing() {
    survives(FaultPoint::CatalogAdd, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_checkpoint_loses_nothing() {
    survives(FaultPoint::Checkpoint, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_failure_stops_acknowledgements_until_it_clears() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine().await;
    let faults = Arc::new(Faults::default());
    let index = Index::open(dir.path(), engine.clone(), options(&faults)).unwrap();
    faults.fail_next(FaultPoint::Encode, u32::MAX);
    let mut acknowledged = send(&index, 0..3).await;
    assert_eq!(
        acknowledged.len(),
        3,
        "acknowledged before the failure is known to persist"
    );
    wait_until(
        "the index to report its fault",
        Duration::from_secs(30),
        || index.health().fault().is_some(),
    )
    .await;
    let reason = index.health().fault().unwrap();
    assert!(
        reason.contains("encoding"),
        "the reason names what fails: {reason}"
    );
    match index.accept(instance(3)).await.unwrap() {
        AcceptOutcome::Refused {
            refusal: Refusal::Unavailable(message),
            ..
        } => assert!(message.contains("retry"), "{message}"),
        other => panic!("new work is refused while indexing fails: {other:?}"),
    }
    assert_eq!(
        index.counters.pending.load(Ordering::Relaxed),
        3,
        "still owed"
    );
    // The cause clears: the worker resumes by itself.
    faults.clear();
    applied(&index).await;
    wait_until("the fault to clear", Duration::from_secs(10), || {
        index.health().fault().is_none()
    })
    .await;
    acknowledged.extend(send(&index, 3..5).await);
    assert_eq!(
        acknowledged.len(),
        5,
        "acknowledged again once it recovered"
    );
    applied(&index).await;
    exactly_once(&index, &acknowledged);
    restart_and_check(dir.path(), &engine, index, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_free_space_floor_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine().await;
    let faults = Arc::new(Faults::default());
    let mut opts = options(&faults);
    opts.min_free_bytes = u64::MAX / 2;
    let index = Index::open(dir.path(), engine.clone(), opts).unwrap();
    match index.accept(instance(0)).await.unwrap() {
        AcceptOutcome::Refused {
            refusal: Refusal::DiskFull(message),
            ..
        } => assert!(message.contains("min_free_bytes"), "{message}"),
        other => panic!("refused below the floor: {other:?}"),
    }
    index.close().await;
    drop(index);
    let reopened = Index::open(dir.path(), engine, options(&faults)).unwrap();
    assert_eq!(
        reopened.counters.pending.load(Ordering::Relaxed),
        0,
        "nothing reached the log"
    );
    exactly_once(&reopened, &[]);
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_up_loses_nothing_and_ingest_resumes_once_space_is_freed() {
    let Some(disk) = small_disk::SmallDisk::mount(48 << 20, "the full-disk index test") else {
        return;
    };
    let dir = disk.path().join("data");
    let engine = engine().await;
    let faults = Arc::new(Faults::default());
    let index = Index::open(&dir, engine.clone(), options(&faults)).unwrap();
    let mut acknowledged = send(&index, 0..10).await;
    assert_eq!(acknowledged.len(), 10);
    applied(&index).await;
    let filler = disk.fill();
    assert!(disk.free_bytes() < 64 << 10, "the disk is full");
    // On a full disk, instances are refused (the log cannot write them) or, where they got in,
    // kept; none is lost.
    let during = send(&index, 10..20).await;
    assert!(during.len() < 10, "a full disk refuses some instances");
    acknowledged.extend(during);
    std::fs::remove_file(filler).unwrap();
    acknowledged.extend(send(&index, 20..30).await);
    applied(&index).await;
    wait_until("the fault to clear", Duration::from_secs(30), || {
        index.health().fault().is_none()
    })
    .await;
    exactly_once(&index, &acknowledged);
    assert!(
        acknowledged.iter().any(|&i| i >= 20),
        "ingest resumed once space was freed"
    );
    restart_and_check(&dir, &engine, index, &acknowledged).await;
}

/// A crash left 40 acknowledged instances in the log and nothing applied; the restart replays
/// them all, exactly once, holding no more decoded frames at once than the backlog bound (4)
/// allows, where reading the whole log into memory first would have held 40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_larger_than_the_backlog_bound_stays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let count = 40u64;
    {
        let (wal, _) = Wal::open(dir.path().join("wal"), WalOptions::default()).unwrap();
        for i in 0..count {
            wal.append_blocking(WalRecord::Instance { dicom: instance(i) })
                .unwrap();
        }
    }
    let engine = engine().await;
    let faults = Arc::new(Faults::default());
    let mut opts = options(&faults);
    opts.max_backlog_frames = 4;
    let index = Index::open(dir.path(), engine.clone(), opts).unwrap();
    applied(&index).await;
    let acknowledged: Vec<u64> = (0..count).collect();
    exactly_once(&index, &acknowledged);
    let peak = index.counters.replay_frames_peak.load(Ordering::Relaxed);
    assert!(
        (1..=4).contains(&peak),
        "the replay held {peak} decoded frames at once; the bound is 4"
    );
    restart_and_check(dir.path(), &engine, index, &acknowledged).await;
}

/// The pixels of an instance are decoded while its bytes are written to the log (one sender's
/// wait is the longer of the two, not their sum). An instance whose header is fine but whose
/// pixels cannot be pre-processed is refused all the same, though its bytes reached the log:
/// the worker moves past that entry at once (the next instance is not held up behind it), it
/// counts as nothing pending, and a replay of the log skips it as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_pixels_fail_while_its_log_write_runs_is_refused_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine().await;
    let faults = Arc::new(Faults::default());
    let index = Index::open(dir.path(), engine.clone(), options(&faults)).unwrap();
    let mut acknowledged = send(&index, 0..2).await;
    applied(&index).await;

    // A rescale slope this large turns the stored values into infinities: decoding refuses
    // the frame, after the header was read and while the log write runs.
    let slice = PhantomGenerator::new(7, PhantomConfig::default()).slice(100);
    let mut bad = SyntheticInstance::from_phantom(&slice);
    bad.set(tags::SOP_INSTANCE_UID, VR::UI, sop_uid(100));
    bad.set(tags::RESCALE_SLOPE, VR::DS, "1e38".into());
    let logged = index.log_position().unwrap();
    match index.accept(bad.to_part10()).await.unwrap() {
        AcceptOutcome::Refused {
            sop_instance_uid,
            refusal: Refusal::CannotUnderstand(reason),
        } => {
            assert_eq!(sop_instance_uid.as_deref(), Some(sop_uid(100).as_str()));
            assert!(reason.contains("not a finite number"), "{reason}");
        }
        other => panic!("an undecodable instance must be refused as such: {other:?}"),
    }
    assert_eq!(
        index.log_position(),
        Some(logged + 1),
        "its bytes reached the log while its pixels were decoded"
    );

    // The next instance is applied at once: the worker did not wait for the refused entry
    // (a gap is only read back from the log after 5 s).
    acknowledged.extend(send(&index, 2..3).await);
    wait_until(
        "the instance after the refused one applied",
        Duration::from_secs(4),
        || index.counters.pending.load(Ordering::Relaxed) == 0,
    )
    .await;
    exactly_once(&index, &acknowledged);
    assert_eq!(index.counters.acknowledged.load(Ordering::Relaxed), 3);

    // A copy that decodes, sent after the refusal, is accepted: the refused one holds no claim.
    acknowledged.extend(send(&index, 100..101).await);
    applied(&index).await;
    exactly_once(&index, &acknowledged);

    restart_and_check(dir.path(), &engine, index, &acknowledged).await;

    // A crash that leaves such an entry in the log between two good ones: the replay skips it.
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path().join("wal"), WalOptions::default()).unwrap();
        for dicom in [instance(0), bad.to_part10(), instance(1)] {
            wal.append_blocking(WalRecord::Instance { dicom }).unwrap();
        }
    }
    let index = Index::open(dir.path(), engine.clone(), options(&faults)).unwrap();
    applied(&index).await;
    restart_and_check(dir.path(), &engine, index, &[0, 1]).await;
}

/// Spawns `call` with the next hand-over stalled (`FaultPoint::SlowHandOver`) and returns once
/// `who` — the caller inside `call` — has made its log append and stalled.
async fn spawn_stalled<T: Send + 'static>(
    faults: &Faults,
    who: &str,
    call: impl Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let before = faults.injected(FaultPoint::SlowHandOver);
    faults.fail_next(FaultPoint::SlowHandOver, 1);
    let handle = tokio::spawn(call);
    wait_until(
        &format!("{who} stalled after its log append"),
        Duration::from_secs(30),
        || faults.injected(FaultPoint::SlowHandOver) == before + 1,
    )
    .await;
    handle
}

/// An acceptor that stalls between its log append and its hand-over for longer than the worker
/// waits for a sequence gap: the worker reads the entry back from the log and applies it, and the
/// acceptor's copy, arriving after, is dropped. Every instance is indexed once, and a delete's
/// caller still hears what its delete removed. Before this test existed, the late copy was
/// applied a second time (the instance indexed twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acceptor_slower_than_the_gap_patience_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine().await;
    let faults = Arc::new(Faults::default());
    let index = Index::open(dir.path(), engine.clone(), options(&faults)).unwrap();
    let mut acknowledged = send(&index, 0..2).await;
    applied(&index).await;
    let late = || index.counters.late_copies.load(Ordering::Relaxed);
    let pending = || index.counters.pending.load(Ordering::Relaxed);

    // Instance 2's acceptor stalls after its log append; instance 3 comes in behind it.
    let slow = {
        let index = index.clone();
        spawn_stalled(&faults, "instance 2's acceptor", async move {
            index.accept(instance(2)).await.unwrap()
        })
        .await
    };
    acknowledged.extend(send(&index, 3..4).await);
    match slow.await.unwrap() {
        AcceptOutcome::Accepted { .. } => acknowledged.push(2),
        other => panic!("the slow acceptor's instance is acknowledged: {other:?}"),
    }
    wait_until("the late copy handled", Duration::from_secs(30), || {
        pending() == 0 && late() == 1
    })
    .await;
    exactly_once(&index, &acknowledged);
    counted_once(&index, 4);

    // A delete whose caller stalls the same way: it is applied from the log, and the caller,
    // whose copy is dropped, hears what it removed.
    let deleting = {
        let index = index.clone();
        spawn_stalled(&faults, "the delete's caller", async move {
            index.delete(DeleteTarget::Instance(sop_uid(0))).await
        })
        .await
    };
    acknowledged.extend(send(&index, 4..5).await);
    let counts = deleting
        .await
        .unwrap()
        .expect("the delete's caller hears its outcome");
    assert_eq!(
        counts,
        DeleteCounts {
            records: 1,
            instances: 1
        }
    );
    wait_until(
        "the delete's late copy handled",
        Duration::from_secs(30),
        || pending() == 0 && late() == 2,
    )
    .await;
    acknowledged.retain(|&i| i != 0);
    exactly_once(&index, &acknowledged);
    restart_and_check(dir.path(), &engine, index, &acknowledged).await;
}
