//! Catalog metadata extracted from data sets built in memory.

use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych_dicom_adapter::synthetic::SyntheticInstance;
use diptych_dicom_adapter::{AdapterError, Limits, parse};

/// Parses with the default limits.
fn open(bytes: &[u8]) -> Result<diptych_dicom_adapter::Instance, AdapterError> {
    parse(bytes, &Limits::default())
}

fn file_of(object: InMemDicomObject) -> Vec<u8> {
    let mut bytes = Vec::new();
    object
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_all(&mut bytes)
        .unwrap();
    bytes
}

fn text(tag: dicom_core::Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value)
}

#[test]
fn every_catalog_field_is_extracted_and_trimmed() {
    let object = InMemDicomObject::from_element_iter([
        text(tags::PATIENT_ID, VR::LO, "PAT-0042 "),
        text(tags::PATIENT_SEX, VR::CS, "F "),
        text(tags::PATIENT_AGE, VR::AS, "054Y"),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101"),
        text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.4\0"),
        text(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4.5"),
        text(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5.6"),
        text(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
        text(tags::STUDY_DATE, VR::DA, "20190314"),
        text(tags::STUDY_TIME, VR::TM, "101530"),
        text(tags::MODALITY, VR::CS, "MR"),
        text(tags::BODY_PART_EXAMINED, VR::CS, "BRAIN"),
        text(tags::STUDY_DESCRIPTION, VR::LO, "MRI HEAD"),
        text(tags::SERIES_DESCRIPTION, VR::LO, "T1 AX POST"),
        text(tags::INSTITUTION_NAME, VR::LO, "General Hospital"),
        text(tags::MANUFACTURER, VR::LO, "ACME"),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "Magnet 3T"),
        text(tags::SLICE_LOCATION, VR::DS, "-12.5"),
        text(tags::SLICE_THICKNESS, VR::DS, "5"),
        text(tags::PIXEL_SPACING, VR::DS, "0.9375\\0.8"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(256u16)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(224u16)),
        text(tags::SEQUENCE_NAME, VR::SH, "*tfl3d1"),
        text(tags::SCANNING_SEQUENCE, VR::CS, "GR"),
        text(tags::SERIES_NUMBER, VR::IS, "7"),
        text(tags::INSTANCE_NUMBER, VR::IS, "23"),
    ]);
    let m = open(&file_of(object)).unwrap().metadata();
    assert_eq!(m.patient_id, "PAT-0042");
    assert_eq!(m.patient_sex, "F");
    assert_eq!(m.patient_age, "054Y");
    assert_eq!(m.patient_birth_date, "19700101");
    assert_eq!(m.study_instance_uid, "1.2.3.4");
    assert_eq!(m.series_instance_uid, "1.2.3.4.5");
    assert_eq!(m.sop_instance_uid, "1.2.3.4.5.6");
    assert_eq!(m.sop_class_uid, uids::MR_IMAGE_STORAGE);
    assert_eq!(
        (m.study_date.as_str(), m.study_time.as_str()),
        ("20190314", "101530")
    );
    assert_eq!((m.modality.as_str(), m.body_part.as_str()), ("MR", "BRAIN"));
    assert_eq!(m.study_description, "MRI HEAD");
    assert_eq!(m.series_description, "T1 AX POST");
    assert_eq!(m.institution, "General Hospital");
    assert_eq!(
        (m.manufacturer.as_str(), m.manufacturer_model.as_str()),
        ("ACME", "Magnet 3T")
    );
    assert_eq!(m.slice_location, Some(-12.5));
    assert_eq!(m.slice_thickness, Some(5.0));
    assert_eq!(m.pixel_spacing, Some([0.9375, 0.8]));
    assert_eq!((m.rows, m.columns, m.number_of_frames), (256, 224, 1));
    assert_eq!(
        m.sequence, "*tfl3d1",
        "sequence name wins over scanning sequence"
    );
    assert_eq!((m.series_number, m.instance_number), (Some(7), Some(23)));

    let debug = format!("{m:?}");
    assert!(
        !debug.contains("PAT-0042") && !debug.contains("19700101"),
        "patient data in Debug: {debug}"
    );
    assert!(debug.contains("1.2.3.4.5.6"));
}

#[test]
fn absent_attributes_stay_empty_and_fallbacks_apply() {
    let shared = InMemDicomObject::from_element_iter([DataElement::new(
        tags::PIXEL_MEASURES_SEQUENCE,
        VR::SQ,
        DataSetSequence::new(
            vec![InMemDicomObject::from_element_iter([
                text(tags::PIXEL_SPACING, VR::DS, "0.5\\0.5"),
                text(tags::SLICE_THICKNESS, VR::DS, "1.2"),
            ])],
            Length::UNDEFINED,
        ),
    )]);
    let object = InMemDicomObject::from_element_iter([
        text(tags::SOP_INSTANCE_UID, VR::UI, "2.25.7"),
        text(tags::SCANNING_SEQUENCE, VR::CS, "SE"),
        text(tags::NUMBER_OF_FRAMES, VR::IS, "12"),
        text(tags::INSTANCE_NUMBER, VR::IS, "4.0"),
        text(tags::SERIES_NUMBER, VR::IS, "not a number"),
        DataElement::new(
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            VR::SQ,
            Value::from(DataSetSequence::new(vec![shared], Length::UNDEFINED)),
        ),
    ]);
    let m = open(&file_of(object)).unwrap().metadata();
    assert_eq!(m.sequence, "SE");
    assert_eq!(
        m.pixel_spacing,
        Some([0.5, 0.5]),
        "from the shared functional groups"
    );
    assert_eq!(m.slice_thickness, Some(1.2));
    assert_eq!(m.number_of_frames, 12);
    assert_eq!(m.instance_number, Some(4));
    assert_eq!(m.series_number, None);
    assert_eq!(m.slice_location, None);
    assert!(m.patient_id.is_empty() && m.modality.is_empty() && m.study_date.is_empty());
}

#[test]
fn a_phantom_instance_round_trips_values_and_identity() {
    let generator = PhantomGenerator::new(2, PhantomConfig::default());
    let slice = generator.slice(5);
    let bytes = SyntheticInstance::from_phantom(&slice).to_part10();
    let instance = open(&bytes).unwrap();
    let frame = instance.decode_frame(0).unwrap();
    let expected: Vec<f32> = slice
        .image
        .iter()
        .map(|v| v.round().clamp(0.0, 65535.0))
        .collect();
    assert_eq!(frame.values, expected);
    assert_eq!((frame.rows, frame.cols), (slice.rows, slice.cols));

    let m = instance.metadata();
    assert_eq!(m.modality, "MR");
    assert_eq!(m.patient_id, format!("PHANTOM-{:04}", slice.subject));
    assert_eq!(m.instance_number, Some(5));

    // Slices of one subject (indices 16k..16k+15 are subject k) share study and series.
    let other = generator.slice(6);
    assert_eq!(other.subject, slice.subject);
    let n = open(&SyntheticInstance::from_phantom(&other).to_part10())
        .unwrap()
        .metadata();
    assert_eq!(n.study_instance_uid, m.study_instance_uid);
    assert_eq!(n.series_instance_uid, m.series_instance_uid);
    assert_ne!(n.sop_instance_uid, m.sop_instance_uid);
    let stranger = open(&SyntheticInstance::from_phantom(&generator.slice(16)).to_part10())
        .unwrap()
        .metadata();
    assert_ne!(stranger.study_instance_uid, m.study_instance_uid);
}

#[test]
fn identifying_uids_are_checked_padding_stripped_and_leading_zeros_kept() {
    let object = |study: &str| {
        InMemDicomObject::from_element_iter([
            text(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
            text(tags::SOP_INSTANCE_UID, VR::UI, "1.2.03.4 "),
            text(tags::STUDY_INSTANCE_UID, VR::UI, study),
            text(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4.5\0"),
        ])
    };
    let ids = open(&file_of(object("1.2.3.4"))).unwrap().uids().unwrap();
    assert_eq!(ids.sop_class.as_str(), uids::MR_IMAGE_STORAGE);
    assert_eq!(ids.sop_instance.as_str(), "1.2.03.4");
    assert_eq!(ids.study.as_str(), "1.2.3.4");
    assert_eq!(ids.series.as_str(), "1.2.3.4.5");

    for hostile in ["1.2\" OR study_instance_uid:*", "1..2", "", "1.2.é"] {
        let error = open(&file_of(object(hostile))).unwrap().uids().unwrap_err();
        assert!(
            matches!(
                error,
                AdapterError::BadUid {
                    name: "StudyInstanceUID",
                    ..
                }
            ),
            "{hostile:?}: {error}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with("StudyInstanceUID (0020,000D) is"),
            "{message}"
        );
        assert!(
            !message.contains("OR"),
            "the value is not echoed: {message}"
        );
    }
    let mut without_study = object("1.2.3");
    without_study.remove_element(tags::STUDY_INSTANCE_UID);
    let error = open(&file_of(without_study)).unwrap().uids().unwrap_err();
    assert!(
        matches!(
            error,
            AdapterError::MissingAttribute {
                name: "StudyInstanceUID",
                ..
            }
        ),
        "{error}"
    );
}
