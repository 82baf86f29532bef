//! Records: one indexed slice (an image frame of a DICOM instance) and the small types that
//! the store, the catalog and search share to talk about records.
//!
//! A record is identified by its [`RecordId`], its position in the code store (assigned in
//! ingest order, never reused). The catalog maps record ids to DICOM metadata; the store maps
//! them to codes and [`RecordKeys`]; a [`RecordSet`] is the set of records a filter keeps.

use sha2::{Digest, Sha256};

/// Position of a record in the code store, assigned in ingest order.
pub type RecordId = u32;

/// A stable 64-bit key of a DICOM identifier (patient ID or a UID): the first 8 bytes of its
/// SHA-256, so the store can group and delete without keeping the identifier itself.
pub fn key_of(identifier: &str) -> u64 {
    let digest = Sha256::digest(identifier.as_bytes());
    u64::from_le_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

/// The identity of a record's slice: keys of its patient, study, series and instance, and the
/// frame number inside a multi-frame instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RecordKeys {
    /// [`key_of`] the Patient ID.
    pub patient: u64,
    /// [`key_of`] the Study Instance UID.
    pub study: u64,
    /// [`key_of`] the Series Instance UID.
    pub series: u64,
    /// [`key_of`] the SOP Instance UID.
    pub instance: u64,
    /// Zero-based frame number within the instance.
    pub frame: u32,
}

/// What a delete removes: every record of one patient, study, series or instance.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum DeleteTarget {
    /// Every record of this Patient ID.
    Patient(String),
    /// Every record of this Study Instance UID.
    Study(String),
    /// Every record of this Series Instance UID.
    Series(String),
    /// Every record of this SOP Instance UID.
    Instance(String),
}

impl DeleteTarget {
    /// The level's name (`patient`, `study`, `series`, `instance`), for logs: the identifier
    /// itself may be patient data and is never logged.
    pub fn level(&self) -> &'static str {
        match self {
            DeleteTarget::Patient(_) => "patient",
            DeleteTarget::Study(_) => "study",
            DeleteTarget::Series(_) => "series",
            DeleteTarget::Instance(_) => "instance",
        }
    }

    /// The identifier the target names.
    pub fn identifier(&self) -> &str {
        match self {
            DeleteTarget::Patient(id)
            | DeleteTarget::Study(id)
            | DeleteTarget::Series(id)
            | DeleteTarget::Instance(id) => id,
        }
    }
}

impl std::fmt::Debug for DeleteTarget {
    /// Shows the level only: a Patient ID must not reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeleteTarget::{}(..)", self.level())
    }
}

/// A set of record ids as a bitmap: what a filter keeps, or which records are deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSet {
    words: Vec<u64>,
}

impl RecordSet {
    /// An empty set with room for ids below `capacity` (it grows on demand).
    pub fn with_capacity(capacity: usize) -> Self {
        RecordSet {
            words: Vec::with_capacity(capacity.div_ceil(64)),
        }
    }

    /// Adds a record to the set.
    pub fn insert(&mut self, id: RecordId) {
        let word = id as usize / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (id % 64);
    }

    /// Removes a record from the set.
    pub fn remove(&mut self, id: RecordId) {
        if let Some(w) = self.words.get_mut(id as usize / 64) {
            *w &= !(1 << (id % 64));
        }
    }

    /// Whether the set holds the record.
    #[inline]
    pub fn contains(&self, id: RecordId) -> bool {
        self.words
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// How many records the set holds.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set holds no record.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The 64-bit words of the bitmap: bit `i % 64` of word `i / 64` is record `i`. Scans test
    /// whole words at once.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The record ids in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = RecordId> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                Some((w * 64) as RecordId + bit)
            })
        })
    }
}

impl FromIterator<RecordId> for RecordSet {
    fn from_iter<I: IntoIterator<Item = RecordId>>(iter: I) -> Self {
        let mut set = RecordSet::default();
        for id in iter {
            set.insert(id);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_set_holds_exactly_what_was_inserted() {
        let ids = [0u32, 1, 63, 64, 65, 1000, 4095];
        let mut set: RecordSet = ids.iter().copied().collect();
        assert_eq!(set.len(), ids.len());
        assert_eq!(set.iter().collect::<Vec<_>>(), ids);
        assert!(set.contains(1000) && !set.contains(999) && !set.contains(1 << 20));
        set.remove(64);
        assert!(!set.contains(64) && set.contains(65));
        assert_eq!(set.len(), ids.len() - 1);
    }

    #[test]
    fn keys_are_stable_and_distinguish_identifiers() {
        assert_eq!(key_of("1.2.3"), key_of("1.2.3"));
        assert_ne!(key_of("1.2.3"), key_of("1.2.4"));
        // Pinned: the key is persisted in the store, so it must never change between versions.
        assert_eq!(key_of(""), 0x141cfc9842c4b0e3);
    }

    #[test]
    fn delete_target_debug_hides_the_identifier() {
        let shown = format!("{:?}", DeleteTarget::Patient("PAT-SECRET".into()));
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("patient"));
    }
}
