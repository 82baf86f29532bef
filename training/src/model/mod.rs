//! The diptych network (docs/METHOD.md §1), one module per box of the diagram.
//!
//! Layer names, shapes and ops are fixed in docs/METHOD.md §1; the ONNX exporter mirrors them.

mod block;
mod diptych;
mod encoder;
mod image_decoder;
mod quantizer;
mod seg_decoder;
mod spade;

pub use block::{ConvBn, conv, leaky_relu, upsample2};
pub use diptych::{ABNORMALITY_HALF_FRACTION, Decoded, Diptych, Encoded, Outputs};
pub use encoder::Encoder;
pub use image_decoder::ImageDecoder;
pub use quantizer::{Quantized, VectorQuantizer};
pub use seg_decoder::{SegDecoder, refine_name};
pub use spade::Spade;
