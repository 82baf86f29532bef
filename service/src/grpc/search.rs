//! `diptych.v1.SearchService`: exact search over the index, and the watch stream of received
//! studies with their most similar studies.

use std::sync::Arc;

use diptych::api::v1::search_service_server::SearchService;
use diptych::api::v1::{
    self as pb, CodeSource, GroupScore as PbGroupScore, Grouping as PbGrouping, ImageFormat,
    ModeResults, SearchHit, SearchMode, SearchRequest, SearchResponse, SliceRef, WatchEvent,
    WatchRequest, code_source, query,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::ServiceState;
use super::input::{invalid, slice_source, uid};
use super::output;
use crate::audit::{AuditEvent, Outcome, What, Who, event::disclosed};
use crate::auth::Caller;
use crate::index::query::HitView;
use crate::index::{QueryError, QuerySource, SearchSpec};
use crate::search::{GroupScore, Grouping, Mode, QueryCodes};
use crate::watch::{Interest, Question};

/// The SearchService handlers.
pub struct SearchApi {
    state: Arc<ServiceState>,
}

impl SearchApi {
    /// Handlers over the shared state.
    pub fn new(state: Arc<ServiceState>) -> Self {
        Self { state }
    }
}

/// The search mode of a request (weights for combined mode; both 0 means normal weight 1 and
/// the bundle's `balance`, `Manifest::combined_balance`).
pub fn mode(
    value: i32,
    normal_weight: f32,
    abnormal_weight: f32,
    balance: f32,
) -> Result<Mode, Status> {
    match SearchMode::try_from(value) {
        Ok(SearchMode::Normal) => Ok(Mode::Normal),
        Ok(SearchMode::Abnormal) => Ok(Mode::Abnormal),
        Ok(SearchMode::Combined) => {
            let (w_n, w_a) = if normal_weight == 0.0 && abnormal_weight == 0.0 {
                (1.0, balance)
            } else {
                (normal_weight, abnormal_weight)
            };
            Ok(Mode::Combined {
                normal_weight: w_n,
                abnormal_weight: w_a,
            })
        }
        _ => Err(invalid(
            "mode",
            format!(
                "{value} is not a search mode; use SEARCH_MODE_NORMAL, SEARCH_MODE_ABNORMAL or \
                 SEARCH_MODE_COMBINED"
            ),
        )),
    }
}

/// A search mode's API name (`SEARCH_MODE_COMBINED`), or its number when it has none.
fn mode_name(value: i32) -> String {
    SearchMode::try_from(value).map_or_else(|_| value.to_string(), |m| m.as_str_name().to_string())
}

/// The grouping and group score of a request.
pub fn grouping(value: i32, score: i32, best_n: u32) -> Result<(Grouping, GroupScore), Status> {
    let grouping = match PbGrouping::try_from(value) {
        Ok(PbGrouping::Unspecified) | Ok(PbGrouping::Instance) => Grouping::Instance,
        Ok(PbGrouping::Series) => Grouping::Series,
        Ok(PbGrouping::Study) => Grouping::Study,
        Err(_) => {
            return Err(invalid(
                "grouping",
                format!(
                    "{value} is not a grouping; use GROUPING_INSTANCE, GROUPING_SERIES or GROUPING_STUDY"
                ),
            ));
        }
    };
    let score = match PbGroupScore::try_from(score) {
        Ok(PbGroupScore::Unspecified) | Ok(PbGroupScore::BestSlice) => GroupScore::BestSlice,
        Ok(PbGroupScore::MeanOfBestN) => {
            let n = if best_n == 0 { 3 } else { best_n };
            if n > 100 {
                return Err(invalid(
                    "group_best_n",
                    format!("{n} is out of range; use 1..100 (0 means 3)"),
                ));
            }
            GroupScore::MeanOfBestN(n)
        }
        Err(_) => {
            return Err(invalid(
                "group_score",
                format!(
                    "{score} is not a group score; use GROUP_SCORE_BEST_SLICE or GROUP_SCORE_MEAN_OF_BEST_N"
                ),
            ));
        }
    };
    Ok((grouping, score))
}

/// Codes given in a request, checked for shape against the serving model.
pub fn codes(codes: pb::SliceCodes, field: &str, model_id: &str) -> Result<QueryCodes, Status> {
    if !codes.model_id.is_empty() && codes.model_id != model_id {
        return Err(invalid(
            &format!("{field}.model_id"),
            format!(
                "codes of model {:?} cannot be compared with the serving model {model_id:?}; \
                 encode the image with this server",
                codes.model_id
            ),
        ));
    }
    let take = |code: Option<pb::Code>, name: &str| -> Result<Vec<u8>, Status> {
        let code = code.ok_or_else(|| invalid(&format!("{field}.{name}"), "is required"))?;
        code.indices
            .iter()
            .map(|&i| u8::try_from(i))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| {
                invalid(
                    &format!("{field}.{name}.indices"),
                    "holds an index outside the codebook",
                )
            })
    };
    Ok(QueryCodes {
        normal: take(codes.normal, "normal")?,
        abnormal: take(codes.abnormal, "abnormal")?,
    })
}

fn code_source(
    source: Option<CodeSource>,
    field: &str,
    model_id: &str,
) -> Result<QuerySource, Status> {
    match source.and_then(|s| s.source) {
        None => Err(invalid(field, "is required; set image, indexed or code")),
        Some(code_source::Source::Image(image)) => {
            let slice = slice_source(Some(image))
                .map_err(|s| Status::invalid_argument(format!("{field}.{}", s.message())))?;
            Ok(QuerySource::Image(slice))
        }
        Some(code_source::Source::Indexed(slice)) => indexed(slice, &format!("{field}.indexed")),
        Some(code_source::Source::Code(code)) => {
            // One code: used for the side this source feeds; the other side is ignored.
            let single = pb::SliceCodes {
                normal: Some(code.clone()),
                abnormal: Some(code),
                model_id: String::new(),
            };
            Ok(QuerySource::Codes(codes(
                single,
                &format!("{field}.code"),
                model_id,
            )?))
        }
    }
}

/// An indexed slice named at request field `field`, its UID checked.
fn indexed(slice: SliceRef, field: &str) -> Result<QuerySource, Status> {
    Ok(QuerySource::Indexed {
        sop_instance_uid: uid(
            &format!("{field}.sop_instance_uid"),
            &slice.sop_instance_uid,
        )?,
        frame: slice.frame,
    })
}

/// The query of a request.
pub fn query_source(query: Option<pb::Query>, model_id: &str) -> Result<QuerySource, Status> {
    match query.and_then(|q| q.source) {
        None => Err(invalid(
            "query",
            "is required; set image, indexed, codes or composite",
        )),
        Some(query::Source::Image(image)) => Ok(QuerySource::Image(slice_source(Some(image))?)),
        Some(query::Source::Indexed(slice)) => indexed(slice, "query.indexed"),
        Some(query::Source::Codes(c)) => Ok(QuerySource::Codes(codes(c, "query.codes", model_id)?)),
        Some(query::Source::Composite(c)) => Ok(QuerySource::Composite {
            normal_from: Box::new(code_source(
                c.normal_from,
                "query.composite.normal_from",
                model_id,
            )?),
            abnormal_from: Box::new(code_source(
                c.abnormal_from,
                "query.composite.abnormal_from",
                model_id,
            )?),
        }),
    }
}

/// One hit as the API returns it; `size` is the model's image side for thumbnails.
pub fn search_hit(i: usize, view: HitView, size: usize, viewer: Option<&str>) -> SearchHit {
    let (thumbnail, normal_appearing) = match &view.thumbnails {
        Some((x_hat, x_tilde)) => (
            Some(output::image(x_hat, size, ImageFormat::Png)),
            Some(output::image(x_tilde, size, ImageFormat::Png)),
        ),
        None => (None, None),
    };
    let m = &view.record.metadata;
    SearchHit {
        rank: i as u32 + 1,
        distance: view.hit.distance,
        normal_distance: view.hit.normal_distance,
        abnormal_distance: view.hit.abnormal_distance,
        slice: Some(SliceRef {
            sop_instance_uid: m.sop_instance_uid.clone(),
            frame: view.record.frame,
        }),
        viewer_url: viewer
            .map(|t| {
                t.replace("{study_instance_uid}", &m.study_instance_uid)
                    .replace("{series_instance_uid}", &m.series_instance_uid)
                    .replace("{sop_instance_uid}", &m.sop_instance_uid)
            })
            .unwrap_or_default(),
        study_instance_uid: m.study_instance_uid.clone(),
        series_instance_uid: m.series_instance_uid.clone(),
        group_slices: view.hit.group_slices,
        metadata: Some(output::record_metadata(&view.record)),
        thumbnail,
        normal_appearing,
    }
}

/// A query error as a gRPC status.
pub fn query_error(error: &QueryError) -> Status {
    match error {
        QueryError::Invalid { .. } => Status::invalid_argument(error.to_string()),
        QueryError::NotFound { .. } => Status::not_found(error.to_string()),
        QueryError::Encoder(e) => super::status::batch(e),
        QueryError::Catalog(e) => Status::internal(e.to_string()),
        QueryError::ModelSwitched { .. } => Status::aborted(error.to_string()),
    }
}

/// Whether a query holds codes given by the caller (checked against the model serving when the
/// call came in).
fn carries_codes(query: &QuerySource) -> bool {
    match query {
        QuerySource::Codes(_) => true,
        QuerySource::Composite {
            normal_from,
            abnormal_from,
        } => carries_codes(normal_from) || carries_codes(abnormal_from),
        QuerySource::Image(_) | QuerySource::Indexed { .. } => false,
    }
}

#[tonic::async_trait]
impl SearchService for SearchApi {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let index = self.state.index()?;
        let who = Who::caller(request.extensions().get::<Caller>());
        let peer = request.remote_addr().map(|a| a.to_string());
        let call = super::observe::request_id_of(&request);
        let r = request.into_inner();
        let model_id = index.engine().manifest().model_id.clone();
        let size = index.engine().geometry().size;
        let (grouping, group_score) = grouping(r.grouping, r.group_score, r.group_best_n)?;
        let top_k = if r.top_k == 0 { 10 } else { r.top_k as usize };
        let spec = SearchSpec {
            query: query_source(r.query, &model_id)?,
            mode: mode(
                r.mode,
                r.normal_weight,
                r.abnormal_weight,
                index.engine().manifest().combined_balance,
            )?,
            filter: r.filter,
            top_k,
            grouping,
            group_score,
            include_thumbnails: r.include_thumbnails,
            exclude_query: r.exclude_query,
        };
        let (query_kind, query_sop_instance_uid) = match &spec.query {
            QuerySource::Image(_) => ("image", None),
            QuerySource::Indexed {
                sop_instance_uid, ..
            } => ("indexed", Some(sop_instance_uid.as_str().to_string())),
            QuerySource::Codes(_) => ("codes", None),
            QuerySource::Composite { .. } => ("composite", None),
        };
        let (filter, top_k) = (spec.filter.clone(), spec.top_k);
        let carries_codes = carries_codes(&spec.query);
        let mut outcome = index.search(spec).await;
        if let Ok(found) = &outcome
            && carries_codes
            && found.model_id != model_id
        {
            // The codes were checked against the model serving when the call came in; a
            // re-index switched models since, and codes of two models are never compared.
            outcome = Err(QueryError::ModelSwitched {
                from: model_id.clone(),
                to: found.model_id.clone(),
            });
        }
        // The audit trail (not the log): who searched, how, and which patients and studies
        // went back.
        let what = What::Search {
            query_kind: query_kind.to_string(),
            query_sop_instance_uid,
            mode: mode_name(r.mode),
            grouping: PbGrouping::try_from(r.grouping)
                .map_or_else(|_| r.grouping.to_string(), |g| g.as_str_name().to_string()),
            filter,
            top_k,
            hits: outcome.as_ref().map_or(0, |o| o.hits.len()),
            returned: outcome.as_ref().map_or_else(
                |_| Vec::new(),
                |o| {
                    disclosed(o.hits.iter().map(|h| {
                        let m = &h.record.metadata;
                        (m.patient_id.as_str(), m.study_instance_uid.as_str())
                    }))
                },
            ),
        };
        let outcome = match outcome {
            Ok(outcome) => {
                // Written before the answer goes out: a process killed right after answering
                // has still recorded who saw what.
                self.state
                    .audit()
                    .confirm(
                        AuditEvent::now(Outcome::Success, who, peer, what).with_request_id(call),
                    )
                    .await;
                // Counts only: who saw which patient is the audit trail's, not the log's.
                tracing::info!(hits = outcome.hits.len(), "search answered");
                outcome
            }
            Err(error) => {
                let status = query_error(&error);
                self.state.audit().record(
                    AuditEvent::now(Outcome::Failure, who, peer, what)
                        .with_request_id(call)
                        .with_reason(status.message()),
                );
                return Err(status);
            }
        };
        let viewer = self.state.viewer_url_template.clone();
        let hits = outcome
            .hits
            .into_iter()
            .enumerate()
            .map(|(i, view)| search_hit(i, view, size, viewer.as_deref()))
            .collect();
        Ok(Response::new(SearchResponse {
            hits,
            model_id: outcome.model_id,
            records_matched: outcome.records_matched,
            records_total: outcome.records_total,
            exact: true,
            elapsed_ms: outcome.elapsed_ms,
            // A single node is the one shard of its index.
            shards_answered: vec![0],
            shards_total: 1,
        }))
    }

    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    /// Streams each received study with its most similar studies per requested mode.
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let index = self.state.index()?;
        let who = Who::caller(request.extensions().get::<Caller>());
        let peer = request.remote_addr().map(|a| a.to_string());
        let call = super::observe::request_id_of(&request);
        let audit = self.state.audit();
        let r = request.into_inner();
        let modes = if r.modes.is_empty() {
            vec![
                SearchMode::Normal as i32,
                SearchMode::Abnormal as i32,
                SearchMode::Combined as i32,
            ]
        } else {
            r.modes.clone()
        };
        let modes: Vec<(i32, Mode)> = modes
            .into_iter()
            .map(|m| {
                mode(m, 0.0, 0.0, index.engine().manifest().combined_balance).map(|mode| (m, mode))
            })
            .collect::<Result<_, _>>()
            .map_err(|s| invalid("modes", s.message()))?;
        let top_k = if r.top_k == 0 { 10 } else { r.top_k as usize };
        if top_k > 100 {
            return Err(invalid(
                "top_k",
                format!("{top_k} is out of range; use 1..100 (0 means 10)"),
            ));
        }
        // A malformed filter is refused now, not at the first study.
        index.parse_filter(&r.filter).map_err(|e| query_error(&e))?;
        // What this stream asks of every study, so that subscribers asking the same share one
        // search per study.
        let interests = modes.iter().map(|&(_, mode)| Interest {
            question: Question {
                mode,
                filter: r.filter.clone(),
            },
            top_k,
        });
        let mut received = index.tracker().subscribe(interests);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let filter = r.filter;
        let stopped = self.state.stopped();
        tokio::spawn(async move {
            tokio::pin!(stopped);
            loop {
                let next = tokio::select! {
                    next = received.recv() => next,
                    () = &mut stopped => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "the server is shutting down; reconnect (to another replica if \
                                 there is one) and watch again",
                            )))
                            .await;
                        return;
                    }
                };
                let study = match next {
                    Ok(study) => study,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a watch stream fell behind");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let mut results = Vec::new();
                let mut slices = 0;
                for (proto_mode, mode) in &modes {
                    match study.similar_studies(&index, *mode, &filter, top_k).await {
                        Ok(similar) => {
                            slices = similar.slices() as u32;
                            results.push(ModeResults {
                                mode: *proto_mode,
                                model_id: similar.model_id().to_string(),
                                hits: similar
                                    .hits()
                                    .iter()
                                    .cloned()
                                    .enumerate()
                                    .map(|(i, view)| search_hit(i, view, 0, None))
                                    .collect(),
                            });
                        }
                        Err(error) => {
                            let _ = tx.send(Err(query_error(error.query_error()))).await;
                            return;
                        }
                    }
                }
                // The audit trail: one event per answer, naming what it disclosed, written
                // before the answer is sent.
                audit
                    .confirm(
                        AuditEvent::now(
                            Outcome::Success,
                            who.clone(),
                            peer.clone(),
                            What::Watch {
                                study_instance_uid: study.study_instance_uid.as_str().to_string(),
                                modes: modes.iter().map(|(m, _)| mode_name(*m)).collect(),
                                filter: filter.clone(),
                                returned: disclosed(results.iter().flat_map(|r| {
                                    r.hits.iter().map(|h| {
                                        let patient =
                                            h.metadata.as_ref().map_or("", |m| &m.patient_id);
                                        (patient, h.study_instance_uid.as_str())
                                    })
                                })),
                            },
                        )
                        .with_request_id(call.clone()),
                    )
                    .await;
                let event = WatchEvent {
                    study_instance_uid: study.study_instance_uid.as_str().to_string(),
                    slices,
                    completed_unix_ms: study.completed_unix_ms,
                    results,
                };
                if tx.send(Ok(event)).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_mode_without_weights_takes_the_bundles_balance() {
        let m = mode(SearchMode::Combined as i32, 0.0, 0.0, 17.5).unwrap();
        assert!(matches!(
            m,
            Mode::Combined { normal_weight, abnormal_weight }
                if normal_weight == 1.0 && abnormal_weight == 17.5
        ));
        let m = mode(SearchMode::Combined as i32, 2.0, 0.5, 17.5).unwrap();
        assert!(
            matches!(
                m,
                Mode::Combined { normal_weight, abnormal_weight }
                    if normal_weight == 2.0 && abnormal_weight == 0.5
            ),
            "the request's weights win"
        );
        assert!(matches!(
            mode(SearchMode::Normal as i32, 0.0, 0.0, 17.5).unwrap(),
            Mode::Normal
        ));
    }
}
