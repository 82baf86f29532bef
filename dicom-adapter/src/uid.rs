//! UIDs as they enter diptych: the one place that says what a DICOM UID (value representation
//! UI, PS3.5 6.2 and 9.1) may hold.
//!
//! Every UID that comes from the network — the UIDs of a C-STORE command and of its data set, the
//! UIDs of an instance sent to the gRPC Ingest call, the UIDs a gRPC request names — becomes a
//! [`Uid`] through [`Uid::parse`] before anything looks it up, stores it or logs it. A `Uid` holds
//! only digits and dots, so it stays data wherever it goes: in a catalog query, a file meta group,
//! a log line.
//!
//! The rule: 1 to [`MAX_UID_LEN`] characters, numbers separated by single dots (no empty
//! component, no leading or trailing dot). What real archives send is tolerated: trailing NUL or
//! space padding is stripped (DICOM pads UIDs to an even length with a NUL; some writers use a
//! space), and a component with a leading zero (`1.2.03.4`, which the standard forbids but old
//! equipment writes) is kept as written, since it names the instance exactly as its sender knows
//! it. Everything else is refused with a [`UidError`] that says what is wrong.

use std::fmt;

use thiserror::Error;

/// Longest UID the standard allows (PS3.5 9.1), in characters.
pub const MAX_UID_LEN: usize = 64;

/// What a UID is, for messages.
const RULE: &str = "a UID is 1 to 64 characters, digits and dots only: numbers separated by \
                    single dots, like 1.2.840.10008.1.2";

/// A DICOM UID that follows the rule of this module, without padding.
///
/// ```
/// use diptych_dicom_adapter::uid::Uid;
///
/// let uid = Uid::parse("1.2.840.10008.1.2\0")?;
/// assert_eq!(uid.as_str(), "1.2.840.10008.1.2");
/// assert!(Uid::parse("1.2\" OR study_instance_uid:*").is_err());
/// # Ok::<(), diptych_dicom_adapter::uid::UidError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

/// Why a text is not a UID. The messages complete a sentence that starts with the field's name
/// ("SOPInstanceUID (0008,0018) is not a valid UID: …") and never repeat the text itself, which
/// may be long or hostile.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum UidError {
    /// Nothing is left once the padding is stripped.
    #[error("is empty; {rule}", rule = RULE)]
    Empty,
    /// A character other than a digit or a dot.
    #[error(
        "is not a valid UID: character {position} is {found:?}; {rule}",
        rule = RULE
    )]
    Character {
        /// 1-based position of the character, counted in characters.
        position: usize,
        /// The character.
        found: char,
    },
    /// A leading, trailing or doubled dot.
    #[error(
        "is not a valid UID: it has an empty component (a leading, trailing or doubled dot); {rule}",
        rule = RULE
    )]
    EmptyComponent,
    /// More than [`MAX_UID_LEN`] characters.
    #[error(
        "is not a valid UID: it has {length} characters, more than {max}; {rule}",
        max = MAX_UID_LEN,
        rule = RULE
    )]
    TooLong {
        /// Number of characters, padding stripped.
        length: usize,
    },
}

/// `text` without its trailing NUL and space padding.
pub fn without_padding(text: &str) -> &str {
    text.trim_end_matches(['\0', ' '])
}

impl Uid {
    /// Checks `text` against the UID rule (see the module docs): trailing NUL and space padding
    /// is stripped, components with leading zeros are kept as written, everything else that is
    /// not 1 to 64 digits and dots with non-empty components is refused.
    pub fn parse(text: &str) -> Result<Uid, UidError> {
        let uid = without_padding(text);
        if uid.is_empty() {
            return Err(UidError::Empty);
        }
        if let Some((index, found)) = uid
            .chars()
            .enumerate()
            .find(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        {
            return Err(UidError::Character {
                position: index + 1,
                found,
            });
        }
        // Only ASCII is left: bytes are characters.
        if uid.len() > MAX_UID_LEN {
            return Err(UidError::TooLong { length: uid.len() });
        }
        if uid.split('.').any(str::is_empty) {
            return Err(UidError::EmptyComponent);
        }
        Ok(Uid(uid.to_string()))
    }

    /// The UID, digits and dots only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UID as a `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<&str> for Uid {
    type Error = UidError;

    fn try_from(text: &str) -> Result<Uid, UidError> {
        Uid::parse(text)
    }
}

impl TryFrom<String> for Uid {
    type Error = UidError;

    fn try_from(text: String) -> Result<Uid, UidError> {
        Uid::parse(&text)
    }
}

impl std::str::FromStr for Uid {
    type Err = UidError;

    fn from_str(text: &str) -> Result<Uid, UidError> {
        Uid::parse(text)
    }
}

impl AsRef<str> for Uid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Uid> for String {
    fn from(uid: Uid) -> String {
        uid.0
    }
}

impl PartialEq<str> for Uid {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Uid {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_uids_and_what_archives_send_are_accepted() {
        let cases = [
            ("1.2.840.10008.1.2", "1.2.840.10008.1.2"),
            ("1.2.03.4", "1.2.03.4"),
            ("1.2.3\0", "1.2.3"),
            ("1.2.3 ", "1.2.3"),
            ("1.2.3\0\0 ", "1.2.3"),
            ("0", "0"),
            ("1.0.3", "1.0.3"),
        ];
        for (text, expected) in cases {
            let uid = Uid::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(uid.as_str(), expected, "{text:?}");
        }
        let longest = format!("1.{}", "2".repeat(MAX_UID_LEN - 2));
        assert_eq!(Uid::parse(&longest).unwrap().as_str().len(), MAX_UID_LEN);
        assert_eq!(
            Uid::parse(&format!("{longest}\0")).unwrap().as_str(),
            longest,
            "padding does not count towards the length"
        );
    }

    #[test]
    fn hostile_and_malformed_text_is_refused_with_the_reason() {
        let character = |position, found| UidError::Character { position, found };
        let long = "1".repeat(10_000);
        let cases: Vec<(&str, UidError)> = vec![
            ("", UidError::Empty),
            ("\0", UidError::Empty),
            ("  ", UidError::Empty),
            ("1.2\"3", character(4, '"')),
            ("1.2\" OR study_instance_uid:*", character(4, '"')),
            ("x\" OR *", character(1, 'x')),
            ("1.2:3", character(4, ':')),
            ("1.(2)", character(3, '(')),
            ("1.2.*", character(5, '*')),
            ("1.2.é", character(5, 'é')),
            ("1.2\n", character(4, '\n')),
            (" 1.2", character(1, ' ')),
            ("1.2\\1.3", character(4, '\\')),
            ("1.2\u{0}3", character(4, '\0')),
            (&long, UidError::TooLong { length: 10_000 }),
            ("1..2", UidError::EmptyComponent),
            (".1", UidError::EmptyComponent),
            ("1.2.", UidError::EmptyComponent),
            (".", UidError::EmptyComponent),
        ];
        for (text, expected) in cases {
            let shown: String = text.chars().take(40).collect();
            assert_eq!(Uid::parse(text), Err(expected), "{shown:?}");
        }
        let sixty_five = format!("1.{}", "2".repeat(MAX_UID_LEN - 1));
        assert_eq!(
            Uid::parse(&sixty_five),
            Err(UidError::TooLong { length: 65 })
        );
        let hostile = "x".repeat(10_000);
        assert!(matches!(
            Uid::parse(&hostile),
            Err(UidError::Character { position: 1, .. })
        ));
    }

    #[test]
    fn messages_state_the_rule_without_echoing_the_text() {
        let error = Uid::parse("1.2\" OR study_instance_uid:*").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("character 4 is '\"'"), "{message}");
        assert!(message.contains("1 to 64 characters"), "{message}");
        assert!(!message.contains("study_instance_uid"), "{message}");
        assert!(
            UidError::Empty.to_string().starts_with("is empty"),
            "{}",
            UidError::Empty
        );
    }
}
