//! Connecting to PostgreSQL, in clear or over TLS (rustls with ring, like the rest of atmp).
//!
//! The URL is libpq's (`postgres://user:password@host:port/base?sslmode=…`). `sslmode=require`,
//! `verify-ca` and `verify-full` all mean TLS **with the server's certificate checked** (name
//! and chain): a base of health data is not reached over a channel whose other end is unknown.
//! The chain is checked against `sslrootcert=FILE` (PEM) when given, else against the Mozilla
//! roots (`webpki-roots`). Without `sslmode`, or with `disable`/`prefer`, the connection is in
//! clear (a unix socket or the loopback of one machine).

use std::sync::Arc;

use postgres::{Client, NoTls};

use crate::{Result, StoreError};

/// The TLS wanted by a URL, and the URL as the `postgres` crate reads it.
struct Target {
    url: String,
    tls: Option<rustls::ClientConfig>,
}

/// Opens a connection named by a libpq URL.
pub(crate) fn connect(url: &str) -> Result<Client> {
    let t = target(url)?;
    Ok(match t.tls {
        None => Client::connect(&t.url, NoTls)?,
        Some(cfg) => Client::connect(&t.url, tokio_postgres_rustls::MakeRustlsConnect::new(cfg))?,
    })
}

fn target(url: &str) -> Result<Target> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root = None;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_string()),
            Some(("sslrootcert", v)) => root = Some(percent_decode(v)),
            _ => kept.push(kv.to_string()),
        }
    }
    let tls = match mode.as_deref() {
        None | Some("disable") | Some("prefer") | Some("allow") => None,
        Some("require") | Some("verify-ca") | Some("verify-full") => Some(config(root.as_deref())?),
        Some(other) => {
            return Err(StoreError::Url(format!(
                "sslmode={other} : valeur inconnue (disable, require, verify-ca ou verify-full)"
            )))
        }
    };
    if tls.is_some() {
        kept.push("sslmode=require".into());
    } else if mode.is_some() {
        kept.push("sslmode=disable".into());
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Target { url, tls })
}

fn config(root: Option<&str>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let f = std::fs::File::open(path).map_err(|e| {
                StoreError::Url(format!("sslrootcert={path} : lecture impossible ({e})"))
            })?;
            let mut n = 0;
            for c in rustls_pemfile::certs(&mut std::io::BufReader::new(f)) {
                let c = c.map_err(|e| StoreError::Url(format!("sslrootcert={path} : {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| StoreError::Url(format!("sslrootcert={path} : {e}")))?;
                n += 1;
            }
            if n == 0 {
                return Err(StoreError::Url(format!(
                    "sslrootcert={path} : aucun certificat PEM dans ce fichier"
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Url(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `%2F` and friends in a path given inside a URL.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL as it may be shown (errors, traces): its password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (a, h),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        assert_eq!(
            redact("postgres://atmp:s3cr%40t@db:5432/atmp?sslmode=require"),
            "postgres://atmp:***@db:5432/atmp?sslmode=require"
        );
        assert_eq!(redact("postgres://atmp@db/atmp"), "postgres://atmp@db/atmp");
        assert_eq!(redact("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }

    #[test]
    fn sslmode_picks_tls_and_the_root_is_taken_out_of_the_url() {
        let t = target("postgres://a@h/b?application_name=x&sslmode=disable").unwrap();
        assert!(t.tls.is_none());
        assert_eq!(t.url, "postgres://a@h/b?application_name=x&sslmode=disable");
        let t = target("postgres://a@h/b?sslmode=verify-full").unwrap();
        assert!(t.tls.is_some());
        assert_eq!(t.url, "postgres://a@h/b?sslmode=require");
        let e = target("postgres://a@h/b?sslmode=require&sslrootcert=/nonexistent.pem")
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent.pem"), "{e}");
        assert!(target("postgres://a@h/b?sslmode=peut-etre").is_err());
    }

    /// `./scripts/test`'s server has TLS on with a CA of its own (`ATMP_TEST_POSTGRES_CA`).
    fn server() -> (String, String) {
        (
            std::env::var("ATMP_TEST_POSTGRES_URL")
                .expect("ATMP_TEST_POSTGRES_URL (./scripts/test)"),
            std::env::var("ATMP_TEST_POSTGRES_CA").expect("ATMP_TEST_POSTGRES_CA (./scripts/test)"),
        )
    }

    fn uses_tls(c: &mut Client) -> bool {
        c.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
    }

    #[test]
    fn tls_is_used_and_the_certificate_checked_when_the_url_asks() {
        let (url, ca) = server();
        let mut plain = connect(&url).unwrap();
        assert!(!uses_tls(&mut plain));
        let mut tls = connect(&format!("{url}?sslmode=verify-full&sslrootcert={ca}")).unwrap();
        assert!(uses_tls(&mut tls));
        // The server's certificate is not signed by the Mozilla roots: refused without its CA.
        let e = connect(&format!("{url}?sslmode=require")).err().unwrap();
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
        // Nor for another name than the certificate's (127.0.0.1 and localhost only).
        let other = url.replace("127.0.0.1", "autre.example");
        let e = connect(&format!(
            "{other}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"
        ))
        .err()
        .unwrap();
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    }
}
