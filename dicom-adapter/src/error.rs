//! Why a DICOM instance could not be read, decoded or used.
//!
//! Every message names the attribute or limit concerned and what would fix it, and none carries
//! patient data: these messages travel to gRPC clients and DICOM peers and end up in logs.

use thiserror::Error;

/// Everything that can go wrong between DICOM bytes and a pixel frame or a metadata record.
#[derive(Debug, Error)]
pub enum AdapterError {
    /// The bytes are too short to be a DICOM file or data set.
    #[error(
        "{len} bytes are too few for a DICOM instance; send a Part-10 file (128-byte preamble, \
         \"DICM\", file meta group) or a bare data set in explicit VR little endian"
    )]
    TooShort {
        /// Number of bytes received.
        len: usize,
    },
    /// The DICOM parser refused the bytes.
    #[error(
        "cannot parse the DICOM {form}: {message}; send a complete Part-10 file or a bare \
         data set in explicit VR little endian"
    )]
    Parse {
        /// What was being parsed: "Part-10 file" or "bare data set".
        form: &'static str,
        /// The parser's message.
        message: String,
    },
    /// An element declares more bytes than the instance holds after it.
    #[error(
        "element {tag} declares {declared} bytes but only {available} follow; the instance is \
         truncated or corrupt"
    )]
    LengthBeyondData {
        /// Tag as "(gggg,eeee)".
        tag: String,
        /// The declared value length.
        declared: u64,
        /// Bytes remaining after the element header.
        available: u64,
    },
    /// A deflated data set inflates beyond the configured bound.
    #[error(
        "the deflated data set inflates to more than {limit} bytes; send it uncompressed or \
         raise the limit in the configuration"
    )]
    InflatedTooLarge {
        /// The configured bound on inflated bytes.
        limit: u64,
    },
    /// A required attribute is absent.
    #[error("the instance has no {name} {tag}; it is required to {purpose}")]
    MissingAttribute {
        /// Attribute keyword, e.g. "Rows".
        name: &'static str,
        /// Tag as "(gggg,eeee)".
        tag: &'static str,
        /// Why diptych needs it.
        purpose: &'static str,
    },
    /// An attribute holds a value that cannot be used.
    #[error("{name} {tag} holds {value:?}, which is unusable: {problem}")]
    BadAttribute {
        /// Attribute keyword.
        name: &'static str,
        /// Tag as "(gggg,eeee)".
        tag: &'static str,
        /// The value found (never patient data: only image attributes are checked this way).
        value: String,
        /// What is wrong and what it should be.
        problem: &'static str,
    },
    /// A UID attribute is present but breaks the UID rule of [`crate::uid`] (or is empty).
    #[error("{name} {tag} {problem}")]
    BadUid {
        /// Attribute keyword, e.g. "SOPInstanceUID".
        name: &'static str,
        /// Tag as "(gggg,eeee)".
        tag: &'static str,
        /// What is wrong, and the rule (never the value itself).
        problem: crate::uid::UidError,
    },
    /// The instance is not an image to search: no Pixel Data (0x7FE0,0010) (SR, KOS, RT Plan,
    /// ...), or pixels that are not a picture (segmentation, RT Dose, 1-bit masks).
    #[error(
        "the instance is not an image to search (SOP class {sop_class}): {reason}; it is stored \
         but has no slice to encode"
    )]
    NotAnImage {
        /// SOP Class UID of the instance, or "unknown".
        sop_class: String,
        /// Why: no Pixel Data, or what its pixels are instead of a picture.
        reason: &'static str,
    },
    /// A Palette Color Lookup Table cannot be used.
    #[error(
        "the Palette Color Lookup Table {problem}; send the image as RGB or with 8- or 16-bit \
         palette tables of 1 to 65536 entries"
    )]
    Palette {
        /// What is wrong with the tables.
        problem: String,
    },
    /// The transfer syntax is unknown or its pixel data cannot be decoded by the built codecs.
    #[error(
        "transfer syntax {uid} ({name}) cannot be decoded by this build; re-encode the instance \
         in explicit VR little endian, JPEG, JPEG 2000, RLE or deflated"
    )]
    UnsupportedTransferSyntax {
        /// Transfer Syntax UID.
        uid: String,
        /// Its name, or "unknown".
        name: String,
    },
    /// The geometry exceeds the configured limit; refused before any pixel is decoded.
    #[error(
        "{rows} rows × {cols} columns × {frames} frames = {pixels} pixels exceeds the limit of \
         {limit} pixels per instance; split the instance or raise the limit in the configuration"
    )]
    GeometryTooLarge {
        /// Rows (0028,0010).
        rows: u32,
        /// Columns (0028,0011).
        cols: u32,
        /// Number of Frames (0028,0008), 1 when absent.
        frames: u32,
        /// rows × columns × frames.
        pixels: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A compressed frame's codestream declares a larger image than Rows × Columns (a
    /// decompression bomb, or a corrupt header); refused before decoding.
    #[error(
        "a compressed frame declares {width}×{height} pixels but the instance is {cols}×{rows} \
         (Columns × Rows); the codestream does not match its header"
    )]
    CodestreamTooLarge {
        /// Width the codestream declares.
        width: u32,
        /// Height the codestream declares.
        height: u32,
        /// Rows (0028,0010).
        rows: u32,
        /// Columns (0028,0011).
        cols: u32,
    },
    /// Native pixel data holds fewer bytes than the geometry declares.
    #[error(
        "Pixel Data holds {actual} bytes but {rows}×{cols}×{frames} samples of {bits_allocated} \
         bits need {expected}; the instance is truncated"
    )]
    PixelDataTooShort {
        /// Rows.
        rows: u32,
        /// Columns.
        cols: u32,
        /// Frames.
        frames: u32,
        /// Bits Allocated.
        bits_allocated: u16,
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The requested frame does not exist.
    #[error("frame {frame} was asked for but the instance has {frames} frame(s), numbered from 0")]
    FrameOutOfRange {
        /// Zero-based frame asked for.
        frame: u32,
        /// Number of frames in the instance.
        frames: u32,
    },
    /// The photometric interpretation cannot be turned into a single-channel slice.
    #[error(
        "Photometric Interpretation (0028,0004) {value:?} with {samples} sample(s) per pixel is \
         not supported; diptych reads MONOCHROME1, MONOCHROME2, RGB, YBR_FULL, YBR_FULL_422 and \
         PALETTE COLOR"
    )]
    UnsupportedPhotometric {
        /// The value found.
        value: String,
        /// Samples per Pixel.
        samples: u16,
    },
    /// The pixel data codec failed on a frame.
    #[error("cannot decode frame {frame}: {message}")]
    Decode {
        /// Zero-based frame.
        frame: u32,
        /// The codec's message.
        message: String,
    },
}

impl AdapterError {
    /// Wraps a codec failure on `frame`.
    pub(crate) fn decode(frame: u32, message: impl ToString) -> Self {
        Self::Decode {
            frame,
            message: message.to_string(),
        }
    }
}
