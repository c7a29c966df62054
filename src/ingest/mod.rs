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
//!
//! `http` handles requests, `session` is the state machine beside the
//! `spool`, `unpack` opens one-shot tars, `archive` moves completed sessions
//! into storage.

pub mod archive;
mod http;
mod session;
pub mod spool;
mod unpack;
pub mod validate;

/// The request router and the one-shot tar, for `crate::fuzz`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Routes `method path` and checks its session id, as a request would.
    pub fn route(method: &hyper::Method, path: &str) {
        if let Ok(super::http::Endpoint::Session { id, .. }) =
            super::http::Endpoint::of(method, path)
        {
            if let Ok(id) = super::http::session_id(id) {
                assert!(crate::path::is_name(id) && !id.starts_with('.'), "{id:?}");
            }
        }
    }

    /// Unpacks the tar at `body` into `dir`, files of at most `max` bytes.
    pub fn unpack(body: &std::path::Path, dir: &std::path::Path, max: u64) {
        let _ = super::unpack::unpack(body, dir, "fuzz", max);
    }
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::warn;

use crate::audit::Audit;
use crate::auth::defender::Defender;
use crate::config::Config;
use crate::limits::Limits;
use crate::listener::PreAuthSlot;
use archive::{Archiver, Target};
use spool::Spool;

/// Everything the ingest handlers share.
pub struct Ingest {
    spool: Spool,
    /// SHA-256 (hex) of each token → tenant id; replaced on SIGHUP.
    tokens: std::sync::RwLock<HashMap<String, String>>,
    targets: HashMap<String, Target>,
    archiver: Arc<Archiver>,
    /// The delivery state of a tenant delivered to its own storage.
    delivery: Option<Arc<crate::delivery::Deliverer>>,
    limits: Limits,
    defender: Arc<Defender>,
    audit: Arc<Audit>,
    uploads: Arc<Semaphore>,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The hex SHA-256 of a bearer token, as configured in `ingest_tokens`.
pub use crate::secret::token_hash;

impl Ingest {
    /// Opens the spool and starts the archiver (which resumes pending sessions).
    pub fn start(
        cfg: &Config,
        stores: &HashMap<String, Arc<crate::days::Days>>,
        delivery: Option<Arc<crate::delivery::Deliverer>>,
        defender: Arc<Defender>,
        audit: Arc<Audit>,
    ) -> Result<Arc<Ingest>, String> {
        let limits = cfg.limits.clone();
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
        let targets: HashMap<String, Target> = cfg
            .tenants
            .iter()
            .filter_map(|t| {
                // A tenant that was not started has no store: its sessions
                // wait in the spool.
                let days = stores.get(t.id.get_ref())?;
                let target = Target {
                    prefix: t.prefix.get_ref().clone(),
                    store: days.store().clone(),
                    days: days.clone(),
                    mp4_video_bps: t
                        .mp4_video_kbps
                        .as_ref()
                        .map_or(crate::media::render::VIDEO_BPS, |k| {
                            *k.get_ref() as u64 * 1000
                        }),
                    render_threads: cfg.limits.render_threads(),
                    delivery: delivery.clone().filter(|d| d.serves(t.id.get_ref())),
                };
                Some((t.id.get_ref().clone(), target))
            })
            .collect();
        let tokens = token_map(cfg);
        let archiver = Archiver::start(spool.clone(), targets.clone(), &limits, audit.clone())
            .map_err(|e| format!("cannot read the spool: {e}"))?;
        Ok(Arc::new(Ingest {
            spool,
            tokens: std::sync::RwLock::new(tokens),
            targets,
            archiver,
            delivery,
            uploads: Arc::new(Semaphore::new(limits.ingest_max_concurrent_uploads)),
            limits,
            defender,
            audit,
            locks: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// Whether the tenant was started (has a store to archive into).
    fn serves(&self, tenant: &str) -> bool {
        self.targets.contains_key(tenant)
    }

    /// The tenant a bearer token belongs to.
    fn tenant_of(&self, token: &str) -> Option<String> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens.get(&token_hash(token)).cloned()
    }

    /// Replaces the accepted tokens (SIGHUP). Tenants added since the start
    /// need a restart before their sessions can be archived: until then
    /// their uploads are answered 503 (the gateway keeps them).
    pub fn reload_tokens(&self, cfg: &Config) {
        let fresh = token_map(cfg);
        let mut unknown: Vec<&String> = fresh
            .values()
            .filter(|t| !self.targets.contains_key(*t))
            .collect();
        unknown.dedup();
        for tenant in unknown {
            warn!(tenant = %tenant, "ingest of a tenant not started (added since the start, or its keyset unreadable) is answered 503 until a restart");
        }
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

/// What ingest offers by ALPN over TLS: HTTP/1.1 only.
pub const ALPN: &[&[u8]] = &[b"http/1.1"];

/// Serves the ingest API (over TLS when `tls` is set) until `shutdown`
/// turns true, then drains: no new connections; requests in flight (an
/// upload being received, a completion) finish and get their answer, idle
/// keep-alive connections are closed, and connections still open after
/// `drain` are dropped. A session cut off that way was never acknowledged.
pub async fn run(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let bounds = Arc::new(crate::http::serve::Bounds {
        header_timeout: Duration::from_secs(ingest.limits.ingest_idle_timeout_secs),
        limits: ingest.limits.clone(),
        defender: ingest.defender.clone(),
        audit: ingest.audit.clone(),
        http2: false,
    });
    crate::http::serve::run(listener, ingest, tls, bounds, shutdown, drain).await;
}

#[async_trait::async_trait]
impl crate::http::serve::Service for Ingest {
    fn protocol(&self) -> &'static str {
        "ingest"
    }

    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
        slot: PreAuthSlot,
    ) -> hyper::Response<crate::http::Body> {
        crate::http::boxed(http::handle(self, req, peer, slot).await)
    }

    fn internal_error(&self) -> hyper::Response<crate::http::Body> {
        crate::http::boxed(http::internal_error())
    }
}
