//! The DICOM answer to viewers: for every received study, a Key Object Selection document
//! referencing its most similar studies' best slices in each mode, C-STOREd to every KOS
//! destination listed at that moment (changed at run time through the admin API). Configured only for de-identified or teaching archives (the configuration refuses
//! anything else), because the document references other patients' images. Each document
//! sent, or that failed to be sent, is a `kos` event of the audit trail naming the patients and
//! studies it references.

use std::sync::Arc;
use std::time::Duration;

use diptych_dicom_adapter::Uid;
use diptych_dicom_adapter::output::{
    Destination, ReferencedInstance, SimilarStudies, StudyIdentity, send_instance,
};
use tokio::sync::broadcast::error::RecvError;

use crate::admin::{KosDestination, KosDestinations};
use crate::audit::event::disclosed;
use crate::audit::{Audit, AuditEvent, Disclosed, Outcome, What, Who};
use crate::catalog::{CatalogError, UidLookup};
use crate::index::Index;
use crate::search::Mode;
use crate::watch::{Interest, Question, ReceivedStudy, SimilarError};

/// How long one KOS transfer may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The modes a KOS references, with their names in the document; combined mode at the
/// bundle's balance (`Manifest::combined_balance`), as a search that names no weights.
fn modes(index: &Index) -> [(Mode, &'static str); 3] {
    [
        (Mode::Normal, "normal"),
        (Mode::Abnormal, "abnormal"),
        (
            Mode::Combined {
                normal_weight: 1.0,
                abnormal_weight: index.engine().manifest().combined_balance,
            },
            "combined",
        ),
    ]
}

/// Sends a KOS per received study, referencing `top_k` similar instances per mode, to each of
/// `destinations` as listed when the document is ready, until the server stops; each sending
/// is recorded in `audit`.
pub async fn run(
    index: Arc<Index>,
    destinations: KosDestinations,
    top_k: u32,
    calling_ae: String,
    audit: Audit,
) {
    // What the KOS asks of every study, shared with the Watch streams that ask the same.
    let interests = modes(&index).into_iter().map(|(mode, _)| Interest {
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
                    send(target, &calling_ae, &study.study_instance_uid, &kos, &audit).await;
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "KOS could not be built"),
        }
    }
}

/// Sends one KOS document to one destination, logging the outcome and recording it in the
/// audit trail before going on.
async fn send(
    target: &KosDestination,
    calling_ae: &str,
    study: &Uid,
    kos: &KosDocument,
    audit: &Audit,
) {
    let (addr, sent) = match target.resolve().await {
        Ok(addr) => {
            let destination = Destination {
                addr,
                called_ae: target.ae_title.clone(),
                calling_ae: calling_ae.to_string(),
            };
            let sent = send_instance(&destination, &kos.bytes, SEND_TIMEOUT).await;
            (Some(addr), sent.map_err(|e| e.to_string()))
        }
        Err(error) => (None, Err(format!("the host does not resolve: {error}"))),
    };
    let (outcome, status, reason) = match &sent {
        Ok(0) => {
            tracing::info!(destination = %target, "KOS of a received study sent");
            (Outcome::Success, Some(0), None)
        }
        Ok(status) => {
            let status = *status;
            tracing::warn!(destination = %target, status = format!("{status:#06X}"), "KOS refused");
            let reason = "the viewer refused the KOS".to_string();
            (Outcome::Failure, Some(status), Some(reason))
        }
        Err(error) => {
            tracing::warn!(destination = %target, %error, "KOS could not be sent");
            (Outcome::Failure, None, Some(error.clone()))
        }
    };
    let event = kos_event(
        calling_ae,
        &target.ae_title,
        addr.map_or_else(|| target.to_string(), |a| a.to_string()),
        study,
        kos.clone(),
        outcome,
        status,
    );
    audit
        .confirm(match reason {
            Some(reason) => event.with_reason(reason),
            None => event,
        })
        .await;
}

/// The `kos` event of `kos`, about the received study `study`, sent from `calling_ae` to
/// `called_ae` at `peer`.
fn kos_event(
    calling_ae: &str,
    called_ae: &str,
    peer: String,
    study: &Uid,
    kos: KosDocument,
    outcome: Outcome,
    status: Option<u16>,
) -> AuditEvent {
    AuditEvent::now(
        outcome,
        Who::dicom(calling_ae, called_ae),
        Some(peer),
        What::Kos {
            study_instance_uid: study.as_str().to_string(),
            patient_id: kos.patient_id,
            instances: kos.instances,
            returned: kos.returned,
            status: status.map(|s| format!("{s:#06X}").replace("0X", "0x")),
        },
    )
}

/// A KOS document of a received study, and what the audit trail says of it.
#[derive(Debug, Clone)]
pub struct KosDocument {
    /// The document, DICOM Part-10.
    pub bytes: Vec<u8>,
    /// The Patient ID of the received study.
    pub patient_id: String,
    /// Instances it references.
    pub instances: usize,
    /// The distinct patients and studies it references, in the document's order.
    pub returned: Vec<Disclosed>,
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
) -> Result<Option<KosDocument>, KosError> {
    let study_instance_uid = &study.study_instance_uid;
    let mut hits = Vec::new();
    let mut patients = Vec::new();
    for (mode, name) in modes(index) {
        let similar = study
            .similar_studies(index, mode, "", top_k as usize)
            .await?;
        for (rank, view) in similar.hits().iter().enumerate() {
            let m = view.record.metadata.clone();
            patients.push((m.patient_id.clone(), m.study_instance_uid.clone()));
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
    let patient_id = received.patient_id.clone();
    let instances = hits.len();
    let similar = SimilarStudies {
        received,
        title: "diptych: similar studies".to_string(),
        hits,
    };
    Ok(Some(KosDocument {
        bytes: similar.key_object_part10()?,
        patient_id,
        instances,
        returned: disclosed(patients.iter().map(|(p, s)| (p.as_str(), s.as_str()))),
    }))
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
