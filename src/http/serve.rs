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
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::audit::Audit;
use crate::auth::defender::Defender;
use crate::limits::Limits;
use crate::listener::{Admitted, Gate, PreAuth, PreAuthSlot};

use super::{busy_bytes, busy_reply, Body};
use http_body_util::BodyExt as _;

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
    /// Whether HTTP/2 is offered (by ALPN over TLS, by prior knowledge in
    /// clear text) besides HTTP/1.1.
    pub http2: bool,
}

/// Streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 32;
/// Largest header block of an HTTP/2 request (as HTTP/1.1's 64 KiB buffer).
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// HTTP/2 pings: a peer that does not answer one within this long is gone.
const H2_PING: Duration = Duration::from_secs(30);

/// How long a refused connection over TLS may take to hear why.
const REFUSED_TLS_DEADLINE: Duration = Duration::from_secs(5);

/// Serves `service` (over TLS when `tls` is set) until `shutdown` turns
/// true, then drains: no new connections; requests in flight finish and get
/// their answer, idle keep-alive connections are closed, and connections
/// still open after `drain` are dropped.
pub async fn run<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    tls: Option<Arc<crate::tls::ServerTls>>,
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
        // The certificate current when the connection arrives (SIGHUP
        // reloads it; open connections keep theirs).
        let (service, tls, stop, bounds) = (
            service.clone(),
            tls.as_ref().map(|t| t.acceptor()),
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
        let activity = Arc::new(Activity::new());
        let counted = activity.clone();
        // Each request runs in a task of its own: hyper drops the handler when
        // the client hangs up, and a state change (or the removal of a part
        // file) must not stop half-way for that.
        let handler = hyper::service::service_fn(move |req| {
            let service = service.clone();
            let busy = counted.begin();
            let handling = match admission.clone() {
                Ok(slot) => tokio::spawn(service.clone().handle(req, peer, slot)),
                Err(reason) => tokio::spawn(async move { busy_reply(&reason) }),
            };
            async move {
                let reply = handling.await.unwrap_or_else(|e| {
                    warn!(protocol, %peer, error = %e, "request handler failed");
                    service.internal_error()
                });
                // In flight until its body is sent (or dropped).
                Ok::<_, std::convert::Infallible>(
                    reply.map(|body| Counted { body, _busy: busy }.boxed_unsync()),
                )
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if !self.bounds.http2 {
            builder = builder.http1_only();
        }
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.bounds.header_timeout)
            .max_buf_size(64 * 1024)
            .keep_alive(self.admission.is_ok());
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .max_pending_accept_reset_streams(H2_MAX_STREAMS as usize)
            .keep_alive_interval(H2_PING)
            .keep_alive_timeout(H2_PING);
        let conn = builder.serve_connection(io, handler);
        tokio::pin!(conn);
        let grace = tokio::time::sleep_until(self.deadline);
        tokio::pin!(grace);
        let mut graced = false;
        // An idle connection (no request in flight) closes after the header
        // timeout: HTTP/1.1 by hyper's header read timeout, HTTP/2 here.
        let (idle_after, h2) = (self.bounds.header_timeout, self.bounds.http2);
        let result = loop {
            let idle = tokio::time::sleep_until(activity.idle_since() + idle_after);
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = idle, if h2 => {
                    if activity.idle_for(idle_after) {
                        debug!(protocol, %peer, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        break conn.await;
                    }
                }
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

/// Requests of one connection in flight, and since when none is.
struct Activity {
    state: std::sync::Mutex<(usize, tokio::time::Instant)>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: std::sync::Mutex::new((0, tokio::time::Instant::now())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, tokio::time::Instant)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request begins; it ends when the guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.lock().0 += 1;
        Busy(self.clone())
    }

    /// When the connection last had nothing in flight (now, while busy).
    fn idle_since(&self) -> tokio::time::Instant {
        let s = self.lock();
        if s.0 > 0 {
            tokio::time::Instant::now()
        } else {
            s.1
        }
    }

    /// Whether nothing has been in flight for `d`.
    fn idle_for(&self, d: Duration) -> bool {
        let s = self.lock();
        s.0 == 0 && s.1.elapsed() >= d
    }
}

/// One request in flight.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.0 = s.0.saturating_sub(1);
        s.1 = tokio::time::Instant::now();
    }
}

/// A response body that keeps its request counted as in flight.
struct Counted {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Counted {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
