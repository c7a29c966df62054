//! TLS server configuration shared by the ingest, content API and FTPS
//! listeners: rustls with ring, TLS 1.2 and 1.3 only, a PEM chain and a
//! private key that other users may not read, reloadable on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Builds a server configuration for `cert`/`key` offering `alpn`. `what`
/// names the listener in errors ("ingest TLS", "FTPS").
fn server_config(
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

/// A listener's certificate and key, re-read on SIGHUP ([`Self::reload`]);
/// its TLS session cache and ticket keys survive a reload, so clients keep
/// resuming (FTPS data connections must). Each connection takes the
/// acceptor current when it arrives; open connections keep theirs.
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    alpn: &'static [&'static [u8]],
    what: &'static str,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    current: RwLock<TlsAcceptor>,
}

impl ServerTls {
    /// Reads `cert`/`key` for a listener offering `alpn`; `what` names it
    /// in errors and logs ("ingest TLS", "API TLS", "FTPS").
    pub fn load(
        cert: PathBuf,
        key: PathBuf,
        alpn: &'static [&'static [u8]],
        what: &'static str,
    ) -> Result<Self, String> {
        let sessions: Arc<dyn rustls::server::StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(4096);
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
        let tls = Self {
            current: RwLock::new(build(&cert, &key, alpn, what, &sessions, &ticketer)?),
            cert,
            key,
            alpn,
            what,
            sessions,
            ticketer,
        };
        Ok(tls)
    }

    /// Re-reads the certificate and key; on error the running pair stays.
    pub fn reload(&self) -> Result<(), String> {
        let acceptor = build(
            &self.cert,
            &self.key,
            self.alpn,
            self.what,
            &self.sessions,
            &self.ticketer,
        )?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }

    /// The acceptor for a connection arriving now.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The listener's name ("ingest TLS", "API TLS", "FTPS").
    pub fn what(&self) -> &'static str {
        self.what
    }
}

fn build(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
    what: &str,
    sessions: &Arc<dyn rustls::server::StoresServerSessions>,
    ticketer: &Arc<dyn rustls::server::ProducesTickets>,
) -> Result<TlsAcceptor, String> {
    let mut cfg = server_config(cert, key, alpn, what)?;
    cfg.session_storage = sessions.clone();
    cfg.ticketer = ticketer.clone();
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
