//! What a shard gives a router's Watch streams (docs/CLUSTER.md, "Watch"): the studies it judges
//! received, as they come, and its share of a study's similar studies — for a study it holds
//! (the study left out, as a single node computes them) or for another shard's study given by
//! its slices' codes — each hit with the stream sequence that orders ties across shards.

use std::sync::Arc;

use diptych::api::internal::v1::{ShardSimilarStudies, SimilarStudiesRequest, StudyReceived};
use diptych::api::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::shard::Sequences;
use crate::grpc::ServiceState;
use crate::grpc::input::invalid;
use crate::grpc::search::{codes, mode, query_error, search_hit};

/// The stream of studies this replica judges received, until the client goes or the server
/// stops.
pub fn studies_received(
    state: &Arc<ServiceState>,
) -> Result<ReceiverStream<Result<StudyReceived, Status>>, Status> {
    let index = state.index()?;
    let mut received = index.tracker().subscribe(std::iter::empty());
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let stopped = state.stopped();
    tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            let next = tokio::select! {
                next = received.recv() => next,
                () = &mut stopped => {
                    let _ = tx.send(Err(Status::unavailable("the shard is stopping"))).await;
                    return;
                }
            };
            let study = match next {
                Ok(study) => study,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a router's stream of received studies fell behind");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let event = StudyReceived {
                study_instance_uid: study.study_instance_uid.as_str().to_string(),
                instances: study.instances,
                completed_unix_ms: study.completed_unix_ms,
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// This shard's similar studies for a router's request, with each hit's stream sequence.
pub async fn similar_studies(
    state: &ServiceState,
    sequences: &Sequences,
    request: SimilarStudiesRequest,
) -> Result<ShardSimilarStudies, Status> {
    let index = state.index()?;
    let engine = index.engine();
    let manifest = engine.manifest();
    let mode = mode(request.mode, 0.0, 0.0, manifest.combined_balance)?;
    let top_k = match request.top_k {
        0 => 10,
        k @ 1..=100 => k as usize,
        k => {
            return Err(invalid(
                "top_k",
                format!("{k} is out of range; use 1..100 (0 means 10)"),
            ));
        }
    };
    let grid = manifest.grid;
    let (hits, model_id, study_codes) = if request.study_instance_uid.is_empty() {
        let positions = grid.rows * grid.cols;
        let queries = request
            .codes
            .into_iter()
            .map(|c| codes(c, "codes", &manifest.model_id))
            .collect::<Result<Vec<_>, Status>>()?;
        if queries
            .iter()
            .any(|q| q.normal.len() != positions || q.abnormal.len() != positions)
        {
            return Err(invalid(
                "codes",
                format!("every code must hold {positions} indices (the serving model's grid)"),
            ));
        }
        let (hits, model_id) = index
            .similar_to_codes(&queries, mode, &request.filter, top_k)
            .await
            .map_err(|e| query_error(&e))?;
        (hits, model_id, Vec::new())
    } else {
        let uid = diptych_dicom_adapter::Uid::parse(&request.study_instance_uid).map_err(|_| {
            invalid(
                "study_instance_uid",
                "is not a UID (digits and dots, at most 64 characters)",
            )
        })?;
        let (_, hits, model_id) = index
            .similar_studies(&uid, mode, &request.filter, top_k)
            .await
            .map_err(|e| query_error(&e))?;
        let queries = index.study_codes(&uid).await.map_err(|e| query_error(&e))?;
        let code = |indices: &[u8]| pb::Code {
            grid_rows: grid.rows as u32,
            grid_columns: grid.cols as u32,
            indices: indices.iter().map(|&i| u32::from(i)).collect(),
        };
        let study_codes = queries
            .iter()
            .map(|q| pb::SliceCodes {
                normal: Some(code(&q.normal)),
                abnormal: Some(code(&q.abnormal)),
                model_id: model_id.clone(),
            })
            .collect();
        (hits, model_id, study_codes)
    };
    let hits: Vec<pb::SearchHit> = hits
        .into_iter()
        .enumerate()
        .map(|(i, view)| search_hit(i, view, 0, None))
        .collect();
    let stream_sequences = hits
        .iter()
        .map(|hit| {
            let uid = hit
                .slice
                .as_ref()
                .map_or("", |s| s.sop_instance_uid.as_str());
            sequences.get(uid).ok_or_else(|| {
                Status::failed_precondition(
                    "a similar study has no stream sequence (it did not come from the ingest \
                     stream); a shard takes instances only from JetStream",
                )
            })
        })
        .collect::<Result<Vec<u64>, Status>>()?;
    Ok(ShardSimilarStudies {
        hits,
        stream_sequences,
        model_id,
        codes: study_codes,
    })
}
