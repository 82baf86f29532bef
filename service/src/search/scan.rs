//! The fast exact search: a parallel scan over the compact codes that skips what cannot win.
//!
//! The records are split into one contiguous range per thread; each thread keeps its own
//! bounded top-k (of records, or of groups by best slice) and the results are merged. A record
//! is skipped, with the answer unchanged, when
//!
//! 1. the filter or the deletions leave it out (whole 64-record words at a time);
//! 2. its [`SearchIndex`] lower bound already reaches the k-th best distance;
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
use super::{
    Corpus, DistanceTables, Hit, QueryTables, Ranking, SearchError, SearchIndex, SearchRequest,
};
use crate::record::RecordId;

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
        for w in from..to {
            let mut bits = corpus.eligible_word(w);
            if bits == 0 {
                continue;
            }
            let shared = f64::from_bits(self.shared.load(Ordering::Relaxed));
            let beyond = |x: f64, own: f64| x >= own || x > shared;
            while bits != 0 {
                let id = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if prunes && id < summaries {
                    let (index, bounds) =
                        (self.index.expect("summaries"), self.bounds.expect("bounds"));
                    let s = index.summary(id).expect("id < summaries");
                    let lower_normal = if r.uses_normal { bounds.normal(s) } else { 0.0 };
                    if beyond(r.combine(lower_normal, 0.0), own) {
                        continue;
                    }
                    if r.uses_abnormal && beyond(r.combine(lower_normal, bounds.abnormal(s)), own) {
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
        collector
    }
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
