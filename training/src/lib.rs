//! # diptych-training — the diptych network in tch, its losses, data sources and trainer
//!
//! The network of docs/METHOD.md §1 (an encoder, two vector quantisers with EMA codebooks, a
//! segmentation decoder and a SPADE image decoder producing both the reconstruction x̂ and the
//! normal-appearing image x̃), the five losses of §2, the phantom and BraTS data sources with
//! augmentation, and the trainer behind `diptych-train train`. The exact layer names and ops are
//! fixed in docs/METHOD.md §1 so that the ONNX exporter can mirror them.

pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod export;
pub mod figures;
pub mod losses;
pub mod model;
pub mod threshold;
pub mod trainer;
