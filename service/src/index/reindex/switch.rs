//! The switch, run by the apply worker (the index's only writer) once everything it applied is
//! committed: the new store catches up with the last records, takes the deletes made meanwhile,
//! is synced, the catalog's abnormality scores are replaced by the new model's, and the catalog
//! commit that holds them and names the new generation makes it the serving store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::{Prepared, ReindexPhase, target};
use crate::catalog::Checkpoint;
use crate::index::{Index, Serving};
use crate::record::RecordId;
use crate::search::persist::{self, Identity};

/// What the worker answers: done, or why not with the re-index handed back.
type Answer = Result<(), (String, Prepared)>;

/// A re-index handed to the apply worker for its switch.
pub struct SwitchRequest {
    prepared: Prepared,
    reply: oneshot::Sender<Answer>,
}

impl SwitchRequest {
    pub(super) fn new(prepared: Prepared) -> (SwitchRequest, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        (SwitchRequest { prepared, reply }, answer)
    }

    pub(super) fn into_prepared(self) -> Prepared {
        self.prepared
    }

    /// Answers that the switch did not happen, for `reason`.
    pub fn refuse(self, reason: String) -> Result<(), String> {
        let _ = self.reply.send(Err((reason.clone(), self.prepared)));
        Err(reason)
    }
}

/// Switches search to the re-indexed model; see the module docs. Nothing changes unless the
/// catalog commit succeeds; after it, only in-memory state and clean-up remain.
pub async fn switch(index: &Arc<Index>, request: SwitchRequest) -> Result<(), String> {
    let SwitchRequest {
        mut prepared,
        reply,
    } = request;
    let committed = match catch_up(index, &mut prepared).await {
        Ok(committed) => committed,
        Err(reason) => {
            let _ = reply.send(Err((reason.clone(), prepared)));
            return Err(reason);
        }
    };
    // No search runs from the commit to the new model in memory: each sees one model whole.
    let one_model = index.model_switch.write().await;
    if let Err(reason) = commit(index, &prepared, committed) {
        drop(one_model);
        let _ = reply.send(Err((reason.clone(), prepared)));
        return Err(reason);
    }
    let Prepared {
        target,
        engine,
        tables,
        staging,
    } = prepared;
    let identity = Identity::new(&target.model_id, staging.stamp().positions, &tables);
    {
        let mut codes = index.codes.write().expect("code store lock poisoned");
        let mut search = index.search.write().expect("search lock poisoned");
        let mut serving = index.serving.write().expect("serving model lock poisoned");
        let old = std::mem::replace(&mut *codes, staging);
        drop(old);
        // Same records, same deletes: only the projections belong to the old codes.
        search.index = None;
        *serving = Arc::new(Serving {
            engine,
            tables,
            generation: target.generation,
        });
    }
    {
        let mut file = index.search_file.lock().expect("search file lock poisoned");
        file.file = crate::search::PersistedIndex::new(index.dir.join(persist::FOLDER), identity);
        file.saved_at = None;
    }
    drop(one_model);
    renew_frames(index, committed);
    index.building.store(false, Ordering::Release);
    target::finish(&index.dir, target.generation);
    index.build_search_index_when_worth_it(committed);
    index.reindex.update(|s| {
        s.phase = ReindexPhase::Done;
        s.records_done = committed as u64;
        s.records_total = committed as u64;
    });
    tracing::info!(
        model_id = %target.model_id,
        records = committed,
        "re-index done: search uses the new model"
    );
    let _ = reply.send(Ok(()));
    Ok(())
}

/// Everything before the switch commit: the last records encoded, the deletes copied, the new
/// store synced, the bundle recorded, and the catalog's abnormality scores replaced by the new
/// model's (pending until the commit). Returns the records switched.
async fn catch_up(index: &Arc<Index>, prepared: &mut Prepared) -> Result<usize, String> {
    let committed = index.codes.read().expect("code store lock poisoned").len();
    while prepared.staging.len() < committed {
        let start = prepared.staging.len();
        let end = committed.min(start + super::BATCH);
        index
            .reencode(&prepared.engine, &mut prepared.staging, start..end)
            .await?;
    }
    let deleted: Vec<RecordId> = {
        let store = index.codes.read().expect("code store lock poisoned");
        let (old, new) = (store.view(), prepared.staging.view());
        (0..committed)
            .filter(|&i| old.records()[i].is_deleted() && !new.records()[i].is_deleted())
            .map(|i| i as RecordId)
            .collect()
    };
    let store_error = |e: crate::store::StoreError| format!("the new code store: {e}");
    prepared.staging.tombstone(&deleted).map_err(store_error)?;
    prepared.staging.sync().map_err(store_error)?;
    target::serving(&index.dir, &prepared.target).map_err(|e| e.to_string())?;
    let rescored = {
        let view = prepared.staging.view();
        let records = view.records();
        index.catalog.rescore(|record| {
            records
                .get(record as usize)
                .filter(|entry| !entry.is_deleted())
                .map(|entry| entry.abnormality())
        })
    };
    if let Err(error) = rescored {
        roll_back(index);
        return Err(format!(
            "the catalog's abnormality scores cannot be replaced: {error}"
        ));
    }
    Ok(committed)
}

/// The switch commit: the new scores, with the new store's generation in the checkpoint;
/// rolled back when it fails.
fn commit(index: &Index, prepared: &Prepared, committed: usize) -> Result<(), String> {
    let checkpoint = index.catalog.checkpoint();
    let switched = index.catalog.commit(Checkpoint {
        applied_seq: checkpoint.applied_seq,
        records: committed as u64,
        generation: prepared.target.generation,
    });
    if let Err(error) = switched {
        roll_back(index);
        return Err(format!("the switch commit failed: {error}"));
    }
    Ok(())
}

/// Drops the catalog's pending re-scoring after a failed switch.
fn roll_back(index: &Index) {
    if let Err(error) = index.catalog.roll_back() {
        tracing::error!(%error, "rolling the catalog back after a failed switch failed");
    }
}

/// Kept frames made with other pre-processing than the new model's are of no further use: they
/// are removed, and frames are kept anew from the next record on.
fn renew_frames(index: &Index, committed: usize) {
    let wanted = index.engine().manifest().preprocess;
    let mut frames = index.frames.lock().expect("frames lock poisoned");
    let Some(old) = frames.as_ref() else {
        return;
    };
    if old.preprocess() == wanted {
        return;
    }
    *frames = None;
    let dir = index.dir.join("frames");
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(%error, "removing the kept frames of the old pre-processing failed");
    }
    match crate::store::FrameStore::open(&dir, wanted, committed) {
        Ok(store) => *frames = Some(store),
        Err(error) => {
            tracing::error!(%error, "frames cannot be kept for the new model; a later re-index fetches from the archive");
        }
    }
}
