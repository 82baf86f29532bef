//! Slices in: a DICOM instance (one of its frames) or a raw pixel array, turned into model input
//! by the shared image contract ([`diptych::preprocess`]).
//!
//! Errors name the request field at fault (`image.dicom`, `image.frame`, `image.raw.data`, ...),
//! so the gRPC edge can answer INVALID_ARGUMENT with a message a client can act on. Nothing here
//! knows about protobuf.

use diptych::preprocess::{
    Photometric, PreprocessError, PreprocessParams, Preprocessed, RawFrame, preprocess,
};
use diptych_dicom_adapter::{AdapterError, Limits};
use thiserror::Error;

/// Where a slice comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceSource {
    /// A DICOM instance (Part-10 or bare data set) and the zero-based frame to take.
    Dicom {
        /// The encoded instance.
        bytes: Vec<u8>,
        /// Zero-based frame; 0 for single-frame instances.
        frame: u32,
    },
    /// A raw pixel array.
    Raw(RawImage),
}

/// The storage type of raw pixel values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelType {
    /// Unsigned 8-bit.
    U8,
    /// Unsigned 16-bit, little endian.
    U16,
    /// Signed 16-bit, little endian.
    I16,
    /// 32-bit float, little endian.
    F32,
}

impl PixelType {
    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            PixelType::U8 => 1,
            PixelType::U16 | PixelType::I16 => 2,
            PixelType::F32 => 4,
        }
    }
}

/// A grey-scale image given as raw values with its geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct RawImage {
    /// Rows (height).
    pub rows: u32,
    /// Columns (width).
    pub cols: u32,
    /// How the values are stored.
    pub pixel_type: PixelType,
    /// rows × columns values, row-major, little endian.
    pub data: Vec<u8>,
    /// Modality LUT slope (1 when the client sent 0).
    pub rescale_slope: f32,
    /// Modality LUT intercept.
    pub rescale_intercept: f32,
    /// Low values are bright (MONOCHROME1).
    pub monochrome1: bool,
}

/// Why a slice could not be turned into model input; [`SliceError::field`] names the request
/// field at fault.
#[derive(Debug, Error)]
pub enum SliceError {
    /// The DICOM instance could not be parsed or decoded.
    #[error("{0}")]
    Dicom(#[from] AdapterError),
    /// Rows or columns of a raw image are 0.
    #[error("{field} is 0; a raw image needs at least one row and one column")]
    EmptyRaw {
        /// `image.raw.rows` or `image.raw.columns`.
        field: &'static str,
    },
    /// A raw image has more pixels than the limit.
    #[error(
        "{rows}×{cols} = {pixels} pixels exceeds the limit of {limit} pixels per image; send a \
         smaller image"
    )]
    RawTooLarge {
        /// Rows.
        rows: u32,
        /// Columns.
        cols: u32,
        /// rows × columns.
        pixels: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The raw data does not hold rows × columns values.
    #[error(
        "holds {actual} bytes but {rows}×{cols} values of {bytes_per_value} byte(s) need \
         {expected}"
    )]
    RawLength {
        /// Rows.
        rows: u32,
        /// Columns.
        cols: u32,
        /// Bytes per value of the pixel type.
        bytes_per_value: usize,
        /// rows × columns × bytes per value.
        expected: u64,
        /// Bytes received.
        actual: usize,
    },
    /// The image contract refused the frame.
    #[error("{0}")]
    Preprocess(PreprocessError),
}

impl SliceError {
    /// The request field at fault, relative to the request (`image.…`).
    pub fn field(&self) -> &'static str {
        match self {
            SliceError::Dicom(AdapterError::FrameOutOfRange { .. }) => "image.frame",
            SliceError::Dicom(_) => "image.dicom",
            SliceError::EmptyRaw { field } => field,
            SliceError::RawTooLarge { .. } => "image.raw",
            SliceError::RawLength { .. } => "image.raw.data",
            SliceError::Preprocess(PreprocessError::BadRescale { .. }) => "image.raw.rescale_slope",
            SliceError::Preprocess(PreprocessError::NonFinitePixel { .. }) => "image.raw.data",
            SliceError::Preprocess(_) => "image",
        }
    }
}

/// Who a DICOM slice belongs to, from its header, for the audit trail: each field empty when
/// the header lacks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceIdentity {
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
}

/// Decodes the slice and applies the image contract with the model's parameters.
pub fn prepare(
    source: &SliceSource,
    params: &PreprocessParams,
    limits: &Limits,
) -> Result<Preprocessed, SliceError> {
    prepare_identified(source, params, limits).1
}

/// [`prepare`], and who the slice belongs to when it is DICOM whose header could be read
/// (even when its pixels then fail).
pub fn prepare_identified(
    source: &SliceSource,
    params: &PreprocessParams,
    limits: &Limits,
) -> (Option<SliceIdentity>, Result<Preprocessed, SliceError>) {
    match source {
        SliceSource::Dicom { bytes, frame } => {
            let instance = match diptych_dicom_adapter::parse(bytes, limits) {
                Ok(instance) => instance,
                Err(error) => return (None, Err(error.into())),
            };
            let m = instance.metadata();
            let identity = SliceIdentity {
                patient_id: m.patient_id,
                study_instance_uid: m.study_instance_uid,
                sop_instance_uid: m.sop_instance_uid,
            };
            let prepared = instance
                .decode_frame(*frame)
                .map_err(SliceError::from)
                .and_then(|decoded| {
                    preprocess(&decoded.raw_frame(), params).map_err(SliceError::Preprocess)
                });
            (Some(identity), prepared)
        }
        SliceSource::Raw(raw) => (None, prepare_raw(raw, params, limits)),
    }
}

/// The image contract applied to raw pixels.
fn prepare_raw(
    raw: &RawImage,
    params: &PreprocessParams,
    limits: &Limits,
) -> Result<Preprocessed, SliceError> {
    let values = raw_values(raw, limits)?;
    let frame = RawFrame {
        rows: raw.rows as usize,
        cols: raw.cols as usize,
        pixels: &values,
        rescale_slope: if raw.rescale_slope == 0.0 {
            1.0
        } else {
            raw.rescale_slope
        },
        rescale_intercept: raw.rescale_intercept,
        photometric: if raw.monochrome1 {
            Photometric::Monochrome1
        } else {
            Photometric::Monochrome2
        },
    };
    preprocess(&frame, params).map_err(SliceError::Preprocess)
}

/// The raw values as f32, after checking geometry, limit and length.
fn raw_values(raw: &RawImage, limits: &Limits) -> Result<Vec<f32>, SliceError> {
    if raw.rows == 0 {
        return Err(SliceError::EmptyRaw {
            field: "image.raw.rows",
        });
    }
    if raw.cols == 0 {
        return Err(SliceError::EmptyRaw {
            field: "image.raw.columns",
        });
    }
    let pixels = u64::from(raw.rows) * u64::from(raw.cols);
    if pixels > limits.max_pixels {
        return Err(SliceError::RawTooLarge {
            rows: raw.rows,
            cols: raw.cols,
            pixels,
            limit: limits.max_pixels,
        });
    }
    let width = raw.pixel_type.bytes();
    let expected = pixels * width as u64;
    if raw.data.len() as u64 != expected {
        return Err(SliceError::RawLength {
            rows: raw.rows,
            cols: raw.cols,
            bytes_per_value: width,
            expected,
            actual: raw.data.len(),
        });
    }
    let data = &raw.data;
    Ok(match raw.pixel_type {
        PixelType::U8 => data.iter().map(|&v| f32::from(v)).collect(),
        PixelType::U16 => data
            .chunks_exact(2)
            .map(|b| f32::from(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        PixelType::I16 => data
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])))
            .collect(),
        PixelType::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use diptych::phantom::{PhantomConfig, PhantomGenerator};
    use diptych_dicom_adapter::synthetic::SyntheticInstance;

    fn raw_u16(rows: u32, cols: u32, values: &[u16]) -> RawImage {
        RawImage {
            rows,
            cols,
            pixel_type: PixelType::U16,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            rescale_slope: 0.0,
            rescale_intercept: 0.0,
            monochrome1: false,
        }
    }

    #[test]
    fn dicom_and_raw_of_the_same_values_give_the_same_model_input() {
        let slice = PhantomGenerator::new(2, PhantomConfig::default()).slice(7);
        let dicom = SyntheticInstance::from_phantom(&slice).to_part10();
        let stored: Vec<u16> = slice
            .image
            .iter()
            .map(|v| v.round().clamp(0.0, 65535.0) as u16)
            .collect();
        let params = PreprocessParams::default();
        let limits = Limits::default();
        let from_dicom = prepare(
            &SliceSource::Dicom {
                bytes: dicom,
                frame: 0,
            },
            &params,
            &limits,
        )
        .unwrap();
        let raw = SliceSource::Raw(raw_u16(slice.rows as u32, slice.cols as u32, &stored));
        let from_raw = prepare(&raw, &params, &limits).unwrap();
        assert_eq!(from_dicom, from_raw);
        assert_eq!(from_raw.pixels.len(), 128 * 128);
    }

    #[test]
    fn every_pixel_type_is_read_little_endian() {
        let params = PreprocessParams {
            input_size: 8,
            low_percentile: 0.0,
            high_percentile: 100.0,
        };
        let limits = Limits::default();
        let expected = prepare(
            &SliceSource::Raw(raw_u16(2, 2, &[0, 1, 2, 3])),
            &params,
            &limits,
        )
        .unwrap();
        for (pixel_type, data) in [
            (PixelType::U8, vec![0u8, 1, 2, 3]),
            (
                PixelType::I16,
                [0i16, 1, 2, 3]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            (
                PixelType::F32,
                [0f32, 1.0, 2.0, 3.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
        ] {
            let raw = RawImage {
                pixel_type,
                data,
                ..raw_u16(2, 2, &[0, 0, 0, 0])
            };
            assert_eq!(
                prepare(&SliceSource::Raw(raw), &params, &limits).unwrap(),
                expected,
                "{pixel_type:?}"
            );
        }
    }

    #[test]
    fn bad_raw_images_name_their_field() {
        let params = PreprocessParams::default();
        let limits = Limits::default();
        let field = |raw: RawImage| {
            prepare(&SliceSource::Raw(raw), &params, &limits)
                .unwrap_err()
                .field()
        };
        assert_eq!(field(raw_u16(0, 4, &[])), "image.raw.rows");
        assert_eq!(field(raw_u16(4, 0, &[])), "image.raw.columns");
        assert_eq!(field(raw_u16(2, 2, &[1, 2, 3])), "image.raw.data");
        let nan = RawImage {
            pixel_type: PixelType::F32,
            data: [0f32, f32::NAN, 1.0, 2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            ..raw_u16(2, 2, &[0; 4])
        };
        let err = prepare(&SliceSource::Raw(nan), &params, &limits).unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
        let huge = raw_u16(100_000, 100_000, &[]);
        assert_eq!(field(huge), "image.raw");
        let bad_rescale = RawImage {
            rescale_slope: f32::INFINITY,
            ..raw_u16(1, 1, &[1])
        };
        assert_eq!(field(bad_rescale), "image.raw.rescale_slope");
    }

    #[test]
    fn dicom_problems_point_at_the_dicom_field_or_the_frame() {
        let params = PreprocessParams::default();
        let limits = Limits::default();
        let garbage = SliceSource::Dicom {
            bytes: b"this is not dicom at all".to_vec(),
            frame: 0,
        };
        assert_eq!(
            prepare(&garbage, &params, &limits).unwrap_err().field(),
            "image.dicom"
        );
        let slice = PhantomGenerator::new(2, PhantomConfig::default()).slice(1);
        let bytes = SyntheticInstance::from_phantom(&slice).to_part10();
        let err = prepare(&SliceSource::Dicom { bytes, frame: 1 }, &params, &limits).unwrap_err();
        assert_eq!(err.field(), "image.frame");
    }
}
