//! The names a model bundle's files and graphs use (docs/DESIGN.md, "Model bundle").

/// File name of the encoder graph inside a bundle.
pub const ENCODER_FILE: &str = "encoder.onnx";
/// File name of the decoder graph inside a bundle.
pub const DECODER_FILE: &str = "decoder.onnx";

/// Initializer name of the normal codebook `[K, D]` in both graphs.
pub const CODEBOOK_NORMAL: &str = "codebook_normal";
/// Initializer name of the abnormal codebook `[K, D]` in both graphs.
pub const CODEBOOK_ABNORMAL: &str = "codebook_abnormal";

/// Encoder input: the preprocessed image `[N, 1, S, S]` in [0, 1].
pub const IMAGE: &str = "image";
/// Encoder output and decoder input: normal code indices `[N, h, w]` (int64).
pub const NORMAL_INDICES: &str = "normal_indices";
/// Encoder output and decoder input: abnormal code indices `[N, h, w]` (int64).
pub const ABNORMAL_INDICES: &str = "abnormal_indices";
/// Encoder output: per-position mean over D of (z_a − e_a)², `[N, h, w]`.
pub const ABNORMAL_DISTANCE: &str = "abnormal_distance";
/// Encoder output: f / (f + 0.004), f the share of pixels the segmentation of the abnormal code
/// labels as lesion, `[N]`.
pub const ABNORMALITY: &str = "abnormality";
/// Encoder output (optional): the continuous normal latent z_n before quantisation,
/// `[N, D, h, w]`, for evaluation baselines; the service does not fetch it.
pub const NORMAL_LATENT: &str = "normal_latent";
/// Encoder output (optional): the continuous abnormal latent z_a before quantisation,
/// `[N, D, h, w]`.
pub const ABNORMAL_LATENT: &str = "abnormal_latent";
/// Decoder output: abnormal-label logits `[N, L, S, S]`.
pub const SEGMENTATION: &str = "segmentation";
/// Decoder output: the reconstruction x̂ `[N, 1, S, S]`.
pub const RECONSTRUCTION: &str = "reconstruction";
/// Decoder output: the normal-appearing image x̃ `[N, 1, S, S]`.
pub const NORMAL_APPEARING: &str = "normal_appearing";

/// The symbolic name of the dynamic batch axis in graph inputs and outputs.
pub const BATCH_AXIS: &str = "N";
