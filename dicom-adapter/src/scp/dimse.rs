//! DIMSE command sets (PS3.7 E): read the requests diptych serves, write its responses.
//!
//! Command sets are small group-0000 data sets in implicit VR little endian, read and written
//! with [`crate::command_set`], so a hostile command can neither allocate nor panic.

use crate::command_set::{CommandSetError, elements, padded_uid, put, us, with_group_length};

/// Command Field values (PS3.7 E.1).
pub(crate) mod command_field {
    /// C-STORE-RQ.
    pub const C_STORE_RQ: u16 = 0x0001;
    /// C-ECHO-RQ.
    pub const C_ECHO_RQ: u16 = 0x0030;
    /// C-CANCEL-RQ: answered by nothing.
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
    /// Bit set in every response's Command Field.
    pub const RESPONSE: u16 = 0x8000;
}

/// DIMSE statuses used by the listener (PS3.4 B.2.3, PS3.7 C).
pub(crate) mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
}

/// Command Data Set Type meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;
/// Longest Error Comment (0000,0902): its VR is LO, 64 characters.
const ERROR_COMMENT_MAX: usize = 64;

/// The fields of a request command set that the listener uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Command {
    /// Command Field (0000,0100).
    pub field: u16,
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002).
    pub affected_class: String,
    /// Affected SOP Instance UID (0000,1000).
    pub affected_instance: String,
    /// True unless Command Data Set Type (0000,0800) says no data set follows.
    pub has_data_set: bool,
}

impl Command {
    /// Reads a command set; `Err` says what is wrong with it.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, CommandSetError> {
        let mut command = Command {
            has_data_set: true,
            ..Default::default()
        };
        let mut seen_field = false;
        for element in elements(bytes) {
            let (element, value) = element?;
            match element {
                0x0002 => command.affected_class = uid_text(value),
                0x0100 => {
                    command.field = us(value, "Command Field", element)?;
                    seen_field = true;
                }
                0x0110 => command.message_id = us(value, "Message ID", element)?,
                0x0800 => {
                    command.has_data_set =
                        us(value, "Command Data Set Type", element)? != NO_DATA_SET;
                }
                0x1000 => command.affected_instance = uid_text(value),
                _ => {}
            }
        }
        if !seen_field {
            return Err(CommandSetError::Missing {
                name: "Command Field",
                element: 0x0100,
            });
        }
        Ok(command)
    }
}

/// A response command set: Command Field, the message it answers, status, and the optional
/// affected SOP class/instance and error comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response<'a> {
    /// Command Field of the response (request field | 0x8000).
    pub field: u16,
    /// Message ID Being Responded To.
    pub message_id: u16,
    /// Status.
    pub status: u16,
    /// Affected SOP Class UID, if any.
    pub affected_class: &'a str,
    /// Affected SOP Instance UID, if any.
    pub affected_instance: &'a str,
    /// Error Comment, cut to 64 characters of printable ASCII.
    pub error_comment: Option<&'a str>,
}

impl Response<'_> {
    /// Encodes the response in implicit VR little endian with its group length first.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        if !self.affected_class.is_empty() {
            put(&mut body, 0x0002, &padded_uid(self.affected_class));
        }
        put(&mut body, 0x0100, &self.field.to_le_bytes());
        put(&mut body, 0x0120, &self.message_id.to_le_bytes());
        put(&mut body, 0x0800, &NO_DATA_SET.to_le_bytes());
        put(&mut body, 0x0900, &self.status.to_le_bytes());
        if let Some(comment) = self.error_comment {
            put(&mut body, 0x0902, &padded_text(&error_comment(comment)));
        }
        if !self.affected_instance.is_empty() {
            put(&mut body, 0x1000, &padded_uid(self.affected_instance));
        }
        with_group_length(&body)
    }
}

/// The comment as a valid LO value: printable ASCII without backslash, at most 64 characters.
pub(crate) fn error_comment(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '\\' || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(ERROR_COMMENT_MAX)
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn padded_text(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(b' ');
    }
    bytes
}

/// A UID element as text, its padding stripped; whether it is a valid UID is for
/// [`crate::uid::Uid::parse`] to say where it is used.
fn uid_text(value: &[u8]) -> String {
    crate::uid::without_padding(&String::from_utf8_lossy(value)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_reads_back_as_a_command() {
        let response = Response {
            field: 0x8001,
            message_id: 7,
            status: status::CANNOT_UNDERSTAND,
            affected_class: "1.2.840.10008.5.1.4.1.1.4",
            affected_instance: "1.2.3",
            error_comment: Some(
                "Pixel Data holds 10 bytes but 100 are needed; the instance is truncated \\ really",
            ),
        };
        let bytes = response.encode();
        let parsed = Command::parse(&bytes).unwrap();
        assert_eq!(parsed.field, 0x8001);
        assert_eq!(parsed.affected_class, "1.2.840.10008.5.1.4.1.1.4");
        assert_eq!(parsed.affected_instance, "1.2.3");
        assert!(!parsed.has_data_set);
        // Group length equals the bytes after it.
        assert_eq!(
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            bytes.len() - 12
        );
        let comment = error_comment(response.error_comment.unwrap());
        assert!(comment.len() <= 64 && !comment.contains('\\'));
    }

    #[test]
    fn hostile_commands_are_refused_without_panicking() {
        assert!(Command::parse(&[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(Command::parse(&[0, 0, 0, 1, 2, 0]).is_err());
        assert!(Command::parse(&[]).is_err());
        let mut wrong_width = Vec::new();
        put(&mut wrong_width, 0x0100, &[1, 0, 0, 0]);
        assert!(Command::parse(&wrong_width).is_err());
    }
}
