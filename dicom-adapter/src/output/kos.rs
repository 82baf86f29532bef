//! The Key Object Selection document diptych files under a received study (PS3.3 A.35.4), so a
//! viewer such as Weasis shows that study's most similar instances as key images.
//!
//! The document carries the Patient and General Study modules of the **received** study (it files
//! under that study in a viewer or archive), a new series of modality `KO`, and the content of
//! template TID 2010 "Key Object Selection":
//!
//! - root: CONTAINER, document title (113000, DCM, "Of Interest"), continuity SEPARATE;
//! - one TEXT item (113012, DCM, "Key Object Description"): the title, then one line per hit
//!   with its mode, rank and distance, in the order of the IMAGE items;
//! - one IMAGE item (CONTAINS) per hit, referencing its SOP class and instance (and frame).
//!
//! Current Requested Procedure Evidence Sequence (0040,A375) lists every referenced instance,
//! grouped by study and series. The document references other patients' images: send it only
//! where the configuration says the archive is de-identified or a teaching collection.

use std::collections::HashSet;

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::datetime::now_utc;
use super::error::OutputError;
use super::uid::{is_valid_uid, new_uid};

/// Series Number (0020,0011) of every Key Object Selection series diptych writes.
pub const KEY_OBJECT_SERIES_NUMBER: u32 = 9901;

/// Who and which study a Key Object Selection document files under: the received study.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StudyIdentity {
    /// Patient ID (0010,0020) of the received study.
    pub patient_id: String,
    /// Patient's Name (0010,0010), when the received study carries one.
    pub patient_name: Option<String>,
    /// Study Instance UID (0020,000D) of the received study.
    pub study_instance_uid: String,
    /// Accession Number (0008,0050), when known.
    pub accession: Option<String>,
    /// Study Date (0008,0020) as `YYYYMMDD`, or "" when unknown.
    pub study_date: String,
    /// Study ID (0020,0010), or "" when unknown.
    pub study_id: String,
}

/// One similar instance the document points a viewer to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReferencedInstance {
    /// Study Instance UID of the similar instance.
    pub study_instance_uid: String,
    /// Series Instance UID of the similar instance.
    pub series_instance_uid: String,
    /// SOP Class UID of the similar instance.
    pub sop_class_uid: String,
    /// SOP Instance UID of the similar instance.
    pub sop_instance_uid: String,
    /// The frame (1-based) of a multi-frame instance that matched; `None` for a single frame.
    pub frame: Option<u32>,
    /// Rank of the hit among the results of its mode, 1 for the most similar.
    pub rank: u32,
    /// Code distance of the hit to the received study (docs/METHOD.md §3; smaller is more similar).
    pub distance: f64,
    /// The search mode that found it: "normal", "abnormal" or "combined".
    pub mode: String,
}

/// A received study and its most similar instances: the input of a Key Object Selection document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SimilarStudies {
    /// The study the document files under.
    pub received: StudyIdentity,
    /// What a viewer shows as the series description, e.g. "diptych: similar studies".
    pub title: String,
    /// The instances to reference, in the order they should be listed.
    pub hits: Vec<ReferencedInstance>,
}

/// The UIDs of a new document: its series and its SOP instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentUids {
    /// Series Instance UID of the `KO` series.
    pub series_instance_uid: String,
    /// SOP Instance UID of the document.
    pub sop_instance_uid: String,
}

impl DocumentUids {
    /// Fresh UIDs under `2.25` for a new series holding a new document.
    pub fn generate() -> Self {
        Self {
            series_instance_uid: new_uid(),
            sop_instance_uid: new_uid(),
        }
    }
}

/// Code (113000, DCM, "Of Interest"): the document title (CID 7010).
const TITLE_OF_INTEREST: (&str, &str, &str) = ("113000", "DCM", "Of Interest");
/// Code (113012, DCM, "Key Object Description"): the TEXT item's concept name (TID 2010).
const KEY_OBJECT_DESCRIPTION: (&str, &str, &str) = ("113012", "DCM", "Key Object Description");

impl SimilarStudies {
    /// The Key Object Selection document, in a new series with fresh UIDs, with a file meta group
    /// for explicit VR little endian.
    pub fn key_object(&self) -> Result<DefaultDicomObject, OutputError> {
        self.key_object_with(&DocumentUids::generate())
    }

    /// The document as Part-10 bytes (preamble, `DICM`, meta group, data set), with fresh UIDs.
    pub fn key_object_part10(&self) -> Result<Vec<u8>, OutputError> {
        let mut bytes = Vec::new();
        self.key_object()?
            .write_all(&mut bytes)
            .map_err(|e| build_error(&e))?;
        Ok(bytes)
    }

    /// The document with the given series and instance UIDs (a caller that keeps one diptych
    /// series per study passes the same series UID each time).
    pub fn key_object_with(&self, uids: &DocumentUids) -> Result<DefaultDicomObject, OutputError> {
        self.check(uids)?;
        let now = now_utc();
        let study = &self.received;
        let mut elements = vec![
            // SOP Common
            text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
            text(
                tags::SOP_CLASS_UID,
                VR::UI,
                uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE,
            ),
            text(tags::SOP_INSTANCE_UID, VR::UI, &uids.sop_instance_uid),
            text(tags::INSTANCE_CREATION_DATE, VR::DA, &now.date),
            text(tags::INSTANCE_CREATION_TIME, VR::TM, &now.time),
            text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000"),
            // Patient
            text(
                tags::PATIENT_NAME,
                VR::PN,
                study.patient_name.as_deref().unwrap_or(""),
            ),
            text(tags::PATIENT_ID, VR::LO, &study.patient_id),
            empty(tags::PATIENT_BIRTH_DATE, VR::DA),
            empty(tags::PATIENT_SEX, VR::CS),
            // General Study
            text(tags::STUDY_INSTANCE_UID, VR::UI, &study.study_instance_uid),
            text(tags::STUDY_DATE, VR::DA, &study.study_date),
            empty(tags::STUDY_TIME, VR::TM),
            empty(tags::REFERRING_PHYSICIAN_NAME, VR::PN),
            text(tags::STUDY_ID, VR::SH, &study.study_id),
            text(
                tags::ACCESSION_NUMBER,
                VR::SH,
                study.accession.as_deref().unwrap_or(""),
            ),
            // Key Object Document Series
            text(tags::MODALITY, VR::CS, "KO"),
            text(tags::SERIES_INSTANCE_UID, VR::UI, &uids.series_instance_uid),
            text(
                tags::SERIES_NUMBER,
                VR::IS,
                &KEY_OBJECT_SERIES_NUMBER.to_string(),
            ),
            text(tags::SERIES_DATE, VR::DA, &now.date),
            text(tags::SERIES_TIME, VR::TM, &now.time),
            sequence(
                tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
                Vec::new(),
            ),
            // General Equipment
            text(tags::MANUFACTURER, VR::LO, "diptych"),
            text(
                tags::SOFTWARE_VERSIONS,
                VR::LO,
                concat!("diptych ", env!("CARGO_PKG_VERSION")),
            ),
            // Key Object Document
            text(tags::INSTANCE_NUMBER, VR::IS, "1"),
            text(tags::CONTENT_DATE, VR::DA, &now.date),
            text(tags::CONTENT_TIME, VR::TM, &now.time),
            sequence(
                tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
                self.evidence(),
            ),
            // SR Document Content: the root of TID 2010
            text(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
            sequence(
                tags::CONCEPT_NAME_CODE_SEQUENCE,
                vec![code(TITLE_OF_INTEREST)],
            ),
            text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
            sequence(
                tags::CONTENT_TEMPLATE_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
                    text(tags::TEMPLATE_IDENTIFIER, VR::CS, "2010"),
                ])],
            ),
            sequence(tags::CONTENT_SEQUENCE, self.content()),
        ];
        if !self.title.is_empty() {
            elements.push(text(tags::SERIES_DESCRIPTION, VR::LO, &self.title));
        }
        InMemDicomObject::from_element_iter(elements)
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .map_err(|e| build_error(&e))
    }

    /// Refuses a document without hits or with a malformed UID.
    fn check(&self, uids: &DocumentUids) -> Result<(), OutputError> {
        let study = &self.received.study_instance_uid;
        let mut fields: Vec<(String, &str)> = vec![
            ("received Study Instance UID".into(), study),
            (
                "document Series Instance UID".into(),
                &uids.series_instance_uid,
            ),
            ("document SOP Instance UID".into(), &uids.sop_instance_uid),
        ];
        for (i, hit) in self.hits.iter().enumerate() {
            let n = i + 1;
            fields.push((
                format!("hit {n} Study Instance UID"),
                &hit.study_instance_uid,
            ));
            fields.push((
                format!("hit {n} Series Instance UID"),
                &hit.series_instance_uid,
            ));
            fields.push((format!("hit {n} SOP Class UID"), &hit.sop_class_uid));
            fields.push((format!("hit {n} SOP Instance UID"), &hit.sop_instance_uid));
        }
        if let Some((field, value)) = fields.into_iter().find(|(_, v)| !is_valid_uid(v)) {
            return Err(OutputError::InvalidUid {
                field,
                value: value.to_string(),
            });
        }
        if self.hits.is_empty() {
            return Err(OutputError::NoHits {
                study: study.clone(),
            });
        }
        Ok(())
    }

    /// Current Requested Procedure Evidence Sequence items: one per study, each with its series
    /// and their instances, in order of first appearance, each instance once.
    fn evidence(&self) -> Vec<InMemDicomObject> {
        let mut studies: Vec<(&str, Vec<SeriesGroup<'_>>)> = Vec::new();
        let mut seen = HashSet::new();
        for hit in &self.hits {
            if !seen.insert(hit.sop_instance_uid.as_str()) {
                continue;
            }
            let position = studies
                .iter()
                .position(|(uid, _)| *uid == hit.study_instance_uid);
            let series = match position {
                Some(p) => &mut studies[p].1,
                None => {
                    studies.push((&hit.study_instance_uid, Vec::new()));
                    &mut studies.last_mut().expect("just pushed").1
                }
            };
            match series
                .iter_mut()
                .find(|(uid, _)| *uid == hit.series_instance_uid)
            {
                Some((_, instances)) => instances.push(hit),
                None => series.push((&hit.series_instance_uid, vec![hit])),
            }
        }
        studies
            .into_iter()
            .map(|(study, series)| {
                let series_items = series
                    .into_iter()
                    .map(|(series, instances)| {
                        InMemDicomObject::from_element_iter([
                            sequence(
                                tags::REFERENCED_SOP_SEQUENCE,
                                instances
                                    .into_iter()
                                    .map(|hit| sop_reference(hit, false))
                                    .collect(),
                            ),
                            text(tags::SERIES_INSTANCE_UID, VR::UI, series),
                        ])
                    })
                    .collect();
                InMemDicomObject::from_element_iter([
                    sequence(tags::REFERENCED_SERIES_SEQUENCE, series_items),
                    text(tags::STUDY_INSTANCE_UID, VR::UI, study),
                ])
            })
            .collect()
    }

    /// The root container's children: the Key Object Description, then one IMAGE per hit.
    fn content(&self) -> Vec<InMemDicomObject> {
        let mut items = vec![InMemDicomObject::from_element_iter([
            text(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
            text(tags::VALUE_TYPE, VR::CS, "TEXT"),
            sequence(
                tags::CONCEPT_NAME_CODE_SEQUENCE,
                vec![code(KEY_OBJECT_DESCRIPTION)],
            ),
            text(tags::TEXT_VALUE, VR::UT, &self.description()),
        ])];
        items.extend(self.hits.iter().map(|hit| {
            InMemDicomObject::from_element_iter([
                text(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
                text(tags::VALUE_TYPE, VR::CS, "IMAGE"),
                sequence(
                    tags::REFERENCED_SOP_SEQUENCE,
                    vec![sop_reference(hit, true)],
                ),
            ])
        }));
        items
    }

    /// The Key Object Description: the title, then one line per hit (mode, rank, distance,
    /// study), numbered in the order of the IMAGE items.
    pub fn description(&self) -> String {
        let mut lines = Vec::with_capacity(self.hits.len() + 1);
        if !self.title.is_empty() {
            lines.push(self.title.clone());
        }
        for (i, hit) in self.hits.iter().enumerate() {
            let frame = hit
                .frame
                .map(|f| format!(", frame {f}"))
                .unwrap_or_default();
            lines.push(format!(
                "image {}: {} mode, rank {}, distance {:.4}, study {}{frame}",
                i + 1,
                hit.mode,
                hit.rank,
                hit.distance,
                hit.study_instance_uid,
            ));
        }
        lines.join("\r\n")
    }
}

/// A series UID and its referenced instances, as the evidence sequence groups them.
type SeriesGroup<'a> = (&'a str, Vec<&'a ReferencedInstance>);

/// A Referenced SOP Sequence item for `hit`; with its frame when `with_frame` and it has one.
fn sop_reference(hit: &ReferencedInstance, with_frame: bool) -> InMemDicomObject {
    let mut item = InMemDicomObject::from_element_iter([
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &hit.sop_class_uid),
        text(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            &hit.sop_instance_uid,
        ),
    ]);
    if let (true, Some(frame)) = (with_frame, hit.frame) {
        item.put(text(
            tags::REFERENCED_FRAME_NUMBER,
            VR::IS,
            &frame.to_string(),
        ));
    }
    item
}

/// A Code Sequence item (Basic Coded Entry attributes).
fn code((value, scheme, meaning): (&str, &str, &str)) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::CODE_VALUE, VR::SH, value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

fn text(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    if value.is_empty() {
        empty(tag, vr)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }
}

fn empty(tag: Tag, vr: VR) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn build_error(error: &dyn std::error::Error) -> OutputError {
    OutputError::Build {
        message: crate::instance::error_chain(error),
    }
}
