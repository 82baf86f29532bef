//! Search through a router against a single node holding the same records: the same queries
//! (held-out encodings, by codes) alternate between the two over `SearchService.Search`, in
//! each mode, with and without a filter; every pair of answers must be identical (hits with
//! all their fields, in order; counts; exactness). Each shard replica also answers the same
//! query alone over the internal `ShardService.Search` (what the router calls), so the
//! router's extra time can be split from the scan.

use std::time::Instant;

use diptych::api::internal::v1::shard_service_client::ShardServiceClient;
use diptych::api::v1::search_service_client::SearchServiceClient;
use diptych::api::v1::{Code, Query, SearchMode, SearchRequest, SearchResponse, SliceCodes, query};
use diptych_service::search::QueryCodes;
use serde::Serialize;
use tonic::transport::Channel;

use super::procs::channel;
use super::search_run::percentile;

/// The modes searched, in the order of the table.
pub const MODES: [(&str, SearchMode); 3] = [
    ("combined", SearchMode::Combined),
    ("normal", SearchMode::Normal),
    ("abnormal", SearchMode::Abnormal),
];

/// The filter of the filtered rows: every tenth series of the synthetic records is CT.
pub const FILTER: &str = "modality:CT";

/// One mode and filter.
#[derive(Debug, Clone, Serialize)]
pub struct SearchRow {
    /// Always "cluster-search".
    pub bench: &'static str,
    /// Records in the single node (and in the shards together).
    pub records: usize,
    /// Records of each shard.
    pub shard_records: Vec<usize>,
    /// `combined`, `normal` or `abnormal`.
    pub mode: &'static str,
    /// `none` or the filter.
    pub filter: &'static str,
    /// Queries measured on each side.
    pub queries: usize,
    /// Median latency of the single node, ms (client side, over gRPC).
    pub single_p50_ms: f64,
    /// 99th percentile of the single node, ms.
    pub single_p99_ms: f64,
    /// Median latency through the router, ms.
    pub router_p50_ms: f64,
    /// 99th percentile through the router, ms.
    pub router_p99_ms: f64,
    /// The extra hop: router p50 − single p50, ms.
    pub hop_ms: f64,
    /// Median latency of each shard answering alone over `ShardService.Search`, ms.
    pub shard_p50_ms: Vec<f64>,
    /// Whether every query got identical answers from the router and the single node.
    pub identical: bool,
    /// The first difference, when there was one.
    pub first_difference: Option<String>,
}

/// Where to send the queries.
pub struct Targets<'a> {
    /// The single node's gRPC address.
    pub single: &'a str,
    /// The router's.
    pub router: &'a str,
    /// Each shard replica's, in shard order.
    pub shards: &'a [String],
}

/// The request of one query: by codes, top 10 instances.
pub fn request(q: &QueryCodes, grid: (u32, u32), mode: SearchMode, filter: &str) -> SearchRequest {
    let code = |indices: &[u8]| Code {
        grid_rows: grid.0,
        grid_columns: grid.1,
        indices: indices.iter().map(|&i| u32::from(i)).collect(),
    };
    SearchRequest {
        query: Some(Query {
            source: Some(query::Source::Codes(SliceCodes {
                normal: Some(code(&q.normal)),
                abnormal: Some(code(&q.abnormal)),
                model_id: String::new(),
            })),
        }),
        mode: mode as i32,
        filter: filter.to_string(),
        top_k: 10,
        ..SearchRequest::default()
    }
}

/// What must be the same in two answers, or a description of the first difference: every hit
/// (rank, slice, distances, group size, metadata, ...), the counts, exactness and model.
pub fn difference(router: &SearchResponse, single: &SearchResponse) -> Option<String> {
    if router.hits.len() != single.hits.len() {
        return Some(format!(
            "{} hits through the router, {} from the single node",
            router.hits.len(),
            single.hits.len()
        ));
    }
    if let Some((r, s)) = router.hits.iter().zip(&single.hits).find(|(r, s)| r != s) {
        return Some(format!(
            "hit #{}: router {:?} d={} against single {:?} d={}",
            s.rank,
            r.slice.as_ref().map(|s| &s.sop_instance_uid),
            r.distance,
            s.slice.as_ref().map(|s| &s.sop_instance_uid),
            s.distance
        ));
    }
    let counts = |a: &SearchResponse| {
        (
            a.records_matched,
            a.records_total,
            a.exact,
            a.model_id.clone(),
        )
    };
    (counts(router) != counts(single)).then(|| {
        format!(
            "counts (matched, total, exact, model): router {:?}, single {:?}",
            counts(router),
            counts(single)
        )
    })
}

async fn timed_search(
    client: &mut SearchServiceClient<Channel>,
    request: &SearchRequest,
) -> anyhow::Result<(f64, SearchResponse)> {
    let t = Instant::now();
    let answer = client.search(request.clone()).await?.into_inner();
    Ok((t.elapsed().as_secs_f64() * 1e3, answer))
}

/// Runs every mode and filter with `queries` (cycled up to `count` per row), after a few
/// unmeasured warm-up queries on each side; `tick` is called after each query.
pub async fn run(
    targets: &Targets<'_>,
    queries: &[QueryCodes],
    count: usize,
    grid: (u32, u32),
    records: usize,
    shard_records: &[usize],
    tick: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<SearchRow>> {
    anyhow::ensure!(!queries.is_empty(), "no query encodings");
    let mut single = SearchServiceClient::new(channel(targets.single).await?);
    let mut router = SearchServiceClient::new(channel(targets.router).await?);
    let mut shards = Vec::new();
    for addr in targets.shards {
        shards.push(ShardServiceClient::new(channel(addr).await?));
    }
    let mut rows = Vec::new();
    for (mode_name, mode) in MODES {
        for filter in ["", FILTER] {
            for q in queries.iter().take(3) {
                let r = request(q, grid, mode, filter);
                timed_search(&mut single, &r).await?;
                timed_search(&mut router, &r).await?;
            }
            let (mut single_ms, mut router_ms) = (Vec::new(), Vec::new());
            let mut shard_ms = vec![Vec::new(); shards.len()];
            let mut first_difference = None;
            for i in 0..count {
                let r = request(&queries[i % queries.len()], grid, mode, filter);
                // Alternate which goes first, so that drift falls on both alike.
                let (router_answer, single_answer) = if i % 2 == 0 {
                    let a = timed_search(&mut router, &r).await?;
                    let b = timed_search(&mut single, &r).await?;
                    (a, b)
                } else {
                    let b = timed_search(&mut single, &r).await?;
                    let a = timed_search(&mut router, &r).await?;
                    (a, b)
                };
                router_ms.push(router_answer.0);
                single_ms.push(single_answer.0);
                if first_difference.is_none() {
                    first_difference = difference(&router_answer.1, &single_answer.1)
                        .map(|d| format!("query {i}: {d}"));
                }
                for (client, ms) in shards.iter_mut().zip(&mut shard_ms) {
                    let t = Instant::now();
                    client.search(r.clone()).await?;
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                tick(mode_name);
            }
            for v in [&mut single_ms, &mut router_ms]
                .into_iter()
                .chain(shard_ms.iter_mut())
            {
                v.sort_by(f64::total_cmp);
            }
            let single_p50 = percentile(&single_ms, 0.5);
            let router_p50 = percentile(&router_ms, 0.5);
            rows.push(SearchRow {
                bench: "cluster-search",
                records,
                shard_records: shard_records.to_vec(),
                mode: mode_name,
                filter: if filter.is_empty() { "none" } else { FILTER },
                queries: count,
                single_p50_ms: single_p50,
                single_p99_ms: percentile(&single_ms, 0.99),
                router_p50_ms: router_p50,
                router_p99_ms: percentile(&router_ms, 0.99),
                hop_ms: router_p50 - single_p50,
                shard_p50_ms: shard_ms.iter().map(|v| percentile(v, 0.5)).collect(),
                identical: first_difference.is_none(),
                first_difference,
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diptych::api::v1::{SearchHit, SliceRef};

    fn answer(uids: &[&str], distance: f64) -> SearchResponse {
        SearchResponse {
            hits: uids
                .iter()
                .enumerate()
                .map(|(i, uid)| SearchHit {
                    rank: i as u32 + 1,
                    distance,
                    slice: Some(SliceRef {
                        sop_instance_uid: uid.to_string(),
                        frame: 0,
                    }),
                    ..SearchHit::default()
                })
                .collect(),
            records_matched: 10,
            records_total: 10,
            exact: true,
            ..SearchResponse::default()
        }
    }

    #[test]
    fn answers_differ_in_order_distance_or_counts_and_not_in_shard_fields() {
        let a = answer(&["1.1", "1.2"], 3.0);
        let mut routed = a.clone();
        routed.shards_answered = vec![0, 1];
        routed.shards_total = 2;
        routed.elapsed_ms = 9.0;
        assert_eq!(difference(&routed, &a), None);
        assert!(difference(&answer(&["1.2", "1.1"], 3.0), &a).is_some());
        assert!(difference(&answer(&["1.1", "1.2"], 3.5), &a).is_some());
        assert!(difference(&answer(&["1.1"], 3.0), &a).is_some());
        let mut fewer = a.clone();
        fewer.records_matched = 9;
        assert!(difference(&fewer, &a).unwrap().contains("counts"));
    }
}
