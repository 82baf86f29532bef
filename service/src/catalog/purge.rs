//! Purging deleted documents: a tantivy delete only marks documents, so after a delete's commit
//! [`Catalog::purge`] rewrites the segments that hold deleted documents without them and removes
//! the old files, and a deleted patient's metadata leaves the disk.
//!
//! tantivy's own merge policy merges segments in the background too. A merge asked for while a
//! background merge holds one of its segments is refused ("segments that are not all
//! uncommitted or committed"); that background merge drops the deleted documents itself, so the
//! purge waits a moment, lists the segments again and asks once more, until no committed segment
//! holds a deleted document.

use std::time::Duration;

use super::{Catalog, CatalogError};

/// Rounds of listing and merging before a purge gives up (about 6 s with the backoff below).
const ROUNDS: u32 = 12;
/// The first wait after a refused merge; each later one doubles, up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(20);
/// The longest wait between two rounds.
const MAX_WAIT: Duration = Duration::from_secs(1);

impl Catalog {
    /// Rewrites every segment holding deleted documents without them and removes the old
    /// files, so a deleted patient's metadata leaves the disk (a tantivy delete only marks
    /// documents). Call after the delete's commit.
    pub fn purge(&self) -> Result<(), CatalogError> {
        self.purge_with(|| {})
    }

    /// [`Catalog::purge`], with `between_listing_and_merge` run in every round after the
    /// segments are listed and before their merge is asked for: where a test makes a
    /// background merge finish.
    fn purge_with(&self, between_listing_and_merge: impl Fn()) -> Result<(), CatalogError> {
        let mut wait = FIRST_WAIT;
        let mut round = 1;
        loop {
            let with_deletes: Vec<_> = self
                .index
                .searchable_segment_metas()
                .map_err(CatalogError::index("list its segments"))?
                .into_iter()
                .filter(|meta| meta.has_deletes())
                .map(|meta| meta.id())
                .collect();
            if with_deletes.is_empty() {
                break;
            }
            between_listing_and_merge();
            let merged = self.writer().merge(&with_deletes).wait();
            match merged {
                Ok(_) => break,
                Err(error) if round < ROUNDS => {
                    // Most likely a background merge holds one of these segments.
                    tracing::debug!(%error, round, "a purge merge was refused; listing again");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_WAIT);
                    round += 1;
                }
                Err(error) => {
                    return Err(
                        CatalogError::index("merge segments with deleted documents")(error),
                    );
                }
            }
        }
        self.writer()
            .garbage_collect_files()
            .wait()
            .map_err(CatalogError::index("remove files of deleted documents"))?;
        self.reader
            .reload()
            .map_err(CatalogError::index("reload its reader after a purge"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use diptych_dicom_adapter::InstanceMetadata;

    use super::*;
    use crate::catalog::{CatalogEntry, Checkpoint};
    use crate::record::DeleteTarget;

    fn entry(record: u32) -> CatalogEntry {
        CatalogEntry {
            record,
            frame: 0,
            metadata: InstanceMetadata {
                patient_id: format!("PAT-{}", record % 7),
                study_instance_uid: format!("1.2.3.{}", record / 10),
                series_instance_uid: format!("1.2.4.{}", record / 10),
                sop_instance_uid: format!("1.2.5.{record}"),
                study_description: "purge test ".repeat(40),
                ..InstanceMetadata::default()
            },
            abnormality: 0.5,
        }
    }

    #[test]
    fn a_purge_lists_again_when_a_background_merge_took_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        for batch in 0..4u32 {
            let entries: Vec<_> = (batch * 100..(batch + 1) * 100).map(entry).collect();
            catalog.add(&entries).unwrap();
            catalog
                .commit(Checkpoint {
                    applied_seq: u64::from(batch),
                    records: u64::from((batch + 1) * 100),
                    ..Default::default()
                })
                .unwrap();
        }
        let deleted = catalog
            .delete(&DeleteTarget::Patient("PAT-3".into()))
            .unwrap();
        assert!(!deleted.is_empty());
        catalog
            .commit(Checkpoint {
                applied_seq: 9,
                records: 400,
                ..Default::default()
            })
            .unwrap();
        let rounds = std::cell::Cell::new(0);
        // In the first round, a merge of every segment (as tantivy's merge policy runs them)
        // ends between the purge's listing and its merge: the listed segments are gone.
        catalog
            .purge_with(|| {
                rounds.set(rounds.get() + 1);
                if rounds.get() == 1 {
                    let segments: Vec<_> = catalog
                        .index
                        .searchable_segment_metas()
                        .unwrap()
                        .iter()
                        .map(|meta| meta.id())
                        .collect();
                    assert!(segments.len() >= 2, "{segments:?}");
                    catalog.writer().merge(&segments).wait().unwrap();
                }
            })
            .expect("the purge lists the segments again instead of failing");
        // The purge's own merge was refused (its segments were gone); listed again, no segment
        // held a deleted document any more.
        assert_eq!(rounds.get(), 1);
        catalog.reader.reload().unwrap();
        let left: Vec<_> = catalog
            .index
            .searchable_segment_metas()
            .unwrap()
            .into_iter()
            .filter(|meta| meta.has_deletes())
            .collect();
        assert!(left.is_empty(), "segments still holding deletes: {left:?}");
        assert_eq!(
            catalog.counts().unwrap().records,
            400 - deleted.len() as u64
        );
    }
}
