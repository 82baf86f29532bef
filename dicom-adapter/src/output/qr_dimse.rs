//! The query/retrieve command sets (PS3.7 9.3.2–9.3.4): C-FIND, C-GET and C-MOVE requests that
//! diptych sends to an archive, and the responses it reads back.
//!
//! Like the C-STORE and C-ECHO ones in `dimse`, they are group-0000 data sets in implicit VR
//! little endian written and read with [`crate::command_set`], without trusting any length.

use crate::command_set::{CommandSetError, elements, padded_uid, put, us, with_group_length};

/// Study Root Query/Retrieve Information Model – FIND.
pub(crate) const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
/// Study Root Query/Retrieve Information Model – MOVE.
pub(crate) const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
/// Study Root Query/Retrieve Information Model – GET.
pub(crate) const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";

/// Command Field values of the query/retrieve services and of the C-STORE sub-operations.
pub(crate) mod field {
    /// C-STORE-RQ (a C-GET's sub-operation, on the same association).
    pub const C_STORE_RQ: u16 = 0x0001;
    /// C-STORE-RSP.
    pub const C_STORE_RSP: u16 = 0x8001;
    /// C-GET-RQ.
    pub const C_GET_RQ: u16 = 0x0010;
    /// C-GET-RSP.
    pub const C_GET_RSP: u16 = 0x8010;
    /// C-FIND-RQ.
    pub const C_FIND_RQ: u16 = 0x0020;
    /// C-FIND-RSP.
    pub const C_FIND_RSP: u16 = 0x8020;
    /// C-MOVE-RQ.
    pub const C_MOVE_RQ: u16 = 0x0021;
    /// C-MOVE-RSP.
    pub const C_MOVE_RSP: u16 = 0x8021;
}

/// Priority MEDIUM.
const PRIORITY_MEDIUM: u16 = 0x0000;
/// Command Data Set Type: an identifier follows.
const DATA_SET_PRESENT: u16 = 0x0000;
/// Command Data Set Type: nothing follows.
const NO_DATA_SET: u16 = 0x0101;

/// A C-FIND-RQ (`field::C_FIND_RQ`), C-GET-RQ or C-MOVE-RQ command set; an identifier follows
/// it. `move_destination` is the C-MOVE's Move Destination (0000,0600), ignored otherwise.
pub(crate) fn request(
    command: u16,
    message_id: u16,
    sop_class: &str,
    move_destination: Option<&str>,
) -> Vec<u8> {
    let mut body = Vec::new();
    put(&mut body, 0x0002, &padded_uid(sop_class));
    put(&mut body, 0x0100, &command.to_le_bytes());
    put(&mut body, 0x0110, &message_id.to_le_bytes());
    if let Some(destination) = move_destination.filter(|_| command == field::C_MOVE_RQ) {
        let mut ae = destination.as_bytes().to_vec();
        if ae.len() % 2 == 1 {
            ae.push(b' ');
        }
        put(&mut body, 0x0600, &ae);
    }
    put(&mut body, 0x0700, &PRIORITY_MEDIUM.to_le_bytes());
    put(&mut body, 0x0800, &DATA_SET_PRESENT.to_le_bytes());
    with_group_length(&body)
}

/// The fields of any command set that arrives on a query/retrieve association: a response to
/// diptych's request, or a C-STORE-RQ sub-operation of a C-GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Incoming {
    /// Command Field (0000,0100).
    pub field: u16,
    /// Message ID (0000,0110) of a request.
    pub message_id: u16,
    /// Message ID Being Responded To (0000,0120) of a response.
    pub responding_to: u16,
    /// Status (0000,0900) of a response.
    pub status: Option<u16>,
    /// Whether a data set (identifier or instance) follows.
    pub has_data_set: bool,
    /// Affected SOP Class UID (0000,0002), padding stripped.
    pub affected_class: String,
    /// Affected SOP Instance UID (0000,1000), padding stripped.
    pub affected_instance: String,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
    /// Number of Remaining, Completed, Failed and Warning Sub-operations (0000,1020–1023).
    pub sub_operations: SubOperations,
}

/// The sub-operation counts of a C-GET or C-MOVE response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    /// Remaining (0000,1020).
    pub remaining: u16,
    /// Completed (0000,1021).
    pub completed: u16,
    /// Failed (0000,1022).
    pub failed: u16,
    /// Completed with a warning (0000,1023).
    pub warning: u16,
}

impl Incoming {
    /// Reads a command set; `Err` says what is wrong with it.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, CommandSetError> {
        let mut incoming = Incoming {
            has_data_set: true,
            ..Default::default()
        };
        let mut seen_field = false;
        let text = |value: &[u8]| {
            String::from_utf8_lossy(value)
                .trim_matches(|c: char| c == '\0' || c == ' ')
                .to_string()
        };
        for element in elements(bytes) {
            let (element, value) = match element {
                Ok(element) => element,
                // DCMTK (Orthanc) writes a C-GET-RSP's Failed SOP Instance UID List (0008,0058)
                // after the command elements: whatever follows group 0000 is not read.
                Err(CommandSetError::OutsideGroup { .. }) => break,
                Err(e) => return Err(e),
            };
            match element {
                0x0002 => incoming.affected_class = text(value),
                0x0100 => {
                    incoming.field = us(value, "Command Field", element)?;
                    seen_field = true;
                }
                0x0110 => incoming.message_id = us(value, "Message ID", element)?,
                0x0120 => {
                    incoming.responding_to = us(value, "Message ID Being Responded To", element)?;
                }
                0x0800 => {
                    incoming.has_data_set =
                        us(value, "Command Data Set Type", element)? != NO_DATA_SET;
                }
                0x0900 => incoming.status = Some(us(value, "Status", element)?),
                0x0902 => incoming.error_comment = Some(text(value)),
                0x1000 => incoming.affected_instance = text(value),
                0x1020 => incoming.sub_operations.remaining = us(value, "Remaining", element)?,
                0x1021 => incoming.sub_operations.completed = us(value, "Completed", element)?,
                0x1022 => incoming.sub_operations.failed = us(value, "Failed", element)?,
                0x1023 => incoming.sub_operations.warning = us(value, "Warning", element)?,
                _ => {}
            }
        }
        if !seen_field {
            return Err(CommandSetError::Missing {
                name: "Command Field",
                element: 0x0100,
            });
        }
        Ok(incoming)
    }

    /// The status of a response; `Err` when a response carries none.
    pub(crate) fn status(&self) -> Result<u16, CommandSetError> {
        self.status.ok_or(CommandSetError::Missing {
            name: "Status",
            element: 0x0900,
        })
    }
}

/// Whether a query/retrieve status means "pending: more responses follow" (PS3.4 C.4).
pub(crate) fn is_pending(status: u16) -> bool {
    status == 0xFF00 || status == 0xFF01
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_request_names_its_destination_and_a_find_does_not() {
        let moved = request(field::C_MOVE_RQ, 3, STUDY_ROOT_MOVE, Some("DIPTYCH"));
        let read = Incoming::parse(&moved).unwrap();
        assert_eq!(read.field, field::C_MOVE_RQ);
        assert_eq!(read.message_id, 3);
        assert!(read.has_data_set);
        assert!(moved.windows(8).any(|w| w == b"DIPTYCH "));
        let find = request(field::C_FIND_RQ, 1, STUDY_ROOT_FIND, Some("DIPTYCH"));
        assert!(!find.windows(7).any(|w| w == b"DIPTYCH"));
        assert_eq!(
            Incoming::parse(&find).unwrap().affected_class,
            STUDY_ROOT_FIND
        );
    }

    #[test]
    fn a_get_response_gives_its_counts_and_a_hostile_one_is_refused() {
        let mut body = Vec::new();
        put(&mut body, 0x0100, &field::C_GET_RSP.to_le_bytes());
        put(&mut body, 0x0120, &1u16.to_le_bytes());
        put(&mut body, 0x0800, &NO_DATA_SET.to_le_bytes());
        put(&mut body, 0x0900, &0xFF00u16.to_le_bytes());
        put(&mut body, 0x1020, &4u16.to_le_bytes());
        put(&mut body, 0x1021, &6u16.to_le_bytes());
        let read = Incoming::parse(&body).unwrap();
        assert!(is_pending(read.status().unwrap()));
        assert!(!read.has_data_set);
        assert_eq!(
            read.sub_operations,
            SubOperations {
                remaining: 4,
                completed: 6,
                failed: 0,
                warning: 0
            }
        );
        assert!(Incoming::parse(&body[..body.len() - 1]).is_err());
        // What DCMTK appends to a response (group 0008) is not read, and not an error.
        let mut dcmtk = body.clone();
        dcmtk.extend_from_slice(&[8, 0, 0x58, 0, 4, 0, 0, 0, b'1', b'.', b'2', 0]);
        assert_eq!(Incoming::parse(&dcmtk).unwrap(), read);
        assert!(Incoming::parse(&[]).is_err());
    }
}
