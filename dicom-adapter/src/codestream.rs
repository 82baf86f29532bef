//! The image size a compressed frame's codestream declares, read from its header before any
//! decoder runs: a JPEG (SOFn), JPEG-LS (SOF55) or JPEG 2000 (SIZ) codestream claiming more
//! pixels than Rows × Columns would make the decoder allocate what the codestream says — a
//! decompression bomb. Frames whose codestream claims more are refused before decoding.

/// Width and height a codestream declares, if its header can be read.
pub fn declared_size(fragment: &[u8]) -> Option<(u32, u32)> {
    match fragment {
        [0xFF, 0x4F, 0xFF, 0x51, ..] => jpeg2000_siz(fragment),
        [0xFF, 0xD8, ..] => jpeg_sof(fragment),
        _ => None,
    }
}

/// JPEG 2000 SIZ: SOC, SIZ marker, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz (big endian).
fn jpeg2000_siz(b: &[u8]) -> Option<(u32, u32)> {
    let word = |at: usize| {
        b.get(at..at + 4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
    };
    let (x, y, x0, y0) = (word(8)?, word(12)?, word(16)?, word(20)?);
    Some((x.checked_sub(x0)?, y.checked_sub(y0)?))
}

/// JPEG and JPEG-LS: walk the marker segments after SOI to the first start-of-frame.
fn jpeg_sof(b: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    while at + 4 <= b.len() {
        if b[at] != 0xFF {
            return None;
        }
        let marker = b[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        let length = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        let is_sof = matches!(marker, 0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC))
            || marker == 0xF7;
        if is_sof {
            // length(2) precision(1) height(2) width(2)
            let s = b.get(at + 4..at + 9)?;
            let height = u32::from(u16::from_be_bytes([s[1], s[2]]));
            let width = u32::from(u16::from_be_bytes([s[3], s[4]]));
            return Some((width, height));
        }
        at += 2 + length;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg2000_size_is_read_from_siz() {
        let mut siz = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
        for v in [5000u32, 3000, 8, 0] {
            siz.extend(v.to_be_bytes());
        }
        assert_eq!(declared_size(&siz), Some((4992, 3000)));
    }

    #[test]
    fn jpeg_size_is_read_from_the_first_start_of_frame() {
        // SOI, APP0 (length 4: two payload bytes), SOF3 lossless: length 11, P=16, Y=192, X=160.
        let bytes = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xC3, 0x00, 0x0B, 16, 0x00, 0xC0,
            0x00, 0xA0, 1, 1, 0x11, 0,
        ];
        assert_eq!(declared_size(&bytes), Some((160, 192)));
        let mut ls = bytes;
        ls[9] = 0xF7; // JPEG-LS SOF55
        assert_eq!(declared_size(&ls), Some((160, 192)));
        assert_eq!(declared_size(&[0xFF, 0xD8, 0x12]), None);
        assert_eq!(declared_size(b"RLE fragment"), None);
    }
}
