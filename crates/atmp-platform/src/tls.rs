//! The certificate shared by FTPS and HTTPS: the configured one, or a self-signed one
//! generated on first start under `<data>/tls/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::PlatformError;

/// Installs ring as the process's rustls provider (one provider only: see STACK.md).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificate and key files to use, generating a self-signed pair if none is configured.
pub fn ensure_certificate(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<(PathBuf, PathBuf), PlatformError> {
    if let (Some(c), Some(k)) = (cert, key) {
        for p in [c, k] {
            if !p.is_file() {
                return Err(PlatformError::Config(format!(
                    "fichier TLS introuvable : {}",
                    p.display()
                )));
            }
        }
        return Ok((c.to_path_buf(), k.to_path_buf()));
    }
    let dir = data_dir.join("tls");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    if c.is_file() && k.is_file() {
        return Ok((c, k));
    }
    std::fs::create_dir_all(&dir)?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| PlatformError::Config(format!("certificat non généré : {e}")))?;
    std::fs::write(&c, generated.cert.pem())?;
    write_private(&k, generated.signing_key.serialize_pem().as_bytes())?;
    tracing::info!(path = %c.display(), "self-signed certificate generated");
    Ok((c, k))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)?.write_all(bytes)
}

/// The rustls server configuration of the web server.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, PlatformError> {
    let bad =
        |what: &str, p: &Path| PlatformError::Config(format!("{what} illisible : {}", p.display()));
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
            .collect::<Result<_, _>>()
            .map_err(|_| bad("certificat", cert))?;
    let key_der =
        rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))
            .map_err(|_| bad("clé", key))?
            .ok_or_else(|| bad("clé", key))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PlatformError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| PlatformError::Config(format!("certificat refusé : {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
