//! TLS server configuration shared by the ingest and FTPS listeners: rustls
//! with ring, TLS 1.2 and 1.3 only, a PEM chain and a private key that other
//! users may not read.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Builds a server configuration for `cert`/`key` offering `alpn`. `what`
/// names the listener in errors ("ingest TLS", "FTPS").
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
    what: &str,
) -> Result<rustls::ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{what} certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} certificate {} holds no certificate",
            cert.display()
        ));
    }
    let key_pem = crate::secret::read_secret_file(key)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("{what} key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{what}: the certificate and key do not fit together: {e}"))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// Writes a self-signed certificate and key (mode 0600) for `names` when
/// `cert` does not exist yet (the demo's FTPS pair).
pub fn ensure_self_signed(cert: &Path, key: &Path, names: &[&str]) -> Result<(), String> {
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    crate::secret::write_secret_file(key, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, made.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(())
}

/// A TLS acceptor for an HTTP/1.1 listener (ingest, the content API):
/// TLS 1.2/1.3, ALPN http/1.1; `what` names it in errors.
pub fn http_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    what: &str,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let cfg = server_config(cert, key, &[b"http/1.1"], what)?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg)))
}
