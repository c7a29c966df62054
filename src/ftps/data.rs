//! Passive data connections: ports from the configured range, accepted only
//! from the control connection's IP address (no FTP bounce, no stolen
//! transfers), then secured with TLS, optionally requiring that the TLS
//! session resumes an earlier one (the control connection's).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::HandshakeKind;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

/// The passive port range shared by every connection of a listener.
pub struct PassivePorts {
    range: Option<(u16, u16)>,
    used: Mutex<HashSet<u16>>,
}

/// A listening passive port, returned to the pool when dropped.
pub struct Pending {
    listener: TcpListener,
    pub port: u16,
    pool: Arc<PassivePorts>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.pool
            .used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.port);
    }
}

/// Why a data connection could not be used; each maps to one reply.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("no data connection within {0} s")]
    Timeout(u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake on the data connection failed: {0}")]
    Tls(std::io::Error),
    #[error("TLS session reuse required: the data connection must resume this control connection's TLS session")]
    NotResumed,
}

impl PassivePorts {
    pub fn new(range: Option<(u16, u16)>) -> Arc<Self> {
        Arc::new(Self {
            range,
            used: Mutex::new(HashSet::new()),
        })
    }

    /// Opens a listening port on `ip`: a free one of the range, starting at
    /// a random place so that ports are hard to guess.
    pub async fn open(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, String> {
        let Some((lo, hi)) = self.range else {
            let listener = TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .map_err(|e| format!("cannot open a passive port: {e}"))?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            return Ok(Pending {
                listener,
                port,
                pool: self.clone(),
            });
        };
        let span = (hi - lo) as u32 + 1;
        let start = rand::random::<u32>() % span;
        for i in 0..span {
            let port = lo + ((start + i) % span) as u16;
            if !self
                .used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(port)
            {
                continue;
            }
            let pending = Pending {
                listener: match TcpListener::bind(SocketAddr::new(ip, port)).await {
                    Ok(l) => l,
                    Err(_) => {
                        self.used
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&port);
                        continue;
                    }
                },
                port,
                pool: self.clone(),
            };
            return Ok(pending);
        }
        Err(format!(
            "all {span} passive ports ({lo}-{hi}) are busy; try again shortly"
        ))
    }
}

/// Same address, whether written as IPv4 or IPv4-mapped IPv6.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

impl Pending {
    /// Waits for the client's data connection; connections from any other
    /// address are closed at once and the wait goes on.
    ///
    /// A connection from a trusted balancer (`defender.is_proxy`) is judged
    /// by the client its PROXY header names.
    pub async fn accept(
        &self,
        client: IpAddr,
        within: Duration,
        defender: &crate::auth::defender::Defender,
    ) -> Result<TcpStream, DataError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (mut sock, mut from) = tokio::time::timeout_at(deadline, self.listener.accept())
                .await
                .map_err(|_| DataError::Timeout(within.as_secs()))??;
            if defender.is_proxy(from.ip()) {
                let header = tokio::time::timeout_at(deadline, crate::proxy::read(&mut sock));
                match header.await {
                    Ok(Ok(claimed)) => from = claimed.unwrap_or(from),
                    Ok(Err(e)) => {
                        warn!(balancer = %from, port = self.port, "refused a data connection from a trusted balancer: {e}");
                        continue;
                    }
                    Err(_) => return Err(DataError::Timeout(within.as_secs())),
                }
            }
            if same_host(from.ip(), client) {
                let _ = sock.set_nodelay(true);
                return Ok(sock);
            }
            warn!(%from, %client, port = self.port, "refused a data connection from another address than the control connection's");
        }
    }
}

/// A random mark a control connection puts into every TLS session it (and
/// its data connections) hands out, as rustls resumption data. A data
/// connection required to resume must carry it back: resuming some other
/// client's session (one it stole or was given) is not enough.
#[derive(Clone)]
pub struct ResumeToken([u8; 16]);

impl Default for ResumeToken {
    fn default() -> Self {
        Self::new()
    }
}

impl ResumeToken {
    pub fn new() -> Self {
        Self(rand::random())
    }

    /// Accepts TLS on `sock`, marking the sessions it issues with this token.
    pub fn accept<IO>(&self, acceptor: &TlsAcceptor, sock: IO) -> tokio_rustls::Accept<IO>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let token = self.0;
        acceptor.accept_with(sock, move |c| c.set_resumption_data(&token))
    }

    fn carried_by(&self, conn: &rustls::ServerConnection) -> bool {
        conn.handshake_kind() == Some(HandshakeKind::Resumed)
            && conn.received_resumption_data() == Some(&self.0[..])
    }
}

/// Secures an accepted data connection, marking its sessions with `token`;
/// with `require_resumption`, it must resume a session carrying it.
pub async fn secure(
    sock: TcpStream,
    acceptor: TlsAcceptor,
    token: &ResumeToken,
    require_resumption: bool,
    within: Duration,
) -> Result<TlsStream<TcpStream>, DataError> {
    let mut tls = tokio::time::timeout(within, token.accept(&acceptor, sock))
        .await
        .map_err(|_| DataError::Timeout(within.as_secs()))?
        .map_err(DataError::Tls)?;
    if require_resumption && !token.carried_by(tls.get_ref().1) {
        // A clean close (close_notify), so the client reads the 522 reply
        // rather than a TLS error.
        let _ = tokio::time::timeout(Duration::from_secs(2), tls.shutdown()).await;
        return Err(DataError::NotResumed);
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_range_is_used_up_and_ports_come_back() {
        // Find two adjacent free ports for a tiny range.
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        let pool = PassivePorts::new(Some((base, base)));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = pool.open(ip).await.unwrap();
        assert_eq!(a.port, base);
        let err = pool.open(ip).await.err().unwrap();
        assert!(err.contains("busy"), "{err}");
        drop(a);
        let b = pool.open(ip).await.unwrap();
        assert_eq!(b.port, base);
    }

    #[tokio::test]
    async fn connections_from_other_addresses_are_dropped() {
        use tokio::io::AsyncReadExt;
        let pool = PassivePorts::new(None);
        let p = pool.open("127.0.0.1".parse().unwrap()).await.unwrap();
        let port = p.port;
        let clients = async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut stranger = s.connect(([127, 0, 0, 1], port).into()).await.unwrap();
            let mut buf = [0u8; 1];
            // Closed by the server without a byte.
            assert_eq!(stranger.read(&mut buf).await.unwrap_or(0), 0);
            TcpStream::connect(("127.0.0.1", port)).await.unwrap()
        };
        let defender = crate::auth::defender::Defender::new(&crate::limits::Limits::default());
        let (got, mine) = tokio::join!(
            p.accept(
                "127.0.0.1".parse().unwrap(),
                Duration::from_secs(5),
                &defender
            ),
            clients
        );
        assert_eq!(
            got.unwrap().peer_addr().unwrap(),
            mine.local_addr().unwrap()
        );
    }
}
