//! # diptych-service — the server
//!
//! Turns images into codes with ONNX Runtime and answers viewers over gRPC.
