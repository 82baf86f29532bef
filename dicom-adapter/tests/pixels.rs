//! Decoding frames: modality values, photometric interpretations, sample layouts and limits,
//! on data sets built in memory with dicom-object.

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use diptych::preprocess::{Photometric, PreprocessParams, preprocess};
use diptych_dicom_adapter::{AdapterError, Limits, parse};

/// Parses with the default limits.
fn open(bytes: &[u8]) -> Result<diptych_dicom_adapter::Instance, AdapterError> {
    parse(bytes, &Limits::default())
}

/// Image pixel module attributes of a grey image with the given sample layout.
struct Layout {
    rows: u16,
    cols: u16,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    samples_per_pixel: u16,
    photometric: &'static str,
}

impl Layout {
    fn grey(rows: u16, cols: u16, bits: u16, signed: bool, photometric: &'static str) -> Self {
        Self {
            rows,
            cols,
            bits_allocated: bits,
            bits_stored: bits,
            signed,
            samples_per_pixel: 1,
            photometric,
        }
    }
}

/// A Part-10 file (explicit VR little endian) with the layout, pixel data and extra elements.
fn part10(
    layout: &Layout,
    pixel_data: PrimitiveValue,
    extra: Vec<DataElement<InMemDicomObject>>,
) -> Vec<u8> {
    let vr = if layout.bits_allocated == 8 {
        VR::OB
    } else {
        VR::OW
    };
    let mut object = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.1234"),
        DataElement::new(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(layout.samples_per_pixel),
        ),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, layout.photometric),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(layout.rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(layout.cols)),
        DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(layout.bits_allocated),
        ),
        DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(layout.bits_stored),
        ),
        DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            PrimitiveValue::from(layout.bits_stored - 1),
        ),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(u16::from(layout.signed)),
        ),
        DataElement::new(tags::PIXEL_DATA, vr, Value::from(pixel_data)),
    ]);
    if layout.samples_per_pixel == 3 {
        object.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
    }
    for element in extra {
        object.put(element);
    }
    let file = object
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap();
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).unwrap();
    bytes
}

fn ds(tag: dicom_core::Tag, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::DS, value)
}

#[test]
fn monochrome1_keeps_its_photometric_and_the_contract_inverts_it() {
    let stored: Vec<u16> = vec![0, 100, 200, 300, 400, 1000];
    let bytes = part10(
        &Layout::grey(2, 3, 16, false, "MONOCHROME1"),
        PrimitiveValue::U16(stored.clone().into()),
        vec![],
    );
    let frame = open(&bytes).unwrap().decode_frame(0).unwrap();
    assert_eq!(frame.photometric, Photometric::Monochrome1);
    let expected: Vec<f32> = stored.iter().map(|&v| f32::from(v)).collect();
    assert_eq!(
        frame.values, expected,
        "values are not inverted by the adapter"
    );

    // Through the image contract: in MONOCHROME1 the lowest stored value is the brightest.
    let params = PreprocessParams {
        input_size: 6,
        low_percentile: 0.0,
        high_percentile: 100.0,
    };
    let out = preprocess(&frame.raw_frame(), &params).unwrap();
    let content = &out.pixels[out.placement.offset_row * 6..(out.placement.offset_row + 4) * 6];
    let max = content.iter().copied().fold(f32::MIN, f32::max);
    let min = content.iter().copied().fold(f32::MAX, f32::min);
    // The top-left pixel (stored 0) is white, the bottom-right (stored 1000) black.
    assert_eq!(content[out.placement.offset_col], max);
    assert!(
        max > 0.99 && min < 0.01,
        "normalised to [0, 1]: {min}..{max}"
    );
}

#[test]
fn signed_16_bit_samples_get_the_rescale_applied() {
    let stored: Vec<i16> = vec![-32768, -1000, -1, 0, 1, 32767];
    let bytes = part10(
        &Layout::grey(3, 2, 16, true, "MONOCHROME2"),
        PrimitiveValue::I16(stored.clone().into()),
        vec![
            ds(tags::RESCALE_SLOPE, "2"),
            ds(tags::RESCALE_INTERCEPT, "-1024"),
        ],
    );
    let frame = open(&bytes).unwrap().decode_frame(0).unwrap();
    let expected: Vec<f32> = stored
        .iter()
        .map(|&v| f32::from(v) * 2.0 - 1024.0)
        .collect();
    assert_eq!(frame.values, expected);
    assert_eq!((frame.rows, frame.cols), (3, 2));
    let raw = frame.raw_frame();
    assert_eq!(
        (raw.rescale_slope, raw.rescale_intercept),
        (1.0, 0.0),
        "rescale already applied"
    );
}

#[test]
fn twelve_bit_signed_samples_are_sign_extended_from_bits_stored() {
    // 12 bits stored in 16 allocated: 0x0FFF is -1, 0x0800 is -2048, 0x07FF is 2047.
    let stored: Vec<u16> = vec![0x0FFF, 0x0800, 0x07FF, 0x0000];
    let layout = Layout {
        bits_stored: 12,
        ..Layout::grey(2, 2, 16, true, "MONOCHROME2")
    };
    let bytes = part10(
        &layout,
        PrimitiveValue::U16(stored.into()),
        vec![
            ds(tags::RESCALE_INTERCEPT, "10"),
            ds(tags::RESCALE_SLOPE, "1"),
        ],
    );
    let frame = open(&bytes).unwrap().decode_frame(0).unwrap();
    assert_eq!(frame.values, vec![9.0, -2038.0, 2057.0, 10.0]);
}

#[test]
fn eight_bit_samples_decode_to_their_values() {
    let stored: Vec<u8> = vec![0, 1, 127, 128, 254, 255];
    let bytes = part10(
        &Layout::grey(2, 3, 8, false, "MONOCHROME2"),
        PrimitiveValue::U8(stored.clone().into()),
        vec![],
    );
    let frame = open(&bytes).unwrap().decode_frame(0).unwrap();
    assert_eq!(frame.photometric, Photometric::Monochrome2);
    assert_eq!(
        frame.values,
        stored.iter().map(|&v| f32::from(v)).collect::<Vec<_>>()
    );
}

#[test]
fn rgb_samples_become_luminance() {
    let layout = Layout {
        samples_per_pixel: 3,
        ..Layout::grey(1, 2, 8, false, "RGB")
    };
    let bytes = part10(
        &layout,
        PrimitiveValue::U8(vec![255, 0, 0, 0, 0, 255].into()),
        vec![],
    );
    let frame = open(&bytes).unwrap().decode_frame(0).unwrap();
    assert_eq!(frame.photometric, Photometric::Monochrome2);
    assert!(
        (frame.values[0] - 0.299 * 255.0).abs() < 1e-3,
        "{:?}",
        frame.values
    );
    assert!(
        (frame.values[1] - 0.114 * 255.0).abs() < 1e-3,
        "{:?}",
        frame.values
    );
}

#[test]
fn every_frame_of_a_multi_frame_instance_decodes_on_its_own() {
    let stored: Vec<u16> = (0..3 * 4).map(|v| v * 10).collect();
    let bytes = part10(
        &Layout::grey(2, 2, 16, false, "MONOCHROME2"),
        PrimitiveValue::U16(stored.into()),
        vec![DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, "3")],
    );
    let instance = open(&bytes).unwrap();
    assert_eq!(instance.frame_count().unwrap(), 3);
    for frame in 0..3u32 {
        let decoded = instance.decode_frame(frame).unwrap();
        let base = frame as f32 * 40.0;
        assert_eq!(
            decoded.values,
            vec![base, base + 10.0, base + 20.0, base + 30.0]
        );
    }
    let err = instance.decode_frame(3).unwrap_err();
    assert!(
        matches!(
            err,
            AdapterError::FrameOutOfRange {
                frame: 3,
                frames: 3
            }
        ),
        "{err}"
    );
}

#[test]
fn absurd_geometry_is_refused_before_decoding() {
    // 4096 × 4096 × 100 frames claimed, 8 bytes present: refused on the pixel count alone.
    let bytes = part10(
        &Layout::grey(4096, 4096, 16, false, "MONOCHROME2"),
        PrimitiveValue::U16(vec![0; 4].into()),
        vec![DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, "100")],
    );
    let err = open(&bytes).unwrap().decode_frame(0).unwrap_err();
    match err {
        AdapterError::GeometryTooLarge {
            rows,
            cols,
            frames,
            pixels,
            limit,
        } => {
            assert_eq!((rows, cols, frames), (4096, 4096, 100));
            assert_eq!(pixels, 4096 * 4096 * 100);
            assert_eq!(limit, Limits::default().max_pixels);
        }
        other => panic!("expected GeometryTooLarge, got {other}"),
    }
    // A tighter configured limit applies too.
    let small = part10(
        &Layout::grey(64, 64, 8, false, "MONOCHROME2"),
        PrimitiveValue::U8(vec![0; 64 * 64].into()),
        vec![],
    );
    let tight = Limits {
        max_pixels: 1000,
        ..Limits::default()
    };
    let err = parse(&small, &tight).unwrap().decode_frame(0).unwrap_err();
    assert!(
        err.to_string().contains("exceeds the limit of 1000 pixels"),
        "{err}"
    );
}

#[test]
fn pixel_data_shorter_than_declared_is_refused() {
    let bytes = part10(
        &Layout::grey(16, 16, 16, false, "MONOCHROME2"),
        PrimitiveValue::U16(vec![7; 100].into()),
        vec![],
    );
    let err = open(&bytes).unwrap().decode_frame(0).unwrap_err();
    match err {
        AdapterError::PixelDataTooShort {
            expected, actual, ..
        } => {
            assert_eq!((expected, actual), (512, 200));
        }
        other => panic!("expected PixelDataTooShort, got {other}"),
    }
}

#[test]
fn missing_or_zero_geometry_names_the_attribute() {
    let bytes = part10(
        &Layout::grey(0, 4, 8, false, "MONOCHROME2"),
        PrimitiveValue::U8(vec![0; 4].into()),
        vec![],
    );
    let err = open(&bytes).unwrap().decode_frame(0).unwrap_err();
    assert!(err.to_string().contains("Rows (0028,0010)"), "{err}");

    let bytes = part10(
        &Layout::grey(2, 2, 8, false, "PALETTE COLOR"),
        PrimitiveValue::U8(vec![0; 4].into()),
        vec![],
    );
    let err = open(&bytes).unwrap().decode_frame(0).unwrap_err();
    // A palette image without its tables: the error names the missing descriptor.
    assert!(
        matches!(err, AdapterError::Palette { .. }) && err.to_string().contains("(0028,1101)"),
        "{err}"
    );

    let bytes = part10(
        &Layout::grey(2, 2, 8, false, "HSV"),
        PrimitiveValue::U8(vec![0; 4].into()),
        vec![],
    );
    let err = open(&bytes).unwrap().decode_frame(0).unwrap_err();
    assert!(
        matches!(err, AdapterError::UnsupportedPhotometric { .. }),
        "{err}"
    );
}

#[test]
fn an_object_without_pixel_data_is_not_an_image() {
    let object = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::BASIC_TEXT_SR_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.99"),
    ]);
    let mut bytes = Vec::new();
    object
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_all(&mut bytes)
        .unwrap();
    let instance = open(&bytes).unwrap();
    assert!(!instance.is_image());
    let err = instance.decode_frame(0).unwrap_err();
    assert!(
        matches!(err, AdapterError::NotAnImage { ref sop_class, .. } if sop_class == uids::BASIC_TEXT_SR_STORAGE),
        "{err}"
    );
}
