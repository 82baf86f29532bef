//! [`SummaryBlocks`]: the records' [`Summary`]s kept 64 records to a block, dimension-major, so
//! that the lower bounds of a whole block come out of vector arithmetic instead of one record's
//! table look-ups at a time.
//!
//! A block holds, per codebook, the j-th byte of its 64 records side by side (`[DIMS][64]`),
//! then their 64 quantisation errors: the same 56 bytes per record as the plain layout, in the
//! order a lower-bound kernel reads them (one row of 64 bytes per dimension). Blocks line up
//! with the 64-record words of the deletion and filter bitmaps, so a scan takes a word's
//! summaries as one block. Record `id` lives in block `id / 64`, lane `id % 64`.

use super::index::{DIMS, Summary};

/// Records per block: one word of the eligibility bitmaps.
pub const BLOCK: usize = 64;

/// One codebook's half of a block: the bytes of 64 records, dimension-major, and their errors.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct BlockSide {
    /// `bytes[j][lane]`: dimension j of record `lane`.
    pub(crate) bytes: [[u8; BLOCK]; DIMS],
    /// The records' quantisation errors.
    pub(crate) error: [f32; BLOCK],
}

/// 64 records' summaries.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Block {
    pub(crate) normal: BlockSide,
    pub(crate) abnormal: BlockSide,
}

impl Block {
    const EMPTY: Block = Block {
        normal: BlockSide {
            bytes: [[0; BLOCK]; DIMS],
            error: [0.0; BLOCK],
        },
        abnormal: BlockSide {
            bytes: [[0; BLOCK]; DIMS],
            error: [0.0; BLOCK],
        },
    };
}

impl BlockSide {
    fn get(&self, lane: usize) -> ([u8; DIMS], f32) {
        let mut y = [0u8; DIMS];
        for (j, b) in y.iter_mut().enumerate() {
            *b = self.bytes[j][lane];
        }
        (y, self.error[lane])
    }

    fn set(&mut self, lane: usize, y: &[u8; DIMS], error: f32) {
        for (j, b) in y.iter().enumerate() {
            self.bytes[j][lane] = *b;
        }
        self.error[lane] = error;
    }
}

/// Every record's summary, in blocks of [`BLOCK`].
#[derive(Debug, Clone, Default)]
pub(crate) struct SummaryBlocks {
    blocks: Vec<Block>,
    len: usize,
}

impl SummaryBlocks {
    /// Records held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Record `id`'s summary.
    pub(crate) fn get(&self, id: usize) -> Option<Summary> {
        if id >= self.len {
            return None;
        }
        let block = &self.blocks[id / BLOCK];
        let (normal, normal_error) = block.normal.get(id % BLOCK);
        let (abnormal, abnormal_error) = block.abnormal.get(id % BLOCK);
        Some(Summary {
            normal,
            abnormal,
            normal_error,
            abnormal_error,
        })
    }

    /// Replaces record `id`'s summary (`id` < [`SummaryBlocks::len`]).
    pub(crate) fn set(&mut self, id: usize, s: &Summary) {
        assert!(id < self.len, "record {id} is not summarised");
        let block = &mut self.blocks[id / BLOCK];
        block.normal.set(id % BLOCK, &s.normal, s.normal_error);
        block
            .abnormal
            .set(id % BLOCK, &s.abnormal, s.abnormal_error);
    }

    /// Appends summaries of the next records.
    pub(crate) fn extend(&mut self, more: impl IntoIterator<Item = Summary>) {
        for s in more {
            if self.len == self.blocks.len() * BLOCK {
                self.blocks.push(Block::EMPTY);
            }
            self.len += 1;
            self.set(self.len - 1, &s);
        }
    }

    /// Keeps the first `records` summaries; the rest of their block is cleared so that a
    /// record appended again starts from nothing stale.
    pub(crate) fn truncate(&mut self, records: usize) {
        if records >= self.len {
            return;
        }
        self.blocks.truncate(records.div_ceil(BLOCK));
        self.len = records;
        if !records.is_multiple_of(BLOCK) {
            let zero = Summary {
                normal: [0; DIMS],
                abnormal: [0; DIMS],
                normal_error: 0.0,
                abnormal_error: 0.0,
            };
            let last = self.blocks.len() - 1;
            for lane in records % BLOCK..BLOCK {
                self.blocks[last].normal.set(lane, &zero.normal, 0.0);
                self.blocks[last].abnormal.set(lane, &zero.abnormal, 0.0);
            }
        }
    }

    /// Summaries of records `from..to` (within [`SummaryBlocks::len`]), in record order.
    pub(crate) fn range(&self, from: usize, to: usize) -> Vec<Summary> {
        assert!(
            from <= to && to <= self.len,
            "records {from}..{to} of {}",
            self.len
        );
        (from..to)
            .map(|id| self.get(id).expect("id < len"))
            .collect()
    }

    /// Block `b` when all of its 64 records are summarised.
    #[inline]
    pub(crate) fn full_block(&self, b: usize) -> Option<&Block> {
        if (b + 1) * BLOCK <= self.len {
            self.blocks.get(b)
        } else {
            None
        }
    }

    /// The block that holds record `id` (complete or not), and its lane.
    #[inline]
    pub(crate) fn lane(&self, id: usize) -> Option<(&Block, usize)> {
        if id < self.len {
            Some((&self.blocks[id / BLOCK], id % BLOCK))
        } else {
            None
        }
    }

    /// Bytes allocated.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.blocks.capacity() * std::mem::size_of::<Block>()
    }
}

impl FromIterator<Summary> for SummaryBlocks {
    fn from_iter<I: IntoIterator<Item = Summary>>(iter: I) -> SummaryBlocks {
        let mut blocks = SummaryBlocks::default();
        blocks.extend(iter);
        blocks
    }
}

const _: () = assert!(std::mem::size_of::<Block>() == BLOCK * super::index::SUMMARY_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(i: usize) -> Summary {
        let mut s = Summary {
            normal: [0; DIMS],
            abnormal: [0; DIMS],
            normal_error: i as f32 * 0.5,
            abnormal_error: i as f32 * 0.25,
        };
        for j in 0..DIMS {
            s.normal[j] = (i * 7 + j) as u8;
            s.abnormal[j] = (i * 13 + 3 * j) as u8;
        }
        s
    }

    #[test]
    fn records_read_back_as_written_across_blocks_sets_and_truncation() {
        let mut blocks: SummaryBlocks = (0..200).map(summary).collect();
        assert_eq!(blocks.len(), 200);
        for i in [0, 63, 64, 127, 199] {
            assert_eq!(blocks.get(i).unwrap().to_bytes(), summary(i).to_bytes());
        }
        assert!(blocks.get(200).is_none());
        assert!(blocks.full_block(2).is_some());
        assert!(
            blocks.full_block(3).is_none(),
            "block 3 holds 8 of 64 records"
        );
        blocks.set(70, &summary(1000));
        assert_eq!(blocks.get(70).unwrap().to_bytes(), summary(1000).to_bytes());
        assert_eq!(blocks.get(71).unwrap().to_bytes(), summary(71).to_bytes());
        blocks.truncate(65);
        assert_eq!(blocks.len(), 65);
        assert!(blocks.get(65).is_none());
        blocks.extend([summary(5)]);
        assert_eq!(blocks.get(65).unwrap().to_bytes(), summary(5).to_bytes());
        let range = blocks.range(63, 66);
        assert_eq!(range.len(), 3);
        assert_eq!(range[0].to_bytes(), summary(63).to_bytes());
        // A truncated block's later lanes are cleared.
        let block = blocks.blocks[1];
        assert_eq!(block.normal.bytes[0][2], 0);
        assert_eq!(block.normal.error[2], 0.0);
    }
}
