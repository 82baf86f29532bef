//! Reading the log back: a lazy iterator over segments, one entry in memory at a time.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::WalRecord;
use super::frame::{FRAME_HEADER, PAYLOAD_PREFIX};
use super::segment::{HEADER_LEN, SegmentInfo};
use crate::store::StoreError;

/// The entries of the log after a given seq, in seq order, read lazily segment by segment.
///
/// Only entries that were durable when [`Wal::replay_after`](super::Wal::replay_after) was
/// called are returned. An entry that no longer reads back (the disk changed since the log was
/// opened) is returned as an error and the rest of its segment is skipped.
pub struct WalReplay {
    after: u64,
    segments: VecDeque<SegmentInfo>,
    current: Option<Cursor>,
}

struct Cursor {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    end: u64,
}

impl WalReplay {
    pub(super) fn new(after: u64, segments: Vec<SegmentInfo>) -> WalReplay {
        let segments = segments
            .into_iter()
            .filter(|s| s.last_seq.is_some_and(|last| last > after))
            .collect();
        WalReplay {
            after,
            segments,
            current: None,
        }
    }

    fn open(info: &SegmentInfo) -> Result<Cursor, StoreError> {
        let mut file = File::open(&info.path).map_err(|e| StoreError::io("open", &info.path, e))?;
        file.seek(SeekFrom::Start(HEADER_LEN))
            .map_err(|e| StoreError::io("seek", &info.path, e))?;
        Ok(Cursor {
            path: info.path.clone(),
            reader: BufReader::with_capacity(1 << 20, file),
            offset: HEADER_LEN,
            end: info.valid_len,
        })
    }
}

impl Cursor {
    /// The next entry with seq > `after`, or `None` at the end of the valid data.
    fn next_after(&mut self, after: u64) -> Result<Option<(u64, WalRecord)>, StoreError> {
        loop {
            if self.offset >= self.end {
                return Ok(None);
            }
            let at = self.offset;
            let corrupt = |reason: &str| StoreError::CorruptEntry {
                path: self.path.clone(),
                offset: at,
                reason: reason.to_owned(),
            };
            let mut head = [0u8; FRAME_HEADER + PAYLOAD_PREFIX];
            self.reader
                .read_exact(&mut head)
                .map_err(|e| StoreError::io("read", &self.path, e))?;
            let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as u64;
            if len < PAYLOAD_PREFIX as u64 || at + FRAME_HEADER as u64 + len > self.end {
                return Err(corrupt("its length changed since the log was opened"));
            }
            self.offset = at + FRAME_HEADER as u64 + len;
            let seq = u64::from_le_bytes(head[9..17].try_into().expect("8 bytes"));
            let body_len = (len - PAYLOAD_PREFIX as u64) as usize;
            if seq <= after {
                // Verified when the log was opened; skip the body without reading it.
                self.reader
                    .seek_relative(body_len as i64)
                    .map_err(|e| StoreError::io("seek", &self.path, e))?;
                continue;
            }
            let mut body = vec![0u8; body_len];
            self.reader
                .read_exact(&mut body)
                .map_err(|e| StoreError::io("read", &self.path, e))?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(&head[0..4]);
            crc.update(&head[8..]);
            crc.update(&body);
            if crc.finalize() != u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) {
                return Err(corrupt("checksum mismatch"));
            }
            let record = WalRecord::decode(head[8], body).map_err(|r| corrupt(&r))?;
            return Ok(Some((seq, record)));
        }
    }
}

impl Iterator for WalReplay {
    type Item = Result<(u64, WalRecord), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let info = self.segments.pop_front()?;
                match WalReplay::open(&info) {
                    Ok(cursor) => self.current = Some(cursor),
                    Err(e) => return Some(Err(e)),
                }
            }
            let cursor = self.current.as_mut().expect("set above");
            match cursor.next_after(self.after) {
                Ok(Some(entry)) => return Some(Ok(entry)),
                Ok(None) => self.current = None,
                Err(e) => {
                    self.current = None;
                    return Some(Err(e));
                }
            }
        }
    }
}
