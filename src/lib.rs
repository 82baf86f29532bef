//! # diptych — the shared vocabulary
//!
//! diptych decomposes every 2D medical image *slice* into two discrete *codes* with a VQ-VAE-style
//! network: a **normal anatomy code** and an **abnormal anatomy code**. Each code is a *grid* of
//! h×w integers, each an index into a *codebook* of K vectors of dimension D. A *record* is one
//! indexed slice (its codes, its model id and its DICOM metadata in the *catalog*). A search has a
//! *mode* — normal, abnormal or combined — and a *composite* query takes the normal code of one
//! source and the abnormal code of another.
//!
//! This crate holds what every other crate shares, so that nothing is written twice:
//!
//! - [`api`] (feature `api`): the gRPC contract `diptych.v1`, generated from `proto/` by
//!   `build.rs`;
//! - [`preprocess`]: the image contract, the one function that turns a stored frame into model
//!   input, used by training on every sample and by the service on every slice;
//! - [`manifest`]: the model-bundle manifest (`manifest.json`) and its validation;
//! - [`bundle`]: the rest of the model bundle's contract — file, input and output names and
//!   shapes, the ONNX messages, where ONNX Runtime is looked for — shared by the exporter, the
//!   evaluator and the service;
//! - [`synthetic`]: the labelled slice every synthetic source gives, and the trait they share;
//! - [`phantom`]: a deterministic generator of synthetic BraTS-like brain slices with normal and
//!   abnormal labels and a healthy twin for every diseased slice;
//! - [`atlas`]: synthetic slices of real anatomy, from the MNI152 tissue maps;
//! - [`brats`]: real scans, slices of a BraTS folder that the user supplies (no twins; the brain
//!   mask as the only normal label).

#[cfg(feature = "api")]
pub mod api;
pub mod atlas;
pub mod brats;
pub mod bundle;
pub mod manifest;
pub mod phantom;
pub mod preprocess;
pub mod synthetic;
