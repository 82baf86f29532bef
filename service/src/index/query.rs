//! Answering a search: resolve the query's codes (image, indexed slice, raw codes, or a
//! composite of two sources), turn the filter into the set of matching records, run the exact
//! search, and dress the hits with their catalog metadata (and decoded thumbnails on request).

use std::time::Instant;

use diptych_dicom_adapter::Uid;
use thiserror::Error;

use super::{Index, SearchState, Serving};
use crate::catalog::{CatalogError, StoredRecord, UidLookup};
use crate::encoder::{BatchError, CodePair};
use crate::record::{RecordId, RecordSet};
use crate::search::{self, GroupScore, Grouping, Hit, Mode, QueryCodes};
use crate::slice::{SliceError, SliceSource, prepare};
use crate::store::CodeStore;

/// Where a query's codes come from.
#[derive(Debug, Clone)]
pub enum QuerySource {
    /// Encode this slice.
    Image(SliceSource),
    /// Take the codes of this indexed slice.
    Indexed {
        /// SOP Instance UID, checked where the request came in.
        sop_instance_uid: Uid,
        /// Zero-based frame.
        frame: u32,
    },
    /// Use these codes (from the serving model).
    Codes(QueryCodes),
    /// The normal code of one source with the abnormal code of another.
    Composite {
        /// Source of the normal code.
        normal_from: Box<QuerySource>,
        /// Source of the abnormal code.
        abnormal_from: Box<QuerySource>,
    },
}

/// A search, in domain terms.
#[derive(Debug, Clone)]
pub struct SearchSpec {
    /// What to search with.
    pub query: QuerySource,
    /// Which codes to compare, with the combined-mode weights.
    pub mode: Mode,
    /// Catalog filter; empty keeps every record.
    pub filter: String,
    /// Hits wanted, 1..=[`crate::search::MAX_TOP_K`].
    pub top_k: usize,
    /// Hits per slice, series or study.
    pub grouping: Grouping,
    /// How a group's distance comes from its slices'.
    pub group_score: GroupScore,
    /// Decode each hit's codes into a reconstruction and a normal-appearing image.
    pub include_thumbnails: bool,
    /// Leave the query's own slice (series, study with grouping) out; needs an indexed query.
    pub exclude_query: bool,
}

/// One hit with what a viewer shows.
#[derive(Debug, Clone)]
pub struct HitView {
    /// The ranked hit.
    pub hit: Hit,
    /// The (best) slice's catalog record.
    pub record: StoredRecord,
    /// Reconstruction x̂ and normal-appearing x̃ decoded from its codes, when asked for.
    pub thumbnails: Option<(Vec<f32>, Vec<f32>)>,
}

/// The answer to a search.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// Hits, nearest first.
    pub hits: Vec<HitView>,
    /// Records that passed the filter.
    pub records_matched: u64,
    /// Live records in the index.
    pub records_total: u64,
    /// Server-side time, milliseconds.
    pub elapsed_ms: f64,
    /// The model whose codes were compared (the query's and every record's).
    pub model_id: String,
}

/// Why a search was not answered. Each names the request field at fault.
#[derive(Debug, Error)]
pub enum QueryError {
    /// A request field is invalid (INVALID_ARGUMENT).
    #[error("{field}: {message}")]
    Invalid {
        /// The request field.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A referenced slice is not indexed (NOT_FOUND).
    #[error("{field}: {message}")]
    NotFound {
        /// The request field.
        field: String,
        /// What was not found.
        message: String,
    },
    /// The encoder could not take the query image (RESOURCE_EXHAUSTED / UNAVAILABLE / INTERNAL).
    #[error(transparent)]
    Encoder(#[from] BatchError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(CatalogError),
    /// A re-index switched models while the search ran (retried inside the index; reaches a
    /// caller only when it keeps happening).
    #[error("the serving model changed from {from} to {to} during the search; retry it")]
    ModelSwitched {
        /// The model the search started with.
        from: String,
        /// The model now serving.
        to: String,
    },
}

impl QueryError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        QueryError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// A record's normal and abnormal codes, one byte per grid position each.
type RecordCodes = (Vec<u8>, Vec<u8>);

impl Index {
    /// Runs a search.
    #[tracing::instrument(
        name = "search",
        level = "info",
        skip_all,
        fields(top_k = spec.top_k, filtered = !spec.filter.trim().is_empty())
    )]
    pub async fn search(&self, spec: SearchSpec) -> Result<SearchOutcome, QueryError> {
        let mut tries = 0;
        loop {
            match self.search_once(&spec).await {
                Err(QueryError::ModelSwitched { .. }) if tries < 2 => tries += 1,
                other => return other,
            }
        }
    }

    /// [`Index::search`] with the model serving at its start, from the query's codes to the
    /// hits; [`QueryError::ModelSwitched`] when a re-index switched models meanwhile.
    async fn search_once(&self, spec: &SearchSpec) -> Result<SearchOutcome, QueryError> {
        // top_k and the weights are checked by the search itself (`search::SearchError`, mapped
        // to the request field by `search_field`).
        let started = Instant::now();
        // The catalog (filter, scores) and the codes of one model, from the first read to the
        // last: a switch waits for this search, or this search for the switch.
        let _one_model = self.model_switch.read().await;
        let serving = self.serving();
        let exclude = match (&spec.query, spec.exclude_query) {
            (_, false) => None,
            (
                QuerySource::Indexed {
                    sop_instance_uid,
                    frame,
                },
                true,
            ) => {
                let record = self.indexed_record(sop_instance_uid, *frame, "query.indexed")?;
                Some(self.exclusion(record, spec.grouping))
            }
            (_, true) => {
                return Err(QueryError::invalid(
                    "exclude_query",
                    "only applies to a query that names an indexed slice (query.indexed)",
                ));
            }
        };
        let codes = self.resolve_with(&serving, &spec.query, "query").await?;
        let filter = self.parse_filter(&spec.filter)?;
        let request = search::SearchRequest {
            query: codes,
            mode: spec.mode,
            grouping: spec.grouping,
            group_score: spec.group_score,
            top_k: spec.top_k,
            exclude,
        };
        let (hits, matched, total) = tokio::task::block_in_place(|| {
            let (store, state) = self.read_serving(&serving)?;
            self.scan(&serving, &store, &state, &request, filter.as_ref())
        })?;
        let hits = self
            .hydrate(&serving, hits, spec.include_thumbnails)
            .await?;
        Ok(SearchOutcome {
            hits,
            records_matched: matched,
            records_total: total,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            model_id: serving.model_id().to_string(),
        })
    }

    /// The code store and search state under their read locks, once they hold `serving`'s
    /// codes; [`QueryError::ModelSwitched`] when a re-index has replaced them.
    fn read_serving(
        &self,
        serving: &Serving,
    ) -> Result<
        (
            std::sync::RwLockReadGuard<'_, CodeStore>,
            std::sync::RwLockReadGuard<'_, SearchState>,
        ),
        QueryError,
    > {
        let store = self.codes.read().expect("code store lock poisoned");
        let state = self.search.read().expect("search lock poisoned");
        if store.stamp().model_id != serving.model_id() {
            return Err(QueryError::ModelSwitched {
                from: serving.model_id().to_string(),
                to: store.stamp().model_id.clone(),
            });
        }
        Ok((store, state))
    }

    /// The most similar studies to an indexed study in one mode: each of its slices is searched
    /// with grouping by study (the study itself left out), and a candidate study's distance is
    /// its best slice's distance to any of the query study's slices. Exact: a study in the true
    /// top-k is in the top-k of the query slice that comes closest to it.
    ///
    /// Studies are ordered by the (distance, record id) of their best slice, a total order, so
    /// the answer for k is the prefix of the answer for any larger k (which
    /// [`crate::watch::similar`] relies on to serve fewer hits from one search of more).
    #[tracing::instrument(name = "search", level = "info", skip_all, fields(similar_studies = true, top_k = top_k))]
    pub async fn similar_studies(
        &self,
        study_instance_uid: &Uid,
        mode: Mode,
        filter: &str,
        top_k: usize,
    ) -> Result<(usize, Vec<HitView>, String), QueryError> {
        self.counters
            .similar_studies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _one_model = self.model_switch.read().await;
        let filter = self.parse_filter(filter)?;
        let queries = self.study_codes_now(study_instance_uid)?;
        let (hits, model_id) = self
            .similar_to_now(
                &queries,
                Some(study_instance_uid),
                mode,
                filter.as_ref(),
                top_k,
            )
            .await?;
        Ok((queries.len(), hits, model_id))
    }

    /// The codes of every live slice of a study this index holds, in record order (empty when
    /// it holds none): what a cluster router sends to the other shards to find the study's
    /// similar studies there.
    pub async fn study_codes(
        &self,
        study_instance_uid: &Uid,
    ) -> Result<Vec<QueryCodes>, QueryError> {
        let _one_model = self.model_switch.read().await;
        self.study_codes_now(study_instance_uid)
    }

    /// The most similar studies, in one mode, to a study given by the codes of its slices
    /// (another shard's study, in a cluster): [`Index::similar_studies`] without a study to
    /// leave out, since this index does not hold it.
    pub async fn similar_to_codes(
        &self,
        queries: &[QueryCodes],
        mode: Mode,
        filter: &str,
        top_k: usize,
    ) -> Result<(Vec<HitView>, String), QueryError> {
        let _one_model = self.model_switch.read().await;
        let filter = self.parse_filter(filter)?;
        self.similar_to_now(queries, None, mode, filter.as_ref(), top_k)
            .await
    }

    /// [`Index::study_codes`] under a model lock the caller holds.
    fn study_codes_now(&self, study_instance_uid: &Uid) -> Result<Vec<QueryCodes>, QueryError> {
        let mut slices: Vec<RecordId> = self
            .catalog
            .records_with(&UidLookup::study(study_instance_uid))
            .map_err(QueryError::Catalog)?
            .into_iter()
            .map(|(record, _)| record)
            .collect();
        slices.sort_unstable();
        let serving = self.serving();
        tokio::task::block_in_place(|| {
            let (store, _state) = self.read_serving(&serving)?;
            let view = store.view();
            Ok(slices
                .iter()
                .filter(|&&record| {
                    (record as usize) < view.len() && !view.records()[record as usize].is_deleted()
                })
                .map(|&record| QueryCodes {
                    normal: view.normal_code(record).to_vec(),
                    abnormal: view.abnormal_code(record).to_vec(),
                })
                .collect())
        })
    }

    /// Each query slice searched with grouping by study (`exclude` left out), a candidate
    /// study's distance its best slice's to any query slice; under a model lock the caller
    /// holds.
    async fn similar_to_now(
        &self,
        queries: &[QueryCodes],
        exclude: Option<&Uid>,
        mode: Mode,
        filter: Option<&RecordSet>,
        top_k: usize,
    ) -> Result<(Vec<HitView>, String), QueryError> {
        let exclude =
            exclude.map(|study| search::Exclude::Study(crate::record::key_of(study.as_str())));
        let serving = self.serving();
        let found = tokio::task::block_in_place(|| {
            let (store, state) = self.read_serving(&serving)?;
            let mut found = Vec::new();
            for query in queries {
                let request = search::SearchRequest {
                    query: query.clone(),
                    mode,
                    grouping: Grouping::Study,
                    group_score: GroupScore::BestSlice,
                    top_k,
                    exclude,
                };
                found.extend(self.scan(&serving, &store, &state, &request, filter)?.0);
            }
            Ok::<_, QueryError>(found)
        })?;
        let mut best: std::collections::HashMap<u64, Hit> = std::collections::HashMap::new();
        {
            let store = self.codes.read().expect("code store lock poisoned");
            let records = store.view().records();
            for hit in found {
                let study = records[hit.record as usize].keys().study;
                let better = best
                    .get(&study)
                    .is_none_or(|b| (hit.distance, hit.record) < (b.distance, b.record));
                if better {
                    best.insert(study, hit);
                }
            }
        }
        let mut hits: Vec<Hit> = best.into_values().collect();
        hits.sort_by(|a, b| {
            a.distance
                .total_cmp(&b.distance)
                .then(a.record.cmp(&b.record))
        });
        hits.truncate(top_k);
        let hits = self.hydrate(&serving, hits, false).await?;
        Ok((hits, serving.model_id().to_string()))
    }

    /// The records a filter keeps; `None` for an empty filter. A malformed filter is
    /// [`QueryError::Invalid`] naming the `filter` field.
    pub fn parse_filter(&self, filter: &str) -> Result<Option<RecordSet>, QueryError> {
        if filter.trim().is_empty() {
            return Ok(None);
        }
        self.catalog.filter(filter).map(Some).map_err(|e| match e {
            CatalogError::Filter(message) => QueryError::Invalid {
                field: "filter".into(),
                message,
            },
            other => QueryError::Catalog(other),
        })
    }

    /// The exact search over the store's codes: hits, records the filter kept, live records.
    fn scan(
        &self,
        serving: &Serving,
        store: &CodeStore,
        state: &SearchState,
        request: &search::SearchRequest,
        filter: Option<&RecordSet>,
    ) -> Result<(Vec<Hit>, u64, u64), QueryError> {
        let view = store.view();
        let records = view.records();
        let keys = |id: RecordId| records[id as usize].keys();
        let corpus = search::Corpus {
            normal: view.normal(),
            abnormal: view.abnormal(),
            positions: view.positions(),
            keys: &keys,
            deleted: &state.deleted,
            filter,
        };
        let hits = search::search(&serving.tables, state.index.as_ref(), &corpus, request)
            .map_err(|e| QueryError::invalid(search_field(&e), e.to_string()))?;
        let total = store.live_len() as u64;
        let matched = match filter {
            Some(set) => set.iter().filter(|&id| !state.deleted.contains(id)).count() as u64,
            None => total,
        };
        Ok((hits, matched, total))
    }

    /// The hits with their catalog records (and decoded thumbnails when asked for); records
    /// deleted since the scan are left out.
    async fn hydrate(
        &self,
        serving: &Serving,
        hits: Vec<Hit>,
        thumbnails: bool,
    ) -> Result<Vec<HitView>, QueryError> {
        let ids: Vec<RecordId> = hits.iter().map(|h| h.record).collect();
        let records = self.catalog.entries(&ids).map_err(QueryError::Catalog)?;
        let mut views = Vec::with_capacity(hits.len());
        for (hit, record) in hits.into_iter().zip(records) {
            let Some(record) = record else { continue };
            let codes = match thumbnails {
                true => self.codes_of_under(serving, hit.record)?,
                false => None,
            };
            let images = match codes {
                Some((normal, abnormal)) => {
                    let decoded = serving
                        .engine
                        .decode(CodePair {
                            normal: normal.iter().map(|&c| u32::from(c)).collect(),
                            abnormal: abnormal.iter().map(|&c| u32::from(c)).collect(),
                        })
                        .await?;
                    Some((decoded.reconstruction, decoded.normal_appearing))
                }
                None => None,
            };
            views.push(HitView {
                hit,
                record,
                thumbnails: images,
            });
        }
        Ok(views)
    }

    /// The codes a query source stands for, under the model serving now.
    pub async fn resolve(
        &self,
        source: &QuerySource,
        field: &str,
    ) -> Result<QueryCodes, QueryError> {
        self.resolve_with(&self.serving(), source, field).await
    }

    /// The codes a query source stands for under `serving`.
    async fn resolve_with(
        &self,
        serving: &Serving,
        source: &QuerySource,
        field: &str,
    ) -> Result<QueryCodes, QueryError> {
        match source {
            QuerySource::Image(slice) => {
                let params = serving.engine.manifest().preprocess;
                let limits = self.limits;
                let slice = slice.clone();
                let input = tokio::task::spawn_blocking(move || prepare(&slice, &params, &limits))
                    .await
                    .map_err(|e| QueryError::invalid(field, e.to_string()))?
                    .map_err(|e: SliceError| {
                        QueryError::invalid(&format!("{field}.{}", e.field()), e.to_string())
                    })?;
                let code = serving.engine.encode(input.pixels).await?;
                Ok(QueryCodes {
                    normal: code.normal.iter().map(|&c| c as u8).collect(),
                    abnormal: code.abnormal.iter().map(|&c| c as u8).collect(),
                })
            }
            QuerySource::Indexed {
                sop_instance_uid,
                frame,
            } => {
                let record =
                    self.indexed_record(sop_instance_uid, *frame, &format!("{field}.indexed"))?;
                let (normal, abnormal) =
                    self.codes_of_under(serving, record)?
                        .ok_or_else(|| QueryError::NotFound {
                            field: format!("{field}.indexed"),
                            message: "the slice was deleted".into(),
                        })?;
                Ok(QueryCodes { normal, abnormal })
            }
            QuerySource::Codes(codes) => {
                let positions = serving.engine.geometry().positions();
                let k = serving.engine.manifest().codebook_size;
                for (name, code) in [("normal", &codes.normal), ("abnormal", &codes.abnormal)] {
                    if code.len() != positions {
                        return Err(QueryError::invalid(
                            &format!("{field}.codes.{name}.indices"),
                            format!(
                                "has {} indices; the serving model's grid has {positions} positions",
                                code.len()
                            ),
                        ));
                    }
                    if let Some(bad) = code.iter().find(|&&c| usize::from(c) >= k) {
                        return Err(QueryError::invalid(
                            &format!("{field}.codes.{name}.indices"),
                            format!("index {bad} is outside the codebook (K = {k})"),
                        ));
                    }
                }
                Ok(codes.clone())
            }
            QuerySource::Composite {
                normal_from,
                abnormal_from,
            } => {
                if matches!(**normal_from, QuerySource::Composite { .. })
                    || matches!(**abnormal_from, QuerySource::Composite { .. })
                {
                    return Err(QueryError::invalid(
                        field,
                        "a composite query's sources must be an image, an indexed slice or codes",
                    ));
                }
                let normal = Box::pin(self.resolve_with(
                    serving,
                    normal_from,
                    &format!("{field}.composite.normal_from"),
                ))
                .await?
                .normal;
                let abnormal = Box::pin(self.resolve_with(
                    serving,
                    abnormal_from,
                    &format!("{field}.composite.abnormal_from"),
                ))
                .await?
                .abnormal;
                Ok(QueryCodes { normal, abnormal })
            }
        }
    }

    /// The codes of an indexed record made by `serving`'s model (`None` when deleted).
    fn codes_of_under(
        &self,
        serving: &Serving,
        record: RecordId,
    ) -> Result<Option<RecordCodes>, QueryError> {
        let (store, _state) = self.read_serving(serving)?;
        let view = store.view();
        let i = record as usize;
        if i >= view.len() || view.records()[i].is_deleted() {
            return Ok(None);
        }
        Ok(Some((
            view.normal_code(record).to_vec(),
            view.abnormal_code(record).to_vec(),
        )))
    }

    /// The record of an indexed slice, or NOT_FOUND naming `field`.
    fn indexed_record(
        &self,
        sop_instance_uid: &Uid,
        frame: u32,
        field: &str,
    ) -> Result<RecordId, QueryError> {
        self.catalog
            .records_with(&UidLookup::instance(sop_instance_uid).frame(frame))
            .map_err(QueryError::Catalog)?
            .first()
            .map(|&(record, _)| record)
            .ok_or_else(|| QueryError::NotFound {
                field: field.to_string(),
                message: format!(
                    "no indexed slice has this SOP Instance UID and frame {frame}; \
                     ingest it first or check the UID"
                ),
            })
    }

    /// What `exclude_query` leaves out for a query slice under `grouping`: its instance, series
    /// or study.
    fn exclusion(&self, record: RecordId, grouping: Grouping) -> search::Exclude {
        let store = self.codes.read().expect("code store lock poisoned");
        let keys = store.view().records()[record as usize].keys();
        match grouping {
            Grouping::Instance => search::Exclude::Instance(keys.instance),
            Grouping::Series => search::Exclude::Series(keys.series),
            Grouping::Study => search::Exclude::Study(keys.study),
        }
    }
}

/// The request field a search error points at.
fn search_field(error: &search::SearchError) -> &'static str {
    use search::SearchError as E;
    match error {
        E::TopK(_) => "top_k",
        E::GroupBestN(_) => "group_best_n",
        E::Weight { name, .. } => name,
        E::QueryLength { .. } | E::QueryCode { .. } => "query",
        E::CorpusShape { .. } | E::TooManyRecords(_) => "index",
    }
}
