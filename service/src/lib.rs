//! # diptych-service — the server
//!
//! Turns images into codes with ONNX Runtime and answers viewers over gRPC; the `diptych`
//! binary. This first slice serves the model (ImageService: Encode, Decompose; InfoService);
//! the durable store, the catalog and search arrive with issue #3, the DICOM listener with #4.
//!
//! | module | what it is for |
//! |---|---|
//! | [`config`] | the configuration: defaults, TOML file, `DIPTYCH_*` environment, flags |
//! | [`bundle`] | the model bundle loaded and checked against its manifest; codebooks read from the graphs |
//! | [`encoder`] | ONNX Runtime sessions behind dynamic batching; warm-up |
//! | [`slice`] | a DICOM frame or raw pixels turned into model input by the shared image contract |
//! | [`render`] | model images and label maps as PNG or float32 |
//! | [`grpc`] | the gRPC edge: thin adapters, health, reflection, limits |
//! | [`server`] | `diptych serve`: start-up order, serving, shutdown |
//!
//! Logs go through `tracing` (filter with `RUST_LOG`); they never carry patient data.

pub mod bundle;
pub mod catalog;
pub mod config;
pub mod encoder;
pub mod grpc;
pub mod record;
pub mod render;
pub mod search;
pub mod server;
pub mod slice;
pub mod store;
