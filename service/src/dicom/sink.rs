//! A received C-STORE handed to the index: the DICOM status follows from the index's outcome,
//! and success is only answered once the instance is durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use diptych_dicom_adapter::scp::{ReceivedInstance, StoreOutcome, StoreSink};

use crate::index::{AcceptOutcome, Index, Refusal};

/// The [`StoreSink`] of `diptych serve`: every instance goes through [`Index::accept`].
pub struct IndexSink {
    index: Arc<Index>,
}

impl IndexSink {
    /// A sink feeding `index`.
    pub fn new(index: Arc<Index>) -> Self {
        IndexSink { index }
    }
}

impl StoreSink for IndexSink {
    fn store(
        &self,
        instance: ReceivedInstance,
    ) -> Pin<Box<dyn Future<Output = StoreOutcome> + Send + '_>> {
        Box::pin(async move {
            match self
                .index
                .accept_parsed(instance.part10, instance.parsed)
                .await
            {
                Err(error) => StoreOutcome::OutOfResources(error.to_string()),
                Ok(AcceptOutcome::Accepted { .. } | AcceptOutcome::Duplicate { .. }) => {
                    StoreOutcome::Stored
                }
                Ok(AcceptOutcome::NonImage) => StoreOutcome::NonImage,
                Ok(AcceptOutcome::Refused { refusal, .. }) => match refusal {
                    Refusal::CannotUnderstand(m) => StoreOutcome::CannotUnderstand(m),
                    Refusal::OutOfResources(m) | Refusal::DiskFull(m) | Refusal::Unavailable(m) => {
                        StoreOutcome::OutOfResources(m)
                    }
                },
            }
        })
    }
}
