//! Segment files: naming, the segment header, creating one durably, and scanning one for its
//! valid entries.
//!
//! ```text
//! segment = header (24 bytes) | frame*
//! header  = magic "DIPTWAL1" | base_seq: u64 LE | crc: u32 LE (of the 16 bytes before) | 0u32
//! ```
//! `base_seq` is the seq the first entry of the segment gets, so the sequence continues after
//! every older segment has been pruned.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::frame::{FRAME_HEADER, PAYLOAD_PREFIX, known_kind};
use crate::store::{StoreError, folder};

/// Bytes of the segment header.
pub(super) const HEADER_LEN: u64 = 24;
const MAGIC: &[u8; 8] = b"DIPTWAL1";
const SUFFIX: &str = ".wal";

/// What the log knows about one segment file.
#[derive(Clone, Debug)]
pub(super) struct SegmentInfo {
    /// The segment's number (its file name).
    pub number: u64,
    /// The segment file.
    pub path: PathBuf,
    /// Seq its first entry gets (from its header; 0 for a damaged header).
    pub base_seq: u64,
    /// Seq of its last valid entry, if it has one.
    pub last_seq: Option<u64>,
    /// Bytes of valid data (header and whole, verified entries); replay never reads past it.
    pub valid_len: u64,
}

/// The file name of segment `number`.
pub(super) fn file_name(number: u64) -> String {
    format!("{number:020}{SUFFIX}")
}

/// The segment number a file name denotes, if it names a segment.
pub(super) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn header_bytes(base_seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&base_seq.to_le_bytes());
    let crc = crc32fast::hash(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Creates segment `number` whose first entry will be `base_seq`, durably (file and folder
/// entry fsynced), and returns it open for appending.
pub(super) fn create(
    dir: &Path,
    number: u64,
    base_seq: u64,
) -> Result<(File, SegmentInfo), StoreError> {
    let path = dir.join(file_name(number));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(|e| StoreError::io("create", &path, e))?;
    file.write_all(&header_bytes(base_seq))
        .map_err(|e| StoreError::io("write", &path, e))?;
    file.sync_all()
        .map_err(|e| StoreError::io("fsync", &path, e))?;
    folder::sync_dir(dir)?;
    let info = SegmentInfo {
        number,
        path,
        base_seq,
        last_seq: None,
        valid_len: HEADER_LEN,
    };
    Ok((file, info))
}

/// The state of a segment's header.
pub(super) enum Header {
    /// A valid header.
    Valid {
        /// Seq of the segment's first entry.
        base_seq: u64,
    },
    /// Fewer bytes than a header: the segment's creation was cut short.
    Short,
    /// The magic matches but the checksum does not.
    Damaged,
}

/// Reads a segment's header; a file with another magic is refused.
pub(super) fn read_header(
    path: &Path,
    file: &mut File,
    file_len: u64,
) -> Result<Header, StoreError> {
    if file_len < HEADER_LEN {
        return Ok(Header::Short);
    }
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut h)
        .map_err(|e| StoreError::io("read", path, e))?;
    if &h[0..8] != MAGIC {
        return Err(StoreError::NotASegment {
            path: path.to_owned(),
            reason: "it does not start with the segment magic".into(),
        });
    }
    if h != header_bytes(u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"))) {
        return Ok(Header::Damaged);
    }
    Ok(Header::Valid {
        base_seq: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
    })
}

/// What scanning a segment's entries found.
pub(super) struct Scan {
    /// Bytes up to the end of the last valid entry.
    pub valid_len: u64,
    /// Seq of the last valid entry.
    pub last_seq: Option<u64>,
    /// Valid entries.
    pub entries: u64,
    /// The first invalid entry: its offset and what is wrong with it.
    pub problem: Option<(u64, String)>,
}

/// Reads every entry after the header (positioned just after it), verifying lengths,
/// checksums, kinds and that seqs increase from `base_seq`; stops at the first invalid one.
/// Payloads are streamed through the checksum, never held whole in memory.
pub(super) fn scan(
    path: &Path,
    file: &File,
    base_seq: u64,
    file_len: u64,
) -> Result<Scan, StoreError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut scan = Scan {
        valid_len: HEADER_LEN,
        last_seq: None,
        entries: 0,
        problem: None,
    };
    let mut chunk = vec![0u8; 64 << 10];
    let read_err = |e| StoreError::io("read", path, e);
    loop {
        let offset = scan.valid_len;
        let remaining = file_len - offset;
        if remaining == 0 {
            return Ok(scan);
        }
        let fail = |reason: String| Some((offset, reason));
        if remaining < (FRAME_HEADER + PAYLOAD_PREFIX) as u64 {
            scan.problem = fail(format!(
                "a partial entry of {remaining} bytes at the end (torn write)"
            ));
            return Ok(scan);
        }
        let mut head = [0u8; FRAME_HEADER + PAYLOAD_PREFIX];
        reader.read_exact(&mut head).map_err(read_err)?;
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as u64;
        let stored_crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        if len < PAYLOAD_PREFIX as u64 {
            scan.problem = fail(format!("an entry length of {len} bytes, below the minimum"));
            return Ok(scan);
        }
        if len > remaining - FRAME_HEADER as u64 {
            scan.problem = fail(format!(
                "an entry of {len} bytes that runs past the end of the file ({} bytes left; torn write or damaged length)",
                remaining - FRAME_HEADER as u64
            ));
            return Ok(scan);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[0..4]);
        crc.update(&head[8..]);
        let mut left = (len - PAYLOAD_PREFIX as u64) as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            reader.read_exact(&mut chunk[..n]).map_err(read_err)?;
            crc.update(&chunk[..n]);
            left -= n;
        }
        if crc.finalize() != stored_crc {
            scan.problem = fail("a checksum mismatch (damaged or torn entry)".into());
            return Ok(scan);
        }
        let kind = head[8];
        let seq = u64::from_le_bytes(head[9..17].try_into().expect("8 bytes"));
        if !known_kind(kind) {
            scan.problem = fail(format!("an entry of unknown kind {kind}"));
            return Ok(scan);
        }
        let floor = scan.last_seq.map_or(base_seq, |s| s + 1);
        if seq < floor {
            scan.problem = fail(format!("seq {seq} where at least {floor} was expected"));
            return Ok(scan);
        }
        scan.last_seq = Some(seq);
        scan.entries += 1;
        scan.valid_len = offset + FRAME_HEADER as u64 + len;
    }
}
