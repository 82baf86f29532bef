//! The audit events: typed records of who saw or changed which patient's data, in the spirit of
//! DICOM PS3.15 Annex A.5 (IHE ATNA). Each becomes one JSON line in the audit file and one
//! syslog message.
//!
//! Unlike the logs, events name patients (IDs) and studies (UIDs): that is their purpose. They
//! never carry a bearer token, pixel data, names or birth dates.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// When it happened, RFC 3339 in UTC with milliseconds (`2025-01-31T12:00:00.000Z`).
    pub time: String,
    /// Whether the action succeeded.
    pub outcome: Outcome,
    /// Why it failed (a status message), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who acted.
    pub who: Who,
    /// The peer's network address (`IP:port`), when known.
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The gRPC call's request id (its `x-request-id`), which its log lines carry too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The event type (`event`) and what was done (`what`).
    #[serde(flatten)]
    pub what: What,
}

impl AuditEvent {
    /// An event of now with `outcome`, `who`, `peer` and `what`.
    pub fn now(outcome: Outcome, who: Who, peer: Option<String>, what: What) -> Self {
        Self {
            time: rfc3339_utc(SystemTime::now()),
            outcome,
            reason: None,
            who,
            peer,
            request_id: None,
            what,
        }
    }

    /// The event with the gRPC call's request id, when it has one.
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// The event with `reason` as why it failed.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The event type's name, as in the `event` field.
    pub fn kind(&self) -> &'static str {
        self.what.kind()
    }
}

/// Whether an audited action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It did what was asked.
    Success,
    /// It was refused or failed.
    Failure,
}

/// Who acted: a gRPC caller, or a DICOM peer by its AE titles. Absent fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Who {
    /// The caller's name: the tokens file's `name`, a certificate subject, or `anonymous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The caller's role (`ingest`, `search`, `admin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// How the caller authenticated: `token`, `certificate` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The subject of the caller's verified TLS client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_subject: Option<String>,
    /// The DICOM calling AE title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calling_ae: Option<String>,
    /// The DICOM called AE title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub called_ae: Option<String>,
}

impl Who {
    /// The admitted gRPC caller; `None` (a call that passed no gate) is `unknown`.
    pub fn caller(caller: Option<&crate::auth::Caller>) -> Self {
        use crate::auth::Credential;
        match caller {
            None => Who {
                name: Some("unknown".to_string()),
                ..Who::default()
            },
            Some(caller) => {
                let (credential, subject) = match &caller.credential {
                    Credential::Token => ("token", None),
                    Credential::ClientCertificate { subject } => {
                        ("certificate", Some(subject.clone()))
                    }
                    Credential::None => ("none", None),
                };
                Who {
                    name: Some(caller.name.clone()),
                    role: Some(caller.role.name().to_string()),
                    credential: Some(credential.to_string()),
                    certificate_subject: subject,
                    ..Who::default()
                }
            }
        }
    }

    /// A DICOM peer by its AE titles.
    pub fn dicom(calling_ae: &str, called_ae: &str) -> Self {
        Who {
            calling_ae: Some(calling_ae.to_string()),
            called_ae: Some(called_ae.to_string()),
            ..Who::default()
        }
    }
}

/// A patient and study returned to a caller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Disclosed {
    /// The Patient ID (0010,0020).
    pub patient_id: String,
    /// The Study Instance UID.
    pub study_instance_uid: String,
}

/// The event type and its details: serialized as `"event": "<type>", "what": {...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", content = "what", rename_all = "snake_case")]
pub enum What {
    /// A Search call.
    Search {
        /// What the query was: `image`, `indexed`, `codes` or `composite`.
        query_kind: String,
        /// The indexed slice queried with, for an `indexed` query.
        #[serde(skip_serializing_if = "Option::is_none")]
        query_sop_instance_uid: Option<String>,
        /// The search mode (`normal`, `abnormal`, `combined`).
        mode: String,
        /// The grouping (`instance`, `series`, `study`).
        grouping: String,
        /// The metadata filter as sent.
        filter: String,
        /// How many hits were asked for.
        top_k: usize,
        /// How many hits went back.
        hits: usize,
        /// The distinct patients and studies of the hits, in rank order of first appearance.
        returned: Vec<Disclosed>,
    },
    /// One answer on a Watch stream: a received study and its similar studies.
    Watch {
        /// The received study announced.
        study_instance_uid: String,
        /// The modes answered.
        modes: Vec<String>,
        /// The metadata filter of the stream.
        filter: String,
        /// The distinct patients and studies of the similar studies sent.
        returned: Vec<Disclosed>,
    },
    /// A DICOM association, reported when it ends.
    Association {
        /// C-STORE requests answered.
        instances_received: u32,
        /// The statuses sent, by code (`0x0000`, `0xA700`, ...), with their counts.
        statuses: BTreeMap<String, u32>,
        /// How long it lasted, in milliseconds.
        duration_ms: u64,
        /// How it ended: `released`, `closed`, `aborted_by_peer`, `aborted` or `rejected`
        /// (the event's `reason` says why).
        end: String,
    },
    /// A backfill job's run, when it ends: what it pulled from which archive.
    Backfill {
        /// The archive, `AE@HOST:PORT`.
        archive: String,
        /// `done` or `stopped`.
        state: String,
        /// Studies the archive matched.
        studies_matched: u32,
        /// Studies pulled and indexed in this run.
        studies_indexed: u32,
        /// Studies that failed in this run.
        studies_failed: u32,
        /// Instances made durable in this run.
        instances: u64,
    },
    /// An Ingest call.
    Ingest {
        /// Instances sent in the stream.
        instances: u32,
        /// Accepted and to be indexed.
        accepted: u32,
        /// Already indexed.
        duplicates: u32,
        /// Accepted but not images.
        non_image: u32,
        /// Refused one by one.
        failed: u32,
    },
    /// A Delete call.
    Delete {
        /// `patient`, `study`, `series` or `instance`.
        level: String,
        /// The Patient ID or UID named.
        identifier: String,
        /// Records removed.
        records: u64,
        /// Instances removed.
        instances: u64,
    },
    /// A change of the configuration at run time (the administration API).
    ConfigChange {
        /// What was changed: `dicom_peers` or `kos_destinations`.
        setting: String,
        /// `add` or `remove`.
        action: String,
        /// The entry added or removed, e.g. `CT1@10.0.0.5` or `VIEWER@10.0.0.9:11113`.
        entry: String,
    },
    /// A Key Object Selection document C-STOREd to the configured viewer (sent or failed): it
    /// references other patients' images, so the viewer was shown them.
    Kos {
        /// The received study the document is about.
        study_instance_uid: String,
        /// The Patient ID of the received study.
        patient_id: String,
        /// Instances the document references.
        instances: usize,
        /// The distinct patients and studies it references, in the order of the document.
        returned: Vec<Disclosed>,
        /// The viewer's C-STORE status (`0x0000` is success), when it answered.
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// An Encode or Decompose call: the caller's own image, encoded or decomposed. Never holds
    /// pixels; the identifiers come from the DICOM header when the image was DICOM.
    Image {
        /// `encode` or `decompose`.
        method: String,
        /// `dicom` or `raw`.
        input: String,
        /// The frame asked for (multi-frame DICOM).
        frame: u32,
        /// The Patient ID (0010,0020) of a DICOM input.
        #[serde(skip_serializing_if = "Option::is_none")]
        patient_id: Option<String>,
        /// The Study Instance UID of a DICOM input.
        #[serde(skip_serializing_if = "Option::is_none")]
        study_instance_uid: Option<String>,
        /// The SOP Instance UID of a DICOM input.
        #[serde(skip_serializing_if = "Option::is_none")]
        sop_instance_uid: Option<String>,
    },
    /// A call of the InfoService (counts, the model card, capabilities: no patient data).
    Info {
        /// `get_index_stats`, `get_model_card` or `get_capabilities`.
        method: String,
    },
    /// A gRPC call refused by the authentication gate. Never holds the token.
    AuthRefused {
        /// The gRPC method, e.g. `/diptych.v1.SearchService/Search`.
        method: String,
        /// `UNAUTHENTICATED` or `PERMISSION_DENIED`.
        code: String,
    },
    /// A connection dropped before any association: a failed or timed-out TLS handshake on the
    /// DICOM-TLS port (a client certificate not signed by the client CA, plain DICOM sent to the
    /// TLS port). The event's `reason` says why; no patient data was read.
    ConnectionRefused {
        /// Which port: `dicom-tls`.
        listener: String,
        /// The address it listens on.
        listener_addr: String,
    },
}

impl What {
    /// The event type's name (the `event` field).
    pub fn kind(&self) -> &'static str {
        match self {
            What::Search { .. } => "search",
            What::Watch { .. } => "watch",
            What::Association { .. } => "association",
            What::Ingest { .. } => "ingest",
            What::Backfill { .. } => "backfill",
            What::Delete { .. } => "delete",
            What::ConfigChange { .. } => "config_change",
            What::Kos { .. } => "kos",
            What::Image { .. } => "image",
            What::Info { .. } => "info",
            What::AuthRefused { .. } => "auth_refused",
            What::ConnectionRefused { .. } => "connection_refused",
        }
    }
}

/// The distinct (Patient ID, Study Instance UID) pairs of `hits`, in order of first appearance.
pub fn disclosed<'a>(hits: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Disclosed> {
    let mut out: Vec<Disclosed> = Vec::new();
    for (patient_id, study_instance_uid) in hits {
        let pair = Disclosed {
            patient_id: patient_id.to_string(),
            study_instance_uid: study_instance_uid.to_string(),
        };
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

/// `time` as RFC 3339 in UTC with milliseconds.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // a leap day
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(rfc3339_utc(t), "2024-12-31T23:59:59.000Z");
    }

    #[test]
    fn an_event_is_one_flat_json_object() {
        let event = AuditEvent::now(
            Outcome::Success,
            Who::dicom("MODALITY", "DIPTYCH"),
            Some("10.0.0.5:4242".to_string()),
            What::Delete {
                level: "patient".to_string(),
                identifier: "PAT-1".to_string(),
                records: 3,
                instances: 1,
            },
        );
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "delete");
        assert_eq!(json["outcome"], "success");
        assert_eq!(json["where"], "10.0.0.5:4242");
        assert_eq!(json["who"]["calling_ae"], "MODALITY");
        assert_eq!(json["what"]["identifier"], "PAT-1");
        assert!(json["who"].get("name").is_none());
        assert_eq!(event.kind(), "delete");
    }
}
