//! Deletions through the ingest stream (docs/CLUSTER.md, "Deletes"): a router publishes a
//! deletion on the subject of every shard that may hold what it names, each replica applies it
//! in stream order like an instance, and a shard rebuilt from the stream replays it after the
//! instances it removes. [`Progress`] is how a replica tells a router that, and what, it removed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::index::DeleteCounts;
use crate::record::DeleteTarget;

/// The header that makes a message of the ingest stream a deletion; its value is the level
/// (`patient`, `study`, `series`, `instance`) and the payload is the identifier.
pub const DELETE_HEADER: &str = "Diptych-Delete";

/// How many deletions' counts a replica remembers for the routers that ask.
const REMEMBERED: usize = 4096;

/// The header and payload of a deletion's message.
pub fn message_of(target: &DeleteTarget) -> ((&'static str, &'static str), Bytes) {
    (
        (DELETE_HEADER, target.level()),
        Bytes::copy_from_slice(target.identifier().as_bytes()),
    )
}

/// Why a deletion's message cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DeleteMessageError {
    /// The level is none of the four.
    #[error(
        "a deletion of the ingest stream names the level {0:?}, not patient, study, series or \
         instance; check that routers and shards run the same release"
    )]
    Level(String),
    /// The identifier is not UTF-8.
    #[error("a deletion of the ingest stream has an identifier that is not UTF-8")]
    Identifier,
}

/// The deletion a message carries; `None` for an instance's message.
pub fn target_of(
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Option<Result<DeleteTarget, DeleteMessageError>> {
    let level = headers?.get(DELETE_HEADER)?.as_str().to_string();
    let identifier = match std::str::from_utf8(payload) {
        Ok(text) => text.to_string(),
        Err(_) => return Some(Err(DeleteMessageError::Identifier)),
    };
    Some(match level.as_str() {
        "patient" => Ok(DeleteTarget::Patient(identifier)),
        "study" => Ok(DeleteTarget::Study(identifier)),
        "series" => Ok(DeleteTarget::Series(identifier)),
        "instance" => Ok(DeleteTarget::Instance(identifier)),
        _ => Err(DeleteMessageError::Level(level)),
    })
}

/// A replica's progress through its subject: the highest stream sequence applied, and the
/// counts of its recent deletions.
pub struct Progress {
    applied: watch::Sender<u64>,
    deleted: Mutex<BTreeMap<u64, DeleteCounts>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            applied: watch::Sender::new(0),
            deleted: Mutex::new(BTreeMap::new()),
        }
    }
}

/// What a replica says about one deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletedState {
    /// Its consumer has not reached the deletion yet.
    Pending,
    /// Applied, with what it removed.
    Applied(DeleteCounts),
    /// Applied before this process started: the counts are gone.
    AppliedUncounted,
}

impl Progress {
    /// Everything up to `sequence` is applied and durable here.
    pub fn advance(&self, sequence: u64) {
        self.applied.send_if_modified(|at| {
            let moved = sequence > *at;
            *at = (*at).max(sequence);
            moved
        });
    }

    /// The deletion at `sequence` removed `counts` (call before [`Progress::advance`]).
    pub fn record_delete(&self, sequence: u64, counts: DeleteCounts) {
        let mut deleted = self.deleted.lock().expect("deletion counts poisoned");
        deleted.insert(sequence, counts);
        while deleted.len() > REMEMBERED {
            deleted.pop_first();
        }
    }

    /// Waits at most `wait` until the deletion at `sequence` is applied here.
    pub async fn deleted(&self, sequence: u64, wait: Duration) -> DeletedState {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(wait, applied.wait_for(|at| *at >= sequence)).await;
        if !matches!(reached, Ok(Ok(_))) {
            return DeletedState::Pending;
        }
        match self
            .deleted
            .lock()
            .expect("deletion counts poisoned")
            .get(&sequence)
        {
            Some(counts) => DeletedState::Applied(*counts),
            None => DeletedState::AppliedUncounted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_round_trips_through_its_message() {
        for target in [
            DeleteTarget::Patient("PAT 1/ü".into()),
            DeleteTarget::Study("1.2.3".into()),
            DeleteTarget::Series("1.2.3.4".into()),
            DeleteTarget::Instance("1.2.3.4.5".into()),
        ] {
            let ((name, value), payload) = message_of(&target);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(name, value);
            let back = target_of(Some(&headers), &payload).unwrap().unwrap();
            assert_eq!(back, target);
        }
        assert!(target_of(None, b"1.2.3").is_none());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(DELETE_HEADER, "everything");
        assert!(matches!(
            target_of(Some(&headers), b"x"),
            Some(Err(DeleteMessageError::Level(_)))
        ));
    }

    #[tokio::test]
    async fn a_router_learns_what_a_deletion_removed_once_it_is_applied() {
        let progress = Progress::default();
        let short = Duration::from_millis(20);
        assert_eq!(progress.deleted(5, short).await, DeletedState::Pending);
        let counts = DeleteCounts {
            records: 3,
            instances: 1,
        };
        progress.record_delete(5, counts);
        progress.advance(5);
        assert_eq!(
            progress.deleted(5, short).await,
            DeletedState::Applied(counts)
        );
        progress.advance(9);
        assert_eq!(
            progress.deleted(7, short).await,
            DeletedState::AppliedUncounted
        );
    }
}
