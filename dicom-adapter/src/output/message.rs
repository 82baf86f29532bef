//! Whole DIMSE messages on an association diptych opened: a command set and its optional data
//! set sent in P-DATA fragments that fit the peer's maximum PDU length, and read back the same
//! way with the data set bounded, so a peer can neither make diptych allocate without limit nor
//! mix two messages.

use dicom_ul::Pdu;
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use tokio::net::TcpStream;

use super::error::ExchangeError;
use crate::instance::error_chain;

/// One message read from the peer.
#[derive(Debug)]
pub(crate) struct Message {
    /// The presentation context it came on.
    pub context_id: u8,
    /// The command set's bytes.
    pub command: Vec<u8>,
    /// The data set's bytes, when the command announced one.
    pub data: Option<Vec<u8>>,
}

/// Sends `command` and, when given, `data` on presentation context `context_id`.
pub(crate) async fn send(
    association: &mut AsyncClientAssociation<TcpStream>,
    context_id: u8,
    command: &[u8],
    data: Option<&[u8]>,
) -> Result<(), ExchangeError> {
    let fragment = super::send::fragment_len(association.acceptor_max_pdu_length());
    let parts = [
        (PDataValueType::Command, Some(command)),
        (PDataValueType::Data, data),
    ];
    for (value_type, bytes) in parts {
        let Some(bytes) = bytes else { continue };
        let mut chunks = bytes.chunks(fragment).peekable();
        while let Some(chunk) = chunks.next() {
            let pdu = Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context_id,
                    value_type: value_type.clone(),
                    is_last: chunks.peek().is_none(),
                    data: chunk.to_vec(),
                }],
            };
            association
                .send(&pdu)
                .await
                .map_err(|e| ExchangeError::Send(error_chain(&e)))?;
        }
    }
    Ok(())
}

/// Reads one message: its command set, then its data set when `has_data_set` says the command
/// announces one (it is given the command's bytes). A data set longer than `max_data_bytes`,
/// fragments of another presentation context in the middle of a message, or any PDU but
/// P-DATA is an error.
pub(crate) async fn receive(
    association: &mut AsyncClientAssociation<TcpStream>,
    max_data_bytes: u64,
    has_data_set: impl Fn(&[u8]) -> Result<bool, ExchangeError>,
) -> Result<Message, ExchangeError> {
    let mut context = None;
    let mut command = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    let mut command_done = false;
    loop {
        let pdu = association
            .receive()
            .await
            .map_err(|e| ExchangeError::Receive(error_chain(&e)))?;
        let values = match pdu {
            Pdu::PData { data } => data,
            Pdu::AbortRQ { source } => return Err(ExchangeError::Aborted(format!("{source:?}"))),
            other => return Err(ExchangeError::UnexpectedPdu(super::send::pdu_name(&other))),
        };
        for value in values {
            let id = *context.get_or_insert(value.presentation_context_id);
            if id != value.presentation_context_id {
                return Err(ExchangeError::Interleaved);
            }
            match (value.value_type, command_done) {
                (PDataValueType::Command, false) => {
                    if command.len() + value.data.len() > MAX_COMMAND_BYTES {
                        return Err(ExchangeError::TooLong("command set".into()));
                    }
                    command.extend_from_slice(&value.data);
                    if value.is_last {
                        command_done = true;
                        if !has_data_set(&command)? {
                            return Ok(Message {
                                context_id: id,
                                command,
                                data: None,
                            });
                        }
                        data = Some(Vec::new());
                    }
                }
                (PDataValueType::Data, true) => {
                    let buffer = data.get_or_insert_with(Vec::new);
                    if (buffer.len() + value.data.len()) as u64 > max_data_bytes {
                        return Err(ExchangeError::TooLong(format!(
                            "data set (over {max_data_bytes} bytes)"
                        )));
                    }
                    buffer.extend_from_slice(&value.data);
                    if value.is_last {
                        return Ok(Message {
                            context_id: id,
                            command,
                            data,
                        });
                    }
                }
                (PDataValueType::Data, false) => return Err(ExchangeError::DataBeforeCommand),
                (PDataValueType::Command, true) => return Err(ExchangeError::Interleaved),
            }
        }
    }
}

/// Longest command set accepted: real ones are a few hundred bytes.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
