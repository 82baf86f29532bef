//! QIDO-RS study search (PS3.18 10.6): `GET {base}/studies?StudyDate=…&ModalitiesInStudy=…
//! &StudyDescription=…&limit=…&offset=…`, page after page, read from DICOM JSON into the same
//! [`FoundStudies`] a C-FIND gives — each study once, in the archive's order, every Study
//! Instance UID checked against the UID rule, and every match checked again against the date
//! range and the modality ([`StudyQuery::admits`]), so an archive that ignores a key cannot
//! widen the result.

use diptych_dicom_adapter::Uid;
use diptych_dicom_adapter::output::{FoundStudies, StudyMatch, StudyQuery};
use serde_json::Value;

use super::dicomweb::{DicomWeb, WebError};

/// Studies asked for per request.
pub const PAGE: usize = 100;

/// Largest answer read for one page (a study's attributes are a few kilobytes).
const MAX_PAGE_BYTES: usize = 64 << 20;

/// Study Instance UID, Study Date, Modalities in Study, Number of Study Related Instances.
const STUDY_UID: &str = "0020000D";
const STUDY_DATE: &str = "00080020";
const MODALITIES: &str = "00080061";
const INSTANCES: &str = "00201208";

/// Asks the archive at `web` for its studies matching `query` (checked first), page by page.
pub async fn search_studies(web: &DicomWeb, query: &StudyQuery) -> Result<FoundStudies, WebError> {
    query.check().map_err(|e| WebError::Body {
        url: web.base().to_string(),
        message: format!("the query cannot be sent: {e}"),
    })?;
    let mut found = FoundStudies::default();
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0;
    loop {
        let path = format!("/studies?{}", query_string(query, PAGE, offset));
        let (content_type, body) = web
            .get(&path, "application/dicom+json", MAX_PAGE_BYTES)
            .await?;
        let page = read_page(&body).map_err(|message| WebError::Body {
            url: format!("{}{path}", web.base()),
            message: format!("{message} (Content-Type {content_type:?})"),
        })?;
        let (read, mut fresh) = (page.len(), 0);
        for entry in page {
            match entry {
                Some(study) if !seen.insert(study.study_instance_uid.clone()) => {}
                Some(study) if !query.admits(&study) => {
                    fresh += 1;
                    found.outside_query += 1;
                }
                Some(study) => {
                    fresh += 1;
                    found.studies.push(study);
                }
                None => {
                    fresh += 1;
                    found.malformed += 1;
                }
            }
        }
        // A short page is the last; a page of studies already seen means the archive ignores
        // `offset` (it would answer the same page for ever).
        if read < PAGE || fresh == 0 {
            return Ok(found);
        }
        offset += read;
    }
}

/// The query string of one page: the matching keys, the attributes wanted, `limit` and `offset`.
fn query_string(query: &StudyQuery, limit: usize, offset: usize) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let range = query.date_range();
    if !range.is_empty() {
        pairs.push(("StudyDate", range));
    }
    if let Some(modality) = &query.modality {
        pairs.push(("ModalitiesInStudy", modality.clone()));
    }
    if let Some(description) = &query.description {
        pairs.push(("StudyDescription", description.clone()));
    }
    for tag in [STUDY_DATE, MODALITIES, INSTANCES] {
        pairs.push(("includefield", tag.to_string()));
    }
    pairs.push(("limit", limit.to_string()));
    pairs.push(("offset", offset.to_string()));
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `value` with every byte but the unreserved characters of RFC 3986 and the wildcard `*`
/// percent-encoded (`?` in a description is a wildcard, not the start of a query).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~*".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One page of a QIDO-RS answer: a JSON array of DICOM JSON data sets (empty for a 204); each
/// read into a match, `None` for one without a valid Study Instance UID.
fn read_page(body: &[u8]) -> Result<Vec<Option<StudyMatch>>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        format!("it is not JSON ({e}); the archive must answer application/dicom+json")
    })?;
    let Value::Array(studies) = value else {
        return Err("it is not a JSON array of DICOM JSON data sets".into());
    };
    Ok(studies.iter().map(read_match).collect())
}

/// The values of the attribute `tag` of a DICOM JSON data set.
fn values<'a>(study: &'a Value, tag: &str) -> &'a [Value] {
    study
        .get(tag)
        .and_then(|attribute| attribute.get("Value"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The first value of `tag` as text, trimmed; `None` when absent or empty.
fn text(study: &Value, tag: &str) -> Option<String> {
    values(study, tag)
        .first()
        .and_then(Value::as_str)
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' ').to_string())
        .filter(|s| !s.is_empty())
}

/// The study a QIDO-RS match describes; `None` without a valid Study Instance UID.
fn read_match(study: &Value) -> Option<StudyMatch> {
    let study_instance_uid = Uid::parse(&text(study, STUDY_UID)?).ok()?;
    let modalities = values(study, MODALITIES)
        .iter()
        .filter_map(Value::as_str)
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    // IS is a JSON number in DICOM JSON; some archives send it as a string.
    let instances = values(study, INSTANCES).first().and_then(|n| match n {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    Some(StudyMatch {
        study_instance_uid,
        study_date: text(study, STUDY_DATE),
        modalities,
        instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_carries_every_key_encoded() {
        let query = StudyQuery {
            date_from: Some("20240101".into()),
            date_to: None,
            modality: Some("MR".into()),
            description: Some("BRAIN & SPINE?*".into()),
        };
        assert_eq!(
            query_string(&query, 100, 200),
            "StudyDate=20240101-&ModalitiesInStudy=MR&StudyDescription=BRAIN%20%26%20SPINE%3F*\
             &includefield=00080020&includefield=00080061&includefield=00201208&limit=100&offset=200"
        );
        assert_eq!(
            query_string(&StudyQuery::default(), 10, 0),
            "includefield=00080020&includefield=00080061&includefield=00201208&limit=10&offset=0"
        );
    }

    #[test]
    fn a_page_reads_into_matches_and_a_bad_one_is_an_error() {
        let page = br#"[
            {"0020000D": {"vr": "UI", "Value": ["1.2.840.99.1"]},
             "00080020": {"vr": "DA", "Value": ["20240105"]},
             "00080061": {"vr": "CS", "Value": ["MR", "SR"]},
             "00201208": {"vr": "IS", "Value": [4]}},
            {"0020000D": {"vr": "UI", "Value": ["1.2.840.99.2 "]},
             "00201208": {"vr": "IS", "Value": ["12"]}},
            {"0020000D": {"vr": "UI", "Value": ["1.2\" OR *"]}},
            {"00080020": {"vr": "DA", "Value": ["20240105"]}},
            "not an object"
        ]"#;
        let read = read_page(page).unwrap();
        assert_eq!(read.len(), 5);
        let first = read[0].clone().unwrap();
        assert_eq!(first.study_instance_uid.as_str(), "1.2.840.99.1");
        assert_eq!(first.study_date.as_deref(), Some("20240105"));
        assert_eq!(first.modalities, ["MR", "SR"]);
        assert_eq!(first.instances, Some(4));
        let second = read[1].clone().unwrap();
        assert_eq!(second.study_instance_uid.as_str(), "1.2.840.99.2");
        assert_eq!((second.study_date, second.instances), (None, Some(12)));
        assert!(read[2..].iter().all(Option::is_none));
        assert!(read_page(b"").unwrap().is_empty());
        assert!(read_page(b"{}").unwrap_err().contains("array"));
        assert!(read_page(b"<html>").unwrap_err().contains("not JSON"));
    }
}
