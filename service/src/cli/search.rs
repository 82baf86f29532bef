//! `diptych search`: one query from a file, an indexed UID, or a composite of two, printed as a
//! table (and, with `--montage`, drawn as a PNG).

use std::path::{Path, PathBuf};

use anyhow::Context;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{
    CodeSource, CompositeQuery, GroupScore, Grouping, ImageInput, Query, SearchMode, SearchRequest,
    SearchResponse, SliceRef, code_source, image_input, query,
};

use super::{MAX_MESSAGE_BYTES, ServerArgs, connect, montage, refused};

pub use super::source::Source;

/// The options of `diptych search`.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Single-source query (both codes from it).
    pub query: Option<Source>,
    /// Composite: normal code from here …
    pub normal_from: Option<Source>,
    /// … abnormal code from here.
    pub abnormal_from: Option<Source>,
    /// normal, abnormal or combined.
    pub mode: SearchMode,
    /// Combined-mode weights.
    pub weights: (f32, f32),
    /// Catalog filter.
    pub filter: String,
    /// Hits wanted.
    pub top_k: u32,
    /// instance, series or study.
    pub grouping: Grouping,
    /// Mean of the best n slices per group instead of the best slice.
    pub mean_of_best: Option<u32>,
    /// Leave the query's own slice (series, study) out.
    pub exclude_query: bool,
    /// On a cluster router, accept an answer without a shard that does not answer.
    pub allow_partial: bool,
    /// Write a montage PNG here.
    pub montage: Option<PathBuf>,
}

async fn image_input(path: &Path, frame: u32) -> anyhow::Result<ImageInput> {
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(ImageInput {
        source: Some(image_input::Source::Dicom(bytes)),
        frame,
    })
}

async fn code_source(source: &Source) -> anyhow::Result<CodeSource> {
    Ok(CodeSource {
        source: Some(match source {
            Source::File(path, frame) => {
                code_source::Source::Image(image_input(path, *frame).await?)
            }
            Source::Uid(uid, frame) => code_source::Source::Indexed(SliceRef {
                sop_instance_uid: uid.to_string(),
                frame: *frame,
            }),
        }),
    })
}

/// The request for these options.
pub async fn request(options: &SearchOptions) -> anyhow::Result<SearchRequest> {
    let source = match (&options.query, &options.normal_from, &options.abnormal_from) {
        (Some(Source::File(path, frame)), None, None) => {
            query::Source::Image(image_input(path, *frame).await?)
        }
        (Some(Source::Uid(uid, frame)), None, None) => query::Source::Indexed(SliceRef {
            sop_instance_uid: uid.to_string(),
            frame: *frame,
        }),
        (None, Some(n), Some(a)) => query::Source::Composite(CompositeQuery {
            normal_from: Some(code_source(n).await?),
            abnormal_from: Some(code_source(a).await?),
        }),
        _ => anyhow::bail!(
            "give one query (a DICOM file or an indexed SOP Instance UID), or both \
             --normal-from and --abnormal-from for a composite query"
        ),
    };
    Ok(SearchRequest {
        query: Some(Query {
            source: Some(source),
        }),
        mode: options.mode as i32,
        normal_weight: options.weights.0,
        abnormal_weight: options.weights.1,
        filter: options.filter.clone(),
        top_k: options.top_k,
        grouping: options.grouping as i32,
        group_score: if options.mean_of_best.is_some() {
            GroupScore::MeanOfBestN as i32
        } else {
            GroupScore::BestSlice as i32
        },
        group_best_n: options.mean_of_best.unwrap_or(0),
        include_thumbnails: options.montage.is_some(),
        exclude_query: options.exclude_query,
        allow_partial: options.allow_partial,
    })
}

/// Runs the search and prints the table.
pub async fn run(server: &ServerArgs, options: SearchOptions) -> anyhow::Result<()> {
    let channel = connect(server).await?;
    let mut client = SearchServiceClient::new(channel.clone())
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let request = request(&options).await?;
    let answer = client
        .search(request)
        .await
        .map_err(|s| refused("/diptych.v1.SearchService/Search", s))?
        .into_inner();
    print_table(&answer);
    if let Some(path) = &options.montage {
        let query = options
            .query
            .as_ref()
            .or(options.normal_from.as_ref())
            .context("the montage needs a query (--query or --normal-from)")?;
        montage::write(channel, query, &answer, path).await?;
        println!("montage written to {}", path.display());
    }
    Ok(())
}

/// Prints the hits as a table.
pub fn print_table(answer: &SearchResponse) {
    println!(
        "{} of {} records matched; model {}; {:.1} ms; exact: {}",
        answer.records_matched,
        answer.records_total,
        answer.model_id,
        answer.elapsed_ms,
        answer.exact
    );
    if (answer.shards_answered.len() as u32) < answer.shards_total {
        println!(
            "partial: shards {:?} of {} answered",
            answer.shards_answered, answer.shards_total
        );
    }
    println!(
        "{:>4}  {:>10}  {:>10}  {:>10}  {:>5}  {:<8}  {:<8}  {:<6}  {:<40}  frame",
        "rank",
        "distance",
        "d_normal",
        "d_abnormal",
        "abn",
        "modality",
        "date",
        "slices",
        "SOP Instance UID"
    );
    for hit in &answer.hits {
        let m = hit.metadata.clone().unwrap_or_default();
        let slice = hit.slice.clone().unwrap_or_default();
        println!(
            "{:>4}  {:>10.3}  {:>10.3}  {:>10.3}  {:>5.2}  {:<8}  {:<8}  {:<6}  {:<40}  {}",
            hit.rank,
            hit.distance,
            hit.normal_distance,
            hit.abnormal_distance,
            m.abnormality,
            m.modality,
            m.study_date,
            hit.group_slices,
            slice.sop_instance_uid,
            slice.frame
        );
    }
}
