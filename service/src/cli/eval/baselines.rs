//! The baselines scored beside the codes: random retrieval (the negative control), brute-force
//! L2 over vectors (the pre-processed pixels, or the encoder's continuous outputs z_n and z_a
//! before quantisation), and the ONNX Runtime session that fetches those continuous outputs.

use std::cmp::Ordering;

use anyhow::Context;
use diptych::bundle::names::{ABNORMAL_LATENT, IMAGE, NORMAL_LATENT};
use diptych_service::bundle::Bundle;
use diptych_service::config::ExecutionProvider;
use diptych_service::encoder::runtime::{environment, locate_library, open_session};
use ort::session::Session;
use ort::value::Tensor;

/// Vectors of one dimension, row after row.
#[derive(Debug, Clone, Default)]
pub struct Vectors {
    /// Values per vector.
    pub dim: usize,
    /// All vectors, `len() = rows · dim`.
    pub values: Vec<f32>,
}

impl Vectors {
    /// An empty set of vectors of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            values: Vec::new(),
        }
    }

    /// Vectors held.
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Vector `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Appends a vector (its length must be `dim`).
    pub fn push(&mut self, v: &[f32]) {
        assert_eq!(v.len(), self.dim, "vector of the wrong dimension");
        self.values.extend_from_slice(v);
    }
}

/// Squared L2 distance of two vectors, in eight f32 lanes (the order is fixed, so the value
/// does not depend on the thread that computes it).
pub fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += (x - y) * (x - y);
    }
    lanes.iter().sum::<f32>() + tail
}

/// The Q×R matrix of squared L2 distances between every query and every reference, computed
/// on `threads` threads; queries are taken in blocks so each reference is read from memory
/// once per block. `progress` is called with the queries done.
pub fn distance_matrix(
    queries: &Vectors,
    references: &Vectors,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<f32> {
    assert_eq!(
        queries.dim, references.dim,
        "vectors of different dimensions"
    );
    const BLOCK: usize = 16;
    let (nq, nr) = (queries.rows(), references.rows());
    let mut out = vec![0f32; nq * nr];
    let blocks: Vec<(usize, &mut [f32])> = out
        .chunks_mut(BLOCK * nr.max(1))
        .enumerate()
        .map(|(b, chunk)| (b * BLOCK, chunk))
        .collect();
    let threads = threads.max(1);
    let mut per_thread: Vec<Vec<(usize, &mut [f32])>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, block) in blocks.into_iter().enumerate() {
        per_thread[i % threads].push(block);
    }
    std::thread::scope(|s| {
        for work in per_thread {
            s.spawn(move || {
                for (first, chunk) in work {
                    let count = chunk.len() / nr.max(1);
                    for r in 0..nr {
                        let reference = references.row(r);
                        for q in 0..count {
                            chunk[q * nr + r] = squared_l2(queries.row(first + q), reference);
                        }
                    }
                    progress(count);
                }
            });
        }
    });
    out
}

/// The `k` smallest entries of `distances`, nearest first, ties by index (as the code search
/// orders ties by record id).
pub fn top_k(distances: &[f32], k: usize) -> Vec<usize> {
    first_k_by(distances, k, f32::total_cmp)
}

/// The indices of the `k` first entries of `values` in the order `order`, first first; ties go
/// to the lower index. Selects before it sorts, so a long row costs O(n + k log k).
pub fn first_k_by<T>(values: &[T], k: usize, order: impl Fn(&T, &T) -> Ordering) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..values.len()).collect();
    let cmp = |a: &usize, b: &usize| order(&values[*a], &values[*b]).then(a.cmp(b));
    let k = k.min(indices.len());
    if k == 0 {
        return Vec::new();
    }
    indices.select_nth_unstable_by(k - 1, cmp);
    indices.truncate(k);
    indices.sort_by(cmp);
    indices
}

/// Whether an item at distance `twin`, appended after the references (so it loses ties), would
/// rank among the first `k` of a row whose distances are `row`.
pub fn appended_in_top(row: &[f32], twin: f32, k: usize) -> bool {
    row.iter().filter(|&&d| d <= twin).count() < k
}

/// A small deterministic generator (SplitMix64) for the random baseline.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// `k` distinct integers of `0..n` in random order (all of them when k ≥ n).
    pub fn distinct(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut picked: Vec<usize> = Vec::with_capacity(k.min(n));
        while picked.len() < k.min(n) {
            let v = self.below(n);
            if !picked.contains(&v) {
                picked.push(v);
            }
        }
        picked
    }
}

/// The encoder graph opened a second time to read its continuous outputs z_n and z_a, when the
/// bundle's graph declares them ([`NORMAL_LATENT`], [`ABNORMAL_LATENT`]).
pub struct LatentEncoder {
    session: Session,
    size: usize,
}

impl std::fmt::Debug for LatentEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatentEncoder")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// z_n and z_a of one slice, each D·h·w values (channel-major, as the graph gives them).
#[derive(Debug, Clone, PartialEq)]
pub struct Latents {
    /// z_n, flattened.
    pub normal: Vec<f32>,
    /// z_a, flattened.
    pub abnormal: Vec<f32>,
}

impl LatentEncoder {
    /// Opens a CPU session of `bundle`'s encoder with `threads` threads; `None` when the graph
    /// lacks either continuous output (bundles exported before they existed).
    pub fn open(bundle: &Bundle, threads: usize) -> anyhow::Result<Option<LatentEncoder>> {
        let library = locate_library(None, |name| std::env::var(name).ok())?;
        let env = environment(&library.path)?;
        let (session, _) = open_session(
            env,
            &bundle.manifest.encoder.file,
            &bundle.encoder,
            ExecutionProvider::Cpu,
            threads,
            false,
        )?;
        let declares = |name: &str| session.outputs().iter().any(|o| o.name() == name);
        if !(declares(NORMAL_LATENT) && declares(ABNORMAL_LATENT)) {
            return Ok(None);
        }
        Ok(Some(LatentEncoder {
            session,
            size: bundle.manifest.input_size(),
        }))
    }

    /// Runs a batch of pre-processed slices (S·S values each) and returns their latents.
    pub fn encode(&mut self, batch: &[&[f32]]) -> anyhow::Result<Vec<Latents>> {
        let (n, s) = (batch.len(), self.size);
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut data = Vec::with_capacity(n * s * s);
        for item in batch {
            anyhow::ensure!(
                item.len() == s * s,
                "a slice has {} pixels, not {}",
                item.len(),
                s * s
            );
            data.extend_from_slice(item);
        }
        let image = Tensor::from_array(([n, 1, s, s], data))?;
        let outputs = self.session.run(ort::inputs![IMAGE => image])?;
        let take = |name: &str| -> anyhow::Result<Vec<Vec<f32>>> {
            let (shape, values) = outputs
                .get(name)
                .with_context(|| format!("the encoder gave no {name:?}"))?
                .try_extract_tensor::<f32>()
                .with_context(|| format!("output {name:?}"))?;
            anyhow::ensure!(
                shape.len() == 4 && shape[0] == n as i64,
                "output {name:?} has shape {shape:?}, not N×D×h×w with N = {n}"
            );
            anyhow::ensure!(
                values.iter().all(|v| v.is_finite()),
                "output {name:?} holds a value that is not a finite number"
            );
            let per = values.len() / n;
            Ok(values.chunks_exact(per).map(<[f32]>::to_vec).collect())
        };
        let normal = take(NORMAL_LATENT)?;
        let abnormal = take(ABNORMAL_LATENT)?;
        Ok(normal
            .into_iter()
            .zip(abnormal)
            .map(|(normal, abnormal)| Latents { normal, abnormal })
            .collect())
    }
}

/// The nearest codebook entry of every grid position of a latent laid out D×P (channel-major,
/// as the graph gives it), with a codebook of K×D values: what vector quantisation of the latent
/// gives, so that the latents can be checked against the codes the service stores.
pub fn nearest_codes(latent: &[f32], codebook: &[f32], dim: usize) -> Vec<usize> {
    let positions = latent.len() / dim.max(1);
    let k = codebook.len() / dim.max(1);
    (0..positions)
        .map(|p| {
            let mut best = (f32::INFINITY, 0);
            for c in 0..k {
                let d: f32 = (0..dim)
                    .map(|j| {
                        let e = latent[j * positions + p] - codebook[c * dim + j];
                        e * e
                    })
                    .sum();
                if d < best.0 {
                    best = (d, c);
                }
            }
            best.1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_codes_reads_channel_major_latents() {
        // K = 3 entries of D = 2; P = 2 positions: position 0 is (0.9, 1.1) → entry 1,
        // position 1 is (-2, 0) → entry 2.
        let codebook = [0.0, 0.0, 1.0, 1.0, -2.0, 0.1];
        let latent = [0.9, -2.0, 1.1, 0.0];
        assert_eq!(nearest_codes(&latent, &codebook, 2), vec![1, 2]);
    }

    #[test]
    fn squared_l2_matches_the_definition() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| (i % 3) as f32).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((squared_l2(&a, &b) - want).abs() < 1e-3);
        assert_eq!(squared_l2(&a, &a), 0.0);
    }

    #[test]
    fn distance_matrix_and_top_k() {
        let mut q = Vectors::new(2);
        let mut r = Vectors::new(2);
        for i in 0..20 {
            q.push(&[i as f32, 0.0]);
        }
        for i in 0..50 {
            r.push(&[(i / 2) as f32, 0.0]);
        }
        let m = distance_matrix(&q, &r, 2, &|_| {});
        assert_eq!(m.len(), 20 * 50);
        assert_eq!(m[3 * 50 + 7], 0.0); // query 3 = [3, 0], reference 7 = [3, 0]
        // Nearest of query 3: references 6 and 7 (distance 0, by index), then 4, 5, 8, 9.
        assert_eq!(top_k(&m[3 * 50..4 * 50], 4), vec![6, 7, 4, 5]);
        assert!(appended_in_top(&m[3 * 50..4 * 50], 0.5, 3));
        assert!(!appended_in_top(&m[3 * 50..4 * 50], 0.0, 2)); // ties go to the references
    }

    #[test]
    fn first_k_by_any_order_sends_ties_to_the_lower_index() {
        let scores = [0.5f64, 0.9, 0.1, 0.9, 0.7];
        // highest first: the two 0.9s by index, then 0.7
        assert_eq!(first_k_by(&scores, 3, |a, b| b.total_cmp(a)), vec![1, 3, 4]);
        assert_eq!(first_k_by(&scores, 9, f64::total_cmp), vec![2, 0, 4, 1, 3]);
        assert!(first_k_by(&scores, 0, f64::total_cmp).is_empty());
    }

    #[test]
    fn random_draws_are_distinct_and_repeatable() {
        let a = Rng::new(9).distinct(100, 10);
        assert_eq!(a, Rng::new(9).distinct(100, 10));
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 10);
        assert!(a.iter().all(|&v| v < 100));
        assert_eq!(Rng::new(1).distinct(3, 10).len(), 3);
    }
}
