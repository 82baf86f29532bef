//! The entries an administrator manages: an allowed DICOM peer (`AE` or `AE@ip`) and a KOS
//! destination (`AE@HOST:PORT`), each checked on the way in with a message that says what to fix.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use diptych_dicom_adapter::AeTitle;
use diptych_dicom_adapter::scp::AllowedCaller;
use serde::{Deserialize, Serialize};

/// Why an entry is refused; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EntryError(pub String);

/// A calling AE title allowed to associate, optionally only from one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The calling AE title (trimmed).
    pub ae_title: String,
    /// When set, associations with this title must come from this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<IpAddr>,
}

impl Peer {
    /// Checks an AE title and an optional host (empty: any address; else an IP address).
    pub fn new(ae_title: &str, host: &str) -> Result<Peer, EntryError> {
        let ae_title = checked_ae(ae_title)?;
        let host = match host.trim() {
            "" => None,
            text => Some(text.parse::<IpAddr>().map_err(|_| {
                EntryError(format!(
                    "host {text:?} is not an IP address; give the peer's IPv4 or IPv6 address \
                     (the listener compares the connection's address), or leave it empty to \
                     allow the AE title from anywhere"
                ))
            })?),
        };
        Ok(Peer { ae_title, host })
    }

    /// The listener's form of the entry.
    pub fn allowed_caller(&self) -> AllowedCaller {
        AllowedCaller {
            ae_title: self.ae_title.clone(),
            host: self.host,
        }
    }
}

impl From<AllowedCaller> for Peer {
    fn from(caller: AllowedCaller) -> Self {
        Peer {
            ae_title: caller.ae_title,
            host: caller.host,
        }
    }
}

impl fmt::Display for Peer {
    /// `AE` or `AE@ip`, as in `dicom.allowed_callers`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host {
            None => f.write_str(&self.ae_title),
            Some(host) => write!(f, "{}@{host}", self.ae_title),
        }
    }
}

/// A viewer or archive that receives a KOS document per received study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KosDestination {
    /// Its AE title (the Called AE Title of the association).
    pub ae_title: String,
    /// Host name or IP address of its DICOM listener.
    pub host: String,
    /// Port of its DICOM listener.
    pub port: u16,
}

impl KosDestination {
    /// Checks an AE title, a host (an IP address or a DNS name) and a port (1 to 65535).
    pub fn new(ae_title: &str, host: &str, port: u32) -> Result<KosDestination, EntryError> {
        let ae_title = checked_ae(ae_title)?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let is_name = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
        if host.parse::<IpAddr>().is_err() && !is_name {
            return Err(EntryError(format!(
                "host {host:?} is not an IP address or a DNS name; give the destination's \
                 address, e.g. 10.0.0.9 or viewer.hospital.org"
            )));
        }
        let port = u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| {
            EntryError(format!(
                "port {port} is out of range; give the destination's DICOM port, 1 to 65535 (often 104 or 11112)"
            ))
        })?;
        Ok(KosDestination {
            ae_title,
            host: host.to_string(),
            port,
        })
    }

    /// Reads `AE@HOST:PORT`, the form of `dicom.kos.destination`.
    pub fn parse(text: &str) -> Result<KosDestination, EntryError> {
        let bad = || {
            EntryError(format!(
                "{text:?} is not AE@HOST:PORT (e.g. \"WEASIS@10.0.0.9:11113\")"
            ))
        };
        let (ae, address) = text.split_once('@').ok_or_else(bad)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u32>().map_err(|_| bad())?;
        KosDestination::new(ae, host, port)
    }

    /// The first address the host resolves to.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} resolves to no address", self.host),
                )
            })
    }
}

impl fmt::Display for KosDestination {
    /// `AE@HOST:PORT`, as in `dicom.kos.destination`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.ae_title, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
        }
    }
}

fn checked_ae(text: &str) -> Result<String, EntryError> {
    AeTitle::parse(text)
        .map(String::from)
        .map_err(|e| EntryError(format!("AE title {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_and_named_as_the_configuration_names_them() {
        assert_eq!(Peer::new(" CT1 ", "").unwrap().to_string(), "CT1");
        assert_eq!(
            Peer::new("PACS", "10.0.0.5").unwrap().to_string(),
            "PACS@10.0.0.5"
        );
        assert!(
            Peer::new("PACS", "pacs.local")
                .unwrap_err()
                .0
                .contains("IP address")
        );
        assert!(Peer::new("", "").unwrap_err().0.contains("empty"));
        assert!(Peer::new("A\\B", "").unwrap_err().0.contains("backslash"));
        assert!(
            Peer::new("SEVENTEEN_CHARS_X", "")
                .unwrap_err()
                .0
                .contains("16")
        );

        let k = KosDestination::parse("WEASIS@10.0.0.9:11113").unwrap();
        assert_eq!((k.host.as_str(), k.port), ("10.0.0.9", 11113));
        assert_eq!(k.to_string(), "WEASIS@10.0.0.9:11113");
        let v6 = KosDestination::parse("V@[::1]:104").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.to_string()),
            ("::1", "V@[::1]:104".to_string())
        );
        assert!(
            KosDestination::new("V", "viewer.example", 0)
                .unwrap_err()
                .0
                .contains("1 to 65535")
        );
        assert!(KosDestination::new("V", "viewer.example", 70000).is_err());
        assert!(
            KosDestination::new("V", "bad host", 104)
                .unwrap_err()
                .0
                .contains("DNS name")
        );
        assert!(KosDestination::parse("nowhere").is_err());
    }
}
