//! gRPC-Web on the gRPC port, for browsers: a browser cannot speak native gRPC (it controls
//! neither HTTP/2 framing nor trailers), so the port also answers `application/grpc-web+proto`
//! and `application/grpc-web-text` over HTTP/1.1 or HTTP/2, translated by `tonic-web` into the
//! very same services — behind the same authentication gate, with the same tokens and roles.
//!
//! A page on another origin may call only when its origin is admitted by CORS:
//! [`WebOrigins`] holds the `grpc.web_allowed_origins` allow-list (empty by default: no other
//! site's page may call) and the loopback origins of diptych's own page on the HTTP port
//! (`http://localhost:8080`, `http://127.0.0.1:8080`, `http://[::1]:8080` for the default port),
//! which serve nothing but diptych's own bundle. An origin outside the list gets no
//! `Access-Control-Allow-Origin`, so the browser refuses the answer; non-browser clients are not
//! affected by CORS at all (tokens are what keeps them out).

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use thiserror::Error;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a gRPC-Web client sends besides the simple ones.
const ALLOWED_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
    "x-request-id",
    "connect-protocol-version",
];

/// Response headers a gRPC-Web client must be allowed to read (status, message, request id).
const EXPOSED_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
];

/// An entry of `grpc.web_allowed_origins` that is not an origin.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "`{origin}` is not an origin: write scheme://host[:port] with no path, e.g. \
     \"https://viewer.hospital.example\" or \"http://localhost:3000\""
)]
pub struct BadOrigin {
    /// The entry as written.
    pub origin: String,
}

/// Checks one allow-list entry: `http` or `https`, a host, an optional port, nothing after.
pub fn check_origin(origin: &str) -> Result<(), BadOrigin> {
    let bad = || BadOrigin {
        origin: origin.to_string(),
    };
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(bad)?;
    // An IPv6 literal in brackets, or a name or IPv4 address; then an optional :port.
    let (host_ok, port) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, after) = bracketed.split_once(']').ok_or_else(bad)?;
            let ok = !ip.is_empty()
                && ip
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
            };
            (ok, port)
        }
        None => {
            let (host, port) = match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            };
            let ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            (ok, port)
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    if !(host_ok && port_ok) {
        return Err(bad());
    }
    Ok(())
}

/// The origins whose pages may call the gRPC port from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOrigins {
    origins: Vec<String>,
}

impl WebOrigins {
    /// The configured allow-list, plus the loopback origins of diptych's own page on
    /// `page_port` (the HTTP port) when there is one.
    pub fn new(allowed: &[String], page_port: Option<u16>) -> Result<Self, BadOrigin> {
        let mut origins = Vec::new();
        for origin in allowed {
            let origin = origin.trim_end_matches('/');
            check_origin(origin)?;
            origins.push(origin.to_string());
        }
        if let Some(port) = page_port {
            for host in ["localhost", "127.0.0.1", "[::1]"] {
                origins.push(format!("http://{host}:{port}"));
            }
        }
        origins.dedup();
        Ok(Self { origins })
    }

    /// The origins admitted, in order.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// The CORS layer in front of the gRPC services: preflights answered, the admitted origins
    /// echoed, the gRPC-Web headers allowed in and exposed out.
    pub fn layer(&self) -> CorsLayer {
        let origins: Vec<HeaderValue> = self
            .origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(Duration::from_secs(600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "https://viewer.hospital.example",
            "http://localhost:3000",
            "http://10.0.0.5:8042",
            "http://[::1]:8080",
            "https://[fe80::1]",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "viewer.example",
            "ftp://viewer.example",
            "https://viewer.example/ohif",
            "https://",
            "http://host:port",
            "http://host:99999",
            "*",
            "https://exa mple.org",
        ] {
            let error = check_origin(bad).unwrap_err();
            assert!(
                error.to_string().contains("scheme://host[:port]"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_page_s_loopback_origins_join_the_list() {
        let none = WebOrigins::new(&[], None).unwrap();
        assert!(none.origins().is_empty(), "nothing is allowed by default");
        let web = WebOrigins::new(&["https://ohif.example/".into()], Some(8080)).unwrap();
        assert_eq!(
            web.origins(),
            [
                "https://ohif.example",
                "http://localhost:8080",
                "http://127.0.0.1:8080",
                "http://[::1]:8080"
            ]
        );
        assert!(WebOrigins::new(&["ohif.example".into()], None).is_err());
    }
}
