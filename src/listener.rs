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
}

/// An admitted connection; dropping `permit` frees its slot.
pub struct Admitted {
    pub sock: TcpStream,
    pub peer: SocketAddr,
    pub permit: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(protocol: &'static str, max_connections: usize) -> Self {
        Self {
            protocol,
            max: max_connections,
            conns: Arc::new(Semaphore::new(max_connections)),
        }
    }

    /// The next connection that is neither banned nor over the cap; `None`
    /// once `shutdown` turns true.
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
                _ = shutdown.changed() => return None,
            };
            if let Some(left) = defender.banned(peer.ip()) {
                debug!(protocol, %peer, secs_left = left.as_secs(), "refused: address is banned");
                continue;
            }
            let Ok(permit) = self.conns.clone().try_acquire_owned() else {
                warn!(protocol, %peer, max = self.max, "refused: connection limit reached");
                continue;
            };
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
