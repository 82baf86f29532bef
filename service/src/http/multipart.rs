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
        let headers = String::from_utf8_lossy(&body[headers_start..headers_end.0]);
        let part_type = headers
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(delimiter);
        let end = find(body, &closing, headers_end.1)
            .ok_or_else(|| malformed("a part has no closing delimiter"))?;
        parts.push((part_type, &body[headers_end.1..end]));
        at = end + 2;
    }
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
