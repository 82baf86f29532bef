//! The query and reference sets: slices from two generators with disjoint subjects (two seeds of
//! a synthetic source, or two sets of subjects of a BraTS folder), pre-processed by the bundle's
//! image contract, with both label maps placed at the model's input size (so every label
//! comparison happens on the grid the model sees).

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use diptych::preprocess::{PreprocessParams, place_labels, preprocess};
use diptych::synthetic::SliceGenerator;
use indicatif::ProgressBar;

/// One evaluated slice at the model's input size S×S.
#[derive(Debug, Clone)]
pub struct EvalSlice {
    /// Subject of the slice.
    pub subject: u64,
    /// Axial level in [0, 1].
    pub level: f32,
    /// Whether the generator drew a lesion into the slice.
    pub has_lesion: bool,
    /// The pre-processed image, S·S values in [0, 1].
    pub pixels: Vec<f32>,
    /// Normal labels placed like the image, S·S.
    pub normal_labels: Vec<u8>,
    /// Abnormal labels placed like the image, S·S.
    pub abnormal_labels: Vec<u8>,
    /// The pre-processed healthy twin, for slices with a lesion when twins were asked for and
    /// the source has them.
    pub twin: Option<Vec<f32>>,
}

impl EvalSlice {
    /// Pixels carrying an abnormal label at the model's size.
    pub fn lesion_pixels(&self) -> usize {
        self.abnormal_labels.iter().filter(|&&l| l != 0).count()
    }
}

/// Generates slices `0..count` of `generator`, pre-processes them with `params` on `threads`
/// threads and places their labels; with `twins`, also pre-processes the healthy twin of every
/// slice that has a lesion (with its own window, as if it were a stored image of its own) when
/// the source has twins. A slice the source cannot give (a malformed file) ends the build with
/// its error.
pub fn build_set(
    generator: &dyn SliceGenerator,
    count: usize,
    params: &PreprocessParams,
    twins: bool,
    threads: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<EvalSlice>> {
    let threads = threads.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    const CHUNK: usize = 16;
    let parts: Vec<anyhow::Result<Vec<(usize, EvalSlice)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= count {
                            return Ok(out);
                        }
                        for i in start..(start + CHUNK).min(count) {
                            out.push((i, one_slice(generator, i as u64, params, twins)?));
                            bar.inc(1);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a slice generation thread panicked"))
            .collect()
    });
    let mut all = Vec::with_capacity(count);
    for part in parts {
        all.extend(part?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, s)| s).collect())
}

/// Slice `index` of `generator`, pre-processed and with its labels placed.
fn one_slice(
    generator: &dyn SliceGenerator,
    index: u64,
    params: &PreprocessParams,
    twins: bool,
) -> anyhow::Result<EvalSlice> {
    let slice = generator
        .try_slice(index)
        .map_err(anyhow::Error::from_boxed)
        .with_context(|| format!("reading {} slice {index}", generator.name()))?;
    let input = preprocess(&slice.raw_frame(), params)
        .with_context(|| format!("pre-processing {} slice {index}", generator.name()))?;
    let size = params.input_size;
    let place =
        |labels: &[u8]| place_labels(labels, slice.rows, slice.cols, &input.placement, size);
    let twin = if twins && slice.has_lesion && generator.has_twins() {
        let twin = preprocess(&slice.twin_frame(), params).with_context(|| {
            format!(
                "pre-processing the healthy twin of {} slice {index}",
                generator.name()
            )
        })?;
        Some(twin.pixels)
    } else {
        None
    };
    Ok(EvalSlice {
        subject: slice.subject,
        level: slice.level,
        has_lesion: slice.has_lesion,
        normal_labels: place(&slice.normal_labels),
        abnormal_labels: place(&slice.abnormal_labels),
        pixels: input.pixels,
        twin,
    })
}

/// Indices of the slices with a lesion.
pub fn diseased(slices: &[EvalSlice]) -> Vec<usize> {
    slices
        .iter()
        .enumerate()
        .filter(|(_, s)| s.has_lesion)
        .map(|(i, _)| i)
        .collect()
}

/// The composite pairs (A, B): A runs over every query, B over the diseased queries in turn
/// (B = the (i+1)-th diseased query, cyclically, skipping A itself when they coincide). Empty
/// when fewer than two queries are diseased and A could not differ from B.
pub fn composite_pairs(queries: usize, diseased: &[usize]) -> Vec<(usize, usize)> {
    if diseased.is_empty() || (diseased.len() == 1 && queries <= 1) {
        return Vec::new();
    }
    (0..queries)
        .filter_map(|a| {
            let mut j = (a + 1) % diseased.len();
            if diseased[j] == a {
                j = (j + 1) % diseased.len();
            }
            (diseased[j] != a).then_some((a, diseased[j]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_pairs_never_pair_a_query_with_itself() {
        let diseased = vec![1, 2, 5];
        let pairs = composite_pairs(6, &diseased);
        assert_eq!(pairs.len(), 6);
        for &(a, b) in &pairs {
            assert_ne!(a, b);
            assert!(diseased.contains(&b));
        }
        assert!(composite_pairs(6, &[]).is_empty());
        // One diseased query: it cannot be its own B, every other query pairs with it.
        assert_eq!(composite_pairs(3, &[1]), vec![(0, 1), (2, 1)]);
    }
}
