//! A C-STORE SCU: send one instance to a DICOM destination (a viewer, an archive) and return the
//! status it answered.
//!
//! One association per call: the instance's SOP class is proposed with explicit and implicit VR
//! little endian (an uncompressed instance is re-encoded in whichever the destination accepts) or,
//! for a compressed instance, with its own transfer syntax only. The data set travels in P-DATA
//! fragments no longer than the maximum PDU length the destination announced. The whole exchange,
//! from connecting to releasing, runs under one timeout.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use dicom_ul::Pdu;
use dicom_ul::association::client::{AsyncClientAssociation, ClientAssociationOptions};
use dicom_ul::pdu::{PDataValueType, PresentationContextResultReason};
use tokio::net::TcpStream;

use super::dimse::{parse_store_response, store_request};
use super::error::{ExchangeError, OutputError, RetrieveError};
use crate::instance::error_chain;
use crate::limits::Limits;

/// Largest P-DATA PDU sent, whatever larger length the destination admits (0 means unlimited).
const MAX_SENT_PDU: u32 = 1 << 20;
/// Bytes of a P-DATA PDU taken by one PDV item's header (item length, context ID, control).
const PDV_ITEM_HEADER: u32 = 6;
/// Largest PDU diptych accepts from the destination (its responses are a few hundred bytes).
const MAX_RECEIVED_PDU: u32 = 16_384;

/// Where to send: the destination's address and AE titles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Host and port of the destination's DICOM listener.
    pub addr: SocketAddr,
    /// The destination's AE title (Called AE Title).
    pub called_ae: String,
    /// diptych's AE title as the destination knows it (Calling AE Title).
    pub calling_ae: String,
}

impl fmt::Display for Destination {
    /// `CALLED@host:port`, the way DICOM tools name a destination.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.called_ae, self.addr)
    }
}

/// An association whose proposal the destination accepted.
pub(super) struct Accepted {
    /// The open association.
    pub association: AsyncClientAssociation<TcpStream>,
    /// The accepted presentation context.
    pub context_id: u8,
    /// The transfer syntax accepted with it.
    pub transfer_syntax: String,
}

/// Opens an association with `destination` proposing `abstract_syntax` in `transfer_syntaxes`.
/// `Ok(None)` when the destination accepted none of them (the association is then aborted);
/// `Err` with the association layer's message when it could not be opened at all.
pub(super) async fn associate(
    destination: &Destination,
    abstract_syntax: &str,
    transfer_syntaxes: &[&str],
) -> Result<Option<Accepted>, String> {
    let association = ClientAssociationOptions::new()
        .calling_ae_title(destination.calling_ae.as_str())
        .called_ae_title(destination.called_ae.as_str())
        .with_presentation_context(abstract_syntax, transfer_syntaxes.to_vec())
        .max_pdu_length(MAX_RECEIVED_PDU)
        .establish_async(destination.addr)
        .await
        .map_err(|e| error_chain(&e))?;
    let accepted = association
        .presentation_contexts()
        .iter()
        .find(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && transfer_syntaxes.contains(&pc.transfer_syntax.as_str())
        })
        .map(|pc| (pc.id, pc.transfer_syntax.clone()));
    match accepted {
        Some((context_id, transfer_syntax)) => Ok(Some(Accepted {
            association,
            context_id,
            transfer_syntax,
        })),
        None => {
            let _ = association.abort().await;
            Ok(None)
        }
    }
}

/// Opens a query/retrieve association with `archive` for `abstract_syntax`, proposed in both
/// little endian transfer syntaxes; an archive that accepts neither is refused with an error
/// that names the service (`what`) it would not take.
pub(super) async fn associate_query_retrieve(
    archive: &Destination,
    abstract_syntax: &str,
    what: &'static str,
) -> Result<Accepted, RetrieveError> {
    let syntaxes = [
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
    ];
    associate(archive, abstract_syntax, &syntaxes)
        .await
        .map_err(|message| RetrieveError::Associate {
            archive: archive.to_string(),
            calling_ae: archive.calling_ae.clone(),
            message,
        })?
        .ok_or_else(|| RetrieveError::NotAccepted {
            archive: archive.to_string(),
            what,
        })
}

/// Ends an association after an exchange with `peer`: released when `outcome` is `Ok` (a failed
/// release is only logged: the answer is in hand), aborted when it is `Err`. Returns `outcome`.
pub(super) async fn finish<T, E>(
    association: AsyncClientAssociation<TcpStream>,
    peer: &Destination,
    operation: &'static str,
    outcome: Result<T, E>,
) -> Result<T, E> {
    match &outcome {
        Ok(_) => {
            if let Err(e) = association.release().await {
                tracing::warn!(%peer, operation, error = %error_chain(&e), "association release failed");
            }
        }
        Err(_) => {
            let _ = association.abort().await;
        }
    }
    outcome
}

/// Sends one instance (a Part-10 file or a bare data set) by C-STORE and returns the DICOM status
/// the destination answered: 0x0000 success, 0xB000–0xBFFF a warning (stored), anything else a
/// failure it reported (0xA7xx out of resources, 0xA9xx data set mismatch, 0xCxxx cannot
/// understand). `Err` when no status came back: unreadable instance, connection or association
/// refused, transfer syntax not accepted, protocol error, or `timeout` expired.
pub async fn send_instance(
    destination: &Destination,
    part10: &[u8],
    timeout: Duration,
) -> Result<u16, OutputError> {
    let instance =
        crate::parse(part10, &Limits::default()).map_err(|e| OutputError::InvalidInstance {
            destination: destination.to_string(),
            message: e.to_string(),
        })?;
    match tokio::time::timeout(timeout, exchange(destination, &instance)).await {
        Ok(result) => result,
        Err(_) => Err(OutputError::Timeout {
            destination: destination.to_string(),
            after: timeout,
        }),
    }
}

/// Associates, stores, releases.
async fn exchange(
    destination: &Destination,
    instance: &crate::Instance,
) -> Result<u16, OutputError> {
    let sop_class = instance.sop_class_uid();
    let sop_instance = instance.sop_instance_uid();
    let proposed = proposed_transfer_syntaxes(instance.transfer_syntax());
    let accepted = associate(destination, sop_class.as_str(), &proposed)
        .await
        .map_err(|message| OutputError::Associate {
            destination: destination.to_string(),
            calling_ae: destination.calling_ae.clone(),
            message,
        })?;
    let Some(Accepted {
        mut association,
        context_id,
        transfer_syntax,
    }) = accepted
    else {
        return Err(OutputError::NotAccepted {
            destination: destination.to_string(),
            sop_class,
            offered: proposed.join(" or "),
        });
    };
    let protocol = |error: ExchangeError| OutputError::Protocol {
        destination: destination.to_string(),
        error,
    };
    let message_id = 1;
    let outcome = async {
        let data_set = encode(instance.object(), &transfer_syntax)?;
        let command = store_request(message_id, &sop_class, &sop_instance);
        let response = store(&mut association, context_id, &command, &data_set).await?;
        if response.responding_to != message_id {
            return Err(ExchangeError::WrongMessage {
                got: response.responding_to,
                expected: message_id,
            });
        }
        Ok(response)
    }
    .await;
    // The status is in hand: the instance was stored (or refused) whatever the release does.
    let response = finish(association, destination, "C-STORE", outcome)
        .await
        .map_err(protocol)?;
    if response.status != 0 {
        tracing::warn!(
            %destination,
            status = format_args!("0x{:04X}", response.status),
            comment = response.error_comment.as_deref().unwrap_or(""),
            "C-STORE answered with a non-success status"
        );
    }
    Ok(response.status)
}

/// Transfer syntaxes to propose for an instance held in `current`: both little endian
/// uncompressed syntaxes when it can be re-encoded into them, else its own syntax only.
fn proposed_transfer_syntaxes(current: &str) -> Vec<&'static str> {
    #[allow(deprecated)]
    let native = [
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
        uids::EXPLICIT_VR_BIG_ENDIAN,
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ];
    if native.contains(&current) {
        vec![
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
        ]
    } else {
        match TransferSyntaxRegistry.get(current) {
            Some(ts) => vec![ts.uid()],
            // `parse` only succeeds for registered syntaxes; propose the default to fail clearly.
            None => vec![uids::EXPLICIT_VR_LITTLE_ENDIAN],
        }
    }
}

/// A data set (an instance, or a query's identifier) encoded in the accepted transfer syntax.
pub(crate) fn encode(
    data_set: &dicom_object::InMemDicomObject,
    transfer_syntax: &str,
) -> Result<Vec<u8>, ExchangeError> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| ExchangeError::UnknownTransferSyntax(transfer_syntax.to_string()))?;
    let mut bytes = Vec::new();
    data_set
        .write_dataset_with_ts(&mut bytes, ts)
        .map_err(|e| ExchangeError::Encode {
            transfer_syntax: transfer_syntax.to_string(),
            message: error_chain(&e),
        })?;
    Ok(bytes)
}

/// Sends the command and the data set, and reads the C-STORE response.
async fn store(
    association: &mut AsyncClientAssociation<TcpStream>,
    context_id: u8,
    command: &[u8],
    data_set: &[u8],
) -> Result<super::dimse::StoreResponse, ExchangeError> {
    super::message::send(association, context_id, command, Some(data_set)).await?;
    let response = receive_response(association).await?;
    Ok(parse_store_response(&response)?)
}

/// Reads P-DATA PDUs until the last fragment of a response command set, and returns the
/// command set's bytes.
pub(crate) async fn receive_response(
    association: &mut AsyncClientAssociation<TcpStream>,
) -> Result<Vec<u8>, ExchangeError> {
    let mut response = Vec::new();
    loop {
        let pdu = association
            .receive()
            .await
            .map_err(|e| ExchangeError::Receive(error_chain(&e)))?;
        match pdu {
            Pdu::PData { data } => {
                for value in data {
                    if value.value_type != PDataValueType::Command {
                        return Err(ExchangeError::DataSetInResponse);
                    }
                    response.extend_from_slice(&value.data);
                    if value.is_last {
                        return Ok(response);
                    }
                }
            }
            Pdu::AbortRQ { source } => {
                return Err(ExchangeError::Aborted(format!("{source:?}")));
            }
            other => {
                return Err(ExchangeError::UnexpectedPdu(pdu_name(&other)));
            }
        }
    }
}

/// Longest PDV value that fits a P-DATA PDU for a destination admitting `max_pdu` bytes.
pub(super) fn fragment_len(max_pdu: u32) -> usize {
    let max_pdu = if max_pdu == 0 {
        MAX_SENT_PDU
    } else {
        max_pdu.min(MAX_SENT_PDU)
    };
    max_pdu.saturating_sub(PDV_ITEM_HEADER).max(2) as usize
}

/// The kind of a PDU, without its content.
pub(super) fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
        _ => "an unknown PDU",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_fit_the_announced_pdu_length() {
        assert_eq!(fragment_len(16_384), 16_378);
        assert_eq!(fragment_len(0), (MAX_SENT_PDU - 6) as usize);
        assert_eq!(fragment_len(u32::MAX), (MAX_SENT_PDU - 6) as usize);
    }

    #[test]
    fn uncompressed_instances_are_offered_in_both_little_endian_syntaxes() {
        assert_eq!(
            proposed_transfer_syntaxes(uids::IMPLICIT_VR_LITTLE_ENDIAN),
            [
                uids::EXPLICIT_VR_LITTLE_ENDIAN,
                uids::IMPLICIT_VR_LITTLE_ENDIAN
            ]
        );
        assert_eq!(
            proposed_transfer_syntaxes(uids::JPEG_BASELINE8_BIT),
            [uids::JPEG_BASELINE8_BIT]
        );
    }

    #[test]
    fn a_destination_is_named_as_tools_name_it() {
        let destination = Destination {
            addr: "127.0.0.1:104".parse().unwrap(),
            called_ae: "VIEWER".into(),
            calling_ae: "DIPTYCH".into(),
        };
        assert_eq!(destination.to_string(), "VIEWER@127.0.0.1:104");
    }
}
