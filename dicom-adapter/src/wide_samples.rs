//! 32-bit monochrome samples (Bits Allocated 32, uncompressed), which dicom-pixeldata decodes
//! into bytes but does not convert to values: read them here, as its 8- and 16-bit paths do,
//! into modality values.
//!
//! Each sample is masked to Bits Stored (and its sign extended when Pixel Representation is 1),
//! then the frame's Rescale Slope and Intercept are applied; values above 2²⁴ lose precision in
//! the f32 they end in, which pre-processing's normalisation does not notice.

use dicom_pixeldata::{PixelDecoder, PixelRepresentation};
use diptych::preprocess::Photometric;

use crate::error::AdapterError;
use crate::instance::{Instance, error_chain};
use crate::pixels::{Frame, Geometry};

/// Decodes frame `index` of a 32-bit monochrome instance held uncompressed.
pub(crate) fn decode_frame(
    instance: &Instance,
    index: u32,
    geometry: &Geometry,
) -> Result<Frame, AdapterError> {
    let photometric = match geometry.photometric.as_str() {
        "MONOCHROME1" => Photometric::Monochrome1,
        "MONOCHROME2" => Photometric::Monochrome2,
        other => {
            return Err(AdapterError::UnsupportedPhotometric {
                value: other.to_string(),
                samples: geometry.samples_per_pixel,
            });
        }
    };
    let decoded = instance
        .object
        .decode_pixel_data_frame(index)
        .map_err(|e| AdapterError::decode(index, error_chain(&e)))?;
    let (rows, cols) = (geometry.rows as usize, geometry.cols as usize);
    let bytes = decoded.data();
    if bytes.len() != rows * cols * 4 {
        return Err(AdapterError::decode(
            index,
            format!(
                "the frame holds {} bytes where {rows}×{cols} 32-bit samples need {}",
                bytes.len(),
                rows * cols * 4
            ),
        ));
    }
    let bits_stored = u32::from(decoded.bits_stored()).clamp(1, 32);
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let rescale = decoded
        .rescale()
        .map_err(|e| AdapterError::decode(index, error_chain(&e)))?[0];
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|sample| {
            let raw = u32::from_ne_bytes([sample[0], sample[1], sample[2], sample[3]]);
            let stored = stored_value(raw, bits_stored, signed);
            (stored * rescale.slope + rescale.intercept) as f32
        })
        .collect();
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

/// The value a sample holds: its low `bits_stored` bits, sign-extended when `signed`.
fn stored_value(raw: u32, bits_stored: u32, signed: bool) -> f64 {
    let unused = 32 - bits_stored;
    if signed {
        f64::from(((raw << unused) as i32) >> unused)
    } else {
        f64::from((raw << unused) >> unused)
    }
}

#[cfg(test)]
mod tests {
    use super::stored_value;

    #[test]
    fn samples_are_masked_to_bits_stored_and_sign_extended() {
        assert_eq!(stored_value(0xFFFF_FFFF, 32, false), 4_294_967_295.0);
        assert_eq!(stored_value(0xFFFF_FFFF, 32, true), -1.0);
        assert_eq!(stored_value(0xAB80_0000, 24, true), -8_388_608.0);
        assert_eq!(stored_value(0xAB7F_FFFF, 24, true), 8_388_607.0);
        assert_eq!(stored_value(0xAB80_0000, 24, false), 8_388_608.0);
    }
}
