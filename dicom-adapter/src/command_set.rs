//! DIMSE command sets (PS3.7 E) as elements: the one reader and writer that the listener's
//! requests and responses ([`crate::scp`]) and the sender's requests and responses
//! ([`crate::output`]) share.
//!
//! A command set is a group-0000 data set in implicit VR little endian. It is read here without
//! trusting its lengths: a hostile command can neither allocate nor panic.

/// What is wrong with a command set a peer sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandSetError {
    /// The bytes end in the middle of an element's 8-byte header.
    #[error("the command set ends inside an element header at byte {at}")]
    TruncatedHeader {
        /// Offset of the incomplete header.
        at: usize,
    },
    /// An element declares a value longer than what is left.
    #[error("command element ({group:04X},{element:04X}) declares {len} bytes past the end")]
    PastEnd {
        /// Group of the element.
        group: u16,
        /// Element number.
        element: u16,
        /// The declared value length.
        len: u32,
    },
    /// An element outside group 0000.
    #[error("the command set holds element ({group:04X},{element:04X}) outside group 0000")]
    OutsideGroup {
        /// Group of the element.
        group: u16,
        /// Element number.
        element: u16,
    },
    /// A US element whose value is not 2 bytes.
    #[error("{name} (0000,{element:04X}) holds {len} bytes instead of 2")]
    NotUs {
        /// The element's name, e.g. "Message ID".
        name: &'static str,
        /// Element number.
        element: u16,
        /// Its value length.
        len: usize,
    },
    /// A required element is absent.
    #[error("the command set has no {name} (0000,{element:04X})")]
    Missing {
        /// The element's name, e.g. "Command Field".
        name: &'static str,
        /// Element number.
        element: u16,
    },
    /// The command is not the one expected here.
    #[error("expected a {expected}, got command field 0x{got:04X}")]
    UnexpectedCommand {
        /// The command expected, e.g. "C-STORE-RSP".
        expected: &'static str,
        /// The Command Field received.
        got: u16,
    },
}

/// The elements of a command set in order, as (element number, value); an element outside group
/// 0000 or a length past the end is an error, after which the reader stops.
pub(crate) fn elements(bytes: &[u8]) -> Elements<'_> {
    Elements { bytes, pos: 0 }
}

/// Iterator over a command set's elements; see [`elements`].
pub(crate) struct Elements<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<(u16, &'a [u8]), CommandSetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let pos = self.pos;
        if pos >= self.bytes.len() {
            return None;
        }
        // Whatever happens next, an error ends the walk.
        self.pos = self.bytes.len();
        let Some(header) = self.bytes.get(pos..pos + 8) else {
            return Some(Err(CommandSetError::TruncatedHeader { at: pos }));
        };
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = pos + 8;
        let Some(value) =
            (start.checked_add(len as usize)).and_then(|end| self.bytes.get(start..end))
        else {
            return Some(Err(CommandSetError::PastEnd {
                group,
                element,
                len,
            }));
        };
        if group != 0x0000 {
            return Some(Err(CommandSetError::OutsideGroup { group, element }));
        }
        self.pos = start + value.len();
        Some(Ok((element, value)))
    }
}

/// A US value (2 bytes, little endian) of element `(0000,element)` called `name`.
pub(crate) fn us(value: &[u8], name: &'static str, element: u16) -> Result<u16, CommandSetError> {
    <[u8; 2]>::try_from(value)
        .map(u16::from_le_bytes)
        .map_err(|_| CommandSetError::NotUs {
            name,
            element,
            len: value.len(),
        })
}

/// Appends one implicit VR little endian element of group 0000.
pub(crate) fn put(out: &mut Vec<u8>, element: u16, value: &[u8]) {
    let len = u32::try_from(value.len()).expect("a command element is small");
    out.extend_from_slice(&0x0000u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
}

/// The command set whose elements `body` holds, with its Command Group Length (0000,0000) first.
pub(crate) fn with_group_length(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 12);
    let len = u32::try_from(body.len()).expect("a command set is small");
    put(&mut out, 0x0000, &len.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A UID value padded with NUL to even length.
pub(crate) fn padded_uid(uid: &str) -> Vec<u8> {
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
    fn elements_are_read_in_order_and_a_hostile_length_is_refused() {
        let mut body = Vec::new();
        put(&mut body, 0x0100, &1u16.to_le_bytes());
        put(&mut body, 0x1000, &padded_uid("1.2.3"));
        let set = with_group_length(&body);
        let read: Vec<_> = elements(&set).collect::<Result<_, _>>().unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[1], (0x0100, &1u16.to_le_bytes()[..]));
        assert_eq!(read[2], (0x1000, &b"1.2.3\0"[..]));

        let mut hostile = set.clone();
        hostile[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            elements(&hostile).next(),
            Some(Err(CommandSetError::PastEnd {
                group: 0,
                element: 0,
                len: u32::MAX
            }))
        );
        assert_eq!(
            elements(&set[..5]).next(),
            Some(Err(CommandSetError::TruncatedHeader { at: 0 }))
        );
        let mut outside = set;
        outside[0] = 8;
        let errors: Vec<_> = elements(&outside).collect();
        assert_eq!(errors.len(), 1, "the walk stops at the first error");
        assert!(matches!(
            errors[0],
            Err(CommandSetError::OutsideGroup { group: 8, .. })
        ));
        assert!(us(&[1, 2, 3], "Message ID", 0x0110).is_err());
    }
}
