//! Ingest: the gateway pushes a call's RAW files over HTTP; recvault spools
//! them durably and archives them into the tenant's storage prefix.
//!
//! API (bearer token per tenant, JSON errors):
//! - `PUT  /v1/sessions/{id}/files/{name}`: one file, streamed to the spool;
//!   the 2xx comes after the file and its folder are fsync'd.
//! - `POST /v1/sessions/{id}/complete`: the call is over; 202 and a status URL.
//! - `GET  /v1/sessions/{id}`: `receiving`, `queued`, `archiving`, `archived`
//!   or `failed` with a reason.
//! - `GET  /healthz`.

mod api;
pub mod archive;
pub mod spool;
pub mod tls;
pub mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use crate::config::Config;
use crate::listener::{Admitted, Gate};
use crate::server::Shared;
use crate::store::SharedStore;
use archive::{Archiver, Target};
use spool::Spool;

/// Everything the ingest handlers share.
pub struct Ingest {
    spool: Spool,
    /// SHA-256 (hex) of each token → tenant id; replaced on SIGHUP.
    tokens: std::sync::RwLock<HashMap<String, String>>,
    targets: HashMap<String, Target>,
    archiver: Arc<Archiver>,
    shared: Arc<Shared>,
    uploads: Arc<Semaphore>,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The hex SHA-256 of a bearer token, as configured in `ingest_tokens`.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Ingest {
    /// Opens the spool and starts the archiver (which resumes pending sessions).
    pub fn start(
        cfg: &Config,
        store: &SharedStore,
        shared: Arc<Shared>,
    ) -> Result<Arc<Ingest>, String> {
        let ingest_cfg = cfg.ingest.as_ref().ok_or("[ingest] is not configured")?;
        let spool = Spool::open(&ingest_cfg.spool_dir).map_err(|e| {
            format!(
                "cannot open the spool {}: {e}",
                ingest_cfg.spool_dir.display()
            )
        })?;
        match spool.clear_leftovers() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                files = n,
                "removed leftovers of the last stop (cut-off uploads, half-deleted folders)"
            ),
            Err(e) => warn!(error = %e, "cannot clean the spool's incoming folders"),
        }
        let tokens = token_map(cfg);
        let targets: HashMap<String, Target> = cfg
            .tenants
            .iter()
            .map(|t| {
                let target = Target {
                    prefix: t.prefix.get_ref().clone(),
                    store: store.clone(),
                    mp4_video_bps: t
                        .mp4_video_kbps
                        .as_ref()
                        .map_or(crate::media::render::VIDEO_BPS, |k| {
                            *k.get_ref() as u64 * 1000
                        }),
                };
                (t.id.get_ref().clone(), target)
            })
            .collect();
        let archiver = Archiver::start(
            spool.clone(),
            targets.clone(),
            shared.limits.archive_concurrency,
        )
        .map_err(|e| format!("cannot read the spool: {e}"))?;
        Ok(Arc::new(Ingest {
            spool,
            tokens: std::sync::RwLock::new(tokens),
            targets,
            archiver,
            uploads: Arc::new(Semaphore::new(shared.limits.ingest_max_concurrent_uploads)),
            shared,
            locks: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// The tenant a bearer token belongs to.
    fn tenant_of(&self, token: &str) -> Option<String> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens.get(&token_hash(token)).cloned()
    }

    /// Replaces the accepted tokens (SIGHUP). Tenants added since the start
    /// need a restart before their sessions can be archived.
    pub fn reload_tokens(&self, cfg: &Config) {
        let mut fresh = token_map(cfg);
        fresh.retain(|_, tenant| {
            let known = self.targets.contains_key(tenant);
            if !known {
                warn!(tenant = %tenant, "ingest tokens of a tenant added since the start are ignored until a restart");
            }
            known
        });
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    /// The per-session lock that serialises state changes of one session.
    fn lock_for(&self, tenant: &str, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(format!("{tenant}/{id}")).or_default().clone()
    }
}

/// SHA-256 (hex) of every configured token → its tenant.
fn token_map(cfg: &Config) -> HashMap<String, String> {
    let mut tokens = HashMap::new();
    for t in &cfg.tenants {
        for tok in &t.ingest_tokens {
            if let Some(hash) = tok.get_ref().strip_prefix("sha256:") {
                tokens.insert(hash.to_ascii_lowercase(), t.id.get_ref().clone());
            }
        }
    }
    tokens
}

/// Serves the ingest API (over TLS when `tls` is set) until `shutdown` turns true.
pub async fn run(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = ingest.shared.limits.clone();
    let gate = Gate::new("ingest", limits.max_connections);
    while let Some(Admitted { sock, peer, permit }) = gate
        .accept(&listener, &ingest.shared.defender, &mut shutdown)
        .await
    {
        let (ingest, tls) = (ingest.clone(), tls.clone());
        let timeout = Duration::from_secs(limits.ingest_idle_timeout_secs);
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(sock), ingest, peer, timeout).await,
                Some(acceptor) => {
                    match tokio::time::timeout(timeout, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(TokioIo::new(stream), ingest, peer, timeout).await
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "ingest TLS handshake failed"),
                        Err(_) => debug!(%peer, "ingest TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn serve_connection<I>(io: I, ingest: Arc<Ingest>, peer: SocketAddr, header_timeout: Duration)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ingest = ingest.clone();
        async move { Ok::<_, std::convert::Infallible>(api::handle(ingest, req, peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service);
    if let Err(e) = conn.await {
        debug!(%peer, error = %e, "ingest connection ended");
    }
}
