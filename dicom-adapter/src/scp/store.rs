//! One C-STORE: from the received data set to a checked [`ReceivedInstance`], or to the status
//! and comment that refuse it.
//!
//! The data set is wrapped, byte for byte, in a Part-10 file whose meta group names the
//! negotiated transfer syntax, then parsed with [`crate::parse`] under the configured limits
//! (every declared length checked before the parser allocates). A command or data set whose UIDs
//! break the rule of [`crate::uid`] (checked before any data set byte is buffered for the
//! command's, right after parsing for the data set's SOP Class, SOP Instance, Study and Series
//! UIDs), a data set that does not parse, or one whose pixel data is shorter than its geometry
//! declares, is answered 0xC000; one whose SOP Class or Instance UID differs from the command's,
//! 0xA900; one beyond the pixel or inflation
//! limits, 0xA700. Only then is the sink called. Instances that are valid but not indexable (no
//! pixel data, unusual photometric interpretation) pass: the sink decides what to do with them.

use dicom_object::meta::FileMetaTableBuilder;

use super::dimse::status;
use super::negotiation::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use super::sink::ReceivedInstance;
use crate::error::AdapterError;
use crate::limits::Limits;
use crate::uid::Uid;

/// A refused instance: the status and the comment that explains it (no patient data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status 0x{status:04X}: {comment}")]
pub struct Refusal {
    /// DIMSE status.
    pub status: u16,
    /// Why, for the Error Comment and the log.
    pub comment: String,
}

impl Refusal {
    fn new(status: u16, comment: impl Into<String>) -> Self {
        Self {
            status,
            comment: comment.into(),
        }
    }
}

/// What the command said about the instance and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct StoreRequest {
    /// Calling AE title.
    pub calling_ae: String,
    /// Affected SOP Class UID of the command.
    pub sop_class_uid: String,
    /// Affected SOP Instance UID of the command.
    pub sop_instance_uid: String,
    /// Abstract syntax of the presentation context it came on.
    pub context_class: String,
    /// Transfer syntax negotiated for that context.
    pub transfer_syntax: String,
}

/// Checks a received instance against its command and the limits: `part10` is
/// [`part10_prefix`] of `request` followed by the data set as received. CPU-bound (parsing,
/// inflating): run it off the async workers.
pub(crate) fn check(
    request: StoreRequest,
    part10: Vec<u8>,
    limits: &Limits,
) -> Result<ReceivedInstance, Refusal> {
    let (class, sop_instance) = command_uids(&request)?;
    if class != request.context_class.as_str() {
        return Err(Refusal::new(
            status::DATA_SET_MISMATCH,
            "command SOP class differs from the presentation context's",
        ));
    }
    let instance = crate::parse(&part10, limits).map_err(|e| refusal_of(&e))?;
    let uids = instance.uids().map_err(|e| refusal_of(&e))?;
    if uids.sop_class != class {
        return Err(Refusal::new(
            status::DATA_SET_MISMATCH,
            "data set SOP Class UID differs from the command's",
        ));
    }
    if uids.sop_instance != sop_instance {
        return Err(Refusal::new(
            status::DATA_SET_MISMATCH,
            "data set SOP Instance UID differs from the command's",
        ));
    }
    image_checks(&instance, &request.transfer_syntax)?;
    Ok(ReceivedInstance {
        calling_ae: request.calling_ae,
        sop_class_uid: class.into_string(),
        sop_instance_uid: sop_instance.into_string(),
        transfer_syntax: request.transfer_syntax,
        part10,
        parsed: instance,
    })
}

/// A Part-10 instance that came another way than a C-STORE — a WADO-RS answer of a backfill —
/// checked as a C-STORE data set is (parsed under `limits`, its UIDs, its pixel data against its
/// geometry), so it can go to the same [`super::StoreSink`]; `source` stands for the calling AE
/// title (e.g. the archive's host). CPU-bound: run it off the async workers.
pub fn check_part10(
    part10: Vec<u8>,
    source: &str,
    limits: &Limits,
) -> Result<ReceivedInstance, Refusal> {
    let instance = crate::parse(&part10, limits).map_err(|e| refusal_of(&e))?;
    let uids = instance.uids().map_err(|e| refusal_of(&e))?;
    let transfer_syntax = instance.transfer_syntax().to_string();
    image_checks(&instance, &transfer_syntax)?;
    Ok(ReceivedInstance {
        calling_ae: source.to_string(),
        sop_class_uid: uids.sop_class.into_string(),
        sop_instance_uid: uids.sop_instance.into_string(),
        transfer_syntax,
        part10,
        parsed: instance,
    })
}

/// An image whose pixel data is damaged or beyond the limits, or that cannot be decoded here,
/// is refused before it is acknowledged.
fn image_checks(instance: &crate::Instance, transfer_syntax: &str) -> Result<(), Refusal> {
    if instance.is_image() {
        match instance.geometry() {
            Err(e) => {
                if let Some(refusal) = damage(&e) {
                    return Err(refusal);
                }
            }
            Ok(_) => undecodable_precision(instance, transfer_syntax)?,
        }
    }
    Ok(())
}

/// The start of the Part-10 file for `request`: preamble, `DICM`, the file meta group naming
/// the negotiated transfer syntax. The data set is appended to it as it arrives.
/// A command whose UIDs break the UID rule is refused here, so none of its data set is buffered.
pub(crate) fn part10_prefix(request: &StoreRequest) -> Result<Vec<u8>, Refusal> {
    let (class, instance) = command_uids(request)?;
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(class.as_str())
        .media_storage_sop_instance_uid(instance.as_str())
        .transfer_syntax(request.transfer_syntax.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(request.calling_ae.as_str())
        .build()
        .map_err(|e| {
            Refusal::new(
                status::CANNOT_UNDERSTAND,
                format!("cannot build file meta group: {e}"),
            )
        })?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| {
        Refusal::new(
            status::CANNOT_UNDERSTAND,
            format!("cannot write file meta group: {e}"),
        )
    })?;
    Ok(out)
}

/// The command's Affected SOP Class and Instance UIDs, checked against the UID rule; 0xC000
/// naming the attribute and the rule (never the value) when one is absent, empty or malformed.
fn command_uids(request: &StoreRequest) -> Result<(Uid, Uid), Refusal> {
    let checked = |text: &str, name: &str| {
        Uid::parse(text)
            .map_err(|problem| Refusal::new(status::CANNOT_UNDERSTAND, format!("{name} {problem}")))
    };
    Ok((
        checked(&request.sop_class_uid, "Affected SOP Class UID (0000,0002)")?,
        checked(
            &request.sop_instance_uid,
            "Affected SOP Instance UID (0000,1000)",
        )?,
    ))
}

/// Lossy JPEG (processes 1, 2 and 4) above 8 bits: the pure-Rust JPEG decoder reads only
/// 8-bit sample precision, and a build without GDCM's 12-bit library ([`crate::jpeg12`]) cannot
/// decode it, so there 12-bit JPEG Extended is refused before it is acknowledged rather than
/// accepted and never indexed.
fn undecodable_precision(instance: &crate::Instance, transfer_syntax: &str) -> Result<(), Refusal> {
    const LOSSY_JPEG: [&str; 2] = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"];
    if crate::jpeg12::available() || !LOSSY_JPEG.contains(&transfer_syntax) {
        return Ok(());
    }
    let bits_stored = instance
        .object()
        .get(dicom_dictionary_std::tags::BITS_STORED)
        .and_then(|e| e.to_int::<u16>().ok())
        .unwrap_or(8);
    if bits_stored > 8 {
        return Err(Refusal::new(
            status::CANNOT_UNDERSTAND,
            format!(
                "lossy JPEG with {bits_stored}-bit samples cannot be decoded here; send JPEG lossless, JPEG 2000 or uncompressed"
            ),
        ));
    }
    Ok(())
}

/// The refusal for a parse failure.
fn refusal_of(error: &AdapterError) -> Refusal {
    match error {
        AdapterError::InflatedTooLarge { .. } | AdapterError::GeometryTooLarge { .. } => {
            Refusal::new(status::OUT_OF_RESOURCES, error.to_string())
        }
        _ => Refusal::new(status::CANNOT_UNDERSTAND, error.to_string()),
    }
}

/// The refusal for a geometry failure that means damage or a limit, `None` for content that is
/// valid DICOM but not indexable (left to the sink).
fn damage(error: &AdapterError) -> Option<Refusal> {
    match error {
        AdapterError::PixelDataTooShort { .. }
        | AdapterError::LengthBeyondData { .. }
        | AdapterError::GeometryTooLarge { .. }
        | AdapterError::MissingAttribute { .. }
        | AdapterError::Parse { .. } => Some(refusal_of(error)),
        AdapterError::BadAttribute { name, .. }
            if matches!(*name, "Rows" | "Columns" | "NumberOfFrames") =>
        {
            Some(refusal_of(error))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{StoredSamples, SyntheticInstance};
    use dicom_dictionary_std::uids;

    fn request_for(instance: &SyntheticInstance) -> StoreRequest {
        let uid = instance
            .attributes
            .iter()
            .find(|(tag, _, _)| *tag == dicom_dictionary_std::tags::SOP_INSTANCE_UID)
            .map(|(_, _, v)| v.clone())
            .unwrap();
        StoreRequest {
            calling_ae: "MODALITY".to_string(),
            sop_class_uid: instance.sop_class_uid.clone(),
            sop_instance_uid: uid,
            context_class: instance.sop_class_uid.clone(),
            transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
        }
    }

    fn image() -> SyntheticInstance {
        SyntheticInstance::new(4, 4, StoredSamples::U16((0..16).collect()), 9)
    }

    fn part10_of(request: &StoreRequest, data_set: &[u8]) -> Vec<u8> {
        let mut bytes = part10_prefix(request).unwrap();
        bytes.extend_from_slice(data_set);
        bytes
    }

    #[test]
    fn a_good_data_set_becomes_a_part10_file_that_parses_back() {
        let instance = image();
        let request = request_for(&instance);
        let bytes = part10_of(&request, &instance.to_bare_data_set());
        let received = check(request, bytes, &Limits::default()).unwrap();
        let parsed = crate::parse(&received.part10, &Limits::default()).unwrap();
        assert_eq!(parsed.transfer_syntax(), uids::EXPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!(parsed.decode_frame(0).unwrap().values[15], 15.0);
    }

    #[test]
    fn a_fetched_part10_file_is_checked_as_a_c_store_data_set_is() {
        let bytes = image().to_part10();
        let received = check_part10(bytes.clone(), "archive", &Limits::default()).unwrap();
        assert_eq!(received.calling_ae, "archive");
        assert_eq!(received.sop_class_uid, image().sop_class_uid);
        assert_eq!(received.part10, bytes);
        // Pixel data cut short: refused as a C-STORE would be, with the reason.
        let cut = check_part10(
            bytes[..bytes.len() - 10].to_vec(),
            "archive",
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(cut.status, status::CANNOT_UNDERSTAND);
        assert!(cut.to_string().starts_with("status 0xC000: "), "{cut}");
        // Not DICOM at all.
        assert!(check_part10(b"not dicom".to_vec(), "archive", &Limits::default()).is_err());
    }

    /// UIDs that try to change a query, or are just not UIDs.
    fn hostile_uids() -> Vec<String> {
        [
            "1.2\" OR study_instance_uid:*",
            "x\" OR *",
            "1.2:3",
            "1.(2)",
            "*",
            "1.2.é",
            "1..2",
            ".1",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["1".repeat(10_000)])
        .collect()
    }

    #[test]
    fn a_command_with_a_hostile_uid_is_refused_before_its_data_set_is_buffered() {
        let good = request_for(&image());
        for hostile in hostile_uids() {
            let mut request = good.clone();
            request.sop_instance_uid = hostile.clone();
            let refusal = part10_prefix(&request).unwrap_err();
            assert_eq!(refusal.status, status::CANNOT_UNDERSTAND, "{hostile:.40}");
            assert!(
                refusal
                    .comment
                    .starts_with("Affected SOP Instance UID (0000,1000) is"),
                "{}",
                refusal.comment
            );
            assert!(refusal.comment.contains("1 to 64 characters"));
            let mut request = good.clone();
            request.sop_class_uid = hostile.clone();
            let refusal = part10_prefix(&request).unwrap_err();
            assert_eq!(refusal.status, status::CANNOT_UNDERSTAND, "{hostile:.40}");
        }
        // Padding is stripped, a leading zero kept.
        let mut request = good.clone();
        request.sop_instance_uid = "1.2.03.4\0".to_string();
        assert!(part10_prefix(&request).is_ok());
    }

    #[test]
    fn a_data_set_with_a_hostile_uid_answers_c000_naming_the_attribute() {
        for (tag, name) in [
            (
                dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
                "StudyInstanceUID (0020,000D)",
            ),
            (
                dicom_dictionary_std::tags::SERIES_INSTANCE_UID,
                "SeriesInstanceUID (0020,000E)",
            ),
            (
                dicom_dictionary_std::tags::SOP_INSTANCE_UID,
                "SOPInstanceUID (0008,0018)",
            ),
        ] {
            for hostile in hostile_uids() {
                let mut instance = image();
                let request = request_for(&instance);
                instance.set(tag, dicom_core::VR::UI, hostile.clone());
                let bytes = part10_of(&request, &instance.to_bare_data_set());
                let refusal = check(request, bytes, &Limits::default()).unwrap_err();
                assert_eq!(
                    refusal.status,
                    status::CANNOT_UNDERSTAND,
                    "{name} {hostile:.40}: {}",
                    refusal.comment
                );
                assert!(refusal.comment.starts_with(name), "{}", refusal.comment);
            }
        }
        // Without a Study Instance UID at all.
        let mut instance = image();
        let request = request_for(&instance);
        instance
            .attributes
            .retain(|(tag, _, _)| *tag != dicom_dictionary_std::tags::STUDY_INSTANCE_UID);
        let bytes = part10_of(&request, &instance.to_bare_data_set());
        let refusal = check(request, bytes, &Limits::default()).unwrap_err();
        assert_eq!(refusal.status, status::CANNOT_UNDERSTAND);
        assert!(
            refusal.comment.contains("StudyInstanceUID"),
            "{}",
            refusal.comment
        );
    }

    #[test]
    fn padded_and_leading_zero_uids_are_stored_without_padding() {
        let mut instance = image();
        instance.set(
            dicom_dictionary_std::tags::SOP_INSTANCE_UID,
            dicom_core::VR::UI,
            "1.2.03.4".to_string(),
        );
        let mut request = request_for(&instance);
        request.sop_instance_uid = "1.2.03.4 ".to_string();
        let bytes = part10_of(&request, &instance.to_bare_data_set());
        let received = check(request, bytes, &Limits::default()).unwrap();
        assert_eq!(received.sop_instance_uid, "1.2.03.4");
    }

    #[test]
    fn mismatched_uids_answer_a900_and_damage_answers_c000() {
        let instance = image();
        let mut request = request_for(&instance);
        request.sop_instance_uid = "1.2.3.4".to_string();
        let bytes = part10_of(&request, &instance.to_bare_data_set());
        let refusal = check(request, bytes, &Limits::default()).unwrap_err();
        assert_eq!(refusal.status, status::DATA_SET_MISMATCH);

        let request = request_for(&instance);
        let bytes = part10_of(&request, &instance.to_bare_data_set());
        let truncated = bytes[..bytes.len() - 10].to_vec();
        let refusal = check(request.clone(), truncated, &Limits::default()).unwrap_err();
        assert_eq!(
            refusal.status,
            status::CANNOT_UNDERSTAND,
            "{}",
            refusal.comment
        );

        let tight = Limits {
            max_pixels: 8,
            ..Limits::default()
        };
        let refusal = check(request, bytes, &tight).unwrap_err();
        assert_eq!(
            refusal.status,
            status::OUT_OF_RESOURCES,
            "{}",
            refusal.comment
        );
    }
}
