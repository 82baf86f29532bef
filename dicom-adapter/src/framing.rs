//! Framing: a walk over the element headers of encoded DICOM bytes that checks every declared
//! value length against the bytes that actually follow, *before* dicom-parser sees them.
//!
//! dicom-parser allocates (and zero-fills) a value's declared length before reading it, so a
//! few hundred hostile bytes declaring a 4 GiB element would cost 4 GiB of memory. Since diptych
//! always parses from a buffer it holds in full, no honest length can exceed what remains of the
//! buffer; this walk refuses the instance when one does. It does not otherwise validate the
//! structure: anything it does not understand is left to the parser to report.
//!
//! Deflated data sets are inflated first (by the caller, with a size bound), then walked.

use crate::error::AdapterError;

/// Declared length meaning "undefined, ends with a delimitation item".
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Pixel Data (7FE0,0010): with undefined length it holds fragments, not data set items.
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// How the elements of a data set are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoding {
    /// True for explicit VR, false for implicit VR.
    pub explicit: bool,
    /// True for big endian (explicit VR big endian, retired but still sent).
    pub big_endian: bool,
}

impl Encoding {
    /// Explicit VR little endian: the file meta group, and most transfer syntaxes.
    pub const EXPLICIT_LE: Self = Self {
        explicit: true,
        big_endian: false,
    };
}

/// What the walk is inside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// A sequence of undefined length: items hold data sets.
    Sequence,
    /// Encapsulated pixel data: items hold fragments (raw bytes).
    Fragments,
}

/// Checks every declared length in `data` (a data set, or a file meta group followed by one)
/// against the bytes that remain. Stops early, without error, at the first header it cannot
/// read; the parser reports such damage with its own message.
pub(crate) fn check_lengths(data: &[u8], encoding: Encoding) -> Result<(), AdapterError> {
    let mut pos = 0usize;
    let mut stack: Vec<Context> = Vec::new();
    while pos + 8 <= data.len() {
        let group = read_u16(data, pos, encoding.big_endian);
        let element = read_u16(data, pos + 2, encoding.big_endian);
        if group == 0xFFFE {
            let len = read_u32(data, pos + 4, encoding.big_endian);
            pos += 8;
            match element {
                // Item: a fragment is skipped, a data set item is entered.
                0xE000 if stack.last() == Some(&Context::Fragments) && len != UNDEFINED => {
                    pos = skip(data, pos, len, (group, element))?;
                }
                0xE000 if len != UNDEFINED => fits(data, pos, len, (group, element))?,
                // Sequence delimitation closes the innermost undefined-length element.
                0xE0DD => {
                    stack.pop();
                }
                _ => {}
            }
            continue;
        }
        let (vr, len, header) = if encoding.explicit {
            match explicit_header(data, pos, encoding.big_endian) {
                Some((vr, len, header)) => (Some(vr), len, header),
                None => return Ok(()),
            }
        } else {
            (None, read_u32(data, pos + 4, encoding.big_endian), 8)
        };
        pos += header;
        let tag = (group, element);
        if len == UNDEFINED {
            stack.push(if tag == PIXEL_DATA {
                Context::Fragments
            } else {
                Context::Sequence
            });
            continue;
        }
        let enters_sequence = match vr {
            Some(vr) => &vr == b"SQ",
            // Implicit VR: a defined-length sequence starts with an item tag.
            None => starts_with_item(data, pos, encoding.big_endian),
        };
        if enters_sequence {
            fits(data, pos, len, tag)?;
        } else {
            pos = skip(data, pos, len, tag)?;
        }
    }
    Ok(())
}

/// Walks a Part-10 file meta group (starting at `DICM`) the way dicom-object reads it: the
/// (0002,0000) group length, then elements until that many bytes are consumed. Checks their
/// lengths and returns where the data set starts and the Transfer Syntax UID, if found.
pub(crate) fn meta_group(data: &[u8]) -> Result<(usize, Option<String>), AdapterError> {
    let mut pos = 4usize; // after "DICM"
    let mut transfer_syntax = None;
    let Some((_, len, header)) = explicit_header(data, pos, false) else {
        return Ok((data.len(), None));
    };
    let value = pos + header;
    if len != 4 || value + 4 > data.len() {
        return Ok((data.len(), None)); // malformed: the parser reports it
    }
    let group_length = read_u32(data, value, false) as usize;
    pos = value + 4;
    let end = pos.saturating_add(group_length);
    while pos < end {
        let Some((_, len, header)) = explicit_header(data, pos, false) else {
            break;
        };
        let tag = (read_u16(data, pos, false), read_u16(data, pos + 2, false));
        pos += header;
        if len == UNDEFINED {
            break;
        }
        let value_end = skip(data, pos, len, tag)?;
        if tag == (0x0002, 0x0010) {
            let text = String::from_utf8_lossy(&data[pos..value_end]);
            transfer_syntax = Some(text.trim_end_matches(['\0', ' ']).to_string());
        }
        pos = value_end;
    }
    Ok((pos.min(data.len()), transfer_syntax))
}

/// The VR, declared length and header size of the explicit-VR element at `pos`, if its header
/// is complete. Unknown VRs are read as UN (32-bit length), as dicom-parser does.
fn explicit_header(data: &[u8], pos: usize, big_endian: bool) -> Option<([u8; 2], u32, usize)> {
    if pos + 8 > data.len() {
        return None;
    }
    let vr = [data[pos + 4], data[pos + 5]];
    if has_short_length(vr) {
        Some((vr, u32::from(read_u16(data, pos + 6, big_endian)), 8))
    } else if pos + 12 <= data.len() {
        Some((vr, read_u32(data, pos + 8, big_endian), 12))
    } else {
        None
    }
}

/// Checks that `len` bytes remain at `pos`.
fn fits(data: &[u8], pos: usize, len: u32, tag: (u16, u16)) -> Result<(), AdapterError> {
    let available = data.len().saturating_sub(pos) as u64;
    if u64::from(len) > available {
        return Err(AdapterError::LengthBeyondData {
            tag: format!("({:04X},{:04X})", tag.0, tag.1),
            declared: len.into(),
            available,
        });
    }
    Ok(())
}

/// The position after a value of `len` bytes at `pos`, if they remain.
fn skip(data: &[u8], pos: usize, len: u32, tag: (u16, u16)) -> Result<usize, AdapterError> {
    fits(data, pos, len, tag)?;
    Ok(pos + len as usize)
}

fn starts_with_item(data: &[u8], pos: usize, big_endian: bool) -> bool {
    pos + 4 <= data.len()
        && read_u16(data, pos, big_endian) == 0xFFFE
        && read_u16(data, pos + 2, big_endian) == 0xE000
}

/// Value representations whose explicit-VR header has a 16-bit length (PS3.5 table 7.1-2);
/// every other VR, unknown ones included, has 2 reserved bytes and a 32-bit length.
fn has_short_length(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

fn read_u16(data: &[u8], pos: usize, big_endian: bool) -> u16 {
    let bytes = [data[pos], data[pos + 1]];
    if big_endian {
        u16::from_be_bytes(bytes)
    } else {
        u16::from_le_bytes(bytes)
    }
}

fn read_u32(data: &[u8], pos: usize, big_endian: bool) -> u32 {
    let bytes = [data[pos], data[pos + 1], data[pos + 2], data[pos + 3]];
    if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element_le(tag: (u16, u16), vr: &[u8; 2], len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(tag.0.to_le_bytes());
        out.extend(tag.1.to_le_bytes());
        out.extend(vr);
        out.extend([0, 0]);
        out.extend(len.to_le_bytes());
        out
    }

    #[test]
    fn a_length_beyond_the_buffer_is_refused_with_its_tag() {
        let mut data = element_le(PIXEL_DATA, b"OW", 0xFFFF_FFF0);
        data.extend([0u8; 16]);
        let err = check_lengths(&data, Encoding::EXPLICIT_LE).unwrap_err();
        assert!(
            matches!(&err, AdapterError::LengthBeyondData { tag, declared, available: 16 }
                if tag == "(7FE0,0010)" && *declared == 0xFFFF_FFF0),
            "{err}"
        );
        // The same element with an honest length passes.
        let mut data = element_le(PIXEL_DATA, b"OW", 16);
        data.extend([0u8; 16]);
        check_lengths(&data, Encoding::EXPLICIT_LE).unwrap();
    }

    #[test]
    fn lengths_inside_sequences_are_checked_too() {
        // SQ of undefined length, one item of undefined length, holding a lying UT element.
        let mut data = element_le((0x0040, 0x0275), b"SQ", UNDEFINED);
        data.extend([0xFE, 0xFF, 0x00, 0xE0]);
        data.extend(UNDEFINED.to_le_bytes());
        data.extend(element_le((0x0008, 0x0119), b"UT", 1 << 30));
        data.extend([0u8; 8]);
        assert!(check_lengths(&data, Encoding::EXPLICIT_LE).is_err());
    }

    #[test]
    fn fragments_of_encapsulated_pixel_data_are_skipped_not_entered() {
        let mut data = element_le(PIXEL_DATA, b"OB", UNDEFINED);
        // Basic offset table (empty), then one fragment whose bytes look like a lying header.
        data.extend([0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        data.extend([0xFE, 0xFF, 0x00, 0xE0]);
        data.extend(12u32.to_le_bytes());
        data.extend(element_le((0x0008, 0x0119), b"UT", 1 << 30));
        data.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        check_lengths(&data, Encoding::EXPLICIT_LE).unwrap();
    }
}
