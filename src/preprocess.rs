//! The image contract: the one function that turns a stored frame into model input.
//!
//! Training calls [`preprocess`] on every sample and the service calls it on every slice, so a
//! model sees exactly the same numbers in both places. The steps, in order:
//!
//! 1. **modality LUT**: `value = stored · rescale_slope + rescale_intercept`;
//! 2. **MONOCHROME1** frames are inverted (low values are bright in MONOCHROME1);
//! 3. **robust normalisation**: the values at the low and high percentiles of all pixels map to 0
//!    and 1, everything is clipped to [0, 1] (a constant frame becomes all zeros);
//! 4. **aspect-preserving resize** into `input_size × input_size`: area averaging where the frame
//!    shrinks, bilinear interpolation where it grows, the content centred with zero padding.
//!
//! [`place_labels`] puts a label map through the same geometry (nearest neighbour), so that labels
//! stay aligned with the pre-processed image. [`preprocess_with_window`] renders a companion frame
//! (a healthy twin, a reconstruction) with another frame's normalisation [`window`], so that the
//! two can be compared on one intensity scale.
//!
//! ```
//! use diptych::preprocess::{preprocess, Photometric, PreprocessParams, RawFrame};
//!
//! let pixels: Vec<f32> = (0..6 * 4).map(|v| v as f32).collect();
//! let frame = RawFrame {
//!     rows: 6,
//!     cols: 4,
//!     pixels: &pixels,
//!     rescale_slope: 1.0,
//!     rescale_intercept: 0.0,
//!     photometric: Photometric::Monochrome2,
//! };
//! let params = PreprocessParams { input_size: 12, ..PreprocessParams::default() };
//! let out = preprocess(&frame, &params).unwrap();
//! assert_eq!(out.pixels.len(), 12 * 12);
//! assert_eq!((out.placement.content_rows, out.placement.content_cols), (12, 8));
//! assert_eq!(out.placement.offset_col, 2);
//! ```

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How stored pixel values map to brightness (DICOM Photometric Interpretation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Photometric {
    /// The lowest value is displayed white; pre-processing inverts it.
    Monochrome1,
    /// The lowest value is displayed black; used as stored.
    Monochrome2,
}

/// One single-channel frame as stored, before the modality LUT.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    /// Number of rows (image height).
    pub rows: usize,
    /// Number of columns (image width).
    pub cols: usize,
    /// Stored values, row-major, `rows * cols` of them.
    pub pixels: &'a [f32],
    /// DICOM Rescale Slope (1 when absent).
    pub rescale_slope: f32,
    /// DICOM Rescale Intercept (0 when absent).
    pub rescale_intercept: f32,
    /// DICOM Photometric Interpretation.
    pub photometric: Photometric,
}

/// Parameters of the image contract; they travel in the model manifest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessParams {
    /// Side of the square model input, in pixels.
    pub input_size: usize,
    /// Percentile (0–100) of the frame's values that maps to 0.
    pub low_percentile: f32,
    /// Percentile (0–100) of the frame's values that maps to 1.
    pub high_percentile: f32,
}

impl Default for PreprocessParams {
    fn default() -> Self {
        Self {
            input_size: 128,
            low_percentile: 0.5,
            high_percentile: 99.5,
        }
    }
}

impl PreprocessParams {
    /// Checks that the parameters describe a usable contract.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.input_size == 0 {
            return Err(PreprocessError::ZeroInputSize);
        }
        let (low, high) = (self.low_percentile, self.high_percentile);
        if !(low.is_finite() && high.is_finite() && 0.0 <= low && low < high && high <= 100.0) {
            return Err(PreprocessError::BadPercentiles { low, high });
        }
        Ok(())
    }
}

/// Where the frame's content lies inside the square model input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Output pixels per input pixel (the same on both axes, up to rounding).
    pub scale: f32,
    /// First output row holding content (rows above are padding).
    pub offset_row: usize,
    /// First output column holding content (columns to the left are padding).
    pub offset_col: usize,
    /// Number of output rows holding content.
    pub content_rows: usize,
    /// Number of output columns holding content.
    pub content_cols: usize,
}

/// A frame turned into model input.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// Side of the square image.
    pub size: usize,
    /// `size * size` values in [0, 1], row-major; padding is 0.
    pub pixels: Vec<f32>,
    /// Where the frame's content lies inside the square.
    pub placement: Placement,
}

/// Why a frame could not be pre-processed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PreprocessError {
    /// The frame has no rows or no columns.
    #[error("frame has {rows} rows and {cols} columns; both must be at least 1")]
    EmptyGeometry {
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
    },
    /// The pixel buffer does not hold `rows * cols` values.
    #[error(
        "frame of {rows}×{cols} needs {expected} pixels but the buffer holds {actual}; pass the \
         frame's rows and columns as stored, and one value per pixel"
    )]
    PixelCountMismatch {
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
        /// `rows * cols`.
        expected: usize,
        /// Length of the buffer.
        actual: usize,
    },
    /// Rescale slope or intercept is not a finite number, or the slope is zero.
    #[error(
        "rescale slope {slope} / intercept {intercept} is unusable; the slope must be finite and \
         non-zero and the intercept finite (use 1 and 0 when the frame has no modality LUT)"
    )]
    BadRescale {
        /// Slope given.
        slope: f32,
        /// Intercept given.
        intercept: f32,
    },
    /// A stored pixel value is NaN or infinite.
    #[error("pixel {index} is {value}; stored values must be finite numbers")]
    NonFinitePixel {
        /// Row-major index of the first bad pixel.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// `input_size` is zero.
    #[error("input_size is 0; set it to the model's input side (e.g. 128)")]
    ZeroInputSize,
    /// The percentiles are not `0 ≤ low < high ≤ 100`.
    #[error(
        "normalisation percentiles low={low}, high={high} are unusable; they must satisfy \
         0 ≤ low < high ≤ 100 (default 0.5 and 99.5)"
    )]
    BadPercentiles {
        /// Low percentile given.
        low: f32,
        /// High percentile given.
        high: f32,
    },
}

/// The intensity window of a frame: the values (after the modality LUT and MONOCHROME1
/// inversion, which negates) that map to 0 and to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Value mapped to 0 (the low percentile).
    pub low: f32,
    /// Value mapped to 1 (the high percentile).
    pub high: f32,
}

/// Applies the image contract to one frame: modality LUT, MONOCHROME1 inversion, robust
/// normalisation to [0, 1], aspect-preserving resize and centred zero padding.
pub fn preprocess(
    frame: &RawFrame,
    params: &PreprocessParams,
) -> Result<Preprocessed, PreprocessError> {
    check(frame, params)?;
    let values = modality_values(frame);
    let window = window_of(&values, params);
    Ok(finish(values, frame, params, &window))
}

/// The normalisation window that [`preprocess`] uses for `frame`.
pub fn window(frame: &RawFrame, params: &PreprocessParams) -> Result<Window, PreprocessError> {
    check(frame, params)?;
    Ok(window_of(&modality_values(frame), params))
}

/// [`preprocess`] with a given normalisation window instead of the frame's own percentiles:
/// renders a companion frame (a healthy twin, a reconstruction) on the same intensity scale as
/// the frame whose [`window`] it is given. `preprocess_with_window(f, p, &window(f, p)?)` equals
/// `preprocess(f, p)` bit for bit.
pub fn preprocess_with_window(
    frame: &RawFrame,
    params: &PreprocessParams,
    window: &Window,
) -> Result<Preprocessed, PreprocessError> {
    check(frame, params)?;
    Ok(finish(modality_values(frame), frame, params, window))
}

/// Refuses frames and parameters that the contract cannot handle.
fn check(frame: &RawFrame, params: &PreprocessParams) -> Result<(), PreprocessError> {
    params.validate()?;
    let RawFrame { rows, cols, .. } = *frame;
    if rows == 0 || cols == 0 {
        return Err(PreprocessError::EmptyGeometry { rows, cols });
    }
    let expected = rows * cols;
    if frame.pixels.len() != expected {
        return Err(PreprocessError::PixelCountMismatch {
            rows,
            cols,
            expected,
            actual: frame.pixels.len(),
        });
    }
    let (slope, intercept) = (frame.rescale_slope, frame.rescale_intercept);
    if !(slope.is_finite() && intercept.is_finite() && slope != 0.0) {
        return Err(PreprocessError::BadRescale { slope, intercept });
    }
    if let Some((index, &value)) = frame
        .pixels
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
    {
        return Err(PreprocessError::NonFinitePixel { index, value });
    }
    Ok(())
}

/// Normalises `values` with `window`, then resizes and pads them.
fn finish(
    mut values: Vec<f32>,
    frame: &RawFrame,
    params: &PreprocessParams,
    window: &Window,
) -> Preprocessed {
    apply_window(&mut values, window);
    let placement = placement_for(frame.rows, frame.cols, params.input_size);
    let pixels = resize_into(
        &values,
        frame.rows,
        frame.cols,
        &placement,
        params.input_size,
    );
    Preprocessed {
        size: params.input_size,
        pixels,
        placement,
    }
}

/// Places a label map of `rows × cols` into the `size × size` model grid with the same geometry
/// as [`preprocess`] (nearest neighbour; padding is label 0).
///
/// # Panics
/// If `labels.len() != rows * cols` or the placement does not fit into `size`.
pub fn place_labels(
    labels: &[u8],
    rows: usize,
    cols: usize,
    placement: &Placement,
    size: usize,
) -> Vec<u8> {
    assert_eq!(
        labels.len(),
        rows * cols,
        "label map must hold rows * cols values"
    );
    assert!(
        placement.offset_row + placement.content_rows <= size
            && placement.offset_col + placement.content_cols <= size,
        "placement does not fit into {size}×{size}"
    );
    let mut out = vec![0u8; size * size];
    let src_cols: Vec<usize> = (0..placement.content_cols)
        .map(|c| nearest_source(c, cols, placement.content_cols))
        .collect();
    for r in 0..placement.content_rows {
        let sr = nearest_source(r, rows, placement.content_rows);
        let src = &labels[sr * cols..(sr + 1) * cols];
        let dst_start = (placement.offset_row + r) * size + placement.offset_col;
        let dst = &mut out[dst_start..dst_start + placement.content_cols];
        for (d, &sc) in dst.iter_mut().zip(&src_cols) {
            *d = src[sc];
        }
    }
    out
}

/// Computes where a `rows × cols` frame lands inside a `size × size` square.
pub fn placement_for(rows: usize, cols: usize, size: usize) -> Placement {
    let scale = (size as f64 / rows as f64).min(size as f64 / cols as f64);
    let content_rows = ((rows as f64 * scale).round() as usize).clamp(1, size);
    let content_cols = ((cols as f64 * scale).round() as usize).clamp(1, size);
    Placement {
        scale: scale as f32,
        offset_row: (size - content_rows) / 2,
        offset_col: (size - content_cols) / 2,
        content_rows,
        content_cols,
    }
}

/// The source index whose pixel centre is nearest to output index `i` of `out_len`.
fn nearest_source(i: usize, in_len: usize, out_len: usize) -> usize {
    (((i as f64 + 0.5) * in_len as f64 / out_len as f64) as usize).min(in_len - 1)
}

/// Modality LUT and MONOCHROME1 inversion (a negation: normalisation follows, so `-v` and
/// `max + min - v` give the same result).
fn modality_values(frame: &RawFrame) -> Vec<f32> {
    let sign = match frame.photometric {
        Photometric::Monochrome1 => -1.0f32,
        Photometric::Monochrome2 => 1.0,
    };
    let slope = frame.rescale_slope * sign;
    let intercept = frame.rescale_intercept * sign;
    frame
        .pixels
        .iter()
        .map(|&v| v * slope + intercept)
        .collect()
}

/// The low/high percentile values; falls back to min/max when the percentiles coincide.
fn window_of(values: &[f32], params: &PreprocessParams) -> Window {
    let (lo_rank, lo_frac) = rank(values.len(), params.low_percentile);
    let (hi_rank, hi_frac) = rank(values.len(), params.high_percentile);
    let last = values.len() - 1;
    let [lo_a, lo_b, hi_a, hi_b] = order_statistics(
        values,
        [
            lo_rank,
            (lo_rank + 1).min(last),
            hi_rank,
            (hi_rank + 1).min(last),
        ],
    );
    let low = interpolate(lo_a, lo_b, lo_frac);
    let high = interpolate(hi_a, hi_b, hi_frac);
    if high > low {
        return Window { low, high };
    }
    Window {
        low: values.iter().copied().fold(f32::INFINITY, f32::min),
        high: values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    }
}

/// Maps `window.low`/`window.high` to 0/1 and clips; an empty window makes everything 0.
fn apply_window(values: &mut [f32], window: &Window) {
    let span = window.high - window.low;
    if span.is_finite() && span > 0.0 {
        let inv = 1.0 / span;
        for v in values {
            *v = ((*v - window.low) * inv).clamp(0.0, 1.0);
        }
    } else {
        values.fill(0.0);
    }
}

/// The percentile `pct` of `n` values as a rank and a fraction towards the next rank (linear
/// interpolation between order statistics).
fn rank(n: usize, pct: f32) -> (usize, f32) {
    let pos = (pct as f64 / 100.0) * (n - 1) as f64;
    let k = (pos.floor() as usize).min(n - 1);
    (k, (pos - k as f64) as f32)
}

fn interpolate(at_k: f32, next: f32, frac: f32) -> f32 {
    if frac > 0.0 {
        at_k + (next - at_k) * frac
    } else {
        at_k
    }
}

/// Number of histogram bins that narrow down an order statistic before the exact selection.
const BINS: usize = 4096;

/// The exact order statistics of `values` at `ranks` (0 = smallest), in O(n): a histogram over
/// [min, max] finds the bin that holds each rank (bins are monotone in value), and only that
/// bin's values are searched. Equals indexing a sorted copy, bit for bit.
fn order_statistics<const N: usize>(values: &[f32], ranks: [usize; N]) -> [f32; N] {
    const { assert!(N < 255, "bin slots are u8") };
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if max <= min {
        return [min; N];
    }
    let scale = (BINS - 1) as f32 / (max - min);
    if !scale.is_finite() {
        // A span too small for f32 bins: sort (rare, and exact all the same).
        let mut sorted = values.to_vec();
        sorted.sort_unstable_by(f32::total_cmp);
        return ranks.map(|k| sorted[k]);
    }
    // Rounding is monotone, so bins are ordered like the values they hold.
    let bins: Vec<u16> = values
        .iter()
        .map(|&v| (((v - min) * scale) as u32).min(BINS as u32 - 1) as u16)
        .collect();
    let mut counts = vec![0usize; BINS];
    for &b in &bins {
        counts[b as usize] += 1;
    }
    // The bin of each rank, and the number of values below that bin.
    let located = ranks.map(|wanted| {
        let (mut b, mut below) = (0, 0);
        while below + counts[b] <= wanted {
            below += counts[b];
            b += 1;
        }
        (b as u16, below)
    });
    // One pass gathers the members of every bin needed; `slot[b]` is 1 + the index of the rank
    // whose member list collects bin `b` (0: not needed).
    let mut slot = vec![0u8; BINS];
    for (i, &(b, _)) in located.iter().enumerate().rev() {
        slot[b as usize] = i as u8 + 1;
    }
    let mut members: [Vec<f32>; N] = std::array::from_fn(|_| Vec::new());
    for (&v, &b) in values.iter().zip(&bins) {
        let s = slot[b as usize];
        if s != 0 {
            members[s as usize - 1].push(v);
        }
    }
    let mut result = [0f32; N];
    for i in 0..N {
        let (b, below) = located[i];
        let set = &mut members[slot[b as usize] as usize - 1];
        let (_, &mut at, _) = set.select_nth_unstable_by(ranks[i] - below, f32::total_cmp);
        result[i] = at;
    }
    result
}

/// Per-axis resampling weights: for each output index, the source indices and weights.
struct AxisWeights {
    /// `starts[o]..starts[o + 1]` indexes `taps` for output index `o`.
    starts: Vec<usize>,
    /// (source index, weight) pairs.
    taps: Vec<(usize, f32)>,
}

impl AxisWeights {
    /// Area averaging when `out_len < in_len`, bilinear (pixel-centre aligned) otherwise.
    fn new(in_len: usize, out_len: usize) -> Self {
        let mut starts = Vec::with_capacity(out_len + 1);
        let mut taps = Vec::with_capacity(out_len * 3);
        let ratio = in_len as f64 / out_len as f64;
        for o in 0..out_len {
            starts.push(taps.len());
            if out_len < in_len {
                let (a, b) = (o as f64 * ratio, (o + 1) as f64 * ratio);
                let first = a.floor() as usize;
                let last = (b.ceil() as usize).min(in_len);
                for i in first..last {
                    let overlap = (b.min((i + 1) as f64) - a.max(i as f64)).max(0.0);
                    if overlap > 0.0 {
                        taps.push((i, (overlap / ratio) as f32));
                    }
                }
            } else {
                let x = ((o as f64 + 0.5) * ratio - 0.5).clamp(0.0, (in_len - 1) as f64);
                let i0 = x.floor() as usize;
                let i1 = (i0 + 1).min(in_len - 1);
                let t = (x - i0 as f64) as f32;
                if i1 == i0 || t == 0.0 {
                    taps.push((i0, 1.0));
                } else {
                    taps.push((i0, 1.0 - t));
                    taps.push((i1, t));
                }
            }
        }
        starts.push(taps.len());
        Self { starts, taps }
    }

    fn taps(&self, o: usize) -> &[(usize, f32)] {
        &self.taps[self.starts[o]..self.starts[o + 1]]
    }
}

/// Separable resize of `src` (`rows × cols`) into the placement's content area of a zeroed
/// `size × size` square.
fn resize_into(
    src: &[f32],
    rows: usize,
    cols: usize,
    placement: &Placement,
    size: usize,
) -> Vec<f32> {
    let (out_rows, out_cols) = (placement.content_rows, placement.content_cols);
    let horizontal = AxisWeights::new(cols, out_cols);
    let vertical = AxisWeights::new(rows, out_rows);

    // Horizontal pass: rows × out_cols.
    let mut tmp = vec![0f32; rows * out_cols];
    for r in 0..rows {
        let src_row = &src[r * cols..(r + 1) * cols];
        let dst_row = &mut tmp[r * out_cols..(r + 1) * out_cols];
        for (c, d) in dst_row.iter_mut().enumerate() {
            *d = horizontal
                .taps(c)
                .iter()
                .map(|&(i, w)| src_row[i] * w)
                .sum();
        }
    }

    // Vertical pass into the padded square.
    let mut out = vec![0f32; size * size];
    for r in 0..out_rows {
        let start = (placement.offset_row + r) * size + placement.offset_col;
        let dst = &mut out[start..start + out_cols];
        for &(i, w) in vertical.taps(r) {
            let src_row = &tmp[i * out_cols..(i + 1) * out_cols];
            for (d, &s) in dst.iter_mut().zip(src_row) {
                *d += s * w;
            }
        }
        for d in dst.iter_mut() {
            *d = d.clamp(0.0, 1.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn order_statistics_equal_a_sorted_copy() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for case in 0..200 {
            let n = 1 + case * 7;
            let values: Vec<f32> = (0..n)
                .map(|i| match case % 4 {
                    // MR-like: many exact zeros, a spread of tissue values, rare outliers.
                    0 if i % 2 == 0 => 0.0,
                    1 => (rng.random::<f32>() * 5.0).floor() - 2.0,
                    2 => rng.random::<f32>() * 1e-30,
                    _ => rng.random::<f32>() * 4000.0 - if i % 97 == 0 { 1e6 } else { 0.0 },
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_by(f32::total_cmp);
            let ranks = [0, n / 200, n / 2, n - 1 - n / 200, n - 1];
            let got = order_statistics(&values, ranks);
            for (k, v) in ranks.iter().zip(got) {
                assert_eq!(v.to_bits(), sorted[*k].to_bits(), "case {case} rank {k}");
            }
        }
    }

    #[test]
    fn resampling_weights_sum_to_one() {
        for (input, output) in [(192, 128), (160, 107), (7, 3), (2, 9), (5, 5), (1, 4)] {
            let w = AxisWeights::new(input, output);
            for o in 0..output {
                let sum: f32 = w.taps(o).iter().map(|t| t.1).sum();
                assert!((sum - 1.0).abs() < 1e-5, "{input}→{output} at {o}: {sum}");
                assert!(w.taps(o).iter().all(|&(i, _)| i < input));
            }
        }
    }
}
