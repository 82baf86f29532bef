//! The fast exact search: a parallel scan over the compact codes that skips what cannot win.
//!
//! The records are split into one contiguous range per thread; each thread keeps its own
//! bounded top-k (of records, or of groups by best slice) and the results are merged. A record
//! is skipped, with the answer unchanged, when
//!
//! 1. the filter or the deletions leave it out (whole 64-record words at a time);
//! 2. its [`SearchIndex`] lower bound already reaches the k-th best distance (the bounds of a
//!    well-filled word's 64 records are computed together, in vector arithmetic, and the
//!    records they rule out leave the word's bits at once);
//! 3. its partial sum of look-ups reaches it (early abandoning, checked every 32 positions:
//!    terms are ≥ 0, so partial sums only grow).
//!
//! "Reaches" means ≥ against the thread's own k-th best (a thread scans in increasing record
//! id, so a later record that ties loses the tie), and > against the best k-th distance that
//! other threads have published (shared through an atomic, so every thread prunes as hard as
//! the best one).
//!
//! Mean-of-best-n grouping needs every slice of a candidate group, so it computes every
//! distance (in parallel, without pruning).

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use super::distance::position_sum_until;
use super::group::{
    BestSlices, Collect, Ranked, Scored, TopGroups, TopRecords, group_key, to_hits,
};
use super::index::QueryBounds;
use super::summaries::BLOCK;
use super::{
    Corpus, DistanceTables, Hit, QueryTables, Ranking, SearchError, SearchIndex, SearchRequest,
};
use crate::record::RecordId;

/// Eligible records of a 64-record word from which its bounds are computed a block at a time
/// (below it, record by record: a sparse filter leaves few to bound).
const DENSE: u32 = 12;

/// Threads [`search`] uses: the machine's available parallelism.
pub fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Searches exactly (the same hits as [`super::naive_search`], bit for bit) on all cores.
/// `index` must summarise a prefix of the corpus (records beyond it are scanned without
/// bounds); `None` scans without bounds.
pub fn search(
    tables: &DistanceTables,
    index: Option<&SearchIndex>,
    corpus: &Corpus,
    request: &SearchRequest,
) -> Result<Vec<Hit>, SearchError> {
    search_with_threads(tables, index, corpus, request, default_threads())
}

/// [`search`] on a given number of threads (at least 1).
pub fn search_with_threads(
    tables: &DistanceTables,
    index: Option<&SearchIndex>,
    corpus: &Corpus,
    request: &SearchRequest,
    threads: usize,
) -> Result<Vec<Hit>, SearchError> {
    let ranking = super::validate(tables, corpus, request)?;
    let query = tables.query(&request.query);
    let index = index.filter(|i| i.positions() == corpus.positions);
    let bounds = index.map(|i| i.query(&request.query));
    let collect = Collect::of(request.grouping, request.group_score);
    let words = corpus.records().div_ceil(64);
    let threads = threads.clamp(1, words.max(1));
    let shared = AtomicU64::new(f64::INFINITY.to_bits());
    let scan = Scan {
        query: &query,
        index,
        bounds: bounds.as_ref(),
        corpus,
        request,
        ranking,
        collect,
        shared: &shared,
    };
    let parts: Vec<Collector> = thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|t| {
                let scan = &scan;
                s.spawn(move || scan.run(t * words / threads, (t + 1) * words / threads))
            })
            .collect();
        let mut parts = vec![scan.run(0, words / threads)];
        parts.extend(
            handles
                .into_iter()
                .map(|h| h.join().expect("a search thread")),
        );
        parts
    });
    let k = request.top_k;
    let ranked = match collect {
        Collect::Records => {
            let mut all: Vec<Ranked> = parts
                .into_iter()
                .flat_map(|p| match p {
                    Collector::Records(r) => r.into_ranked(),
                    _ => unreachable!("one collector kind per search"),
                })
                .collect();
            all.sort_by_key(|r| r.best);
            all.truncate(k);
            all
        }
        Collect::BestSlice(_) => TopGroups::merge(
            parts
                .into_iter()
                .map(|p| match p {
                    Collector::Groups(g) => g,
                    _ => unreachable!("one collector kind per search"),
                })
                .collect(),
            k,
        ),
        Collect::MeanOfBest(_, n) => BestSlices::merge(
            parts
                .into_iter()
                .map(|p| match p {
                    Collector::Best(b) => b,
                    _ => unreachable!("one collector kind per search"),
                })
                .collect(),
            n,
            k,
        ),
    };
    Ok(to_hits(ranked, &query, corpus, |ranked| {
        count_slices(ranked, &scan, words, threads)
    }))
}

/// One thread's collector.
enum Collector {
    Records(TopRecords),
    Groups(TopGroups),
    Best(BestSlices),
}

/// What every thread of one search shares.
struct Scan<'a> {
    query: &'a QueryTables,
    index: Option<&'a SearchIndex>,
    bounds: Option<&'a QueryBounds>,
    corpus: &'a Corpus<'a>,
    request: &'a SearchRequest,
    ranking: Ranking,
    collect: Collect,
    shared: &'a AtomicU64,
}

impl Scan<'_> {
    /// Scans the records of 64-record words `from..to`.
    fn run(&self, from: usize, to: usize) -> Collector {
        let k = self.request.top_k;
        let mut collector = match self.collect {
            Collect::Records => Collector::Records(TopRecords::new(k)),
            Collect::BestSlice(_) => Collector::Groups(TopGroups::new(k)),
            Collect::MeanOfBest(_, n) => Collector::Best(BestSlices::new(n)),
        };
        let prunes = !matches!(self.collect, Collect::MeanOfBest(..));
        let grouping = self.request.grouping;
        let exclude = self.request.exclude.as_ref();
        let corpus = self.corpus;
        let p = corpus.positions;
        let r = self.ranking;
        let summaries = self.index.map_or(0, |i| i.len());
        let mut own = f64::INFINITY;
        let mut lower = ([0f32; BLOCK], [0f32; BLOCK]);
        let mut pending = [(0usize, 0u64, false); AHEAD];
        let mut next = from;
        while next < to {
            // First the bounds of a run of words, fetching the codes of the records they leave
            // into the cache, so that the memory serves those records together, not one
            // missed line after another.
            let shared = f64::from_bits(self.shared.load(Ordering::Relaxed));
            let mut words = 0;
            for w in next..(next + AHEAD).min(to) {
                let bits = corpus.eligible_word(w);
                if bits == 0 {
                    continue;
                }
                pending[words] = match self.block_bounds(w, bits, own, shared, &mut lower) {
                    Some(kept) => {
                        self.prefetch(w, kept);
                        (w, kept, true)
                    }
                    None => (w, bits, false),
                };
                words += 1;
            }
            next = (next + AHEAD).min(to);
            // Then the records themselves.
            for &(w, mut bits, bounded) in &pending[..words] {
                let shared = f64::from_bits(self.shared.load(Ordering::Relaxed));
                let beyond = |x: f64, own: f64| x >= own || x > shared;
                while bits != 0 {
                    let id = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if prunes && !bounded && id < summaries {
                        let (index, bounds) =
                            (self.index.expect("summaries"), self.bounds.expect("bounds"));
                        let (block, lane) = index.lane(id).expect("id < summaries");
                        let lower_normal = if r.uses_normal {
                            bounds.normal_lane(block, lane)
                        } else {
                            0.0
                        };
                        if beyond(r.combine(lower_normal, 0.0), own) {
                            continue;
                        }
                        if r.uses_abnormal
                            && beyond(
                                r.combine(lower_normal, bounds.abnormal_lane(block, lane)),
                                own,
                            )
                        {
                            continue;
                        }
                    }
                    let at = id * p;
                    let normal = if r.uses_normal {
                        let codes = &corpus.normal[at..at + p];
                        match position_sum_until(&self.query.normal, codes, |partial| {
                            prunes && beyond(r.combine(partial, 0.0), own)
                        }) {
                            Some(d) => d,
                            None => continue,
                        }
                    } else {
                        0.0
                    };
                    let abnormal = if r.uses_abnormal {
                        let codes = &corpus.abnormal[at..at + p];
                        match position_sum_until(&self.query.abnormal, codes, |partial| {
                            prunes && beyond(r.combine(normal, partial), own)
                        }) {
                            Some(d) => d,
                            None => continue,
                        }
                    } else {
                        0.0
                    };
                    let distance = r.combine(normal, abnormal);
                    if prunes && beyond(distance, own) {
                        continue;
                    }
                    let id = id as RecordId;
                    if exclude.is_some_and(|e| e.excludes(&(corpus.keys)(id))) {
                        continue;
                    }
                    let scored = Scored {
                        distance,
                        record: id,
                    };
                    match &mut collector {
                        Collector::Records(c) => {
                            c.offer(scored);
                            own = c.threshold().unwrap_or(f64::INFINITY);
                        }
                        Collector::Groups(c) => {
                            c.offer(scored, group_key(grouping, corpus, id));
                            own = c.threshold().unwrap_or(f64::INFINITY);
                        }
                        Collector::Best(c) => c.offer(scored, group_key(grouping, corpus, id)),
                    }
                }
                if own < shared {
                    self.shared.fetch_min(own.to_bits(), Ordering::Relaxed);
                }
            }
        }
        collector
    }

    /// The records of word `w` (eligible: `bits`) that its block's lower bounds leave in play
    /// against the thresholds `own` and `shared`, or `None` when the word is bounded record by
    /// record instead (few eligible, its block not complete, or no pruning).
    #[inline]
    fn block_bounds(
        &self,
        w: usize,
        bits: u64,
        own: f64,
        shared: f64,
        (normal, abnormal): &mut ([f32; BLOCK], [f32; BLOCK]),
    ) -> Option<u64> {
        if bits.count_ones() < DENSE || matches!(self.collect, Collect::MeanOfBest(..)) {
            return None;
        }
        let (index, bounds) = (self.index?, self.bounds?);
        let block = index.block(w)?;
        let r = self.ranking;
        if r.uses_normal {
            bounds.normal_block(block, normal);
            if r.uses_abnormal {
                // Combined: when d_n's bounds alone rule out every record, the abnormal half
                // of the block is never read.
                let mut any = false;
                for &n in normal.iter() {
                    let x = r.combine(n, 0.0);
                    any |= x < own && x <= shared;
                }
                if !any {
                    return Some(0);
                }
            }
        }
        if r.uses_abnormal {
            bounds.abnormal_block(block, abnormal);
        }
        let mut keep = 0u64;
        for lane in 0..BLOCK {
            let n = if r.uses_normal { normal[lane] } else { 0.0 };
            let a = if r.uses_abnormal { abnormal[lane] } else { 0.0 };
            let x = r.combine(n, a);
            keep |= u64::from(x < own && x <= shared) << lane;
        }
        Some(bits & keep)
    }

    /// Asks the processor to bring the codes of word `w`'s records `bits` into the cache.
    #[inline]
    fn prefetch(&self, w: usize, mut bits: u64) {
        let p = self.corpus.positions;
        while bits != 0 {
            let at = (w * 64 + bits.trailing_zeros() as usize) * p;
            bits &= bits - 1;
            if self.ranking.uses_normal {
                prefetch_lines(&self.corpus.normal[at..at + p]);
            }
            if self.ranking.uses_abnormal {
                prefetch_lines(&self.corpus.abnormal[at..at + p]);
            }
        }
    }
}

/// Words whose bounds are taken, and whose candidates' codes are fetched, ahead of scanning
/// their records.
const AHEAD: usize = 16;

/// Prefetches the start of `bytes`: every other cache line of the first 256 bytes (the
/// processor's adjacent-line prefetcher brings the line beside each, and its streamer what
/// follows; asking for more only fills the line buffers). On x86-64; elsewhere the hardware's
/// own prefetcher has to do.
#[inline(always)]
fn prefetch_lines(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(128).take(2) {
        // SAFETY: a prefetch is a hint; it never faults, and the pointer is into `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Slices of each ranked group that pass the deletions, the filter and the exclusion.
fn count_slices(ranked: &[Ranked], scan: &Scan, words: usize, threads: usize) -> Vec<u32> {
    let slot: std::collections::HashMap<u64, usize> = ranked
        .iter()
        .enumerate()
        .map(|(i, r)| (r.group, i))
        .collect();
    let corpus = scan.corpus;
    let exclude = scan.request.exclude.as_ref();
    let grouping = scan.request.grouping;
    let count = |from: usize, to: usize| {
        let mut counts = vec![0u32; ranked.len()];
        for w in from..to {
            let mut bits = corpus.eligible_word(w);
            while bits != 0 {
                let id = (w * 64 + bits.trailing_zeros() as usize) as RecordId;
                bits &= bits - 1;
                if let Some(&i) = slot.get(&group_key(grouping, corpus, id))
                    && exclude.is_none_or(|e| !e.excludes(&(corpus.keys)(id)))
                {
                    counts[i] += 1;
                }
            }
        }
        counts
    };
    thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|t| {
                let count = &count;
                s.spawn(move || count(t * words / threads, (t + 1) * words / threads))
            })
            .collect();
        let mut total = count(0, words / threads);
        for h in handles {
            let part = h.join().expect("a counting thread");
            total.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        total
    })
}
