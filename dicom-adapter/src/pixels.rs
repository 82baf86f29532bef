//! Pixels: the geometry of an instance, checked against limits, and its frames decoded into
//! inputs of the image contract ([`diptych::preprocess::RawFrame`]).
//!
//! **Choice of values.** Frames come out as *modality values*: dicom-pixeldata applies the
//! modality LUT (`ModalityLutOption::Default`), which masks Bits Stored, extends the sign of
//! signed samples and uses the Rescale Slope/Intercept of the frame (top level, or the per-frame
//! or shared functional groups of enhanced multi-frame objects). The [`RawFrame`] handed to
//! pre-processing therefore carries slope 1 and intercept 0. No VOI LUT (window) is applied: the
//! image contract normalises intensities itself. MONOCHROME1 frames are *not* inverted here; they
//! keep [`Photometric::Monochrome1`] and the image contract inverts them. RGB frames (secondary
//! capture, or colour JPEG decoded to RGB) become luminance, Y = 0.299 R + 0.587 G + 0.114 B.
//!
//! **Limits.** [`Instance::geometry`] reads Rows, Columns, Number of Frames and the sample layout
//! from the attributes and refuses, before any pixel is decoded, an instance whose
//! rows × columns × frames exceeds [`crate::Limits::max_pixels`] (the limits given to [`crate::parse`]) or whose native pixel data is shorter
//! than its geometry declares.

use std::borrow::Cow;

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, VoiLutOption};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use diptych::preprocess::{Photometric, RawFrame};

use crate::error::AdapterError;
use crate::instance::{Instance, shielded, string_of};

/// Explicit VR Big Endian (retired), whose 32-bit samples diptych does not read.
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// The image attributes of an instance that decide how its pixels are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Rows (0028,0010).
    pub rows: u32,
    /// Columns (0028,0011).
    pub cols: u32,
    /// Number of Frames (0028,0008); 1 when absent.
    pub frames: u32,
    /// Samples per Pixel (0028,0002): 1 for grey, 3 for colour.
    pub samples_per_pixel: u16,
    /// Bits Allocated (0028,0100): 8 or 16, or 32 for monochrome.
    pub bits_allocated: u16,
    /// Photometric Interpretation (0028,0004) as stored.
    pub photometric: String,
}

/// One decoded frame in modality values, ready for the image contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Rows (height).
    pub rows: usize,
    /// Columns (width).
    pub cols: usize,
    /// `rows * cols` modality values (rescale applied), row-major.
    pub values: Vec<f32>,
    /// MONOCHROME1 or MONOCHROME2 (RGB frames are converted to luminance, MONOCHROME2).
    pub photometric: Photometric,
}

impl Frame {
    /// The frame as input of [`diptych::preprocess::preprocess`]: the values are already
    /// modality values, so slope is 1 and intercept 0.
    pub fn raw_frame(&self) -> RawFrame<'_> {
        RawFrame {
            rows: self.rows,
            cols: self.cols,
            pixels: &self.values,
            rescale_slope: 1.0,
            rescale_intercept: 0.0,
            photometric: self.photometric,
        }
    }
}

impl Instance {
    /// Reads and checks the image geometry: required attributes present and sane, the pixel
    /// count within the instance's limits, the transfer syntax decodable, native pixel data long enough.
    pub fn geometry(&self) -> Result<Geometry, AdapterError> {
        let object = &self.object;
        let limits = &self.limits;
        if !self.is_image() {
            return Err(AdapterError::NotAnImage {
                sop_class: nonempty_or_unknown(self.sop_class_uid()),
                reason: self
                    .not_a_picture()
                    .unwrap_or("it has no Pixel Data (7FE0,0010)"),
            });
        }
        let rows = required_u16(self, tags::ROWS, "Rows", "(0028,0010)")?;
        let cols = required_u16(self, tags::COLUMNS, "Columns", "(0028,0011)")?;
        let frames = number_of_frames(self)?;
        let samples_per_pixel = optional_u16(
            self,
            tags::SAMPLES_PER_PIXEL,
            "SamplesPerPixel",
            "(0028,0002)",
        )?
        .unwrap_or(1);
        let bits_allocated =
            required_u16(self, tags::BITS_ALLOCATED, "BitsAllocated", "(0028,0100)")?;
        let photometric = string_of(object, tags::PHOTOMETRIC_INTERPRETATION).ok_or(
            AdapterError::MissingAttribute {
                name: "PhotometricInterpretation",
                tag: "(0028,0004)",
                purpose: "know how pixel values map to brightness",
            },
        )?;

        let pixels = u64::from(rows) * u64::from(cols) * u64::from(frames);
        if pixels > limits.max_pixels {
            return Err(AdapterError::GeometryTooLarge {
                rows: rows.into(),
                cols: cols.into(),
                frames,
                pixels,
                limit: limits.max_pixels,
            });
        }
        let wide_grey = bits_allocated == 32 && samples_per_pixel == 1;
        if bits_allocated != 8 && bits_allocated != 16 && !wide_grey {
            return Err(AdapterError::BadAttribute {
                name: "BitsAllocated",
                tag: "(0028,0100)",
                value: bits_allocated.to_string(),
                problem: "diptych reads 8- and 16-bit samples, and 32-bit monochrome ones",
            });
        }
        if samples_per_pixel != 1 && samples_per_pixel != 3 {
            return Err(AdapterError::UnsupportedPhotometric {
                value: photometric,
                samples: samples_per_pixel,
            });
        }

        let ts_uid = self.transfer_syntax().trim_end_matches('\0').to_string();
        let ts = TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| {
            AdapterError::UnsupportedTransferSyntax {
                uid: ts_uid.clone(),
                name: "unknown".to_string(),
            }
        })?;
        if !ts.can_decode_all() {
            return Err(AdapterError::UnsupportedTransferSyntax {
                uid: ts_uid,
                name: ts.name().to_string(),
            });
        }
        if wide_grey && (ts.is_encapsulated_pixel_data() || ts.uid() == EXPLICIT_VR_BIG_ENDIAN) {
            return Err(AdapterError::BadAttribute {
                name: "BitsAllocated",
                tag: "(0028,0100)",
                value: bits_allocated.to_string(),
                problem: "diptych reads 32-bit samples only uncompressed little endian; send the instance in explicit or implicit VR little endian",
            });
        }

        let geometry = Geometry {
            rows: rows.into(),
            cols: cols.into(),
            frames,
            samples_per_pixel,
            bits_allocated,
            photometric,
        };
        if let Some(pixel_data) = object.get(tags::PIXEL_DATA)
            && let Value::Primitive(value) = pixel_data.value()
        {
            let actual = value.to_bytes().len() as u64;
            let expected = u64::from(frames) * native_frame_len(&geometry) as u64;
            if actual < expected {
                return Err(AdapterError::PixelDataTooShort {
                    rows: geometry.rows,
                    cols: geometry.cols,
                    frames,
                    bits_allocated,
                    expected,
                    actual,
                });
            }
        }
        Ok(geometry)
    }

    /// Number of frames (slices) of the instance, after checking its geometry.
    pub fn frame_count(&self) -> Result<u32, AdapterError> {
        Ok(self.geometry()?.frames)
    }

    /// Decodes frame `index` (zero-based) into modality values.
    pub fn decode_frame(&self, index: u32) -> Result<Frame, AdapterError> {
        let geometry = self.geometry()?;
        if index >= geometry.frames {
            return Err(AdapterError::FrameOutOfRange {
                frame: index,
                frames: geometry.frames,
            });
        }
        shielded("pixel data", || decode_checked(self, index, &geometry))
    }
}

/// Refuses compressed data whose codestream headers declare more pixels than Rows × Columns,
/// before a decoder allocates what they say.
fn check_codestreams(instance: &Instance, geometry: &Geometry) -> Result<(), AdapterError> {
    let Ok(element) = instance.object.element(tags::PIXEL_DATA) else {
        return Ok(());
    };
    let Some(fragments) = element.value().fragments() else {
        return Ok(());
    };
    let allowed = u64::from(geometry.rows) * u64::from(geometry.cols);
    for fragment in fragments {
        if let Some((width, height)) = crate::codestream::declared_size(fragment)
            && u64::from(width) * u64::from(height) > allowed
        {
            return Err(AdapterError::CodestreamTooLarge {
                width,
                height,
                rows: geometry.rows,
                cols: geometry.cols,
            });
        }
    }
    Ok(())
}

/// Bytes of one frame of native (uncompressed) pixel data: YBR_FULL_422 stores two samples per
/// pixel (Y1 Y2 Cb Cr for each horizontal pair, PS3.5 8.2.1).
pub(crate) fn native_frame_len(geometry: &Geometry) -> usize {
    let samples = if geometry.photometric == "YBR_FULL_422" {
        2
    } else {
        usize::from(geometry.samples_per_pixel)
    };
    geometry.rows as usize
        * geometry.cols as usize
        * samples
        * usize::from(geometry.bits_allocated / 8)
}

fn decode_checked(
    instance: &Instance,
    index: u32,
    geometry: &Geometry,
) -> Result<Frame, AdapterError> {
    check_codestreams(instance, geometry)?;
    if crate::jpeg12::needed(instance) {
        return crate::jpeg12::decode_frame(instance, index, geometry);
    }
    if !matches!(geometry.photometric.as_str(), "MONOCHROME1" | "MONOCHROME2") {
        return crate::colour::luma_frame(instance, index, geometry);
    }
    if geometry.bits_allocated == 32 {
        return crate::wide_samples::decode_frame(instance, index, geometry);
    }
    let decoded = instance
        .object
        .decode_pixel_data_frame(index)
        .map_err(|e| AdapterError::decode(index, crate::instance::error_chain(&e)))?;
    let options = ConvertOptions::new()
        .with_modality_lut(ModalityLutOption::Default)
        .with_voi_lut(VoiLutOption::Identity);
    let samples: Vec<f32> = decoded
        .to_vec_frame_with_options(0, &options)
        .map_err(|e| AdapterError::decode(index, crate::instance::error_chain(&e)))?;
    let (rows, cols) = (geometry.rows as usize, geometry.cols as usize);
    let pixels = rows * cols;
    let photometric = decoded.photometric_interpretation().as_str().to_string();
    let spp = decoded.samples_per_pixel();
    let (values, photometric) = match (photometric.as_str(), spp) {
        ("MONOCHROME1", 1) => (samples, Photometric::Monochrome1),
        ("MONOCHROME2", 1) => (samples, Photometric::Monochrome2),
        _ => {
            return Err(AdapterError::UnsupportedPhotometric {
                value: photometric,
                samples: spp,
            });
        }
    };
    if values.len() != pixels {
        return Err(AdapterError::decode(
            index,
            format!(
                "the codec produced {} values for {rows}×{cols} pixels",
                values.len()
            ),
        ));
    }
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        return Err(AdapterError::decode(
            index,
            format!(
                "pixel {bad} is not a finite number after the modality LUT; check Rescale Slope/Intercept"
            ),
        ));
    }
    Ok(Frame {
        rows,
        cols,
        values,
        photometric,
    })
}

fn nonempty_or_unknown(text: String) -> String {
    if text.is_empty() {
        "unknown".to_string()
    } else {
        text
    }
}

fn optional_u16(
    instance: &Instance,
    tag: dicom_core::Tag,
    name: &'static str,
    tag_text: &'static str,
) -> Result<Option<u16>, AdapterError> {
    let Some(element) = instance.object.get(tag) else {
        return Ok(None);
    };
    let value: Cow<'_, str> = element.to_str().unwrap_or_default();
    element
        .to_int::<u16>()
        .map(Some)
        .map_err(|_| AdapterError::BadAttribute {
            name,
            tag: tag_text,
            value: value.trim().to_string(),
            problem: "must be an unsigned 16-bit integer",
        })
}

fn required_u16(
    instance: &Instance,
    tag: dicom_core::Tag,
    name: &'static str,
    tag_text: &'static str,
) -> Result<u16, AdapterError> {
    let value =
        optional_u16(instance, tag, name, tag_text)?.ok_or(AdapterError::MissingAttribute {
            name,
            tag: tag_text,
            purpose: "lay out the pixel data",
        })?;
    if value == 0 && (name == "Rows" || name == "Columns") {
        return Err(AdapterError::BadAttribute {
            name,
            tag: tag_text,
            value: "0".to_string(),
            problem: "an image needs at least one row and one column",
        });
    }
    Ok(value)
}

fn number_of_frames(instance: &Instance) -> Result<u32, AdapterError> {
    let Some(element) = instance.object.get(tags::NUMBER_OF_FRAMES) else {
        return Ok(1);
    };
    let text = element.to_str().unwrap_or_default().trim().to_string();
    if text.is_empty() {
        return Ok(1);
    }
    match text.parse::<i64>() {
        Ok(n) if n >= 1 && n <= i64::from(u32::MAX) => Ok(n as u32),
        _ => Err(AdapterError::BadAttribute {
            name: "NumberOfFrames",
            tag: "(0028,0008)",
            value: text,
            problem: "must be a whole number of at least 1",
        }),
    }
}
