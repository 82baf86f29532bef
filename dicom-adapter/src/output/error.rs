//! Why a DICOM answer could not be built or delivered.
//!
//! Messages name the study or destination concerned and what would fix it; none carries patient
//! data (names, IDs), since they end up in logs.

use std::time::Duration;

use thiserror::Error;

use crate::command_set::CommandSetError;

/// Everything that can go wrong building a Key Object Selection document or sending an instance.
#[derive(Debug, Error)]
pub enum OutputError {
    /// A Key Object Selection document must reference at least one instance.
    #[error(
        "the key object for study {study} would reference no instance; a Key Object Selection \
         document needs at least one similar instance: skip the study until a search finds one"
    )]
    NoHits {
        /// Study Instance UID of the received study.
        study: String,
    },
    /// A UID given to the builder is not a valid DICOM UID.
    #[error(
        "{field} {value:?} is not a DICOM UID (1 to 64 characters, digits in non-empty \
         dot-separated components, no padding); pass the UID exactly as the instance carries it"
    )]
    InvalidUid {
        /// Which field held it, e.g. "hit 3 SOP Instance UID".
        field: String,
        /// The offending value.
        value: String,
    },
    /// dicom-object refused to assemble or write the document.
    #[error("cannot assemble the DICOM object: {message}")]
    Build {
        /// The library's message.
        message: String,
    },
    /// The bytes handed to the sender are not a DICOM instance it can send.
    #[error(
        "cannot send to {destination}: the instance is not valid DICOM ({message}); pass a Part-10 file or a bare data set"
    )]
    InvalidInstance {
        /// The destination, as "CALLED@host:port".
        destination: String,
        /// Why it could not be read.
        message: String,
    },
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
    /// The destination accepted the association but none of the proposed transfer syntaxes for
    /// the instance's SOP class.
    #[error(
        "{destination} does not accept SOP class {sop_class} in transfer syntax {offered}; \
         configure the destination to accept that storage SOP class"
    )]
    NotAccepted {
        /// The destination, as "CALLED@host:port".
        destination: String,
        /// SOP Class UID of the instance.
        sop_class: String,
        /// The transfer syntaxes proposed, joined by " or ".
        offered: String,
    },
    /// The association broke or the destination answered out of protocol.
    #[error("C-STORE to {destination} failed: {error}; check the destination's log")]
    Protocol {
        /// The destination, as "CALLED@host:port".
        destination: String,
        /// What happened.
        #[source]
        error: ExchangeError,
    },
    /// The whole exchange did not finish in time.
    #[error(
        "C-STORE to {destination} did not finish within {after:?}; check that the destination \
         is up and reachable, or raise the timeout"
    )]
    Timeout {
        /// The destination, as "CALLED@host:port".
        destination: String,
        /// The timeout that expired.
        after: Duration,
    },
}

/// Everything that can go wrong asking an archive what it holds (C-FIND) or fetching from it
/// (C-GET, C-MOVE). Messages name the archive and what to check; none carries patient data.
#[derive(Debug, Error)]
pub enum RetrieveError {
    /// The query's keys are malformed.
    #[error("the query cannot be sent: {0}")]
    Query(String),
    /// The TCP connection or the association request failed.
    #[error(
        "cannot open an association with archive {archive} (calling AE {calling_ae}): {message}; \
         check that the archive listens at that address, that its AE title is right and that it \
         knows diptych's AE title"
    )]
    Associate {
        /// The archive, as "CALLED@host:port".
        archive: String,
        /// The calling AE title used.
        calling_ae: String,
        /// What the association layer reported.
        message: String,
    },
    /// The archive accepted the association but not the service asked for.
    #[error(
        "archive {archive} does not accept {what}; enable that service for diptych's AE title on the archive, or use another retrieval method"
    )]
    NotAccepted {
        /// The archive, as "CALLED@host:port".
        archive: String,
        /// The SOP class refused, in words.
        what: &'static str,
    },
    /// The exchange broke or the archive answered out of protocol.
    #[error("{operation} with archive {archive} failed: {error}; check the archive's log")]
    Protocol {
        /// The archive, as "CALLED@host:port".
        archive: String,
        /// C-FIND, C-GET or C-MOVE.
        operation: &'static str,
        /// What happened.
        #[source]
        error: ExchangeError,
    },
    /// The archive answered with a failure status.
    #[error(
        "archive {archive} answered the {operation} with status 0x{status:04X}{}; check the \
         archive's log and that diptych's AE title may query and retrieve there",
        if comment.is_empty() { String::new() } else { format!(" ({comment})") }
    )]
    Failed {
        /// The archive, as "CALLED@host:port".
        archive: String,
        /// C-FIND, C-GET or C-MOVE.
        operation: &'static str,
        /// The DICOM status.
        status: u16,
        /// Its Error Comment, if any.
        comment: String,
    },
    /// The exchange did not finish in time.
    #[error(
        "the {operation} with archive {archive} did not finish within {after:?}; check that the \
         archive is up, or raise the timeout"
    )]
    Timeout {
        /// The archive, as "CALLED@host:port".
        archive: String,
        /// C-FIND, C-GET or C-MOVE.
        operation: &'static str,
        /// The timeout that expired.
        after: Duration,
    },
}

/// What went wrong in a C-STORE (or C-ECHO) exchange once the association was open.
#[derive(Debug, Error)]
pub enum ExchangeError {
    /// The destination accepted a transfer syntax that diptych does not know.
    #[error("the destination accepted transfer syntax {0}, which diptych cannot encode")]
    UnknownTransferSyntax(String),
    /// The data set could not be encoded in the accepted transfer syntax.
    #[error("cannot encode the data set in {transfer_syntax}: {message}")]
    Encode {
        /// The accepted transfer syntax.
        transfer_syntax: String,
        /// The encoder's message.
        message: String,
    },
    /// Sending a P-DATA PDU failed.
    #[error("sending the C-STORE request: {0}")]
    Send(String),
    /// Receiving the response failed.
    #[error("waiting for the response: {0}")]
    Receive(String),
    /// The response came with a data set, which a C-STORE-RSP never has.
    #[error("the response carries a data set, which a C-STORE-RSP or C-ECHO-RSP never has")]
    DataSetInResponse,
    /// The destination aborted the association.
    #[error("the destination aborted the association ({0})")]
    Aborted(String),
    /// A PDU other than P-DATA came where the response should have.
    #[error("expected the response, got {0}")]
    UnexpectedPdu(&'static str),
    /// The response's command set is malformed.
    #[error("the response is malformed: {0}")]
    Response(#[from] CommandSetError),
    /// A message longer than diptych accepts.
    #[error("the peer sent a {0} longer than diptych accepts")]
    TooLong(String),
    /// Fragments of two messages, or of two presentation contexts, were mixed.
    #[error("the peer interleaved the fragments of two messages")]
    Interleaved,
    /// Data set fragments came before the command set was complete.
    #[error("the peer sent data set fragments before the command set was complete")]
    DataBeforeCommand,
    /// The response answers another message.
    #[error("the response answers message {got} instead of {expected}")]
    WrongMessage {
        /// Message ID Being Responded To, as received.
        got: u16,
        /// The Message ID sent.
        expected: u16,
    },
}
