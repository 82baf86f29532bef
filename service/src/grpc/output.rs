//! Answers out: domain results converted to protobuf messages.

use diptych::api::v1::{Code, EncodedImage, ImageFormat, SliceCodes, encoded_image};

use crate::encoder::{Geometry, SliceCode};
use crate::render;

/// The codes of one slice as the API returns them.
pub fn slice_codes(code: &SliceCode, geometry: &Geometry, model_id: &str) -> SliceCodes {
    let grid = |indices: &[u32]| Code {
        grid_rows: geometry.grid_rows as u32,
        grid_columns: geometry.grid_cols as u32,
        indices: indices.to_vec(),
    };
    SliceCodes {
        normal: Some(grid(&code.normal)),
        abnormal: Some(grid(&code.abnormal)),
        model_id: model_id.to_string(),
    }
}

/// A `size × size` image with values in [0, 1] in the requested format.
pub fn image(values: &[f32], size: usize, format: ImageFormat) -> EncodedImage {
    let data = match format {
        ImageFormat::Float32 => {
            encoded_image::Data::Float32(render::float32_bytes(values.iter().copied()))
        }
        _ => encoded_image::Data::Png(render::grey_png(values, size)),
    };
    EncodedImage {
        rows: size as u32,
        columns: size as u32,
        data: Some(data),
    }
}

/// A `size × size` label map in the requested format.
pub fn label_map(labels: &[u8], size: usize, format: ImageFormat) -> EncodedImage {
    let data = match format {
        ImageFormat::Float32 => encoded_image::Data::Float32(render::float32_bytes(
            labels.iter().map(|&l| f32::from(l)),
        )),
        _ => encoded_image::Data::Png(render::labels_png(labels, size)),
    };
    EncodedImage {
        rows: size as u32,
        columns: size as u32,
        data: Some(data),
    }
}
