//! # diptych-dicom-adapter — DICOM in and out of diptych
//!
//! Turns DICOM instances into what the rest of diptych understands: pixel frames for the image
//! contract and catalog metadata.
