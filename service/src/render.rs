//! Pictures out: model images and label maps as PNG (for display) or raw float32 (for analysis).
//!
//! Images are in [0, 1] (model input and the decoder's reconstructions); they become 8-bit grey
//! PNGs after clamping. Segmentation logits (L channels) become an arg-max label map: a palette
//! PNG in RGB, or one float per pixel holding the label index.

use image::{ImageBuffer, ImageEncoder, Luma, Rgb};

/// Colours of the abnormal labels in PNG label maps: background black, then necrotic core red,
/// edema green, enhancing tumour blue; further labels cycle through yellow, magenta, cyan.
pub const LABEL_COLOURS: [[u8; 3]; 7] = [
    [0, 0, 0],
    [220, 40, 40],
    [40, 200, 60],
    [50, 90, 230],
    [230, 210, 40],
    [210, 60, 210],
    [40, 210, 210],
];

/// The colour of label `label` in PNG label maps.
pub fn label_colour(label: u8) -> [u8; 3] {
    if label == 0 {
        LABEL_COLOURS[0]
    } else {
        LABEL_COLOURS[1 + (usize::from(label) - 1) % (LABEL_COLOURS.len() - 1)]
    }
}

/// Arg-max over `channels` planes of `pixels` logits each (channel-major); ties go to the lower
/// label.
pub fn argmax_labels(logits: &[f32], channels: usize, pixels: usize) -> Vec<u8> {
    assert_eq!(
        logits.len(),
        channels * pixels,
        "logits must hold channels × pixels values"
    );
    (0..pixels)
        .map(|p| {
            let mut best = 0usize;
            for c in 1..channels {
                if logits[c * pixels + p] > logits[best * pixels + p] {
                    best = c;
                }
            }
            best as u8
        })
        .collect()
}

/// An 8-bit grey PNG of a `size × size` image with values in [0, 1] (clamped).
pub fn grey_png(values: &[f32], size: usize) -> Vec<u8> {
    let bytes: Vec<u8> = values
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let buffer: ImageBuffer<Luma<u8>, Vec<u8>> =
        ImageBuffer::from_raw(size as u32, size as u32, bytes).expect("size × size values");
    encode(buffer.as_raw(), size, image::ExtendedColorType::L8)
}

/// An RGB PNG of a `size × size` label map, coloured by [`label_colour`].
pub fn labels_png(labels: &[u8], size: usize) -> Vec<u8> {
    let bytes: Vec<u8> = labels.iter().flat_map(|&l| label_colour(l)).collect();
    let buffer: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_raw(size as u32, size as u32, bytes).expect("size × size labels");
    encode(buffer.as_raw(), size, image::ExtendedColorType::Rgb8)
}

/// Little-endian float32 bytes of the values.
pub fn float32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn encode(bytes: &[u8], size: usize, colour: image::ExtendedColorType) -> Vec<u8> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(bytes, size as u32, size as u32, colour)
        .expect("encoding a PNG into memory does not fail");
    png
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_picks_the_largest_logit_per_pixel() {
        // 3 channels × 4 pixels.
        let logits = [
            0.0, 5.0, 1.0, 1.0, // channel 0
            1.0, 0.0, 1.0, 0.0, // channel 1
            -1.0, 0.0, 3.0, 1.0, // channel 2
        ];
        assert_eq!(argmax_labels(&logits, 3, 4), vec![1, 0, 2, 0]);
    }

    #[test]
    fn pngs_decode_back_to_the_pixels() {
        let values = [0.0, 0.5, 1.0, 2.0];
        let png = grey_png(&values, 2);
        let decoded = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!(decoded.as_raw(), &vec![0, 128, 255, 255]);

        let png = labels_png(&[0, 1, 2, 3], 2);
        let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(decoded.get_pixel(1, 0).0, LABEL_COLOURS[1]);
        assert_eq!(decoded.get_pixel(1, 1).0, LABEL_COLOURS[3]);
        assert_eq!(
            label_colour(7),
            LABEL_COLOURS[1],
            "colours cycle after the palette"
        );
    }

    #[test]
    fn float32_bytes_are_little_endian() {
        assert_eq!(float32_bytes([1.0f32]), vec![0, 0, 0x80, 0x3F]);
    }
}
