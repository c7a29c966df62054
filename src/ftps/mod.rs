//! FTP over TLS: recvault's accept loops (explicit FTPS, and implicit FTPS
//! on its own port), the control channel (`session`), passive data
//! connections (`data`) and the transfers over them (`transfer`), all over
//! the same virtual tree and user store as SFTP.
//!
//! recvault owns this protocol loop rather than running libunftp: libunftp's
//! `service()` takes a bare `TcpStream`, so it can neither start in TLS
//! (implicit FTPS) nor have its control lines capped; its passive listener
//! hands the first connection from any address to the transfer; and it has
//! no hook to check TLS session resumption on data connections. Each of
//! those is a requirement here (see the FTPS issue's note).
//!
//! Policy: TLS is always required (explicit: `AUTH TLS` before `USER`, `PROT
//! P` before any transfer), TLS 1.2/1.3 with ALPN `ftp`, passive mode only,
//! data connections only from the control connection's address, command
//! lines capped, the shared defender before accept and on every failed login.

mod data;
mod format;
mod line;
mod session;
mod transfer;

/// The command-line parsers, for `crate::fuzz`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::format::strip_list_options;
    pub use super::line::{split, LineReader};

    pub fn line_reader(max: usize) -> LineReader {
        LineReader::new(max)
    }
}

use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn, Instrument};

use crate::config::FtpsConfig;
use crate::listener::{Admitted, Gate};
use crate::shared::Shared;
use crate::tls::ServerTls;

pub use data::PassivePorts;

/// What every FTPS connection of this server shares.
pub struct Ftps {
    pub shared: Arc<Shared>,
    pub tls: Arc<ServerTls>,
    pub passive: Arc<PassivePorts>,
    pub passive_ip: Option<Ipv4Addr>,
    pub require_resumption: bool,
}

impl Ftps {
    pub fn from_config(cfg: &FtpsConfig, shared: Arc<Shared>) -> Result<Self, String> {
        Ok(Self {
            shared,
            tls: Arc::new(ServerTls::load(
                cfg.certificate.clone(),
                cfg.private_key.clone(),
                &[b"ftp"],
                "FTPS",
            )?),
            passive: PassivePorts::new(cfg.passive_range()),
            passive_ip: cfg.passive_ip(),
            require_resumption: cfg.require_tls_resumption,
        })
    }
}

/// A control connection before or after `AUTH TLS`.
pub(crate) enum Control {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Control {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Control::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Control::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Control {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Control::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Control::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Control::Plain(s) => Pin::new(s).poll_flush(cx),
            Control::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Control::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Control::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Explicit FTPS (`AUTH TLS` on a clear connection) or implicit (TLS first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Explicit,
    Implicit,
}

impl Mode {
    /// The listener's name in logs and in its "listening on" line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Explicit => "ftps",
            Mode::Implicit => "ftps-implicit",
        }
    }
}

/// Accepts FTPS connections until `shutdown` turns true, then waits (up to
/// `drain`) for open connections to finish: idle ones are told at once
/// (421), transfers may finish; those still running then are cut with a
/// 426 and a 421 that say why.
pub async fn run(
    listener: TcpListener,
    mode: Mode,
    ftps: Arc<Ftps>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let limits = ftps.shared.limits.clone();
    let mut gate = Gate::new(mode.name(), limits.max_connections);
    if mode == Mode::Explicit {
        // Implicit FTPS starts with TLS: there is no clear-text way to say it.
        gate = gate
            .with_refusal(&b"421 Too many connections (max_connections): try again later\r\n"[..]);
    }
    let preauth = crate::listener::PreAuth::new(
        limits.max_unauthenticated,
        limits.max_unauthenticated_per_source,
    );
    let closing = gate.closing();
    while let Some(Admitted { sock, peer, permit }) = gate
        .accept(&listener, &ftps.shared.defender, &mut shutdown)
        .await
    {
        let pre_permit = match preauth.admit(peer) {
            Ok(p) => p,
            Err(why) => {
                warn!(%peer, "refused FTPS: {why}");
                // Explicit FTPS starts in clear text: say why before closing.
                if mode == Mode::Explicit {
                    let mut sock = sock;
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let line = format!("421 Refused: {why}\r\n");
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            sock.write_all(line.as_bytes()),
                        )
                        .await;
                    });
                }
                continue;
            }
        };
        let local = match sock.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let ftps = ftps.clone();
        let stop = crate::listener::Stop {
            draining: shutdown.clone(),
            closing: closing.clone(),
        };
        let span = tracing::info_span!("ftps", %peer, implicit = mode == Mode::Implicit);
        tokio::spawn(
            async move {
                let _permit = permit;
                let token = data::ResumeToken::new();
                let control = match mode {
                    Mode::Explicit => Control::Plain(sock),
                    Mode::Implicit => {
                        let grace = ftps.shared.limits.login_grace();
                        let accept = token.accept(&ftps.tls.acceptor(), sock);
                        match tokio::time::timeout(grace, accept).await {
                            Ok(Ok(s)) => Control::Tls(Box::new(s)),
                            Ok(Err(e)) => {
                                debug!(error = %e, "implicit TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                info!("closing: no TLS handshake within the login grace time");
                                ftps.shared.login_timed_out("ftps", peer);
                                return;
                            }
                        }
                    }
                };
                session::Session::new(ftps, control, peer, local, pre_permit, token, stop)
                    .run()
                    .await;
                debug!("connection closed");
            }
            .instrument(span),
        );
    }
    // New clients are refused at once, not left waiting in the backlog.
    drop(listener);
    gate.finish(drain).await;
}
