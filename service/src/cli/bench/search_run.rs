//! The measurement behind `diptych bench search` (and the workload `diptych bench ready` reuses):
//! latency of top-k search over replicated encodings, side by side with the naive scan and with
//! FAISS. It lives with the other benchmark code, in the binary: the library's `search` module
//! only searches.
//!
//! Records are seed encodings (the serving model's codes of phantom slices) replicated with
//! small random perturbations (a few positions moved to one of their code's nearest codes) up
//! to the record count; queries are held-out encodings. For each mode (normal, abnormal,
//! combined) and filter (none, a random 10 %), the fast search answers every query, the naive
//! scan answers the first few, and the hits must be identical. FAISS (`bench/faiss_search.py`)
//! reads the same codes from files this module writes:
//!
//! | file | content |
//! |---|---|
//! | `meta.json` | `records`, `positions`, `size` K, `dim` D, `queries`, `top_k` |
//! | `codebooks.f32` | normal then abnormal codebook, K×D little-endian f32 each |
//! | `codes.u8` | per record: P normal codes, then P abnormal codes |
//! | `queries.u8` | per query: P normal codes, then P abnormal codes |
//! | `filter.u32` | ids of the records the 10 % filter keeps, ascending, little-endian |
//!
//! and prints one JSON object: `{"threads": t, "results": [{"mode", "filter", "p50_ms",
//! "p99_ms", "ids": [[...] per query]}]}`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use diptych_service::encoder::Engine;
use diptych_service::record::{RecordKeys, RecordSet};
use diptych_service::search::distance::position_sum;
use diptych_service::search::{
    Corpus, DistanceTables, GroupScore, Grouping, Hit, Mode, QueryCodes, SearchError, SearchIndex,
    SearchRequest, naive_search, search_with_threads,
};

/// What to measure.
#[derive(Debug, Clone)]
pub struct SearchBenchConfig {
    /// Records to build from the seeds.
    pub records: usize,
    /// Queries per mode and filter for the fast search (held-out encodings, cycled).
    pub queries: usize,
    /// Queries per mode and filter for the naive scan (the first ones).
    pub naive_queries: usize,
    /// Hits per query.
    pub top_k: usize,
    /// Threads of the fast search (and of FAISS).
    pub threads: usize,
    /// Seed of the perturbations and of the filter.
    pub seed: u64,
    /// How to run the FAISS baseline, if at all.
    pub faiss: Option<FaissBaseline>,
}

impl Default for SearchBenchConfig {
    fn default() -> Self {
        SearchBenchConfig {
            records: 1_000_000,
            queries: 200,
            naive_queries: 10,
            top_k: 10,
            threads: 2,
            seed: 7,
            faiss: None,
        }
    }
}

/// The FAISS baseline: a Python with `faiss-cpu` and numpy, the script, and a scratch folder
/// for the exchanged files (about 2·P bytes per record).
#[derive(Debug, Clone)]
pub struct FaissBaseline {
    /// The Python interpreter.
    pub python: PathBuf,
    /// `service/bench/faiss_search.py`.
    pub script: PathBuf,
    /// Where the codes are written for it.
    pub workdir: PathBuf,
}

/// One line of results: one mode and filter.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchBenchRow {
    /// Always `search`.
    pub bench: &'static str,
    /// Records searched.
    pub records: usize,
    /// `normal`, `abnormal` or `combined`.
    pub mode: &'static str,
    /// `none` or `10%`.
    pub filter: &'static str,
    /// Median latency of the fast search, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of the fast search, ms.
    pub p99_ms: f64,
    /// Median latency of the naive scan, ms.
    pub naive_p50_ms: f64,
    /// Median latency of FAISS's IndexPQ search (same threads), ms.
    pub faiss_p50_ms: Option<f64>,
    /// 99th percentile latency of FAISS, ms.
    pub faiss_p99_ms: Option<f64>,
    /// FAISS's time per query when all queries are searched in one batch (its threads then
    /// split the queries), ms.
    pub faiss_batch_ms_per_query: Option<f64>,
    /// Naive median over fast median.
    pub speedup_vs_naive: f64,
    /// FAISS median over fast median.
    pub speedup_vs_faiss: Option<f64>,
    /// Whether every query naive answered got identical hits from the fast search.
    pub identical: bool,
    /// Fraction of queries whose FAISS top-k has the same distances as ours (ties may name
    /// other records).
    pub faiss_agreement: Option<f64>,
    /// Threads of the fast search and of FAISS.
    pub threads: usize,
}

/// The whole run: rows, and the cost of the search index.
#[derive(Debug, Clone, Serialize)]
pub struct SearchBenchReport {
    /// One row per mode and filter.
    pub rows: Vec<SearchBenchRow>,
    /// Seconds to build the [`SearchIndex`] over all records.
    pub index_build_s: f64,
    /// Index bytes per record (summaries and projection tables over the record count).
    pub index_bytes_per_record: f64,
    /// Raw code bytes per record (2·P).
    pub code_bytes_per_record: usize,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum SearchBenchError {
    /// No seed or no held-out encoding, or codes of the wrong shape.
    #[error("{0}")]
    Input(String),
    /// A search failed.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// Writing the files for FAISS failed.
    #[error("writing the FAISS input in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The FAISS script failed or printed something else than its JSON.
    #[error(
        "the FAISS baseline failed: {0} (install it with `{{python}} -m pip install faiss-cpu numpy`)"
    )]
    Faiss(String),
}

/// A step of the run, for a progress bar: `(phase, done, total)`.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The `near` nearest other codes of each code of a codebook.
fn near_codes(size: usize, distance: impl Fn(u8, u8) -> f32, near: usize) -> Vec<Vec<u8>> {
    (0..size)
        .map(|i| {
            let mut others: Vec<u8> = (0..size).filter(|&j| j != i).map(|j| j as u8).collect();
            others.sort_by(|&a, &b| distance(i as u8, a).total_cmp(&distance(i as u8, b)));
            others.truncate(near);
            others
        })
        .collect()
}

/// Records: seeds cycled in random order, each copy with 1–4 normal and 0–2 abnormal positions
/// moved to one of their code's 3 nearest codes. Returns (normal, abnormal) codes, N×P each.
pub fn replicate(
    tables: &DistanceTables,
    seeds: &[QueryCodes],
    records: usize,
    seed: u64,
) -> (Vec<u8>, Vec<u8>) {
    let p = seeds.first().map_or(0, |s| s.normal.len());
    let size = tables.size();
    let near_n = near_codes(size, |a, b| tables.normal_distance(a, b), 3);
    let near_a = near_codes(size, |a, b| tables.abnormal_distance(a, b), 3);
    let mut rng = Rng(seed);
    let mut normal = Vec::with_capacity(records * p);
    let mut abnormal = Vec::with_capacity(records * p);
    for _ in 0..records {
        let s = &seeds[rng.below(seeds.len())];
        let (n0, a0) = (normal.len(), abnormal.len());
        normal.extend_from_slice(&s.normal);
        abnormal.extend_from_slice(&s.abnormal);
        for (codes, near, changes) in [
            (&mut normal[n0..], &near_n, 1 + rng.below(4)),
            (&mut abnormal[a0..], &near_a, rng.below(3)),
        ] {
            for _ in 0..changes {
                let at = rng.below(p);
                let choices = &near[codes[at] as usize];
                if !choices.is_empty() {
                    codes[at] = choices[rng.below(choices.len())];
                }
            }
        }
    }
    (normal, abnormal)
}

/// The `q` quantile (0..=1) of ascending values, nearest rank; NaN when there are none.
pub fn percentile(sorted_ms: &[f64], q: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted_ms.len() - 1) as f64 * q).round() as usize;
    sorted_ms[at]
}

fn same_hits(a: &[Hit], b: &[Hit]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.record == y.record
                && x.distance.to_bits() == y.distance.to_bits()
                && x.normal_distance.to_bits() == y.normal_distance.to_bits()
                && x.abnormal_distance.to_bits() == y.abnormal_distance.to_bits()
                && x.group_slices == y.group_slices
        })
}

const MODES: [(&str, Mode); 3] = [
    ("normal", Mode::Normal),
    ("abnormal", Mode::Abnormal),
    (
        "combined",
        Mode::Combined {
            normal_weight: 1.0,
            abnormal_weight: 1.0,
        },
    ),
];

/// Builds the records, measures every mode with and without the 10 % filter, and (when
/// configured) runs FAISS on the same codes.
pub fn run_search_bench(
    tables: &DistanceTables,
    seeds: &[QueryCodes],
    held_out: &[QueryCodes],
    config: &SearchBenchConfig,
    progress: Progress,
) -> Result<SearchBenchReport, SearchBenchError> {
    let p = seeds.first().map_or(0, |s| s.normal.len());
    if seeds.is_empty() || held_out.is_empty() || p == 0 {
        return Err(SearchBenchError::Input(
            "the search benchmark needs seed encodings and held-out query encodings".into(),
        ));
    }
    if let Some(bad) = seeds
        .iter()
        .chain(held_out)
        .find(|s| s.normal.len() != p || s.abnormal.len() != p)
    {
        return Err(SearchBenchError::Input(format!(
            "encodings disagree on the grid: {} and {} positions against {p}",
            bad.normal.len(),
            bad.abnormal.len()
        )));
    }
    let n = config.records;
    progress("replicating seed encodings", 0, n as u64);
    let (normal, abnormal) = replicate(tables, seeds, n, config.seed);
    progress("replicating seed encodings", n as u64, n as u64);

    progress("building the search index", 0, 1);
    let started = Instant::now();
    let index = SearchIndex::build(tables, p, &normal, &abnormal);
    let index_build_s = started.elapsed().as_secs_f64();
    progress("building the search index", 1, 1);

    let keys = |id: u32| RecordKeys {
        study: id as u64 / 200,
        series: id as u64 / 40,
        instance: id as u64,
        ..RecordKeys::default()
    };
    let deleted = RecordSet::default();
    let mut rng = Rng(config.seed ^ 0xF11_7E2);
    let tenth: RecordSet = (0..n as u32).filter(|_| rng.below(10) == 0).collect();
    let queries: Vec<&QueryCodes> = (0..config.queries.max(1))
        .map(|i| &held_out[i % held_out.len()])
        .collect();

    let faiss = match &config.faiss {
        Some(f) => Some(run_faiss(
            f, tables, &normal, &abnormal, &queries, &tenth, config, progress,
        )?),
        None => None,
    };

    let mut rows = Vec::new();
    let steps = (MODES.len() * 2 * (queries.len() + config.naive_queries)) as u64;
    let mut done = 0u64;
    for (mode_name, mode) in MODES {
        for (filter_name, filter) in [("none", None), ("10%", Some(&tenth))] {
            let corpus = Corpus {
                normal: &normal,
                abnormal: &abnormal,
                positions: p,
                keys: &keys,
                deleted: &deleted,
                filter,
            };
            let request = |q: &QueryCodes| SearchRequest {
                query: q.clone(),
                mode,
                grouping: Grouping::Instance,
                group_score: GroupScore::BestSlice,
                top_k: config.top_k,
                exclude: None,
            };
            let mut fast_ms = Vec::with_capacity(queries.len());
            let mut fast_hits = Vec::with_capacity(queries.len());
            for q in &queries {
                let r = request(q);
                let t = Instant::now();
                let hits = search_with_threads(tables, Some(&index), &corpus, &r, config.threads)?;
                fast_ms.push(t.elapsed().as_secs_f64() * 1e3);
                fast_hits.push(hits);
                done += 1;
                progress("searching", done, steps);
            }
            let mut naive_ms = Vec::new();
            let mut identical = true;
            for (q, fast) in queries.iter().zip(&fast_hits).take(config.naive_queries) {
                let r = request(q);
                let t = Instant::now();
                let hits = naive_search(tables, &corpus, &r)?;
                naive_ms.push(t.elapsed().as_secs_f64() * 1e3);
                identical &= same_hits(&hits, fast);
                done += 1;
                progress("searching", done, steps);
            }
            fast_ms.sort_by(f64::total_cmp);
            naive_ms.sort_by(f64::total_cmp);
            let p50 = percentile(&fast_ms, 0.5);
            let naive_p50 = percentile(&naive_ms, 0.5);
            let theirs = faiss.as_ref().and_then(|f| {
                f.results
                    .iter()
                    .find(|r| r.mode == mode_name && r.filter == filter_name)
            });
            let agreement = theirs.map(|t| {
                let query_tables: Vec<_> = queries.iter().map(|q| tables.query(q)).collect();
                let agree =
                    t.ids
                        .iter()
                        .zip(&fast_hits)
                        .zip(&query_tables)
                        .filter(|((ids, ours), qt)| {
                            // Same distances in the same order (ties may name other records).
                            let theirs: Vec<f64> = ids
                                .iter()
                                .filter(|&&id| id >= 0)
                                .map(|&id| {
                                    let at = id as usize * p;
                                    let dn = position_sum(&qt.normal, &normal[at..at + p]);
                                    let da = position_sum(&qt.abnormal, &abnormal[at..at + p]);
                                    match mode {
                                        Mode::Normal => dn as f64,
                                        Mode::Abnormal => da as f64,
                                        Mode::Combined { .. } => dn as f64 + da as f64,
                                    }
                                })
                                .collect();
                            theirs.len() == ours.len()
                                && theirs.iter().zip(ours.iter()).all(|(a, b)| {
                                    (a - b.distance).abs() <= 1e-4 * b.distance.max(1e-3)
                                })
                        })
                        .count();
                agree as f64 / t.ids.len().max(1) as f64
            });
            rows.push(SearchBenchRow {
                bench: "search",
                records: n,
                mode: mode_name,
                filter: filter_name,
                p50_ms: p50,
                p99_ms: percentile(&fast_ms, 0.99),
                naive_p50_ms: naive_p50,
                faiss_p50_ms: theirs.map(|t| t.p50_ms),
                faiss_p99_ms: theirs.map(|t| t.p99_ms),
                faiss_batch_ms_per_query: theirs.map(|t| t.batch_ms_per_query),
                speedup_vs_naive: naive_p50 / p50,
                speedup_vs_faiss: theirs.map(|t| t.p50_ms / p50),
                identical,
                faiss_agreement: agreement,
                threads: config.threads,
            });
        }
    }
    Ok(SearchBenchReport {
        rows,
        index_build_s,
        index_bytes_per_record: index.memory_bytes() as f64 / n.max(1) as f64,
        code_bytes_per_record: 2 * p,
    })
}

/// What the FAISS script prints.
#[derive(Debug, serde::Deserialize)]
struct FaissOutput {
    results: Vec<FaissResult>,
}

#[derive(Debug, serde::Deserialize)]
struct FaissResult {
    mode: String,
    filter: String,
    p50_ms: f64,
    p99_ms: f64,
    batch_ms_per_query: f64,
    ids: Vec<Vec<i64>>,
}

#[allow(clippy::too_many_arguments)]
fn run_faiss(
    faiss: &FaissBaseline,
    tables: &DistanceTables,
    normal: &[u8],
    abnormal: &[u8],
    queries: &[&QueryCodes],
    tenth: &RecordSet,
    config: &SearchBenchConfig,
    progress: Progress,
) -> Result<FaissOutput, SearchBenchError> {
    progress("running FAISS", 0, 1);
    let dir = &faiss.workdir;
    let p = queries[0].normal.len();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SearchBenchError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let write = |name: &str, fill: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut out).and_then(|_| out.flush()).map_err(io(&path))
    };
    let meta = serde_json::json!({
        "records": normal.len() / p, "positions": p, "size": tables.size(), "dim": tables.dim(),
        "queries": queries.len(), "top_k": config.top_k,
    });
    write("meta.json", &|out| {
        out.write_all(meta.to_string().as_bytes())
    })?;
    write("codebooks.f32", &|out| {
        for v in tables
            .normal_codebook()
            .iter()
            .chain(tables.abnormal_codebook())
        {
            out.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    })?;
    write("codes.u8", &|out| {
        for (n, a) in normal.chunks_exact(p).zip(abnormal.chunks_exact(p)) {
            out.write_all(n)?;
            out.write_all(a)?;
        }
        Ok(())
    })?;
    write("queries.u8", &|out| {
        for q in queries {
            out.write_all(&q.normal)?;
            out.write_all(&q.abnormal)?;
        }
        Ok(())
    })?;
    write("filter.u32", &|out| {
        for id in tenth.iter() {
            out.write_all(&id.to_le_bytes())?;
        }
        Ok(())
    })?;
    let output = std::process::Command::new(&faiss.python)
        .arg(&faiss.script)
        .arg("--dir")
        .arg(dir)
        .arg("--threads")
        .arg(config.threads.to_string())
        .output()
        .map_err(|e| {
            SearchBenchError::Faiss(format!("starting {}: {e}", faiss.python.display()))
        })?;
    if !output.status.success() {
        return Err(SearchBenchError::Faiss(format!(
            "{} exited with {}: {}",
            faiss.script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let parsed: FaissOutput = serde_json::from_slice(&output.stdout).map_err(|e| {
        SearchBenchError::Faiss(format!("its output is not the expected JSON: {e}"))
    })?;
    progress("running FAISS", 1, 1);
    Ok(parsed)
}

/// Encodes phantom slices `first..first + count` of generator `seed` with the serving model:
/// seed encodings (records) and held-out encodings (queries) for [`run_search_bench`]. Use
/// different generator seeds for the two, so queries come from subjects no record comes from.
pub async fn phantom_encodings(
    engine: &Engine,
    seed: u64,
    first: u64,
    count: u64,
) -> Result<Vec<QueryCodes>, SearchBenchError> {
    use diptych::phantom::{PhantomConfig, PhantomGenerator};
    let generator = PhantomGenerator::new(seed, PhantomConfig::default());
    let params = engine.manifest().preprocess;
    let mut out = Vec::with_capacity(count as usize);
    let end = first + count;
    for start in (first..end).step_by(64) {
        let tasks: Vec<_> = (start..(start + 64).min(end))
            .map(|i| {
                let pixels =
                    diptych::preprocess::preprocess(&generator.slice(i).raw_frame(), &params)
                        .map(|p| p.pixels)
                        .map_err(|e| {
                            SearchBenchError::Input(format!(
                                "pre-processing phantom slice {i}: {e}"
                            ))
                        });
                async move {
                    engine.encode(pixels?).await.map_err(|e| {
                        SearchBenchError::Input(format!("encoding phantom slice {i}: {e}"))
                    })
                }
            })
            .collect();
        // Submitted together so the batcher fills its batches.
        let codes = join_all(tasks).await;
        for code in codes {
            let code = code?;
            let narrow = |v: &[u32]| -> Result<Vec<u8>, SearchBenchError> {
                v.iter()
                    .map(|&c| {
                        u8::try_from(c).map_err(|_| {
                            SearchBenchError::Input(format!("code {c} does not fit a byte"))
                        })
                    })
                    .collect()
            };
            out.push(QueryCodes {
                normal: narrow(&code.normal)?,
                abnormal: narrow(&code.abnormal)?,
            });
        }
    }
    Ok(out)
}

/// Awaits futures concurrently, in order (no `futures` dependency: a tokio task set would need
/// `'static` futures).
async fn join_all<F: std::future::Future>(tasks: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = tasks.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, d) in pinned.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *d = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter()
        .map(|d| d.expect("every future finished"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_stay_near_their_seed_and_the_bench_finds_identical_answers() {
        let (size, dim, p) = (16usize, 4usize, 32usize);
        let book: Vec<f32> = (0..size * dim).map(|i| ((i * 37) % 11) as f32).collect();
        let tables = DistanceTables::new(&book, &book, size, dim).unwrap();
        let seed = |s: usize| QueryCodes {
            normal: (0..p).map(|i| ((i + s) % size) as u8).collect(),
            abnormal: (0..p).map(|i| ((i * s) % 3) as u8).collect(),
        };
        let seeds: Vec<QueryCodes> = (0..5).map(seed).collect();
        let (normal, _) = replicate(&tables, &seeds, 100, 1);
        assert_eq!(normal.len(), 100 * p);
        // Every replica differs from some seed's normal code in at most 4 positions.
        for r in normal.chunks_exact(p) {
            let closest = seeds
                .iter()
                .map(|s| s.normal.iter().zip(r).filter(|(a, b)| a != b).count())
                .min()
                .unwrap();
            assert!(closest <= 4, "{closest}");
        }
        let config = SearchBenchConfig {
            records: 3000,
            queries: 5,
            naive_queries: 5,
            faiss: None,
            ..SearchBenchConfig::default()
        };
        let held_out: Vec<QueryCodes> = (7..9).map(seed).collect();
        let report =
            run_search_bench(&tables, &seeds, &held_out, &config, &mut |_, _, _| {}).unwrap();
        assert_eq!(report.rows.len(), 6);
        assert!(report.rows.iter().all(|r| r.identical && r.p50_ms > 0.0));
        assert_eq!(report.code_bytes_per_record, 2 * p);
    }

    fn env_usize(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// The search benchmark on the shipped model's encodings of phantom slices (was the bench
    /// target `service/benches/search.rs`). Needs models/phantom-v1 and libonnxruntime 1.31 (as
    /// `make test` provides); at full size:
    ///
    /// ```text
    /// DIPTYCH_BENCH_RECORDS=1000000 DIPTYCH_BENCH_FAISS_PYTHON=~/.cache/diptych/py-venv/bin/python \
    ///   cargo test -p diptych-service --release --bin diptych search_bench -- --nocapture
    /// ```
    ///
    /// Without the variables (as in `make test`) it builds 20 000 records and checks that fast
    /// and naive agree.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn search_bench_on_phantom_encodings() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let engine = crate::cli::engine::start_engine(&root.join("models/phantom-v1"), 32, 2)
            .await
            .unwrap();
        let tables = DistanceTables::of(engine.codebooks()).unwrap();
        let seeds = phantom_encodings(&engine, 11, 0, env_usize("DIPTYCH_BENCH_SEEDS", 640) as u64)
            .await
            .unwrap();
        let held_out = phantom_encodings(&engine, 12, 0, 64).await.unwrap();
        let records = env_usize("DIPTYCH_BENCH_RECORDS", 20_000);
        let faiss = std::env::var("DIPTYCH_BENCH_FAISS_PYTHON")
            .ok()
            .map(|python| FaissBaseline {
                python: python.into(),
                script: root.join("service/bench/faiss_search.py"),
                workdir: std::env::temp_dir().join(format!("diptych-faiss-{records}")),
            });
        let config = SearchBenchConfig {
            records,
            queries: env_usize("DIPTYCH_BENCH_QUERIES", 64),
            naive_queries: env_usize("DIPTYCH_BENCH_NAIVE_QUERIES", 5),
            faiss: faiss.clone(),
            ..SearchBenchConfig::default()
        };
        let mut last = String::new();
        let report = tokio::task::spawn_blocking(move || {
            run_search_bench(
                &tables,
                &seeds,
                &held_out,
                &config,
                &mut |phase, done, total| {
                    if phase != last || done == total {
                        eprintln!("{phase}: {done}/{total}");
                        last = phase.to_string();
                    }
                },
            )
        })
        .await
        .unwrap()
        .unwrap();
        if let Some(f) = faiss.filter(|_| std::env::var_os("DIPTYCH_BENCH_KEEP").is_none()) {
            let _ = std::fs::remove_dir_all(f.workdir);
        }
        println!(
            "index: built in {:.2} s, {:.1} bytes per record (codes: {} bytes)",
            report.index_build_s, report.index_bytes_per_record, report.code_bytes_per_record
        );
        for row in &report.rows {
            println!("{}", serde_json::to_string(row).unwrap());
        }
        assert!(
            report.rows.iter().all(|r| r.identical),
            "fast and naive disagree"
        );
        assert!(
            report
                .rows
                .iter()
                .all(|r| r.faiss_agreement.is_none_or(|a| a >= 0.9))
        );
    }
}
