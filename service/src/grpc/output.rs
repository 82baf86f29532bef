//! Answers out: domain results converted to protobuf messages.

use diptych::api::v1::{
    Code, EncodedImage, ImageFormat, RecordMetadata, SliceCodes, encoded_image,
};

use crate::catalog::StoredRecord;

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

/// The catalog record of a hit as the API shows it (birth dates are never returned).
pub fn record_metadata(record: &StoredRecord) -> RecordMetadata {
    let m = &record.metadata;
    RecordMetadata {
        patient_id: m.patient_id.clone(),
        patient_sex: m.patient_sex.clone(),
        patient_age: m.patient_age.clone(),
        study_date: m.study_date.clone(),
        study_time: m.study_time.clone(),
        modality: m.modality.clone(),
        body_part: m.body_part.clone(),
        study_description: m.study_description.clone(),
        series_description: m.series_description.clone(),
        institution: m.institution.clone(),
        manufacturer: m.manufacturer.clone(),
        manufacturer_model: m.manufacturer_model.clone(),
        slice_location: m.slice_location.unwrap_or_default(),
        slice_thickness: m.slice_thickness.unwrap_or_default(),
        pixel_spacing: m.pixel_spacing.map(|s| s.to_vec()).unwrap_or_default(),
        rows: m.rows,
        columns: m.columns,
        sequence: m.sequence.clone(),
        abnormality: record.abnormality,
        series_number: m.series_number.unwrap_or_default(),
        instance_number: m.instance_number.unwrap_or_default(),
    }
}
