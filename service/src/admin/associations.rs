//! Recent DICOM associations, read back from the audit trail's JSON-lines files (the current
//! file and its rotated predecessors), newest first, a page at a time.
//!
//! Entries are ordered by their time, then by a digest of their line, both carried in the page
//! token: the next page starts strictly after the last entry of the previous one, so paging
//! neither repeats nor skips an entry when new associations are recorded in between or the file
//! rotates.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::BufRead;
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Page size when the request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page size accepted.
pub const MAX_PAGE_SIZE: usize = 1000;

/// One association as the audit trail recorded it when it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationEntry {
    /// When it ended (RFC 3339, UTC).
    pub time: String,
    /// Whether it ended well (`success`) or not (`failure`).
    pub outcome: String,
    /// The calling AE title.
    pub calling_ae: String,
    /// The called AE title.
    pub called_ae: String,
    /// The peer's `IP:port`.
    pub peer: String,
    /// How it ended: `released`, `closed`, `aborted_by_peer`, `aborted` or `rejected`.
    pub end: String,
    /// Why it was rejected or aborted.
    pub reason: String,
    /// C-STORE requests answered.
    pub instances_received: u32,
    /// How long it lasted, in milliseconds.
    pub duration_ms: u64,
    /// Where the entry sorts: its time, then a digest of its line.
    key: Key,
}

/// The sort key of an entry, and the page token's content.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    time: String,
    digest: String,
}

impl Key {
    fn token(&self) -> String {
        format!("{}~{}", self.time, self.digest)
    }

    fn from_token(token: &str) -> Option<Key> {
        let (time, digest) = token.split_once('~')?;
        let time_ok = is_audit_time(time);
        let digest_ok = digest.len() == 16 && digest.chars().all(|c| c.is_ascii_hexdigit());
        (time_ok && digest_ok).then(|| Key {
            time: time.to_string(),
            digest: digest.to_string(),
        })
    }
}

/// Whether `time` has the form of an audit event's time (`2025-01-31T12:00:00.000Z`).
fn is_audit_time(time: &str) -> bool {
    time.len() == 24
        && time.ends_with('Z')
        && time
            .chars()
            .all(|c| c.is_ascii_digit() || "-:.TZ".contains(c))
}

/// A page of entries and the token of the next one (empty on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The entries, newest first.
    pub entries: Vec<AssociationEntry>,
    /// Pass it back for the next page; empty when there is none.
    pub next_page_token: String,
}

/// Why a page cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The page size is out of range.
    #[error(
        "page_size {0} is out of range; give 0 for the default ({DEFAULT_PAGE_SIZE}) or 1 to {MAX_PAGE_SIZE}"
    )]
    PageSize(i64),
    /// The page token is not one this server handed out.
    #[error(
        "page_token {0:?} is not a token from a previous answer; leave it empty for the first page"
    )]
    Token(String),
    /// An audit file could not be read.
    #[error("cannot read the audit file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Where the audit trail's files are: the current one and how many rotated ones may exist.
#[derive(Debug, Clone)]
pub struct AuditFiles {
    /// The current file (`audit.jsonl`).
    pub path: PathBuf,
    /// Rotated files kept (`audit.jsonl.1` … `.keep`).
    pub keep: u32,
}

impl AuditFiles {
    /// The files that exist, oldest first.
    fn existing(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = (1..=self.keep)
            .rev()
            .map(|n| {
                let mut name = self.path.as_os_str().to_owned();
                name.push(format!(".{n}"));
                PathBuf::from(name)
            })
            .collect();
        files.push(self.path.clone());
        files.into_iter().filter(|p| p.is_file()).collect()
    }

    /// The page of `page_size` entries (0: the default) after `page_token` (empty: the newest).
    pub fn page(&self, page_size: i64, page_token: &str) -> Result<Page, PageError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > 0 && n as usize <= MAX_PAGE_SIZE => n as usize,
            n => return Err(PageError::PageSize(n)),
        };
        let after = match page_token {
            "" => None,
            token => {
                Some(Key::from_token(token).ok_or_else(|| PageError::Token(token.to_string()))?)
            }
        };
        // The `size + 1` newest entries before the token: one more tells whether a page follows.
        let mut newest: BinaryHeap<Reverse<Ordered>> = BinaryHeap::new();
        for path in self.existing() {
            let file = match std::fs::File::open(&path) {
                Ok(file) => file,
                // Rotated away between listing and opening: its entries are in the next file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(PageError::Read { path, source }),
            };
            for line in std::io::BufReader::new(file).lines() {
                let line = line.map_err(|source| PageError::Read {
                    path: path.clone(),
                    source,
                })?;
                let Some(entry) = parse(&line) else { continue };
                if after.as_ref().is_some_and(|after| entry.key >= *after) {
                    continue;
                }
                newest.push(Reverse(Ordered(entry)));
                if newest.len() > size + 1 {
                    newest.pop();
                }
            }
        }
        let mut entries: Vec<AssociationEntry> = newest
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.0.0)
            .collect();
        let next_page_token = if entries.len() > size {
            entries.truncate(size);
            entries.last().map(|e| e.key.token()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            entries,
            next_page_token,
        })
    }
}

/// An entry ordered by its key alone.
struct Ordered(AssociationEntry);

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

/// The audit line of an association, as far as this listing needs it.
#[derive(Deserialize)]
struct Line {
    time: String,
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    who: Who,
    #[serde(default, rename = "where")]
    peer: Option<String>,
    event: String,
    what: What,
}

#[derive(Deserialize, Default)]
struct Who {
    #[serde(default)]
    calling_ae: Option<String>,
    #[serde(default)]
    called_ae: Option<String>,
}

#[derive(Deserialize)]
struct What {
    #[serde(default)]
    instances_received: u32,
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    end: String,
}

/// The entry of an `association` line; None for any other line (other events, a torn line).
fn parse(line: &str) -> Option<AssociationEntry> {
    if !line.contains("\"association\"") {
        return None;
    }
    let parsed: Line = serde_json::from_str(line).ok()?;
    if parsed.event != "association" || !is_audit_time(&parsed.time) {
        return None;
    }
    let digest: String = Sha256::digest(line.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(AssociationEntry {
        key: Key {
            time: parsed.time.clone(),
            digest,
        },
        time: parsed.time,
        outcome: parsed.outcome,
        calling_ae: parsed.who.calling_ae.unwrap_or_default(),
        called_ae: parsed.who.called_ae.unwrap_or_default(),
        peer: parsed.peer.unwrap_or_default(),
        end: parsed.what.end,
        reason: parsed.reason.unwrap_or_default(),
        instances_received: parsed.what.instances_received,
        duration_ms: parsed.what.duration_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ms: u32, calling: &str) -> String {
        format!(
            "{{\"time\":\"2025-01-31T12:00:00.{ms:03}Z\",\"outcome\":\"success\",\"who\":{{\"calling_ae\":\"{calling}\",\"called_ae\":\"DIPTYCH\"}},\"where\":\"127.0.0.1:4000\",\"event\":\"association\",\"what\":{{\"instances_received\":1,\"statuses\":{{}},\"duration_ms\":5,\"end\":\"released\"}}}}"
        )
    }

    #[test]
    fn pages_run_newest_first_across_rotated_files_without_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let older: Vec<String> = (0..4).map(|i| line(i, &format!("OLD{i}"))).collect();
        let mut newer: Vec<String> = (4..7).map(|i| line(i, &format!("NEW{i}"))).collect();
        // Same millisecond, different peers: both listed once.
        newer.push(line(6, "TWIN"));
        newer.push("{\"event\":\"search\"}".to_string());
        newer.push("{\"torn".to_string());
        std::fs::write(path.with_extension("jsonl.1"), older.join("\n") + "\n").unwrap();
        std::fs::write(&path, newer.join("\n") + "\n").unwrap();
        let files = AuditFiles { path, keep: 3 };
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = files.page(3, &token).unwrap();
            assert!(page.entries.len() <= 3);
            seen.extend(page.entries.iter().map(|e| e.calling_ae.clone()));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 8, "{seen:?}");
        assert_eq!(&seen[2..], ["NEW5", "NEW4", "OLD3", "OLD2", "OLD1", "OLD0"]);
        assert!(matches!(files.page(-1, ""), Err(PageError::PageSize(-1))));
        assert!(matches!(files.page(1001, ""), Err(PageError::PageSize(_))));
        assert!(matches!(files.page(1, "garbage"), Err(PageError::Token(_))));
    }
}
