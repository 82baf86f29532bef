//! [`SearchIndex`]: a compact summary of every record that bounds its distance from below, so
//! most records are ruled out without their 2·P table look-ups.
//!
//! A record's codes name a vector x of P·D values (its codebook vectors, position after
//! position), and its distance to a query is `‖x_q − x_r‖²`. For any matrix V with orthonormal
//! columns, `‖Vᵀ(x_q − x_r)‖² ≤ ‖x_q − x_r‖²`. The index keeps, per codebook, `y_r = Vᵀ x_r` in
//! [`DIMS`] dimensions (V: the leading principal directions of a sample of the records, found by
//! subspace iteration), quantised to one byte per dimension, with the record's quantisation
//! error `ε_r`. Then `d(q, r) ≥ (‖y_q − ŷ_r‖ − ε_r − η)²`, where η bounds the rounding of the
//! f32 arithmetic; a further relative margin covers the rounding of the distance itself. A
//! record whose bound already exceeds the k-th best distance cannot be a hit.
//!
//! Memory: [`SUMMARY_BYTES`] (56) bytes per record, plus two projection tables of
//! P·256·[`DIMS`] floats (6 MiB each for the shipped 16×16 grid).
//!
//! The projection is fitted to the records present at [`SearchIndex::build`]; while there are
//! few, [`SearchIndex::extend`] refits it as the store doubles, up to [`TRAINING_SAMPLE`] records.
//! Any orthonormal V gives a valid bound, so a projection fitted to old records stays exact,
//! only less tight.
//!
//! [`super::persist`] writes the projections and summaries to the data folder so that a restart
//! need not fit them again; each fit has a [`SearchIndex::generation`] so that it knows when the
//! projection on disk is out of date, and summaries changed in place (a deleted record's, see
//! [`SearchIndex::resummarise`]) are remembered until it has written them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use super::summaries::{BLOCK, Block, BlockSide, SummaryBlocks};
use super::tables::ROW;
use super::{DistanceTables, QueryCodes};
use crate::record::RecordId;

/// Dimensions of each codebook's projection.
pub const DIMS: usize = 24;
/// Bytes of a record's summary.
pub const SUMMARY_BYTES: usize = std::mem::size_of::<Summary>();
/// Records the projection is fitted to, at most.
pub const TRAINING_SAMPLE: usize = 2048;
/// Subspace iterations of the fit.
const ITERATIONS: usize = 8;
/// f32 unit round-off.
const U32: f64 = f32::EPSILON as f64 / 2.0;
/// The last generation handed out (see [`SearchIndex::generation`]).
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

/// A generation no other projection in this process has.
fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1
}

/// One record's summary: quantised projections of both codes and their quantisation errors.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Summary {
    pub(super) normal: [u8; DIMS],
    pub(super) abnormal: [u8; DIMS],
    pub(super) normal_error: f32,
    pub(super) abnormal_error: f32,
}

impl Summary {
    /// The summary as stored: both byte vectors, then both errors as f32 little-endian.
    pub(super) fn to_bytes(self) -> [u8; SUMMARY_BYTES] {
        let mut bytes = [0u8; SUMMARY_BYTES];
        bytes[..DIMS].copy_from_slice(&self.normal);
        bytes[DIMS..2 * DIMS].copy_from_slice(&self.abnormal);
        bytes[2 * DIMS..2 * DIMS + 4].copy_from_slice(&self.normal_error.to_le_bytes());
        bytes[2 * DIMS + 4..].copy_from_slice(&self.abnormal_error.to_le_bytes());
        bytes
    }

    /// The summary [`Summary::to_bytes`] wrote.
    pub(super) fn from_bytes(bytes: &[u8; SUMMARY_BYTES]) -> Summary {
        let f32_at = |at: usize| f32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        Summary {
            normal: bytes[..DIMS].try_into().expect("DIMS bytes"),
            abnormal: bytes[DIMS..2 * DIMS].try_into().expect("DIMS bytes"),
            normal_error: f32_at(2 * DIMS),
            abnormal_error: f32_at(2 * DIMS + 4),
        }
    }
}

const _: () = assert!(SUMMARY_BYTES == 2 * DIMS + 8);

/// The projection of one codebook: per position and code, the code vector's projection.
#[derive(Debug, Clone)]
pub(super) struct Projection {
    /// P × 256 × DIMS: `Vᵀ` applied to code k at position p.
    pub(super) table: Vec<f32>,
    /// Quantisation: value = offset + scale · byte.
    pub(super) offset: [f32; DIMS],
    pub(super) scale: [f32; DIMS],
    /// Bound on the rounding error of computed projections (query and record together).
    pub(super) slack: f32,
}

/// A query's projections, in the quantised units of each dimension.
#[derive(Debug, Clone)]
pub(crate) struct QueryBounds {
    normal: Side,
    abnormal: Side,
}

#[derive(Debug, Clone)]
struct Side {
    /// The query's projection in quantised units: a record's squared gap in dimension j is
    /// `weight_j · (z_j − b_j)²` for its byte b_j.
    z: [f32; DIMS],
    /// `scale_j²`.
    weight: [f32; DIMS],
    slack: f32,
}

/// Compact per-record summaries giving exact lower bounds on distances.
#[derive(Debug, Clone)]
pub struct SearchIndex {
    positions: usize,
    normal: Projection,
    abnormal: Projection,
    summaries: SummaryBlocks,
    trained_on: usize,
    /// Tells this fit's projections from every other fit's in the process.
    generation: u64,
    /// Records whose summary [`SearchIndex::resummarise`] changed, not yet taken by
    /// [`SearchIndex::take_changed`].
    changed: Vec<usize>,
}

impl SearchIndex {
    /// Fits the projections to a sample of the records (N×P codes per codebook) and summarises
    /// every record. Cost: about a second to fit, and about 1 µs per record on two cores.
    pub fn build(
        tables: &DistanceTables,
        positions: usize,
        normal: &[u8],
        abnormal: &[u8],
    ) -> SearchIndex {
        assert!(positions > 0, "a grid has at least one position");
        let n = normal.len() / positions;
        let sample: Vec<usize> = if n <= TRAINING_SAMPLE {
            (0..n).collect()
        } else {
            (0..TRAINING_SAMPLE)
                .map(|i| i * n / TRAINING_SAMPLE)
                .collect()
        };
        let fit = |book: &[f32], codes: &[u8], seed: u64| {
            Projection::fit(
                book,
                tables.size(),
                tables.dim(),
                positions,
                codes,
                &sample,
                seed,
            )
        };
        let (np, ap) = thread::scope(|s| {
            let a = s.spawn(|| fit(tables.abnormal_codebook(), abnormal, 2));
            let np = fit(tables.normal_codebook(), normal, 1);
            (np, a.join().expect("fitting the abnormal projection"))
        });
        let mut index = SearchIndex::from_parts(positions, np, ap, Vec::new(), n);
        index.summaries = index
            .summarise(normal, abnormal, 0, n)
            .into_iter()
            .collect();
        index
    }

    /// An index of given projections and summaries (read back by [`super::persist`]), with a
    /// generation of its own.
    pub(super) fn from_parts(
        positions: usize,
        normal: Projection,
        abnormal: Projection,
        summaries: Vec<Summary>,
        trained_on: usize,
    ) -> SearchIndex {
        SearchIndex {
            positions,
            normal,
            abnormal,
            summaries: summaries.into_iter().collect(),
            trained_on,
            generation: next_generation(),
            changed: Vec::new(),
        }
    }

    /// Summarises records appended since the last call (codes of all N records, N×P each);
    /// refits while the index has seen few records and has since doubled.
    pub fn extend(&mut self, tables: &DistanceTables, normal: &[u8], abnormal: &[u8]) {
        let n = normal.len() / self.positions;
        if self.trained_on < TRAINING_SAMPLE && n >= 2 * self.trained_on.max(16) {
            *self = SearchIndex::build(tables, self.positions, normal, abnormal);
            return;
        }
        if n > self.summaries.len() {
            let more = self.summarise(normal, abnormal, self.summaries.len(), n);
            self.summaries.extend(more);
        }
    }

    /// Forgets the summaries of records from `records` on (the store was rolled back to that
    /// many); the projections stay valid for whatever is appended again.
    pub fn truncate(&mut self, records: usize) {
        self.summaries.truncate(records);
        self.changed.retain(|&id| id < records);
    }

    /// Summarises records `ids` again from their current codes (N×P each), e.g. after a delete
    /// zeroed them, so that no summary of a deleted record's codes outlives them; returns how
    /// many summaries changed. Ids not yet summarised are skipped.
    pub fn resummarise(&mut self, ids: &[RecordId], normal: &[u8], abnormal: &[u8]) -> usize {
        let p = self.positions;
        let mut changed = 0;
        for &id in ids {
            let id = id as usize;
            if id >= self.summaries.len() || (id + 1) * p > normal.len().min(abnormal.len()) {
                continue;
            }
            let fresh = self.summary_of(
                &normal[id * p..(id + 1) * p],
                &abnormal[id * p..(id + 1) * p],
            );
            if self.summaries.get(id).map(Summary::to_bytes) != Some(fresh.to_bytes()) {
                self.summaries.set(id, &fresh);
                self.changed.push(id);
                changed += 1;
            }
        }
        changed
    }

    /// Takes the records whose summaries [`SearchIndex::resummarise`] changed since the last
    /// call, in ascending order without repeats.
    pub(super) fn take_changed(&mut self) -> Vec<usize> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// Whether summaries changed in place since the last [`SearchIndex::take_changed`].
    pub(super) fn has_changed(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Identifies this fit of the projections: a refit, or an index read back from disk, gets
    /// a new one (unique within the process).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records the projections were fitted to (a refit follows as the store doubles while
    /// this is below [`TRAINING_SAMPLE`]).
    pub fn trained_on(&self) -> usize {
        self.trained_on
    }

    /// The two projections, normal first.
    pub(super) fn projections(&self) -> (&Projection, &Projection) {
        (&self.normal, &self.abnormal)
    }

    /// Summaries of records `from..to` (within [`SearchIndex::len`]).
    pub(super) fn summaries(&self, from: usize, to: usize) -> Vec<Summary> {
        self.summaries.range(from, to)
    }

    /// The summary of one record's codes (P normal, P abnormal).
    pub(super) fn summary_of(&self, normal: &[u8], abnormal: &[u8]) -> Summary {
        let (normal, normal_error) = self.normal.quantise(normal);
        let (abnormal, abnormal_error) = self.abnormal.quantise(abnormal);
        Summary {
            normal,
            abnormal,
            normal_error,
            abnormal_error,
        }
    }

    /// Records summarised.
    pub fn len(&self) -> usize {
        self.summaries.len()
    }

    /// Whether no record is summarised.
    pub fn is_empty(&self) -> bool {
        self.summaries.len() == 0
    }

    /// Resident bytes: summaries and projection tables.
    pub fn memory_bytes(&self) -> usize {
        self.summaries.memory_bytes() + (self.normal.table.len() + self.abnormal.table.len()) * 4
    }

    /// Grid positions P of the records.
    pub fn positions(&self) -> usize {
        self.positions
    }

    fn summarise(&self, normal: &[u8], abnormal: &[u8], from: usize, to: usize) -> Vec<Summary> {
        let p = self.positions;
        let one = |id: usize| {
            self.summary_of(
                &normal[id * p..(id + 1) * p],
                &abnormal[id * p..(id + 1) * p],
            )
        };
        let count = to - from;
        if count < 4096 {
            return (from..to).map(one).collect();
        }
        let mid = from + count / 2;
        thread::scope(|s| {
            let second = s.spawn(|| (mid..to).map(one).collect::<Vec<_>>());
            let mut first: Vec<Summary> = (from..mid).map(one).collect();
            first.extend(second.join().expect("summarising records"));
            first
        })
    }

    /// The query's projections.
    pub(crate) fn query(&self, query: &QueryCodes) -> QueryBounds {
        QueryBounds {
            normal: self.normal.side(&query.normal),
            abnormal: self.abnormal.side(&query.abnormal),
        }
    }

    /// Record `id`'s summary, or `None` when it is not summarised.
    #[cfg(test)]
    #[inline]
    pub(crate) fn summary(&self, id: usize) -> Option<Summary> {
        self.summaries.get(id)
    }

    /// The block of summaries that holds record `id`, and the record's lane in it.
    #[inline]
    pub(crate) fn lane(&self, id: usize) -> Option<(&Block, usize)> {
        self.summaries.lane(id)
    }

    /// The summaries of the 64 records of bitmap word `w`, when all of them are summarised.
    #[inline]
    pub(crate) fn block(&self, w: usize) -> Option<&Block> {
        self.summaries.full_block(w)
    }
}

impl QueryBounds {
    /// A lower bound on the record's computed `d_n`.
    #[cfg(test)]
    #[inline]
    pub fn normal(&self, s: &Summary) -> f32 {
        self.normal.bound(&s.normal, s.normal_error)
    }

    /// A lower bound on the record's computed `d_a`.
    #[cfg(test)]
    #[inline]
    pub fn abnormal(&self, s: &Summary) -> f32 {
        self.abnormal.bound(&s.abnormal, s.abnormal_error)
    }

    /// A lower bound on the computed `d_n` of the record in `lane` of `block`.
    #[inline]
    pub(crate) fn normal_lane(&self, block: &Block, lane: usize) -> f32 {
        self.normal.bound_lane(&block.normal, lane)
    }

    /// A lower bound on the computed `d_a` of the record in `lane` of `block`.
    #[inline]
    pub(crate) fn abnormal_lane(&self, block: &Block, lane: usize) -> f32 {
        self.abnormal.bound_lane(&block.abnormal, lane)
    }

    /// Lower bounds on the computed `d_n` of a block's 64 records.
    #[inline]
    pub(crate) fn normal_block(&self, block: &Block, out: &mut [f32; BLOCK]) {
        self.normal.bounds(&block.normal, out);
    }

    /// Lower bounds on the computed `d_a` of a block's 64 records.
    #[inline]
    pub(crate) fn abnormal_block(&self, block: &Block, out: &mut [f32; BLOCK]) {
        self.abnormal.bounds(&block.abnormal, out);
    }
}

/// Lanes of a block one pass of [`Side::bounds`] keeps in registers.
const CHUNK: usize = 16;

impl Side {
    /// The bound of one record: `Σ_j weight_j·(z_j − y_j)²` is the squared distance between
    /// the query's projection and the record's quantised one (each term and the sum rounded
    /// to f32: a relative error below 26 u, inside the 1e-5 margin taken on its root), less
    /// the record's quantisation error and the rounding slack, squared, less a relative 1e-4
    /// for the rounding of the distance it bounds.
    #[cfg(test)]
    #[inline(always)]
    fn bound(&self, y: &[u8; DIMS], error: f32) -> f32 {
        let mut total = 0f32;
        for ((z, w), b) in self.z.iter().zip(&self.weight).zip(y) {
            let e = z - *b as f32;
            total += w * e * e;
        }
        self.finish(total, error)
    }

    /// [`Side::bound`] of the record in `lane` of a block.
    #[inline(always)]
    fn bound_lane(&self, side: &BlockSide, lane: usize) -> f32 {
        let mut total = 0f32;
        for j in 0..DIMS {
            let e = self.z[j] - side.bytes[j][lane] as f32;
            total += self.weight[j] * e * e;
        }
        self.finish(total, side.error[lane])
    }

    #[inline(always)]
    fn finish(&self, total: f32, error: f32) -> f32 {
        let r = total.sqrt() * (1.0 - 1e-5) - error - self.slack;
        if r <= 0.0 { 0.0 } else { r * r * (1.0 - 1e-4) }
    }

    /// [`Side::bound`] of a block's 64 records at once, in the widest vector instructions the
    /// processor has (chosen at run time: the binary itself targets any x86-64). Every
    /// version computes the same values to the bit: Rust never fuses or reorders
    /// floating-point operations, whatever the instruction set.
    #[inline]
    fn bounds(&self, side: &BlockSide, out: &mut [f32; BLOCK]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the processor has AVX-512F, checked just above.
                return unsafe { self.bounds_avx512(side, out) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor has AVX2, checked just above.
                return unsafe { self.bounds_avx2(side, out) };
            }
        }
        self.bounds_lanes(side, out)
    }

    /// [`Side::bounds_lanes`] compiled for AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn bounds_avx512(&self, side: &BlockSide, out: &mut [f32; BLOCK]) {
        self.bounds_lanes(side, out)
    }

    /// [`Side::bounds_lanes`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn bounds_avx2(&self, side: &BlockSide, out: &mut [f32; BLOCK]) {
        self.bounds_lanes(side, out)
    }

    /// The arithmetic of [`Side::bound`] (in the same order per record) written lane by lane
    /// so that the compiler turns it into vector instructions: one row of 64 bytes per
    /// dimension, no table look-ups.
    #[inline(always)]
    fn bounds_lanes(&self, side: &BlockSide, out: &mut [f32; BLOCK]) {
        for c in 0..BLOCK / CHUNK {
            let lanes = c * CHUNK..(c + 1) * CHUNK;
            let mut total = [0f32; CHUNK];
            for j in 0..DIMS {
                let (z, w) = (self.z[j], self.weight[j]);
                let row: &[u8; CHUNK] = side.bytes[j][lanes.clone()].try_into().expect("a chunk");
                for l in 0..CHUNK {
                    let e = z - row[l] as f32;
                    total[l] += w * e * e;
                }
            }
            let errors: &[f32; CHUNK] = side.error[lanes.clone()].try_into().expect("a chunk");
            let out: &mut [f32; CHUNK] = (&mut out[lanes]).try_into().expect("a chunk");
            for l in 0..CHUNK {
                out[l] = self.finish(total[l], errors[l]);
            }
        }
    }
}

impl Projection {
    /// Fits V by subspace iteration on the sample's centred vectors, then quantises.
    fn fit(
        book: &[f32],
        size: usize,
        dim: usize,
        positions: usize,
        codes: &[u8],
        sample: &[usize],
        seed: u64,
    ) -> Projection {
        let pd = positions * dim;
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            // splitmix64
            rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let mut v: Vec<f64> = (0..DIMS * pd).map(|_| next()).collect();
        orthonormalise(&mut v, pd, &mut next);
        let code = |s: usize, p: usize| codes[s * positions + p] as usize;
        let mut a = vec![0f64; positions * ROW * DIMS];
        for iteration in 0..=ITERATIONS {
            // A[p][k] = Vₚᵀ C[k]
            a.iter_mut().for_each(|x| *x = 0.0);
            for p in 0..positions {
                for k in 0..size {
                    let c = &book[k * dim..(k + 1) * dim];
                    let out = &mut a[(p * ROW + k) * DIMS..(p * ROW + k + 1) * DIMS];
                    for (j, o) in out.iter_mut().enumerate() {
                        let col = &v[j * pd + p * dim..j * pd + (p + 1) * dim];
                        *o = c.iter().zip(col).map(|(x, y)| *x as f64 * y).sum();
                    }
                }
            }
            if iteration == ITERATIONS || sample.is_empty() {
                break;
            }
            // Y = X V, centred.
            let mut y = vec![0f64; sample.len() * DIMS];
            for (i, &s) in sample.iter().enumerate() {
                let row = &mut y[i * DIMS..(i + 1) * DIMS];
                for p in 0..positions {
                    let src = &a[(p * ROW + code(s, p)) * DIMS..(p * ROW + code(s, p) + 1) * DIMS];
                    row.iter_mut().zip(src).for_each(|(o, x)| *o += x);
                }
            }
            let mut mean = [0f64; DIMS];
            for row in y.chunks_exact(DIMS) {
                mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
            }
            mean.iter_mut().for_each(|m| *m /= sample.len() as f64);
            for row in y.chunks_exact_mut(DIMS) {
                row.iter_mut().zip(&mean).for_each(|(x, m)| *x -= m);
            }
            // V' = Xᵀ Y, through H[p][k] = Σ_{s: code k at p} Y_s.
            let mut h = vec![0f64; positions * ROW * DIMS];
            for (i, &s) in sample.iter().enumerate() {
                let row = &y[i * DIMS..(i + 1) * DIMS];
                for p in 0..positions {
                    let at = (p * ROW + code(s, p)) * DIMS;
                    h[at..at + DIMS]
                        .iter_mut()
                        .zip(row)
                        .for_each(|(o, x)| *o += x);
                }
            }
            v.iter_mut().for_each(|x| *x = 0.0);
            for p in 0..positions {
                for k in 0..size {
                    let hk = &h[(p * ROW + k) * DIMS..(p * ROW + k + 1) * DIMS];
                    if hk.iter().all(|x| *x == 0.0) {
                        continue;
                    }
                    let c = &book[k * dim..(k + 1) * dim];
                    for (j, hj) in hk.iter().enumerate() {
                        let col = &mut v[j * pd + p * dim..j * pd + (p + 1) * dim];
                        col.iter_mut()
                            .zip(c)
                            .for_each(|(o, x)| *o += *x as f64 * hj);
                    }
                }
            }
            orthonormalise(&mut v, pd, &mut next);
        }
        let table: Vec<f32> = a.iter().map(|x| *x as f32).collect();

        // Rounding slack: each projection component is summed in 4 interleaved f32 chains of
        // P/4 terms from f32 entries; |error_j| ≤ (P/4 + 3)·u·Σ_p max_k |A[p][k][j]| plus the
        // entries' own rounding, for the query and the record alike.
        let mut bound = [0f64; DIMS];
        for p in 0..positions {
            for (j, b) in bound.iter_mut().enumerate() {
                *b += (0..size)
                    .map(|k| a[(p * ROW + k) * DIMS + j].abs())
                    .fold(0.0, f64::max);
            }
        }
        let gamma = (positions as f64 / 4.0 + 4.0) * U32 * 1.01;
        let norm_b = bound.iter().map(|b| b * b).sum::<f64>().sqrt();

        let mut projection = Projection {
            table,
            offset: [0.0; DIMS],
            scale: [1.0; DIMS],
            slack: 0.0,
        };
        // Quantisation range: the sample's projections, widened by a tenth on both sides.
        let mut lo = [f64::INFINITY; DIMS];
        let mut hi = [f64::NEG_INFINITY; DIMS];
        for &s in sample {
            let y = projection.project(&codes[s * positions..(s + 1) * positions]);
            for j in 0..DIMS {
                lo[j] = lo[j].min(y[j] as f64);
                hi[j] = hi[j].max(y[j] as f64);
            }
        }
        for j in 0..DIMS {
            if !lo[j].is_finite() || hi[j] - lo[j] <= 1e-12 {
                let centre = if lo[j].is_finite() { lo[j] } else { 0.0 };
                lo[j] = centre - 1.0;
                hi[j] = centre + 1.0;
            }
            let width = hi[j] - lo[j];
            projection.offset[j] = (lo[j] - 0.1 * width) as f32;
            projection.scale[j] = (1.2 * width / 255.0) as f32;
        }
        let offsets = projection
            .offset
            .iter()
            .map(|o| (*o as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        projection.slack = (4.0 * (gamma + U32) * norm_b + 16.0 * U32 * (norm_b + offsets)) as f32;
        projection
    }

    /// `Vᵀ x` of one record's codes, summed in f32 in 4 interleaved chains.
    #[inline]
    fn project(&self, codes: &[u8]) -> [f32; DIMS] {
        let mut acc = [[0f32; DIMS]; 4];
        for (p, &c) in codes.iter().enumerate() {
            let at = (p * ROW + c as usize) * DIMS;
            let src: &[f32; DIMS] = self.table[at..at + DIMS].try_into().expect("DIMS");
            let dst = &mut acc[p % 4];
            for j in 0..DIMS {
                dst[j] += src[j];
            }
        }
        let mut y = [0f32; DIMS];
        for j in 0..DIMS {
            y[j] = (acc[0][j] + acc[2][j]) + (acc[1][j] + acc[3][j]);
        }
        y
    }

    /// The record's bytes and an upper bound of its quantisation error.
    fn quantise(&self, codes: &[u8]) -> ([u8; DIMS], f32) {
        let y = self.project(codes);
        let mut q = [0u8; DIMS];
        let mut error = 0f64;
        for j in 0..DIMS {
            let b = ((y[j] - self.offset[j]) / self.scale[j])
                .round()
                .clamp(0.0, 255.0);
            q[j] = b as u8;
            let e = self.offset[j] as f64 + self.scale[j] as f64 * b as f64 - y[j] as f64;
            error += e * e;
        }
        let error = (error.sqrt() * (1.0 + 1e-6)) as f32;
        (q, error.next_up())
    }

    fn side(&self, codes: &[u8]) -> Side {
        let y = self.project(codes);
        let mut z = [0f32; DIMS];
        let mut weight = [0f32; DIMS];
        for j in 0..DIMS {
            z[j] = (y[j] - self.offset[j]) / self.scale[j];
            weight[j] = self.scale[j] * self.scale[j];
        }
        Side {
            z,
            weight,
            slack: self.slack,
        }
    }
}

/// Modified Gram–Schmidt (twice) on DIMS columns of length `len`; a column that vanishes is
/// replaced by a random one, or by zeros once `len` columns are taken.
fn orthonormalise(v: &mut [f64], len: usize, random: &mut impl FnMut() -> f64) {
    for _ in 0..2 {
        for j in 0..DIMS {
            let (done, rest) = v.split_at_mut(j * len);
            let col = &mut rest[..len];
            for i in 0..j {
                let other = &done[i * len..(i + 1) * len];
                let dot: f64 = col.iter().zip(other).map(|(a, b)| a * b).sum();
                col.iter_mut().zip(other).for_each(|(a, b)| *a -= dot * b);
            }
            let mut norm = col.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm < 1e-9 {
                col.iter_mut().for_each(|a| *a = random());
                for i in 0..j {
                    let other = &done[i * len..(i + 1) * len];
                    let dot: f64 = col.iter().zip(other).map(|(a, b)| a * b).sum();
                    col.iter_mut().zip(other).for_each(|(a, b)| *a -= dot * b);
                }
                norm = col.iter().map(|a| a * a).sum::<f64>().sqrt();
            }
            if j >= len || norm < 1e-6 {
                // Fewer dimensions than columns: the column stays zero (a zero column keeps
                // the projection a contraction).
                col.iter_mut().for_each(|a| *a = 0.0);
                continue;
            }
            col.iter_mut().for_each(|a| *a /= norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::distance::position_sum;

    #[test]
    fn bounds_never_exceed_the_computed_distance_and_are_tight_on_clustered_codes() {
        let (size, dim, p, n) = (32usize, 6usize, 48usize, 3000usize);
        let mut state = 99u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let book: Vec<f32> = (0..size * dim)
            .map(|_| (next() % 997) as f32 / 97.0)
            .collect();
        let tables = DistanceTables::new(&book, &book, size, dim).unwrap();
        let centres: Vec<Vec<u8>> = (0..8)
            .map(|_| (0..p).map(|_| (next() % size) as u8).collect())
            .collect();
        let mut codes = Vec::with_capacity(n * p);
        for _ in 0..n {
            let mut r = centres[next() % centres.len()].clone();
            for _ in 0..next() % 5 {
                r[next() % p] = (next() % size) as u8;
            }
            codes.extend_from_slice(&r);
        }
        let index = SearchIndex::build(&tables, p, &codes, &codes);
        assert_eq!(index.len(), n);
        let mut ratio = 0.0;
        for q in 0..20 {
            let query = QueryCodes {
                normal: codes[q * p..(q + 1) * p].to_vec(),
                abnormal: centres[q % 8].clone(),
            };
            let (qt, bounds) = (tables.query(&query), index.query(&query));
            for id in 0..n {
                let s = &index.summary(id).unwrap();
                let dn = position_sum(&qt.normal, &codes[id * p..(id + 1) * p]);
                let da = position_sum(&qt.abnormal, &codes[id * p..(id + 1) * p]);
                assert!(
                    bounds.normal(s) <= dn,
                    "record {id}: {} > {dn}",
                    bounds.normal(s)
                );
                assert!(bounds.abnormal(s) <= da, "record {id}");
                if dn > 0.0 {
                    ratio += (bounds.normal(s) / dn) as f64;
                }
            }
            // A block's bounds, computed lane by lane, are the records' own to the bit.
            let (mut normal, mut abnormal) = ([0f32; BLOCK], [0f32; BLOCK]);
            let mut w = 0;
            while let Some(block) = index.block(w) {
                bounds.normal_block(block, &mut normal);
                bounds.abnormal_block(block, &mut abnormal);
                for lane in 0..BLOCK {
                    let s = &index.summary(w * BLOCK + lane).unwrap();
                    assert_eq!(normal[lane].to_bits(), bounds.normal(s).to_bits());
                    assert_eq!(abnormal[lane].to_bits(), bounds.abnormal(s).to_bits());
                }
                w += 1;
            }
            assert_eq!(w, n / BLOCK, "every full block was compared");
            // Each instruction set the processor has gives the portable code's bits.
            let block = index.block(0).unwrap();
            let mut portable = [0f32; BLOCK];
            bounds.normal.bounds_lanes(&block.normal, &mut portable);
            #[cfg(target_arch = "x86_64")]
            for (feature, has) in [
                ("avx2", std::arch::is_x86_feature_detected!("avx2")),
                ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ] {
                if !has {
                    eprintln!("{feature}: not on this processor, its bounds not compared");
                    continue;
                }
                let mut wide = [0f32; BLOCK];
                // SAFETY: the processor has the feature, checked above.
                unsafe {
                    match feature {
                        "avx2" => bounds.normal.bounds_avx2(&block.normal, &mut wide),
                        _ => bounds.normal.bounds_avx512(&block.normal, &mut wide),
                    }
                }
                assert_eq!(
                    wide.map(f32::to_bits),
                    portable.map(f32::to_bits),
                    "{feature}"
                );
            }
        }
        // Clustered codes project well: the bound carries most of the distance.
        let mean = ratio / (20 * n) as f64;
        assert!(mean > 0.5, "mean bound/distance {mean}");
    }
}
