//! Users, their credentials and the shared brute-force defender.
//!
//! User names are unique across tenants, so a login names its tenant. Every
//! protocol authenticates through [`Users`]; a successful login yields the
//! user's [`Vfs`](crate::vfs::Vfs).

pub mod defender;

use std::collections::HashMap;
use std::sync::Arc;

use russh::keys::PublicKey;

use crate::config::Config;
use crate::password;
use crate::vfs::{Perms, Producer, Tenant, VPath, Vfs};

pub struct User {
    pub name: String,
    pub tenant: Arc<Tenant>,
    password: Option<String>,
    keys: Vec<PublicKey>,
    pub perms: Perms,
    pub scope: VPath,
    /// An API key's fingerprint (the start of its configured hash), which
    /// its signed links carry: a key given a new secret ends them.
    pub key_id: Option<String>,
}

impl User {
    /// A short tag of the user's password hash: a login session made with
    /// one password ends when the configuration gives the user another.
    pub fn password_tag(&self) -> Option<String> {
        self.password
            .as_ref()
            .map(|phc| hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(phc.as_bytes())[..8]))
    }

    pub fn vfs(&self, producers: Arc<[Arc<dyn Producer>]>) -> Vfs {
        Vfs::new(
            self.tenant.clone(),
            self.scope.clone(),
            self.perms,
            producers,
        )
    }
}

/// Why a login failed (for the operator's log; clients only learn that it did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
    #[error("the user has no password (keys only)")]
    NoPassword,
    #[error("key not authorized for this user")]
    KeyNotAuthorized,
    #[error("bad bearer token")]
    BadToken,
    #[error("unknown API key")]
    BadApiKey,
    #[error("altered or foreign signed link")]
    BadLink,
    /// The connection neither logged in nor left within the login grace
    /// time (a slow-loris holding a slot); counted like a bad password.
    #[error("no login within the login grace time")]
    LoginTimeout,
}

/// Every user of every tenant, by login name.
#[derive(Default)]
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
    /// The content API's keys: SHA-256 (hex) of the secret → the key as a
    /// user (`apikey:<name>`, the whole tenant, its scopes as permissions).
    api_keys: HashMap<String, Arc<User>>,
}

impl Users {
    /// Builds the user table; reads `password_file` and `authorized_keys_file`.
    pub fn from_config(
        cfg: &Config,
        tenants: &HashMap<String, Arc<Tenant>>,
    ) -> Result<Users, String> {
        let mut by_name = HashMap::new();
        let mut api_keys = HashMap::new();
        for t in &cfg.tenants {
            let Some(tenant) = tenants.get(t.id.get_ref()) else {
                // Not started (its keyset could not be read; logged then).
                tracing::warn!(tenant = %t.id.get_ref(), users = t.users.len(), "users of a tenant that is not started cannot log in");
                continue;
            };
            for u in &t.users {
                let name = u.name.get_ref().clone();
                let password = match (&u.password, &u.password_file) {
                    (Some(p), _) => Some(p.get_ref().clone()),
                    (None, Some(f)) => {
                        let phc = crate::secret::read_secret_file(f.get_ref())?;
                        password::check_phc(&phc).map_err(|e| {
                            format!("user {name:?}: {}: password {e}", f.get_ref().display())
                        })?;
                        Some(phc)
                    }
                    (None, None) => None,
                };
                let mut keys = Vec::new();
                for k in &u.authorized_keys {
                    keys.push(
                        PublicKey::from_openssh(k.get_ref())
                            .map_err(|e| format!("user {name:?}: authorized key: {e}"))?,
                    );
                }
                if let Some(f) = &u.authorized_keys_file {
                    let text = std::fs::read_to_string(f.get_ref()).map_err(|e| {
                        format!("user {name:?}: cannot read {}: {e}", f.get_ref().display())
                    })?;
                    for line in text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    {
                        keys.push(PublicKey::from_openssh(line).map_err(|e| {
                            format!("user {name:?}: {}: {e}", f.get_ref().display())
                        })?);
                    }
                }
                let scope = match &u.scope {
                    Some(s) => VPath::parse_absolute(s.get_ref())
                        .map_err(|e| format!("user {name:?}: scope: {e}"))?,
                    None => VPath::root(),
                };
                let user = User {
                    name: name.clone(),
                    tenant: tenant.clone(),
                    password,
                    keys,
                    perms: Perms::from_list(&u.permissions),
                    scope,
                    key_id: None,
                };
                by_name.insert(name, Arc::new(user));
            }
            for k in &t.api_keys {
                let Some(hash) = k.key.get_ref().strip_prefix("sha256:") else {
                    continue;
                };
                let has = |s: &str| k.scopes.iter().any(|x| x.get_ref() == s);
                let user = User {
                    name: format!("apikey:{}", k.name.get_ref()),
                    tenant: tenant.clone(),
                    password: None,
                    keys: Vec::new(),
                    perms: Perms {
                        list: has("calls:read"),
                        download: has("media:read"),
                        delete: has("calls:erase"),
                    },
                    scope: VPath::root(),
                    key_id: Some(hash.to_ascii_lowercase()[..16].to_string()),
                };
                api_keys.insert(hash.to_ascii_lowercase(), Arc::new(user));
            }
        }
        Ok(Users { by_name, api_keys })
    }

    /// Checks a password; takes as long for unknown users as for known
    /// ones. `Err` says why it failed, for the operator's log (never for
    /// the client).
    pub async fn check_password(&self, name: &str, password: &str) -> Result<Arc<User>, Denied> {
        let user = self.by_name.get(name).cloned();
        let phc = user
            .as_ref()
            .and_then(|u| u.password.clone())
            .unwrap_or_else(|| password::decoy().to_string());
        let password = password.to_string();
        let ok = password::verify_bounded(phc, password).await;
        match user {
            None => Err(Denied::UnknownUser),
            Some(u) if u.password.is_none() => Err(Denied::NoPassword),
            Some(u) if ok => Ok(u),
            Some(_) => Err(Denied::WrongPassword),
        }
    }

    /// The user named `name`, as the configuration has it now.
    pub fn named(&self, name: &str) -> Option<Arc<User>> {
        self.by_name.get(name).cloned()
    }

    /// The user, if `key` is one of its authorized keys.
    pub fn check_key(&self, name: &str, key: &PublicKey) -> Result<Arc<User>, Denied> {
        let user = self.by_name.get(name).ok_or(Denied::UnknownUser)?;
        user.keys
            .iter()
            .any(|k| k.key_data() == key.key_data())
            .then(|| user.clone())
            .ok_or(Denied::KeyNotAuthorized)
    }

    /// The API key whose secret is `secret`.
    pub fn check_api_key(&self, secret: &str) -> Result<Arc<User>, Denied> {
        let hash = crate::secret::token_hash(secret);
        self.api_keys.get(&hash).cloned().ok_or(Denied::BadApiKey)
    }

    /// The API key named `name` (`apikey:<name>`) of tenant `tenant`.
    pub fn api_key_named(&self, tenant: &str, name: &str) -> Option<Arc<User>> {
        self.api_keys
            .values()
            .find(|u| u.name == name && u.tenant.id == tenant)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
