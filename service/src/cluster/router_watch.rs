//! A router's Watch (docs/CLUSTER.md, "Watch"): it follows every shard's stream of received
//! studies (one replica at a time, the next when it fails) and, for each study, gathers its
//! similar studies from every shard — the holder's for the study itself (left out), the others'
//! for its slices' codes — and merges them by (distance, stream sequence), the order a single
//! node gives.

use std::time::Duration;

use diptych::api::internal::v1::shard_service_client::ShardServiceClient;
use diptych::api::internal::v1::{
    ShardSimilarStudies, SimilarStudiesRequest, StudiesReceivedRequest, StudyReceived,
};
use diptych::api::v1::{ModeResults, SearchMode, WatchEvent, WatchRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Response, Status};

use super::merge::{RankKey, merge_top_k};
use super::router::Shards;
use crate::grpc::input::invalid;

/// How long a router waits before following a shard again after all its replicas failed.
const RETRY: Duration = Duration::from_secs(1);

/// Opens a Watch stream over `shards`: the request checked now (its filter by a shard), then
/// one event per received study until the client goes.
pub async fn watch(
    shards: Shards,
    request: WatchRequest,
) -> Result<ReceiverStream<Result<WatchEvent, Status>>, Status> {
    let modes = if request.modes.is_empty() {
        vec![
            SearchMode::Normal as i32,
            SearchMode::Abnormal as i32,
            SearchMode::Combined as i32,
        ]
    } else {
        request.modes.clone()
    };
    for &m in &modes {
        if !matches!(
            SearchMode::try_from(m),
            Ok(SearchMode::Normal | SearchMode::Abnormal | SearchMode::Combined)
        ) {
            return Err(invalid(
                "modes",
                format!("{m} is not a search mode; use NORMAL, ABNORMAL or COMBINED"),
            ));
        }
    }
    let top_k = if request.top_k == 0 {
        10
    } else {
        request.top_k
    };
    if top_k > 100 {
        return Err(invalid(
            "top_k",
            format!("{top_k} is out of range; use 1..100 (0 means 10)"),
        ));
    }
    // A malformed filter is refused now, not at the first study: a shard parses it.
    let check = SimilarStudiesRequest {
        study_instance_uid: String::new(),
        codes: Vec::new(),
        mode: modes[0],
        filter: request.filter.clone(),
        top_k,
    };
    shards
        .on_any_shard(move |channel| similar(channel, check.clone()))
        .await?;

    let (events_tx, mut events) = mpsc::channel::<(usize, StudyReceived)>(64);
    for shard in 0..shards.count() {
        tokio::spawn(follow(shards.clone(), shard, events_tx.clone()));
    }
    drop(events_tx);
    let (tx, rx) = mpsc::channel(16);
    let filter = request.filter;
    tokio::spawn(async move {
        loop {
            let (holder, study) = tokio::select! {
                next = events.recv() => match next {
                    Some(next) => next,
                    None => return,
                },
                () = tx.closed() => return,
            };
            let event = gather(&shards, holder, study, &modes, &filter, top_k).await;
            let failed = event.is_err();
            if tx.send(event).await.is_err() || failed {
                return; // the client went away, or was told why the stream ends
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// One shard's similar studies.
async fn similar(
    channel: Channel,
    request: SimilarStudiesRequest,
) -> Result<ShardSimilarStudies, Status> {
    ShardServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .similar_studies(request)
        .await
        .map(Response::into_inner)
}

/// Forwards `shard`'s received studies to `events` until nobody reads them; a replica that
/// fails is replaced by the next (studies received meanwhile may be missed).
async fn follow(shards: Shards, shard: usize, events: mpsc::Sender<(usize, StudyReceived)>) {
    loop {
        for channel in shards.replicas(shard).to_vec() {
            let mut client = ShardServiceClient::new(channel);
            let opened = tokio::select! {
                opened = client.studies_received(StudiesReceivedRequest {}) => opened,
                () = events.closed() => return,
            };
            let mut stream = match opened {
                Ok(stream) => stream.into_inner(),
                Err(status) => {
                    tracing::debug!(shard, %status, "a shard replica's received studies cannot be followed");
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    next = stream.message() => next,
                    () = events.closed() => return,
                };
                match next {
                    Ok(Some(study)) => {
                        if events.send((shard, study)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(shard, %status, "a shard replica's stream of received studies ended");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = events.closed() => return,
        }
    }
}

/// The event of a study received on shard `holder`: per mode, the holder's similar studies
/// (the study left out) and every other shard's for the study's codes, merged.
async fn gather(
    shards: &Shards,
    holder: usize,
    study: StudyReceived,
    modes: &[i32],
    filter: &str,
    top_k: u32,
) -> Result<WatchEvent, Status> {
    let mut results = Vec::with_capacity(modes.len());
    let mut slices = 0;
    for &mode in modes {
        let ask = SimilarStudiesRequest {
            study_instance_uid: study.study_instance_uid.clone(),
            codes: Vec::new(),
            mode,
            filter: filter.to_string(),
            top_k,
        };
        let own = shards
            .on_replicas(holder, move |channel| similar(channel, ask.clone()))
            .await?;
        slices = own.codes.len() as u32;
        let model_id = own.model_id.clone();
        let mut answers = vec![own.clone()];
        if !own.codes.is_empty() {
            let mut asking = tokio::task::JoinSet::new();
            for shard in (0..shards.count()).filter(|&s| s != holder) {
                let ask = SimilarStudiesRequest {
                    study_instance_uid: String::new(),
                    codes: own.codes.clone(),
                    mode,
                    filter: filter.to_string(),
                    top_k,
                };
                let shards = shards.clone();
                asking.spawn(async move {
                    shards
                        .on_replicas(shard, move |channel| similar(channel, ask.clone()))
                        .await
                });
            }
            while let Some(done) = asking.join_next().await {
                let answer =
                    done.map_err(|e| Status::internal(format!("a shard call failed: {e}")))??;
                if !answer.model_id.is_empty() && answer.model_id != model_id {
                    return Err(Status::failed_precondition(format!(
                        "the shards serve models {model_id:?} and {:?}: codes of two models are \
                         never compared; finish the re-index on every shard",
                        answer.model_id
                    )));
                }
                answers.push(answer);
            }
        }
        let lists = answers
            .into_iter()
            .map(|a| {
                a.hits
                    .into_iter()
                    .zip(a.stream_sequences)
                    .collect::<Vec<_>>()
            })
            .collect();
        let merged = merge_top_k(lists, top_k as usize, |(hit, sequence)| RankKey {
            distance: hit.distance,
            stream_sequence: *sequence,
            frame: hit.slice.as_ref().map_or(0, |s| s.frame),
        })
        .map_err(|e| Status::internal(e.to_string()))?;
        results.push(ModeResults {
            mode,
            model_id,
            hits: merged
                .into_iter()
                .enumerate()
                .map(|(i, (mut hit, _))| {
                    hit.rank = i as u32 + 1;
                    hit
                })
                .collect(),
        });
    }
    Ok(WatchEvent {
        study_instance_uid: study.study_instance_uid,
        slices,
        completed_unix_ms: study.completed_unix_ms,
        results,
    })
}
