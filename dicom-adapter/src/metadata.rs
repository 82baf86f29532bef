//! Catalog metadata: the attributes of an instance that the catalog stores for filtering and
//! display, in a plain struct (no DICOM or protobuf types).
//!
//! Text values are trimmed of DICOM padding; absent attributes are empty strings or `None`.
//! Attributes that enhanced multi-frame objects keep in functional groups (pixel spacing, slice
//! thickness) are looked up there when absent at the top level.
//!
//! [`Instance::uids`] reads the four UIDs that identify an instance and checks each against the
//! rule of [`crate::uid`]; whoever takes an instance in (the DICOM listener, the service's ingest)
//! calls it before it uses any of them.
//!
//! The struct holds patient data. Its `Debug` output leaves the patient fields out, so that a
//! stray `{:?}` in a log line cannot leak them.

use dicom_core::Tag;
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use crate::error::AdapterError;
use crate::instance::{Instance, string_of};
use crate::uid::Uid;

/// The catalog metadata of one instance.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceMetadata {
    /// Patient ID (0010,0020). Patient data: for filters, never for logs.
    pub patient_id: String,
    /// Patient's Sex (0010,0040): M, F or O.
    pub patient_sex: String,
    /// Patient's Age (0010,1010), e.g. "054Y".
    pub patient_age: String,
    /// Patient's Birth Date (0010,0030), YYYYMMDD. Patient data: for filters only.
    pub patient_birth_date: String,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
    /// Study Date (0008,0020), YYYYMMDD.
    pub study_date: String,
    /// Study Time (0008,0030), HHMMSS with optional fraction.
    pub study_time: String,
    /// Modality (0008,0060), e.g. MR.
    pub modality: String,
    /// Body Part Examined (0018,0015).
    pub body_part: String,
    /// Study Description (0008,1030).
    pub study_description: String,
    /// Series Description (0008,103E).
    pub series_description: String,
    /// Institution Name (0008,0080).
    pub institution: String,
    /// Manufacturer (0008,0070).
    pub manufacturer: String,
    /// Manufacturer's Model Name (0008,1090).
    pub manufacturer_model: String,
    /// Slice Location (0020,1041), mm.
    pub slice_location: Option<f64>,
    /// Slice Thickness (0018,0050), mm (top level or Pixel Measures functional group).
    pub slice_thickness: Option<f64>,
    /// Pixel Spacing (0028,0030): row spacing, column spacing, mm.
    pub pixel_spacing: Option<[f64; 2]>,
    /// Rows (0028,0010); 0 when absent.
    pub rows: u32,
    /// Columns (0028,0011); 0 when absent.
    pub columns: u32,
    /// Number of Frames (0028,0008); 1 when absent.
    pub number_of_frames: u32,
    /// MR Sequence Name (0018,0024), or Scanning Sequence (0018,0020) when absent.
    pub sequence: String,
    /// Series Number (0020,0011).
    pub series_number: Option<i32>,
    /// Instance Number (0020,0013).
    pub instance_number: Option<i32>,
}

impl std::fmt::Debug for InstanceMetadata {
    /// Everything but the patient's ID and birth date.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceMetadata")
            .field("patient_id", &"<redacted>")
            .field("patient_birth_date", &"<redacted>")
            .field("study_instance_uid", &self.study_instance_uid)
            .field("series_instance_uid", &self.series_instance_uid)
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("sop_class_uid", &self.sop_class_uid)
            .field("modality", &self.modality)
            .field("rows", &self.rows)
            .field("columns", &self.columns)
            .field("number_of_frames", &self.number_of_frames)
            .finish_non_exhaustive()
    }
}

/// The four UIDs that identify an instance, each checked against the rule of [`crate::uid`]
/// (padding stripped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceUids {
    /// SOP Class UID (0008,0016).
    pub sop_class: Uid,
    /// SOP Instance UID (0008,0018).
    pub sop_instance: Uid,
    /// Study Instance UID (0020,000D).
    pub study: Uid,
    /// Series Instance UID (0020,000E).
    pub series: Uid,
}

impl Instance {
    /// The SOP Class, SOP Instance, Study Instance and Series Instance UIDs, checked. Every
    /// composite instance carries all four (Type 1); an absent one is
    /// [`AdapterError::MissingAttribute`], an empty or malformed one [`AdapterError::BadUid`],
    /// whose message names the attribute and the rule but not the value.
    pub fn uids(&self) -> Result<InstanceUids, AdapterError> {
        let o: &InMemDicomObject = &self.object;
        Ok(InstanceUids {
            sop_class: required_uid(
                o,
                tags::SOP_CLASS_UID,
                "SOPClassUID",
                "(0008,0016)",
                "tell what kind of object it is",
            )?,
            sop_instance: required_uid(
                o,
                tags::SOP_INSTANCE_UID,
                "SOPInstanceUID",
                "(0008,0018)",
                "identify the instance",
            )?,
            study: required_uid(
                o,
                tags::STUDY_INSTANCE_UID,
                "StudyInstanceUID",
                "(0020,000D)",
                "group the instance with its study",
            )?,
            series: required_uid(
                o,
                tags::SERIES_INSTANCE_UID,
                "SeriesInstanceUID",
                "(0020,000E)",
                "group the instance with its series",
            )?,
        })
    }

    /// Extracts the catalog metadata. Never fails: absent or malformed attributes are left
    /// empty (the pixel path checks the attributes it needs).
    pub fn metadata(&self) -> InstanceMetadata {
        let o: &InMemDicomObject = &self.object;
        let text = |tag: Tag| string_of(o, tag).unwrap_or_default();
        let sequence = Some(text(tags::SEQUENCE_NAME))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| text(tags::SCANNING_SEQUENCE));
        InstanceMetadata {
            patient_id: text(tags::PATIENT_ID),
            patient_sex: text(tags::PATIENT_SEX),
            patient_age: text(tags::PATIENT_AGE),
            patient_birth_date: text(tags::PATIENT_BIRTH_DATE),
            study_instance_uid: text(tags::STUDY_INSTANCE_UID),
            series_instance_uid: text(tags::SERIES_INSTANCE_UID),
            sop_instance_uid: text(tags::SOP_INSTANCE_UID),
            sop_class_uid: text(tags::SOP_CLASS_UID),
            study_date: text(tags::STUDY_DATE),
            study_time: text(tags::STUDY_TIME),
            modality: text(tags::MODALITY),
            body_part: text(tags::BODY_PART_EXAMINED),
            study_description: text(tags::STUDY_DESCRIPTION),
            series_description: text(tags::SERIES_DESCRIPTION),
            institution: text(tags::INSTITUTION_NAME),
            manufacturer: text(tags::MANUFACTURER),
            manufacturer_model: text(tags::MANUFACTURER_MODEL_NAME),
            slice_location: floats(o, tags::SLICE_LOCATION).and_then(first),
            slice_thickness: floats(o, tags::SLICE_THICKNESS)
                .or_else(|| pixel_measure(o, tags::SLICE_THICKNESS))
                .and_then(first),
            pixel_spacing: floats(o, tags::PIXEL_SPACING)
                .or_else(|| pixel_measure(o, tags::PIXEL_SPACING))
                .and_then(|v| (v.len() >= 2).then(|| [v[0], v[1]])),
            rows: integer(o, tags::ROWS).unwrap_or(0),
            columns: integer(o, tags::COLUMNS).unwrap_or(0),
            number_of_frames: integer(o, tags::NUMBER_OF_FRAMES)
                .filter(|&n: &u32| n >= 1)
                .unwrap_or(1),
            sequence,
            series_number: integer(o, tags::SERIES_NUMBER),
            instance_number: integer(o, tags::INSTANCE_NUMBER),
        }
    }
}

/// A required UID attribute, checked against the UID rule.
fn required_uid(
    o: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
    tag_text: &'static str,
    purpose: &'static str,
) -> Result<Uid, AdapterError> {
    let element = o.get(tag).ok_or(AdapterError::MissingAttribute {
        name,
        tag: tag_text,
        purpose,
    })?;
    let text = element.to_str().map_err(|_| AdapterError::BadAttribute {
        name,
        tag: tag_text,
        value: "a sequence".to_string(),
        problem: "a UID is text: 1 to 64 digits and dots",
    })?;
    Uid::parse(&text).map_err(|problem| AdapterError::BadUid {
        name,
        tag: tag_text,
        problem,
    })
}

fn first(values: Vec<f64>) -> Option<f64> {
    values.first().copied()
}

/// The finite numbers of a DS/FD attribute, `None` when absent, empty or malformed.
fn floats(o: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let values = o.get(tag)?.to_multi_float64().ok()?;
    (!values.is_empty() && values.iter().all(|v| v.is_finite())).then_some(values)
}

/// An integer attribute (IS or US) converted to `T`; `None` when absent, malformed or out of
/// range. IS values written with a zero fraction ("12.0") are accepted.
fn integer<T: TryFrom<i64>>(o: &InMemDicomObject, tag: Tag) -> Option<T> {
    let text = o.get(tag)?.to_str().ok()?;
    let trimmed = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    let value = trimmed.parse::<i64>().ok().or_else(|| {
        let float: f64 = trimmed.parse().ok()?;
        (float.is_finite() && float.fract() == 0.0 && float.abs() < 1e15).then_some(float as i64)
    })?;
    T::try_from(value).ok()
}

/// `tag` inside the Pixel Measures Sequence of the Shared Functional Groups (enhanced objects).
fn pixel_measure(o: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let shared = item(o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)?;
    let measures = item(shared, tags::PIXEL_MEASURES_SEQUENCE)?;
    floats(measures, tag)
}

/// The first item of a sequence attribute.
fn item(o: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    match o.get(tag)?.value() {
        Value::Sequence(seq) => seq.items().first(),
        _ => None,
    }
}
