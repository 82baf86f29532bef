//! STOW-RS (DICOMweb Store, PS3.18 10.5) on the HTTP port: `POST /dicomweb/studies` with a
//! `multipart/related; type="application/dicom"` body, one Part-10 instance per part. Each
//! instance goes through the same accept path as a C-STORE ([`crate::index::Index`]'s accept:
//! parsed, checked, decoded, written to the write-ahead log and fsynced), so an instance is
//! listed as stored only once it is durable. The answer is a DICOM JSON data set
//! (`application/dicom+json`): the Referenced SOP Sequence of what was stored and the Failed SOP
//! Sequence with a Failure Reason of PS3.18 for each refusal — 0xC000 cannot understand, 0xA700
//! out of resources, 0x0110 processing failure — and HTTP 200 (all stored), 202 (some failed)
//! or 409 (none stored).
//!
//! Who may store: with a tokens file, a bearer token of role `ingest` or `admin`
//! (`Authorization: Bearer …`); without one, only when the HTTP port listens on loopback or
//! `[auth] allow_unauthenticated` is set — the gRPC API's rule, applied to this port.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use diptych_dicom_adapter::Limits;
use serde_json::{Value, json};

use crate::audit::{AuditEvent, Outcome, What, Who};
use crate::auth::{Caller, Credential, Policy, Role};
use crate::grpc::ServiceState;
use crate::http::multipart::{boundary_of, parts};
use crate::index::{AcceptOutcome, Refusal};

/// Largest STOW-RS request body; larger uploads are split over several requests.
pub const MAX_STOW_BYTES: usize = 256 * 1024 * 1024;

/// Failure Reason (0008,1197): cannot understand.
const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Failure Reason: refused, out of resources.
const OUT_OF_RESOURCES: u16 = 0xA700;
/// Failure Reason: processing failure.
const PROCESSING_FAILURE: u16 = 0x0110;

/// Who may store over STOW-RS, decided once at start.
#[derive(Debug)]
pub enum StowAccess {
    /// Anyone who reaches the port (loopback, or unauthenticated access allowed on purpose).
    Open,
    /// Callers of the tokens file with role `ingest` or `admin`, by bearer token.
    Tokens(Arc<Policy>),
    /// Nobody, for this reason.
    Closed(String),
}

impl StowAccess {
    /// The rule for an HTTP port on `http_addr` under the gRPC API's `policy`;
    /// `allow_unauthenticated` is `[auth] allow_unauthenticated`.
    pub fn decide(policy: Arc<Policy>, http_addr: SocketAddr, allow_unauthenticated: bool) -> Self {
        match &*policy {
            Policy::Callers(_) => StowAccess::Tokens(policy),
            Policy::Open if http_addr.ip().is_loopback() || allow_unauthenticated => {
                StowAccess::Open
            }
            Policy::AnyClientCertificate => StowAccess::Closed(
                "the HTTP port has no client certificates: configure [auth] tokens_file and send `Authorization: Bearer <token>` of role ingest".into(),
            ),
            _ => StowAccess::Closed(format!(
                "the HTTP port {http_addr} is not loopback and no tokens file is configured: set [auth] tokens_file and send `Authorization: Bearer <token>` of role ingest, or listen on 127.0.0.1"
            )),
        }
    }
}

/// What the STOW-RS route needs.
#[derive(Clone)]
pub struct Stow {
    /// The index (once warm), the limits and the audit trail.
    pub state: Arc<ServiceState>,
    /// Who may store.
    pub access: Arc<StowAccess>,
}

/// The STOW-RS route.
pub fn router(stow: Stow) -> Router {
    Router::new()
        .route("/dicomweb/studies", post(store))
        .layer(DefaultBodyLimit::max(MAX_STOW_BYTES))
        .with_state(stow)
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

/// 401 with the Bearer challenge.
fn unauthorized(message: &str) -> Box<Response> {
    Box::new(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("{message}\n"),
        )
            .into_response(),
    )
}

/// The caller allowed to store, or the answer that refuses it.
fn authorize(access: &StowAccess, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let anonymous = || Caller {
        name: "anonymous".into(),
        role: Role::Admin,
        credential: Credential::None,
    };
    match access {
        StowAccess::Open => Ok(anonymous()),
        StowAccess::Closed(why) => Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            format!("STOW-RS is refused: {why}"),
        ))),
        StowAccess::Tokens(policy) => {
            let Policy::Callers(callers) = &**policy else {
                return Err(Box::new(plain(StatusCode::FORBIDDEN, "STOW-RS is refused")));
            };
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                });
            let Some(token) = token else {
                return Err(unauthorized(
                    "STOW-RS needs credentials: send `Authorization: Bearer <token>` with a token of role ingest",
                ));
            };
            match callers.by_token(token) {
                None => Err(unauthorized(
                    "the bearer token is not known: send the token you were given",
                )),
                Some((name, role)) if role.allows(Role::Ingest) => Ok(Caller {
                    name: name.to_string(),
                    role,
                    credential: Credential::Token,
                }),
                Some((name, role)) => Err(Box::new(plain(
                    StatusCode::FORBIDDEN,
                    format!(
                        "caller {name} has role {}; STOW-RS needs role ingest or admin",
                        role.name()
                    ),
                ))),
            }
        }
    }
}

/// One stored or refused instance of the answer.
struct Item {
    sop_class: String,
    sop_instance: String,
    failure: Option<u16>,
}

async fn store(State(stow): State<Stow>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match authorize(&stow.access, &headers) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    if stow.state.is_shard() {
        // What is not in the ingest stream would be on this replica only, and a rebuilt
        // replica would not replay it (docs/CLUSTER.md), as for gRPC Ingest on a shard.
        return plain(
            StatusCode::FORBIDDEN,
            "this server is a cluster shard: it takes instances only from the ingest stream; \
             send them to a router over DICOM or gRPC Ingest",
        );
    }
    let index = match stow.state.index() {
        Ok(index) => index,
        Err(_) => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model is warming up; retry in a moment",
            );
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = match boundary_of(content_type) {
        Ok(boundary) => boundary,
        Err(message) => return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, message),
    };
    let parts = match parts(&body, &boundary) {
        Ok(parts) if !parts.is_empty() => parts,
        Ok(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "the multipart body holds no part; send one application/dicom part per instance",
            );
        }
        Err(message) => return plain(StatusCode::BAD_REQUEST, message),
    };
    let limits = stow.state.limits;
    let mut items = Vec::with_capacity(parts.len());
    let (mut accepted, mut duplicates, mut non_image) = (0u32, 0u32, 0u32);
    for (part_type, bytes) in &parts {
        if !part_type.is_empty() && !part_type.eq_ignore_ascii_case("application/dicom") {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "a part is {part_type}; only application/dicom parts (Part-10 instances) are stored"
                ),
            );
        }
        let item = store_one(&index, bytes.to_vec(), limits).await;
        match &item.1 {
            Some(AcceptOutcome::Accepted { .. }) => accepted += 1,
            Some(AcceptOutcome::Duplicate { .. }) => duplicates += 1,
            Some(AcceptOutcome::NonImage) => non_image += 1,
            _ => {}
        }
        items.push(item.0);
    }
    let failed = items.iter().filter(|i| i.failure.is_some()).count();
    let event = AuditEvent::now(
        if failed == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        Who::caller(Some(&caller)),
        None,
        What::Ingest {
            instances: items.len() as u32,
            accepted,
            duplicates,
            non_image,
            failed: failed as u32,
        },
    );
    stow.state.audit().record(event);
    let status = match failed {
        0 => StatusCode::OK,
        n if n == items.len() => StatusCode::CONFLICT,
        _ => StatusCode::ACCEPTED,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        answer(&items).to_string(),
    )
        .into_response()
}

/// Parses and accepts one instance; its answer item and the index's outcome.
async fn store_one(
    index: &crate::index::Index,
    bytes: Vec<u8>,
    limits: Limits,
) -> (Item, Option<AcceptOutcome>) {
    let parsed = tokio::task::spawn_blocking(move || {
        diptych_dicom_adapter::parse(&bytes, &limits).map(|instance| (bytes, instance))
    })
    .await;
    let (bytes, instance) = match parsed {
        Ok(Ok(parsed)) => parsed,
        _ => {
            let item = Item {
                sop_class: String::new(),
                sop_instance: String::new(),
                failure: Some(CANNOT_UNDERSTAND),
            };
            return (item, None);
        }
    };
    let mut item = Item {
        sop_class: instance.sop_class_uid(),
        sop_instance: instance.sop_instance_uid(),
        failure: None,
    };
    let outcome = match index.accept_parsed(bytes, instance).await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::warn!(%error, "STOW-RS: an instance could not be stored");
            item.failure = Some(PROCESSING_FAILURE);
            return (item, None);
        }
    };
    item.failure = match &outcome {
        AcceptOutcome::Accepted { .. }
        | AcceptOutcome::Duplicate { .. }
        | AcceptOutcome::NonImage => None,
        AcceptOutcome::Refused { refusal, .. } => Some(match refusal {
            Refusal::CannotUnderstand(_) => CANNOT_UNDERSTAND,
            Refusal::OutOfResources(_) | Refusal::DiskFull(_) | Refusal::Unavailable(_) => {
                OUT_OF_RESOURCES
            }
        }),
    };
    (item, Some(outcome))
}

/// The STOW-RS response data set in DICOM JSON (PS3.18 F.2).
fn answer(items: &[Item]) -> Value {
    let uid = |value: &str| {
        if value.is_empty() {
            json!({"vr": "UI"})
        } else {
            json!({"vr": "UI", "Value": [value]})
        }
    };
    let reference = |item: &Item| {
        let mut entry = json!({
            "00081150": uid(&item.sop_class),
            "00081155": uid(&item.sop_instance),
        });
        if let Some(reason) = item.failure {
            entry["00081197"] = json!({"vr": "US", "Value": [reason]});
        }
        entry
    };
    let stored: Vec<Value> = items
        .iter()
        .filter(|i| i.failure.is_none())
        .map(reference)
        .collect();
    let failed: Vec<Value> = items
        .iter()
        .filter(|i| i.failure.is_some())
        .map(reference)
        .collect();
    let mut data_set = serde_json::Map::new();
    if !failed.is_empty() {
        data_set.insert("00081198".into(), json!({"vr": "SQ", "Value": failed}));
    }
    if !stored.is_empty() {
        data_set.insert("00081199".into(), json!({"vr": "SQ", "Value": stored}));
    }
    Value::Object(data_set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_lists_stored_and_failed_instances_with_their_reason() {
        let items = [
            Item {
                sop_class: "1.2.840.10008.5.1.4.1.1.4".into(),
                sop_instance: "1.2.3".into(),
                failure: None,
            },
            Item {
                sop_class: String::new(),
                sop_instance: String::new(),
                failure: Some(CANNOT_UNDERSTAND),
            },
        ];
        let json = answer(&items);
        assert_eq!(
            json["00081199"]["Value"][0]["00081155"]["Value"][0],
            "1.2.3"
        );
        assert_eq!(json["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC000);
    }
}
