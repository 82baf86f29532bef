//! Requests in: protobuf image inputs converted to domain [`SliceSource`]s and UIDs checked
//! against the UID rule, with INVALID_ARGUMENT answers that name the field at fault.

use diptych::api::v1::{ImageFormat, ImageInput, PixelType as ProtoPixelType, image_input};
use diptych_dicom_adapter::Uid;
use tonic::Status;

use crate::slice::{PixelType, RawImage, SliceSource};

/// INVALID_ARGUMENT naming `field`.
pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// The UID in request field `field`, checked against the rule of [`diptych_dicom_adapter::uid`]
/// (padding stripped); INVALID_ARGUMENT naming the field and the rule, never the value, when it
/// is empty or breaks the rule.
pub fn uid(field: &str, text: &str) -> Result<Uid, Status> {
    Uid::parse(text).map_err(|problem| invalid(field, problem))
}

/// The slice a request's `image` field describes.
pub fn slice_source(image: Option<ImageInput>) -> Result<SliceSource, Status> {
    let image = image.ok_or_else(|| {
        invalid(
            "image",
            "is required; set image.dicom (DICOM bytes) or image.raw (pixels and geometry)",
        )
    })?;
    match image.source {
        None => Err(invalid(
            "image",
            "has no source; set image.dicom (DICOM bytes) or image.raw (pixels and geometry)",
        )),
        Some(image_input::Source::Dicom(bytes)) if bytes.is_empty() => Err(invalid(
            "image.dicom",
            "is empty; send a DICOM Part-10 file or a bare data set",
        )),
        Some(image_input::Source::Dicom(bytes)) => Ok(SliceSource::Dicom {
            bytes,
            frame: image.frame,
        }),
        Some(image_input::Source::Raw(raw)) => {
            let pixel_type = match ProtoPixelType::try_from(raw.pixel_type) {
                Ok(ProtoPixelType::Uint8) => PixelType::U8,
                Ok(ProtoPixelType::Uint16) => PixelType::U16,
                Ok(ProtoPixelType::Int16) => PixelType::I16,
                Ok(ProtoPixelType::Float32) => PixelType::F32,
                Ok(ProtoPixelType::Unspecified) | Err(_) => {
                    return Err(invalid(
                        "image.raw.pixel_type",
                        format!(
                            "{} is not a pixel type; use PIXEL_TYPE_UINT8, PIXEL_TYPE_UINT16, \
                             PIXEL_TYPE_INT16 or PIXEL_TYPE_FLOAT32",
                            raw.pixel_type
                        ),
                    ));
                }
            };
            Ok(SliceSource::Raw(RawImage {
                rows: raw.rows,
                cols: raw.columns,
                pixel_type,
                data: raw.data,
                rescale_slope: raw.rescale_slope,
                rescale_intercept: raw.rescale_intercept,
                monochrome1: raw.monochrome1,
            }))
        }
    }
}

/// The output format a Decompose request asks for (PNG when unspecified).
pub fn image_format(value: i32) -> Result<ImageFormat, Status> {
    match ImageFormat::try_from(value) {
        Ok(ImageFormat::Unspecified) | Ok(ImageFormat::Png) => Ok(ImageFormat::Png),
        Ok(ImageFormat::Float32) => Ok(ImageFormat::Float32),
        Err(_) => Err(invalid(
            "format",
            format!("{value} is not an image format; use IMAGE_FORMAT_PNG or IMAGE_FORMAT_FLOAT32"),
        )),
    }
}
