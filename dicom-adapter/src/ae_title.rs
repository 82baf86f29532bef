//! [`AeTitle`]: DICOM's rule for an application entity title, in one place — the listener's own
//! title, the callers it allows, the destinations it sends to, and the configuration all check
//! titles with it.

use std::fmt;

/// An application entity title (value representation AE, PS3.5 §6.2): 1 to 16 characters of
/// the default repertoire — printable ASCII and space, no backslash, no control characters —
/// with leading and trailing spaces not significant (they are removed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AeTitle(String);

/// Why a text is not an AE title; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeTitleError {
    /// Nothing but spaces.
    #[error("an AE title cannot be empty or all spaces; use 1 to 16 characters")]
    Empty,
    /// More than 16 characters once the surrounding spaces are removed.
    #[error("an AE title has at most 16 characters, this one {0}")]
    TooLong(usize),
    /// A character outside the default repertoire, or a backslash.
    #[error("an AE title holds printable ASCII and spaces only, without backslash (found {0:?})")]
    Character(char),
}

impl AeTitle {
    /// Checks `text` against the AE rule and keeps it without its surrounding spaces.
    pub fn parse(text: &str) -> Result<AeTitle, AeTitleError> {
        let title = text.trim_matches(' ');
        if title.is_empty() {
            return Err(AeTitleError::Empty);
        }
        if let Some(bad) = title
            .chars()
            .find(|&c| !(c.is_ascii_graphic() || c == ' ') || c == '\\')
        {
            return Err(AeTitleError::Character(bad));
        }
        if title.len() > 16 {
            return Err(AeTitleError::TooLong(title.len()));
        }
        Ok(AeTitle(title.to_string()))
    }

    /// The title, without surrounding spaces.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<AeTitle> for String {
    fn from(title: AeTitle) -> String {
        title.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_follow_the_ae_rule() {
        assert_eq!(AeTitle::parse("DIPTYCH").unwrap().as_str(), "DIPTYCH");
        assert_eq!(
            AeTitle::parse("  STORE SCU ").unwrap().as_str(),
            "STORE SCU"
        );
        assert_eq!(
            AeTitle::parse("A-16-CHARACTERS!").unwrap().as_str().len(),
            16
        );
        assert_eq!(AeTitle::parse("   "), Err(AeTitleError::Empty));
        assert_eq!(AeTitle::parse(""), Err(AeTitleError::Empty));
        assert_eq!(
            AeTitle::parse("A-TITLE-LONGER-THAN-16"),
            Err(AeTitleError::TooLong(22))
        );
        assert_eq!(
            AeTitle::parse("BACK\\SLASH"),
            Err(AeTitleError::Character('\\'))
        );
        assert_eq!(
            AeTitle::parse("TAB\tTITLE"),
            Err(AeTitleError::Character('\t'))
        );
        assert_eq!(AeTitle::parse("ÜMLAUT"), Err(AeTitleError::Character('Ü')));
    }
}
