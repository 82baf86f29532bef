//! Test certificates made with `openssl` in a folder: CAs (`NAME.key`, `NAME.crt`) and leaf
//! certificates they sign, valid for `localhost` and 127.0.0.1, for the TLS tests.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; panics with its message when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A self-signed CA `NAME.key` / `NAME.crt` (CN "diptych test NAME"), valid two days.
pub fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=diptych test {name}"),
        ],
    );
}

/// A certificate `NAME.key` / `NAME.crt` with common name `cn` and extended key usage `usage`
/// (`serverAuth` or `clientAuth`), for `localhost` and 127.0.0.1, signed by the CA `ca`.
pub fn leaf(dir: &Path, name: &str, cn: &str, usage: &str, ca: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}/O=diptych tests"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}
