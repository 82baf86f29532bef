//! What a backfill job asks for — the archive (a DICOM node or a DICOMweb base URL: [`Source`]),
//! the studies (a [`StudyQuery`]) and how to pull them — and how politely ([`Pace`]): checked on
//! the way in, with errors that say what to fix.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use diptych_dicom_adapter::output::StudyQuery;
use serde::{Deserialize, Serialize};

/// Most studies fetched at once.
pub const MAX_CONCURRENCY: u32 = 16;

/// How instances are pulled from the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// C-GET on the association that asked.
    CGet,
    /// C-MOVE to this server's own AE title (its listener receives them).
    CMove,
    /// QIDO-RS and WADO-RS from a DICOMweb archive (a backfill), or WADO-RS alone (the
    /// re-index's archive fetcher).
    WadoRs,
}

/// The archive: `AE@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    /// Its AE title.
    pub ae_title: String,
    /// Host name or IP address.
    pub host: String,
    /// DICOM port.
    pub port: u16,
}

impl Archive {
    /// Reads `AE@HOST:PORT`; the error says how to write it.
    pub fn parse(text: &str) -> Result<Archive, SpecError> {
        let bad = || SpecError::Archive(text.to_string());
        let (ae, address) = text.split_once('@').ok_or_else(bad)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|&p| p > 0).ok_or_else(bad)?;
        diptych_dicom_adapter::ae_title::AeTitle::parse(ae)
            .map_err(|e| SpecError::AeTitle(e.to_string()))?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Archive {
            ae_title: ae.to_string(),
            host: host.to_string(),
            port,
        })
    }

    /// The address to connect to (resolved now).
    pub fn resolve(&self) -> Result<SocketAddr, SpecError> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| SpecError::Resolve(self.to_string()))
    }
}

impl std::fmt::Display for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
    }
}

/// A DICOMweb archive: its base URL, `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebArchive {
    /// The base URL, without a trailing slash.
    pub url: String,
}

impl WebArchive {
    /// Reads a base URL (plain `http://` with a host); the error says how to write it.
    pub fn parse(text: &str) -> Result<WebArchive, SpecError> {
        crate::archive::dicomweb::check_url(text).map_err(|e| SpecError::Url(e.to_string()))?;
        Ok(WebArchive {
            url: text.trim_end_matches('/').to_string(),
        })
    }
}

/// Where a job pulls from: a DICOM node (C-FIND, then C-GET or C-MOVE) or a DICOMweb archive
/// (QIDO-RS, then WADO-RS). Written in `job.json` as the node's or the URL's fields, so the job
/// file of a version that knew only DICOM nodes reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// A DICOM node.
    Dicom(Archive),
    /// A DICOMweb base URL.
    Web(WebArchive),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Dicom(archive) => archive.fmt(f),
            Source::Web(web) => f.write_str(&web.url),
        }
    }
}

/// What a job pulls: the same spec resumes the same job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Where from: a DICOM node for [`Method::CGet`] and [`Method::CMove`], a DICOMweb archive
    /// for [`Method::WadoRs`].
    pub archive: Source,
    /// Which studies.
    pub query: StudyQuery,
    /// How.
    pub method: Method,
}

/// How politely the archive is asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Studies fetched at once (1 to [`MAX_CONCURRENCY`]).
    pub concurrency: u32,
    /// Most studies started per minute; `None`: no limit.
    pub studies_per_minute: Option<f64>,
    /// Only start studies inside this daily window (UTC).
    pub off_hours: Option<OffHours>,
}

impl Pace {
    /// Checks the request's numbers: 0 concurrency means 1, 0 per minute no limit.
    pub fn new(
        concurrency: u32,
        studies_per_minute: f64,
        off_hours: &str,
    ) -> Result<Pace, SpecError> {
        if concurrency > MAX_CONCURRENCY {
            return Err(SpecError::Concurrency(concurrency));
        }
        if !studies_per_minute.is_finite() || studies_per_minute < 0.0 {
            return Err(SpecError::Rate(studies_per_minute));
        }
        Ok(Pace {
            concurrency: concurrency.max(1),
            studies_per_minute: (studies_per_minute > 0.0).then_some(studies_per_minute),
            off_hours: if off_hours.trim().is_empty() {
                None
            } else {
                Some(OffHours::parse(off_hours)?)
            },
        })
    }

    /// Least time between the starts of two studies.
    pub fn interval(&self) -> Duration {
        self.studies_per_minute
            .map(|rate| Duration::from_secs_f64(60.0 / rate))
            .unwrap_or(Duration::ZERO)
    }
}

/// A daily window `HH:MM-HH:MM` in UTC; it may pass midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffHours {
    /// Minutes after midnight UTC when it opens.
    pub start: u32,
    /// Minutes after midnight UTC when it closes.
    pub end: u32,
}

impl OffHours {
    /// Reads `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<OffHours, SpecError> {
        let bad = || SpecError::OffHours(text.to_string());
        let minutes = |t: &str| {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(bad());
        }
        Ok(OffHours { start, end })
    }

    /// How long until the window opens, from `now_minute` (minutes after midnight UTC, with
    /// seconds as a fraction); zero inside it.
    pub fn wait_from(&self, now_minute: f64) -> Duration {
        let (start, end) = (f64::from(self.start), f64::from(self.end));
        let inside = if start < end {
            now_minute >= start && now_minute < end
        } else {
            now_minute >= start || now_minute < end
        };
        if inside {
            return Duration::ZERO;
        }
        let minutes = (start - now_minute).rem_euclid(24.0 * 60.0);
        Duration::from_secs_f64(minutes * 60.0)
    }

    /// [`OffHours::wait_from`] the current time.
    pub fn wait_now(&self) -> Duration {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.wait_from((since_epoch % 86_400.0) / 60.0)
    }
}

/// What is wrong with a backfill request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Not `AE@HOST:PORT`.
    #[error("archive {0:?} is not AE@HOST:PORT; write e.g. PACS@10.0.0.7:104")]
    Archive(String),
    /// A malformed AE title.
    #[error("archive AE title: {0}")]
    AeTitle(String),
    /// The host does not resolve.
    #[error(
        "archive {0}: the host name does not resolve; give an IP address or a name this server can resolve"
    )]
    Resolve(String),
    /// Too many at once.
    #[error("concurrency {0} is more than {MAX_CONCURRENCY}; an archive is not to be flooded")]
    Concurrency(u32),
    /// A negative or infinite rate.
    #[error("studies_per_minute {0} must be 0 (no limit) or a positive number")]
    Rate(f64),
    /// A DICOMweb base URL that cannot be used.
    #[error("{0}")]
    Url(String),
    /// A malformed window.
    #[error("off hours {0:?} is not HH:MM-HH:MM (UTC), e.g. 19:00-07:00")]
    OffHours(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_is_read_and_a_bad_one_says_how_to_write_it() {
        let a = Archive::parse("PACS@10.0.0.7:104").unwrap();
        assert_eq!(
            (a.ae_title.as_str(), a.host.as_str(), a.port),
            ("PACS", "10.0.0.7", 104)
        );
        assert_eq!(a.to_string(), "PACS@10.0.0.7:104");
        for bad in ["PACS", "PACS@host", "PACS@host:0", "@host:104", "PACS@:104"] {
            assert!(Archive::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Archive::parse("x")
                .unwrap_err()
                .to_string()
                .contains("AE@HOST:PORT")
        );
    }

    #[test]
    fn a_source_reads_back_from_the_job_file_whatever_its_kind() {
        let dicom = Source::Dicom(Archive::parse("PACS@10.0.0.7:104").unwrap());
        let web = Source::Web(WebArchive::parse("http://pacs:8042/dicom-web/").unwrap());
        assert_eq!(web.to_string(), "http://pacs:8042/dicom-web");
        for source in [&dicom, &web] {
            let text = serde_json::to_string(source).unwrap();
            assert_eq!(&serde_json::from_str::<Source>(&text).unwrap(), source);
        }
        // A job file written before DICOMweb sources existed.
        let old = r#"{"ae_title":"PACS","host":"10.0.0.7","port":104}"#;
        assert_eq!(serde_json::from_str::<Source>(old).unwrap(), dicom);
        let bad = WebArchive::parse("https://pacs/dicom-web").unwrap_err();
        assert!(bad.to_string().contains("http://HOST:PORT/PATH"), "{bad}");
    }

    #[test]
    fn the_off_hours_window_may_pass_midnight() {
        let night = OffHours::parse("19:00-07:00").unwrap();
        assert_eq!(night.wait_from(20.0 * 60.0), Duration::ZERO);
        assert_eq!(night.wait_from(3.0 * 60.0), Duration::ZERO);
        assert_eq!(night.wait_from(18.0 * 60.0), Duration::from_secs(3600));
        let lunch = OffHours::parse("12:00-13:30").unwrap();
        assert_eq!(lunch.wait_from(12.5 * 60.0), Duration::ZERO);
        assert_eq!(lunch.wait_from(14.0 * 60.0), Duration::from_secs(22 * 3600));
        assert!(OffHours::parse("25:00-01:00").is_err());
        assert!(OffHours::parse("7-19").is_err());
    }

    #[test]
    fn pace_numbers_are_checked() {
        let pace = Pace::new(0, 30.0, "").unwrap();
        assert_eq!(pace.concurrency, 1);
        assert_eq!(pace.interval(), Duration::from_secs(2));
        assert_eq!(Pace::new(2, 0.0, "").unwrap().interval(), Duration::ZERO);
        assert!(Pace::new(99, 0.0, "").is_err());
        assert!(Pace::new(1, -1.0, "").is_err());
    }
}
