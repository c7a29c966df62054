//! One FTPS control connection: TLS upgrade, login, navigation, listings and
//! downloads. Every path goes through the user's [`Vfs`]; storage errors are
//! mapped to reply codes in one place ([`format::vfs_reply`](super::format::vfs_reply)). What is sent over a
//! data connection, and how, is in [`super::transfer`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::data::{DataError, Pending};
use super::format;
use super::line::{self, LineError, LineReader};
use super::transfer::{Job, Listing, Payload, Style, TransferError};
use super::{Control, Ftps};
use crate::shared::Conn;
use crate::vfs::{Entry, Kind, VPath, Vfs, VfsError};

const FEATURES: &[&str] = &[
    "Features:",
    "AUTH TLS",
    "PBSZ",
    "PROT",
    "EPSV",
    "PASV",
    "MDTM",
    "SIZE",
    "REST STREAM",
    "MLST type*;size*;modify*;perm*;",
    "TVFS",
    "UTF8",
    "HASH SHA-256*",
    "End",
];

enum Flow {
    Go,
    Close,
}

type Reply = std::io::Result<Flow>;

/// Commands a client may send during a transfer (they are answered after
/// it); one sending more is not an FTP client and is disconnected.
const MAX_QUEUED: usize = 32;

pub(super) struct Session {
    ftps: Arc<Ftps>,
    ctl: Option<Control>,
    lines: LineReader,
    peer: SocketAddr,
    local: SocketAddr,
    pre_permit: Option<crate::listener::PreAuthPermit>,
    /// A stopping server: idle clients are told at once, a transfer still
    /// running when the drain time ran out is cut with a reply saying so.
    stop: crate::listener::Stop,
    started: Instant,
    user_name: Option<String>,
    login: Option<(Conn, Vfs)>,
    cwd: VPath,
    prot_private: bool,
    rest: u64,
    pending: Option<Pending>,
    epsv_all: bool,
    failures: usize,
    queued: VecDeque<String>,
    /// Marks the TLS sessions of this control connection (and its data
    /// connections), so a data connection must resume one of them.
    token: super::data::ResumeToken,
}

/// How a data transfer ended.
enum Ended {
    Done(Result<u64, TransferError>),
    /// The client sent ABOR.
    Aborted,
    /// The stopping server's drain time ran out.
    ServerStopping,
    /// The control connection broke or must close (too long a line, too
    /// many commands queued): the transfer ends with it.
    ControlLost,
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        futures::future::pending::<()>().await;
    }
}

impl Session {
    pub(super) fn new(
        ftps: Arc<Ftps>,
        ctl: Control,
        peer: SocketAddr,
        local: SocketAddr,
        pre_permit: crate::listener::PreAuthPermit,
        token: super::data::ResumeToken,
        stop: crate::listener::Stop,
    ) -> Self {
        let max_line = ftps.shared.limits.ftp_max_line;
        // Only implicit FTPS starts in TLS.
        let implicit = matches!(ctl, Control::Tls(_));
        Self {
            ftps,
            ctl: Some(ctl),
            lines: LineReader::new(max_line),
            peer,
            local,
            pre_permit: Some(pre_permit),
            stop,
            started: Instant::now(),
            user_name: None,
            login: None,
            cwd: VPath::root(),
            // Implicit FTPS clients expect protected data without asking.
            prot_private: implicit,
            rest: 0,
            pending: None,
            epsv_all: false,
            failures: 0,
            queued: VecDeque::new(),
            token,
        }
    }

    pub(super) async fn run(mut self) {
        let greeting = if self.tls() {
            "recvault FTPS ready"
        } else {
            "recvault FTPS ready: send AUTH TLS before logging in"
        };
        if self.send(220, greeting).await.is_err() {
            return;
        }
        loop {
            let line = match self.queued.pop_front() {
                Some(l) => l,
                None => match self.next_line().await {
                    Some(l) => l,
                    None => break,
                },
            };
            match self.command(&line).await {
                Ok(Flow::Go) => {}
                Ok(Flow::Close) => break,
                Err(e) => {
                    debug!(error = %e, "control connection failed");
                    break;
                }
            }
        }
        if let Some(mut c) = self.ctl.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.shutdown()).await;
        }
    }

    /// Whether the control connection is (now) TLS.
    fn tls(&self) -> bool {
        matches!(self.ctl, Some(Control::Tls(_)))
    }

    fn ctl(&mut self) -> std::io::Result<&mut Control> {
        self.ctl
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }

    /// Sends a reply; a client that takes none of it for `ftp_stall_secs`
    /// (it stopped reading its control connection) loses the connection.
    async fn write(&mut self, text: String) -> std::io::Result<()> {
        let stall = Duration::from_secs(self.ftps.shared.limits.ftp_stall_secs);
        let c = self.ctl()?;
        let sent = async {
            c.write_all(text.as_bytes()).await?;
            c.flush().await
        };
        match tokio::time::timeout(stall, sent).await {
            Ok(r) => r,
            Err(_) => {
                info!(
                    "closing: the client read no reply for {} s",
                    stall.as_secs()
                );
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client reads no replies",
                ))
            }
        }
    }

    async fn send(&mut self, code: u16, text: &str) -> std::io::Result<()> {
        self.write(line::reply(code, &[text])).await
    }

    async fn go(&mut self, code: u16, text: &str) -> Reply {
        self.send(code, text).await.map(|_| Flow::Go)
    }

    async fn close(&mut self, code: u16, text: &str) -> Reply {
        self.send(code, text).await.map(|_| Flow::Close)
    }

    /// The last reply to a command line over `max` bytes; the caller closes.
    async fn too_long(&mut self, max: usize) {
        let text = format!("Command line longer than {max} bytes: closing the connection");
        let _ = self.send(500, &text).await;
    }

    /// The next command line, or `None` when the connection is to end.
    async fn next_line(&mut self) -> Option<String> {
        let limits = &self.ftps.shared.limits;
        let wait = if self.login.is_some() {
            Duration::from_secs(limits.idle_timeout_secs)
        } else {
            limits.login_grace().saturating_sub(self.started.elapsed())
        };
        let ctl = self.ctl.as_mut()?;
        let got = tokio::select! {
            r = tokio::time::timeout(wait, self.lines.next(ctl)) => r,
            _ = stopped(&mut self.stop.draining) => {
                let _ = self.send(421, "Server shutting down; reconnect shortly").await;
                return None;
            }
        };
        match got {
            Err(_) if self.login.is_some() => {
                info!("closing: idle timeout");
                let _ = self.send(421, "Idle timeout: closing the connection").await;
                None
            }
            Err(_) => {
                info!("closing: not logged in within the login grace time");
                self.ftps.shared.login_timed_out("ftps", self.peer);
                let _ = self.send(421, "Login grace time exceeded: closing").await;
                None
            }
            Ok(Err(LineError::TooLong(max))) => {
                warn!(max, "closing: command line too long");
                self.too_long(max).await;
                None
            }
            Ok(Err(_)) => None,
            Ok(Ok(l)) => Some(l),
        }
    }

    async fn command(&mut self, line: &str) -> Reply {
        let (verb, arg) = line::split(line);
        if verb == "PASS" {
            debug!("PASS ****");
        } else {
            debug!(command = %line::one_line(line), "command");
        }
        match verb.as_str() {
            "AUTH" => return self.auth(arg).await,
            "PBSZ" => return self.pbsz(arg).await,
            "PROT" => return self.prot(arg).await,
            "USER" => return self.user(arg).await,
            "PASS" => return self.pass(arg).await,
            "QUIT" => return self.close(221, "Goodbye").await,
            "NOOP" => return self.go(200, "OK").await,
            "SYST" => return self.go(215, "UNIX Type: L8").await,
            "FEAT" => {
                let text = line::reply(211, FEATURES);
                return self.write(text).await.map(|_| Flow::Go);
            }
            "OPTS" => return self.opts(arg).await,
            "CLNT" | "ACCT" => return self.go(202, "Not needed").await,
            "HELP" => {
                return self
                    .go(
                        214,
                        "See RFC 959, 2228, 2428, 3659 and 4217; writes are refused",
                    )
                    .await
            }
            _ => {}
        }
        let Some((_, vfs)) = self.login.clone() else {
            return self
                .go(530, "Log in first (AUTH TLS, then USER and PASS)")
                .await;
        };
        match verb.as_str() {
            "PWD" | "XPWD" => {
                let text = format!("{} is the current folder", line::quote_path(&self.cwd.to_string()));
                self.go(257, &text).await
            }
            "CWD" | "XCWD" => self.cwd(&vfs, arg).await,
            "CDUP" | "XCUP" => self.cwd(&vfs, "..").await,
            "TYPE" => match arg.to_ascii_uppercase().as_str() {
                "I" | "L 8" | "A" | "A N" => self.go(200, "Type set (files are always sent as stored)").await,
                _ => self.go(504, "Only TYPE I and A are supported").await,
            },
            "MODE" => match arg.to_ascii_uppercase().as_str() {
                "S" => self.go(200, "Mode S").await,
                _ => self.go(504, "Only MODE S is supported").await,
            },
            "STRU" => match arg.to_ascii_uppercase().as_str() {
                "F" => self.go(200, "Structure F").await,
                _ => self.go(504, "Only STRU F is supported").await,
            },
            "PASV" => self.pasv().await,
            "EPSV" => self.epsv(arg).await,
            "PORT" | "EPRT" | "LPRT" | "LPSV" => {
                warn!(command = %verb, arg = %line::one_line(arg), "refused active-mode request");
                self.go(502, "Active mode is disabled on this server: use PASV or EPSV")
                    .await
            }
            "REST" => match arg.parse::<u64>() {
                Ok(n) => {
                    self.rest = n;
                    self.go(350, &format!("Restarting at {n}; send RETR")).await
                }
                Err(_) => self.go(501, "REST needs a byte offset").await,
            },
            "SIZE" => match self.stat(&vfs, arg).await {
                Ok(e) if e.kind == Kind::File => self.go(213, &e.size.to_string()).await,
                Ok(_) => self.go(550, "Not a plain file").await,
                Err(e) => self.fail(&e).await,
            },
            "MDTM" => match self.stat(&vfs, arg).await {
                Ok(e) => self.go(213, &format::ftp_time(e.mtime)).await,
                Err(e) => self.fail(&e).await,
            },
            "MLST" => self.mlst(&vfs, arg).await,
            "STAT" if arg.is_empty() => self.status().await,
            "STAT" => self.stat_listing(&vfs, arg).await,
            "HASH" | "XSHA256" => self.hash(&vfs, &verb, arg).await,
            "LIST" | "NLST" | "MLSD" => self.listing(&vfs, &verb, arg).await,
            "RETR" => self.retr(&vfs, arg).await,
            "ABOR" => self.go(226, "No transfer to abort").await,
            "RMD" | "XRMD" => self.erase(&vfs, arg).await,
            "DELE" if vfs.perms().delete => {
                self.go(550, "A session's files cannot be deleted one by one: remove the session folder (RMD) to erase the whole session").await
            }
            "ALLO" => self.go(202, "ALLO not needed").await,
            "DELE" | "STOR" | "STOU" | "APPE" | "MKD" | "XMKD" | "RNFR" | "RNTO" | "MFMT"
            | "MFCT" | "MFF" | "SITE" => self.fail(&VfsError::ReadOnly).await,
            _ => {
                let shown: String = verb.chars().take(16).collect();
                self.go(502, &format!("Command not implemented: {shown}"))
                    .await
            }
        }
    }

    // ---------------------------------------------------------------- TLS --

    async fn auth(&mut self, arg: &str) -> Reply {
        let kind = arg.to_ascii_uppercase();
        if !matches!(kind.as_str(), "TLS" | "TLS-C" | "SSL" | "TLS-P") {
            return self.go(504, "Only AUTH TLS is supported").await;
        }
        if self.tls() {
            return self.go(503, "Already using TLS").await;
        }
        self.send(234, "AUTH TLS successful: starting TLS").await?;
        // Nothing the client sent in clear text after AUTH may be obeyed.
        let dropped = self.lines.discard_buffered();
        if dropped > 0 {
            warn!(
                bytes = dropped,
                "discarded clear-text input sent after AUTH TLS"
            );
        }
        let Some(Control::Plain(sock)) = self.ctl.take() else {
            return Ok(Flow::Close);
        };
        let wait = self
            .ftps
            .shared
            .limits
            .login_grace()
            .saturating_sub(self.started.elapsed());
        let accept = self.token.accept(&self.ftps.tls.acceptor(), sock);
        match tokio::time::timeout(wait, accept).await {
            Ok(Ok(s)) => {
                self.ctl = Some(Control::Tls(Box::new(s)));
                // RFC 4217: AUTH SSL / TLS-P imply protected data.
                self.prot_private = matches!(kind.as_str(), "SSL" | "TLS-P");
                Ok(Flow::Go)
            }
            Ok(Err(e)) => {
                debug!(error = %e, "TLS handshake after AUTH TLS failed");
                Ok(Flow::Close)
            }
            Err(_) => {
                info!("closing: no TLS handshake after AUTH TLS within the login grace time");
                self.ftps.shared.login_timed_out("ftps", self.peer);
                Ok(Flow::Close)
            }
        }
    }

    async fn pbsz(&mut self, arg: &str) -> Reply {
        if !self.tls() {
            return self.go(503, "Send AUTH TLS first").await;
        }
        if arg.parse::<u64>().is_err() {
            return self.go(501, "PBSZ needs a number (0)").await;
        }
        self.go(200, "PBSZ=0").await
    }

    async fn prot(&mut self, arg: &str) -> Reply {
        if !self.tls() {
            return self.go(503, "Send AUTH TLS first").await;
        }
        match arg.to_ascii_uppercase().as_str() {
            "P" => {
                self.prot_private = true;
                self.go(200, "Data connections will be encrypted").await
            }
            "C" => {
                self.go(
                    536,
                    "Clear-text data connections are not allowed: use PROT P",
                )
                .await
            }
            "S" | "E" => self.go(536, "Only PROT P is supported").await,
            _ => self.go(504, "Unknown protection level: use PROT P").await,
        }
    }

    async fn opts(&mut self, arg: &str) -> Reply {
        let (what, _) = line::split(arg);
        match what.as_str() {
            "UTF8" | "UTF-8" => self.go(200, "UTF8 is always on").await,
            "MLST" => self.go(200, "MLST OPTS type;size;modify;perm;").await,
            "HASH" => self.go(200, "SHA-256").await,
            _ => self.go(501, "Option not supported").await,
        }
    }

    // -------------------------------------------------------------- login --

    async fn user(&mut self, arg: &str) -> Reply {
        if !self.tls() {
            return self
                .go(530, "This server requires TLS: send AUTH TLS before USER")
                .await;
        }
        if self.login.is_some() {
            return self.go(503, "Already logged in").await;
        }
        if arg.is_empty() {
            return self.go(501, "USER needs a name").await;
        }
        self.user_name = Some(arg.chars().take(256).collect());
        self.go(331, "Password required").await
    }

    async fn pass(&mut self, arg: &str) -> Reply {
        if !self.tls() {
            // The password is not even looked at: it travelled in clear text.
            return self
                .go(
                    530,
                    "This server requires TLS: send AUTH TLS before logging in",
                )
                .await;
        }
        if self.login.is_some() {
            return self.go(503, "Already logged in").await;
        }
        let Some(name) = self.user_name.take() else {
            return self.go(503, "Send USER first").await;
        };
        let shared = self.ftps.shared.clone();
        if shared.defender.banned(self.peer.ip()).is_some() {
            return self
                .close(
                    421,
                    "Too many failed logins from your address: try again later",
                )
                .await;
        }
        match shared.users().check_password(&name, arg).await {
            Ok(user) => {
                let conn = shared.login_ok("ftps", self.peer, user, "password");
                let vfs = conn.vfs();
                self.login = Some((conn, vfs));
                self.cwd = VPath::root();
                self.pre_permit = None;
                self.go(230, "Logged in: recordings are read-only").await
            }
            Err(why) => {
                tokio::time::sleep(Duration::from_millis(shared.limits.auth_reject_ms)).await;
                let banned = shared.login_failed("ftps", self.peer, &name, "password", why);
                self.failures += 1;
                if banned.is_some() {
                    return self
                        .close(
                            421,
                            "Too many failed logins from your address: try again later",
                        )
                        .await;
                }
                if self.failures >= shared.limits.max_auth_attempts {
                    return self
                        .close(421, "Too many failed logins on this connection: closing")
                        .await;
                }
                self.go(530, "Login incorrect").await
            }
        }
    }

    // ---------------------------------------------------------- the tree --

    fn path(&self, vfs: &Vfs, arg: &str) -> Result<VPath, VfsError> {
        vfs.resolve(&self.cwd, if arg.is_empty() { "." } else { arg })
    }

    async fn stat(&self, vfs: &Vfs, arg: &str) -> Result<Entry, VfsError> {
        let p = self.path(vfs, arg)?;
        vfs.stat(&p).await
    }

    async fn fail(&mut self, e: &VfsError) -> Reply {
        let (code, text) = format::vfs_reply(e);
        self.go(code, &text).await
    }

    async fn cwd(&mut self, vfs: &Vfs, arg: &str) -> Reply {
        let p = match self.path(vfs, arg) {
            Ok(p) => p,
            Err(e) => return self.fail(&e).await,
        };
        match vfs.stat(&p).await {
            Ok(e) if e.kind == Kind::Dir => {
                self.cwd = p;
                let text = format!("Folder changed to {}", self.cwd);
                self.go(250, &text).await
            }
            Ok(_) => self.go(550, &format!("Not a folder: {p}")).await,
            Err(e) => self.fail(&e).await,
        }
    }

    async fn mlst(&mut self, vfs: &Vfs, arg: &str) -> Reply {
        let p = match self.path(vfs, arg) {
            Ok(p) => p,
            Err(e) => return self.fail(&e).await,
        };
        match vfs.stat(&p).await {
            Ok(e) => {
                let perms = vfs.perms();
                let facts = format!("{}{p}", format::facts(&e, perms, vfs.is_session(&p)));
                let text = line::reply(250, &[&format!("Listing {p}"), &facts, "End"]);
                self.write(text).await.map(|_| Flow::Go)
            }
            Err(e) => self.fail(&e).await,
        }
    }

    async fn status(&mut self) -> Reply {
        let who = self
            .login
            .as_ref()
            .map(|(c, _)| {
                format!(
                    "Logged in as {} (tenant {})",
                    c.user().name,
                    c.user().tenant.id
                )
            })
            .unwrap_or_default();
        let prot = if self.prot_private {
            "Data connections: TLS (PROT P)"
        } else {
            "Data connections: not yet protected (send PROT P)"
        };
        let text = line::reply(211, &["recvault FTPS status", &who, prot, "End"]);
        self.write(text).await.map(|_| Flow::Go)
    }

    /// `STAT <path>`: the listing over the control connection, at most
    /// `[limits] ftp_stat_max_entries` lines (a folder of any size costs
    /// bounded memory; LIST and MLSD stream the whole of it).
    async fn stat_listing(&mut self, vfs: &Vfs, arg: &str) -> Reply {
        let arg = format::strip_list_options(arg);
        let max = self.ftps.shared.limits.ftp_stat_max_entries;
        let mut more = false;
        let entries = match self.entries(vfs, arg).await {
            Ok((_, Listing::One(e))) => vec![e],
            Ok((_, Listing::Dir(mut l))) => {
                let mut v = Vec::new();
                loop {
                    match l.next_batch().await {
                        Ok(Some(batch)) => v.extend(batch),
                        Ok(None) => break,
                        Err(e) => return self.fail(&e).await,
                    }
                    if v.len() > max {
                        v.truncate(max);
                        more = true;
                        break;
                    }
                }
                v
            }
            Err(e) => return self.fail(&e).await,
        };
        let now = chrono::Utc::now();
        let mut lines: Vec<String> = vec![format!("Status of {arg}")];
        lines.extend(entries.iter().map(|e| crate::vfs::ls_line(e, now)));
        lines.push(if more {
            format!("End of the first {max} entries: use LIST or MLSD for the whole folder")
        } else {
            "End".into()
        });
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let text = line::reply(213, &refs);
        self.write(text).await.map(|_| Flow::Go)
    }

    async fn hash(&mut self, vfs: &Vfs, verb: &str, arg: &str) -> Reply {
        let p = match self.path(vfs, arg) {
            Ok(p) => p,
            Err(e) => return self.fail(&e).await,
        };
        let entry = match vfs.stat(&p).await {
            Ok(e) => e,
            Err(e) => return self.fail(&e).await,
        };
        match vfs.sha256(&p).await {
            Ok(Some(h)) if verb == "HASH" => {
                let end = entry.size.saturating_sub(1);
                self.go(213, &format!("SHA-256 0-{end} {h} {p}")).await
            }
            Ok(Some(h)) => self.go(213, &h).await,
            Ok(None) => {
                self.go(550, "No stored hash for this file: download it to check it")
                    .await
            }
            Err(e) => self.fail(&e).await,
        }
    }

    async fn erase(&mut self, vfs: &Vfs, arg: &str) -> Reply {
        let p = match self.path(vfs, arg) {
            Ok(p) => p,
            Err(e) => return self.fail(&e).await,
        };
        match vfs.erase(&p).await {
            Ok(n) => {
                if let Some((conn, _)) = &self.login {
                    conn.erased(&p.to_string(), n);
                }
                self.go(250, &format!("Session erased: {p} ({n} objects)"))
                    .await
            }
            Err(e) => self.fail(&e).await,
        }
    }

    /// A folder's entries, or one entry when `arg` names a file.
    async fn entries(&self, vfs: &Vfs, arg: &str) -> Result<(VPath, Listing), VfsError> {
        let p = self.path(vfs, arg)?;
        match vfs.list(&p).await {
            Ok(l) => Ok((p, Listing::Dir(l))),
            Err(VfsError::NotADirectory(_)) => {
                let e = vfs.stat(&p).await?;
                Ok((p, Listing::One(e)))
            }
            Err(e) => Err(e),
        }
    }

    // ------------------------------------------------------- data channel --

    async fn pasv(&mut self) -> Reply {
        if self.epsv_all {
            return self.go(503, "EPSV ALL was sent: use EPSV").await;
        }
        let announce = match (self.ftps.passive_ip, self.local.ip().to_canonical()) {
            (Some(ip), _) => ip,
            (None, IpAddr::V4(ip)) => ip,
            (None, IpAddr::V6(_)) => {
                return self.go(425, "PASV works over IPv4 only: use EPSV").await
            }
        };
        self.open_passive(227, |port| format::pasv_text(announce, port))
            .await
    }

    async fn epsv(&mut self, arg: &str) -> Reply {
        match arg.to_ascii_uppercase().as_str() {
            "ALL" => {
                self.epsv_all = true;
                return self.go(200, "EPSV ALL: only EPSV from now on").await;
            }
            "" | "1" | "2" => {}
            _ => {
                return self
                    .go(522, "Network protocol not supported, use (1,2)")
                    .await
            }
        }
        self.open_passive(229, format::epsv_text).await
    }

    /// Opens a passive port (dropping an unused earlier one) and replies
    /// `code` with `text(port)`.
    async fn open_passive(&mut self, code: u16, text: impl Fn(u16) -> String) -> Reply {
        self.pending = None;
        // Passive ports listen on the address the client reached us at.
        match self.ftps.passive.open(self.local.ip()).await {
            Ok(p) => {
                let text = text(p.port);
                self.pending = Some(p);
                self.go(code, &text).await
            }
            Err(e) => {
                warn!(error = %e, "no passive port");
                self.go(425, &format!("Cannot open a data port: {e}")).await
            }
        }
    }

    /// Checks what every transfer needs before anything is opened and
    /// takes the passive port for it; `None` once refused (the port, if
    /// any, stays open when only PROT P is missing). Dropping the port
    /// returned closes it.
    async fn ready_for_data(&mut self) -> std::io::Result<Option<Pending>> {
        if !self.prot_private {
            self.send(
                521,
                "Data connections must be encrypted: send PBSZ 0 and PROT P first",
            )
            .await?;
            return Ok(None);
        }
        let pending = self.pending.take();
        if pending.is_none() {
            self.send(425, "Use PASV or EPSV first").await?;
        }
        Ok(pending)
    }

    async fn listing(&mut self, vfs: &Vfs, verb: &str, arg: &str) -> Reply {
        self.rest = 0;
        let Some(pending) = self.ready_for_data().await? else {
            return Ok(Flow::Go);
        };
        let style = match verb {
            "LIST" => Style::List,
            "NLST" => Style::Nlst,
            _ => Style::Mlsd,
        };
        let arg = if style == Style::Mlsd {
            arg
        } else {
            format::strip_list_options(arg)
        };
        let (p, source) = match self.entries(vfs, arg).await {
            Ok((_, Listing::One(_))) if style == Style::Mlsd => {
                drop(pending);
                return self
                    .go(501, "MLSD needs a folder: use MLST for a file")
                    .await;
            }
            Ok(x) => x,
            Err(e) => {
                drop(pending);
                return self.fail(&e).await;
            }
        };
        let sessions = vfs.is_day(&p);
        if vfs.is_session(&p) {
            if let Some((conn, _)) = &self.login {
                conn.listed(&p.to_string());
            }
        }
        self.transfer(
            vfs,
            pending,
            Payload::Listing {
                source,
                style,
                sessions,
            },
        )
        .await
    }

    async fn retr(&mut self, vfs: &Vfs, arg: &str) -> Reply {
        let offset = std::mem::take(&mut self.rest);
        let Some(pending) = self.ready_for_data().await? else {
            return Ok(Flow::Go);
        };
        let opened = match self.path(vfs, arg) {
            Ok(p) => vfs.open(&p).await.map(|f| (p, f)),
            Err(e) => Err(e),
        };
        let (p, file) = match opened {
            Ok(x) => x,
            Err(e) => {
                drop(pending);
                return self.fail(&e).await;
            }
        };
        if offset > file.entry.size {
            drop(pending);
            let text = format!(
                "REST {offset} is past the end of the file ({} bytes)",
                file.entry.size
            );
            return self.go(554, &text).await;
        }
        let path = p.to_string();
        self.transfer(vfs, pending, Payload::File { file, offset, path })
            .await
    }

    /// Runs one data transfer while still answering ABOR, NOOP and STAT on
    /// the control connection; other commands wait until it ends.
    async fn transfer(&mut self, vfs: &Vfs, pending: Pending, payload: Payload) -> Reply {
        let opening = match &payload {
            Payload::File { file, offset, path } => format!(
                "Opening data connection for {path} ({} bytes{})",
                file.entry.size,
                if *offset > 0 {
                    format!(", from {offset}")
                } else {
                    String::new()
                }
            ),
            Payload::Listing { .. } => "Opening data connection for the listing".to_string(),
        };
        self.send(150, &opening).await?;
        let limits = &self.ftps.shared.limits;
        let job = Job {
            pending,
            client: self.peer.ip(),
            acceptor: self.ftps.tls.acceptor(),
            require_resumption: self.ftps.require_resumption,
            token: self.token.clone(),
            connect_within: Duration::from_secs(limits.ftp_data_connect_secs),
            defender: self.ftps.shared.defender.clone(),
            stall: Duration::from_secs(limits.ftp_stall_secs),
            sent: Arc::new(AtomicU64::new(0)),
            perms: vfs.perms(),
            read_ahead: limits.read_ahead_bytes,
            budget: match &self.login {
                Some((conn, _)) => conn.read_budget(),
                None => crate::vfs::budget::ReadBudget::standalone(limits.read_ahead_bytes),
            },
        };
        let sent = job.sent.clone();
        let audit_file = match &payload {
            Payload::File { file, path, offset } => {
                Some((path.clone(), file.clone(), *offset, Instant::now()))
            }
            Payload::Listing { .. } => None,
        };
        let _flight = audit_file
            .is_some()
            .then(|| crate::metrics::InFlight::start("ftps"));
        let mut work = Box::pin(job.run(payload));
        let mut closing = self.stop.closing.clone();
        let outcome = loop {
            let ctl = self.ctl.as_mut().ok_or(std::io::ErrorKind::NotConnected)?;
            tokio::select! {
                r = &mut work => break Ended::Done(r),
                _ = stopped(&mut closing) => break Ended::ServerStopping,
                l = self.lines.next(ctl) => match l {
                    Ok(l) => {
                        let (v, _) = line::split(&l);
                        match v.as_str() {
                            "ABOR" => break Ended::Aborted,
                            "NOOP" => {
                                if self.send(200, "OK: transfer in progress").await.is_err() {
                                    break Ended::ControlLost;
                                }
                            }
                            "STAT" => {
                                let text = format!("Transfer in progress: {} bytes sent", sent.load(Ordering::Relaxed));
                                if self.send(213, &text).await.is_err() {
                                    break Ended::ControlLost;
                                }
                            }
                            _ if self.queued.len() >= MAX_QUEUED => {
                                warn!(queued = MAX_QUEUED, "closing: too many commands sent during a transfer");
                                let text = format!("More than {MAX_QUEUED} commands sent during a transfer: closing the connection");
                                let _ = self.send(421, &text).await;
                                break Ended::ControlLost;
                            }
                            _ => self.queued.push_back(l),
                        }
                    }
                    Err(LineError::TooLong(max)) => {
                        self.too_long(max).await;
                        break Ended::ControlLost;
                    }
                    Err(_) => break Ended::ControlLost,
                }
            }
        };
        // The data connection closes here, before the reply about it.
        drop(work);
        if let Some((path, file, offset, began)) = audit_file {
            if let Some((conn, _)) = &self.login {
                let bytes = sent.load(Ordering::Relaxed);
                let complete = offset + bytes == file.entry.size;
                conn.downloaded(&path, &file, offset, bytes, complete, began.elapsed())
                    .await;
            }
        }
        match outcome {
            // The download was audited above with the bytes it got.
            Ended::ControlLost => Ok(Flow::Close),
            Ended::Aborted => {
                self.send(426, "Transfer aborted").await?;
                self.go(226, "ABOR successful").await
            }
            Ended::ServerStopping => {
                let n = sent.load(Ordering::Relaxed);
                info!(bytes = n, "transfer cut: the server is shutting down");
                let text = format!(
                    "Server shutting down: transfer aborted after {n} bytes; reconnect and resume with REST {n}"
                );
                self.send(426, &text).await?;
                let _ = self
                    .send(421, "Server shutting down; reconnect shortly")
                    .await;
                Ok(Flow::Close)
            }
            Ended::Done(Ok(n)) => {
                self.go(226, &format!("Transfer complete ({n} bytes)"))
                    .await
            }
            Ended::Done(Err(e)) => {
                let (code, text) = match &e {
                    TransferError::Data(DataError::Timeout(_))
                    | TransferError::Data(DataError::Io(_)) => {
                        (425, format!("Cannot open data connection: {e}"))
                    }
                    TransferError::Data(DataError::Tls(_))
                    | TransferError::Data(DataError::NotResumed) => (522, e.to_string()),
                    TransferError::Source(_) => (
                        451,
                        format!("{e}; resume with REST {}", sent.load(Ordering::Relaxed)),
                    ),
                    TransferError::Sink(_) => (426, e.to_string()),
                };
                info!(code, error = %e, "transfer failed");
                self.go(code, &text).await
            }
        }
    }
}
