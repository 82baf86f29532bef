//! Colour frames to luma: RGB and YBR_FULL in either planar configuration, uncompressed
//! YBR_FULL_422, and PALETTE COLOR through its lookup tables.
//!
//! dicom-pixeldata converts monochrome frames (modality LUT and all) but refuses planar
//! configuration 1 and neither subsamples 4:2:2 nor applies palettes, so colour frames are read
//! here: native pixel data straight from the data set, compressed frames from the codec (which
//! hands back interleaved RGB for three samples, or the palette indices for one). The luma is
//! ITU-R BT.601's, Y = 0.299 R + 0.587 G + 0.114 B, which is also the Y of YBR_FULL: for YBR
//! data the Y samples are taken as they are. Values keep the scale of the samples (or of the
//! palette entries: 0–255 or 0–65535); the image contract normalises intensities itself.

use dicom_core::Tag;
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_pixeldata::{PixelDecoder, PlanarConfiguration};
use diptych::preprocess::Photometric;

use crate::error::AdapterError;
use crate::instance::{Instance, error_chain};
use crate::pixels::{Frame, Geometry};

/// Decodes frame `index` of a colour instance into luma.
pub(crate) fn luma_frame(
    instance: &Instance,
    index: u32,
    geometry: &Geometry,
) -> Result<Frame, AdapterError> {
    let (rows, cols) = (geometry.rows as usize, geometry.cols as usize);
    let pixels = rows * cols;
    let native = instance
        .object
        .get(tags::PIXEL_DATA)
        .and_then(|e| match e.value() {
            Value::Primitive(value) => Some(value.to_bytes()),
            _ => None,
        });
    let (bytes, photometric, planar) = match native {
        Some(all) => {
            let len = crate::pixels::native_frame_len(geometry);
            let start = index as usize * len;
            let frame = all.get(start..start + len).ok_or_else(|| {
                AdapterError::decode(index, "the pixel data ends before this frame")
            })?;
            (
                frame.to_vec(),
                geometry.photometric.clone(),
                planar_configuration(instance)?,
            )
        }
        None => {
            let decoded = instance
                .object
                .decode_pixel_data_frame(index)
                .map_err(|e| AdapterError::decode(index, error_chain(&e)))?;
            let data = decoded
                .frame_data(0)
                .map_err(|e| AdapterError::decode(index, error_chain(&e)))?
                .to_vec();
            let planar = match decoded.planar_configuration() {
                PlanarConfiguration::Standard => 0,
                PlanarConfiguration::PixelFirst => 1,
            };
            (
                data,
                decoded.photometric_interpretation().as_str().to_string(),
                planar,
            )
        }
    };
    let samples: Vec<f32> = match geometry.bits_allocated {
        8 => bytes.iter().map(|&b| f32::from(b)).collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|w| f32::from(u16::from_le_bytes([w[0], w[1]])))
            .collect(),
    };
    let spp = geometry.samples_per_pixel;
    let unsupported = || AdapterError::UnsupportedPhotometric {
        value: photometric.clone(),
        samples: spp,
    };
    let values = match (photometric.as_str(), spp) {
        ("RGB", 3) => {
            let [r, g, b] = channels(&samples, pixels, planar, index)?;
            (0..pixels)
                .map(|i| 0.299 * r(i) + 0.587 * g(i) + 0.114 * b(i))
                .collect()
        }
        // Decompressed 4:2:2 data comes back full (three samples per pixel): read it as YBR_FULL.
        ("YBR_FULL", 3) | ("YBR_FULL_422", 3) if samples.len() == 3 * pixels => {
            let [y, _, _] = channels(&samples, pixels, planar, index)?;
            (0..pixels).map(y).collect()
        }
        ("YBR_FULL_422", 3) => {
            if cols % 2 != 0 || samples.len() != 2 * pixels {
                return Err(AdapterError::decode(
                    index,
                    format!(
                        "YBR_FULL_422 needs an even number of columns and two samples per pixel; \
                         the frame has {cols} columns and {} samples for {pixels} pixels",
                        samples.len()
                    ),
                ));
            }
            // Y1 Y2 Cb Cr for each horizontal pair of pixels.
            samples
                .chunks_exact(4)
                .flat_map(|quad| [quad[0], quad[1]])
                .collect()
        }
        ("PALETTE COLOR", 1) => {
            let palette = Palette::of(instance)?;
            if samples.len() < pixels {
                return Err(short(index, samples.len(), pixels));
            }
            samples[..pixels]
                .iter()
                .map(|&i| palette.luma(i as i64))
                .collect()
        }
        _ => return Err(unsupported()),
    };
    Ok(Frame {
        rows,
        cols,
        values,
        photometric: Photometric::Monochrome2,
    })
}

fn short(index: u32, got: usize, pixels: usize) -> AdapterError {
    AdapterError::decode(
        index,
        format!("the frame holds {got} samples for {pixels} pixels"),
    )
}

/// The three channels of a colour frame as functions of the pixel index, for either planar
/// configuration.
fn channels(
    samples: &[f32],
    pixels: usize,
    planar: u16,
    index: u32,
) -> Result<[impl Fn(usize) -> f32 + '_; 3], AdapterError> {
    if samples.len() < 3 * pixels {
        return Err(short(index, samples.len() / 3, pixels));
    }
    let channel = move |c: usize| {
        move |i: usize| {
            if planar == 1 {
                samples[c * pixels + i]
            } else {
                samples[3 * i + c]
            }
        }
    };
    Ok([channel(0), channel(1), channel(2)])
}

/// Planar Configuration (0028,0006): 0 (R1 G1 B1 R2 ...) when absent, or 1 (R1 R2 ... G1 ...).
fn planar_configuration(instance: &Instance) -> Result<u16, AdapterError> {
    let Some(element) = instance.object.get(tags::PLANAR_CONFIGURATION) else {
        return Ok(0);
    };
    match element.to_int::<u16>() {
        Ok(value @ (0 | 1)) => Ok(value),
        _ => Err(AdapterError::BadAttribute {
            name: "PlanarConfiguration",
            tag: "(0028,0006)",
            value: element.to_str().unwrap_or_default().trim().to_string(),
            problem: "must be 0 (colour-by-pixel) or 1 (colour-by-plane)",
        }),
    }
}

/// The luma of each entry of a palette, and the index its first entry maps.
struct Palette {
    first: i64,
    luma: Vec<f32>,
}

impl Palette {
    /// Reads the red, green and blue tables (descriptor and data) of a PALETTE COLOR image.
    fn of(instance: &Instance) -> Result<Self, AdapterError> {
        let tables = [
            (
                "Red",
                tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
            (
                "Green",
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
            (
                "Blue",
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
        ];
        let mut first = None;
        let mut channels = Vec::with_capacity(3);
        for (name, descriptor, data, segmented) in tables {
            let (entries, mapped, bits) = descriptor_of(instance, name, descriptor)?;
            if *first.get_or_insert(mapped) != mapped {
                return Err(palette_error(format!(
                    "descriptors disagree on the first mapped value (red {}, {name} {mapped})",
                    first.unwrap_or_default()
                )));
            }
            let Some(element) = instance.object.get(data) else {
                let problem = if instance.object.get(segmented).is_some() {
                    format!(
                        "of {name} is segmented ({}); diptych reads only plain tables",
                        tag_text(segmented)
                    )
                } else {
                    format!("of {name} has no data {}", tag_text(data))
                };
                return Err(palette_error(problem));
            };
            let bytes = element
                .to_bytes()
                .map_err(|_| palette_error(format!("data of {name} is not a binary value")))?;
            channels.push(entries_of(name, &bytes, entries, bits)?);
        }
        let luma = (0..channels[0].len())
            .map(|i| 0.299 * channels[0][i] + 0.587 * channels[1][i] + 0.114 * channels[2][i])
            .collect();
        Ok(Palette {
            first: first.unwrap_or(0),
            luma,
        })
    }

    /// The luma of `index`: below the first mapped value the first entry, past the table its
    /// last entry (PS3.3 C.7.6.3.1.5).
    fn luma(&self, index: i64) -> f32 {
        let at = (index - self.first).clamp(0, self.luma.len() as i64 - 1);
        self.luma[at as usize]
    }
}

fn tag_text(tag: Tag) -> String {
    format!("({:04X},{:04X})", tag.group(), tag.element())
}

fn palette_error(problem: String) -> AdapterError {
    AdapterError::Palette { problem }
}

/// Number of entries (0 means 65536), first mapped value and bits per entry (8 or 16).
fn descriptor_of(
    instance: &Instance,
    name: &str,
    tag: Tag,
) -> Result<(usize, i64, u16), AdapterError> {
    let element = instance
        .object
        .get(tag)
        .ok_or_else(|| palette_error(format!("of {name} has no descriptor {}", tag_text(tag))))?;
    let values: Vec<i64> = element.to_multi_int::<i64>().unwrap_or_default();
    let [entries, first, bits] = values[..] else {
        return Err(palette_error(format!(
            "descriptor of {name} {} must hold 3 numbers (entries, first mapped value, bits)",
            tag_text(tag)
        )));
    };
    // The first mapped value is US or SS; an SS read as US wraps past 32767.
    let first = if first > 32767 && element.vr() == dicom_core::VR::SS {
        first - 65536
    } else {
        first
    };
    let entries = match entries {
        0 => 65536,
        n @ 1..=65535 => n as usize,
        n => {
            return Err(palette_error(format!(
                "descriptor of {name} declares {n} entries"
            )));
        }
    };
    let bits = match bits {
        8 => 8,
        16 => 16,
        n => {
            return Err(palette_error(format!(
                "descriptor of {name} declares {n} bits per entry"
            )));
        }
    };
    Ok((entries, first, bits))
}

/// The entries of one table. 16-bit entries are little-endian words; 8-bit entries are packed
/// two to a word, or (as some writers do) one per word.
fn entries_of(
    name: &str,
    bytes: &[u8],
    entries: usize,
    bits: u16,
) -> Result<Vec<f32>, AdapterError> {
    let words = || {
        bytes
            .chunks_exact(2)
            .take(entries)
            .map(|w| u16::from_le_bytes([w[0], w[1]]))
    };
    let values: Vec<f32> = if bits == 16 && bytes.len() >= 2 * entries {
        words().map(f32::from).collect()
    } else if bits == 8 && bytes.len() >= 2 * entries {
        // One entry per word: the value sits in the low byte, or in the high byte if any low
        // byte is empty and the high ones are not.
        let all: Vec<u16> = words().collect();
        let high = all.iter().any(|w| w >> 8 != 0) && all.iter().all(|w| w & 0xFF == 0);
        all.iter()
            .map(|&w| f32::from(if high { w >> 8 } else { w & 0xFF }))
            .collect()
    } else if bits == 8 && bytes.len() >= entries {
        bytes[..entries].iter().map(|&b| f32::from(b)).collect()
    } else {
        return Err(palette_error(format!(
            "data of {name} holds {} bytes for {entries} entries of {bits} bits",
            bytes.len()
        )));
    };
    Ok(values)
}
