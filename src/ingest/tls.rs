//! Optional TLS for the ingest listener (TLS 1.2/1.3, ALPN http/1.1).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let cfg = crate::tls::server_config(cert, key, &[b"http/1.1"], "ingest TLS")?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
