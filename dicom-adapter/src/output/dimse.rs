//! The C-STORE and C-ECHO command sets (PS3.7 9.3.1, 9.3.5): the requests diptych sends and the
//! responses it reads.
//!
//! Command sets are group-0000 data sets in implicit VR little endian, written and read with
//! [`crate::command_set`]: a response is small and read without trusting its lengths.

use crate::command_set::{CommandSetError, elements, padded_uid, put, us, with_group_length};

/// Command Field of C-STORE-RQ.
const C_STORE_RQ: u16 = 0x0001;
/// Command Field of C-STORE-RSP.
const C_STORE_RSP: u16 = 0x8001;
/// Command Field of C-ECHO-RQ.
const C_ECHO_RQ: u16 = 0x0030;
/// Command Field of C-ECHO-RSP.
const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type: no data set follows.
const NO_DATA_SET: u16 = 0x0101;
/// Priority MEDIUM.
const PRIORITY_MEDIUM: u16 = 0x0000;
/// Command Data Set Type: a data set follows (any value but 0x0101).
const DATA_SET_PRESENT: u16 = 0x0000;

/// The C-STORE-RQ command set for one instance.
pub(crate) fn store_request(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put(&mut body, 0x0002, &padded_uid(sop_class));
    put(&mut body, 0x0100, &C_STORE_RQ.to_le_bytes());
    put(&mut body, 0x0110, &message_id.to_le_bytes());
    put(&mut body, 0x0700, &PRIORITY_MEDIUM.to_le_bytes());
    put(&mut body, 0x0800, &DATA_SET_PRESENT.to_le_bytes());
    put(&mut body, 0x1000, &padded_uid(sop_instance));
    with_group_length(&body)
}

/// The C-ECHO-RQ command set (Verification SOP class, no data set).
pub(crate) fn echo_request(message_id: u16) -> Vec<u8> {
    let mut body = Vec::new();
    put(&mut body, 0x0002, &padded_uid(VERIFICATION));
    put(&mut body, 0x0100, &C_ECHO_RQ.to_le_bytes());
    put(&mut body, 0x0110, &message_id.to_le_bytes());
    put(&mut body, 0x0800, &NO_DATA_SET.to_le_bytes());
    with_group_length(&body)
}

/// The Verification SOP class UID.
pub(crate) const VERIFICATION: &str = "1.2.840.10008.1.1";

/// The fields of a C-STORE-RSP (or C-ECHO-RSP) that the sender uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreResponse {
    /// Status (0000,0900).
    pub status: u16,
    /// Message ID Being Responded To (0000,0120).
    pub responding_to: u16,
    /// Error Comment (0000,0902), when the peer sent one.
    pub error_comment: Option<String>,
}

/// Reads a C-STORE-RSP command set; `Err` says what is wrong with it.
pub(crate) fn parse_store_response(bytes: &[u8]) -> Result<StoreResponse, CommandSetError> {
    parse_response(bytes, C_STORE_RSP, "C-STORE-RSP")
}

/// Reads a C-ECHO-RSP command set; `Err` says what is wrong with it.
pub(crate) fn parse_echo_response(bytes: &[u8]) -> Result<StoreResponse, CommandSetError> {
    parse_response(bytes, C_ECHO_RSP, "C-ECHO-RSP")
}

/// Reads a response command set whose Command Field must be `command` (named `name`).
fn parse_response(
    bytes: &[u8],
    command: u16,
    name: &'static str,
) -> Result<StoreResponse, CommandSetError> {
    let (mut field, mut status, mut responding_to, mut error_comment) = (None, None, None, None);
    for element in elements(bytes) {
        let (element, value) = element?;
        match element {
            0x0100 => field = Some(us(value, "Command Field", element)?),
            0x0120 => responding_to = Some(us(value, "Message ID Being Responded To", element)?),
            0x0900 => status = Some(us(value, "Status", element)?),
            0x0902 => {
                let text = String::from_utf8_lossy(value);
                error_comment = Some(
                    text.trim_matches(|c: char| c == '\0' || c == ' ')
                        .to_string(),
                );
            }
            _ => {}
        }
    }
    let missing = |name, element| CommandSetError::Missing { name, element };
    match field {
        Some(got) if got == command => {}
        Some(got) => {
            return Err(CommandSetError::UnexpectedCommand {
                expected: name,
                got,
            });
        }
        None => return Err(missing("Command Field", 0x0100)),
    }
    Ok(StoreResponse {
        status: status.ok_or(missing("Status", 0x0900))?,
        responding_to: responding_to.ok_or(missing("Message ID Being Responded To", 0x0120))?,
        error_comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_has_a_correct_group_length_and_padded_uids() {
        let command = store_request(7, "1.2.840.10008.5.1.4.1.1.88.59", "2.25.12345");
        let group_length = u32::from_le_bytes(command[8..12].try_into().unwrap()) as usize;
        assert_eq!(group_length, command.len() - 12);
        assert_eq!(command.len() % 2, 0);
        // (0000,0002): the 29-character class UID padded to 30 bytes.
        assert_eq!(&command[12..16], &[0, 0, 2, 0]);
        assert_eq!(u32::from_le_bytes(command[16..20].try_into().unwrap()), 30);
        assert_eq!(command[20 + 29], 0);
    }

    #[test]
    fn a_response_is_read_and_a_truncated_one_refused() {
        let mut body = Vec::new();
        put(&mut body, 0x0100, &C_STORE_RSP.to_le_bytes());
        put(&mut body, 0x0120, &7u16.to_le_bytes());
        put(&mut body, 0x0900, &0xA700u16.to_le_bytes());
        put(&mut body, 0x0902, b"disk full ");
        let response = parse_store_response(&body).unwrap();
        assert_eq!(
            response,
            StoreResponse {
                status: 0xA700,
                responding_to: 7,
                error_comment: Some("disk full".into())
            }
        );
        assert!(parse_store_response(&body[..body.len() - 3]).is_err());
        let echo = {
            let mut b = Vec::new();
            put(&mut b, 0x0100, &0x8030u16.to_le_bytes());
            b
        };
        assert_eq!(
            parse_store_response(&echo).unwrap_err(),
            CommandSetError::UnexpectedCommand {
                expected: "C-STORE-RSP",
                got: 0x8030
            }
        );
    }
}
