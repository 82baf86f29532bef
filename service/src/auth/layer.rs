//! The gate in front of every gRPC service: a tower layer that finds who calls (bearer token or
//! TLS client certificate), checks the role against the method, and either refuses the call with
//! UNAUTHENTICATED / PERMISSION_DENIED or passes it on with a [`Caller`] in its extensions.
//!
//! Health checking and reflection pass without credentials and without a [`Caller`]. Refusals
//! say what to fix; neither they nor the log ever carry the token. Each refusal is an
//! `auth_refused` event of the audit trail (method, code, peer, certificate subject; never the
//! token).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower_layer::Layer;

use super::certificate::{Subject, subject_of};
use super::{Access, Caller, Credential, Policy, Role, access_of};
use crate::audit::{Audit, AuditEvent, Outcome, What, Who};

/// Puts [`AuthService`] in front of a service; one [`Policy`] for the whole server.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    policy: Arc<Policy>,
    audit: Audit,
}

impl AuthLayer {
    /// The gate for `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self {
            policy,
            audit: Audit::disabled(),
        }
    }

    /// The gate, recording refused calls in `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            policy: self.policy.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// The gate around one service (see the module documentation).
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    policy: Arc<Policy>,
    audit: Audit,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let access = access_of(path);
        if access == Access::Open {
            return Box::pin(self.inner.call(request));
        }
        let tls = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let certificate = tls
            .and_then(|info| info.peer_certs())
            .and_then(|chain| chain.first().and_then(|leaf| subject_of(leaf)));
        let peer = tls
            .and_then(|info| info.get_ref().remote_addr())
            .or_else(|| {
                request
                    .extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(|info| info.remote_addr())
            });
        let subject = certificate.as_ref().map(|s| s.text.clone());
        let authorization = request.headers().get(http::header::AUTHORIZATION);
        match admit(&self.policy, path, access, authorization, certificate) {
            Ok(caller) => {
                tracing::trace!(method = path, caller = %caller.name, role = %caller.role, "gRPC call admitted");
                request.extensions_mut().insert(caller);
                // The service that was polled ready serves this call; a clone waits for the next.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(status) => {
                tracing::debug!(method = path, code = ?status.code(), reason = status.message(), "gRPC call refused");
                let code = match status.code() {
                    tonic::Code::PermissionDenied => "PERMISSION_DENIED",
                    _ => "UNAUTHENTICATED",
                };
                let who = Who {
                    certificate_subject: subject,
                    ..Who::default()
                };
                let what = What::AuthRefused {
                    method: path.to_string(),
                    code: code.to_string(),
                };
                self.audit.record(
                    AuditEvent::now(Outcome::Failure, who, peer.map(|p| p.to_string()), what)
                        .with_reason(status.message()),
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Decides one call to `path` (which needs `access`, not [`Access::Open`]) from its
/// `authorization` metadata and the subject of its verified client certificate: the caller, or
/// the status that refuses it.
pub fn admit(
    policy: &Policy,
    path: &str,
    access: Access,
    authorization: Option<&http::HeaderValue>,
    certificate: Option<Subject>,
) -> Result<Caller, Status> {
    let caller = match policy {
        Policy::Open => match certificate {
            Some(subject) => Caller {
                name: subject.text.clone(),
                role: Role::Admin,
                credential: Credential::ClientCertificate {
                    subject: subject.text,
                },
            },
            None => Caller {
                name: "anonymous".to_string(),
                role: Role::Admin,
                credential: Credential::None,
            },
        },
        Policy::Closed { addr } => {
            return Err(Status::unauthenticated(format!(
                "this server accepts no credentials yet: it listens on {addr} without a tokens file; its operator must set [auth] tokens_file (or grpc.tls_client_ca), or listen on 127.0.0.1 for local use"
            )));
        }
        Policy::AnyClientCertificate => match certificate {
            Some(subject) => Caller {
                name: subject.text.clone(),
                role: Role::Admin,
                credential: Credential::ClientCertificate {
                    subject: subject.text,
                },
            },
            None => {
                return Err(Status::unauthenticated(format!(
                    "{path} needs a TLS client certificate signed by the server's client CA"
                )));
            }
        },
        Policy::Callers(callers) => {
            if let Some(value) = authorization {
                let token = bearer(value).ok_or_else(|| {
                    Status::unauthenticated(
                        "the authorization metadata is not `Bearer <token>`: send `authorization: Bearer <token>` with the token you were given",
                    )
                })?;
                let (name, role) = callers.by_token(token).ok_or_else(|| {
                    Status::unauthenticated(
                        "the bearer token is not known to this server: check that you send the whole token you were given, or ask the operator to list it in the tokens file",
                    )
                })?;
                Caller {
                    name: name.to_string(),
                    role,
                    credential: Credential::Token,
                }
            } else if let Some(subject) = certificate {
                let known = subject
                    .common_name
                    .as_deref()
                    .and_then(|cn| callers.by_common_name(cn));
                match known {
                    Some((name, role)) => Caller {
                        name: name.to_string(),
                        role,
                        credential: Credential::ClientCertificate {
                            subject: subject.text,
                        },
                    },
                    None => {
                        return Err(Status::permission_denied(format!(
                            "the client certificate {} is not mapped to a caller: send `authorization: Bearer <token>`, or ask the operator to add a caller with its client_cert_cn to the tokens file",
                            subject.text
                        )));
                    }
                }
            } else {
                return Err(Status::unauthenticated(format!(
                    "{path} needs credentials: send the metadata `authorization: Bearer <token>` with a token of role {}",
                    needed_roles(access)
                )));
            }
        }
    };
    match access {
        Access::Role(needed) if !caller.role.allows(needed) => {
            Err(Status::permission_denied(format!(
                "caller {:?} has role {}, and {path} needs role {}: use a token of that role",
                caller.name,
                caller.role,
                needed_roles(access)
            )))
        }
        _ => Ok(caller),
    }
}

fn needed_roles(access: Access) -> String {
    match access {
        Access::Role(Role::Admin) => "admin".to_string(),
        Access::Role(role) => format!("{role} or admin"),
        Access::AnyRole | Access::Open => "ingest, search or admin".to_string(),
    }
}

/// The token of `Bearer <token>` (the scheme in any case), or None.
fn bearer(value: &http::HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::path::Path;

    use tonic::Code;

    use super::super::Callers;
    use super::*;

    const ADMIN: &str = "admin-token-0123456789abcdef";
    const SEARCH: &str = "search-token-0123456789abcdef";
    const INGEST: &str = "ingest-token-0123456789abcdef";

    fn callers() -> Policy {
        let text = format!(
            "[[caller]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n\
             [[caller]]\nname = \"viewer\"\nrole = \"search\"\ntoken = \"{SEARCH}\"\n\
             [[caller]]\nname = \"router\"\nrole = \"ingest\"\ntoken = \"{INGEST}\"\n\
             [[caller]]\nname = \"gateway\"\nrole = \"search\"\nclient_cert_cn = \"gateway.example\"\n"
        );
        Policy::Callers(Callers::parse(&text, Path::new("tokens.toml"), |_| None).unwrap())
    }

    fn subject(cn: &str) -> Option<Subject> {
        Some(Subject {
            text: format!("CN={cn}, O=Hospital"),
            common_name: Some(cn.to_string()),
        })
    }

    fn decide(
        policy: &Policy,
        path: &str,
        authorization: Option<&str>,
        certificate: Option<Subject>,
    ) -> Result<Caller, Status> {
        let header = authorization.map(|v| http::HeaderValue::from_str(v).unwrap());
        admit(policy, path, access_of(path), header.as_ref(), certificate)
    }

    const INGEST_RPC: &str = "/diptych.v1.IngestService/Ingest";
    const SEARCH_RPC: &str = "/diptych.v1.SearchService/Search";
    const DELETE_RPC: &str = "/diptych.v1.IngestService/Delete";

    #[test]
    fn roles_against_methods() {
        let policy = callers();
        let bearer = |t: &str| format!("Bearer {t}");
        for (token, allowed) in [
            (INGEST, &[INGEST_RPC][..]),
            (SEARCH, &[SEARCH_RPC][..]),
            (ADMIN, &[INGEST_RPC, SEARCH_RPC, DELETE_RPC][..]),
        ] {
            for path in [INGEST_RPC, SEARCH_RPC, DELETE_RPC] {
                let outcome = decide(&policy, path, Some(&bearer(token)), None);
                if allowed.contains(&path) {
                    let caller = outcome.unwrap();
                    assert_eq!(caller.credential, Credential::Token);
                } else {
                    let status = outcome.unwrap_err();
                    assert_eq!(status.code(), Code::PermissionDenied, "{path}");
                    assert!(status.message().contains("needs role"), "{status:?}");
                    assert!(!status.message().contains(token));
                }
            }
            let caps = decide(
                &policy,
                "/diptych.v1.InfoService/GetCapabilities",
                Some(&bearer(token)),
                None,
            );
            assert!(caps.is_ok(), "every role reads the capabilities");
        }
        let caller = decide(
            &policy,
            SEARCH_RPC,
            Some(&format!("bearer  {SEARCH} ")),
            None,
        )
        .unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.role),
            ("viewer", Role::Search)
        );
    }

    #[test]
    fn missing_wrong_and_malformed_credentials() {
        let policy = callers();
        let missing = decide(&policy, SEARCH_RPC, None, None).unwrap_err();
        assert_eq!(missing.code(), Code::Unauthenticated);
        assert!(
            missing.message().contains("authorization: Bearer"),
            "{missing:?}"
        );
        assert!(missing.message().contains("search or admin"), "{missing:?}");
        let wrong = "Bearer wrong-token-0123456789abcdef";
        let status = decide(&policy, SEARCH_RPC, Some(wrong), None).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            status.message().contains("not known") && !status.message().contains("wrong-token")
        );
        for malformed in [SEARCH, "Basic dXNlcjpwYXNz", "Bearer ", "Token abc"] {
            let status = decide(&policy, SEARCH_RPC, Some(malformed), None).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{malformed}");
            assert!(!status.message().contains(SEARCH));
        }
        // Unlisted methods need admin.
        let status = decide(
            &policy,
            "/diptych.v1.SearchService/Unlisted",
            Some(&format!("Bearer {SEARCH}")),
            None,
        )
        .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }

    #[test]
    fn client_certificates() {
        let policy = callers();
        let caller = decide(&policy, SEARCH_RPC, None, subject("gateway.example")).unwrap();
        assert_eq!(caller.name, "gateway");
        assert_eq!(
            caller.credential,
            Credential::ClientCertificate {
                subject: "CN=gateway.example, O=Hospital".to_string()
            }
        );
        let denied = decide(&policy, INGEST_RPC, None, subject("gateway.example")).unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let stranger = decide(&policy, SEARCH_RPC, None, subject("stranger")).unwrap_err();
        assert_eq!(stranger.code(), Code::PermissionDenied);
        assert!(
            stranger.message().contains("client_cert_cn"),
            "{stranger:?}"
        );
        // A token wins over the certificate.
        let caller = decide(
            &policy,
            DELETE_RPC,
            Some(&format!("Bearer {ADMIN}")),
            subject("stranger"),
        )
        .unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.credential),
            ("ops", Credential::Token)
        );

        let any = Policy::AnyClientCertificate;
        let caller = decide(&any, DELETE_RPC, None, subject("anyone")).unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.role),
            ("CN=anyone, O=Hospital", Role::Admin)
        );
        assert_eq!(
            decide(&any, DELETE_RPC, None, None).unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn open_and_closed_servers() {
        let caller = decide(&Policy::Open, DELETE_RPC, None, None).unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.role, caller.credential),
            ("anonymous", Role::Admin, Credential::None)
        );
        let closed = Policy::Closed {
            addr: "0.0.0.0:50051".parse().unwrap(),
        };
        let status =
            decide(&closed, SEARCH_RPC, Some(&format!("Bearer {ADMIN}")), None).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("tokens_file"), "{status:?}");
    }

    /// The inner service answers OK and reports the caller it was given in a header.
    #[derive(Clone)]
    struct Echo;

    impl Service<http::Request<()>> for Echo {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let mut response = Status::ok("").into_http::<tonic::body::Body>();
            if let Some(caller) = request.extensions().get::<Caller>() {
                response
                    .headers_mut()
                    .insert("x-caller", caller.name.parse().unwrap());
            }
            std::future::ready(Ok(response))
        }
    }

    async fn call(
        service: &mut AuthService<Echo>,
        path: &str,
        token: Option<&str>,
    ) -> (Code, Option<String>) {
        let mut request = http::Request::builder().uri(format!("http://localhost{path}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = service.call(request.body(()).unwrap()).await.unwrap();
        let code = Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code());
        let caller = response
            .headers()
            .get("x-caller")
            .map(|v| v.to_str().unwrap().to_string());
        (code, caller)
    }

    #[tokio::test]
    async fn the_layer_puts_the_caller_into_the_extensions() {
        let mut service = AuthLayer::new(Arc::new(callers())).layer(Echo);
        assert_eq!(
            call(&mut service, SEARCH_RPC, Some(SEARCH)).await,
            (Code::Ok, Some("viewer".to_string()))
        );
        assert_eq!(
            call(&mut service, SEARCH_RPC, Some(INGEST)).await,
            (Code::PermissionDenied, None)
        );
        assert_eq!(
            call(&mut service, SEARCH_RPC, None).await,
            (Code::Unauthenticated, None)
        );
        // Health and reflection pass without credentials (and without a caller).
        for open in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(
                call(&mut service, open, None).await,
                (Code::Ok, None),
                "{open}"
            );
        }
    }

    /// Every RPC of proto/diptych/v1 has its row in [`access_of`]: a new RPC that needs no admin
    /// must be listed on purpose.
    #[test]
    fn every_rpc_of_the_api_is_listed() {
        let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/diptych/v1");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(proto).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().map(str::to_string);
                }
                if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap().trim();
                    let path = format!("/diptych.v1.{}/{method}", service.as_ref().unwrap());
                    let access = access_of(&path);
                    seen.push((path, access));
                }
            }
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        let expected = [
            (
                "/diptych.v1.AdminService/AddKosDestination",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/AddPeer",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/Backfill",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/CancelReindex",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/EchoDestination",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/GetReindexStatus",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/ListAssociations",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/ListKosDestinations",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/ListPeers",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/RemoveKosDestination",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/RemovePeer",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.AdminService/StartReindex",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.ImageService/Decompose",
                Access::Role(Role::Search),
            ),
            (
                "/diptych.v1.ImageService/Encode",
                Access::Role(Role::Search),
            ),
            ("/diptych.v1.InfoService/GetCapabilities", Access::AnyRole),
            (
                "/diptych.v1.InfoService/GetIndexStats",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.InfoService/GetModelCard",
                Access::Role(Role::Search),
            ),
            (
                "/diptych.v1.IngestService/Delete",
                Access::Role(Role::Admin),
            ),
            (
                "/diptych.v1.IngestService/Ingest",
                Access::Role(Role::Ingest),
            ),
            (
                "/diptych.v1.SearchService/Search",
                Access::Role(Role::Search),
            ),
            (
                "/diptych.v1.SearchService/Watch",
                Access::Role(Role::Search),
            ),
        ];
        let seen: Vec<(&str, Access)> = seen.iter().map(|(p, a)| (p.as_str(), *a)).collect();
        assert_eq!(
            seen, expected,
            "add the new RPC to auth::access_of and to this table"
        );
    }
}
