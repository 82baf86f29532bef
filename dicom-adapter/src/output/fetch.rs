//! Fetching instances by UID from an archive (C-GET, PS3.4 C.4.3; or C-MOVE to diptych's own
//! listener, [`move_to`]): a whole study, a series or
//! one instance, each instance handed to a [`StoreSink`] — the same sink the DICOM listener
//! feeds — and acknowledged to the archive only with the status the sink answered, so an
//! instance counts as fetched only once it is durable.
//!
//! C-GET brings the instances back on the association that asked for them: diptych proposes the
//! image storage SOP classes with the SCP role (role selection, PS3.7 D.3.3.4) and the transfer
//! syntaxes this build decodes, and answers each C-STORE sub-operation like its listener does
//! (the data set checked by the listener's own code, then the sink). Backfill uses it to pull
//! studies; re-indexing can use it to fetch instances again by their UIDs.

use std::collections::HashMap;
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_ul::association::client::{AsyncClientAssociation, ClientAssociationOptions};
use dicom_ul::pdu::PresentationContextResultReason;
use tokio::net::TcpStream;

use super::error::{ExchangeError, RetrieveError};
use super::message;
use super::qr_dimse::{
    Incoming, STUDY_ROOT_GET, STUDY_ROOT_MOVE, SubOperations, field, is_pending, request,
};
use super::send::{self, Destination};
use crate::instance::error_chain;
use crate::limits::Limits;
use crate::scp::dimse::{Response, status};
use crate::scp::store::{StoreRequest, check, part10_prefix};
use crate::scp::{StoreOutcome, StoreSink};
use crate::uid::Uid;

/// Largest PDU diptych accepts from the archive while fetching.
const MAX_RECEIVED_PDU: u32 = 1 << 20;

/// The image storage SOP classes proposed for the C-STORE sub-operations (with the retrieve
/// context, within the 128 presentation contexts an association may carry). Instances of other
/// classes (reports, presentation states) are not indexed, so they are not fetched: the archive
/// counts them as failed sub-operations.
pub const FETCHED_SOP_CLASSES: &[&str] = &[
    uids::CT_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
    uids::MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_COLOR_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE,
    uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PROCESSING,
    uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PROCESSING,
    uids::BREAST_TOMOSYNTHESIS_IMAGE_STORAGE,
    uids::X_RAY_ANGIOGRAPHIC_IMAGE_STORAGE,
    uids::ENHANCED_XA_IMAGE_STORAGE,
    uids::X_RAY_RADIOFLUOROSCOPIC_IMAGE_STORAGE,
    uids::ENHANCED_XRF_IMAGE_STORAGE,
    uids::NUCLEAR_MEDICINE_IMAGE_STORAGE,
    uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
    uids::ENHANCED_PET_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_PET_IMAGE_STORAGE,
    uids::ULTRASOUND_IMAGE_STORAGE,
    uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
    uids::RT_IMAGE_STORAGE,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_BYTE_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_TRUE_COLOR_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::VL_PHOTOGRAPHIC_IMAGE_STORAGE,
];

/// What to fetch, by UID (Study Root: a series or an instance is named with its study).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchTarget {
    /// Every instance of a study.
    Study(Uid),
    /// Every instance of a series.
    Series {
        /// Study Instance UID.
        study: Uid,
        /// Series Instance UID.
        series: Uid,
    },
    /// One instance.
    Instance {
        /// Study Instance UID.
        study: Uid,
        /// Series Instance UID.
        series: Uid,
        /// SOP Instance UID.
        instance: Uid,
    },
}

impl FetchTarget {
    /// The retrieve identifier: the level and the unique keys down to it.
    fn identifier(&self) -> InMemDicomObject {
        let mut object = InMemDicomObject::new_empty();
        let mut put = |tag, vr, value: &str| {
            object.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        };
        let (level, study, series, instance) = match self {
            FetchTarget::Study(study) => ("STUDY", study, None, None),
            FetchTarget::Series { study, series } => ("SERIES", study, Some(series), None),
            FetchTarget::Instance {
                study,
                series,
                instance,
            } => ("IMAGE", study, Some(series), Some(instance)),
        };
        put(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level);
        put(tags::STUDY_INSTANCE_UID, VR::UI, study.as_str());
        if let Some(series) = series {
            put(tags::SERIES_INSTANCE_UID, VR::UI, series.as_str());
        }
        if let Some(instance) = instance {
            put(tags::SOP_INSTANCE_UID, VR::UI, instance.as_str());
        }
        object
    }
}

/// Bounds of a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Longest wait for the archive's next message (the fetch as a whole may take longer).
    pub idle_timeout: Duration,
    /// Largest data set accepted for one instance.
    pub max_instance_bytes: u64,
    /// Bounds checked on every instance, as on the listener.
    pub limits: Limits,
}

impl Default for FetchOptions {
    /// 60 s idle, 1 GiB per instance, the default limits.
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            max_instance_bytes: 1 << 30,
            limits: Limits::default(),
        }
    }
}

/// An instance the archive sent that diptych refused (the status it answered the archive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedInstance {
    /// SOP Instance UID as the archive's command named it (padding stripped).
    pub sop_instance_uid: String,
    /// The status diptych answered.
    pub status: u16,
    /// Why (no patient data).
    pub comment: String,
}

/// How a fetch went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Instances the sink made durable (images, or accepted non-image objects).
    pub stored: u32,
    /// Instances the sink or the checks refused.
    pub refused: Vec<RefusedInstance>,
    /// The archive's final status: 0x0000 all sent, 0xB000 some sub-operations failed, 0xA7xx,
    /// 0xA9xx or 0xCxxx it could not retrieve.
    pub status: u16,
    /// The archive's own counts in its final response.
    pub archive_counts: SubOperations,
}

impl FetchReport {
    /// Whether everything the archive holds for the target is now durable here.
    pub fn complete(&self) -> bool {
        self.status == 0x0000 && self.refused.is_empty() && self.archive_counts.failed == 0
    }
}

/// Fetches `target` from `archive` by C-GET, handing each instance to `sink`; `Ok` once the
/// archive sent its final response, whatever its status (see [`FetchReport`]).
pub async fn fetch(
    archive: &Destination,
    target: &FetchTarget,
    sink: &dyn StoreSink,
    options: FetchOptions,
) -> Result<FetchReport, RetrieveError> {
    let transfer_syntaxes = crate::scp::decodable_transfer_syntaxes();
    let syntaxes: Vec<&str> = transfer_syntaxes.iter().map(String::as_str).collect();
    let mut proposal = ClientAssociationOptions::new()
        .calling_ae_title(archive.calling_ae.as_str())
        .called_ae_title(archive.called_ae.as_str())
        .max_pdu_length(MAX_RECEIVED_PDU)
        .with_presentation_context(
            STUDY_ROOT_GET,
            vec![
                uids::EXPLICIT_VR_LITTLE_ENDIAN,
                uids::IMPLICIT_VR_LITTLE_ENDIAN,
            ],
        );
    for class in FETCHED_SOP_CLASSES {
        proposal = proposal
            .with_presentation_context(*class, syntaxes.clone())
            .with_role_selection(*class, false, true);
    }
    let connect =
        tokio::time::timeout(options.idle_timeout, proposal.establish_async(archive.addr));
    let mut association = match connect.await {
        Ok(Ok(association)) => association,
        Ok(Err(e)) => {
            return Err(RetrieveError::Associate {
                archive: archive.to_string(),
                calling_ae: archive.calling_ae.clone(),
                message: error_chain(&e),
            });
        }
        Err(_) => {
            return Err(RetrieveError::Timeout {
                archive: archive.to_string(),
                operation: "C-GET",
                after: options.idle_timeout,
            });
        }
    };
    let contexts: HashMap<u8, (String, String)> = association
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                pc.id,
                (pc.abstract_syntax.clone(), pc.transfer_syntax.clone()),
            )
        })
        .collect();
    let Some((&get_context, (_, get_syntax))) = contexts
        .iter()
        .find(|(_, (abstract_syntax, _))| abstract_syntax == STUDY_ROOT_GET)
    else {
        let _ = association.abort().await;
        return Err(RetrieveError::NotAccepted {
            archive: archive.to_string(),
            what: "Study Root Query/Retrieve – GET (C-GET)",
        });
    };
    let get_syntax = get_syntax.clone();
    let outcome = exchange(
        &mut association,
        archive,
        target,
        sink,
        options,
        (get_context, &get_syntax),
        &contexts,
    )
    .await;
    super::send::finish(association, archive, "C-GET", outcome).await
}

/// Asks `archive` to send `target` to the AE title `destination_ae` (C-MOVE): for archives that
/// only move. The instances arrive on that node's own listener — diptych's, so they go through
/// its C-STORE path — and the archive must know where `destination_ae` listens. Returns the
/// archive's final status and counts once it has sent everything (0x0000, or 0xB000 when some
/// sub-operations failed); `Err` when it could not retrieve at all.
pub async fn move_to(
    archive: &Destination,
    target: &FetchTarget,
    destination_ae: &str,
    idle_timeout: Duration,
) -> Result<(u16, SubOperations), RetrieveError> {
    let send::Accepted {
        mut association,
        context_id,
        transfer_syntax,
    } = tokio::time::timeout(
        idle_timeout,
        send::associate_query_retrieve(
            archive,
            STUDY_ROOT_MOVE,
            "Study Root Query/Retrieve – MOVE (C-MOVE)",
        ),
    )
    .await
    .map_err(|_| RetrieveError::Timeout {
        archive: archive.to_string(),
        operation: "C-MOVE",
        after: idle_timeout,
    })??;
    let protocol = |error| RetrieveError::Protocol {
        archive: archive.to_string(),
        operation: "C-MOVE",
        error,
    };
    let outcome = async {
        let identifier = send::encode(&target.identifier(), &transfer_syntax).map_err(protocol)?;
        let message_id = 1;
        let command = request(
            field::C_MOVE_RQ,
            message_id,
            STUDY_ROOT_MOVE,
            Some(destination_ae),
        );
        message::send(&mut association, context_id, &command, Some(&identifier))
            .await
            .map_err(protocol)?;
        loop {
            let receive = message::receive(&mut association, 1 << 20, |c| {
                Ok(Incoming::parse(c)?.has_data_set)
            });
            let reply = tokio::time::timeout(idle_timeout, receive)
                .await
                .map_err(|_| RetrieveError::Timeout {
                    archive: archive.to_string(),
                    operation: "C-MOVE",
                    after: idle_timeout,
                })?
                .map_err(protocol)?;
            let response = Incoming::parse(&reply.command).map_err(|e| protocol(e.into()))?;
            if response.field != field::C_MOVE_RSP || response.responding_to != message_id {
                return Err(protocol(ExchangeError::WrongMessage {
                    got: response.responding_to,
                    expected: message_id,
                }));
            }
            let status = response.status().map_err(|e| protocol(e.into()))?;
            if is_pending(status) {
                continue;
            }
            if !matches!(status, 0x0000 | 0xB000) && response.sub_operations.completed == 0 {
                return Err(RetrieveError::Failed {
                    archive: archive.to_string(),
                    operation: "C-MOVE",
                    status,
                    comment: response.error_comment.unwrap_or_default(),
                });
            }
            return Ok((status, response.sub_operations));
        }
    }
    .await;
    super::send::finish(association, archive, "C-MOVE", outcome).await
}

/// Sends the C-GET and serves its sub-operations until the final response.
async fn exchange(
    association: &mut AsyncClientAssociation<TcpStream>,
    archive: &Destination,
    target: &FetchTarget,
    sink: &dyn StoreSink,
    options: FetchOptions,
    (get_context, get_syntax): (u8, &str),
    contexts: &HashMap<u8, (String, String)>,
) -> Result<FetchReport, RetrieveError> {
    let protocol = |error| RetrieveError::Protocol {
        archive: archive.to_string(),
        operation: "C-GET",
        error,
    };
    let identifier = send::encode(&target.identifier(), get_syntax).map_err(protocol)?;
    let message_id = 1;
    let command = request(field::C_GET_RQ, message_id, STUDY_ROOT_GET, None);
    message::send(association, get_context, &command, Some(&identifier))
        .await
        .map_err(protocol)?;
    let mut report = FetchReport::default();
    loop {
        let receive = message::receive(association, options.max_instance_bytes, |c| {
            Ok(Incoming::parse(c)?.has_data_set)
        });
        let incoming = match tokio::time::timeout(options.idle_timeout, receive).await {
            Ok(result) => result.map_err(protocol)?,
            Err(_) => {
                return Err(RetrieveError::Timeout {
                    archive: archive.to_string(),
                    operation: "C-GET",
                    after: options.idle_timeout,
                });
            }
        };
        let command = Incoming::parse(&incoming.command).map_err(|e| protocol(e.into()))?;
        match command.field {
            field::C_STORE_RQ => {
                let Some(data) = incoming.data else {
                    return Err(protocol(ExchangeError::UnexpectedPdu(
                        "a C-STORE-RQ without a data set",
                    )));
                };
                let (class, syntax) = contexts
                    .get(&incoming.context_id)
                    .cloned()
                    .unwrap_or_default();
                let store_request = StoreRequest {
                    calling_ae: archive.called_ae.clone(),
                    sop_class_uid: command.affected_class.clone(),
                    sop_instance_uid: command.affected_instance.clone(),
                    context_class: class,
                    transfer_syntax: syntax,
                };
                let (status, comment) = store_one(store_request, data, sink, options.limits).await;
                if status == status::SUCCESS {
                    report.stored += 1;
                } else {
                    report.refused.push(RefusedInstance {
                        sop_instance_uid: command.affected_instance.clone(),
                        status,
                        comment: comment.clone().unwrap_or_default(),
                    });
                }
                let response = Response {
                    field: field::C_STORE_RSP,
                    message_id: command.message_id,
                    status,
                    affected_class: &command.affected_class,
                    affected_instance: &command.affected_instance,
                    error_comment: comment.as_deref(),
                }
                .encode();
                message::send(association, incoming.context_id, &response, None)
                    .await
                    .map_err(protocol)?;
            }
            field::C_GET_RSP => {
                if command.responding_to != message_id {
                    return Err(protocol(ExchangeError::WrongMessage {
                        got: command.responding_to,
                        expected: message_id,
                    }));
                }
                let status = command.status().map_err(|e| protocol(e.into()))?;
                if is_pending(status) {
                    continue;
                }
                report.status = status;
                report.archive_counts = command.sub_operations;
                if !matches!(status, 0x0000 | 0xB000) && report.stored == 0 {
                    return Err(RetrieveError::Failed {
                        archive: archive.to_string(),
                        operation: "C-GET",
                        status,
                        comment: command.error_comment.unwrap_or_default(),
                    });
                }
                return Ok(report);
            }
            other => {
                return Err(protocol(ExchangeError::Response(
                    crate::command_set::CommandSetError::UnexpectedCommand {
                        expected: "C-GET-RSP or C-STORE-RQ",
                        got: other,
                    },
                )));
            }
        }
    }
}

/// One C-STORE sub-operation: checked as the listener checks, then handed to the sink; the
/// status and comment to answer.
async fn store_one(
    request: StoreRequest,
    data: Vec<u8>,
    sink: &dyn StoreSink,
    limits: Limits,
) -> (u16, Option<String>) {
    let mut part10 = match part10_prefix(&request) {
        Ok(prefix) => prefix,
        Err(refusal) => return (refusal.status, Some(refusal.comment)),
    };
    part10.extend_from_slice(&data);
    drop(data);
    let checked = tokio::task::spawn_blocking(move || check(request, part10, &limits)).await;
    let instance = match checked {
        Ok(Ok(instance)) => instance,
        Ok(Err(refusal)) => return (refusal.status, Some(refusal.comment)),
        Err(_) => {
            return (
                status::CANNOT_UNDERSTAND,
                Some("an unexpected error (a bug) while checking it".into()),
            );
        }
    };
    match sink.store(instance).await {
        StoreOutcome::Stored | StoreOutcome::NonImage => (status::SUCCESS, None),
        StoreOutcome::OutOfResources(comment) => (status::OUT_OF_RESOURCES, Some(comment)),
        StoreOutcome::CannotUnderstand(comment) => (status::CANNOT_UNDERSTAND, Some(comment)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fetched_class_is_a_storage_class_and_they_fit_one_association() {
        assert!(FETCHED_SOP_CLASSES.len() < 127);
        for class in FETCHED_SOP_CLASSES {
            assert!(crate::scp::is_storage_sop_class(class), "{class}");
        }
    }

    #[test]
    fn an_instance_target_names_every_level_above_it() {
        let uid = |s| Uid::parse(s).unwrap();
        let target = FetchTarget::Instance {
            study: uid("1.2.3"),
            series: uid("1.2.3.4"),
            instance: uid("1.2.3.4.5"),
        };
        let object = target.identifier();
        let text = |tag| object.element(tag).unwrap().to_str().unwrap().to_string();
        assert_eq!(text(tags::QUERY_RETRIEVE_LEVEL), "IMAGE");
        assert_eq!(text(tags::SERIES_INSTANCE_UID), "1.2.3.4");
        assert_eq!(text(tags::SOP_INSTANCE_UID), "1.2.3.4.5");
        let study = FetchTarget::Study(uid("1.2.3")).identifier();
        assert!(study.element(tags::SERIES_INSTANCE_UID).is_err());
    }
}
