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
pub mod tls;
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

use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::audit::Audit;
use crate::auth::defender::Defender;
use crate::config::Config;
use crate::limits::Limits;
use crate::listener::{Admitted, Gate, PreAuth, PreAuthSlot};
use archive::{Archiver, Target};
use spool::Spool;

/// Everything the ingest handlers share.
pub struct Ingest {
    spool: Spool,
    /// SHA-256 (hex) of each token → tenant id; replaced on SIGHUP.
    tokens: std::sync::RwLock<HashMap<String, String>>,
    targets: HashMap<String, Target>,
    archiver: Arc<Archiver>,
    limits: Limits,
    defender: Arc<Defender>,
    audit: Arc<Audit>,
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
        stores: &HashMap<String, Arc<crate::days::Days>>,
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

/// Serves the ingest API (over TLS when `tls` is set) until `shutdown`
/// turns true, then drains: no new connections; requests in flight (an
/// upload being received, a completion) finish and get their answer, idle
/// keep-alive connections are closed, and connections still open after
/// `drain` are dropped. A session cut off that way was never acknowledged.
pub async fn run(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let limits = ingest.limits.clone();
    let mut gate = Gate::new("ingest", limits.max_connections);
    if tls.is_none() {
        gate = gate.with_refusal(http::refusal_bytes(
            "too many connections (max_connections)",
        ));
    }
    let preauth = PreAuth::new(
        limits.max_unauthenticated,
        limits.max_unauthenticated_per_source,
    );
    while let Some(Admitted { sock, peer, permit }) = gate
        .accept(&listener, &ingest.defender, &mut shutdown)
        .await
    {
        let (ingest, tls, stop) = (ingest.clone(), tls.clone(), shutdown.clone());
        let timeout = Duration::from_secs(limits.ingest_idle_timeout_secs);
        // Over the per-source (or listener) cap of connections that have
        // not authenticated yet: 503 with the reason, at once in clear
        // text; over TLS, each request gets it within a short deadline.
        let admission = preauth.admit(peer).map(PreAuthSlot::new);
        let deadline = tokio::time::Instant::now()
            + match &admission {
                Ok(_) => limits.login_grace(),
                Err(_) => REFUSED_TLS_DEADLINE,
            };
        if let Err(reason) = &admission {
            warn!(%peer, %reason, "ingest: refusing a connection");
            if tls.is_none() {
                let refusal = http::refusal_bytes(reason);
                tokio::spawn(async move {
                    crate::listener::refuse(sock, refusal).await;
                    drop(permit);
                });
                continue;
            }
        }
        tokio::spawn(async move {
            let conn = Conn {
                ingest,
                peer,
                header_timeout: timeout,
                deadline,
                admission,
            };
            match tls {
                None => conn.serve(TokioIo::new(sock), stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => conn.serve(TokioIo::new(stream), stop).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "ingest TLS handshake failed"),
                        Err(_) => {
                            info!(%peer, "closing: no TLS handshake within the login grace time");
                            conn.grace_exceeded();
                        }
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if !gate.drain(drain).await {
        tracing::info!(
            "shutdown: closing ingest connections still open after {}s",
            drain.as_secs()
        );
    }
}

/// How long a refused ingest connection over TLS may take to hear why.
const REFUSED_TLS_DEADLINE: Duration = Duration::from_secs(5);

/// One accepted ingest connection.
struct Conn {
    ingest: Arc<Ingest>,
    peer: SocketAddr,
    header_timeout: Duration,
    /// When it must have authenticated (or asked for /healthz) by.
    deadline: tokio::time::Instant,
    /// Its pre-authentication slot, or why it got none.
    admission: Result<PreAuthSlot, String>,
}

impl Conn {
    /// A connection that did not authenticate (nor ask for /healthz, as
    /// load balancers do) within the login grace time counts as a failed
    /// login for the defender.
    fn grace_exceeded(&self) {
        crate::shared::login_timed_out(
            &self.ingest.audit,
            &self.ingest.defender,
            "ingest",
            self.peer,
        );
    }

    async fn serve<I>(self, io: I, mut stop: watch::Receiver<bool>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (ingest, peer, admission) = (self.ingest.clone(), self.peer, self.admission.clone());
        // Each request runs in a task of its own: hyper drops the handler when
        // the client hangs up, and a state change (or the removal of a part
        // file) must not stop half-way for that.
        let service = hyper::service::service_fn(move |req| {
            let handling = match admission.clone() {
                Ok(slot) => tokio::spawn(http::handle(ingest.clone(), req, peer, slot)),
                Err(reason) => tokio::spawn(async move { http::refused(&reason) }),
            };
            async move {
                let reply = handling.await.unwrap_or_else(|e| {
                    warn!(%peer, error = %e, "ingest request handler failed");
                    http::internal_error()
                });
                Ok::<_, std::convert::Infallible>(reply)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(64 * 1024)
            .keep_alive(self.admission.is_ok())
            .serve_connection(io, service);
        tokio::pin!(conn);
        let grace = tokio::time::sleep_until(self.deadline);
        tokio::pin!(grace);
        let mut graced = false;
        let result = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = &mut grace, if !graced => {
                    graced = true;
                    match &self.admission {
                        Ok(slot) if slot.idle() => {
                            info!(%peer, "closing: not authenticated within the login grace time");
                            self.grace_exceeded();
                            return;
                        }
                        // A refused connection lives no longer than its deadline.
                        Err(_) => return,
                        Ok(_) => {}
                    }
                }
                _ = async { drop(stop.wait_for(|s| *s).await) } => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
            }
        };
        if let Err(e) = result {
            debug!(%peer, error = %e, "ingest connection ended");
        }
    }
}
