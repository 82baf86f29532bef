//! The C-STORE command sets (PS3.7 9.3.1): the request diptych sends and the response it reads.
//!
//! Command sets are group-0000 data sets in implicit VR little endian, written and read here
//! directly: a response is small and read without trusting its lengths.

/// Command Field of C-STORE-RQ.
const C_STORE_RQ: u16 = 0x0001;
/// Command Field of C-STORE-RSP.
const C_STORE_RSP: u16 = 0x8001;
/// Priority MEDIUM.
const PRIORITY_MEDIUM: u16 = 0x0000;
/// Command Data Set Type: a data set follows (any value but 0x0101).
const DATA_SET_PRESENT: u16 = 0x0000;

/// The C-STORE-RQ command set for one instance.
pub(crate) fn store_request(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
    let mut body = Vec::new();
    element(&mut body, 0x0002, &uid_value(sop_class));
    element(&mut body, 0x0100, &C_STORE_RQ.to_le_bytes());
    element(&mut body, 0x0110, &message_id.to_le_bytes());
    element(&mut body, 0x0700, &PRIORITY_MEDIUM.to_le_bytes());
    element(&mut body, 0x0800, &DATA_SET_PRESENT.to_le_bytes());
    element(&mut body, 0x1000, &uid_value(sop_instance));
    let mut command = Vec::with_capacity(body.len() + 12);
    let group_length = u32::try_from(body.len()).expect("a command set is small");
    element(&mut command, 0x0000, &group_length.to_le_bytes());
    command.extend_from_slice(&body);
    command
}

/// The fields of a C-STORE-RSP that the sender uses.
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
pub(crate) fn parse_store_response(bytes: &[u8]) -> Result<StoreResponse, String> {
    let (mut field, mut status, mut responding_to, mut error_comment) = (None, None, None, None);
    let mut pos = 0usize;
    while pos < bytes.len() {
        let header = bytes.get(pos..pos + 8).ok_or_else(|| {
            format!("response command set ends inside an element header at byte {pos}")
        })?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let value = bytes
            .get(pos + 8..(pos + 8).saturating_add(len))
            .ok_or_else(|| {
                format!(
                    "response element ({group:04X},{element:04X}) declares {len} bytes past the end"
                )
            })?;
        pos += 8 + len;
        if group != 0x0000 {
            return Err(format!(
                "response holds element ({group:04X},{element:04X}) outside the command group"
            ));
        }
        let as_u16 = || {
            <[u8; 2]>::try_from(value)
                .map(u16::from_le_bytes)
                .map_err(|_| format!("response element (0000,{element:04X}) is not a US value"))
        };
        match element {
            0x0100 => field = Some(as_u16()?),
            0x0120 => responding_to = Some(as_u16()?),
            0x0900 => status = Some(as_u16()?),
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
    match field {
        Some(C_STORE_RSP) => {}
        Some(other) => {
            return Err(format!(
                "expected a C-STORE-RSP, got command field 0x{other:04X}"
            ));
        }
        None => return Err("response has no Command Field (0000,0100)".to_string()),
    }
    Ok(StoreResponse {
        status: status.ok_or("C-STORE-RSP has no Status (0000,0900)")?,
        responding_to: responding_to
            .ok_or("C-STORE-RSP has no Message ID Being Responded To (0000,0120)")?,
        error_comment,
    })
}

/// Appends one implicit VR little endian element of group 0000.
fn element(out: &mut Vec<u8>, element: u16, value: &[u8]) {
    out.extend_from_slice(&0x0000u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    let len = u32::try_from(value.len()).expect("a command element is small");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
}

/// A UID value padded with NUL to even length.
fn uid_value(uid: &str) -> Vec<u8> {
    let mut value = uid.as_bytes().to_vec();
    if value.len() % 2 == 1 {
        value.push(0);
    }
    value
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
        element(&mut body, 0x0100, &C_STORE_RSP.to_le_bytes());
        element(&mut body, 0x0120, &7u16.to_le_bytes());
        element(&mut body, 0x0900, &0xA700u16.to_le_bytes());
        element(&mut body, 0x0902, b"disk full ");
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
            element(&mut b, 0x0100, &0x8030u16.to_le_bytes());
            b
        };
        assert!(parse_store_response(&echo).unwrap_err().contains("0x8030"));
    }
}
