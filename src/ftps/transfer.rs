//! The data-connection side of an FTPS transfer: what a data connection
//! carries ([`Payload`]), and the [`Job`] that accepts the client's
//! connection on the passive port, secures it with TLS, sends a file or a
//! listing over it and closes it cleanly, reporting how far it got
//! ([`TransferError`]). It runs apart from the control connection, which
//! stays free to answer ABOR, NOOP and STAT meanwhile (see
//! `Session::transfer`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::warn;

use super::data::{self, DataError, Pending};
use super::format;
use crate::vfs::budget::ReadBudget;
use crate::vfs::reader::ReadAhead;
use crate::vfs::{DirLister, Entry, OpenFile, VfsError};

/// What a data connection carries.
pub(super) enum Payload {
    File {
        file: OpenFile,
        offset: u64,
        path: String,
    },
    Listing {
        source: Listing,
        style: Style,
        /// The listed folder is a day: its folders are sessions.
        sessions: bool,
    },
}

pub(super) enum Listing {
    One(Entry),
    Dir(DirLister),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    List,
    Nlst,
    Mlsd,
}

/// Why a transfer stopped early; each maps to one reply.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransferError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("storage failed during the transfer: {0}")]
    Source(String),
    #[error("the data connection broke: {0}")]
    Sink(std::io::Error),
}

/// One data connection's work, owning everything it needs so that the
/// control connection stays free to read ABOR.
pub(super) struct Job {
    pub(super) pending: Pending,
    pub(super) client: IpAddr,
    pub(super) acceptor: tokio_rustls::TlsAcceptor,
    pub(super) require_resumption: bool,
    pub(super) token: data::ResumeToken,
    pub(super) connect_within: Duration,
    /// Which data connections come through a trusted balancer.
    pub(super) defender: Arc<crate::auth::defender::Defender>,
    /// How long one write may wait for the client to take data.
    pub(super) stall: Duration,
    pub(super) sent: Arc<AtomicU64>,
    pub(super) perms: crate::vfs::Perms,
    /// The file's read-ahead cap, and the connection's budget it draws on.
    pub(super) read_ahead: usize,
    pub(super) budget: ReadBudget,
}

impl Job {
    pub(super) async fn run(self, payload: Payload) -> Result<u64, TransferError> {
        let connect = async {
            let sock = self
                .pending
                .accept(self.client, self.connect_within, &self.defender)
                .await?;
            data::secure(
                sock,
                self.acceptor.clone(),
                &self.token,
                self.require_resumption,
                self.connect_within,
            )
            .await
        };
        match payload {
            Payload::File { file, offset, .. } => {
                let want = file.entry.size.saturating_sub(offset);
                let mut reader =
                    ReadAhead::new(Arc::new(file), self.read_ahead, self.budget.clone());
                if want > 0 {
                    // Start the storage read while the client connects.
                    reader.start(offset);
                }
                let mut conn = connect.await?;
                let n = self.send_file(&mut conn, &mut reader, offset).await?;
                if n != want {
                    return Err(TransferError::Source(format!(
                        "storage returned {n} of {want} bytes"
                    )));
                }
                finish(&mut conn, self.stall).await?;
                Ok(n)
            }
            Payload::Listing {
                source,
                style,
                sessions,
            } => {
                let mut conn = connect.await?;
                let now = chrono::Utc::now();
                let fmt = |e: &Entry| match style {
                    Style::List => format::list_line(e, now),
                    Style::Nlst => format!("{}\r\n", e.name),
                    Style::Mlsd => format::mlsd_line(e, self.perms, sessions),
                };
                let mut n = 0u64;
                match source {
                    Listing::One(e) => {
                        n += write(&mut conn, fmt(&e).as_bytes(), self.stall).await?;
                    }
                    Listing::Dir(mut l) => loop {
                        match l.next_batch().await {
                            Ok(Some(batch)) => {
                                let text: String = batch.iter().map(&fmt).collect();
                                n += write(&mut conn, text.as_bytes(), self.stall).await?;
                                self.sent.store(n, Ordering::Relaxed);
                            }
                            Ok(None) => break,
                            Err(e) => return Err(TransferError::Source(format::vfs_reply(&e).1)),
                        }
                    },
                }
                finish(&mut conn, self.stall).await?;
                Ok(n)
            }
        }
    }

    /// Sends the file from `offset` to its end, as the reader delivers it.
    async fn send_file<W: AsyncWrite + Unpin>(
        &self,
        conn: &mut W,
        reader: &mut ReadAhead,
        offset: u64,
    ) -> Result<u64, TransferError> {
        let mut n = 0u64;
        loop {
            let chunks = match reader.read(offset + n, SEND_PIECE).await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(n),
                Err(e) => return Err(TransferError::Source(store_text(&e))),
            };
            for chunk in chunks {
                write(conn, &chunk, self.stall).await?;
                n += chunk.len() as u64;
                self.sent.store(n, Ordering::Relaxed);
            }
        }
    }
}

/// Bytes asked of the reader at a time.
const SEND_PIECE: u32 = 256 * 1024;

fn store_text(e: &VfsError) -> String {
    warn!(error = %e, "storage error during a transfer");
    format::vfs_reply(e).1
}

/// Writes `b`, failing when the client takes none of it for `stall` (a
/// client that stopped reading must not hold the transfer forever; one
/// reading slowly but steadily is never cut off).
async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    b: &[u8],
    stall: Duration,
) -> Result<u64, TransferError> {
    let mut sent = 0;
    while sent < b.len() {
        let n = bounded(stall, w.write(&b[sent..])).await?;
        if n == 0 {
            return Err(TransferError::Sink(std::io::ErrorKind::WriteZero.into()));
        }
        sent += n;
    }
    Ok(b.len() as u64)
}

/// Ends a data connection cleanly: TLS close_notify, then FIN.
async fn finish<W: AsyncWrite + Unpin>(w: &mut W, stall: Duration) -> Result<(), TransferError> {
    bounded(stall, w.flush()).await?;
    bounded(stall, w.shutdown()).await
}

async fn bounded<T>(
    stall: Duration,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, TransferError> {
    match tokio::time::timeout(stall, io).await {
        Ok(r) => r.map_err(TransferError::Sink),
        Err(_) => Err(TransferError::Sink(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the client took no data for {} s ([limits] ftp_stall_secs)",
                stall.as_secs()
            ),
        ))),
    }
}
