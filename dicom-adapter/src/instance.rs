//! Parsing: DICOM bytes in, an [`Instance`] out.
//!
//! Two forms are accepted, told apart by their first bytes:
//!
//! - a **Part-10 file**: the 128-byte preamble and `DICM` (or `DICM` right away, as some tools
//!   write it), the file meta group, then the data set in the transfer syntax the meta group names;
//! - a **bare data set**, as a C-STORE carries it: explicit VR little endian when bytes 4–5 are a
//!   value representation (the form the gRPC API documents), implicit VR little endian otherwise.
//!
//! Before dicom-parser sees the bytes, a walk over the element headers (module `framing`) checks that no element declares more
//! bytes than follow it, so hostile lengths cannot make the parser allocate gigabytes. A deflated
//! data set is inflated here, within [`Limits::max_inflated_bytes`], checked the same way, and
//! kept as explicit VR little endian (its pixel data is native). Parsing never panics on hostile
//! input: a panic inside the parser is caught and reported as [`AdapterError::Parse`].

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::meta::{FileMetaTable, FileMetaTableBuilder};
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use crate::error::AdapterError;
use crate::framing::{Encoding, check_lengths, meta_group};
use crate::limits::Limits;

/// SOP classes that carry Pixel Data that is not a picture to search, and why.
const NOT_PICTURES: [(&str, &str); 4] = [
    (
        uids::SEGMENTATION_STORAGE,
        "a segmentation holds labels, not a picture",
    ),
    (
        uids::LABEL_MAP_SEGMENTATION_STORAGE,
        "a segmentation holds labels, not a picture",
    ),
    (
        uids::HEIGHT_MAP_SEGMENTATION_STORAGE,
        "a segmentation holds labels, not a picture",
    ),
    (
        uids::RT_DOSE_STORAGE,
        "an RT Dose object holds a dose grid, not a picture",
    ),
];

/// Length of the Part-10 preamble that precedes `DICM`.
const PREAMBLE_LEN: usize = 128;
/// The Part-10 magic code.
const MAGIC: &[u8; 4] = b"DICM";

/// One parsed DICOM instance: its data set, its transfer syntax, and the limits its pixels are
/// decoded under.
pub struct Instance {
    pub(crate) object: DefaultDicomObject,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for Instance {
    /// Shows the transfer syntax and SOP class only: the data set holds patient data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("transfer_syntax", &self.transfer_syntax())
            .field("sop_class_uid", &self.sop_class_uid())
            .finish_non_exhaustive()
    }
}

/// Parses a Part-10 file or a bare data set (see the module docs for how they are told apart);
/// `limits` bound what parsing and, later, pixel decoding may allocate.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Instance, AdapterError> {
    if bytes.len() < 8 {
        return Err(AdapterError::TooShort { len: bytes.len() });
    }
    let object =
        if bytes.len() >= PREAMBLE_LEN + 4 && &bytes[PREAMBLE_LEN..PREAMBLE_LEN + 4] == MAGIC {
            parse_part10(&bytes[PREAMBLE_LEN..], limits)?
        } else if &bytes[..4] == MAGIC {
            parse_part10(bytes, limits)?
        } else {
            parse_bare(bytes)?
        };
    Ok(Instance {
        object,
        limits: *limits,
    })
}

/// Parses a file meta group starting with `DICM` and the data set after it.
fn parse_part10(body: &[u8], limits: &Limits) -> Result<DefaultDicomObject, AdapterError> {
    let form = "Part-10 file";
    let (meta_end, transfer_syntax) = meta_group(body)?;
    let data_set = &body[meta_end.min(body.len())..];
    match transfer_syntax.as_deref() {
        Some(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN) => {
            return parse_deflated(&body[..meta_end], data_set, limits);
        }
        Some(uids::IMPLICIT_VR_LITTLE_ENDIAN) => check_lengths(
            data_set,
            Encoding {
                explicit: false,
                big_endian: false,
            },
        )?,
        // Explicit VR big endian is retired, but old archives still send it.
        #[allow(deprecated)]
        Some(uids::EXPLICIT_VR_BIG_ENDIAN) => check_lengths(
            data_set,
            Encoding {
                explicit: true,
                big_endian: true,
            },
        )?,
        _ => check_lengths(data_set, Encoding::EXPLICIT_LE)?,
    }
    shielded(form, || {
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .from_reader(body)
            .map_err(|e| parse_error(form, &e))
    })
}

/// Inflates a deflated data set within the limit, checks it, and parses it as explicit VR little
/// endian under the original meta group.
fn parse_deflated(
    meta: &[u8],
    deflated: &[u8],
    limits: &Limits,
) -> Result<DefaultDicomObject, AdapterError> {
    let form = "deflated data set";
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(limits.max_inflated_bytes.saturating_add(1))
        .read_to_end(&mut inflated)
        .map_err(|e| parse_error(form, &e))?;
    if inflated.len() as u64 > limits.max_inflated_bytes {
        return Err(AdapterError::InflatedTooLarge {
            limit: limits.max_inflated_bytes,
        });
    }
    check_lengths(&inflated, Encoding::EXPLICIT_LE)?;
    let explicit = explicit_le()?;
    shielded(form, || {
        let mut table = FileMetaTable::from_reader(meta).map_err(|e| parse_error(form, &e))?;
        table.set_transfer_syntax(explicit);
        let data_set = InMemDicomObject::read_dataset_with_ts(&inflated[..], explicit)
            .map_err(|e| parse_error(form, &e))?;
        Ok(data_set.with_exact_meta(table))
    })
}

/// Parses a data set without a file meta group, guessing explicit or implicit VR.
fn parse_bare(bytes: &[u8]) -> Result<DefaultDicomObject, AdapterError> {
    let form = "bare data set";
    let explicit = VR::from_binary([bytes[4], bytes[5]]).is_some();
    let ts_uid = if explicit {
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    } else {
        uids::IMPLICIT_VR_LITTLE_ENDIAN
    };
    check_lengths(
        bytes,
        Encoding {
            explicit,
            big_endian: false,
        },
    )?;
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| unsupported(ts_uid))?;
    let data_set = shielded(form, || {
        InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| parse_error(form, &e))
    })?;
    let sop_class = string_of(&data_set, tags::SOP_CLASS_UID).unwrap_or_default();
    let sop_instance = string_of(&data_set, tags::SOP_INSTANCE_UID).unwrap_or_default();
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(ts_uid)
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .build()
        .map_err(|e| parse_error(form, &e))?;
    Ok(data_set.with_exact_meta(meta))
}

fn explicit_le() -> Result<&'static dicom_transfer_syntax_registry::TransferSyntax, AdapterError> {
    TransferSyntaxRegistry
        .get(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .ok_or_else(|| unsupported(uids::EXPLICIT_VR_LITTLE_ENDIAN))
}

fn unsupported(uid: &str) -> AdapterError {
    AdapterError::UnsupportedTransferSyntax {
        uid: uid.to_string(),
        name: "unknown".to_string(),
    }
}

/// Runs `f`, turning a panic inside a DICOM library into a parse error.
pub(crate) fn shielded<T>(
    form: &'static str,
    f: impl FnOnce() -> Result<T, AdapterError>,
) -> Result<T, AdapterError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(AdapterError::Parse {
            form,
            message: "the DICOM library failed on malformed input".to_string(),
        })
    })
}

fn parse_error(form: &'static str, error: &dyn std::error::Error) -> AdapterError {
    AdapterError::Parse {
        form,
        message: error_chain(error),
    }
}

/// An error and its sources, joined by ": ".
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// The trimmed string value of `tag`, if present and textual.
pub(crate) fn string_of(object: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let text = object.get(tag)?.to_str().ok()?;
    let trimmed = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    Some(trimmed.to_string())
}

impl Instance {
    /// The Transfer Syntax UID of the data set (from the file meta group, or the guessed one of
    /// a bare data set), without its NUL or space padding.
    pub fn transfer_syntax(&self) -> &str {
        self.object
            .meta()
            .transfer_syntax()
            .trim_end_matches(['\0', ' '])
    }

    /// The SOP Class UID (0008,0016), or "" when absent.
    pub fn sop_class_uid(&self) -> String {
        string_of(&self.object, tags::SOP_CLASS_UID).unwrap_or_default()
    }

    /// The SOP Instance UID (0008,0018), or "" when absent.
    pub fn sop_instance_uid(&self) -> String {
        string_of(&self.object, tags::SOP_INSTANCE_UID).unwrap_or_default()
    }

    /// True when the instance is an image to search: it carries Pixel Data (0x7FE0,0010) and is
    /// not one of the objects whose pixels are not a picture (see [`Instance::not_a_picture`]).
    /// Everything else (SR, RT Plan, segmentations, dose grids, ...) is a valid object that is
    /// stored but not indexed.
    pub fn is_image(&self) -> bool {
        self.object.get(tags::PIXEL_DATA).is_some() && self.not_a_picture().is_none()
    }

    /// Why an instance that carries Pixel Data is still not an image to search, if so: a
    /// segmentation or RT Dose object (labels and dose grids, not pictures of anatomy), or
    /// 1-bit pixels (bit-packed masks).
    pub fn not_a_picture(&self) -> Option<&'static str> {
        let class = self.sop_class_uid();
        if let Some((_, why)) = NOT_PICTURES.iter().find(|(uid, _)| *uid == class) {
            return Some(why);
        }
        let bits = self
            .object
            .get(tags::BITS_ALLOCATED)
            .and_then(|e| e.to_int::<u16>().ok());
        (bits == Some(1)).then_some("its pixels are 1-bit (a bit-packed mask)")
    }

    /// The underlying dicom-object data set, for callers that need attributes diptych does not
    /// extract.
    pub fn object(&self) -> &DefaultDicomObject {
        &self.object
    }
}
