//! What real archives send, through the service's own accept path (the one C-STORE and Ingest
//! share): colour and palette images are indexed as luma slices; segmentations, RT Dose, RT Plan
//! and structured reports are answered success and counted as not indexed; file meta groups with
//! slightly malformed UIDs are read on. The objects are written by pydicom
//! (`dicom-adapter/tests/python/archive_objects.py`); the adapter's own tests check the pixels.

#[path = "support/serve.rs"]
mod serve;
#[path = "support/index.rs"]
mod support_index;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use diptych_service::index::{AcceptOutcome, Faults, Index};
use support_index::{engine, options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_palette_and_non_image_objects_get_what_an_archive_expects() {
    let objects = tempfile::tempdir().unwrap();
    let script = serve::workspace().join("dicom-adapter/tests/python/archive_objects.py");
    let made = Command::new(serve::python())
        .arg(&script)
        .arg(objects.path())
        .output()
        .expect("running pydicom");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let data = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let index = Index::open(data.path(), engine().await, options(&faults)).unwrap();
    let images = [
        "rgb",
        "rgb_planar",
        "ybr_full",
        "ybr_full_planar",
        "ybr_full_422",
        "palette8_lut8",
        "palette8_lut16",
        "palette16_lut16",
        "meta_leading_zero",
        "meta_padding_differs",
        "meta_trailing_nul",
        "meta_trailing_space",
        "mono32_unsigned",
    ];
    for name in images {
        let bytes = std::fs::read(objects.path().join(format!("{name}.dcm"))).unwrap();
        let outcome = index.accept(bytes).await.unwrap();
        assert!(
            matches!(outcome, AcceptOutcome::Accepted { slices: 1, .. }),
            "{name} is an image to index: {outcome:?}"
        );
    }
    for name in ["seg", "rtdose", "rtplan", "sr"] {
        let bytes = std::fs::read(objects.path().join(format!("{name}.dcm"))).unwrap();
        let outcome = index.accept(bytes).await.unwrap();
        assert_eq!(
            outcome,
            AcceptOutcome::NonImage,
            "{name}: answered success, not indexed"
        );
    }
    assert_eq!(index.counters.non_image.load(Ordering::Relaxed), 4);
    let started = Instant::now();
    while index.counters.pending.load(Ordering::Relaxed) > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        index.catalog().counts().unwrap().records,
        images.len() as u64,
        "every image is searchable, nothing else is"
    );
    index.close().await;
}
