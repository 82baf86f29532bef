//! `diptych eval`: retrieval quality of a model bundle through the service's own encoder and
//! exact search, judged by label overlap on synthetic slices or a BraTS folder
//! (docs/METHOD.md §4).
//!
//! Queries and references come from two generators of the chosen synthetic source with
//! different seeds (disjoint subjects: references seed 3, queries seed 4; seed 1 trains the
//! model, seed 2 is training's held-out evaluation), or from disjoint subjects of a BraTS folder
//! ([`diptych::brats::BratsSplit`]; the normal labels are the brain mask, and there are no
//! healthy twins, so the twin check is absent). Every slice is pre-processed by the bundle's image contract
//! and encoded by an in-process [`Engine`](diptych_service::encoder::Engine); the references'
//! codes form a [`Corpus`] searched by [`search_with_threads`] in normal, abnormal and combined
//! mode (normal weight 1, abnormal weight the bundle's balance). The same metrics ([`metrics`]) score the baselines
//! ([`baselines`]): random retrieval, L2 on the pre-processed pixels, and L2 on the encoder's
//! continuous outputs when the graph declares them; label-cell codes ([`label_cells`]), each
//! grid cell's true label set searched like the model's codes, show what perfect codes on the
//! bundle's grid would retrieve; the label oracle ([`oracle`]) ranks by the true normal or
//! abnormal labels, the ceiling of either Dice on this data. Then:
//!
//! - the twin check: each diseased query's healthy twin joins the references for that query
//!   alone; is it in the query's top 5? (Sources without twins leave it out: null in the JSON.)
//! - composites: A's normal code with B's abnormal code (B diseased), combined mode; Dice of
//!   the results to A's normal labels and to B's abnormal labels, and their ratios to the
//!   single-mode searches; and the same for the label oracle ranking by a weighted sum of the
//!   true Dice to A and to B, at several weights, against its own single-mode Dice — how much of
//!   both a perfect ranking can keep at once on this reference set.
//!
//! | module | what it is for |
//! |---|---|
//! | [`dataset`] | the query and reference sets at the model's input size |
//! | [`metrics`] | Dice, lesion precision, level error, ratios |
//! | [`baselines`] | random, brute-force L2, the session reading z_n and z_a |
//! | [`label_cells`] | perfect codes on the model's grid: each cell's true label set |
//! | [`oracle`] | the label oracle: references ranked by true label overlap |
//! | [`by_size`] | abnormal-mode Dice@10 of codes, label cells and oracle by lesion size |
//! | [`figure`] | the `--figure` PNG |
//! | [`report`] | the markdown table and the JSON line |

pub mod baselines;
pub mod by_size;
pub mod dataset;
pub mod figure;
pub mod label_cells;
pub mod metrics;
pub mod null_code;
pub mod oracle;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use diptych::brats::{BratsConfig, BratsFolder, BratsSplit, Contrast};
use diptych::synthetic::{ABNORMAL_LABELS, SliceGenerator, SourceKind};
use diptych_service::bundle::Bundle;
use diptych_service::encoder::{CodePair, Engine, SliceCode};
use diptych_service::record::{RecordKeys, RecordSet};
use diptych_service::search::{
    Corpus, DistanceTables, GroupScore, Grouping, Mode, QueryCodes, SearchIndex, SearchRequest,
    search_with_threads,
};
use indicatif::{ProgressBar, ProgressStyle};

use self::baselines::{
    LatentEncoder, Latents, Rng, Vectors, appended_in_top, distance_matrix, squared_l2, top_k,
};
use self::dataset::{EvalSlice, build_set, composite_pairs, diseased};
use self::metrics::{QueryScores, RowScores, TOP_K, ratio_of_means, score_query};
use self::report::{
    BRATS_NORMAL_LABELS, BratsSummary, CompositeBalance, CompositeOracle, CompositeScores,
    EvalReport, MethodRow,
};
use crate::cli::engine::start_engine;

/// Seed of the random baseline's generator.
const RANDOM_SEED: u64 = 0x00D1_9C7E_5EED;

/// Where the queries and references come from.
#[derive(Debug, Clone)]
pub enum EvalSource {
    /// Two generators of a synthetic source, with the seeds and healthy share of
    /// [`EvalOptions`].
    Synthetic(SourceKind),
    /// Disjoint subjects of a BraTS folder.
    Brats(BratsOptions),
}

/// A BraTS folder as the source of `diptych eval`.
#[derive(Debug, Clone)]
pub struct BratsOptions {
    /// The folder: one subfolder per subject.
    pub dir: PathBuf,
    /// The contrast read from each subject.
    pub contrast: Contrast,
    /// Axial slices per subject, evenly spaced over the brain.
    pub slices_per_subject: usize,
}

/// Options of `diptych eval`.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The model bundle.
    pub model: PathBuf,
    /// Where the slices come from.
    pub source: EvalSource,
    /// Queries.
    pub queries: usize,
    /// References (fewer when a BraTS folder's reference subjects hold fewer slices).
    pub references: usize,
    /// Generator seed of the queries (synthetic sources).
    pub seed_queries: u64,
    /// Generator seed of the references (synthetic sources).
    pub seed_references: u64,
    /// Share of healthy slices in both sets (synthetic sources; a BraTS folder's data decides).
    pub healthy_fraction: f32,
    /// Threads for generation, encoding, search and the brute-force baselines.
    pub threads: usize,
    /// Where to write the figure, if anywhere.
    pub figure: Option<PathBuf>,
}

/// The name of a source as reports print it.
pub fn source_name(source: SourceKind) -> &'static str {
    match source {
        SourceKind::Phantom => "phantom",
        SourceKind::Anatomy => "anatomy",
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} {elapsed}")
        .expect("a valid progress template");
    ProgressBar::new(len as u64)
        .with_style(style)
        .with_message(what.to_string())
}

/// The codes of every reference (records `0..R`) and every twin (records `R..R+T`).
struct CodeCorpus {
    normal: Vec<u8>,
    abnormal: Vec<u8>,
    positions: usize,
}

impl CodeCorpus {
    /// The records `codes` (normal and abnormal codes of `positions` each), in order.
    fn of<'a>(codes: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, positions: usize) -> Self {
        let mut corpus = CodeCorpus {
            normal: Vec::new(),
            abnormal: Vec::new(),
            positions,
        };
        for (normal, abnormal) in codes {
            corpus.normal.extend_from_slice(normal);
            corpus.abnormal.extend_from_slice(abnormal);
        }
        corpus
    }
}

/// Encodes `images` through the service's encoder, 64 in flight at a time; one code each, in
/// order.
pub(crate) async fn encode_slices(
    engine: &Arc<Engine>,
    images: &[&[f32]],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<SliceCode>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for (i, pixels) in chunk.iter().enumerate() {
            let (engine, pixels) = (engine.clone(), pixels.to_vec());
            set.spawn(async move { (i, engine.encode(pixels).await) });
        }
        let mut codes: Vec<Option<SliceCode>> = vec![None; chunk.len()];
        while let Some(done) = set.join_next().await {
            let (i, code) = done.context("an encoding task failed")?;
            codes[i] = Some(code.context("encoding a slice")?);
            bar.inc(1);
        }
        out.extend(codes.into_iter().map(|c| c.expect("every task answered")));
    }
    Ok(out)
}

/// Encodes `images` through the service's encoder: the codes as the index keeps them.
pub(crate) async fn encode_all(
    engine: &Arc<Engine>,
    images: &[&[f32]],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<QueryCodes>> {
    let narrow = |v: &[u32]| -> anyhow::Result<Vec<u8>> {
        v.iter()
            .map(|&c| u8::try_from(c).context("a code does not fit a byte"))
            .collect()
    };
    encode_slices(engine, images, bar)
        .await?
        .iter()
        .map(|code| {
            Ok(QueryCodes {
                normal: narrow(&code.normal)?,
                abnormal: narrow(&code.abnormal)?,
            })
        })
        .collect()
}

/// Runs the latent session over `images` in batches of 32.
fn latents_of(
    encoder: &mut LatentEncoder,
    images: &[&[f32]],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Latents>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(32) {
        out.extend(encoder.encode(chunk)?);
        bar.inc(chunk.len() as u64);
    }
    Ok(out)
}

/// Scores every query against its ranked results (indices into `refs`).
fn score_rows(
    queries: &[EvalSlice],
    refs: &[EvalSlice],
    results: &[Vec<usize>],
    labels: (usize, usize),
) -> (RowScores, Vec<QueryScores>) {
    let mut row = RowScores::default();
    let per_query: Vec<QueryScores> = queries
        .iter()
        .zip(results)
        .map(|(q, hits)| {
            let hits: Vec<&EvalSlice> = hits.iter().map(|&r| &refs[r]).collect();
            score_query(q, q, &hits, labels.0, labels.1)
        })
        .collect();
    for (q, s) in queries.iter().zip(&per_query) {
        row.add(s, q.has_lesion);
    }
    (row, per_query)
}

/// Scores composite results: each pair's results against A's normal and B's abnormal labels,
/// with the ratios to the normal mode's scores of A and the abnormal mode's scores of B.
fn score_composites(
    queries: &[EvalSlice],
    refs: &[EvalSlice],
    pairs: &[(usize, usize)],
    results: &[Vec<usize>],
    normal_mode: &[QueryScores],
    abnormal_mode: &[QueryScores],
    labels: (usize, usize),
) -> CompositeScores {
    let mut normal_pairs = Vec::with_capacity(pairs.len());
    let mut abnormal_pairs = Vec::with_capacity(pairs.len());
    let (mut to_a, mut to_b) = (metrics::Mean::default(), metrics::Mean::default());
    for (&(a, b), hits) in pairs.iter().zip(results) {
        let hits: Vec<&EvalSlice> = hits.iter().map(|&r| &refs[r]).collect();
        let s = score_query(&queries[a], &queries[b], &hits, labels.0, labels.1);
        to_a.push(s.normal_dice[2]);
        to_b.push(s.abnormal_dice[2]);
        normal_pairs.push((s.normal_dice[2], normal_mode[a].normal_dice[2]));
        abnormal_pairs.push((s.abnormal_dice[2], abnormal_mode[b].abnormal_dice[2]));
    }
    CompositeScores {
        pairs: pairs.len(),
        normal_dice_to_a_at10: to_a.get(),
        abnormal_dice_to_b_at10: to_b.get(),
        normal_ratio: ratio_of_means(&normal_pairs),
        abnormal_ratio: ratio_of_means(&abnormal_pairs),
    }
}

/// What one family of methods (codes, latents, pixels, random) produced: per mode the top
/// results of every query and the twin check, and the composite results.
struct Retrieval {
    /// One entry per mode.
    modes: Vec<ModeResults>,
    /// Results per composite pair (empty for methods without a decomposition).
    composites: Vec<Vec<usize>>,
}

/// What one method retrieved in one mode.
struct ModeResults {
    /// `normal`, `abnormal`, `combined`, or `-`.
    name: &'static str,
    /// The top results of every query, nearest first (indices of references).
    results: Vec<Vec<usize>>,
    /// Per diseased query: whether its healthy twin came in the top 5.
    twins: Vec<bool>,
}

impl ModeResults {
    fn new(name: &'static str, (results, twins): (Vec<Vec<usize>>, Vec<bool>)) -> Self {
        Self {
            name,
            results,
            twins,
        }
    }
}

/// The query and reference generators of a run.
struct Sources {
    references: Box<dyn SliceGenerator>,
    queries: Box<dyn SliceGenerator>,
    /// Subjects in the folder and query subjects, for a BraTS folder.
    brats: Option<(usize, usize)>,
}

/// Opens the generators of `options.source`.
fn open_sources(options: &EvalOptions) -> anyhow::Result<Sources> {
    match &options.source {
        &EvalSource::Synthetic(kind) => {
            anyhow::ensure!(
                options.seed_queries != options.seed_references,
                "queries and references need different seeds (disjoint subjects)"
            );
            anyhow::ensure!(
                (0.0..=1.0).contains(&options.healthy_fraction),
                "--healthy-fraction must be in [0, 1]"
            );
            let open = |seed| {
                kind.open(seed, options.healthy_fraction).with_context(|| {
                    format!("opening the {} source (seed {seed})", source_name(kind))
                })
            };
            Ok(Sources {
                references: open(options.seed_references)?,
                queries: open(options.seed_queries)?,
                brats: None,
            })
        }
        EvalSource::Brats(b) => {
            let folder = BratsFolder::open(&b.dir, b.contrast)
                .with_context(|| format!("opening the BraTS folder {}", b.dir.display()))?;
            let subjects = folder.subjects().len();
            let config = BratsConfig {
                slices_per_subject: b.slices_per_subject,
                ..BratsConfig::default()
            };
            let split = BratsSplit::new(Arc::new(folder), options.queries, config)
                .context("splitting the BraTS folder into query and reference subjects")?;
            let query_subjects = split.queries.subjects().len();
            Ok(Sources {
                references: Box::new(split.references),
                queries: Box::new(split.queries),
                brats: Some((subjects, query_subjects)),
            })
        }
    }
}

/// Runs the evaluation.
pub async fn run(options: &EvalOptions) -> anyhow::Result<EvalReport> {
    let started = Instant::now();
    anyhow::ensure!(options.queries >= 2, "--queries must be at least 2");
    anyhow::ensure!(
        options.references >= TOP_K,
        "--references must be at least {TOP_K}"
    );
    let threads = options.threads.max(1);
    let Sources {
        references: ref_gen,
        queries: query_gen,
        brats,
    } = open_sources(options)?;
    // A source of finitely many slices (a BraTS folder) gives what it has.
    let references = match ref_gen.slice_count() {
        Some(available) if available < options.references as u64 => {
            let available = available as usize;
            anyhow::ensure!(
                available >= TOP_K,
                "the {} reference subjects hold only {available} slices, fewer than the {TOP_K} \
                 results each query needs: use a folder with more subjects, or more slices per \
                 subject",
                ref_gen.name()
            );
            eprintln!(
                "note: the {} reference subjects hold {available} slices, fewer than the {} \
                 --references asked for: evaluating with {available}",
                ref_gen.name(),
                options.references
            );
            available
        }
        _ => options.references,
    };
    let normal_names = ref_gen.normal_labels();
    let labels = (normal_names.len(), ABNORMAL_LABELS.len());

    let bundle = Bundle::load(&options.model)
        .with_context(|| format!("loading the model bundle {}", options.model.display()))?;
    let engine = Arc::new(start_engine(&options.model, 32, threads).await?);
    let params = engine.manifest().preprocess;
    let size = params.input_size;

    // The two sets.
    let b = bar(references + options.queries, "generating slices");
    let (refs, queries) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let refs = build_set(&*ref_gen, references, &params, false, threads, &b)?;
        let queries = build_set(&*query_gen, options.queries, &params, true, threads, &b)?;
        Ok((refs, queries))
    })?;
    b.finish_and_clear();
    let sick = diseased(&queries);
    // The diseased queries whose healthy twin the twin check uses: none where the source has no
    // twins (a BraTS folder), and the twin figures stay absent (null).
    let twinned: Vec<usize> = if query_gen.has_twins() {
        sick.clone()
    } else {
        Vec::new()
    };
    let twins: Vec<&[f32]> = twinned
        .iter()
        .map(|&q| {
            queries[q]
                .twin
                .as_deref()
                .expect("diseased queries have twins")
        })
        .collect();
    let (nr, nq) = (refs.len(), queries.len());

    // Codes through the service's encoder.
    let ref_images: Vec<&[f32]> = refs.iter().map(|s| s.pixels.as_slice()).collect();
    let query_images: Vec<&[f32]> = queries.iter().map(|s| s.pixels.as_slice()).collect();
    let b = bar(nr + nq + twins.len(), "encoding (service encoder)");
    let ref_codes = encode_all(&engine, &ref_images, &b).await?;
    let query_codes = encode_all(&engine, &query_images, &b).await?;
    let twin_codes = encode_all(&engine, &twins, &b).await?;
    b.finish_and_clear();
    let positions = engine.geometry().positions();
    let corpus = CodeCorpus::of(
        ref_codes
            .iter()
            .chain(&twin_codes)
            .map(|c| (c.normal.as_slice(), c.abnormal.as_slice())),
        positions,
    );
    let pairs = composite_pairs(nq, &sick);
    let geometry = engine.geometry();
    let null_code = null_code::has_null_code(&engine.codebooks().abnormal)
        .then(|| {
            null_code::null_code_use(
                ref_codes
                    .iter()
                    .zip(&refs)
                    .chain(query_codes.iter().zip(&queries))
                    .map(|(c, s)| (c.abnormal.as_slice(), s.abnormal_labels.as_slice())),
                geometry.size,
                (geometry.grid_rows, geometry.grid_cols),
            )
        })
        .flatten();

    // Exact search over the codes.
    let tables = DistanceTables::of(engine.codebooks())?;
    let search = tokio::task::block_in_place(|| CodeSearch::new(&tables, &corpus, nr, threads));
    let codes = tokio::task::block_in_place(|| {
        code_retrieval(&search, &query_codes, &twinned, &pairs, combined(&engine))
    })?;

    // Perfect codes on the same grid: each cell's true label set (label_cells). Slices carry no
    // labels of their twins, so these rows have no twin check.
    let grid = (geometry.grid_rows, geometry.grid_cols);
    let cells = match label_cells::tables(labels).transpose()? {
        Some(tables) => Some(LabelCells::new(tables, &refs, &queries, size, grid, labels)),
        None => {
            eprintln!(
                "note: a half of the {} source has more than {} label values; the label-cell \
                 rows are absent (null in the JSON)",
                ref_gen.name(),
                label_cells::MAX_LABELS
            );
            None
        }
    };
    let cells_search = cells
        .as_ref()
        .map(|c| CodeSearch::new(&c.tables, &c.corpus, nr, threads));
    let cells_retrieval = match (&cells, &cells_search) {
        (Some(c), Some(search)) => Some(tokio::task::block_in_place(|| {
            code_retrieval(search, &c.queries, &[], &pairs, c.combined())
        })?),
        _ => None,
    };

    // Baselines.
    let random = random_retrieval(nq, nr, twinned.len());
    let b = bar(nq, "pixel L2 (brute force)");
    let pixels = tokio::task::block_in_place(|| {
        let mut qv = Vectors::new(size * size);
        let mut rv = Vectors::new(size * size);
        query_images.iter().for_each(|v| qv.push(v));
        ref_images.iter().for_each(|v| rv.push(v));
        let m = distance_matrix(&qv, &rv, threads, &|n| b.inc(n as u64));
        let twin_d: Vec<f32> = twinned
            .iter()
            .zip(&twins)
            .map(|(&q, t)| squared_l2(qv.row(q), t))
            .collect();
        let (results, twins) = l2_mode(&m, None, nr, &twinned, &twin_d);
        Retrieval {
            modes: vec![ModeResults {
                name: "-",
                results,
                twins,
            }],
            composites: Vec::new(),
        }
    });
    b.finish_and_clear();
    let mut latent_agreement = None;
    let latent = match LatentEncoder::open(&bundle, threads)? {
        None => {
            eprintln!(
                "note: the encoder graph of {} declares no `{}`/`{}` outputs; the continuous-latent \
                 baseline is absent (null in the JSON)",
                options.model.display(),
                diptych::bundle::names::NORMAL_LATENT,
                diptych::bundle::names::ABNORMAL_LATENT
            );
            None
        }
        Some(mut encoder) => {
            let b = bar(nr + nq + twins.len(), "encoding (continuous latents)");
            let (r, q, t) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
                Ok((
                    latents_of(&mut encoder, &ref_images, &b)?,
                    latents_of(&mut encoder, &query_images, &b)?,
                    latents_of(&mut encoder, &twins, &b)?,
                ))
            })?;
            b.finish_and_clear();
            latent_agreement = Some(code_agreement(&engine, &q, &query_codes));
            if let Some(a) = latent_agreement.filter(|&a| a < 0.99) {
                eprintln!(
                    "warning: only {:.1} % of grid positions of the continuous latents quantise to \
                     the codes the service's encoder gives; `{}`/`{}` may not be z_n/z_a",
                    100.0 * a,
                    diptych::bundle::names::NORMAL_LATENT,
                    diptych::bundle::names::ABNORMAL_LATENT
                );
            }
            let b = bar(2 * nq, "latent L2 (brute force)");
            let retrieval = tokio::task::block_in_place(|| {
                latent_retrieval(&r, &q, &t, &twinned, &pairs, threads, &b)
            });
            b.finish_and_clear();
            Some(retrieval)
        }
    };

    // Scores.
    let b = bar(0, "scoring");
    b.set_length(13);
    let mut rows = Vec::new();
    let per_query_of = |method: &'static str,
                        keys: &[&'static str],
                        retrieval: &Retrieval,
                        rows: &mut Vec<MethodRow>| {
        let mut per_mode = Vec::new();
        for (m, key) in retrieval.modes.iter().zip(keys) {
            let (mut row, per_query) = score_rows(&queries, &refs, &m.results, labels);
            for &t in &m.twins {
                row.add_twin(t);
            }
            rows.push(MethodRow {
                method,
                mode: m.name,
                key,
                scores: Some(row.summary(normal_names, &ABNORMAL_LABELS)),
            });
            per_mode.push(per_query);
            b.inc(1);
        }
        per_mode
    };
    let code_scores = per_query_of(
        "codes",
        &["normal_mode", "abnormal_mode", "combined_mode"],
        &codes,
        &mut rows,
    );
    let composite = (!pairs.is_empty()).then(|| {
        score_composites(
            &queries,
            &refs,
            &pairs,
            &codes.composites,
            &code_scores[0],
            &code_scores[1],
            labels,
        )
    });
    // The label-free balance of the two halves (search::balance), over queries × references.
    let ref_sample: Vec<QueryCodes> = ref_codes
        .iter()
        .take(1000)
        .map(|c| QueryCodes {
            normal: c.normal.clone(),
            abnormal: c.abnormal.clone(),
        })
        .collect();
    let mean_balance = tokio::task::block_in_place(|| {
        diptych_service::search::balance::balance(&tables, &query_codes, &ref_sample)
    });
    let composite_balance = composite_sweep(&search, &query_codes, &pairs, mean_balance, |r| {
        score_composites(
            &queries,
            &refs,
            &pairs,
            r,
            &code_scores[0],
            &code_scores[1],
            labels,
        )
    })?;
    let latent_keys = [
        "latent_normal_mode",
        "latent_abnormal_mode",
        "latent_combined_mode",
    ];
    let latent_composite = match &latent {
        Some(retrieval) => {
            let s = per_query_of("latent", &latent_keys, retrieval, &mut rows);
            (!pairs.is_empty()).then(|| {
                score_composites(
                    &queries,
                    &refs,
                    &pairs,
                    &retrieval.composites,
                    &s[0],
                    &s[1],
                    labels,
                )
            })
        }
        None => {
            absent_rows("latent", &latent_keys, &mut rows);
            None
        }
    };
    per_query_of("pixel L2", &["pixel_l2"], &pixels, &mut rows);
    let cells_keys = [
        "label_cells_normal_mode",
        "label_cells_abnormal_mode",
        "label_cells_combined_mode",
    ];
    // The label cells' composite checks, and their per-query abnormal-mode scores.
    let (label_cells, cells_abnormal) = match (&cells, &cells_search, &cells_retrieval) {
        (Some(c), Some(search), Some(retrieval)) => {
            let mut s = per_query_of("label cells", &cells_keys, retrieval, &mut rows);
            let score = |results: &[Vec<usize>]| {
                score_composites(&queries, &refs, &pairs, results, &s[0], &s[1], labels)
            };
            let composites = report::LabelCellsComposites {
                balance: c.balance,
                composite: (!pairs.is_empty()).then(|| score(&retrieval.composites)),
                composite_balance: composite_sweep(search, &c.queries, &pairs, c.balance, score)?,
            };
            (Some(composites), Some(s.swap_remove(1)))
        }
        _ => {
            absent_rows("label cells", &cells_keys, &mut rows);
            (None, None)
        }
    };
    let (normal_matrix, abnormal_matrix) = tokio::task::block_in_place(|| {
        (
            oracle::normal_dice_matrix(&queries, &refs, labels.0),
            oracle::abnormal_dice_matrix(&queries, &refs, labels.1),
        )
    });
    let oracle = Retrieval {
        modes: vec![
            ModeResults::new(
                "normal",
                (oracle::top_by_dice(&normal_matrix, TOP_K), Vec::new()),
            ),
            ModeResults::new(
                "abnormal",
                (oracle::top_by_dice(&abnormal_matrix, TOP_K), Vec::new()),
            ),
        ],
        composites: Vec::new(),
    };
    let oracle_scores = per_query_of(
        "label oracle",
        &["normal_oracle", "abnormal_oracle"],
        &oracle,
        &mut rows,
    );
    let by_lesion_size = by_size::abnormal_dice_by_lesion_size(
        &queries,
        &code_scores[1],
        cells_abnormal.as_deref(),
        &oracle_scores[1],
    );
    let ranked = tokio::task::block_in_place(|| {
        oracle::top_by_composite_dice(
            &normal_matrix,
            &abnormal_matrix,
            &pairs,
            &ORACLE_SHARES,
            TOP_K,
        )
    });
    let composite_oracle: Vec<CompositeOracle> = ORACLE_SHARES
        .iter()
        .zip(&ranked)
        .filter(|_| !pairs.is_empty())
        .map(|(&abnormal_share, results)| CompositeOracle {
            abnormal_share,
            scores: score_composites(
                &queries,
                &refs,
                &pairs,
                results,
                &oracle_scores[0],
                &oracle_scores[1],
                labels,
            ),
        })
        .collect();
    per_query_of("random", &["random"], &random, &mut rows);
    b.finish_and_clear();

    if let Some(path) = &options.figure {
        let b = bar(0, "figure");
        b.tick();
        write_figure(
            &engine,
            &queries,
            &refs,
            &query_codes,
            &ref_codes,
            &codes,
            &search,
            &sick,
            labels,
            size,
            path,
        )
        .await?;
        b.finish_and_clear();
    }

    let diseased_references = refs.iter().filter(|s| s.has_lesion).count();
    let (contrast, brats, healthy_fraction, seeds) = match (&options.source, brats) {
        (EvalSource::Brats(b), Some((subjects, query_subjects))) => (
            Some(b.contrast.name().to_string()),
            Some(BratsSummary {
                folder: b.dir.display().to_string(),
                subjects,
                slices_per_subject: b.slices_per_subject,
                query_subjects,
                reference_subjects: nr.div_ceil(b.slices_per_subject),
                normal_labels: BRATS_NORMAL_LABELS,
            }),
            (nq + nr - sick.len() - diseased_references) as f32 / (nq + nr) as f32,
            (None, None),
        ),
        _ => (
            None,
            None,
            options.healthy_fraction,
            (Some(options.seed_queries), Some(options.seed_references)),
        ),
    };
    Ok(EvalReport {
        model_id: engine.manifest().model_id.clone(),
        source: query_gen.name().to_string(),
        contrast,
        brats,
        queries: nq,
        references: nr,
        diseased_queries: sick.len(),
        diseased_references,
        healthy_fraction,
        seed_queries: seeds.0,
        seed_references: seeds.1,
        latent_baseline: latent.is_some(),
        latent_code_agreement: latent_agreement,
        null_code,
        rows,
        composite,
        latent_composite,
        composite_balance,
        label_cells,
        composite_oracle,
        abnormal_dice_at10_by_lesion_size: by_lesion_size,
        mean_balance,
        combined_balance: engine.manifest().combined_balance,
        seconds: started.elapsed().as_secs_f64(),
        figure: options.figure.as_ref().map(|p| p.display().to_string()),
    })
}

/// Share of grid positions (both halves, the first 32 queries) where the nearest codebook entry
/// of the continuous latent is the code the service's encoder gave. The abnormal half leaves out
/// the positions given code 0: a bundle exported with `null_outside_lesion` gives that "no
/// lesion" code to every cell away from a predicted lesion, whatever its latent (docs/METHOD.md
/// §1), and a latent nearest to code 0 agrees anyway.
fn code_agreement(engine: &Engine, latents: &[Latents], codes: &[QueryCodes]) -> f64 {
    let books = engine.codebooks();
    let (mut same, mut total) = (0usize, 0usize);
    for (l, c) in latents.iter().zip(codes).take(32) {
        for (latent, book, code, null_left_out) in [
            (&l.normal, &books.normal, &c.normal, false),
            (&l.abnormal, &books.abnormal, &c.abnormal, true),
        ] {
            let nearest = baselines::nearest_codes(latent, &book.values, book.dim);
            let compared = nearest.iter().zip(code);
            for (&n, &c) in compared.filter(|&(_, &c)| !(null_left_out && c == 0)) {
                same += usize::from(n == usize::from(c));
                total += 1;
            }
        }
    }
    if total == 0 {
        0.0
    } else {
        same as f64 / total as f64
    }
}

/// The service's exact search over the references' and twins' codes.
struct CodeSearch<'a> {
    tables: &'a DistanceTables,
    corpus: &'a CodeCorpus,
    index: SearchIndex,
    deleted: RecordSet,
    /// Records `0..R`: the references without the twins.
    only_refs: RecordSet,
    threads: usize,
}

/// Record keys of the evaluation corpus: every record its own instance, series and study.
fn record_keys(id: u32) -> RecordKeys {
    RecordKeys {
        instance: u64::from(id),
        series: u64::from(id),
        study: u64::from(id),
        ..RecordKeys::default()
    }
}

/// Shares of the abnormal-label Dice to B in the label oracle's composite ranking
/// (`(1 − s) · normal Dice to A + s · abnormal Dice to B`), from A's anatomy alone to B's lesion
/// alone.
const ORACLE_SHARES: [f64; 7] = [0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0];

/// Abnormal weights (normal weight 1) of the composite-balance sweep: how the composite check
/// moves as the abnormal distance counts more.
const BALANCE_WEIGHTS: [f32; 8] = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Rows for a method that could not run, one per mode (normal, abnormal, combined) with its
/// key: absent in the table, null in the JSON.
fn absent_rows(method: &'static str, keys: &[&'static str; 3], rows: &mut Vec<MethodRow>) {
    for (mode, &key) in ["normal", "abnormal", "combined"].into_iter().zip(keys) {
        rows.push(MethodRow {
            method,
            mode,
            key,
            scores: None,
        });
    }
}

/// The composite check of `search` at each abnormal weight of [`BALANCE_WEIGHTS`] and at
/// `balance` (normal weight 1): A's normal and B's abnormal half of `codes` for every pair,
/// scored by `score`. Empty without pairs.
fn composite_sweep(
    search: &CodeSearch,
    codes: &[QueryCodes],
    pairs: &[(usize, usize)],
    balance: f32,
    score: impl Fn(&[Vec<usize>]) -> CompositeScores,
) -> anyhow::Result<Vec<CompositeBalance>> {
    let mut weights = BALANCE_WEIGHTS.to_vec();
    weights.push(balance);
    weights.sort_by(f32::total_cmp);
    let mut sweep = Vec::new();
    for &abnormal_weight in weights.iter().filter(|_| !pairs.is_empty()) {
        let mode = Mode::Combined {
            normal_weight: 1.0,
            abnormal_weight,
        };
        let results = tokio::task::block_in_place(|| {
            pairs
                .iter()
                .map(|&(a, b)| {
                    let composite = QueryCodes {
                        normal: codes[a].normal.clone(),
                        abnormal: codes[b].abnormal.clone(),
                    };
                    search.top(composite, mode, TOP_K, None)
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        let scores = score(&results);
        sweep.push(CompositeBalance {
            abnormal_weight,
            normal_ratio: scores.normal_ratio,
            abnormal_ratio: scores.abnormal_ratio,
        });
    }
    Ok(sweep)
}

/// The label-cell codes of a run (see [`label_cells`]): their tables, the references as a
/// corpus, the queries, and their own label-free balance.
struct LabelCells {
    tables: DistanceTables,
    corpus: CodeCorpus,
    queries: Vec<QueryCodes>,
    /// `E[d_n] / E[d_a]` of these codes over queries × (up to 1000) references.
    balance: f32,
}

impl LabelCells {
    /// The label-cell codes of `refs` and `queries` on an S×S image's `grid`.
    fn new(
        tables: DistanceTables,
        refs: &[EvalSlice],
        queries: &[EvalSlice],
        size: usize,
        grid: (usize, usize),
        labels: (usize, usize),
    ) -> Self {
        let code = |s: &EvalSlice| label_cells::slice_codes(s, size, grid, labels);
        let ref_codes: Vec<QueryCodes> = refs.iter().map(code).collect();
        let queries: Vec<QueryCodes> = queries.iter().map(code).collect();
        let corpus = CodeCorpus::of(
            ref_codes
                .iter()
                .map(|c| (c.normal.as_slice(), c.abnormal.as_slice())),
            grid.0 * grid.1,
        );
        let sample = &ref_codes[..ref_codes.len().min(1000)];
        let balance = diptych_service::search::balance::balance(&tables, &queries, sample);
        Self {
            tables,
            corpus,
            queries,
            balance,
        }
    }

    /// Combined mode at these codes' own balance (normal weight 1).
    fn combined(&self) -> Mode {
        Mode::Combined {
            normal_weight: 1.0,
            abnormal_weight: self.balance,
        }
    }
}

/// Combined mode as a search that names no weights: normal weight 1, abnormal weight the
/// bundle's balance (`Manifest::combined_balance`).
fn combined(engine: &Engine) -> Mode {
    Mode::Combined {
        normal_weight: 1.0,
        abnormal_weight: engine.manifest().combined_balance,
    }
}

impl<'a> CodeSearch<'a> {
    fn new(
        tables: &'a DistanceTables,
        corpus: &'a CodeCorpus,
        references: usize,
        threads: usize,
    ) -> Self {
        Self {
            tables,
            corpus,
            index: SearchIndex::build(tables, corpus.positions, &corpus.normal, &corpus.abnormal),
            deleted: RecordSet::default(),
            only_refs: (0..references as u32).collect(),
            threads,
        }
    }

    /// The `top_k` records nearest `query` in `mode` among `filter` (default: the references).
    fn top(
        &self,
        query: QueryCodes,
        mode: Mode,
        top_k: usize,
        filter: Option<&RecordSet>,
    ) -> anyhow::Result<Vec<usize>> {
        let corpus = Corpus {
            normal: &self.corpus.normal,
            abnormal: &self.corpus.abnormal,
            positions: self.corpus.positions,
            keys: &record_keys,
            deleted: &self.deleted,
            filter: Some(filter.unwrap_or(&self.only_refs)),
        };
        let request = SearchRequest {
            query,
            mode,
            grouping: Grouping::Instance,
            group_score: GroupScore::BestSlice,
            top_k,
            exclude: None,
        };
        let hits = search_with_threads(
            self.tables,
            Some(&self.index),
            &corpus,
            &request,
            self.threads,
        )?;
        Ok(hits.iter().map(|h| h.record as usize).collect())
    }
}

/// Top-10 of every query in each mode by the service's exact search, the twin check (the twin
/// record of each query of `twinned`, the diseased queries of a source with twins, joins the
/// references' filter for that query alone), and the composite searches.
fn code_retrieval(
    search: &CodeSearch,
    queries: &[QueryCodes],
    twinned: &[usize],
    pairs: &[(usize, usize)],
    combined: Mode,
) -> anyhow::Result<Retrieval> {
    let references = search.only_refs.len();
    let modes = [
        ("normal", Mode::Normal),
        ("abnormal", Mode::Abnormal),
        ("combined", combined),
    ];
    let b = bar(
        modes.len() * (queries.len() + twinned.len()) + pairs.len(),
        "searching codes",
    );
    let mut out = Retrieval {
        modes: Vec::new(),
        composites: Vec::new(),
    };
    for (name, mode) in modes {
        let mut results = Vec::with_capacity(queries.len());
        for q in queries {
            results.push(search.top(q.clone(), mode, TOP_K, None)?);
            b.inc(1);
        }
        let mut twins = Vec::with_capacity(twinned.len());
        for (t, &q) in twinned.iter().enumerate() {
            let twin = (references + t) as u32;
            let mut with_twin = search.only_refs.clone();
            with_twin.insert(twin);
            let hits = search.top(queries[q].clone(), mode, 5, Some(&with_twin))?;
            twins.push(hits.contains(&(twin as usize)));
            b.inc(1);
        }
        out.modes.push(ModeResults {
            name,
            results,
            twins,
        });
    }
    for &(a, bq) in pairs {
        let composite = QueryCodes {
            normal: queries[a].normal.clone(),
            abnormal: queries[bq].abnormal.clone(),
        };
        out.composites
            .push(search.top(composite, combined, TOP_K, None)?);
        b.inc(1);
    }
    b.finish_and_clear();
    Ok(out)
}

/// The negative control: 10 distinct references drawn at random per query; for each of the
/// `twinned` queries, the twin is in the top 5 when a draw of 5 among references and twin picks
/// it.
fn random_retrieval(queries: usize, references: usize, twinned: usize) -> Retrieval {
    let mut rng = Rng::new(RANDOM_SEED);
    let results = (0..queries)
        .map(|_| rng.distinct(references, TOP_K))
        .collect();
    let twins = (0..twinned)
        .map(|_| rng.distinct(references + 1, 5).contains(&references))
        .collect();
    Retrieval {
        modes: vec![ModeResults {
            name: "-",
            results,
            twins,
        }],
        composites: Vec::new(),
    }
}

/// Top-10 of every query from the Q×R distance matrix `normal` (plus `abnormal`, for the
/// concatenation, when given), and the twin check of the `twinned` queries from their twins'
/// distances.
fn l2_mode(
    normal: &[f32],
    abnormal: Option<&[f32]>,
    references: usize,
    twinned: &[usize],
    twin_distances: &[f32],
) -> (Vec<Vec<usize>>, Vec<bool>) {
    let row = |q: usize| -> Vec<f32> {
        let n = &normal[q * references..(q + 1) * references];
        match abnormal {
            Some(a) => n
                .iter()
                .zip(&a[q * references..(q + 1) * references])
                .map(|(x, y)| x + y)
                .collect(),
            None => n.to_vec(),
        }
    };
    let queries = normal.len() / references;
    let results = (0..queries).map(|q| top_k(&row(q), TOP_K)).collect();
    let twins = twinned
        .iter()
        .zip(twin_distances)
        .map(|(&q, &d)| appended_in_top(&row(q), d, 5))
        .collect();
    (results, twins)
}

/// L2 on the continuous latents: z_n (normal), z_a (abnormal), their concatenation (combined,
/// the sum of both squared distances), the twin check, and composites (A's z_n with B's z_a).
fn latent_retrieval(
    refs: &[Latents],
    queries: &[Latents],
    twins: &[Latents],
    twinned: &[usize],
    pairs: &[(usize, usize)],
    threads: usize,
    bar: &ProgressBar,
) -> Retrieval {
    let vectors = |set: &[Latents], normal: bool| {
        let dim = set.first().map_or(0, |l| {
            if normal {
                l.normal.len()
            } else {
                l.abnormal.len()
            }
        });
        let mut v = Vectors::new(dim);
        for l in set {
            v.push(if normal { &l.normal } else { &l.abnormal });
        }
        v
    };
    let nr = refs.len();
    let (qn, qa) = (vectors(queries, true), vectors(queries, false));
    let dn = distance_matrix(&qn, &vectors(refs, true), threads, &|n| bar.inc(n as u64));
    let da = distance_matrix(&qa, &vectors(refs, false), threads, &|n| bar.inc(n as u64));
    let twin = |q: usize, t: &Latents| {
        (
            squared_l2(qn.row(q), &t.normal),
            squared_l2(qa.row(q), &t.abnormal),
        )
    };
    let twin_d: Vec<(f32, f32)> = twinned
        .iter()
        .zip(twins)
        .map(|(&q, t)| twin(q, t))
        .collect();
    let (twin_n, twin_a): (Vec<f32>, Vec<f32>) = twin_d.iter().copied().unzip();
    let twin_c: Vec<f32> = twin_d.iter().map(|(n, a)| n + a).collect();
    let modes = vec![
        ModeResults::new("normal", l2_mode(&dn, None, nr, twinned, &twin_n)),
        ModeResults::new("abnormal", l2_mode(&da, None, nr, twinned, &twin_a)),
        ModeResults::new("combined", l2_mode(&dn, Some(&da), nr, twinned, &twin_c)),
    ];
    let composites = pairs
        .iter()
        .map(|&(a, b)| {
            let row: Vec<f32> = dn[a * nr..(a + 1) * nr]
                .iter()
                .zip(&da[b * nr..(b + 1) * nr])
                .map(|(x, y)| x + y)
                .collect();
            top_k(&row, TOP_K)
        })
        .collect();
    Retrieval { modes, composites }
}

/// Decodes a pair of codes: x̃, predicted labels and x̂.
async fn decode(
    engine: &Engine,
    normal: &[u8],
    abnormal: &[u8],
) -> anyhow::Result<(Vec<f32>, Vec<u8>, Vec<f32>)> {
    let d = engine
        .decode(CodePair {
            normal: normal.iter().map(|&c| u32::from(c)).collect(),
            abnormal: abnormal.iter().map(|&c| u32::from(c)).collect(),
        })
        .await
        .context("decoding codes for the figure")?;
    let g = engine.geometry();
    let labels = diptych_service::render::argmax_labels(&d.segmentation, g.labels, g.pixels());
    Ok((d.normal_appearing, labels, d.reconstruction))
}

/// Writes the figure: the diseased query with the largest lesion and its top 5 by normal,
/// abnormal and combined code, then a composite of a healthy query's anatomy (A, from another
/// subject) with that lesion (B) and its top 5.
#[allow(clippy::too_many_arguments)]
async fn write_figure(
    engine: &Engine,
    queries: &[EvalSlice],
    refs: &[EvalSlice],
    query_codes: &[QueryCodes],
    ref_codes: &[QueryCodes],
    codes: &Retrieval,
    search: &CodeSearch<'_>,
    sick: &[usize],
    labels: (usize, usize),
    size: usize,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let Some(&q) = sick
        .iter()
        .max_by_key(|&&i| (queries[i].lesion_pixels(), usize::MAX - i))
    else {
        anyhow::bail!("no diseased query to show in the figure");
    };
    let a = (0..queries.len())
        .find(|&i| !queries[i].has_lesion && queries[i].subject != queries[q].subject)
        .or_else(|| (0..queries.len()).find(|&i| i != q))
        .context("the figure needs a second query")?;
    let caption = |normal_ref: &EvalSlice, abnormal_ref: &EvalSlice, r: &EvalSlice| {
        let n = metrics::label_dice(&normal_ref.normal_labels, &r.normal_labels, labels.0).mean;
        let ab =
            metrics::label_dice(&abnormal_ref.abnormal_labels, &r.abnormal_labels, labels.1).mean;
        let f = |v: Option<f64>| {
            v.map_or("-".to_string(), |v| {
                format!("{:.2}", v).replacen("0.", ".", 1)
            })
        };
        format!("N{} A{}", f(n), f(ab))
    };
    let tile_of =
        |image: Vec<f32>, decoded: (Vec<f32>, Vec<u8>, Vec<f32>), caption: String| figure::Tile {
            image,
            normal_appearing: decoded.0,
            segmentation: decoded.1,
            caption,
        };
    let mut rows = Vec::new();
    for (m, label) in codes.modes.iter().zip(["NORMAL", "ABNORMAL", "COMBINED"]) {
        let qc = &query_codes[q];
        let mut tiles = vec![tile_of(
            queries[q].pixels.clone(),
            decode(engine, &qc.normal, &qc.abnormal).await?,
            format!("Q{q}"),
        )];
        for &r in m.results[q].iter().take(5) {
            let rc = &ref_codes[r];
            tiles.push(tile_of(
                refs[r].pixels.clone(),
                decode(engine, &rc.normal, &rc.abnormal).await?,
                caption(&queries[q], &queries[q], &refs[r]),
            ));
        }
        rows.push(figure::Row {
            label: label.to_string(),
            sublabel: "CODE".to_string(),
            tiles,
        });
    }
    // The composite: A's normal code with q's abnormal code, searched like the others.
    let composite = QueryCodes {
        normal: query_codes[a].normal.clone(),
        abnormal: query_codes[q].abnormal.clone(),
    };
    let (xt, seg, recon) = decode(engine, &composite.normal, &composite.abnormal).await?;
    let mut tiles = vec![tile_of(
        recon.clone(),
        (xt, seg, recon),
        format!("A{a}+B{q}"),
    )];
    let ranked = search.top(composite.clone(), combined(engine), 5, None)?;
    for r in ranked.into_iter().take(5) {
        let rc = &ref_codes[r];
        tiles.push(tile_of(
            refs[r].pixels.clone(),
            decode(engine, &rc.normal, &rc.abnormal).await?,
            caption(&queries[a], &queries[q], &refs[r]),
        ));
    }
    rows.push(figure::Row {
        label: "COMPOSITE".to_string(),
        sublabel: "A+B".to_string(),
        tiles,
    });
    let image = figure::render(&rows, size);
    image
        .save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("writing the figure {}", path.display()))
}

/// Prints the table, and with `json` one JSON line after it, on stdout.
pub fn print(report: &EvalReport, json: bool) -> anyhow::Result<()> {
    print!("{}", report.markdown());
    if json {
        println!("{}", serde_json::to_string(&report.to_json())?);
    }
    Ok(())
}
