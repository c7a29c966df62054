//! The accept loop every listener shares: the brute-force defender decides
//! before a socket reaches a protocol library, and a semaphore caps the
//! connections a listener holds open. Listeners are bound here too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::auth::defender::Defender;
use crate::net::Source;

/// Binds a listener on `addr` and returns it with the address it got;
/// errors name what listens (`what`: "SFTP", "ftps", "ingest", …).
pub async fn bind(addr: &str, what: &str) -> Result<(TcpListener, SocketAddr), String> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))?;
    let bound = l.local_addr().map_err(|e| e.to_string())?;
    Ok((l, bound))
}

/// One listener's admission policy.
pub struct Gate {
    protocol: &'static str,
    max: usize,
    conns: Arc<Semaphore>,
    /// Written to a connection refused for the cap, before it is closed.
    refusal: Option<Arc<[u8]>>,
    /// Turns true when a stopping server's drain time ran out ([`Gate::finish`]).
    closing: watch::Sender<bool>,
    /// Connections from trusted balancers, once their PROXY header named
    /// the client (read by a task of their own, so a slow balancer holds
    /// up no one).
    proxied_tx: tokio::sync::mpsc::Sender<Admitted>,
    proxied_rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Admitted>>,
}

/// An admitted connection; dropping `permit` frees its slot.
pub struct Admitted {
    pub sock: TcpStream,
    pub peer: SocketAddr,
    pub permit: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(protocol: &'static str, max_connections: usize) -> Self {
        let (proxied_tx, proxied_rx) = tokio::sync::mpsc::channel(64);
        Self {
            protocol,
            max: max_connections,
            conns: Arc::new(Semaphore::new(max_connections)),
            refusal: None,
            closing: watch::channel(false).0,
            proxied_tx,
            proxied_rx: tokio::sync::Mutex::new(proxied_rx),
        }
    }

    /// Turns true once a stopping server's drain time has run out: a
    /// connection still open then tells its client why it ends (an SSH
    /// disconnect, an FTP 426/421) and closes.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The stop, once the accept loop has ended: waits up to `drain` for the
    /// connections to end; then turns [`Gate::closing`] true and gives those
    /// left [`GOODBYE`] to say so and go.
    pub async fn finish(&self, drain: Duration) {
        if self.drain(drain).await {
            return;
        }
        let protocol = self.protocol;
        tracing::info!(
            protocol,
            "connections still open after the {} s drain: telling them the server is shutting down",
            drain.as_secs()
        );
        let _ = self.closing.send(true);
        if !self.drain(GOODBYE).await {
            warn!(
                protocol,
                "connections still open after their goodbye; closing them"
            );
        }
    }

    /// Says `refusal` (in the protocol's own words: an FTP 421, an HTTP
    /// 503) to connections refused for the cap, so the client can tell
    /// "busy, come back" from a network fault. Banned addresses are still
    /// dropped without a word.
    pub fn with_refusal(mut self, refusal: impl Into<Arc<[u8]>>) -> Self {
        self.refusal = Some(refusal.into());
        self
    }

    /// The next connection that is neither banned nor over the cap (with
    /// `TCP_NODELAY` set); `None` once `shutdown` turns true.
    pub async fn accept(
        &self,
        listener: &TcpListener,
        defender: &Defender,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Admitted> {
        let protocol = self.protocol;
        loop {
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(protocol, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                Some(a) = async { self.proxied_rx.lock().await.recv().await } => {
                    // The client the balancer named faces the defender.
                    if let Some(left) = defender.banned(a.peer.ip()) {
                        debug!(protocol, peer = %a.peer, secs_left = left.as_secs(), "refused: address is banned (behind a balancer)");
                        crate::metrics::connection(protocol, "banned");
                        continue;
                    }
                    crate::metrics::connection(protocol, "admitted");
                    return Some(a);
                }
                _ = shutdown.changed() => return None,
            };
            if defender.is_proxy(peer.ip()) {
                // Counted against the cap while its header is read.
                let Ok(permit) = self.conns.clone().try_acquire_owned() else {
                    warn!(protocol, balancer = %peer, max = self.max, "refused: connection limit reached");
                    crate::metrics::connection(protocol, "over_limit");
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let tx = self.proxied_tx.clone();
                tokio::spawn(async move {
                    let mut sock = sock;
                    match crate::proxy::read(&mut sock).await {
                        Ok(client) => {
                            let peer = client.unwrap_or(peer);
                            let _ = tx.send(Admitted { sock, peer, permit }).await;
                        }
                        Err(e) => {
                            warn!(protocol, balancer = %peer, "refused a connection from a trusted balancer: {e}");
                            crate::metrics::connection(protocol, "bad_proxy_header");
                        }
                    }
                });
                continue;
            }
            if let Some(left) = defender.banned(peer.ip()) {
                debug!(protocol, %peer, secs_left = left.as_secs(), "refused: address is banned");
                crate::metrics::connection(protocol, "banned");
                continue;
            }
            let Ok(permit) = self.conns.clone().try_acquire_owned() else {
                warn!(protocol, %peer, max = self.max, "refused: connection limit reached");
                crate::metrics::connection(protocol, "over_limit");
                if let Some(text) = &self.refusal {
                    tokio::spawn(refuse(sock, text.clone()));
                }
                continue;
            };
            crate::metrics::connection(protocol, "admitted");
            // Every protocol here answers in messages: the last segment of
            // an answer must not wait for the peer's delayed ACK (Nagle),
            // which costs a request/response round trip up to 40 ms.
            let _ = sock.set_nodelay(true);
            return Some(Admitted { sock, peer, permit });
        }
    }

    /// Waits up to `limit` for admitted connections to end; false if some remain.
    pub async fn drain(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.conns.acquire_many(self.max as u32))
            .await
            .is_ok()
    }
}

/// A stopping server's two moments as one connection sees them: `draining`
/// (no new connections; an idle one may be told to leave) and `closing`
/// (the drain time ran out: what is still open is told why and cut).
#[derive(Clone)]
pub struct Stop {
    pub draining: tokio::sync::watch::Receiver<bool>,
    pub closing: tokio::sync::watch::Receiver<bool>,
}

/// How long connections still open when a stopping server's drain time
/// ran out get to take their goodbye (an SSH disconnect, an FTP 421)
/// before they are closed.
pub const GOODBYE: Duration = Duration::from_secs(5);

/// Says `text` on a connection being turned away and closes it, reading
/// (and discarding) what the client sends meanwhile, for 2 s at most:
/// closing with unread input would reset the connection, and the client
/// might see the reset instead of the answer.
pub async fn refuse(mut sock: TcpStream, text: impl AsRef<[u8]>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let say = async {
        sock.write_all(text.as_ref()).await?;
        sock.shutdown().await?;
        let mut sink = [0u8; 4096];
        while sock.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), say).await;
}

/// Connections still authenticating: at most `max` on a listener and at
/// most `per_source` from one [`Source`], so one address holding idle
/// connections cannot lock everyone else out.
pub struct PreAuth {
    max: usize,
    per_source: usize,
    all: Arc<Semaphore>,
    by_source: Arc<std::sync::Mutex<std::collections::HashMap<Source, usize>>>,
}

/// A slot of [`PreAuth`]; dropping it (at login, or when the connection
/// ends) frees it.
pub struct PreAuthPermit {
    _all: OwnedSemaphorePermit,
    source: Source,
    by_source: Arc<std::sync::Mutex<std::collections::HashMap<Source, usize>>>,
}

impl Drop for PreAuthPermit {
    fn drop(&mut self) {
        let mut map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.source);
            }
        }
    }
}

impl PreAuth {
    pub fn new(max: usize, per_source: usize) -> Self {
        Self {
            max,
            per_source,
            all: Arc::new(Semaphore::new(max)),
            by_source: Arc::default(),
        }
    }

    /// A slot for a connection from `peer`, or why there is none.
    pub fn admit(&self, peer: SocketAddr) -> Result<PreAuthPermit, String> {
        let source = Source::of(peer.ip());
        let mut map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(source).or_insert(0);
        if *n >= self.per_source {
            return Err(format!(
                "too many connections still authenticating from this address (max_unauthenticated_per_source = {})",
                self.per_source
            ));
        }
        let Ok(all) = self.all.clone().try_acquire_owned() else {
            if *n == 0 {
                map.remove(&source);
            }
            return Err(format!(
                "too many connections still authenticating (max_unauthenticated = {})",
                self.max
            ));
        };
        *n += 1;
        Ok(PreAuthPermit {
            _all: all,
            source,
            by_source: self.by_source.clone(),
        })
    }
}

/// The [`PreAuthPermit`] of a connection whose requests authenticate one
/// by one (ingest's bearer tokens): released by the first request that
/// authenticates; [`PreAuthSlot::idle`] tells a connection that has sent
/// no request at all (a slow-loris) from one that has.
#[derive(Clone)]
pub struct PreAuthSlot {
    permit: Arc<std::sync::Mutex<Option<PreAuthPermit>>>,
    requested: Arc<std::sync::atomic::AtomicBool>,
}

impl PreAuthSlot {
    pub fn new(permit: PreAuthPermit) -> Self {
        Self {
            permit: Arc::new(std::sync::Mutex::new(Some(permit))),
            requested: Arc::default(),
        }
    }

    /// A request arrived (authenticated or not).
    pub fn requested(&self) {
        self.requested
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A request authenticated: the slot is freed for others.
    pub fn authenticated(&self) {
        self.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Neither authenticated nor sent any request.
    pub fn idle(&self) -> bool {
        !self.requested.load(std::sync::atomic::Ordering::Relaxed)
            && self
                .permit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_cannot_take_every_pre_auth_slot() {
        let gate = PreAuth::new(4, 2);
        let a1 = gate.admit(addr("10.0.0.1:1")).unwrap();
        let _a2 = gate.admit(addr("10.0.0.1:2")).unwrap();
        let e = gate.admit(addr("10.0.0.1:3")).err().unwrap();
        assert!(e.contains("from this address"), "{e}");
        // The IPv4-mapped form is the same source.
        assert!(gate.admit(addr("[::ffff:10.0.0.1]:4")).is_err());
        let _b1 = gate.admit(addr("10.0.0.2:1")).unwrap();
        let _b2 = gate.admit(addr("10.0.0.2:2")).unwrap();
        let e = gate.admit(addr("10.0.0.3:1")).err().unwrap();
        assert!(e.contains("max_unauthenticated = 4"), "{e}");
        drop(a1);
        let _a3 = gate.admit(addr("10.0.0.1:5")).unwrap();
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let gate = PreAuth::new(10, 1);
        let _a = gate.admit(addr("[2001:db8:1:2::1]:1")).unwrap();
        assert!(gate.admit(addr("[2001:db8:1:2:ffff::9]:1")).is_err());
        assert!(gate.admit(addr("[2001:db8:1:3::1]:1")).is_ok());
    }
}
