//! The DICOM answer to viewers: for every received study, a Key Object Selection document
//! referencing its most similar studies' best slices in each mode, C-STOREd to every KOS
//! destination listed at that moment (changed at run time through the admin API). Configured only for de-identified or teaching archives (the configuration refuses
//! anything else), because the document references other patients' images.

use std::sync::Arc;
use std::time::Duration;

use diptych_dicom_adapter::Uid;
use diptych_dicom_adapter::output::{
    Destination, ReferencedInstance, SimilarStudies, StudyIdentity, send_instance,
};
use tokio::sync::broadcast::error::RecvError;

use crate::admin::KosDestinations;
use crate::catalog::{CatalogError, UidLookup};
use crate::index::Index;
use crate::search::Mode;
use crate::watch::{Interest, Question, ReceivedStudy, SimilarError};

/// How long one KOS transfer may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The modes a KOS references, with their names in the document.
const MODES: [(Mode, &str); 3] = [
    (Mode::Normal, "normal"),
    (Mode::Abnormal, "abnormal"),
    (
        Mode::Combined {
            normal_weight: 1.0,
            abnormal_weight: 1.0,
        },
        "combined",
    ),
];

/// Sends a KOS per received study, referencing `top_k` similar instances per mode, to each of
/// `destinations` as listed when the document is ready, until the server stops.
pub async fn run(index: Arc<Index>, destinations: KosDestinations, top_k: u32, calling_ae: String) {
    // What the KOS asks of every study, shared with the Watch streams that ask the same.
    let interests = MODES.iter().map(|&(mode, _)| Interest {
        question: Question {
            mode,
            filter: String::new(),
        },
        top_k: top_k as usize,
    });
    let mut received = index.tracker().subscribe(interests);
    loop {
        let study = match received.recv().await {
            Ok(study) => study,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "KOS sender fell behind; some studies get no KOS");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let targets = destinations.snapshot();
        if targets.is_empty() {
            continue;
        }
        match document(&index, &study, top_k).await {
            Ok(Some(kos)) => {
                for target in &targets {
                    send(target, &calling_ae, &kos).await;
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "KOS could not be built"),
        }
    }
}

/// Sends one KOS document to one destination, logging the outcome.
async fn send(target: &crate::admin::KosDestination, calling_ae: &str, kos: &[u8]) {
    let addr = match target.resolve().await {
        Ok(addr) => addr,
        Err(error) => {
            tracing::warn!(destination = %target, %error, "KOS not sent: the host does not resolve");
            return;
        }
    };
    let destination = Destination {
        addr,
        called_ae: target.ae_title.clone(),
        calling_ae: calling_ae.to_string(),
    };
    match send_instance(&destination, kos, SEND_TIMEOUT).await {
        Ok(0) => tracing::info!(%destination, "KOS of a received study sent"),
        Ok(status) => {
            tracing::warn!(%destination, status = format!("{status:#06X}"), "KOS refused")
        }
        Err(error) => tracing::warn!(%error, "KOS could not be sent"),
    }
}

/// Why a study's KOS could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KosError {
    /// Searching for the similar studies failed.
    #[error("searching the studies similar to the received one: {0}")]
    Search(#[from] SimilarError),
    /// Reading the received study's records from the catalog failed.
    #[error("reading the received study from the catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// Writing the KOS document failed.
    #[error("writing the KOS document: {0}")]
    Write(#[from] diptych_dicom_adapter::output::OutputError),
}

/// The KOS of one received study, or `None` when nothing similar is indexed; its searches are
/// those the study's other subscribers share.
pub async fn document(
    index: &Index,
    study: &ReceivedStudy,
    top_k: u32,
) -> Result<Option<Vec<u8>>, KosError> {
    let study_instance_uid = &study.study_instance_uid;
    let mut hits = Vec::new();
    for (mode, name) in MODES {
        let similar = study
            .similar_studies(index, mode, "", top_k as usize)
            .await?;
        for (rank, view) in similar.hits().iter().enumerate() {
            let m = view.record.metadata.clone();
            hits.push(ReferencedInstance {
                study_instance_uid: m.study_instance_uid,
                series_instance_uid: m.series_instance_uid,
                sop_class_uid: m.sop_class_uid,
                sop_instance_uid: m.sop_instance_uid,
                frame: (m.number_of_frames > 1).then_some(view.record.frame + 1),
                rank: rank as u32 + 1,
                distance: view.hit.distance,
                mode: name.to_string(),
            });
        }
    }
    let identity = received_identity(index, study_instance_uid)?;
    let (Some(received), false) = (identity, hits.is_empty()) else {
        return Ok(None);
    };
    let similar = SimilarStudies {
        received,
        title: "diptych: similar studies".to_string(),
        hits,
    };
    Ok(Some(similar.key_object_part10()?))
}

/// Patient and study attributes of the received study, from one of its catalog records.
fn received_identity(
    index: &Index,
    study_instance_uid: &Uid,
) -> Result<Option<StudyIdentity>, CatalogError> {
    let records = index
        .catalog()
        .records_with(&UidLookup::study(study_instance_uid))?;
    let Some(first) = records.iter().map(|&(record, _)| record).min() else {
        return Ok(None);
    };
    let entry = index.catalog().entries(&[first])?.pop().flatten();
    Ok(entry.map(|e| StudyIdentity {
        patient_id: e.metadata.patient_id,
        patient_name: None,
        study_instance_uid: e.metadata.study_instance_uid,
        accession: None,
        study_date: e.metadata.study_date,
        study_id: String::new(),
    }))
}
