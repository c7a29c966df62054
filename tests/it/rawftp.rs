//! A small FTPS client for tests that need control over every byte: raw
//! command lines, clear-text before AUTH TLS, chosen source addresses, and
//! data connections opened by hand. TLS trusts the test certificate only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::harness::ftps_cert;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TLS client configuration trusting the test certificate, with session
/// resumption (rustls' default in-memory cache) shared by every connection
/// made from it.
pub fn connector() -> TlsConnector {
    static CFG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let cfg = CFG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&ftps_cert().0).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(cfg)
    });
    TlsConnector::from(cfg.clone())
}

/// Opens a TCP connection from `source` (any port) to `to`.
pub async fn tcp_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{source}:0").parse().unwrap())?;
    s.connect(to).await
}

pub struct RawFtp {
    pub io: Box<dyn Io>,
    buf: Vec<u8>,
}

/// A reply: its code and full text (every line).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl RawFtp {
    /// Connects from 127.0.0.1 to the explicit listener and reads the greeting.
    pub async fn connect(port: u16) -> (RawFtp, Reply) {
        Self::connect_from("127.0.0.1", port)
            .await
            .expect("connect")
    }

    pub async fn connect_from(source: &str, port: u16) -> std::io::Result<(RawFtp, Reply)> {
        let sock = tcp_from(source, ([127, 0, 0, 1], port).into()).await?;
        let mut c = RawFtp {
            io: Box::new(sock),
            buf: Vec::new(),
        };
        let greeting = c
            .reply()
            .await
            .ok_or_else(|| std::io::Error::other("closed before the greeting"))?;
        Ok((c, greeting))
    }

    /// Connects to the implicit listener (TLS first).
    pub async fn connect_implicit(port: u16) -> (RawFtp, Reply) {
        let sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let tls = connector()
            .connect(ServerName::try_from("localhost").unwrap(), sock)
            .await
            .expect("implicit TLS");
        let mut c = RawFtp {
            io: Box::new(tls),
            buf: Vec::new(),
        };
        let g = c.reply().await.expect("greeting");
        (c, g)
    }

    pub fn from_io(io: Box<dyn Io>) -> RawFtp {
        RawFtp {
            io,
            buf: Vec::new(),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// The next reply; `None` when the server closed the connection.
    pub async fn reply(&mut self) -> Option<Reply> {
        let mut lines: Vec<String> = Vec::new();
        loop {
            let line = self.line().await?;
            let done = match lines.first() {
                None => line.len() >= 4 && line.as_bytes()[3] == b' ',
                Some(first) => {
                    line.len() >= 4 && line[..3] == first[..3] && line.as_bytes()[3] == b' '
                }
            };
            lines.push(line);
            if done {
                break;
            }
        }
        let code = lines[0][..3].parse().ok()?;
        Some(Reply {
            code,
            text: lines.join("\n"),
        })
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&l).trim_end().to_string());
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), self.io.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command line and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes())
            .await
            .expect("send");
        self.reply().await.unwrap_or(Reply {
            code: 0,
            text: "connection closed".into(),
        })
    }

    /// AUTH TLS and the handshake.
    pub async fn auth_tls(self) -> RawFtp {
        let mut c = self;
        let r = c.cmd("AUTH TLS").await;
        assert_eq!(r.code, 234, "{r:?}");
        let tls = connector()
            .connect(ServerName::try_from("localhost").unwrap(), c.io)
            .await
            .expect("TLS after AUTH TLS");
        RawFtp {
            io: Box::new(tls),
            buf: Vec::new(),
        }
    }

    /// AUTH TLS, USER/PASS, PBSZ 0, PROT P.
    pub async fn login(port: u16, user: &str, password: &str) -> RawFtp {
        let (c, _) = Self::connect(port).await;
        let mut c = c.auth_tls().await;
        assert_eq!(c.cmd(&format!("USER {user}")).await.code, 331);
        let r = c.cmd(&format!("PASS {password}")).await;
        assert_eq!(r.code, 230, "{r:?}");
        assert_eq!(c.cmd("PBSZ 0").await.code, 200);
        assert_eq!(c.cmd("PROT P").await.code, 200);
        c
    }

    /// EPSV, returning the data port.
    pub async fn epsv(&mut self) -> u16 {
        let r = self.cmd("EPSV").await;
        assert_eq!(r.code, 229, "{r:?}");
        let inner = r.text.split("(|||").nth(1).unwrap();
        inner.trim_end_matches([')', '|']).parse().unwrap()
    }

    /// Runs `command` over a fresh passive data connection; returns the
    /// bytes received and the final reply.
    pub async fn data_cmd(&mut self, command: &str) -> (Vec<u8>, Reply) {
        let port = self.epsv().await;
        self.data_cmd_on(port, command).await
    }

    /// Like `data_cmd`, on a port an earlier EPSV opened.
    pub async fn data_cmd_on(&mut self, port: u16, command: &str) -> (Vec<u8>, Reply) {
        let r = self.cmd(command).await;
        if r.code != 150 {
            return (Vec::new(), r);
        }
        let data = open_data(port).await;
        let mut data = match data {
            Ok(d) => d,
            Err(_) => return (Vec::new(), self.reply().await.expect("reply")),
        };
        let mut out = Vec::new();
        let _ = data.read_to_end(&mut out).await;
        let end = self.reply().await.expect("final reply");
        (out, end)
    }
}

/// A TLS data connection to `port` from `source`, sending `prelude` (a
/// PROXY protocol header) first.
pub async fn open_data_via(
    port: u16,
    source: &str,
    prelude: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut sock = tcp_from(source, ([127, 0, 0, 1], port).into()).await?;
    sock.write_all(prelude).await?;
    connector()
        .connect(ServerName::try_from("localhost").unwrap(), sock)
        .await
}

/// A TLS data connection to `port`.
pub async fn open_data(port: u16) -> std::io::Result<TlsStream<TcpStream>> {
    let sock = TcpStream::connect(("127.0.0.1", port)).await?;
    connector()
        .connect(ServerName::try_from("localhost").unwrap(), sock)
        .await
}
