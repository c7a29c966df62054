//! The accept loop and connection handling of the HTTP listeners that
//! authenticate (ingest, the content API): the shared gate (defender,
//! connection cap, drain), the pre-authentication slots (a connection must
//! authenticate within the login grace time, or it counts as a failed
//! login), optional TLS, and a graceful stop (requests in flight finish and
//! get their answer; idle keep-alive connections close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::audit::Audit;
use crate::auth::defender::Defender;
use crate::limits::Limits;
use crate::listener::{Admitted, Gate, PreAuth, PreAuthSlot};

use super::{busy_bytes, busy_reply, Body};

/// What an HTTP listener does with a request.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// The listener's name in logs, the audit trail and metrics.
    fn protocol(&self) -> &'static str;
    /// Answers one request from `peer`; `slot` is told when the request
    /// authenticated (or was a health check).
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        slot: PreAuthSlot,
    ) -> Response<Body>;
    /// The answer when the handler itself failed (it panicked).
    fn internal_error(&self) -> Response<Body>;
}

/// How a listener's connections are bounded.
pub struct Bounds {
    pub limits: Limits,
    /// Longest wait for a request's header (also between requests).
    pub header_timeout: Duration,
    pub defender: Arc<Defender>,
    pub audit: Arc<Audit>,
}

/// How long a refused connection over TLS may take to hear why.
const REFUSED_TLS_DEADLINE: Duration = Duration::from_secs(5);

/// Serves `service` (over TLS when `tls` is set) until `shutdown` turns
/// true, then drains: no new connections; requests in flight finish and get
/// their answer, idle keep-alive connections are closed, and connections
/// still open after `drain` are dropped.
pub async fn run<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    bounds: Arc<Bounds>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let protocol = service.protocol();
    let limits = &bounds.limits;
    let mut gate = Gate::new(protocol, limits.max_connections);
    if tls.is_none() {
        gate = gate.with_refusal(busy_bytes("too many connections (max_connections)"));
    }
    let preauth = PreAuth::new(
        limits.max_unauthenticated,
        limits.max_unauthenticated_per_source,
    );
    while let Some(Admitted { sock, peer, permit }) = gate
        .accept(&listener, &bounds.defender, &mut shutdown)
        .await
    {
        let (service, tls, stop, bounds) = (
            service.clone(),
            tls.clone(),
            shutdown.clone(),
            bounds.clone(),
        );
        // Over the per-source (or listener) cap of connections that have
        // not authenticated yet: 503 with the reason, at once in clear
        // text; over TLS, each request gets it within a short deadline.
        let admission = preauth.admit(peer).map(PreAuthSlot::new);
        let deadline = tokio::time::Instant::now()
            + match &admission {
                Ok(_) => bounds.limits.login_grace(),
                Err(_) => REFUSED_TLS_DEADLINE,
            };
        if let Err(reason) = &admission {
            warn!(protocol, %peer, %reason, "refusing a connection");
            if tls.is_none() {
                let refusal = busy_bytes(reason);
                tokio::spawn(async move {
                    crate::listener::refuse(sock, refusal).await;
                    drop(permit);
                });
                continue;
            }
        }
        tokio::spawn(async move {
            let conn = Conn {
                service,
                bounds,
                peer,
                deadline,
                admission,
            };
            match tls {
                None => conn.serve(TokioIo::new(sock), stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => conn.serve(TokioIo::new(stream), stop).await,
                        Ok(Err(e)) => debug!(protocol, %peer, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            info!(protocol, %peer, "closing: no TLS handshake within the login grace time");
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
        info!(
            protocol,
            "shutdown: closing connections still open after {}s",
            drain.as_secs()
        );
    }
}

/// One accepted connection.
struct Conn<S> {
    service: Arc<S>,
    bounds: Arc<Bounds>,
    peer: SocketAddr,
    /// When it must have authenticated (or asked for a health check) by.
    deadline: tokio::time::Instant,
    /// Its pre-authentication slot, or why it got none.
    admission: Result<PreAuthSlot, String>,
}

impl<S: Service> Conn<S> {
    /// A connection that did not authenticate (nor ask for a health check,
    /// as load balancers do) within the login grace time counts as a
    /// failed login for the defender.
    fn grace_exceeded(&self) {
        crate::shared::login_timed_out(
            &self.bounds.audit,
            &self.bounds.defender,
            self.service.protocol(),
            self.peer,
        );
    }

    async fn serve<I>(self, io: I, mut stop: watch::Receiver<bool>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (service, peer, admission) = (self.service.clone(), self.peer, self.admission.clone());
        let protocol = service.protocol();
        // Each request runs in a task of its own: hyper drops the handler when
        // the client hangs up, and a state change (or the removal of a part
        // file) must not stop half-way for that.
        let handler = hyper::service::service_fn(move |req| {
            let service = service.clone();
            let handling = match admission.clone() {
                Ok(slot) => tokio::spawn(service.clone().handle(req, peer, slot)),
                Err(reason) => tokio::spawn(async move { busy_reply(&reason) }),
            };
            async move {
                let reply = handling.await.unwrap_or_else(|e| {
                    warn!(protocol, %peer, error = %e, "request handler failed");
                    service.internal_error()
                });
                Ok::<_, std::convert::Infallible>(reply)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.bounds.header_timeout)
            .max_buf_size(64 * 1024)
            .keep_alive(self.admission.is_ok())
            .serve_connection(io, handler);
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
                            info!(protocol, %peer, "closing: not authenticated within the login grace time");
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
            debug!(protocol, %peer, error = %e, "connection ended");
        }
    }
}
