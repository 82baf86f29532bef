//! A C-ECHO SCU: checks that a destination answers DICOM (verification, PS3.7 9.1.5) before
//! anything is sent to it — its address, its AE title, and that it accepts diptych's calling AE
//! title.

use std::time::{Duration, Instant};

use dicom_ul::Pdu;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use thiserror::Error;

use super::dimse::{VERIFICATION, echo_request, parse_echo_response};
use super::send::{Accepted, Destination, associate, finish, receive_response};
use crate::instance::error_chain;

/// What a destination answered to a C-ECHO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoAnswer {
    /// The DICOM status of the C-ECHO-RSP (0x0000 is success).
    pub status: u16,
    /// From opening the connection to the response.
    pub round_trip: Duration,
}

/// Why no C-ECHO answer came back.
#[derive(Debug, Error)]
pub enum EchoError {
    /// The TCP connection or the association request failed.
    #[error(
        "cannot open an association with {destination} (calling AE {calling_ae}): {message}; \
         check that the destination listens at that address, that its AE title is right and \
         that it accepts the calling AE title"
    )]
    Associate {
        /// The destination, as "CALLED@host:port".
        destination: String,
        /// The calling AE title used.
        calling_ae: String,
        /// What the association layer reported.
        message: String,
    },
    /// The destination accepted the association but not the Verification SOP class.
    #[error(
        "{destination} does not accept the Verification SOP class (C-ECHO); enable verification on the destination"
    )]
    NotAccepted {
        /// The destination, as "CALLED@host:port".
        destination: String,
    },
    /// The exchange broke or the destination answered out of protocol.
    #[error("C-ECHO to {destination} failed: {error}; check the destination's log")]
    Protocol {
        /// The destination, as "CALLED@host:port".
        destination: String,
        /// What happened.
        #[source]
        error: super::ExchangeError,
    },
    /// The exchange did not finish in time.
    #[error(
        "C-ECHO to {destination} got no answer within {after:?}; check that the destination is up and reachable"
    )]
    Timeout {
        /// The destination, as "CALLED@host:port".
        destination: String,
        /// The timeout that expired.
        after: Duration,
    },
}

/// Associates with `destination` proposing Verification only, sends a C-ECHO-RQ, reads the
/// status, releases; the whole exchange runs under `timeout`.
pub async fn echo(destination: &Destination, timeout: Duration) -> Result<EchoAnswer, EchoError> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, exchange(destination)).await {
        Ok(Ok(status)) => Ok(EchoAnswer {
            status,
            round_trip: started.elapsed(),
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(EchoError::Timeout {
            destination: destination.to_string(),
            after: timeout,
        }),
    }
}

async fn exchange(destination: &Destination) -> Result<u16, EchoError> {
    let implicit = dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN;
    let accepted = associate(destination, VERIFICATION, &[implicit])
        .await
        .map_err(|message| EchoError::Associate {
            destination: destination.to_string(),
            calling_ae: destination.calling_ae.clone(),
            message,
        })?;
    let Some(Accepted {
        mut association,
        context_id,
        ..
    }) = accepted
    else {
        return Err(EchoError::NotAccepted {
            destination: destination.to_string(),
        });
    };
    let protocol = |error| EchoError::Protocol {
        destination: destination.to_string(),
        error,
    };
    let message_id = 1;
    let request = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: echo_request(message_id),
        }],
    };
    let answered = async {
        association
            .send(&request)
            .await
            .map_err(|e| super::ExchangeError::Send(error_chain(&e)))?;
        let bytes = receive_response(&mut association).await?;
        let response = parse_echo_response(&bytes)?;
        if response.responding_to != message_id {
            return Err(super::ExchangeError::WrongMessage {
                got: response.responding_to,
                expected: message_id,
            });
        }
        Ok(response)
    }
    .await;
    let response = finish(association, destination, "C-ECHO", answered)
        .await
        .map_err(protocol)?;
    Ok(response.status)
}
