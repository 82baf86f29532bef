//! The `[dicom]` section of the configuration turned into the listener's configuration: the
//! allow-list parsed, the TLS files read.

use std::net::IpAddr;
use std::time::Duration;

use diptych_dicom_adapter::Limits;
use diptych_dicom_adapter::scp::{AllowedCaller, ScpConfig, TlsConfig};
use thiserror::Error;

use crate::admin::KosDestination;
use crate::config::{DicomConfig, KosConfig};

/// Why the `[dicom]` settings cannot start a listener.
#[derive(Debug, Error)]
pub enum DicomSettingsError {
    /// An allow-list entry is not `AE` or `AE@ip`.
    #[error(
        "dicom.allowed_callers: {0:?} is not AE or AE@ip (e.g. \"CT1\" or \"PACS@10.0.0.5\"; an AE title is 1 to 16 printable ASCII characters without backslash)"
    )]
    Caller(String),
    /// A TLS file cannot be read.
    #[error("dicom.{key}: cannot read {path}: {source}")]
    Tls {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The KOS destination is not `AE@HOST:PORT`.
    #[error(
        "dicom.kos.destination: {0:?} is not AE@HOST:PORT (e.g. \"WEASIS@10.0.0.9:11113\"; an AE title is 1 to 16 printable ASCII characters without backslash)"
    )]
    Destination(String),
}

/// The listener's configuration and the KOS destination, from `[dicom]`.
#[derive(Debug, Clone)]
pub struct DicomSettings {
    /// The listener; its allow-list is `dicom.allowed_callers`, the seed of the allowed peers
    /// on the first start (see [`crate::admin`]).
    pub scp: ScpConfig,
    /// The quiet period after which a study counts as received.
    pub quiet_period: Duration,
    /// Where KOS documents go, if anywhere.
    pub kos: Option<KosSettings>,
}

/// The KOS sender's settings from `[dicom.kos]`.
#[derive(Debug, Clone)]
pub struct KosSettings {
    /// `dicom.kos.destination`: the seed of the KOS destinations on the first start (see
    /// [`crate::admin`]); afterwards the data folder's list is used.
    pub destination: KosDestination,
    /// Similar instances referenced per mode.
    pub top_k: u32,
}

impl DicomSettings {
    /// Reads `[dicom]` with the instance limits of `[images]`.
    pub fn from_config(config: &DicomConfig, limits: &Limits) -> Result<Self, DicomSettingsError> {
        let allowed_callers = config
            .allowed_callers
            .iter()
            .map(|entry| parse_caller(entry))
            .collect::<Result<Vec<_>, _>>()?;
        let read = |key: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| DicomSettingsError::Tls {
                key,
                path: path.to_path_buf(),
                source,
            })
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert_pem: read("tls_cert", cert)?,
                key_pem: read("tls_key", key)?,
                client_ca_pem: match &config.tls_client_ca {
                    Some(ca) => Some(read("tls_client_ca", ca)?),
                    None => None,
                },
            }),
            _ => None,
        };
        let scp = ScpConfig {
            addr: config.addr,
            plain: config.plain,
            tls_addr: config.tls_addr,
            ae_title: config.ae_title.trim().to_string(),
            max_associations: config.max_associations,
            max_pdu_length: config.max_pdu_length,
            read_timeout: Duration::from_secs(config.read_timeout_s),
            idle_timeout: Duration::from_secs(config.idle_timeout_s),
            allowed_callers: allowed_callers.into(),
            tls,
            limits: *limits,
            ..ScpConfig::default()
        };
        Ok(DicomSettings {
            scp,
            quiet_period: Duration::from_secs_f64(config.study_quiet_period_s),
            kos: config.kos.as_ref().map(parse_kos).transpose()?,
        })
    }
}

fn parse_caller(entry: &str) -> Result<AllowedCaller, DicomSettingsError> {
    let bad = || DicomSettingsError::Caller(entry.to_string());
    let (ae, host) = match entry.rsplit_once('@') {
        Some((ae, host)) => (ae, Some(host.parse::<IpAddr>().map_err(|_| bad())?)),
        None => (entry, None),
    };
    let ae = diptych_dicom_adapter::AeTitle::parse(ae).map_err(|_| bad())?;
    Ok(AllowedCaller {
        ae_title: ae.into(),
        host,
    })
}

fn parse_kos(kos: &KosConfig) -> Result<KosSettings, DicomSettingsError> {
    let destination = KosDestination::parse(&kos.destination)
        .map_err(|_| DicomSettingsError::Destination(kos.destination.clone()))?;
    Ok(KosSettings {
        destination,
        top_k: kos.top_k.clamp(1, 100),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_and_destinations_parse_or_say_what_is_wrong() {
        let c = parse_caller("PACS@10.0.0.5").unwrap();
        assert_eq!(c.ae_title, "PACS");
        assert_eq!(c.host, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(parse_caller("CT1").unwrap().host, None);
        assert!(
            parse_caller("X@not-an-ip")
                .unwrap_err()
                .to_string()
                .contains("AE@ip")
        );
        let kos = KosConfig {
            destination: "WEASIS@127.0.0.1:11113".into(),
            archive: "teaching".into(),
            top_k: 5,
        };
        let k = parse_kos(&kos).unwrap();
        assert_eq!(k.destination.to_string(), "WEASIS@127.0.0.1:11113");
        let bad = KosConfig {
            destination: "nowhere".into(),
            ..kos
        };
        assert!(parse_kos(&bad).is_err());
    }
}
