//! What every connection shares (users, the defender, limits, the audit
//! trail, the producers of derived entries) and the bookkeeping every
//! protocol does the same way: a login, a download and an erase each make
//! one audit event, one defender call and one log line, written here once.
//! `server` builds it; the protocol adapters use it and import nothing from
//! `server`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::audit::Audit;
use crate::auth::defender::Defender;
use crate::auth::{Denied, User, Users};
use crate::limits::Limits;
use crate::vfs::{Producer, Vfs};

/// What every connection shares.
pub struct Shared {
    users: RwLock<Arc<Users>>,
    pub defender: Arc<Defender>,
    pub limits: Limits,
    pub audit: Arc<Audit>,
    producers: Arc<[Arc<dyn Producer>]>,
    /// Read-ahead memory of every connection together.
    read_ahead: crate::vfs::budget::ServerBudget,
}

impl Shared {
    pub fn new(
        users: Users,
        defender: Arc<Defender>,
        limits: Limits,
        audit: Arc<Audit>,
        producers: Arc<[Arc<dyn Producer>]>,
    ) -> Self {
        Self {
            users: RwLock::new(Arc::new(users)),
            defender,
            read_ahead: crate::vfs::budget::ServerBudget::new(limits.read_ahead_total_bytes)
                .with_ranges(crate::vfs::budget::Ranges::of(&limits)),
            limits,
            audit,
            producers,
        }
    }

    /// The current user table (replaced whole on reload).
    pub fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the user table; connections already open keep their login.
    pub fn set_users(&self, users: Users) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
    }

    /// Records a successful login (the audit event, the defender's reset of
    /// the address's failures, the "login" log line) and returns the
    /// connection's bookkeeping.
    pub fn login_ok(
        self: &Arc<Self>,
        protocol: &'static str,
        peer: SocketAddr,
        user: Arc<User>,
        method: &str,
    ) -> Conn {
        self.audit.login(
            protocol,
            peer,
            &user.name,
            Some(&user.tenant.id),
            method,
            true,
        );
        self.defender.success(peer.ip());
        info!(user = %user.name, tenant = %user.tenant.id, method, "login");
        self.resumed(protocol, peer, user)
    }

    /// The bookkeeping of a request in a login session that began earlier
    /// (the web page's session cookie): its login was audited then.
    pub fn resumed(
        self: &Arc<Self>,
        protocol: &'static str,
        peer: SocketAddr,
        user: Arc<User>,
    ) -> Conn {
        Conn {
            read_budget: self
                .read_ahead
                .connection(self.limits.read_ahead_connection_bytes),
            shared: self.clone(),
            protocol,
            peer,
            user,
        }
    }

    /// [`login_timed_out`] for this server's audit trail and defender.
    pub fn login_timed_out(&self, protocol: &str, peer: SocketAddr) {
        login_timed_out(&self.audit, &self.defender, protocol, peer);
    }

    /// Records a failed login (audit event, defender, a WARN line naming
    /// protocol, peer, user, method and reason; never the secret) and
    /// returns the ban this failure earned the address, if any.
    pub fn login_failed(
        &self,
        protocol: &str,
        peer: SocketAddr,
        user: &str,
        method: &str,
        why: Denied,
    ) -> Option<Duration> {
        login_failed(
            &self.audit,
            &self.defender,
            protocol,
            peer,
            user,
            method,
            why,
        )
    }
}

/// A connection that neither logged in nor left within the login grace
/// time (a slow-loris holding a slot): a failed login for the audit trail
/// and the defender, with no user and no method.
pub fn login_timed_out(audit: &Audit, defender: &Defender, protocol: &str, peer: SocketAddr) {
    login_failed(
        audit,
        defender,
        protocol,
        peer,
        "",
        "none",
        crate::auth::Denied::LoginTimeout,
    );
}

/// The bookkeeping of a failed login, for listeners that have no [`Shared`]
/// (ingest): the audit event, the defender's count, a WARN line naming
/// protocol, peer, user, method and reason (never the secret). Returns the
/// ban this failure earned the address, if any.
pub fn login_failed(
    audit: &Audit,
    defender: &Defender,
    protocol: &str,
    peer: SocketAddr,
    user: &str,
    method: &str,
    why: Denied,
) -> Option<Duration> {
    audit.login(protocol, peer, user, None, method, false);
    // Attacker-chosen: bounded and escaped.
    let shown: String = user.chars().take(64).collect();
    warn!(protocol, %peer, user = %shown.escape_debug(), method, reason = %why, "login failed");
    let ban = defender.failure(peer.ip())?;
    warn!(
        protocol,
        %peer,
        secs = ban.as_secs(),
        "address banned after repeated failed logins"
    );
    Some(ban)
}

/// One logged-in connection: who, from where, over what; and its
/// bookkeeping, the same for every protocol.
#[derive(Clone)]
pub struct Conn {
    shared: Arc<Shared>,
    protocol: &'static str,
    peer: SocketAddr,
    user: Arc<User>,
    /// The read-ahead all of this connection's readers share.
    read_budget: crate::vfs::budget::ReadBudget,
}

impl Conn {
    pub fn user(&self) -> &User {
        &self.user
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The read-ahead budget of this connection (all its channels and files).
    pub fn read_budget(&self) -> crate::vfs::budget::ReadBudget {
        self.read_budget.clone()
    }

    /// The user's view of its tenant's tree.
    pub fn vfs(&self) -> Vfs {
        self.user.vfs(self.shared.producers.clone())
    }

    /// A download of `file` ended (complete or not): `bytes` were sent from
    /// `offset`. The audit line carries the file's recorded SHA-256.
    pub async fn downloaded(
        &self,
        path: &str,
        file: &crate::vfs::OpenFile,
        offset: u64,
        bytes: u64,
        complete: bool,
        took: Duration,
    ) {
        let d = crate::audit::Download {
            offset,
            bytes,
            size: file.entry.size,
            complete,
            sha256: file.recorded_sha256().await,
            took,
        };
        self.shared.audit.download(
            self.protocol,
            self.peer,
            &self.user.name,
            &self.user.tenant.id,
            path,
            &d,
        );
        debug!(%path, bytes, complete, "download ended");
    }

    /// A session folder was listed.
    pub fn listed(&self, path: &str) {
        self.shared.audit.listing(
            self.protocol,
            self.peer,
            &self.user.name,
            &self.user.tenant.id,
            path,
        );
    }

    /// Calls were searched with `query`.
    pub fn searched(&self, query: &str) {
        self.shared.audit.search(
            self.protocol,
            self.peer,
            &self.user.name,
            &self.user.tenant.id,
            query,
        );
    }

    /// A signed link to `path` was made, valid until `expires` (Unix
    /// seconds) for `uses` downloads.
    pub fn linked(&self, path: &str, expires: i64, uses: u32) {
        self.shared.audit.link(
            self.protocol,
            self.peer,
            &self.user.name,
            &self.user.tenant.id,
            path,
            expires,
            uses,
        );
        info!(%path, expires, uses, "signed link made");
    }

    /// A whole session was erased (`objects` removed); `path` is as the
    /// user sees it (inside its scope). The audit line and the event name
    /// the session by its path in the tenant's tree.
    pub fn erased(&self, path: &str, objects: usize) {
        let in_tenant = crate::path::VPath::parse_absolute(path)
            .map(|p| self.user.scope.join(&p).to_string())
            .unwrap_or_else(|_| path.to_string());
        self.shared.audit.erase(
            self.protocol,
            self.peer,
            &self.user.name,
            &self.user.tenant.id,
            &in_tenant,
            objects,
        );
        info!(%path, objects, "session erased");
    }
}
