//! The reference: the obvious single-threaded full scan that [`super::search`] must equal.

use std::collections::HashMap;

use super::distance::position_sum;
use super::group::{Ranked, Scored, group_key, mean, rank, to_hits};
use super::{Corpus, DistanceTables, GroupScore, Grouping, Hit, SearchError, SearchRequest};
use crate::record::RecordId;

/// Searches by computing the distance of every record that passes the deletions, the filter
/// and the exclusion, grouping all of them, and sorting. Slow and plainly right.
pub fn naive_search(
    tables: &DistanceTables,
    corpus: &Corpus,
    request: &SearchRequest,
) -> Result<Vec<Hit>, SearchError> {
    let ranking = super::validate(tables, corpus, request)?;
    let query = tables.query(&request.query);
    let p = corpus.positions;
    let mut groups: HashMap<u64, Vec<Scored>> = HashMap::new();
    for id in 0..corpus.records() as RecordId {
        if !corpus.passes(id, request.exclude.as_ref()) {
            continue;
        }
        let at = id as usize * p;
        let normal = if ranking.uses_normal {
            position_sum(&query.normal, &corpus.normal[at..at + p])
        } else {
            0.0
        };
        let abnormal = if ranking.uses_abnormal {
            position_sum(&query.abnormal, &corpus.abnormal[at..at + p])
        } else {
            0.0
        };
        let scored = Scored {
            distance: ranking.combine(normal, abnormal),
            record: id,
        };
        groups
            .entry(group_key(request.grouping, corpus, id))
            .or_default()
            .push(scored);
    }
    let n = match (request.grouping, request.group_score) {
        (Grouping::Instance, _) | (_, GroupScore::BestSlice) => 1,
        (_, GroupScore::MeanOfBestN(n)) => n as usize,
    };
    let ranked = rank(
        groups.into_iter().map(|(group, mut slices)| {
            slices.sort();
            let count = slices.len() as u32;
            slices.truncate(n);
            Ranked {
                best: Scored {
                    distance: mean(&slices),
                    record: slices[0].record,
                },
                group,
                slices: Some(count),
            }
        }),
        request.top_k,
    );
    Ok(to_hits(ranked, &query, corpus, |_| Vec::new()))
}
