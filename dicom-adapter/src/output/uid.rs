//! UIDs: new ones under the UUID-derived root `2.25` (PS3.5 B.2), and the UID syntax check of
//! UIDs written into documents (the rule itself is [`crate::uid`]'s).
//!
//! A new UID is `2.25.` followed by the decimal value of a random (version 4) UUID. The 122
//! random bits come from the standard library's randomly keyed SipHash (seeded from the operating
//! system once per thread), mixed with the clock, the process ID and a process-wide counter, so
//! two calls never return the same UID, in one process or across processes.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::uid::MAX_UID_LEN;
use crate::uid::Uid;

/// A new, globally unique UID under the root `2.25`.
///
/// ```
/// let uid = diptych_dicom_adapter::output::uid::new_uid();
/// assert!(uid.starts_with("2.25."));
/// assert!(diptych_dicom_adapter::output::uid::is_valid_uid(&uid));
/// assert_ne!(uid, diptych_dicom_adapter::output::uid::new_uid());
/// ```
pub fn new_uid() -> String {
    let uuid = random_u128();
    // UUID version 4 (random) and the RFC 4122 variant, so the integer is a well-formed UUID.
    let uuid = (uuid & !(0xF << 76)) | (0x4 << 76);
    let uuid = (uuid & !(0b11 << 62)) | (0b10 << 62);
    format!("2.25.{uuid}")
}

/// True when `uid` follows the rule of [`crate::uid`] as written, without padding: 1 to 64
/// characters, dot-separated non-empty components of digits. Components with a leading zero
/// pass, since a document must reference an instance by the UID its sender gave it.
pub fn is_valid_uid(uid: &str) -> bool {
    Uid::parse(uid).is_ok_and(|parsed| parsed.as_str() == uid)
}

/// 128 random bits.
fn random_u128() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let half = |salt: u64| {
        // Each RandomState carries fresh keys (random per thread, then stepped per instance).
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u64(count);
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    (u128::from(half(0x6469_7074_7963_6801)) << 64) | u128::from(half(0x6469_7074_7963_6802))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_uids_are_valid_version_4_uuids_and_distinct() {
        let uids: std::collections::HashSet<String> = (0..1000).map(|_| new_uid()).collect();
        assert_eq!(uids.len(), 1000);
        for uid in &uids {
            assert!(is_valid_uid(uid), "{uid}");
            let value: u128 = uid["2.25.".len()..].parse().unwrap();
            assert_eq!((value >> 76) & 0xF, 4, "version nibble of {uid}");
            assert_eq!((value >> 62) & 0b11, 0b10, "variant bits of {uid}");
        }
    }

    #[test]
    fn uid_syntax_is_checked() {
        assert!(is_valid_uid("1.2.840.10008.5.1.4.1.1.88.59"));
        assert!(is_valid_uid("1.0.3"));
        assert!(
            is_valid_uid("1.02"),
            "a leading zero, as old equipment writes it"
        );
        for bad in ["", "1..2", "1.2.", "1.2a", "1.2\0", "1.2 ", &"1".repeat(65)] {
            assert!(!is_valid_uid(bad), "{bad:?}");
        }
    }
}
