//! A received C-STORE handed to the index: the DICOM status follows from the index's outcome,
//! and success is only answered once the instance is durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use diptych_dicom_adapter::scp::{ReceivedInstance, StoreOutcome, StoreSink};

use crate::index::{AcceptOutcome, Index, Refusal};

/// Counts of what the listener received, for metrics and the statistics call.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Instances acknowledged with success (new, duplicate or non-image).
    pub stored: AtomicU64,
    /// Instances refused.
    pub refused: AtomicU64,
}

/// The [`StoreSink`] of `diptych serve`: every instance goes through [`Index::accept`].
pub struct IndexSink {
    index: Arc<Index>,
    /// What the listener received.
    pub counters: ListenerCounters,
}

impl IndexSink {
    /// A sink feeding `index`.
    pub fn new(index: Arc<Index>) -> Self {
        IndexSink {
            index,
            counters: ListenerCounters::default(),
        }
    }
}

impl StoreSink for IndexSink {
    fn store(
        &self,
        instance: ReceivedInstance,
    ) -> Pin<Box<dyn Future<Output = StoreOutcome> + Send + '_>> {
        Box::pin(async move {
            let outcome = match self.index.accept(instance.part10).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return StoreOutcome::OutOfResources(error.to_string());
                }
            };
            match outcome {
                AcceptOutcome::Accepted { .. } => {
                    self.counters.stored.fetch_add(1, Ordering::Relaxed);
                    StoreOutcome::Stored
                }
                AcceptOutcome::Duplicate { .. } => {
                    self.counters.stored.fetch_add(1, Ordering::Relaxed);
                    StoreOutcome::Stored
                }
                AcceptOutcome::NonImage => {
                    self.counters.stored.fetch_add(1, Ordering::Relaxed);
                    StoreOutcome::NonImage
                }
                AcceptOutcome::Refused { refusal, .. } => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    match refusal {
                        Refusal::CannotUnderstand(m) => StoreOutcome::CannotUnderstand(m),
                        Refusal::OutOfResources(m) => StoreOutcome::OutOfResources(m),
                    }
                }
            }
        })
    }
}
