//! Collectors that read record ids (and frames) of matching documents from fast fields, so a
//! filter over a million records never loads a stored document.

use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::ColumnValues;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use super::fields::{FRAME, RECORD};
use crate::record::RecordId;

/// Collects the record ids of the matching documents.
pub(crate) struct RecordIds;

/// [`RecordIds`] within one segment.
pub(crate) struct SegmentRecordIds {
    records: Arc<dyn ColumnValues<u64>>,
    ids: Vec<RecordId>,
    buffer: Vec<u64>,
}

impl Collector for RecordIds {
    type Fruit = Vec<RecordId>;
    type Child = SegmentRecordIds;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentRecordIds> {
        Ok(SegmentRecordIds {
            records: reader.fast_fields().column_first_or_default(RECORD)?,
            ids: Vec::new(),
            buffer: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<RecordId>>) -> tantivy::Result<Vec<RecordId>> {
        Ok(fruits.concat())
    }
}

impl SegmentCollector for SegmentRecordIds {
    type Fruit = Vec<RecordId>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.ids.push(self.records.get_val(doc) as RecordId);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        self.buffer.resize(docs.len(), 0);
        self.records.get_vals(docs, &mut self.buffer);
        self.ids
            .extend(self.buffer.iter().map(|&record| record as RecordId));
    }

    fn harvest(self) -> Vec<RecordId> {
        self.ids
    }
}

/// Collects `(record id, frame)` of the matching documents.
pub(crate) struct RecordFrames;

/// [`RecordFrames`] within one segment.
pub(crate) struct SegmentRecordFrames {
    records: Arc<dyn ColumnValues<u64>>,
    frames: Arc<dyn ColumnValues<u64>>,
    found: Vec<(RecordId, u32)>,
}

impl Collector for RecordFrames {
    type Fruit = Vec<(RecordId, u32)>;
    type Child = SegmentRecordFrames;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentRecordFrames> {
        let fast = reader.fast_fields();
        Ok(SegmentRecordFrames {
            records: fast.column_first_or_default(RECORD)?,
            frames: fast.column_first_or_default(FRAME)?,
            found: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Vec<(RecordId, u32)>>,
    ) -> tantivy::Result<Vec<(RecordId, u32)>> {
        Ok(fruits.concat())
    }
}

impl SegmentCollector for SegmentRecordFrames {
    type Fruit = Vec<(RecordId, u32)>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.found.push((
            self.records.get_val(doc) as RecordId,
            self.frames.get_val(doc) as u32,
        ));
    }

    fn harvest(self) -> Vec<(RecordId, u32)> {
        self.found
    }
}
