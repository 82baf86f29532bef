//! Synthetic instances: DICOM images made from pixel arrays (phantom slices, test patterns), for
//! tests, demos and benchmarks that need real DICOM bytes without patient data.
//!
//! ```
//! use diptych::phantom::{PhantomConfig, PhantomGenerator};
//! use diptych_dicom_adapter::synthetic::SyntheticInstance;
//!
//! let slice = PhantomGenerator::new(2, PhantomConfig::default()).slice(0);
//! let bytes = SyntheticInstance::from_phantom(&slice).to_part10();
//! let instance = diptych_dicom_adapter::parse(&bytes, &Default::default()).unwrap();
//! assert_eq!(instance.metadata().modality, "MR");
//! ```

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use diptych::phantom::SyntheticSlice;
use diptych::preprocess::Photometric;

/// Stored samples of every frame, concatenated frame after frame, row-major within a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredSamples {
    /// Unsigned 8-bit samples (Bits Allocated 8).
    U8(Vec<u8>),
    /// Unsigned 16-bit samples (Bits Allocated 16, Pixel Representation 0).
    U16(Vec<u16>),
    /// Signed 16-bit samples (Bits Allocated 16, Pixel Representation 1).
    I16(Vec<i16>),
}

impl StoredSamples {
    fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
        }
    }
}

/// A single- or multi-frame grey-scale image instance to be written as DICOM.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticInstance {
    /// Rows of each frame.
    pub rows: u16,
    /// Columns of each frame.
    pub cols: u16,
    /// Samples of all frames; their count must be a multiple of rows × columns.
    pub samples: StoredSamples,
    /// MONOCHROME1 or MONOCHROME2.
    pub photometric: Photometric,
    /// Rescale Slope and Intercept, written when present.
    pub rescale: Option<(f64, f64)>,
    /// SOP Class UID; MR Image Storage by default.
    pub sop_class_uid: String,
    /// Textual attributes written as given (UIDs, patient and study attributes, ...).
    pub attributes: Vec<(Tag, VR, String)>,
}

impl SyntheticInstance {
    /// An MR image of `rows × cols` with the given samples, MONOCHROME2, no rescale, with fresh
    /// UIDs derived from `seed`.
    pub fn new(rows: u16, cols: u16, samples: StoredSamples, seed: u64) -> Self {
        Self {
            rows,
            cols,
            samples,
            photometric: Photometric::Monochrome2,
            rescale: None,
            sop_class_uid: uids::MR_IMAGE_STORAGE.to_string(),
            attributes: vec![
                (tags::STUDY_INSTANCE_UID, VR::UI, uid(1, seed)),
                (tags::SERIES_INSTANCE_UID, VR::UI, uid(2, seed)),
                (tags::SOP_INSTANCE_UID, VR::UI, uid(3, seed)),
                (tags::MODALITY, VR::CS, "MR".to_string()),
            ],
        }
    }

    /// A phantom slice as an MR image: values rounded to unsigned 16-bit, one study and series
    /// per subject, UIDs derived from the subject and slice index, a synthetic patient ID.
    pub fn from_phantom(slice: &SyntheticSlice) -> Self {
        let samples = slice
            .image
            .iter()
            .map(|&v| v.round().clamp(0.0, f32::from(u16::MAX)) as u16)
            .collect();
        let rows = u16::try_from(slice.rows).expect("phantom rows fit in 16 bits");
        let cols = u16::try_from(slice.cols).expect("phantom columns fit in 16 bits");
        let mut instance = Self::new(rows, cols, StoredSamples::U16(samples), slice.index);
        instance.set(tags::STUDY_INSTANCE_UID, VR::UI, uid(1, slice.subject));
        instance.set(tags::SERIES_INSTANCE_UID, VR::UI, uid(2, slice.subject));
        instance.set(tags::SOP_INSTANCE_UID, VR::UI, uid(3, slice.index));
        instance.set(
            tags::PATIENT_ID,
            VR::LO,
            format!("PHANTOM-{:04}", slice.subject),
        );
        instance.set(tags::BODY_PART_EXAMINED, VR::CS, "BRAIN".to_string());
        instance.set(tags::SERIES_DESCRIPTION, VR::LO, "phantom T1".to_string());
        instance.set(tags::INSTANCE_NUMBER, VR::IS, slice.index.to_string());
        instance.set(
            tags::SLICE_LOCATION,
            VR::DS,
            format!("{:.1}", f64::from(slice.level) * 150.0),
        );
        instance
    }

    /// Sets (or replaces) a textual attribute.
    pub fn set(&mut self, tag: Tag, vr: VR, value: String) {
        self.attributes.retain(|(t, _, _)| *t != tag);
        self.attributes.push((tag, vr, value));
    }

    /// Number of frames the samples hold.
    pub fn frames(&self) -> usize {
        self.samples.len() / (usize::from(self.rows) * usize::from(self.cols)).max(1)
    }

    /// The data set with a file meta group for explicit VR little endian.
    ///
    /// # Panics
    /// If the sample count is not a positive multiple of rows × columns.
    pub fn object(&self) -> DefaultDicomObject {
        let pixels = usize::from(self.rows) * usize::from(self.cols);
        assert!(
            pixels > 0 && self.samples.len().is_multiple_of(pixels) && self.samples.len() >= pixels,
            "sample count must be a positive multiple of rows × columns"
        );
        let (bits, representation, pixel_vr, pixel_value) = match &self.samples {
            StoredSamples::U8(v) => (8u16, 0u16, VR::OB, PrimitiveValue::U8(v.clone().into())),
            StoredSamples::U16(v) => (16, 0, VR::OW, PrimitiveValue::U16(v.clone().into())),
            StoredSamples::I16(v) => (16, 1, VR::OW, PrimitiveValue::I16(v.clone().into())),
        };
        let photometric = match self.photometric {
            Photometric::Monochrome1 => "MONOCHROME1",
            Photometric::Monochrome2 => "MONOCHROME2",
        };
        let mut object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, self.sop_class_uid.as_str()),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(self.rows)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(self.cols)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)),
            DataElement::new(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(representation),
            ),
            DataElement::new(tags::PIXEL_DATA, pixel_vr, Value::from(pixel_value)),
        ]);
        if self.frames() > 1 {
            object.put(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                self.frames().to_string(),
            ));
        }
        if let Some((slope, intercept)) = self.rescale {
            object.put(DataElement::new(
                tags::RESCALE_SLOPE,
                VR::DS,
                slope.to_string(),
            ));
            object.put(DataElement::new(
                tags::RESCALE_INTERCEPT,
                VR::DS,
                intercept.to_string(),
            ));
        }
        for (tag, vr, value) in &self.attributes {
            object.put(DataElement::new(*tag, *vr, value.as_str()));
        }
        object
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .expect("the synthetic data set has SOP class and instance UIDs")
    }

    /// The instance as a Part-10 file (preamble, `DICM`, meta group, data set).
    pub fn to_part10(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.object()
            .write_all(&mut bytes)
            .expect("writing to memory does not fail");
        bytes
    }

    /// The data set alone in explicit VR little endian, as a C-STORE carries it.
    pub fn to_bare_data_set(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.object()
            .write_dataset(&mut bytes)
            .expect("writing to memory does not fail");
        bytes
    }
}

/// A UID under the UUID-derived root 2.25, unique per (kind, number).
fn uid(kind: u64, number: u64) -> String {
    // splitmix64 twice gives 128 well-mixed bits; 2.25 UIDs are the decimal of a 128-bit value.
    let hi = splitmix(kind.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ number);
    let lo = splitmix(hi ^ number.rotate_left(32) ^ kind);
    let value = (u128::from(hi) << 64 | u128::from(lo)) >> 1;
    format!("2.25.{value}")
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
