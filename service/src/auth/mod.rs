//! Who may call the gRPC API: callers, their roles, and the gate in front of every service.
//!
//! | module | what it is for |
//! |---|---|
//! | [`tokens`] | the tokens file: callers with a bearer token (inline, in a file, in an environment variable) or a client-certificate common name, each with a role; tokens kept as SHA-256 only |
//! | [`certificate`] | the subject of a verified TLS client certificate |
//! | [`layer`] | the tower layer: finds the caller of each call, checks its role, puts a [`Caller`] into the request's extensions |
//!
//! The policy ([`Policy::decide`]), in order:
//!
//! 1. a tokens file is configured: each call needs a known bearer token or a client certificate
//!    that the file maps to a caller, of a role that allows the method;
//! 2. no tokens file, mutual TLS (`grpc.tls_client_ca`): a certificate signed by that CA is the
//!    credential, and its holder may do everything (as on the DICOM-TLS port);
//! 3. no tokens file, no mutual TLS, the gRPC address is loopback (`make run`): open, local use only;
//! 4. no tokens file, no mutual TLS, any other address: closed — every call but health and
//!    reflection is refused, and start-up logs why — unless `auth.allow_unauthenticated` opens it
//!    on purpose (a trusted network, an authenticating proxy in front), with a warning at start.
//!
//! Health checking (`grpc.health.v1`) and server reflection answer without credentials in every
//! case: orchestrators probe readiness and generic clients discover the API without a secret.

pub mod certificate;
pub mod layer;
pub mod tokens;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use layer::AuthLayer;
pub use tokens::{Callers, TokensError};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ingest only (a router or modality forwarding images).
    Ingest,
    /// Search, Watch, Encode, Decompose and the model card (a viewer or PACS plug-in).
    Search,
    /// Everything, including Delete, the index statistics and the AdminService (operators).
    Admin,
}

impl Role {
    /// Whether a caller of this role may call a method that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    /// The role's name as written in the tokens file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Search => "search",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "ingest" => Ok(Role::Ingest),
            "search" => Ok(Role::Search),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}; expected ingest, search or admin"
            )),
        }
    }
}

/// What a gRPC method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials: health checking and reflection.
    Open,
    /// Any authenticated caller, whatever its role.
    AnyRole,
    /// A caller whose role allows this one.
    Role(Role),
}

/// The access each method of the API needs, by gRPC path. Methods not listed here (a new RPC
/// whose author forgot this table) need `admin`: the gate fails closed.
pub fn access_of(path: &str) -> Access {
    const OPEN_SERVICES: [&str; 3] = [
        "/grpc.health.v1.Health/",
        "/grpc.reflection.v1.ServerReflection/",
        "/grpc.reflection.v1alpha.ServerReflection/",
    ];
    if OPEN_SERVICES.iter().any(|prefix| path.starts_with(prefix)) {
        return Access::Open;
    }
    // Who may send DICOM and where KOS documents go: operators only.
    if path.starts_with("/diptych.v1.AdminService/") {
        return Access::Role(Role::Admin);
    }
    match path {
        "/diptych.v1.IngestService/Ingest" => Access::Role(Role::Ingest),
        "/diptych.v1.SearchService/Search"
        | "/diptych.v1.SearchService/Watch"
        | "/diptych.v1.ImageService/Encode"
        | "/diptych.v1.ImageService/Decompose"
        | "/diptych.v1.InfoService/GetModelCard" => Access::Role(Role::Search),
        // Limits and the DICOM port: what any client needs to talk to this server at all.
        "/diptych.v1.InfoService/GetCapabilities" => Access::AnyRole,
        // Delete, index statistics, the AdminService (peers, KOS destinations, associations),
        // and anything not listed above.
        _ => Access::Role(Role::Admin),
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token from the tokens file.
    Token,
    /// A TLS client certificate verified against `grpc.tls_client_ca`.
    ClientCertificate {
        /// The certificate's subject, e.g. `CN=viewer, O=Hospital`.
        subject: String,
    },
    /// Nothing: the server is open (loopback without tokens, or `allow_unauthenticated`).
    None,
}

/// Who made a call, put into each request's extensions by the gate (`request.extensions()
/// .get::<Caller>()` in a handler) for an audit trail to read. Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's name: the tokens file's `name`, else the client certificate's subject, else
    /// `anonymous`.
    pub name: String,
    /// What the caller may do.
    pub role: Role,
    /// How it authenticated.
    pub credential: Credential,
}

/// Which of the four cases of the module documentation applies, decided once at start.
#[derive(Debug)]
pub enum Policy {
    /// Callers from the tokens file, by bearer token or mapped client certificate.
    Callers(Callers),
    /// Any verified client certificate may do everything (mutual TLS, no tokens file).
    AnyClientCertificate,
    /// No credentials needed (loopback without tokens, or `allow_unauthenticated`).
    Open,
    /// Only health and reflection answer: a non-loopback address with no credentials configured.
    Closed {
        /// The address, for the message that says how to open it.
        addr: SocketAddr,
    },
}

/// Why a policy was chosen and how loudly start-up says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Nothing remarkable.
    Info(String),
    /// Something an operator must see.
    Warn(String),
}

impl Policy {
    /// Chooses the policy: `callers` from the tokens file (None without one), whether mutual TLS
    /// is on, the gRPC address, and whether unauthenticated calls were allowed on purpose.
    pub fn decide(
        callers: Option<Callers>,
        mutual_tls: bool,
        addr: SocketAddr,
        allow_unauthenticated: bool,
    ) -> (Policy, Notice) {
        match callers {
            Some(callers) => {
                let notice = Notice::Info(format!(
                    "gRPC authentication on: {} caller(s) from the tokens file",
                    callers.len()
                ));
                (Policy::Callers(callers), notice)
            }
            None if mutual_tls => (
                Policy::AnyClientCertificate,
                Notice::Info(
                    "gRPC authentication by client certificate: every certificate signed by grpc.tls_client_ca may call everything (no tokens file, so no roles)"
                        .to_string(),
                ),
            ),
            None if allow_unauthenticated => (
                Policy::Open,
                Notice::Warn(format!(
                    "gRPC AUTHENTICATION IS OFF on {addr} (auth.allow_unauthenticated = true): anyone who reaches this port can read and delete patient images; set [auth] tokens_file unless a proxy in front authenticates"
                )),
            ),
            None if addr.ip().is_loopback() => (
                Policy::Open,
                Notice::Info(format!(
                    "gRPC authentication off: {addr} is loopback and no tokens file is set (local use only)"
                )),
            ),
            None => (
                Policy::Closed { addr },
                Notice::Warn(format!(
                    "gRPC on {addr} REFUSES EVERY CALL but health and reflection: no tokens file is configured and the address is not loopback; set [auth] tokens_file (or DIPTYCH_TOKENS_FILE, --tokens-file), or grpc.tls_client_ca, or listen on 127.0.0.1 for local use"
                )),
            ),
        }
    }
}
