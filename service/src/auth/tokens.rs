//! The tokens file: who may call the gRPC API, each caller with a name, a role and one
//! credential.
//!
//! ```toml
//! [[caller]]
//! name = "pacs-plugin"
//! role = "search"                      # ingest | search | admin
//! token_file = "secrets/pacs.token"    # relative to this file's folder
//!
//! [[caller]]
//! name = "router"
//! role = "ingest"
//! token_env = "DIPTYCH_TOKEN_ROUTER"   # read from the server's environment at start
//!
//! [[caller]]
//! name = "ops"
//! role = "admin"
//! token = "…"                          # inline: keep this file private (chmod 600)
//!
//! [[caller]]
//! name = "viewer-gateway"
//! role = "search"
//! client_cert_cn = "viewer-gateway.hospital.example"   # mutual TLS: the certificate suffices
//! ```
//!
//! Tokens are at least 16 visible ASCII characters (`openssl rand -hex 32` makes one). Only their
//! SHA-256 digests stay in memory, compared in constant time; no error message or log line holds
//! a token. The file is read once at start: restart to change it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::Role;

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the tokens file cannot be used; messages name the file, the caller and the fix, never a
/// token.
#[derive(Debug, Error)]
pub enum TokensError {
    /// The file cannot be read.
    #[error("cannot read the tokens file {path}: {source}; fix auth.tokens_file")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected TOML.
    #[error("the tokens file {path} is not valid: line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line of the mistake (1-based; 0 when unknown).
        line: usize,
        /// What is wrong (without the text of the line, which could hold a token).
        message: String,
    },
    /// The file lists no caller.
    #[error(
        "the tokens file {path} lists no caller: add [[caller]] entries (name, role, and token, token_file, token_env or client_cert_cn)"
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// One caller's entry is wrong.
    #[error("the tokens file {path}, caller {name:?}: {problem}")]
    Caller {
        /// The file.
        path: PathBuf,
        /// The caller's name.
        name: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    caller: Vec<Entry>,
}

/// One `[[caller]]` as written; holds an inline token, so no Debug.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    token: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    client_cert_cn: Option<String>,
}

struct TokenCaller {
    name: String,
    role: Role,
    digest: [u8; 32],
}

struct CertificateCaller {
    name: String,
    role: Role,
    common_name: String,
}

/// The callers of the tokens file, tokens held as SHA-256 digests only.
pub struct Callers {
    tokens: Vec<TokenCaller>,
    certificates: Vec<CertificateCaller>,
    /// Whether a token is written in the file itself (then the file must stay private).
    inline_tokens: bool,
}

impl fmt::Debug for Callers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for t in &self.tokens {
            list.entry(&format_args!("{} ({}, token)", t.name, t.role));
        }
        for c in &self.certificates {
            list.entry(&format_args!(
                "{} ({}, certificate CN={})",
                c.name, c.role, c.common_name
            ));
        }
        list.finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Callers {
    /// Reads the tokens file at `path`; `env` looks up the variables that `token_env` names.
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Callers, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let callers = Self::parse(&text, path, env)?;
        if callers.inline_tokens {
            warn_if_readable_by_others(path);
        }
        Ok(callers)
    }

    /// Parses the text of a tokens file found at `path` (token files are relative to its folder).
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Callers, TokensError> {
        let file: TokensFile = toml::from_str(text).map_err(|e| TokensError::Parse {
            path: path.to_path_buf(),
            line: e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1))
                .unwrap_or(0),
            message: e.message().to_string(),
        })?;
        if file.caller.is_empty() {
            return Err(TokensError::Empty {
                path: path.to_path_buf(),
            });
        }
        let folder = path.parent().unwrap_or(Path::new("."));
        let mut callers = Callers {
            tokens: Vec::new(),
            certificates: Vec::new(),
            inline_tokens: false,
        };
        for entry in file.caller {
            let problem = |problem: String| TokensError::Caller {
                path: path.to_path_buf(),
                name: entry.name.clone(),
                problem,
            };
            if entry.name.trim().is_empty() {
                return Err(problem("the name is empty; name each caller".to_string()));
            }
            if callers.names().any(|name| name == entry.name) {
                return Err(problem(
                    "the name is used twice; give each caller its own".to_string(),
                ));
            }
            let sources = [
                entry.token.is_some(),
                entry.token_file.is_some(),
                entry.token_env.is_some(),
                entry.client_cert_cn.is_some(),
            ];
            if sources.iter().filter(|set| **set).count() != 1 {
                return Err(problem(
                    "set exactly one of token, token_file, token_env and client_cert_cn"
                        .to_string(),
                ));
            }
            if let Some(common_name) = entry.client_cert_cn {
                if common_name.trim().is_empty() {
                    return Err(problem("client_cert_cn is empty".to_string()));
                }
                if callers
                    .certificates
                    .iter()
                    .any(|c| c.common_name == common_name)
                {
                    return Err(problem(format!(
                        "client_cert_cn {common_name:?} is given to two callers"
                    )));
                }
                callers.certificates.push(CertificateCaller {
                    name: entry.name,
                    role: entry.role,
                    common_name,
                });
                continue;
            }
            let (token, from) = if let Some(token) = entry.token {
                callers.inline_tokens = true;
                (token, "token".to_string())
            } else if let Some(file) = entry.token_file {
                let file = folder.join(file);
                let token = std::fs::read_to_string(&file).map_err(|e| {
                    problem(format!("cannot read token_file {}: {e}", file.display()))
                })?;
                (token, format!("token_file {}", file.display()))
            } else if let Some(name) = entry.token_env {
                let token = env(&name).ok_or_else(|| {
                    problem(format!(
                        "token_env names {name}, which is not set in the server's environment"
                    ))
                })?;
                (token, format!("token_env {name}"))
            } else {
                unreachable!("exactly one source is set")
            };
            let token = token.trim();
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(problem(format!(
                    "the token ({from}) must be at least {MIN_TOKEN_LEN} visible ASCII characters without spaces; make one with `openssl rand -hex 32`"
                )));
            }
            let digest = digest(token);
            if callers
                .tokens
                .iter()
                .any(|t| bool::from(t.digest.ct_eq(&digest)))
            {
                return Err(problem(
                    "its token is also another caller's; give each caller its own token"
                        .to_string(),
                ));
            }
            callers.tokens.push(TokenCaller {
                name: entry.name,
                role: entry.role,
                digest,
            });
        }
        Ok(callers)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.tokens
            .iter()
            .map(|t| t.name.as_str())
            .chain(self.certificates.iter().map(|c| c.name.as_str()))
    }

    /// How many callers the file lists.
    pub fn len(&self) -> usize {
        self.tokens.len() + self.certificates.len()
    }

    /// Whether the file lists no caller (never true for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name and role of the caller holding `token`. Every stored digest is compared, each
    /// in constant time.
    pub fn by_token(&self, token: &str) -> Option<(&str, Role)> {
        let digest = digest(token);
        let mut found = None;
        for t in &self.tokens {
            let same = bool::from(t.digest.ct_eq(&digest));
            if same && found.is_none() {
                found = Some((t.name.as_str(), t.role));
            }
        }
        found
    }

    /// The name and role of the caller whose client certificate has this common name.
    pub fn by_common_name(&self, common_name: &str) -> Option<(&str, Role)> {
        self.certificates
            .iter()
            .find(|c| c.common_name == common_name)
            .map(|c| (c.name.as_str(), c.role))
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the tokens file holds inline tokens and every user of this machine can read it: chmod 600 it, or use token_file / token_env"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789abcdef";
    const SEARCH: &str = "search-token-0123456789abcdef";
    const INGEST: &str = "ingest-token-0123456789abcdef";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn every_source_of_a_token_and_certificates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(
            dir.path().join("secrets/ingest.token"),
            format!("{INGEST}\n"),
        )
        .unwrap();
        let path = dir.path().join("tokens.toml");
        let text = format!(
            r#"
            [[caller]]
            name = "ops"
            role = "admin"
            token = "{ADMIN}"
            [[caller]]
            name = "viewer"
            role = "search"
            token_env = "VIEWER_TOKEN"
            [[caller]]
            name = "router"
            role = "ingest"
            token_file = "secrets/ingest.token"
            [[caller]]
            name = "gateway"
            role = "search"
            client_cert_cn = "gateway.example"
            "#
        );
        let env = |name: &str| (name == "VIEWER_TOKEN").then(|| format!(" {SEARCH} "));
        let callers = Callers::parse(&text, &path, env).unwrap();
        assert_eq!(callers.len(), 4);
        assert_eq!(callers.by_token(ADMIN), Some(("ops", Role::Admin)));
        assert_eq!(callers.by_token(SEARCH), Some(("viewer", Role::Search)));
        assert_eq!(callers.by_token(INGEST), Some(("router", Role::Ingest)));
        assert_eq!(callers.by_token("not-a-token-0123456789"), None);
        assert_eq!(callers.by_token(&ADMIN[..ADMIN.len() - 1]), None);
        assert_eq!(
            callers.by_common_name("gateway.example"),
            Some(("gateway", Role::Search))
        );
        assert_eq!(callers.by_common_name("other.example"), None);
        let debug = format!("{callers:?}");
        for token in [ADMIN, SEARCH, INGEST] {
            assert!(!debug.contains(token), "{debug}");
        }
        assert!(debug.contains("ops (admin, token)"), "{debug}");
    }

    fn error_of(text: &str, env: impl Fn(&str) -> Option<String>) -> String {
        let message = Callers::parse(text, Path::new("/etc/diptych/tokens.toml"), env)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(message.contains("/etc/diptych/tokens.toml"), "{message}");
        message
    }

    #[test]
    fn mistakes_are_named_without_the_token() {
        let secret = "a-secret-that-is-long-enough";
        let two = error_of(
            &format!(
                "[[caller]]\nname = \"x\"\nrole = \"admin\"\ntoken = \"{secret}\"\ntoken_env = \"X\"\n"
            ),
            no_env,
        );
        assert!(
            two.contains("exactly one") && two.contains("\"x\""),
            "{two}"
        );
        let none = error_of("[[caller]]\nname = \"x\"\nrole = \"admin\"\n", no_env);
        assert!(none.contains("exactly one"), "{none}");
        let short = error_of(
            "[[caller]]\nname = \"x\"\nrole = \"admin\"\ntoken = \"short-secret\"\n",
            no_env,
        );
        assert!(
            short.contains("openssl rand") && !short.contains("short-secret"),
            "{short}"
        );
        let spaces = error_of(
            "[[caller]]\nname = \"x\"\nrole = \"admin\"\ntoken = \"has spaces inside the secret\"\n",
            no_env,
        );
        assert!(!spaces.contains("inside the secret"), "{spaces}");
        let role = error_of(
            &format!("[[caller]]\nname = \"x\"\nrole = \"root\"\ntoken = \"{secret}\"\n"),
            no_env,
        );
        assert!(role.contains("line 3") && role.contains("root"), "{role}");
        assert!(!role.contains(secret), "{role}");
        let typo = error_of(
            &format!("[[caller]]\nname = \"x\"\nrole = \"admin\"\ntokn = \"{secret}\"\n"),
            no_env,
        );
        assert!(typo.contains("tokn") && !typo.contains(secret), "{typo}");
        let env = error_of(
            "[[caller]]\nname = \"x\"\nrole = \"admin\"\ntoken_env = \"MISSING_TOKEN\"\n",
            no_env,
        );
        assert!(env.contains("MISSING_TOKEN"), "{env}");
        let file = error_of(
            "[[caller]]\nname = \"x\"\nrole = \"admin\"\ntoken_file = \"x.token\"\n",
            no_env,
        );
        assert!(file.contains("/etc/diptych/x.token"), "{file}");
        let empty = error_of("", no_env);
        assert!(empty.contains("no caller"), "{empty}");
        let twice = error_of(
            &format!(
                "[[caller]]\nname = \"x\"\nrole = \"admin\"\ntoken = \"{secret}\"\n\
                 [[caller]]\nname = \"y\"\nrole = \"search\"\ntoken = \"{secret}\"\n"
            ),
            no_env,
        );
        assert!(
            twice.contains("another caller") && !twice.contains(secret),
            "{twice}"
        );
        let same_name = error_of(
            &format!(
                "[[caller]]\nname = \"x\"\nrole = \"admin\"\ntoken = \"{secret}\"\n\
                 [[caller]]\nname = \"x\"\nrole = \"search\"\nclient_cert_cn = \"x\"\n"
            ),
            no_env,
        );
        assert!(same_name.contains("twice"), "{same_name}");
    }
}
