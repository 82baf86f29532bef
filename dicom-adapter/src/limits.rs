//! [`Limits`]: how much an instance from the network may make diptych allocate, checked by the
//! parser ([`crate::parse`]: declared lengths, inflated size) and by the pixel decoder
//! ([`crate::Instance::geometry`]: rows × columns × frames) before either allocates.

/// Bounds on what an instance may make the parser and the decoder allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest rows × columns × frames accepted per instance.
    pub max_pixels: u64,
    /// Largest size of a deflated data set once inflated, in bytes.
    pub max_inflated_bytes: u64,
}

impl Default for Limits {
    /// 128 Mi pixels (a 512×512 volume of 512 frames) and 512 MiB inflated.
    fn default() -> Self {
        Self {
            max_pixels: 128 * 1024 * 1024,
            max_inflated_bytes: 512 * 1024 * 1024,
        }
    }
}
