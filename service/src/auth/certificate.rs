//! The subject of a TLS client certificate that rustls has already verified against
//! `grpc.tls_client_ca`: only read here, never trusted on its own.

use x509_parser::prelude::{FromDer, X509Certificate};

/// A client certificate's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The whole subject, e.g. `CN=viewer, O=Hospital`.
    pub text: String,
    /// Its first common name, if it has one.
    pub common_name: Option<String>,
}

/// The subject of a DER certificate, or None if it does not parse.
pub fn subject_of(der: &[u8]) -> Option<Subject> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    let subject = certificate.subject();
    Some(Subject {
        text: subject.to_string(),
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_has_no_subject() {
        assert_eq!(subject_of(b"not a certificate"), None);
        assert_eq!(subject_of(&[]), None);
    }
}
