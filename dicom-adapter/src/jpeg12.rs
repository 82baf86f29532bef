//! 12-bit lossy JPEG (JPEG Extended, processes 2 and 4: transfer syntax 1.2.840.10008.1.2.4.51)
//! through GDCM's 12-bit build of the IJG library (`libgdcmjpeg12`, C shim `csrc/jpeg12.c`):
//! the pure-Rust decoder of dicom-pixeldata reads only 8-bit DCT data. Built when GDCM's
//! headers are installed (see `build.rs`); [`available`] tells whether this build has it.
//!
//! The frame's codestream is its fragment (one per frame), or every fragment joined for a
//! single-frame instance. The samples are masked to Bits Stored, sign-extended when Pixel
//! Representation is 1, and rescaled with the top-level Rescale Slope and Intercept.

use dicom_dictionary_std::tags;
use diptych::preprocess::Photometric;

use crate::error::AdapterError;
use crate::instance::Instance;
use crate::pixels::{Frame, Geometry};

/// True when this build decodes 12-bit lossy JPEG.
pub fn available() -> bool {
    cfg!(jpeg12)
}

/// True when frame decoding of `instance` must go through this decoder: lossy JPEG whose
/// samples are wider than 8 bits.
pub(crate) fn needed(instance: &Instance) -> bool {
    const LOSSY_JPEG: [&str; 2] = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"];
    LOSSY_JPEG.contains(&instance.transfer_syntax())
        && instance
            .object
            .get(tags::BITS_STORED)
            .and_then(|e| e.to_int::<u16>().ok())
            .is_some_and(|bits| bits > 8)
}

#[cfg(jpeg12)]
mod ffi {
    unsafe extern "C" {
        pub fn diptych_jpeg12_decode(
            data: *const u8,
            len: usize,
            out: *mut u16,
            capacity: usize,
            width: *mut u32,
            height: *mut u32,
            components: *mut u32,
            precision: *mut u32,
            message: *mut std::ffi::c_char,
            message_len: usize,
        ) -> std::ffi::c_int;
    }
}

/// Decodes one codestream into at most `capacity` samples: the samples, width, height and
/// number of components.
#[cfg(jpeg12)]
fn decode_codestream(
    codestream: &[u8],
    capacity: usize,
) -> Result<(Vec<u16>, u32, u32, u32), String> {
    let mut out = vec![0u16; capacity];
    let (mut width, mut height, mut components, mut precision) = (0u32, 0u32, 0u32, 0u32);
    let mut message = [0 as std::ffi::c_char; 200];
    // SAFETY: every pointer is valid for the length given with it; the shim writes at most
    // `capacity` samples (it checks the declared size first) and a NUL-terminated message of at
    // most `message.len()` bytes, and keeps no pointer after returning.
    let status = unsafe {
        ffi::diptych_jpeg12_decode(
            codestream.as_ptr(),
            codestream.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut width,
            &mut height,
            &mut components,
            &mut precision,
            message.as_mut_ptr(),
            message.len(),
        )
    };
    if status != 0 {
        // SAFETY: the shim NUL-terminates the message within the buffer (zeroed beforehand).
        let text = unsafe { std::ffi::CStr::from_ptr(message.as_ptr()) };
        return Err(format!("12-bit JPEG: {}", text.to_string_lossy()));
    }
    out.truncate(width as usize * height as usize * components as usize);
    Ok((out, width, height, components))
}

#[cfg(not(jpeg12))]
fn decode_codestream(
    _codestream: &[u8],
    _capacity: usize,
) -> Result<(Vec<u16>, u32, u32, u32), String> {
    Err(
        "lossy JPEG with more than 8 bits per sample cannot be decoded by this build (built \
         without GDCM's 12-bit JPEG library: make deps-apt); send JPEG lossless, JPEG 2000 or \
         uncompressed"
            .to_string(),
    )
}

/// Decodes frame `index` of a 12-bit lossy JPEG instance into modality values (or luma).
pub(crate) fn decode_frame(
    instance: &Instance,
    index: u32,
    geometry: &Geometry,
) -> Result<Frame, AdapterError> {
    let element = instance
        .object
        .element(tags::PIXEL_DATA)
        .map_err(|_| AdapterError::decode(index, "the instance has no Pixel Data"))?;
    let fragments = element
        .value()
        .fragments()
        .ok_or_else(|| AdapterError::decode(index, "JPEG pixel data is not encapsulated"))?;
    let codestream: Vec<u8> = if geometry.frames == 1 {
        fragments.concat()
    } else if fragments.len() == geometry.frames as usize {
        fragments[index as usize].clone()
    } else {
        return Err(AdapterError::decode(
            index,
            format!(
                "{} fragments for {} frames: 12-bit JPEG frames split over several fragments \
                 are not read; send one fragment per frame",
                fragments.len(),
                geometry.frames
            ),
        ));
    };
    let (rows, cols) = (geometry.rows as usize, geometry.cols as usize);
    let spp = usize::from(geometry.samples_per_pixel);
    let (samples, width, height, components) = decode_codestream(&codestream, rows * cols * spp)
        .map_err(|m| AdapterError::decode(index, m))?;
    if (width as usize, height as usize, components as usize) != (cols, rows, spp) {
        return Err(AdapterError::decode(
            index,
            format!(
                "the codestream holds {width}×{height} pixels of {components} component(s), the \
                 instance declares {cols}×{rows} of {spp}"
            ),
        ));
    }
    let int = |tag| {
        instance
            .object
            .get(tag)
            .and_then(|e| e.to_int::<u16>().ok())
    };
    let float = |tag, default: f64| {
        instance
            .object
            .get(tag)
            .and_then(|e| e.to_float64().ok())
            .unwrap_or(default)
    };
    let bits_stored = int(tags::BITS_STORED).unwrap_or(12).clamp(1, 16);
    let signed = int(tags::PIXEL_REPRESENTATION) == Some(1);
    let (slope, intercept) = (
        float(tags::RESCALE_SLOPE, 1.0),
        float(tags::RESCALE_INTERCEPT, 0.0),
    );
    let mask = if bits_stored == 16 {
        0xFFFF
    } else {
        (1u32 << bits_stored) - 1
    };
    let stored = |s: u16| {
        let v = u32::from(s) & mask;
        if signed && v >> (bits_stored - 1) & 1 == 1 {
            f64::from(v) - f64::from(mask) - 1.0
        } else {
            f64::from(v)
        }
    };
    let (values, photometric): (Vec<f32>, Photometric) = match (geometry.photometric.as_str(), spp)
    {
        ("MONOCHROME1", 1) | ("MONOCHROME2", 1) => (
            samples
                .iter()
                .map(|&s| (stored(s) * slope + intercept) as f32)
                .collect(),
            if geometry.photometric == "MONOCHROME1" {
                Photometric::Monochrome1
            } else {
                Photometric::Monochrome2
            },
        ),
        // Three components come out of the decoder as RGB.
        (_, 3) => (
            samples
                .chunks_exact(3)
                .map(|p| {
                    (0.299 * stored(p[0]) + 0.587 * stored(p[1]) + 0.114 * stored(p[2])) as f32
                })
                .collect(),
            Photometric::Monochrome2,
        ),
        _ => {
            return Err(AdapterError::UnsupportedPhotometric {
                value: geometry.photometric.clone(),
                samples: geometry.samples_per_pixel,
            });
        }
    };
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        return Err(AdapterError::decode(
            index,
            format!(
                "pixel {bad} is not a finite number after rescaling; check Rescale Slope/Intercept"
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
