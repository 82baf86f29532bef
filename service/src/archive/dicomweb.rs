//! A DICOMweb client (PS3.18) over plain HTTP: WADO-RS retrieves instances as
//! `multipart/related; type="application/dicom"` (parsed by [`crate::http::multipart`], the
//! code STOW-RS receives with). Every answer is bounded in size and time; nothing the archive
//! sends can make it panic.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::http::multipart::{Splitter, boundary_of, parts};
use crate::logging::error_chain;

/// Largest WADO-RS answer read (a study's instances, or one instance).
pub const MAX_ANSWER_BYTES: usize = 4 << 30;

/// What went wrong talking to a DICOMweb archive; never names patient data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebError {
    /// The base URL is unusable.
    #[error(
        "DICOMweb base URL {0:?} is not usable: give http://HOST:PORT/PATH, e.g. \
         http://pacs:8042/dicom-web (https is not supported: put a TLS proxy on loopback, or use C-GET)"
    )]
    Url(String),
    /// No connection or no answer.
    #[error("DICOMweb archive {url} cannot be reached: {message}; check the URL and that it is up")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What the HTTP client reported.
        message: String,
    },
    /// No answer in time.
    #[error("DICOMweb archive {url} did not answer within {after:?}; check that it is up")]
    Timeout {
        /// The URL asked.
        url: String,
        /// The time allowed.
        after: Duration,
    },
    /// 404: the archive does not hold what was asked.
    #[error("DICOMweb archive answered 404 Not Found to {url}")]
    NotFound {
        /// The URL asked.
        url: String,
    },
    /// Another status than 200 (or 204 for an empty search).
    #[error(
        "DICOMweb archive answered {status} to {url}; check its log and that diptych may read there"
    )]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// A body that is not what was asked for.
    #[error("DICOMweb archive's answer to {url} is unusable: {message}")]
    Body {
        /// The URL asked.
        url: String,
        /// What is wrong.
        message: String,
    },
}

/// A DICOMweb archive at a base URL (`http://host:port/dicom-web`).
#[derive(Clone)]
pub struct DicomWeb {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for DicomWeb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomWeb")
            .field("base", &self.base)
            .finish()
    }
}

impl DicomWeb {
    /// The archive at `base` (checked: plain `http://` with a host), waiting at most `timeout`
    /// for each answer.
    pub fn new(base: &str, timeout: Duration) -> Result<DicomWeb, WebError> {
        check_url(base)?;
        Ok(DicomWeb {
            base: base.trim_end_matches('/').to_string(),
            // A connection per request: archives close idle keep-alive connections after as
            // little as a second (Orthanc), and a pooled one reused at that moment fails the
            // request with "connection closed before message completed".
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
            timeout,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `HOST:PORT` of the base URL (for the audit trail and as the source of what it sends).
    pub fn authority(&self) -> String {
        self.base
            .parse::<Uri>()
            .ok()
            .and_then(|uri| uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| self.base.clone())
    }

    /// `GET {base}{path}` accepting `accept`, up to the answer's headers (within the timeout):
    /// its URL, Content-Type and body, to be read. 404 is [`WebError::NotFound`]; 200 and 204
    /// pass.
    async fn open(&self, path: &str, accept: &str) -> Result<Opened, WebError> {
        let url = format!("{}{path}", self.base);
        let uri: Uri = url.parse().map_err(|_| WebError::Url(url.clone()))?;
        let request = http::Request::get(uri)
            .header(header::ACCEPT, accept)
            .body(Empty::new())
            .map_err(|_| WebError::Url(url.clone()))?;
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| WebError::Unreachable {
                        url: url.clone(),
                        message: error_chain(&e),
                    })?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Err(WebError::NotFound { url: url.clone() });
            }
            if status != StatusCode::OK && status != StatusCode::NO_CONTENT {
                return Err(WebError::Status {
                    url: url.clone(),
                    status,
                });
            }
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = response.into_body().map_err(|e| error_chain(&e)).boxed();
            Ok(Opened {
                url: url.clone(),
                content_type,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| WebError::Timeout {
                url: url.clone(),
                after: self.timeout,
            })?
    }

    /// `GET {base}{path}` accepting `accept`; the Content-Type and the body (at most
    /// `max_bytes`), all within the timeout. 404 is [`WebError::NotFound`]; 204 an empty body.
    pub async fn get(
        &self,
        path: &str,
        accept: &str,
        max_bytes: usize,
    ) -> Result<(String, Bytes), WebError> {
        let started = tokio::time::Instant::now();
        let opened = self.open(path, accept).await?;
        let url = opened.url.clone();
        let left = self.timeout.saturating_sub(started.elapsed());
        let read = async {
            Limited::new(opened.body, max_bytes)
                .collect()
                .await
                .map_err(|e| WebError::Body {
                    url: url.clone(),
                    message: format!(
                        "reading it failed or it is larger than {max_bytes} bytes: {e}"
                    ),
                })
                .map(|collected| collected.to_bytes())
        };
        let body = tokio::time::timeout(left, read)
            .await
            .map_err(|_| WebError::Timeout {
                url: url.clone(),
                after: self.timeout,
            })??;
        Ok((opened.content_type, body))
    }

    /// WADO-RS, streamed: the Part-10 instances at `path` (`/studies/{s}`), read one by one as
    /// they arrive, in the archive's transfer syntax (`transfer-syntax=*`), each at most
    /// `max_instance_bytes`; the archive may pause at most `idle` between two pieces.
    pub async fn stream_instances(
        &self,
        path: &str,
        idle: Duration,
        max_instance_bytes: usize,
    ) -> Result<InstanceStream, WebError> {
        let opened = self
            .open(
                path,
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            )
            .await?;
        let splitter = match boundary_of(&opened.content_type) {
            Ok(boundary) => Some(Splitter::new(&boundary, max_instance_bytes)),
            // 204: nothing to retrieve.
            Err(_) if opened.content_type.is_empty() => None,
            Err(message) => {
                return Err(WebError::Body {
                    url: opened.url,
                    message,
                });
            }
        };
        Ok(InstanceStream {
            url: opened.url,
            body: opened.body,
            splitter,
            ready: VecDeque::new(),
            idle,
            ended: false,
        })
    }

    /// WADO-RS: the Part-10 instances at `path` (`/studies/{s}`, `…/series/{se}`,
    /// `…/instances/{i}`), in the order the archive sent them.
    pub async fn instances(&self, path: &str) -> Result<Vec<Bytes>, WebError> {
        let (content_type, body) = self
            .get(
                path,
                "multipart/related; type=\"application/dicom\"",
                MAX_ANSWER_BYTES,
            )
            .await?;
        let unusable = |message: String| WebError::Body {
            url: format!("{}{path}", self.base),
            message,
        };
        let boundary = boundary_of(&content_type).map_err(unusable)?;
        let found = parts(&body, &boundary).map_err(unusable)?;
        Ok(found
            .into_iter()
            .map(|(_, part)| body.slice_ref(part))
            .collect())
    }
}

/// An answer whose headers came: the body is still to be read.
struct Opened {
    url: String,
    content_type: String,
    body: BoxBody<Bytes, String>,
}

/// The instances of a streamed WADO-RS answer ([`DicomWeb::stream_instances`]).
pub struct InstanceStream {
    url: String,
    body: BoxBody<Bytes, String>,
    splitter: Option<Splitter>,
    ready: VecDeque<(String, Bytes)>,
    idle: Duration,
    ended: bool,
}

impl std::fmt::Debug for InstanceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceStream")
            .field("url", &self.url)
            .finish()
    }
}

impl InstanceStream {
    /// The next instance (a Part-10 file), `None` after the last; an error when the answer
    /// breaks off, stalls longer than the idle time, or is malformed.
    pub async fn next(&mut self) -> Result<Option<Bytes>, WebError> {
        let unusable = |url: &str, message: String| WebError::Body {
            url: url.to_string(),
            message,
        };
        loop {
            if let Some((part_type, part)) = self.ready.pop_front() {
                if !part_type.is_empty() && !part_type.eq_ignore_ascii_case("application/dicom") {
                    return Err(unusable(
                        &self.url,
                        format!("a part is {part_type}, not application/dicom"),
                    ));
                }
                return Ok(Some(part));
            }
            let Some(splitter) = self.splitter.as_mut() else {
                return Ok(None);
            };
            if self.ended {
                return Ok(None);
            }
            let frame = tokio::time::timeout(self.idle, self.body.frame())
                .await
                .map_err(|_| WebError::Timeout {
                    url: self.url.clone(),
                    after: self.idle,
                })?;
            match frame {
                None => {
                    self.ended = true;
                    splitter
                        .finish()
                        .map_err(|message| unusable(&self.url, message))?;
                }
                Some(Err(message)) => {
                    return Err(WebError::Unreachable {
                        url: self.url.clone(),
                        message: format!("the answer broke off: {message}"),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let done = splitter
                            .push(&data)
                            .map_err(|message| unusable(&self.url, message))?;
                        self.ready.extend(done);
                    }
                }
            }
        }
    }
}

/// Checks a base URL: `http://HOST[:PORT][/PATH]`.
pub fn check_url(base: &str) -> Result<(), WebError> {
    let bad = || WebError::Url(base.to_string());
    let uri: Uri = base.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    if uri.query().is_some() {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_is_plain_http_with_a_host() {
        assert!(check_url("http://pacs:8042/dicom-web").is_ok());
        assert!(check_url("http://10.0.0.7/").is_ok());
        for bad in [
            "pacs:8042",
            "https://pacs/dicom-web",
            "ftp://x/",
            "http:///x",
            "http://x/?a=b",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(
            check_url("https://x/")
                .unwrap_err()
                .to_string()
                .contains("http://")
        );
    }
}
