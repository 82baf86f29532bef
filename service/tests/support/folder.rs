//! A stopped server's data folder read back record by record — records, codes, scores, catalog
//! documents and kept frames — to compare a re-indexed folder with one indexed from scratch.
//! Shared by the re-index tests (`#[path]`).

#![allow(dead_code)]

use std::path::Path;

use diptych_service::catalog::Catalog;
use diptych_service::index::codes_dir;
use diptych_service::store::{CodeStore, FrameStore, ModelStamp};

fn stamp(model: &str) -> ModelStamp {
    ModelStamp {
        model_id: model.to_string(),
        positions: 256,
        codebook_size: 256,
    }
}

/// The records, codes, scores, catalog documents and kept frames of a data folder (its server
/// stopped), record by record.
pub struct Folder {
    pub codes: CodeStore,
    pub catalog: Catalog,
    /// `None` when the folder keeps no frames (`[index] keep_frames` off).
    pub frames: Option<FrameStore>,
}

impl Folder {
    /// Opens the data folder `data` of a server that served `model` (stopped).
    pub fn open(data: &Path, model: &str) -> Folder {
        let catalog = Catalog::open(&data.join("catalog")).unwrap();
        let generation = catalog.checkpoint().generation;
        let codes = CodeStore::open(codes_dir(data, generation), stamp(model)).unwrap();
        let preprocess = diptych::preprocess::PreprocessParams {
            input_size: 128,
            ..Default::default()
        };
        let frames = data
            .join("frames")
            .is_dir()
            .then(|| FrameStore::open(data.join("frames"), preprocess, 0).unwrap());
        Folder {
            codes,
            catalog,
            frames,
        }
    }
}

/// The live records of a folder by (SOP Instance UID, frame): record ids follow the order in
/// which instances were applied, which concurrent acceptance may change from run to run.
pub fn by_slice(folder: &Folder) -> std::collections::BTreeMap<(String, u32), u32> {
    let view = folder.codes.view();
    let ids: Vec<u32> = (0..view.len() as u32).collect();
    let documents = folder.catalog.entries(&ids).unwrap();
    let mut slices = std::collections::BTreeMap::new();
    for (&id, document) in ids.iter().zip(documents) {
        let deleted = view.records()[id as usize].is_deleted();
        match document {
            Some(document) => {
                assert!(
                    !deleted,
                    "record {id} is deleted but has a catalog document"
                );
                let key = (document.metadata.sop_instance_uid.clone(), document.frame);
                assert!(slices.insert(key, id).is_none(), "two records of one slice");
            }
            None => assert!(deleted, "record {id} is live but has no catalog document"),
        }
    }
    slices
}

/// The two folders hold the same live slices with the same codes, scores, catalog documents
/// and kept frames (record ids aside).
pub fn same_records(fresh: &Folder, reindexed: &Folder) {
    let (a, b) = (fresh.codes.view(), reindexed.codes.view());
    assert_eq!(a.len(), b.len(), "records");
    assert_eq!(fresh.codes.live_len(), reindexed.codes.live_len());
    let (slices_a, slices_b) = (by_slice(fresh), by_slice(reindexed));
    assert_eq!(
        slices_a.keys().collect::<Vec<_>>(),
        slices_b.keys().collect::<Vec<_>>(),
        "the live slices"
    );
    for (slice, (&ia, &ib)) in slices_a
        .keys()
        .zip(slices_a.values().zip(slices_b.values()))
    {
        let mut da = fresh
            .catalog
            .entries(&[ia])
            .unwrap()
            .pop()
            .flatten()
            .unwrap();
        let db = reindexed
            .catalog
            .entries(&[ib])
            .unwrap()
            .pop()
            .flatten()
            .unwrap();
        da.record = db.record;
        assert_rounding(
            da.abnormality,
            db.abnormality,
            &format!("{slice:?}: catalog score"),
        );
        da.abnormality = db.abnormality;
        assert_eq!(da, db, "{slice:?}: catalog document");
        let (ea, eb) = (a.records()[ia as usize], b.records()[ib as usize]);
        assert_eq!(ea.keys(), eb.keys(), "{slice:?}: keys");
        assert_eq!(
            a.normal_code(ia),
            b.normal_code(ib),
            "{slice:?}: normal code"
        );
        assert_eq!(
            a.abnormal_code(ia),
            b.abnormal_code(ib),
            "{slice:?}: abnormal code"
        );
        assert_rounding(
            ea.abnormality(),
            eb.abnormality(),
            &format!("{slice:?}: abnormality"),
        );
        let frame = |folder: &Folder, id| folder.frames.as_ref().map(|f| f.frame(id));
        assert_eq!(
            frame(fresh, ia),
            frame(reindexed, ib),
            "{slice:?}: kept frame"
        );
    }
}

/// How far two encodings of one slice's float outputs (abnormality score, abnormal distances)
/// may be apart: a slice encoded alone and in a batch gets the same codes but floats that may
/// differ in the last bits (docs/DESIGN.md, "Batches"), and which slices a batcher hands over
/// alone depends on timing.
pub const BATCH_ROUNDING: f32 = 1e-5;

/// Asserts that two scores of one slice agree up to [`BATCH_ROUNDING`].
pub fn assert_rounding(a: f32, b: f32, what: &str) {
    assert!(
        (a - b).abs() <= BATCH_ROUNDING,
        "{what}: {a} against {b}, more than rounding apart"
    );
}
