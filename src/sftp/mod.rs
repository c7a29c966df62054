//! SFTP over SSH: recvault's accept loop, the russh handler (authentication,
//! channel policy) and the SFTP subsystem (`protocol`).
//!
//! The defender and the connection limits act in the accept loop, before a
//! socket reaches russh. After authentication a session may open a few
//! channels and start the `sftp` subsystem on them; shells, commands,
//! terminals and forwarding are refused.

mod exec;
mod protocol;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::auth::{Denied, User};
use crate::listener::{Admitted, Gate};
use crate::shared::{Conn, Shared};

/// Ciphers offered, best first: russh's AEAD and CTR defaults plus
/// aes128-gcm@openssh.com, which OpenSSH and rclone clients prefer.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// Builds russh's configuration from the limits: modern algorithms only
/// (russh's safe key exchange list, which includes strict-kex, and no CBC,
/// 3DES or SHA-1 MACs), password and public-key authentication, large
/// windows for fast downloads.
pub fn ssh_config(host_key: PrivateKey, limits: &crate::limits::Limits) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard(
            concat!("SSH-2.0-recvault_", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: methods(),
        auth_rejection_time: Duration::from_millis(limits.auth_reject_ms),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 65535,
        max_auth_attempts: limits.max_auth_attempts,
        inactivity_timeout: Some(Duration::from_secs(limits.idle_timeout_secs)),
        keepalive_interval: Some(Duration::from_secs(60)),
        keepalive_max: 3,
        nodelay: true,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Accepts SSH connections until `shutdown` turns true, then waits (up to
/// `drain`) for open connections to finish; those still open then are
/// told the server is shutting down (SSH disconnect) and closed.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: Arc<russh::server::Config>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let limits = shared.limits.clone();
    let gate = Gate::new("ssh", limits.max_connections);
    let preauth = crate::listener::PreAuth::new(
        limits.max_unauthenticated,
        limits.max_unauthenticated_per_source,
    );
    let closing = gate.closing();
    while let Some(Admitted {
        sock,
        peer,
        permit: conn_permit,
    }) = gate
        .accept(&listener, &shared.defender, &mut shutdown)
        .await
    {
        let pre_permit = match preauth.admit(peer) {
            Ok(p) => p,
            Err(why) => {
                warn!(%peer, "refused: {why}");
                continue;
            }
        };
        let authed = Arc::new(AtomicBool::new(false));
        let handler = SshHandler {
            shared: shared.clone(),
            peer,
            conn: None,
            authed: authed.clone(),
            pre_permit: Some(pre_permit),
            channels: HashMap::new(),
            opened: 0,
            refused_exec_logged: false,
        };
        let (config, shared) = (config.clone(), shared.clone());
        let mut closing = closing.clone();
        let grace = limits.login_grace();
        let span = tracing::info_span!("ssh", %peer);
        tokio::spawn(
            async move {
                // A client that never sends its SSH banner must not hold a slot either.
                let deadline = tokio::time::Instant::now() + grace;
                let running = match tokio::time::timeout_at(
                    deadline,
                    russh::server::run_stream(config, sock, handler),
                )
                .await
                {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        debug!(error = %e, "SSH handshake failed");
                        return;
                    }
                    Err(_) => {
                        info!("closing: no SSH banner within the login grace time");
                        shared.login_timed_out("sftp", peer);
                        return;
                    }
                };
                let handle = running.handle();
                let goodbye = running.handle();
                let closer = tokio::spawn(async move {
                    if closing.wait_for(|c| *c).await.is_ok() {
                        info!("closing: the server is shutting down");
                        let _ = goodbye
                            .disconnect(
                                russh::Disconnect::ByApplication,
                                "server shutting down; reconnect shortly".into(),
                                "en".into(),
                            )
                            .await;
                    }
                });
                let late = shared.clone();
                let watchdog = tokio::spawn(async move {
                    // One grace time from the connection, banner included.
                    tokio::time::sleep_until(deadline).await;
                    if !authed.load(Ordering::Acquire) {
                        info!("closing: not authenticated within the login grace time");
                        late.login_timed_out("sftp", peer);
                        let _ = handle
                            .disconnect(
                                russh::Disconnect::ByApplication,
                                "login grace time exceeded".into(),
                                "en".into(),
                            )
                            .await;
                    }
                });
                match running.await {
                    Ok(()) => debug!("connection closed"),
                    Err(e) => debug!(error = %e, "connection ended"),
                }
                watchdog.abort();
                closer.abort();
                drop(conn_permit);
            }
            .instrument(span),
        );
    }
    // New clients are refused at once, not left waiting in the backlog.
    drop(listener);
    // Drain: wait for connections to end, bounded.
    gate.finish(drain).await;
}

struct SshHandler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    conn: Option<Conn>,
    authed: Arc<AtomicBool>,
    pre_permit: Option<crate::listener::PreAuthPermit>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    opened: usize,
    /// Whether a refused exec was logged (once per connection).
    refused_exec_logged: bool,
}

/// Every method a client may try; a rejection offers them all again, so a
/// mistyped password can be retried on the same connection (up to
/// `[limits] max_auth_attempts`), as with OpenSSH.
fn methods() -> MethodSet {
    MethodSet::from(
        &[
            MethodKind::PublicKey,
            MethodKind::Password,
            MethodKind::KeyboardInteractive,
        ][..],
    )
}

fn reject() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(methods()),
        partial_success: false,
    }
}

impl SshHandler {
    fn failed(&self, user: &str, method: &str, why: Denied) {
        // russh runs this outside the connection's span: the lines name the peer.
        self.shared
            .login_failed("sftp", self.peer, user, method, why);
    }

    /// A password login (method `password` or `keyboard-interactive`).
    async fn password(&mut self, user: &str, password: &str, method: &str) -> Auth {
        if self.shared.defender.banned(self.peer.ip()).is_some() {
            return reject();
        }
        let users = self.shared.users();
        match users.check_password(user, password).await {
            Ok(u) => self.accepted(u, method),
            Err(why) => {
                self.failed(user, method, why);
                reject()
            }
        }
    }

    fn accepted(&mut self, user: Arc<User>, method: &str) -> Auth {
        self.conn = Some(self.shared.login_ok("sftp", self.peer, user, method));
        Auth::Accept
    }
}

impl russh::server::Handler for SshHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.password(user, password, "password").await)
    }

    /// One prompt, for the password: what WinSCP and PuTTY prefer.
    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut response) = response else {
            return Ok(Auth::Partial {
                name: "".into(),
                instructions: "".into(),
                prompts: vec![("Password: ".into(), false)].into(),
            });
        };
        let answer = response.next().unwrap_or_default();
        let password = String::from_utf8_lossy(&answer).into_owned();
        Ok(self.password(user, &password, "keyboard-interactive").await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Probing keys is not a failed login: clients offer every key they hold.
        if self
            .shared
            .users()
            .check_key(user, offer.public_key)
            .is_ok()
        {
            Ok(Auth::Accept)
        } else {
            Ok(reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.defender.banned(self.peer.ip()).is_some() {
            return Ok(reject());
        }
        match self.shared.users().check_key(user, key.public_key) {
            Ok(u) => Ok(self.accepted(u, "publickey")),
            Err(why) => {
                self.failed(user, "publickey", why);
                Ok(reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authed.store(true, Ordering::Release);
        self.pre_permit = None;
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.conn.is_none() || self.opened >= self.shared.limits.ssh_max_channels {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        self.opened += 1;
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(conn), true) = (self.conn.clone(), name == "sftp") else {
            warn!(subsystem = name, "refused subsystem");
            session.channel_failure(id)?;
            return Ok(());
        };
        let Some(channel) = self.channels.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let user = conn.user();
        let span = tracing::info_span!("sftp", user = %user.name, tenant = %user.tenant.id);
        let mut channel = channel;
        tokio::spawn(
            async move {
                let (wr, stderr) = (channel.make_writer(), channel.make_writer_ext(Some(1)));
                let served = protocol::serve(channel.make_reader(), wr, stderr, conn).await;
                // Scripts (scp, `ssh -s sftp`, paramiko) read the exit status:
                // 0 when the client ended the session, 1 when it broke it.
                // Sent on the channel, which is closed only after it.
                let code = match served {
                    Ok(()) => 0,
                    Err(why) => {
                        debug!(%why, "SFTP session ended on an error");
                        1
                    }
                };
                let _ = channel.exit_status(code).await;
                let _ = channel.close().await;
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(data).into_owned();
        if let (Some((algo, path)), Some(conn)) = (exec::parse(&line), &self.conn) {
            session.channel_success(id)?;
            let (vfs, handle) = (conn.vfs(), session.handle());
            tokio::spawn(async move {
                let out = exec::run(&vfs, algo, path.as_deref()).await;
                if !out.stdout.is_empty() {
                    let _ = handle.data(id, out.stdout.into_bytes()).await;
                }
                if !out.stderr.is_empty() {
                    let _ = handle.extended_data(id, 1, out.stderr.into_bytes()).await;
                }
                let _ = handle.eof(id).await;
                let _ = handle.exit_status_request(id, out.status).await;
                let _ = handle.close(id).await;
            });
            return Ok(());
        }
        // Sync tools probe for a shell (rclone: `echo ${ShellId}%ComSpec%`,
        // `df`) on every connection: normal, so not a warning.
        if !self.refused_exec_logged {
            self.refused_exec_logged = true;
            let command: String = line.chars().take(80).collect();
            debug!(command = %command.escape_debug(), "refused command execution (logged once per connection)");
        }
        session.channel_failure(id)?;
        let _ = session.extended_data(
            id,
            1,
            b"recvault: this server offers SFTP only; commands are not allowed\r\n".as_slice(),
        );
        let _ = session.close(id);
        Ok(())
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        warn!("refused shell");
        session.channel_failure(id)?;
        let _ = session.extended_data(
            id,
            1,
            b"recvault: this server offers SFTP only; no shell\r\n".as_slice(),
        );
        let _ = session.close(id);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        id: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        session.channel_failure(id)?;
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        warn!("refused remote port forwarding");
        Ok(false)
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&id);
        Ok(())
    }
}
