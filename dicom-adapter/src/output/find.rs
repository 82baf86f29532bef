//! A C-FIND SCU at study level (Study Root Query/Retrieve, PS3.4 C.4.1): asks an archive which
//! studies it holds, narrowed by study date range, modality and study description, and returns
//! their Study Instance UIDs with the few attributes backfill needs.
//!
//! The archive filters (it is the one holding the data); the matches it returns are checked
//! again here against the date range and the modality, so an archive that ignores a key cannot
//! widen the result. Every Study Instance UID passes the UID rule of [`crate::uid`] before it
//! is returned; a match with a malformed one is counted and left out.

use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::error::{ExchangeError, RetrieveError};
use super::message;
use super::qr_dimse::{Incoming, STUDY_ROOT_FIND, field, is_pending, request};
use super::send::{self, Accepted, Destination, finish};
use crate::uid::Uid;

/// Largest identifier accepted in a C-FIND response (a study-level one is a few hundred bytes).
const MAX_IDENTIFIER_BYTES: u64 = 1 << 20;

/// What to ask the archive for: every key is optional; none means every study it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StudyQuery {
    /// First study date, `YYYYMMDD`, inclusive.
    pub date_from: Option<String>,
    /// Last study date, `YYYYMMDD`, inclusive.
    pub date_to: Option<String>,
    /// A modality the study holds (Modalities in Study), e.g. `MR`.
    pub modality: Option<String>,
    /// Study Description, with DICOM wildcards `*` and `?` (matched by the archive).
    pub description: Option<String>,
}

/// Why a [`StudyQuery`] cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A date that is not `YYYYMMDD`.
    #[error("{which} date {value:?} is not a date; write it as YYYYMMDD, e.g. 20240131")]
    Date {
        /// `first` or `last`.
        which: &'static str,
        /// What was given.
        value: String,
    },
    /// The range ends before it starts.
    #[error("the date range ends ({to}) before it starts ({from}); swap them")]
    Backwards {
        /// First date.
        from: String,
        /// Last date.
        to: String,
    },
    /// A modality that is not a DICOM code string.
    #[error(
        "modality {0:?} is not a DICOM modality code; give 1 to 16 upper-case letters or digits, e.g. MR or CT"
    )]
    Modality(String),
    /// A description that cannot be a Study Description.
    #[error(
        "study description {0:?} cannot be matched: at most 64 characters, no backslash or control characters"
    )]
    Description(String),
}

impl StudyQuery {
    /// Checks every key; the error says which is wrong and how to write it.
    pub fn check(&self) -> Result<(), QueryError> {
        let date = |which, value: &Option<String>| match value {
            Some(v) if !is_date(v) => Err(QueryError::Date {
                which,
                value: v.clone(),
            }),
            _ => Ok(()),
        };
        date("first", &self.date_from)?;
        date("last", &self.date_to)?;
        if let (Some(from), Some(to)) = (&self.date_from, &self.date_to)
            && to < from
        {
            return Err(QueryError::Backwards {
                from: from.clone(),
                to: to.clone(),
            });
        }
        if let Some(m) = &self.modality
            && (m.is_empty()
                || m.len() > 16
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
        {
            return Err(QueryError::Modality(m.clone()));
        }
        if let Some(d) = &self.description
            && (d.chars().count() > 64 || d.chars().any(|c| c == '\\' || c.is_control()))
        {
            return Err(QueryError::Description(d.clone()));
        }
        Ok(())
    }

    /// The Study Date matching key: `A-B`, `A-`, `-B` or empty (universal); QIDO-RS takes the
    /// same.
    pub fn date_range(&self) -> String {
        match (&self.date_from, &self.date_to) {
            (None, None) => String::new(),
            (from, to) => format!(
                "{}-{}",
                from.as_deref().unwrap_or(""),
                to.as_deref().unwrap_or("")
            ),
        }
    }

    /// Whether a match the archive returned agrees with the date range and the modality (keys
    /// the archive left empty pass: it did not return them, so they cannot be checked). A
    /// C-FIND's and a QIDO-RS search's matches both pass it.
    pub fn admits(&self, found: &StudyMatch) -> bool {
        let date_ok = match &found.study_date {
            Some(date) if is_date(date) => {
                self.date_from.as_ref().is_none_or(|from| date >= from)
                    && self.date_to.as_ref().is_none_or(|to| date <= to)
            }
            _ => true,
        };
        let modality_ok = match &self.modality {
            Some(m) if !found.modalities.is_empty() => found.modalities.iter().any(|f| f == m),
            _ => true,
        };
        date_ok && modality_ok
    }

    /// The study-level identifier of the query.
    fn identifier(&self) -> InMemDicomObject {
        let mut object = InMemDicomObject::new_empty();
        let mut text = |tag: Tag, vr: VR, value: &str| {
            object.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        };
        text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY");
        text(tags::STUDY_INSTANCE_UID, VR::UI, "");
        text(tags::STUDY_DATE, VR::DA, &self.date_range());
        text(
            tags::MODALITIES_IN_STUDY,
            VR::CS,
            self.modality.as_deref().unwrap_or(""),
        );
        text(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            self.description.as_deref().unwrap_or(""),
        );
        text(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, "");
        object
    }
}

fn is_date(text: &str) -> bool {
    text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit())
}

/// A study the archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyMatch {
    /// Its Study Instance UID.
    pub study_instance_uid: Uid,
    /// Study Date, when the archive returned one.
    pub study_date: Option<String>,
    /// Modalities in Study, when returned.
    pub modalities: Vec<String>,
    /// Number of Study Related Instances, when returned.
    pub instances: Option<u32>,
}

/// What a C-FIND found: the matching studies, and the matches left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundStudies {
    /// The matches, in the order the archive sent them, each study once.
    pub studies: Vec<StudyMatch>,
    /// Matches without a valid Study Instance UID (left out).
    pub malformed: u32,
    /// Matches outside the date range or without the modality asked (the archive ignored a key).
    pub outside_query: u32,
}

/// Asks `archive` for its studies matching `query` (C-FIND, Study Root, study level), with
/// diptych's AE title `archive.calling_ae`; the whole exchange runs under `timeout`.
pub async fn find_studies(
    archive: &Destination,
    query: &StudyQuery,
    timeout: Duration,
) -> Result<FoundStudies, RetrieveError> {
    query
        .check()
        .map_err(|e| RetrieveError::Query(e.to_string()))?;
    match tokio::time::timeout(timeout, exchange(archive, query)).await {
        Ok(result) => result,
        Err(_) => Err(RetrieveError::Timeout {
            archive: archive.to_string(),
            operation: "C-FIND",
            after: timeout,
        }),
    }
}

async fn exchange(
    archive: &Destination,
    query: &StudyQuery,
) -> Result<FoundStudies, RetrieveError> {
    let Accepted {
        mut association,
        context_id,
        transfer_syntax,
    } = send::associate_query_retrieve(
        archive,
        STUDY_ROOT_FIND,
        "Study Root Query/Retrieve – FIND (C-FIND)",
    )
    .await?;
    let protocol = |error| RetrieveError::Protocol {
        archive: archive.to_string(),
        operation: "C-FIND",
        error,
    };
    let outcome = async {
        let ts = TransferSyntaxRegistry
            .get(&transfer_syntax)
            .ok_or_else(|| ExchangeError::UnknownTransferSyntax(transfer_syntax.clone()))?;
        let identifier = send::encode(&query.identifier(), &transfer_syntax)?;
        let message_id = 1;
        let command = request(field::C_FIND_RQ, message_id, STUDY_ROOT_FIND, None);
        message::send(&mut association, context_id, &command, Some(&identifier)).await?;
        let mut found = FoundStudies::default();
        let mut seen = std::collections::HashSet::new();
        loop {
            let reply = message::receive(&mut association, MAX_IDENTIFIER_BYTES, |c| {
                Ok(Incoming::parse(c)?.has_data_set)
            })
            .await?;
            let response = Incoming::parse(&reply.command)?;
            if response.field != field::C_FIND_RSP {
                return Err(ExchangeError::Response(
                    crate::command_set::CommandSetError::UnexpectedCommand {
                        expected: "C-FIND-RSP",
                        got: response.field,
                    },
                ));
            }
            if response.responding_to != message_id {
                return Err(ExchangeError::WrongMessage {
                    got: response.responding_to,
                    expected: message_id,
                });
            }
            let status = response.status()?;
            if !is_pending(status) {
                return Ok((status, response.error_comment, found));
            }
            let Some(data) = reply.data else { continue };
            match read_match(&data, ts) {
                Some(study) if !query.admits(&study) => found.outside_query += 1,
                Some(study) => {
                    if seen.insert(study.study_instance_uid.clone()) {
                        found.studies.push(study);
                    }
                }
                None => found.malformed += 1,
            }
        }
    }
    .await;
    match finish(association, archive, "C-FIND", outcome).await {
        Ok((0x0000, _, found)) => Ok(found),
        Ok((status, comment, _)) => Err(RetrieveError::Failed {
            archive: archive.to_string(),
            operation: "C-FIND",
            status,
            comment: comment.unwrap_or_default(),
        }),
        Err(error) => Err(protocol(error)),
    }
}

/// The study a C-FIND identifier describes; `None` without a valid Study Instance UID.
fn read_match(
    data: &[u8],
    ts: &dicom_transfer_syntax_registry::TransferSyntax,
) -> Option<StudyMatch> {
    let object = InMemDicomObject::read_dataset_with_ts(data, ts).ok()?;
    let text = |tag| {
        object
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' ').to_string())
            .filter(|s| !s.is_empty())
    };
    let study_instance_uid = Uid::parse(&text(tags::STUDY_INSTANCE_UID)?).ok()?;
    let modalities = text(tags::MODALITIES_IN_STUDY)
        .map(|m| m.split('\\').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    Some(StudyMatch {
        study_instance_uid,
        study_date: text(tags::STUDY_DATE),
        modalities,
        instances: text(tags::NUMBER_OF_STUDY_RELATED_INSTANCES).and_then(|n| n.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_say_how_to_write_them() {
        let ok = StudyQuery {
            date_from: Some("20240101".into()),
            date_to: Some("20241231".into()),
            modality: Some("MR".into()),
            description: Some("*brain*".into()),
        };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.date_range(), "20240101-20241231");
        let bad_date = StudyQuery {
            date_from: Some("2024-01-01".into()),
            ..Default::default()
        };
        assert!(
            bad_date
                .check()
                .unwrap_err()
                .to_string()
                .contains("YYYYMMDD")
        );
        let backwards = StudyQuery {
            date_from: Some("20240201".into()),
            date_to: Some("20240101".into()),
            ..Default::default()
        };
        assert!(matches!(
            backwards.check(),
            Err(QueryError::Backwards { .. })
        ));
        let modality = StudyQuery {
            modality: Some("mr\\CT".into()),
            ..Default::default()
        };
        assert!(matches!(modality.check(), Err(QueryError::Modality(_))));
        assert_eq!(StudyQuery::default().date_range(), "");
    }

    #[test]
    fn matches_outside_the_query_are_recognised() {
        let query = StudyQuery {
            date_from: Some("20240101".into()),
            modality: Some("MR".into()),
            ..Default::default()
        };
        let found = |date: &str, modality: &str| StudyMatch {
            study_instance_uid: Uid::parse("1.2.3").unwrap(),
            study_date: Some(date.into()),
            modalities: vec![modality.into()],
            instances: None,
        };
        assert!(query.admits(&found("20240102", "MR")));
        assert!(!query.admits(&found("20231231", "MR")));
        assert!(!query.admits(&found("20240102", "CT")));
    }

    #[test]
    fn an_identifier_reads_back_into_a_match() {
        let ts = TransferSyntaxRegistry
            .get(dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN)
            .unwrap();
        let mut object = InMemDicomObject::new_empty();
        object.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.840.99.1\0"),
        ));
        object.put(DataElement::new(
            tags::MODALITIES_IN_STUDY,
            VR::CS,
            PrimitiveValue::from("MR\\SR"),
        ));
        object.put(DataElement::new(
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
            VR::IS,
            PrimitiveValue::from("12"),
        ));
        let mut bytes = Vec::new();
        object.write_dataset_with_ts(&mut bytes, ts).unwrap();
        let found = read_match(&bytes, ts).unwrap();
        assert_eq!(found.study_instance_uid.as_str(), "1.2.840.99.1");
        assert_eq!(found.modalities, ["MR", "SR"]);
        assert_eq!(found.instances, Some(12));
        let mut hostile = InMemDicomObject::new_empty();
        hostile.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3' OR 1=1"),
        ));
        let mut bytes = Vec::new();
        hostile.write_dataset_with_ts(&mut bytes, ts).unwrap();
        assert_eq!(read_match(&bytes, ts), None);
    }
}
