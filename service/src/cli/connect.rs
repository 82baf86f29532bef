//! How every client command reaches the server: the `--server` URL (`http://` or `https://`),
//! the bearer token (`--token`, else `DIPTYCH_TOKEN`), the CA the server is verified against
//! (`--ca-cert`, else the system's CA bundle) and the optional client certificate for mutual
//! TLS; and the errors of a secured server (TLS, UNAUTHENTICATED, PERMISSION_DENIED) turned into
//! sentences that say what to pass. The token is never printed: not by `Debug`, not in errors.

use std::path::{Path, PathBuf};

use anyhow::Context;
use diptych_service::auth::{Access, Role, access_of};
use diptych_service::logging::error_chain;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

/// Default address of the server the client commands talk to.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Where the system's CA bundle is looked for when `--ca-cert` is not given (after
/// `SSL_CERT_FILE`): Debian/Ubuntu/Alpine, Fedora/RHEL, macOS/BSD.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The server and the credentials of a client command (flattened into each subcommand; global,
/// so that they may also follow a nested subcommand such as `diptych admin peers list`).
#[derive(Clone, clap::Args)]
pub struct ServerArgs {
    /// The server's gRPC URL: http://HOST:PORT, or https://HOST:PORT for a server with TLS
    /// (also DIPTYCH_SERVER).
    #[arg(long, global = true, env = "DIPTYCH_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token sent with every call (also DIPTYCH_TOKEN; the flag wins). Prefer the
    /// environment variable: a flag is visible to other users in the process list.
    #[arg(
        long,
        global = true,
        env = "DIPTYCH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate (https:// only) [default: the
    /// system's CA bundle, or SSL_CERT_FILE].
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (mutual TLS; with --client-key).
    #[arg(long, global = true, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, global = true, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl std::fmt::Debug for ServerArgs {
    /// Says whether a token is set, never what it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

/// Adds `authorization: Bearer <token>` to every call when a token was given.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to the server that sends the token with every call; give it to any generated
/// client's `new`.
pub type Connection = InterceptedService<Channel, Bearer>;

/// Connects as `args` say, with errors that say what to fix.
pub async fn connect(args: &ServerArgs) -> anyhow::Result<Connection> {
    let url = args.server.as_str();
    let bearer = bearer(args.token.as_deref())?;
    let mut endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| {
        anyhow::anyhow!("--server {url:?} is not a URL ({e}); use e.g. {DEFAULT_SERVER}")
    })?;
    let tls = match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("https") => true,
        Some("http") => {
            if args.ca_cert.is_some() || args.client_cert.is_some() {
                anyhow::bail!(
                    "--ca-cert and --client-cert need TLS: write the server as https://{}",
                    &url["http://".len()..]
                );
            }
            false
        }
        _ => anyhow::bail!("--server {url:?} must start with http:// or https://"),
    };
    if tls {
        endpoint = endpoint
            .tls_config(tls_config(args)?)
            .context("setting up TLS for --server")?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        let chain = error_chain(&e);
        if tls {
            anyhow::anyhow!(
                "cannot reach diptych at {url} over TLS ({chain}); check that the server's \
                 certificate is signed by the CA you pass with --ca-cert and names the host of \
                 --server, and, if the server requires client certificates, pass --client-cert \
                 and --client-key"
            )
        } else {
            anyhow::anyhow!(
                "cannot reach diptych at {url} ({chain}); start it with `diptych serve` (or \
                 `make run`) or pass --server"
            )
        }
    })?;
    Ok(InterceptedService::new(channel, bearer))
}

fn bearer(token: Option<&str>) -> anyhow::Result<Bearer> {
    let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Bearer(None));
    };
    let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
        // Not the token itself: it is a secret.
        anyhow::anyhow!(
            "the token (--token or DIPTYCH_TOKEN) holds characters a gRPC header cannot carry; \
             pass the token exactly as you were given it"
        )
    })?;
    value.set_sensitive(true);
    Ok(Bearer(Some(value)))
}

fn tls_config(args: &ServerArgs) -> anyhow::Result<ClientTlsConfig> {
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
    };
    let ca = match &args.ca_cert {
        Some(path) => read("--ca-cert", path)?,
        None => {
            let path = system_bundle().context(
                "https:// needs the CA that signed the server's certificate: pass --ca-cert \
                 PEM (no system CA bundle found; SSL_CERT_FILE may name one)",
            )?;
            read("the system CA bundle", &path)?
        }
    };
    if !ca
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        anyhow::bail!("--ca-cert: the file holds no PEM CERTIFICATE block");
    }
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        config = config.identity(Identity::from_pem(
            read("--client-cert", cert)?,
            read("--client-key", key)?,
        ));
    }
    Ok(config)
}

/// The system's CA bundle: `SSL_CERT_FILE`, else the first of [`SYSTEM_BUNDLES`] that exists.
fn system_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|path| path.is_file())
}

/// A refused call `method` (its gRPC path, e.g. `/diptych.v1.IngestService/Delete`) as an error
/// that says what to do: a token for UNAUTHENTICATED, the role needed for PERMISSION_DENIED,
/// https:// and the CA for a connection that broke in TLS.
pub fn refused(method: &str, status: Status) -> anyhow::Error {
    let name = method.rsplit('/').next().unwrap_or(method);
    let message = status.message();
    match status.code() {
        Code::Unauthenticated => anyhow::anyhow!(
            "{name} refused: not authenticated ({message}); pass --token or set DIPTYCH_TOKEN \
             to a token the server's operator gave you"
        ),
        Code::PermissionDenied => {
            let needed = match access_of(method) {
                Access::Role(Role::Admin) => "admin".to_string(),
                Access::Role(role) => format!("{role} or admin"),
                Access::AnyRole | Access::Open => "any".to_string(),
            };
            anyhow::anyhow!(
                "{name} refused: permission denied ({message}); it needs a token of role \
                 {needed}"
            )
        }
        // A plain HTTP/2 client cancelled by a TLS port, a handshake refused after it finished
        // (TLS 1.3 checks the client certificate then), a connection reset.
        Code::Unavailable | Code::Cancelled => broke(name, message),
        Code::Unknown | Code::Internal if looks_like_tls(message) => broke(name, message),
        code => anyhow::anyhow!("{name} failed ({code:?}): {message}"),
    }
}

fn broke(name: &str, message: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{name} failed: the connection broke ({message}); if the server speaks TLS, write \
         --server as https://… and pass --ca-cert, and if it requires client certificates, pass \
         --client-cert and --client-key"
    )
}

fn looks_like_tls(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "transport",
        "connection",
        "h2",
        "frame",
        "broken pipe",
        "reset",
        "cancel",
    ]
    .iter()
    .any(|word| message.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_never_shown() {
        let args = ServerArgs {
            server: DEFAULT_SERVER.to_string(),
            token: Some("s3cret-token-0123456789".to_string()),
            ca_cert: None,
            client_cert: None,
            client_key: None,
        };
        assert!(!format!("{args:?}").contains("s3cret"));
        let err = bearer(Some("bad\ntoken-s3cret")).err().unwrap().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        let Bearer(value) = bearer(Some(" tok ")).unwrap();
        let value = value.unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer tok");
        assert!(bearer(Some("  ")).unwrap().0.is_none());
    }

    #[test]
    fn refusals_say_what_to_pass() {
        let delete = "/diptych.v1.IngestService/Delete";
        let err = refused(delete, Status::unauthenticated("no credentials")).to_string();
        assert!(
            err.contains("--token") && err.contains("DIPTYCH_TOKEN"),
            "{err}"
        );
        let err = refused(delete, Status::permission_denied("role search")).to_string();
        assert!(err.contains("role admin"), "{err}");
        let search = "/diptych.v1.SearchService/Search";
        let err = refused(search, Status::permission_denied("role ingest")).to_string();
        assert!(err.contains("role search or admin"), "{err}");
        let err = refused(search, Status::cancelled("operation was canceled")).to_string();
        assert!(
            err.contains("https://") && err.contains("--client-cert"),
            "{err}"
        );
    }
}
