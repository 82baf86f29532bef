//! `multipart/related; type="application/dicom"` bodies (PS3.18 8.6.1.2), one Part-10
//! instance per part: what STOW-RS receives and what WADO-RS answers. Every length is checked;
//! a malformed body is an error, never a panic.

/// The boundary of a `multipart/related; type="application/dicom"` content type.
pub(crate) fn boundary_of(content_type: &str) -> Result<String, String> {
    let mut pieces = content_type.split(';');
    let media = pieces.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/related") {
        return Err(format!(
            "Content-Type {media:?} is not accepted; send multipart/related; type=\"application/dicom\" with one Part-10 instance per part"
        ));
    }
    let mut boundary = None;
    for parameter in pieces {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "boundary" => boundary = Some(value.to_string()),
            "type" if !value.eq_ignore_ascii_case("application/dicom") => {
                return Err(format!(
                    "multipart type {value:?} is not accepted; only application/dicom (Part-10 instances) is stored"
                ));
            }
            _ => {}
        }
    }
    match boundary {
        Some(b) if !b.is_empty() && b.len() <= 70 => Ok(b),
        _ => Err("the multipart/related Content-Type has no valid boundary parameter".into()),
    }
}

/// The parts of a multipart body: (Content-Type of the part, body). Every length is checked:
/// a malformed body is an error, never a panic.
pub(crate) fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<(String, &'a [u8])>, String> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let malformed = |what: &str| format!("the multipart body is malformed: {what}");
    let mut at = find(body, delimiter, 0).ok_or_else(|| malformed("no boundary delimiter"))?;
    let mut parts = Vec::new();
    loop {
        at += delimiter.len();
        let rest = body.get(at..).unwrap_or_default();
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // The rest of the delimiter line (transport padding), then the part's headers.
        let line_end =
            find(body, b"\r\n", at).ok_or_else(|| malformed("a delimiter line does not end"))?;
        let headers_start = line_end + 2;
        let headers_end = find(body, b"\r\n\r\n", headers_start)
            .map(|end| (end, end + 4))
            .or_else(|| {
                body.get(headers_start..headers_start + 2)
                    .filter(|s| *s == b"\r\n")
                    .map(|_| (headers_start, headers_start + 2))
            })
            .ok_or_else(|| malformed("a part's headers do not end"))?;
        let part_type = content_type(&body[headers_start..headers_end.0]);
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(delimiter);
        let end = find(body, &closing, headers_end.1)
            .ok_or_else(|| malformed("a part has no closing delimiter"))?;
        parts.push((part_type, &body[headers_end.1..end]));
        at = end + 2;
    }
}

/// Longest preamble, delimiter line or part header block a [`Splitter`] waits through.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Splits a multipart body that arrives in pieces (a WADO-RS answer read from the network) into
/// its parts as each one completes, holding at most one part in memory — [`parts`] for a body
/// that is not all there yet. Every length is checked: a malformed body is an error, never a
/// panic.
pub(crate) struct Splitter {
    delimiter: Vec<u8>,
    closing: Vec<u8>,
    buffer: bytes::BytesMut,
    phase: Phase,
    scanned: usize,
    max_part_bytes: usize,
}

/// Where a [`Splitter`] stands.
enum Phase {
    /// Before the first delimiter.
    Preamble,
    /// Right after a delimiter: its line, then a part's headers, or `--` (the end).
    Delimiter,
    /// In a part's body, of this Content-Type.
    Body(String),
    /// After the closing delimiter (the epilogue is dropped).
    Done,
}

impl Splitter {
    /// A splitter for `boundary`; a part larger than `max_part_bytes` is an error.
    pub(crate) fn new(boundary: &str, max_part_bytes: usize) -> Splitter {
        let delimiter = format!("--{boundary}").into_bytes();
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        Splitter {
            delimiter,
            closing,
            buffer: bytes::BytesMut::new(),
            phase: Phase::Preamble,
            scanned: 0,
            max_part_bytes,
        }
    }

    /// Takes the next piece of the body; the parts it completed: (Content-Type, body).
    pub(crate) fn push(&mut self, piece: &[u8]) -> Result<Vec<(String, bytes::Bytes)>, String> {
        let malformed = |what: &str| format!("the multipart body is malformed: {what}");
        let too_long = |what: &str| {
            format!(
                "the multipart body is malformed: {what} is longer than {MAX_HEADER_BYTES} bytes"
            )
        };
        if matches!(self.phase, Phase::Done) {
            return Ok(Vec::new());
        }
        self.buffer.extend_from_slice(piece);
        let mut done = Vec::new();
        loop {
            match &self.phase {
                Phase::Done => {
                    self.buffer.clear();
                    return Ok(done);
                }
                Phase::Preamble => match find(&self.buffer, &self.delimiter, 0) {
                    Some(at) => {
                        let _ = self.buffer.split_to(at + self.delimiter.len());
                        self.phase = Phase::Delimiter;
                    }
                    None if self.buffer.len() > MAX_HEADER_BYTES => {
                        return Err(too_long("the preamble before the first boundary"));
                    }
                    None => return Ok(done),
                },
                Phase::Delimiter => {
                    if self.buffer.len() < 2 {
                        return Ok(done);
                    }
                    if self.buffer.starts_with(b"--") {
                        self.phase = Phase::Done;
                        continue;
                    }
                    let Some(line_end) = find(&self.buffer, b"\r\n", 0) else {
                        if self.buffer.len() > MAX_HEADER_BYTES {
                            return Err(too_long("a delimiter line"));
                        }
                        return Ok(done);
                    };
                    let start = line_end + 2;
                    let rest = &self.buffer[start..];
                    let end = if rest.len() < 2 {
                        None
                    } else if rest.starts_with(b"\r\n") {
                        Some((start, start + 2))
                    } else {
                        find(&self.buffer, b"\r\n\r\n", start).map(|end| (end, end + 4))
                    };
                    let Some((headers_end, body_start)) = end else {
                        if self.buffer.len() > MAX_HEADER_BYTES {
                            return Err(too_long("a part's headers"));
                        }
                        return Ok(done);
                    };
                    let part_type = content_type(&self.buffer[start..headers_end]);
                    let _ = self.buffer.split_to(body_start);
                    self.phase = Phase::Body(part_type);
                    self.scanned = 0;
                }
                Phase::Body(part_type) => match find(&self.buffer, &self.closing, self.scanned) {
                    Some(end) if end > self.max_part_bytes => {
                        return Err(malformed(&format!(
                            "a part is larger than {} bytes",
                            self.max_part_bytes
                        )));
                    }
                    Some(end) => {
                        let part = self.buffer.split_to(end).freeze();
                        done.push((part_type.clone(), part));
                        let _ = self.buffer.split_to(self.closing.len());
                        self.phase = Phase::Delimiter;
                    }
                    None if self.buffer.len() > self.max_part_bytes => {
                        return Err(malformed(&format!(
                            "a part is larger than {} bytes",
                            self.max_part_bytes
                        )));
                    }
                    None => {
                        self.scanned = self.buffer.len().saturating_sub(self.closing.len() - 1);
                        return Ok(done);
                    }
                },
            }
        }
    }

    /// The body ended: an error unless its closing delimiter came.
    pub(crate) fn finish(&self) -> Result<(), String> {
        match self.phase {
            Phase::Done => Ok(()),
            Phase::Preamble => Err("the multipart body is malformed: no boundary delimiter".into()),
            _ => Err("the multipart body ended before its closing delimiter".into()),
        }
    }
}

/// The media type of a part's Content-Type header, without parameters; empty without one.
fn content_type(headers: &[u8]) -> String {
    String::from_utf8_lossy(headers)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

/// Where `needle` first occurs in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let tail = haystack.get(from..)?;
    if needle.is_empty() || tail.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut start = 0;
    while let Some(offset) = tail[start..].iter().position(|&b| b == first) {
        let candidate = start + offset;
        if tail.get(candidate..candidate + needle.len())? == needle {
            return Some(from + candidate);
        }
        start = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_body_splits_into_its_parts_and_a_broken_one_is_an_error() {
        let body = b"preamble\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--XyZ\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\nsec\r\nond\r\n--XyZ--\r\n";
        let found = parts(body, "XyZ").unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], ("application/dicom".to_string(), &b"first"[..]));
        assert_eq!(found[1].1, b"sec\r\nond");
        for cut in [10, 20, 40, body.len() - 9] {
            // Never a panic; a cut body is an error (or, cut after the last part, fewer parts).
            let _ = parts(&body[..cut], "XyZ");
        }
        assert!(
            parts(
                b"--XyZ\r\nContent-Type: application/dicom\r\n\r\nno end",
                "XyZ"
            )
            .is_err()
        );
        assert!(parts(b"nothing", "XyZ").is_err());
    }

    #[test]
    fn a_body_split_anywhere_gives_the_same_parts_as_the_whole() {
        let body = b"preamble\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--XyZ\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\nsec\r\nond\r\n-\r\n--XyZ\r\n\r\nbare\r\n--XyZ--\r\nepilogue";
        let whole: Vec<(String, Vec<u8>)> = parts(body, "XyZ")
            .unwrap()
            .into_iter()
            .map(|(t, p)| (t, p.to_vec()))
            .collect();
        assert_eq!(whole.len(), 3);
        for size in 1..body.len() {
            let mut splitter = Splitter::new("XyZ", 1024);
            let mut found = Vec::new();
            for piece in body.chunks(size) {
                for (t, p) in splitter.push(piece).unwrap() {
                    found.push((t, p.to_vec()));
                }
            }
            splitter.finish().unwrap();
            assert_eq!(found, whole, "pieces of {size} bytes");
        }
        // Cut anywhere before the closing delimiter: an error at the end, never a panic.
        let close = find(body, b"--XyZ--", 0).unwrap();
        for cut in 0..close + 2 {
            let mut splitter = Splitter::new("XyZ", 1024);
            let _ = splitter.push(&body[..cut]).unwrap();
            assert!(splitter.finish().is_err(), "cut at {cut}");
        }
        // A part larger than allowed, and a body with no boundary at all.
        let mut small = Splitter::new("XyZ", 4);
        assert!(
            small
                .push(body)
                .unwrap_err()
                .contains("larger than 4 bytes")
        );
        let mut none = Splitter::new("XyZ", 1024);
        assert!(none.push(&[b'x'; MAX_HEADER_BYTES + 1]).is_err());
    }

    #[test]
    fn only_multipart_related_dicom_is_accepted() {
        assert_eq!(
            boundary_of("multipart/related; type=\"application/dicom\"; boundary=abc").unwrap(),
            "abc"
        );
        assert!(
            boundary_of("application/dicom")
                .unwrap_err()
                .contains("multipart/related")
        );
        assert!(
            boundary_of("multipart/related; type=\"application/dicom+json\"; boundary=a").is_err()
        );
        assert!(boundary_of("multipart/related; type=\"application/dicom\"").is_err());
    }
}
