//! Re-scoring: every record's abnormality score replaced by another model's, for the switch of
//! a re-index ([`crate::index::reindex`]). The score is a filter field (`abnormality:>0.5`), so
//! after the switch the catalog must hold the new model's scores, as a fresh index would.
//!
//! tantivy cannot change a field in place: each document is rebuilt from what the catalog holds
//! and added again under the same record id. The stored fields give everything back but the
//! patient's birth date, which is indexed only (never stored, never shown): it is read back from
//! the field's terms, each of whose postings names the documents of one date.

use std::collections::HashMap;

use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, DocSet, SegmentReader, TERMINATED, TantivyDocument};

use super::{Catalog, CatalogEntry, CatalogError};
use crate::record::RecordId;

/// Blocks of the document store cached while documents are read back.
const STORE_CACHE_BLOCKS: usize = 16;

impl Catalog {
    /// Replaces the abnormality score of every committed record for which `score` gives one,
    /// the rest of each document unchanged; pending until the next [`Catalog::commit`] (which
    /// makes all of them visible at once), dropped by [`Catalog::roll_back`]. Call it with no
    /// other writes pending. Returns the records re-scored.
    pub fn rescore(&self, score: impl Fn(RecordId) -> Option<f32>) -> Result<u64, CatalogError> {
        let writer = self.writer();
        let searcher = self.reader.searcher();
        let mut rescored = 0;
        for segment in searcher.segment_readers() {
            let birth_dates = birth_dates(segment, self.fields.patient_birth_date)?;
            let store = segment
                .get_store_reader(STORE_CACHE_BLOCKS)
                .map_err(|e| CatalogError::index("read its stored records")(e.into()))?;
            for doc in segment.doc_ids_alive() {
                let stored: TantivyDocument = store
                    .get(doc)
                    .map_err(CatalogError::index("read a stored record"))?;
                let record = self.fields.stored_record(&stored);
                let Some(abnormality) = score(record.record) else {
                    continue;
                };
                let mut metadata = record.metadata;
                metadata.patient_birth_date = birth_dates
                    .get(&doc)
                    .map(|date| format!("{date:08}"))
                    .unwrap_or_default();
                let entry = CatalogEntry {
                    record: record.record,
                    frame: record.frame,
                    metadata,
                    abnormality,
                };
                // The delete reaches only documents added before it: the new one stays.
                writer.delete_term(self.fields.record_term(record.record));
                writer
                    .add_document(self.fields.document(&entry))
                    .map_err(CatalogError::index("add a re-scored record"))?;
                rescored += 1;
            }
        }
        Ok(rescored)
    }
}

/// The birth date (YYYYMMDD) of each document of `segment` that has one, from the terms of the
/// indexed-only `field`.
fn birth_dates(segment: &SegmentReader, field: Field) -> Result<HashMap<DocId, u64>, CatalogError> {
    let read = |e: std::io::Error| CatalogError::index("read the birth dates")(e.into());
    let inverted = segment
        .inverted_index(field)
        .map_err(CatalogError::index("read the birth dates"))?;
    let mut dates = HashMap::new();
    let mut terms = inverted.terms().stream().map_err(read)?;
    while terms.advance() {
        let Ok(bytes) = <[u8; 8]>::try_from(terms.key()) else {
            continue;
        };
        let date = u64::from_be_bytes(bytes);
        let mut postings = inverted
            .read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
            .map_err(read)?;
        let mut doc = postings.doc();
        while doc != TERMINATED {
            dates.insert(doc, date);
            doc = postings.advance();
        }
    }
    Ok(dates)
}

#[cfg(test)]
mod tests {
    use diptych_dicom_adapter::InstanceMetadata;

    use super::*;
    use crate::catalog::Checkpoint;

    fn entry(record: RecordId, birth_date: &str, abnormality: f32) -> CatalogEntry {
        CatalogEntry {
            record,
            frame: record % 3,
            metadata: InstanceMetadata {
                patient_id: format!("P{}", record % 2),
                patient_birth_date: birth_date.into(),
                study_instance_uid: format!("1.2.3.{}", record / 4),
                series_instance_uid: format!("1.2.3.{}.1", record / 4),
                sop_instance_uid: format!("1.2.3.{}.1.{record}", record / 4),
                modality: "MR".into(),
                study_date: "20240102".into(),
                study_description: "Brain with contrast".into(),
                slice_location: Some(f64::from(record) * 1.5),
                pixel_spacing: Some([0.5, 0.75]),
                rows: 128,
                columns: 128,
                number_of_frames: 3,
                series_number: Some(7),
                ..InstanceMetadata::default()
            },
            abnormality,
        }
    }

    fn filtered(catalog: &Catalog, filter: &str) -> Vec<RecordId> {
        let mut ids: Vec<RecordId> = catalog.filter(filter).unwrap().iter().collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn rescoring_changes_only_the_score_and_keeps_the_birth_dates_that_are_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let dates = ["19700101", "19851231", "", "19700101"];
        // Two commits: two segments, and a deleted record that must stay deleted.
        let first: Vec<CatalogEntry> = (0..6)
            .map(|r| entry(r, dates[r as usize % 4], r as f32 / 10.0))
            .collect();
        catalog.add(&first).unwrap();
        catalog.commit(Checkpoint::default()).unwrap();
        let second: Vec<CatalogEntry> = (6..10)
            .map(|r| entry(r, dates[r as usize % 4], r as f32 / 10.0))
            .collect();
        catalog.add(&second).unwrap();
        catalog.commit(Checkpoint::default()).unwrap();
        catalog
            .delete(&crate::record::DeleteTarget::Instance(
                entry(4, "", 0.0).metadata.sop_instance_uid,
            ))
            .unwrap();
        catalog.commit(Checkpoint::default()).unwrap();
        let before: Vec<_> = catalog.entries(&(0..10).collect::<Vec<_>>()).unwrap();
        assert_eq!(filtered(&catalog, "abnormality:>0.5"), vec![6, 7, 8, 9]);

        // The new scores: 1 − old, and none for record 9 (left as it was).
        let rescored = catalog
            .rescore(|r| (r != 9).then(|| 1.0 - r as f32 / 10.0))
            .unwrap();
        assert_eq!(rescored, 8, "every live record but 9");
        assert_eq!(
            filtered(&catalog, "abnormality:>0.5"),
            vec![6, 7, 8, 9],
            "nothing visible before the commit"
        );
        catalog.commit(Checkpoint::default()).unwrap();

        assert_eq!(filtered(&catalog, "abnormality:>0.5"), vec![0, 1, 2, 3, 9]);
        assert_eq!(
            catalog.counts().unwrap().records,
            9,
            "one document per record"
        );
        let after = catalog.entries(&(0..10).collect::<Vec<_>>()).unwrap();
        for (r, (old, new)) in before.iter().zip(&after).enumerate() {
            match (old, new) {
                (None, None) => assert_eq!(r, 4, "only the deleted record is missing"),
                (Some(old), Some(new)) => {
                    assert_eq!(old.metadata, new.metadata, "record {r}");
                    assert_eq!((old.record, old.frame), (new.record, new.frame));
                    let want = if r == 9 { 0.9 } else { 1.0 - r as f32 / 10.0 };
                    assert!((new.abnormality - want).abs() < 1e-6, "record {r}");
                }
                other => panic!("record {r}: {other:?}"),
            }
        }
        // Birth dates are filterable as before, on the same records.
        assert_eq!(
            filtered(&catalog, "patient_birth_date:19700101"),
            vec![0, 3, 7, 8]
        );
        assert_eq!(
            filtered(&catalog, "patient_birth_date:<19800101"),
            vec![0, 3, 7, 8]
        );
        assert_eq!(
            filtered(&catalog, "patient_birth_date:19851231"),
            vec![1, 5, 9]
        );
    }
}
