//! The catalog's fields: the public filter vocabulary, the tantivy schema that holds it, and
//! the conversion of a [`CatalogEntry`] to a document and of a stored document back to a
//! [`StoredRecord`].

use diptych_dicom_adapter::InstanceMetadata;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer};
use tantivy::{TantivyDocument, Term};

use super::lookup::UidField;
use crate::record::{RecordId, key_of};

/// Name of the tokenizer of keyword fields: the whole value as one token, lowercased, so that
/// `modality:mr` and `modality:MR` both match.
pub(crate) const KEYWORD_TOKENIZER: &str = "diptych_keyword";

/// The analyzer registered as [`KEYWORD_TOKENIZER`].
pub(crate) fn keyword_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(LowerCaser)
        .build()
}

/// One record of the catalog to add: an indexed slice with its instance's metadata.
#[derive(Clone, Debug)]
pub struct CatalogEntry {
    /// The record's id in the code store.
    pub record: RecordId,
    /// Zero-based frame of the slice within its instance.
    pub frame: u32,
    /// The instance's DICOM metadata.
    pub metadata: InstanceMetadata,
    /// The slice's abnormality score in [0, 1].
    pub abnormality: f32,
}

/// The displayable catalog metadata of one record, as search hits show it. The patient's
/// birth date is never stored, so `metadata.patient_birth_date` is always empty.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRecord {
    /// The record's id in the code store.
    pub record: RecordId,
    /// Zero-based frame of the slice within its instance.
    pub frame: u32,
    /// The instance's metadata, birth date left empty.
    pub metadata: InstanceMetadata,
    /// The slice's abnormality score.
    pub abnormality: f32,
}

/// How a field is matched in a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// Words: the value is split into lowercased words, any of which a term matches.
    Text,
    /// An exact code or identifier, matched whole and without regard to case.
    Keyword,
    /// An integer, with ranges (`[a TO b]`, `>`, `>=`, `<`, `<=`).
    Integer,
    /// A real number, with ranges.
    Float,
    /// A date written YYYYMMDD, with ranges.
    Date,
}

/// One field of the filter vocabulary, for the capabilities call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldInfo {
    /// The name used in filters, e.g. `modality`.
    pub name: &'static str,
    /// How values are matched.
    pub kind: FieldKind,
    /// What the field holds.
    pub description: &'static str,
}

const fn info(name: &'static str, kind: FieldKind, description: &'static str) -> FieldInfo {
    FieldInfo {
        name,
        kind,
        description,
    }
}

/// The filter vocabulary, in display order.
pub(crate) const FIELDS: &[FieldInfo] = &[
    info("record", FieldKind::Integer, "Record id in the code store"),
    info(
        "frame",
        FieldKind::Integer,
        "Zero-based frame within the instance",
    ),
    info("patient_id", FieldKind::Keyword, "Patient ID (0010,0020)"),
    info(
        "patient_sex",
        FieldKind::Keyword,
        "Patient's sex (0010,0040): M, F or O",
    ),
    info(
        "patient_age",
        FieldKind::Keyword,
        "Patient's age (0010,1010), e.g. 054Y",
    ),
    info(
        "patient_birth_date",
        FieldKind::Date,
        "Patient's birth date (0010,0030), YYYYMMDD; for filters only, never returned",
    ),
    info(
        "study_instance_uid",
        FieldKind::Keyword,
        "Study Instance UID (0020,000D)",
    ),
    info(
        "series_instance_uid",
        FieldKind::Keyword,
        "Series Instance UID (0020,000E)",
    ),
    info(
        "sop_instance_uid",
        FieldKind::Keyword,
        "SOP Instance UID (0008,0018)",
    ),
    info(
        "sop_class_uid",
        FieldKind::Keyword,
        "SOP Class UID (0008,0016)",
    ),
    info(
        "study_date",
        FieldKind::Date,
        "Study date (0008,0020), YYYYMMDD",
    ),
    info(
        "study_time",
        FieldKind::Keyword,
        "Study time (0008,0030), HHMMSS",
    ),
    info(
        "modality",
        FieldKind::Keyword,
        "Modality (0008,0060), e.g. MR, CT",
    ),
    info(
        "body_part",
        FieldKind::Keyword,
        "Body part examined (0018,0015), e.g. BRAIN",
    ),
    info(
        "study_description",
        FieldKind::Text,
        "Study description (0008,1030)",
    ),
    info(
        "series_description",
        FieldKind::Text,
        "Series description (0008,103E)",
    ),
    info(
        "institution",
        FieldKind::Text,
        "Institution name (0008,0080)",
    ),
    info("manufacturer", FieldKind::Text, "Manufacturer (0008,0070)"),
    info(
        "manufacturer_model",
        FieldKind::Text,
        "Manufacturer's model name (0008,1090)",
    ),
    info(
        "slice_location",
        FieldKind::Float,
        "Slice location (0020,1041), mm",
    ),
    info(
        "slice_thickness",
        FieldKind::Float,
        "Slice thickness (0018,0050), mm",
    ),
    info(
        "pixel_spacing",
        FieldKind::Float,
        "Row pixel spacing (0028,0030), mm",
    ),
    info("rows", FieldKind::Integer, "Rows (0028,0010)"),
    info("columns", FieldKind::Integer, "Columns (0028,0011)"),
    info(
        "sequence",
        FieldKind::Keyword,
        "MR sequence name (0018,0024), or scanning sequence (0018,0020)",
    ),
    info(
        "series_number",
        FieldKind::Integer,
        "Series number (0020,0011)",
    ),
    info(
        "instance_number",
        FieldKind::Integer,
        "Instance number (0020,0013)",
    ),
    info(
        "abnormality",
        FieldKind::Float,
        "The slice's abnormality score in [0, 1]",
    ),
];

/// Name of the record id field, a fast field read by the collectors.
pub(crate) const RECORD: &str = "record";
/// Name of the frame field, a fast field.
pub(crate) const FRAME: &str = "frame";
/// Names of the hidden key fields ([`key_of`] the identifier), for exact deletes and counts.
pub(crate) const PATIENT_KEY: &str = "patient_key";
pub(crate) const STUDY_KEY: &str = "study_key";
pub(crate) const SERIES_KEY: &str = "series_key";
pub(crate) const INSTANCE_KEY: &str = "instance_key";

/// The tantivy fields of the catalog.
#[derive(Clone)]
pub(crate) struct Fields {
    pub schema: Schema,
    record: Field,
    frame: Field,
    patient_id: Field,
    patient_sex: Field,
    patient_age: Field,
    pub patient_birth_date: Field,
    study_instance_uid: Field,
    series_instance_uid: Field,
    sop_instance_uid: Field,
    sop_class_uid: Field,
    study_date: Field,
    study_time: Field,
    modality: Field,
    body_part: Field,
    study_description: Field,
    series_description: Field,
    institution: Field,
    manufacturer: Field,
    manufacturer_model: Field,
    slice_location: Field,
    slice_thickness: Field,
    pixel_spacing: Field,
    column_spacing: Field,
    rows: Field,
    columns: Field,
    number_of_frames: Field,
    sequence: Field,
    series_number: Field,
    instance_number: Field,
    abnormality: Field,
    pub patient_key: Field,
    pub study_key: Field,
    pub series_key: Field,
    pub instance_key: Field,
}

impl Fields {
    /// Builds the schema. Field order is part of the on-disk format: append, never reorder.
    pub fn new() -> Fields {
        let mut b = Schema::builder();
        let keyword = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(KEYWORD_TOKENIZER)
                    .set_index_option(IndexRecordOption::Basic),
            )
            .set_stored();
        let text = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            )
            .set_stored();
        let number = || INDEXED | FAST | STORED;
        let record = b.add_u64_field(RECORD, number());
        let frame = b.add_u64_field(FRAME, number());
        let patient_id = b.add_text_field("patient_id", keyword.clone());
        let patient_sex = b.add_text_field("patient_sex", keyword.clone());
        let patient_age = b.add_text_field("patient_age", keyword.clone());
        let patient_birth_date = b.add_u64_field("patient_birth_date", INDEXED);
        let study_instance_uid = b.add_text_field("study_instance_uid", keyword.clone());
        let series_instance_uid = b.add_text_field("series_instance_uid", keyword.clone());
        let sop_instance_uid = b.add_text_field("sop_instance_uid", keyword.clone());
        let sop_class_uid = b.add_text_field("sop_class_uid", keyword.clone());
        let study_date = b.add_u64_field("study_date", number());
        let study_time = b.add_text_field("study_time", keyword.clone());
        let modality = b.add_text_field("modality", keyword.clone());
        let body_part = b.add_text_field("body_part", keyword.clone());
        let study_description = b.add_text_field("study_description", text.clone());
        let series_description = b.add_text_field("series_description", text.clone());
        let institution = b.add_text_field("institution", text.clone());
        let manufacturer = b.add_text_field("manufacturer", text.clone());
        let manufacturer_model = b.add_text_field("manufacturer_model", text);
        let slice_location = b.add_f64_field("slice_location", number());
        let slice_thickness = b.add_f64_field("slice_thickness", number());
        let pixel_spacing = b.add_f64_field("pixel_spacing", number());
        let column_spacing = b.add_f64_field("column_spacing", STORED);
        let rows = b.add_u64_field("rows", number());
        let columns = b.add_u64_field("columns", number());
        let number_of_frames = b.add_u64_field("number_of_frames", STORED);
        let sequence = b.add_text_field("sequence", keyword);
        let series_number = b.add_i64_field("series_number", number());
        let instance_number = b.add_i64_field("instance_number", number());
        let abnormality = b.add_f64_field("abnormality", number());
        let patient_key = b.add_u64_field(PATIENT_KEY, INDEXED | FAST);
        let study_key = b.add_u64_field(STUDY_KEY, INDEXED | FAST);
        let series_key = b.add_u64_field(SERIES_KEY, INDEXED | FAST);
        let instance_key = b.add_u64_field(INSTANCE_KEY, INDEXED | FAST);
        Fields {
            schema: b.build(),
            record,
            frame,
            patient_id,
            patient_sex,
            patient_age,
            patient_birth_date,
            study_instance_uid,
            series_instance_uid,
            sop_instance_uid,
            sop_class_uid,
            study_date,
            study_time,
            modality,
            body_part,
            study_description,
            series_description,
            institution,
            manufacturer,
            manufacturer_model,
            slice_location,
            slice_thickness,
            pixel_spacing,
            column_spacing,
            rows,
            columns,
            number_of_frames,
            sequence,
            series_number,
            instance_number,
            abnormality,
            patient_key,
            study_key,
            series_key,
            instance_key,
        }
    }

    /// The text field of a UID, indexed whole by the keyword tokenizer.
    pub fn uid_field(&self, field: UidField) -> Field {
        match field {
            UidField::Study => self.study_instance_uid,
            UidField::Series => self.series_instance_uid,
            UidField::SopInstance => self.sop_instance_uid,
        }
    }

    /// The term that matches every record of zero-based frame `frame`.
    pub fn frame_term(&self, frame: u32) -> Term {
        Term::from_field_u64(self.frame, u64::from(frame))
    }

    /// The term that matches every document of one record.
    pub fn record_term(&self, record: RecordId) -> Term {
        Term::from_field_u64(self.record, u64::from(record))
    }

    /// The document of an entry. Empty text and absent numbers leave the field out, so that
    /// a filter on the field does not match the record.
    pub fn document(&self, entry: &CatalogEntry) -> TantivyDocument {
        let m = &entry.metadata;
        let mut doc = TantivyDocument::new();
        doc.add_u64(self.record, u64::from(entry.record));
        doc.add_u64(self.frame, u64::from(entry.frame));
        let texts = [
            (self.patient_id, &m.patient_id),
            (self.patient_sex, &m.patient_sex),
            (self.patient_age, &m.patient_age),
            (self.study_instance_uid, &m.study_instance_uid),
            (self.series_instance_uid, &m.series_instance_uid),
            (self.sop_instance_uid, &m.sop_instance_uid),
            (self.sop_class_uid, &m.sop_class_uid),
            (self.study_time, &m.study_time),
            (self.modality, &m.modality),
            (self.body_part, &m.body_part),
            (self.study_description, &m.study_description),
            (self.series_description, &m.series_description),
            (self.institution, &m.institution),
            (self.manufacturer, &m.manufacturer),
            (self.manufacturer_model, &m.manufacturer_model),
            (self.sequence, &m.sequence),
        ];
        for (field, value) in texts {
            if !value.is_empty() {
                doc.add_text(field, value);
            }
        }
        if let Some(date) = date_number(&m.study_date) {
            doc.add_u64(self.study_date, date);
        }
        if let Some(date) = date_number(&m.patient_birth_date) {
            doc.add_u64(self.patient_birth_date, date);
        }
        let floats = [
            (self.slice_location, m.slice_location),
            (self.slice_thickness, m.slice_thickness),
            (self.pixel_spacing, m.pixel_spacing.map(|s| s[0])),
            (self.column_spacing, m.pixel_spacing.map(|s| s[1])),
            (self.abnormality, Some(f64::from(entry.abnormality))),
        ];
        for (field, value) in floats {
            if let Some(value) = value {
                doc.add_f64(field, value);
            }
        }
        for (field, value) in [(self.rows, m.rows), (self.columns, m.columns)] {
            if value != 0 {
                doc.add_u64(field, u64::from(value));
            }
        }
        doc.add_u64(self.number_of_frames, u64::from(m.number_of_frames));
        let ints = [
            (self.series_number, m.series_number),
            (self.instance_number, m.instance_number),
        ];
        for (field, value) in ints {
            if let Some(value) = value {
                doc.add_i64(field, i64::from(value));
            }
        }
        doc.add_u64(self.patient_key, key_of(&m.patient_id));
        doc.add_u64(self.study_key, key_of(&m.study_instance_uid));
        doc.add_u64(self.series_key, key_of(&m.series_instance_uid));
        doc.add_u64(self.instance_key, key_of(&m.sop_instance_uid));
        doc
    }

    /// The displayable record of a stored document.
    pub fn stored_record(&self, doc: &TantivyDocument) -> StoredRecord {
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let u64_of = |field: Field| doc.get_first(field).and_then(|v| v.as_u64());
        let f64_of = |field: Field| doc.get_first(field).and_then(|v| v.as_f64());
        let i32_of = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_i64())
                .and_then(|v| i32::try_from(v).ok())
        };
        let u32_of = |field: Field| {
            u64_of(field)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0)
        };
        let pixel_spacing = f64_of(self.pixel_spacing)
            .zip(f64_of(self.column_spacing))
            .map(|(row, column)| [row, column]);
        let metadata = InstanceMetadata {
            patient_id: text(self.patient_id),
            patient_sex: text(self.patient_sex),
            patient_age: text(self.patient_age),
            patient_birth_date: String::new(),
            study_instance_uid: text(self.study_instance_uid),
            series_instance_uid: text(self.series_instance_uid),
            sop_instance_uid: text(self.sop_instance_uid),
            sop_class_uid: text(self.sop_class_uid),
            study_date: u64_of(self.study_date)
                .map(|d| format!("{d:08}"))
                .unwrap_or_default(),
            study_time: text(self.study_time),
            modality: text(self.modality),
            body_part: text(self.body_part),
            study_description: text(self.study_description),
            series_description: text(self.series_description),
            institution: text(self.institution),
            manufacturer: text(self.manufacturer),
            manufacturer_model: text(self.manufacturer_model),
            slice_location: f64_of(self.slice_location),
            slice_thickness: f64_of(self.slice_thickness),
            pixel_spacing,
            rows: u32_of(self.rows),
            columns: u32_of(self.columns),
            number_of_frames: u32_of(self.number_of_frames).max(1),
            sequence: text(self.sequence),
            series_number: i32_of(self.series_number),
            instance_number: i32_of(self.instance_number),
        };
        StoredRecord {
            record: u32_of(self.record),
            frame: u32_of(self.frame),
            metadata,
            abnormality: f64_of(self.abnormality).unwrap_or(0.0) as f32,
        }
    }
}

/// A DICOM date (DA, YYYYMMDD; the old YYYY.MM.DD form is accepted) as the number YYYYMMDD;
/// `None` when empty or malformed.
fn date_number(text: &str) -> Option<u64> {
    let digits: String = text.trim().chars().filter(|&c| c != '.').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_become_numbers_and_malformed_ones_are_left_out() {
        assert_eq!(date_number("20190315"), Some(20190315));
        assert_eq!(date_number("2019.03.15"), Some(20190315));
        assert_eq!(date_number(""), None);
        assert_eq!(date_number("2019-03-15"), None);
        assert_eq!(date_number("201903"), None);
    }

    #[test]
    fn uid_lookups_name_keyword_fields_of_the_vocabulary() {
        let fields = Fields::new();
        for field in [UidField::Study, UidField::Series, UidField::SopInstance] {
            let info = FIELDS.iter().find(|f| f.name == field.name()).unwrap();
            assert_eq!(info.kind, FieldKind::Keyword, "{}", info.name);
            assert_eq!(
                fields.schema.get_field(field.name()).unwrap(),
                fields.uid_field(field)
            );
        }
    }

    #[test]
    fn every_public_field_is_in_the_schema() {
        let fields = Fields::new();
        for info in FIELDS {
            assert!(fields.schema.get_field(info.name).is_ok(), "{}", info.name);
        }
    }
}
