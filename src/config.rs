//! TOML configuration: parsed once into typed structs, validated once.
//!
//! Unknown keys are refused and every error names the line it comes from
//! (parse errors through `toml`'s spans, semantic errors through `Spanned`
//! fields). Secrets may be given inline or through `*_file` paths.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::limits::Limits;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The default storage profile (the operator's; the audit anchors live there).
    pub storage: StorageConfig,
    /// More storage profiles (`[[storages]]`, each with a `name`) a tenant
    /// picks with `storage = "<name>"`: another region, another account.
    #[serde(default)]
    pub storages: Vec<StorageConfig>,
    #[serde(default)]
    pub sftp: SftpConfig,
    /// FTPS (explicit, and implicit when `implicit_listen` is set).
    #[serde(default)]
    pub ftps: Option<FtpsConfig>,
    /// The HTTP intake of RAW sessions; omitted, no ingest listener runs.
    #[serde(default)]
    pub ingest: Option<IngestConfig>,
    /// Metrics, health and readiness (`/metrics`, `/healthz`, `/readyz`);
    /// omitted, no admin listener runs.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The content API (`/v1`); off unless configured.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub jobs: JobsConfig,
    #[serde(default)]
    pub defender: DefenderConfig,
    /// What every listener shares (the load balancers in front).
    #[serde(default)]
    pub listeners: ListenersConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

/// `[listeners]`: settings of every listener (SFTP, FTPS and its data
/// ports, ingest, the API).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersConfig {
    /// Load balancers (networks or addresses) whose connections start with
    /// a PROXY protocol v2 header naming the client; required from them,
    /// never read from anyone else ([`crate::proxy`]).
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
}

/// The admin listener ([`crate::admin`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens; plain HTTP with no authentication, so loopback
    /// unless told (default `127.0.0.1:9464`).
    #[serde(default = "default_admin_listen")]
    pub listen: Spanned<String>,
}

fn default_admin_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9464".to_string())
}

/// The content API listener ([`crate::api`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where it listens (HTTP/1.1; HTTPS with `tls_certificate`).
    pub listen: Spanned<String>,
    /// PEM certificate chain; with `tls_private_key`, the listener speaks HTTPS.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key (mode 0600).
    pub tls_private_key: Option<PathBuf>,
    /// The secret that signs download links (32 random bytes, hex; a
    /// secret file, mode 0600). Created at the first start when missing.
    /// Every node behind one balancer needs the same file.
    pub link_key_file: PathBuf,
    /// The address clients reach the API at (`https://host:port`), the base
    /// of signed links; default: the `Host` of the request that made the link.
    pub public_url: Option<Spanned<String>>,
    /// This node's durable outbox of events (webhook deliveries, the event
    /// log's writes); must survive restarts.
    #[serde(default = "default_outbox_dir")]
    pub outbox_dir: PathBuf,
    /// The web page's session ends after this many seconds without a
    /// request (default 1800).
    pub session_idle_secs: Option<Spanned<u64>>,
    /// And this many seconds after its login, busy or not (default 43200).
    pub session_max_secs: Option<Spanned<u64>>,
}

/// A web page session ends after this long without a request, by default.
pub const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// And this long after its login, whatever it did, by default.
pub const SESSION_ABSOLUTE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// When the web page's sessions end: idle this long, or this long after
/// their login.
#[derive(Debug, Clone, Copy)]
pub struct SessionTimeouts {
    pub idle: std::time::Duration,
    pub absolute: std::time::Duration,
}

impl Default for SessionTimeouts {
    fn default() -> SessionTimeouts {
        SessionTimeouts {
            idle: SESSION_IDLE,
            absolute: SESSION_ABSOLUTE,
        }
    }
}

impl ApiConfig {
    /// When the web page's sessions end.
    pub fn session_timeouts(&self) -> SessionTimeouts {
        let d = SessionTimeouts::default();
        let secs = |v: &Option<Spanned<u64>>, or: std::time::Duration| {
            v.as_ref()
                .map_or(or, |s| std::time::Duration::from_secs(*s.get_ref()))
        };
        SessionTimeouts {
            idle: secs(&self.session_idle_secs, d.idle),
            absolute: secs(&self.session_max_secs, d.absolute),
        }
    }
}

fn default_outbox_dir() -> PathBuf {
    PathBuf::from("/var/lib/recvault/outbox")
}

/// One webhook of a tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (`https://…`; `http://` for loopback or a
    /// private network).
    pub url: Spanned<String>,
    /// The signing secret (a secret file, mode 0600).
    pub secret_file: Spanned<PathBuf>,
    /// The event types it gets; default: every type.
    #[serde(default)]
    pub events: Vec<Spanned<String>>,
}

/// The brute-force defender's exemptions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefenderConfig {
    /// Networks never banned (`"10.0.0.0/8"`, `"2001:db8::/32"`, or one
    /// address), e.g. the gateway that pushes sessions.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
}

/// Jobs over every session (`recvault verify`): where their checkpoints live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    #[serde(default = "default_jobs_dir")]
    pub state_dir: PathBuf,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            state_dir: default_jobs_dir(),
        }
    }
}

fn default_jobs_dir() -> PathBuf {
    PathBuf::from("/var/lib/recvault/jobs")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    S3,
    Local,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `[[storages]]` only: the profile's name (`[a-z0-9_-]`, not "default").
    pub name: Option<Spanned<String>>,
    pub backend: Spanned<Backend>,
    /// S3: bucket name.
    pub bucket: Option<Spanned<String>>,
    /// S3: region (defaults to the AWS chain's region, else `us-east-1`).
    pub region: Option<String>,
    /// S3: endpoint of an S3-compatible store.
    pub endpoint: Option<Spanned<String>>,
    /// S3: path-style addressing (`http://host/bucket/key`).
    #[serde(default)]
    pub force_path_style: bool,
    /// Local: the directory that holds the objects.
    pub path: Option<Spanned<PathBuf>>,
    /// S3 server-side encryption passed through on writes: "AES256" or "aws:kms".
    pub sse: Option<Spanned<String>>,
    /// S3: KMS key id for `sse = "aws:kms"`.
    pub sse_kms_key_id: Option<String>,
    /// S3: file holding a 32-byte SSE-C key (raw or base64); sent on every request.
    pub sse_c_key_file: Option<Spanned<PathBuf>>,
    /// S3: a file holding the access key id (with `secret_key_file`);
    /// without both, credentials come from the standard AWS chain.
    pub access_key_file: Option<Spanned<PathBuf>>,
    /// S3: a file holding the secret access key (a secret file, mode 0600).
    pub secret_key_file: Option<Spanned<PathBuf>>,
    /// S3: a role to assume (STS AssumeRole) for every request, with the
    /// chain's or the key files' credentials; refreshed before it expires.
    pub role_arn: Option<Spanned<String>>,
    /// S3: the external id the role's trust policy requires.
    pub external_id: Option<Spanned<String>>,
    /// S3: the STS endpoint AssumeRole is sent to (default: the region's).
    pub sts_endpoint: Option<Spanned<String>>,
    /// S3: the account id that must own the bucket, sent as
    /// `x-amz-expected-bucket-owner` on every request (S3 refuses a request
    /// to a bucket another account owns).
    pub expected_bucket_owner: Option<Spanned<String>>,
}

/// Where a tenant's objects live: a profile's name, or a storage of its own.
#[derive(Debug, Clone)]
pub enum TenantStorage {
    /// `storage = "eu"`: a `[[storages]]` profile, or "default".
    Profile(String),
    /// `[tenants.storage]`: the tenant's own bucket and credentials.
    Own(Box<StorageConfig>),
}

impl<'de> Deserialize<'de> for TenantStorage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = TenantStorage;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a storage profile's name or a [tenants.storage] table")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TenantStorage, E> {
                Ok(TenantStorage::Profile(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TenantStorage, A::Error> {
                StorageConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|s| TenantStorage::Own(Box::new(s)))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A tenant's storage as the configuration resolves it.
#[derive(Debug, Clone, Copy)]
pub struct StorageRef<'a> {
    /// Names the store among those a process opens: "default", a
    /// profile's name, or `tenant:<id>` for a tenant's own.
    pub key: &'a str,
    pub cfg: &'a StorageConfig,
}

impl StorageRef<'_> {
    /// How logs and reports name it: the profile, the bucket (or folder)
    /// and the role assumed, e.g. `storage profile "eu" (bucket calls-eu,
    /// role arn:aws:iam::111122223333:role/recvault)`.
    pub fn describe(&self) -> String {
        let mut place = match (&self.cfg.bucket, &self.cfg.path) {
            (Some(b), _) => format!("bucket {}", b.get_ref()),
            (None, Some(p)) => format!("folder {}", p.get_ref().display()),
            _ => String::new(),
        };
        if let Some(r) = &self.cfg.role_arn {
            place.push_str(&format!(", role {}", r.get_ref()));
        }
        match self.key.strip_prefix("tenant:") {
            Some(_) => format!("its own storage ({place})"),
            None => format!("storage profile {:?} ({place})", self.key),
        }
    }
}

impl Config {
    /// The storage tenant `t`'s objects live in (the validation made sure a
    /// profile it names exists; an unknown one falls back to nothing: `None`).
    pub fn storage_of<'a>(&'a self, t: &'a TenantConfig) -> Option<StorageRef<'a>> {
        match t.storage.as_ref().map(|s| s.get_ref()) {
            None => Some(StorageRef {
                key: DEFAULT_STORAGE,
                cfg: &self.storage,
            }),
            Some(TenantStorage::Profile(name)) if name == DEFAULT_STORAGE => Some(StorageRef {
                key: DEFAULT_STORAGE,
                cfg: &self.storage,
            }),
            Some(TenantStorage::Profile(name)) => self
                .storages
                .iter()
                .find(|s| s.name.as_ref().is_some_and(|n| n.get_ref() == name))
                .map(|cfg| StorageRef { key: name, cfg }),
            Some(TenantStorage::Own(cfg)) => Some(StorageRef {
                key: &t.own_storage_key,
                cfg,
            }),
        }
    }
}

/// The name of the `[storage]` profile.
pub const DEFAULT_STORAGE: &str = "default";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    #[serde(default = "default_sftp_listen")]
    pub listen: Spanned<String>,
    #[serde(default = "default_host_key")]
    pub host_key: PathBuf,
}

impl Default for SftpConfig {
    fn default() -> Self {
        Self {
            listen: default_sftp_listen(),
            host_key: default_host_key(),
        }
    }
}

fn default_sftp_listen() -> Spanned<String> {
    Spanned::new(0..0, "0.0.0.0:2222".to_string())
}

fn default_host_key() -> PathBuf {
    PathBuf::from("keys/ssh_host_ed25519_key")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpsConfig {
    /// Explicit FTPS: clients connect in clear and send `AUTH TLS`.
    pub listen: Spanned<String>,
    /// Implicit FTPS (TLS from the first byte, usually port 990); optional.
    pub implicit_listen: Option<Spanned<String>>,
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key (mode 0600).
    pub private_key: PathBuf,
    /// "low-high": ports PASV/EPSV may use; any free port when omitted.
    pub passive_ports: Option<Spanned<String>>,
    /// The IPv4 address PASV announces (the public address behind NAT).
    pub passive_host: Option<Spanned<String>>,
    /// Refuse data connections whose TLS session is not a resumption of an
    /// earlier one (FileZilla Server's "require TLS session resumption").
    #[serde(default)]
    pub require_tls_resumption: bool,
}

impl FtpsConfig {
    /// The passive port range, validated at load.
    pub fn passive_range(&self) -> Option<(u16, u16)> {
        self.passive_ports
            .as_ref()
            .and_then(|p| parse_port_range(p.get_ref()))
    }

    /// The address PASV announces, validated at load.
    pub fn passive_ip(&self) -> Option<std::net::Ipv4Addr> {
        self.passive_host
            .as_ref()
            .and_then(|h| h.get_ref().parse().ok())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: Spanned<String>,
    pub spool_dir: PathBuf,
    /// PEM certificate chain; with `tls_private_key`, the listener speaks HTTPS.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key (mode 0600).
    pub tls_private_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as "info" or "recvault=debug,info"; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_string()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// File the JSON audit lines are appended to; standard output when unset.
    pub path: Option<PathBuf>,
    /// The name every line carries as `node` (default: the host's name).
    pub node: Option<String>,
    /// Seconds between two anchors of the chain's head in the bucket
    /// (default 60; one more is written at every stop). The lines written
    /// since are copied to `audit/<node>/YYYY/MM/DD/` at the same time.
    pub anchor_secs: Option<u64>,
    /// A Tink JSON keyset (`recvault keys new`) that encrypts the audit
    /// lines' copies in the bucket (associated data `recvault/v1
    /// tenant=audit@<node> object=YYYY/MM/DD/<name>`); without it they are
    /// stored as they are.
    pub keyset: Option<PathBuf>,
    /// The AWS KMS key that wraps `keyset` (see the tenants' `keyset_kms_key`).
    pub keyset_kms_key: Option<String>,
    /// The audit file is rotated before it grows past this many bytes
    /// (default 100 MiB); the chain goes on in the new file.
    pub max_bytes: Option<u64>,
}

impl AuditConfig {
    /// This node's name: `node`, or the host's name made a plain name
    /// ("node" when it has none). It names the node's audit keys and its
    /// day index shards in the bucket.
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        let host: String = crate::audit::hostname()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if crate::path::is_name(&host) {
            host
        } else {
            "node".into()
        }
    }

    /// [`Self::max_bytes`] or its default.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.unwrap_or(100 << 20).max(4096)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: Spanned<String>,
    pub prefix: Spanned<String>,
    #[serde(default)]
    pub ingest_tokens: Vec<Spanned<String>>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Keys of the content API (`[api]`).
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Where the tenant's events are POSTed (needs `[api]`).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Video bitrate cap of the tenant's side-by-side MP4s, in kbit/s
    /// (x264 `-maxrate`; the VBV buffer is twice that). Sessions keep the cap
    /// they were archived with.
    pub mp4_video_kbps: Option<Spanned<u32>>,
    /// `"recvault"`: every object recvault writes for the tenant is
    /// encrypted with the tenant's keyset (SPEC §10); `"none"` (the default):
    /// objects are stored as they are (the `[storage]` server-side
    /// encryption settings still apply).
    pub encryption: Option<Spanned<Encryption>>,
    /// The tenant's Tink JSON keyset (a secret file: mode 0600), required
    /// with `encryption = "recvault"`.
    pub keyset: Option<Spanned<PathBuf>>,
    /// The AWS KMS key that wraps `keyset` (a Tink key URI,
    /// `aws-kms://arn:aws:kms:<region>:<account>:key/<id>`); without it the
    /// keyset file is cleartext.
    pub keyset_kms_key: Option<Spanned<String>>,
    /// Where the tenant's objects live: `storage = "<profile>"` or a
    /// `[tenants.storage]` table of its own; default: `[storage]`.
    pub storage: Option<Spanned<TenantStorage>>,
    /// `tenant:<id>`, the key of a storage of its own (set at load).
    #[serde(skip)]
    pub own_storage_key: String,
    /// `"direct"` (the default): sessions are archived into the tenant's
    /// storage. `"customer"`: archived into `[storage]` (the operator's
    /// backup) first, then copied to the tenant's storage (the customer's),
    /// verified, and the backup deleted `backup_hours` after.
    pub delivery: Option<Spanned<Delivery>>,
    /// With `delivery = "customer"`: hours the operator's copy is kept after
    /// a verified delivery (default 24; fractions allowed).
    pub backup_hours: Option<Spanned<f64>>,
}

/// How a tenant's sessions reach its storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    #[default]
    Direct,
    Customer,
}

impl TenantConfig {
    /// [`Self::delivery`] or its default.
    pub fn delivery(&self) -> Delivery {
        self.delivery
            .as_ref()
            .map_or(Delivery::Direct, |d| *d.get_ref())
    }

    /// [`Self::backup_hours`] or its default, as a duration.
    pub fn backup_keep(&self) -> std::time::Duration {
        let h = self.backup_hours.as_ref().map_or(24.0, |h| *h.get_ref());
        std::time::Duration::from_secs_f64((h * 3600.0).clamp(0.0, 10.0 * 365.0 * 86400.0))
    }

    pub fn encryption(&self) -> Encryption {
        self.encryption
            .as_ref()
            .map_or(Encryption::None, |e| *e.get_ref())
    }
}

/// How a tenant's objects are encrypted by recvault itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    #[default]
    None,
    /// Tink AES-GCM-HKDF streaming AEAD under the tenant's keyset.
    Recvault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    List,
    Download,
    Delete,
}

/// One API key of a tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key's name in logs and the audit trail (`apikey:<name>`).
    pub name: Spanned<String>,
    /// `sha256:<hex>` of the secret (`recvault gen-token` prints both).
    pub key: Spanned<String>,
    /// What the key may do: `calls:read` (list and read calls' indexes),
    /// `media:read` (download, make signed links), `calls:erase`.
    pub scopes: Vec<Spanned<String>>,
}

/// The scopes an API key may hold.
pub const API_SCOPES: [&str; 3] = ["calls:read", "media:read", "calls:erase"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: Spanned<String>,
    /// argon2id PHC string (`recvault hash-password`).
    pub password: Option<Spanned<String>>,
    /// File holding the PHC string instead of `password`.
    pub password_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub authorized_keys: Vec<Spanned<String>>,
    /// File in `authorized_keys` format, read in addition to `authorized_keys`.
    pub authorized_keys_file: Option<Spanned<PathBuf>>,
    #[serde(default = "default_permissions")]
    pub permissions: Vec<Permission>,
    /// Optional sub-folder of the tenant tree shown to this user as `/`.
    pub scope: Option<Spanned<String>>,
}

fn default_permissions() -> Vec<Permission> {
    vec![Permission::List, Permission::Download]
}

/// A configuration error that says where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

/// Loads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates configuration text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    for t in &mut config.tenants {
        t.own_storage_key = format!("tenant:{}", t.id.get_ref());
    }
    Validator { text, origin }.validate(&config)?;
    Ok(config)
}

struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        let line = if span.start == 0 && span.end == 0 {
            0
        } else {
            self.text[..span.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1
        };
        Err(ConfigError::Invalid {
            path: self.origin.to_string(),
            line,
            message: message.into(),
        })
    }

    fn validate(&self, c: &Config) -> Result<(), ConfigError> {
        self.storage(&c.storage, "[storage]")?;
        if let Some(n) = &c.storage.name {
            return self.err(
                n.span(),
                "[storage] is the profile \"default\" and takes no name; named profiles are [[storages]]",
            );
        }
        let mut profiles = HashSet::new();
        for s in &c.storages {
            let Some(n) = &s.name else {
                return self.err(
                    s.backend.span(),
                    "[[storages]] needs a `name` (tenants pick it with storage = \"<name>\")",
                );
            };
            let name = n.get_ref();
            if !is_tenant_id(name) || name == DEFAULT_STORAGE {
                return self.err(
                    n.span(),
                    format!("storage profile name {name:?} must match [a-z0-9_-]{{1,64}} and not be \"default\" ([storage] is \"default\")"),
                );
            }
            if !profiles.insert(name.clone()) {
                return self.err(
                    n.span(),
                    format!("storage profile {name:?} is defined twice"),
                );
            }
            self.storage(s, &format!("[[storages]] {name:?}"))?;
        }
        if let Some(n) = &c.audit.node {
            if !crate::path::is_name(n) {
                return self.err(
                    0..0,
                    format!("[audit] node {n:?} must be a plain name (no '/', not empty): it names this node's keys in the bucket"),
                );
            }
        }
        self.listen(&c.sftp.listen, "[sftp] listen")?;
        if let Some(f) = &c.ftps {
            self.listen(&f.listen, "[ftps] listen")?;
            if let Some(l) = &f.implicit_listen {
                self.listen(l, "[ftps] implicit_listen")?;
            }
            if let Some(h) = &f.passive_host {
                if h.get_ref().parse::<std::net::Ipv4Addr>().is_err() {
                    return self.err(
                        h.span(),
                        "[ftps] passive_host must be an IPv4 address such as \"203.0.113.10\" (PASV replies carry IPv4 only)",
                    );
                }
            }
            if let Some(p) = &f.passive_ports {
                if parse_port_range(p.get_ref()).is_none() {
                    return self.err(
                        p.span(),
                        "[ftps] passive_ports must look like \"50000-50100\" (low <= high)",
                    );
                }
            }
        }
        if let Some(i) = &c.ingest {
            self.listen(&i.listen, "[ingest] listen")?;
            if i.tls_certificate.is_some() != i.tls_private_key.is_some() {
                return self.err(
                    i.listen.span(),
                    "[ingest] tls_certificate and tls_private_key go together",
                );
            }
        }
        if let Some(a) = &c.api {
            self.listen(&a.listen, "[api] listen")?;
            if a.tls_certificate.is_some() != a.tls_private_key.is_some() {
                return self.err(
                    a.listen.span(),
                    "[api] tls_certificate and tls_private_key go together",
                );
            }
            if let Some(u) = &a.public_url {
                let v = u.get_ref();
                if !(v.starts_with("http://") || v.starts_with("https://"))
                    || v.trim_end_matches('/').contains('?')
                {
                    return self.err(
                        u.span(),
                        "[api] public_url must look like \"https://host:port\"",
                    );
                }
            }
            let t = a.session_timeouts();
            if let Some(v) = &a.session_idle_secs {
                if !(1..=86_400).contains(v.get_ref()) {
                    return self.err(
                        v.span(),
                        "[api] session_idle_secs must be between 1 and 86400",
                    );
                }
            }
            if let Some(v) = &a.session_max_secs {
                if !(1..=7 * 86_400).contains(v.get_ref()) || t.absolute < t.idle {
                    return self.err(
                        v.span(),
                        "[api] session_max_secs must be between session_idle_secs and 604800",
                    );
                }
            }
        }
        if let Err(msg) = c.limits.check() {
            return self.err(0..0, format!("[limits] {msg}"));
        }
        for net in &c.defender.allow {
            if crate::net::Net::parse(net.get_ref()).is_none() {
                return self.err(
                    net.span(),
                    "[defender] allow takes networks such as \"10.0.0.0/8\", \"2001:db8::/32\" or one address",
                );
            }
        }
        for net in &c.listeners.trusted_proxies {
            if crate::net::Net::parse(net.get_ref()).is_none() {
                return self.err(
                    net.span(),
                    "[listeners] trusted_proxies takes the balancers' networks such as \"10.0.0.0/24\" or one address",
                );
            }
        }
        let mut ids = HashSet::new();
        let mut prefixes: Vec<(String, std::ops::Range<usize>)> = Vec::new();
        let mut users = HashSet::new();
        let mut key_hashes = HashSet::new();
        for t in &c.tenants {
            let id = t.id.get_ref();
            if let Some(st) = &t.storage {
                match st.get_ref() {
                    TenantStorage::Profile(p) if p != DEFAULT_STORAGE && !profiles.contains(p) => {
                        let mut known: Vec<&str> = profiles.iter().map(String::as_str).collect();
                        known.sort();
                        known.insert(0, DEFAULT_STORAGE);
                        return self.err(
                            st.span(),
                            format!(
                                "tenant {id:?}: no storage profile {p:?} (profiles: {})",
                                known.join(", ")
                            ),
                        );
                    }
                    TenantStorage::Profile(_) => {}
                    TenantStorage::Own(own) => {
                        if let Some(n) = &own.name {
                            return self.err(n.span(), format!("tenant {id:?}: [tenants.storage] takes no name (it is the tenant's own)"));
                        }
                        self.storage(own, &format!("tenant {id:?} [tenants.storage]"))?;
                    }
                }
            }
            if t.delivery() == Delivery::Customer
                && c.storage_of(t).is_none_or(|p| p.key == DEFAULT_STORAGE)
            {
                let at = t.delivery.as_ref().map_or(t.id.span(), |d| d.span());
                return self.err(at, format!("tenant {id:?}: delivery = \"customer\" needs the customer's storage: storage = \"<profile>\" or a [tenants.storage] table ([storage] keeps the backup copy)"));
            }
            if let Some(h) = &t.backup_hours {
                if t.delivery() != Delivery::Customer {
                    return self.err(
                        h.span(),
                        format!("tenant {id:?}: backup_hours is for delivery = \"customer\""),
                    );
                }
                if !(h.get_ref().is_finite() && *h.get_ref() > 0.0 && *h.get_ref() <= 87_600.0) {
                    return self.err(h.span(), format!("tenant {id:?}: backup_hours must be more than 0 and at most 87600 (ten years)"));
                }
            }
            if let Some(k) = &t.mp4_video_kbps {
                if !(100..=20_000).contains(k.get_ref()) {
                    return self.err(k.span(), "mp4_video_kbps must be between 100 and 20000");
                }
            }
            match (t.encryption(), &t.keyset) {
                (Encryption::Recvault, None) => {
                    return self.err(
                        t.encryption.as_ref().map_or(t.id.span(), |e| e.span()),
                        format!("tenant {id:?}: encryption = \"recvault\" needs keyset = \"FILE\" (create one with `recvault keys new FILE`)"),
                    );
                }
                _ if t.keyset_kms_key.is_some() && t.keyset.is_none() => {
                    let k = t.keyset_kms_key.as_ref().map_or(t.id.span(), |k| k.span());
                    return self.err(k, format!("tenant {id:?}: keyset_kms_key needs keyset = \"FILE\" (the wrapped keyset)"));
                }
                (_, _)
                    if t.keyset_kms_key
                        .as_ref()
                        .is_some_and(|k| crate::crypto::kms::arn_of(k.get_ref()).is_err()) =>
                {
                    let k = t.keyset_kms_key.as_ref().map_or(t.id.span(), |k| k.span());
                    return self.err(k, format!("tenant {id:?}: keyset_kms_key must look like \"aws-kms://arn:aws:kms:<region>:<account>:key/<id>\""));
                }
                (Encryption::None, Some(k)) => {
                    return self.err(
                        k.span(),
                        format!("tenant {id:?}: keyset is set but encryption is not \"recvault\"; add encryption = \"recvault\" or remove keyset"),
                    );
                }
                _ => {}
            }
            if !is_tenant_id(id) {
                return self.err(
                    t.id.span(),
                    format!("tenant id {id:?} must match [a-z0-9_-]{{1,64}}"),
                );
            }
            if !ids.insert(id.clone()) {
                return self.err(t.id.span(), format!("tenant id {id:?} is defined twice"));
            }
            let prefix = t.prefix.get_ref();
            if let Err(msg) = check_prefix(prefix) {
                return self.err(
                    t.prefix.span(),
                    format!("tenant {id:?}: prefix {prefix:?} {msg}"),
                );
            }
            for (other, _) in &prefixes {
                if prefix.starts_with(other.as_str()) || other.starts_with(prefix.as_str()) {
                    return self.err(
                        t.prefix.span(),
                        format!("tenant {id:?}: prefix {prefix:?} overlaps prefix {other:?} of another tenant"),
                    );
                }
            }
            prefixes.push((prefix.clone(), t.prefix.span()));
            for tok in &t.ingest_tokens {
                if !is_sha256_ref(tok.get_ref()) {
                    return self.err(tok.span(), "ingest token must be \"sha256:<64 hex digits>\" (see `recvault gen-token`)");
                }
            }
            let mut key_names = std::collections::HashSet::new();
            for k in &t.api_keys {
                let name = k.name.get_ref();
                if !crate::path::is_name(name) || name.len() > 64 {
                    return self.err(
                        k.name.span(),
                        format!("tenant {id:?}: API key name {name:?} must match [A-Za-z0-9._-]{{1,64}}"),
                    );
                }
                if !key_names.insert(name.clone()) {
                    return self.err(
                        k.name.span(),
                        format!("tenant {id:?}: API key {name:?} is defined twice"),
                    );
                }
                if !is_sha256_ref(k.key.get_ref()) {
                    return self.err(
                        k.key.span(),
                        "API key must be \"sha256:<64 hex digits>\" (see `recvault gen-token`)",
                    );
                }
                if k.scopes.is_empty() {
                    return self.err(k.name.span(), format!("tenant {id:?}: API key {name:?} has no scopes (one or more of {API_SCOPES:?})"));
                }
                for sc in &k.scopes {
                    if !API_SCOPES.contains(&sc.get_ref().as_str()) {
                        return self.err(
                            sc.span(),
                            format!(
                                "unknown API scope {:?}: one of {API_SCOPES:?}",
                                sc.get_ref()
                            ),
                        );
                    }
                }
                if !key_hashes.insert(k.key.get_ref().to_ascii_lowercase()) {
                    return self.err(
                        k.key.span(),
                        "this API key hash is used twice (every key needs its own secret)",
                    );
                }
            }
            for w in &t.webhooks {
                let u = w.url.get_ref();
                if !(u.starts_with("http://") || u.starts_with("https://"))
                    || u.parse::<hyper::Uri>().is_err()
                {
                    return self.err(
                        w.url.span(),
                        format!("tenant {id:?}: webhook url must be an http:// or https:// URL"),
                    );
                }
                for e in &w.events {
                    if !crate::layout::event::KINDS.contains(&e.get_ref().as_str()) {
                        return self.err(
                            e.span(),
                            format!(
                                "unknown event type {:?}: one of {:?}",
                                e.get_ref(),
                                crate::layout::event::KINDS
                            ),
                        );
                    }
                }
                if c.api.is_none() {
                    return self.err(w.url.span(), format!("tenant {id:?}: webhooks need an [api] section (its outbox_dir keeps deliveries)"));
                }
            }
            for u in &t.users {
                self.user(id, u, &mut users)?;
            }
        }
        Ok(())
    }

    fn storage(&self, s: &StorageConfig, what: &str) -> Result<(), ConfigError> {
        let at = s.backend.span();
        match s.backend.get_ref() {
            Backend::S3 => {
                if s.bucket.as_ref().is_none_or(|b| b.get_ref().is_empty()) {
                    return self.err(at, format!("{what} backend = \"s3\" needs `bucket`"));
                }
                for (key, url) in [("endpoint", &s.endpoint), ("sts_endpoint", &s.sts_endpoint)] {
                    if let Some(e) = url {
                        let v = e.get_ref();
                        if !(v.starts_with("http://") || v.starts_with("https://")) {
                            return self.err(
                                e.span(),
                                format!("{what} {key} must start with http:// or https://"),
                            );
                        }
                    }
                }
                if let Some(sse) = &s.sse {
                    if !matches!(sse.get_ref().as_str(), "AES256" | "aws:kms") {
                        return self.err(
                            sse.span(),
                            format!("{what} sse must be \"AES256\" or \"aws:kms\""),
                        );
                    }
                }
                if s.sse.is_some() && s.sse_c_key_file.is_some() {
                    return self.err(
                        at,
                        format!("{what} sse and sse_c_key_file exclude each other"),
                    );
                }
                if s.access_key_file.is_some() != s.secret_key_file.is_some() {
                    return self.err(
                        at,
                        format!("{what} access_key_file and secret_key_file go together"),
                    );
                }
                if let Some(r) = &s.role_arn {
                    if !is_role_arn(r.get_ref()) {
                        return self.err(
                            r.span(),
                            format!("{what} role_arn must look like \"arn:aws:iam::111122223333:role/recvault-delivery\""),
                        );
                    }
                }
                for (key, v) in [
                    ("external_id", &s.external_id),
                    ("sts_endpoint", &s.sts_endpoint),
                ] {
                    if let (Some(v), None) = (v, &s.role_arn) {
                        return self.err(v.span(), format!("{what} {key} needs role_arn"));
                    }
                }
                if let Some(x) = &s.external_id {
                    let v = x.get_ref();
                    if !(2..=1224).contains(&v.len())
                        || !v
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/-_".contains(&b))
                    {
                        return self.err(
                            x.span(),
                            format!("{what} external_id must be 2 to 1224 of [A-Za-z0-9+=,.@:/_-]"),
                        );
                    }
                }
                if let Some(o) = &s.expected_bucket_owner {
                    let v = o.get_ref();
                    if v.len() != 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return self.err(
                            o.span(),
                            format!(
                                "{what} expected_bucket_owner must be a 12-digit AWS account id"
                            ),
                        );
                    }
                }
            }
            Backend::Local => {
                if s.path.is_none() {
                    return self.err(at, format!("{what} backend = \"local\" needs `path`"));
                }
                let s3_only = [
                    ("bucket", s.bucket.is_some()),
                    ("endpoint", s.endpoint.is_some()),
                    ("sse", s.sse.is_some()),
                    ("sse_c_key_file", s.sse_c_key_file.is_some()),
                    ("access_key_file", s.access_key_file.is_some()),
                    ("secret_key_file", s.secret_key_file.is_some()),
                    ("role_arn", s.role_arn.is_some()),
                    ("external_id", s.external_id.is_some()),
                    ("sts_endpoint", s.sts_endpoint.is_some()),
                    ("expected_bucket_owner", s.expected_bucket_owner.is_some()),
                ];
                if let Some((key, _)) = s3_only.iter().find(|(_, set)| *set) {
                    return self.err(
                        at,
                        format!("{what} {key} is for backend = \"s3\", not \"local\""),
                    );
                }
            }
        }
        Ok(())
    }

    fn listen(&self, v: &Spanned<String>, what: &str) -> Result<(), ConfigError> {
        if v.get_ref().parse::<SocketAddr>().is_err() {
            return self.err(
                v.span(),
                format!(
                    "{what} must be an address like \"0.0.0.0:2222\", not {:?}",
                    v.get_ref()
                ),
            );
        }
        Ok(())
    }

    fn user(
        &self,
        tenant: &str,
        u: &UserConfig,
        seen: &mut HashSet<String>,
    ) -> Result<(), ConfigError> {
        let name = u.name.get_ref();
        if !is_user_name(name) {
            return self.err(
                u.name.span(),
                format!("user name {name:?} must match [A-Za-z0-9._-]{{1,64}}"),
            );
        }
        if !seen.insert(name.clone()) {
            return self.err(
                u.name.span(),
                format!("user {name:?} is defined twice (user names are unique across tenants)"),
            );
        }
        if u.password.is_some() && u.password_file.is_some() {
            return self.err(
                u.name.span(),
                format!("user {name:?}: give `password` or `password_file`, not both"),
            );
        }
        if let Some(p) = &u.password {
            if let Err(msg) = crate::password::check_phc(p.get_ref()) {
                return self.err(p.span(), format!("user {name:?}: password {msg}"));
            }
        }
        for k in &u.authorized_keys {
            if let Err(e) = russh::keys::PublicKey::from_openssh(k.get_ref()) {
                return self.err(
                    k.span(),
                    format!("user {name:?}: authorized key does not parse: {e}"),
                );
            }
        }
        if u.password.is_none()
            && u.password_file.is_none()
            && u.authorized_keys.is_empty()
            && u.authorized_keys_file.is_none()
        {
            return self.err(u.name.span(), format!("user {name:?} of tenant {tenant:?} has no password and no key: it could never log in"));
        }
        if let Some(s) = &u.scope {
            if let Err(e) = crate::path::VPath::parse_absolute(s.get_ref()) {
                return self.err(
                    s.span(),
                    format!("user {name:?}: scope {:?}: {e}", s.get_ref()),
                );
            }
        }
        Ok(())
    }
}

/// Tenant ids are short and safe in logs and metrics.
pub fn is_tenant_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `arn:<partition>:iam::<12 digits>:role/<path and name>`.
fn is_role_arn(s: &str) -> bool {
    let mut parts = s.splitn(6, ':');
    let (Some("arn"), Some(part), Some("iam"), Some(""), Some(account), Some(role)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    part.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && role.strip_prefix("role/").is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        })
}

/// `sha256:<64 hex digits>`: how tokens and API keys are configured.
fn is_sha256_ref(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_user_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_prefix(p: &str) -> Result<(), &'static str> {
    if p.is_empty() || !p.ends_with('/') || p.starts_with('/') {
        return Err("must be non-empty, must not start with '/' and must end with '/'");
    }
    for part in p.trim_end_matches('/').split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err("must not contain empty, '.' or '..' segments");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("may hold only [A-Za-z0-9._-] and '/'");
        }
    }
    Ok(())
}

/// Parses "low-high" into an inclusive port range.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[storage]
backend = "local"
path = "/tmp/x"

[[tenants]]
id = "acme"
prefix = "tenants/acme/"

[[tenants.users]]
name = "qa"
password = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Oq7yFqFy9OhY6oGmRZ7ZbOrq4Q2a7gTaH9aUmBq2Xzo"
"#;

    #[test]
    fn minimal_config_parses() {
        let c = parse(MINIMAL, "t.toml").expect("valid");
        assert_eq!(c.tenants[0].users[0].name.get_ref(), "qa");
        assert_eq!(c.sftp.listen.get_ref(), "0.0.0.0:2222");
    }

    #[test]
    fn unknown_key_is_refused_with_line() {
        let text = MINIMAL.replace("path = \"/tmp/x\"", "path = \"/tmp/x\"\nbukket = \"x\"");
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("bukket"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn overlapping_prefixes_are_refused() {
        let text = format!("{MINIMAL}\n[[tenants]]\nid = \"b\"\nprefix = \"tenants/acme/x/\"\n");
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
        assert!(e.contains("t.toml:16"), "{e}");
    }

    #[test]
    fn out_of_range_mp4_cap_and_non_ipv4_passive_host_are_refused_with_line() {
        let text = MINIMAL.replace(
            "prefix = \"tenants/acme/\"",
            "prefix = \"tenants/acme/\"\nmp4_video_kbps = 50",
        );
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("mp4_video_kbps") && e.contains("t.toml:9"),
            "{e}"
        );
        let ok = MINIMAL.replace(
            "prefix = \"tenants/acme/\"",
            "prefix = \"tenants/acme/\"\nmp4_video_kbps = 1500",
        );
        let c = parse(&ok, "t.toml").expect("valid");
        assert_eq!(
            c.tenants[0].mp4_video_kbps.as_ref().map(|k| *k.get_ref()),
            Some(1500)
        );
        let ftps = format!(
            "{MINIMAL}\n[ftps]\nlisten = \"127.0.0.1:0\"\ncertificate = \"c\"\nprivate_key = \"k\"\npassive_host = \"example.com\"\n"
        );
        let e = parse(&ftps, "t.toml").unwrap_err().to_string();
        assert!(e.contains("passive_host must be an IPv4"), "{e}");
    }

    #[test]
    fn sibling_prefixes_that_share_a_stem_are_allowed() {
        let text = format!("{MINIMAL}\n[[tenants]]\nid = \"acme2\"\nprefix = \"tenants/acme2/\"\n");
        parse(&text, "t.toml").expect("acme/ and acme2/ do not overlap");
    }

    #[test]
    fn plaintext_password_is_refused() {
        let text = MINIMAL.replace("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Oq7yFqFy9OhY6oGmRZ7ZbOrq4Q2a7gTaH9aUmBq2Xzo", "hunter2");
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml:12"), "{e}");
        assert!(!e.contains("hunter2"), "secrets never echo: {e}");
    }

    #[test]
    fn storage_profiles_resolve_per_tenant_and_bad_ones_are_refused_with_line() {
        let profiles = r#"
[[storages]]
name = "eu"
backend = "s3"
bucket = "calls-eu"
region = "eu-west-1"
role_arn = "arn:aws:iam::111122223333:role/recvault-delivery"
external_id = "acme-7f3c"
expected_bucket_owner = "111122223333"

[[tenants]]
id = "bravo"
prefix = "tenants/bravo/"
storage = "eu"

[[tenants]]
id = "carol"
prefix = "tenants/carol/"

[tenants.storage]
backend = "s3"
bucket = "carol-own"
access_key_file = "/etc/recvault/carol.access"
secret_key_file = "/etc/recvault/carol.secret"
"#;
        let c = parse(&format!("{MINIMAL}{profiles}"), "t.toml").expect("valid");
        let of = |i: usize| c.storage_of(&c.tenants[i]).expect("resolved");
        assert_eq!(of(0).key, DEFAULT_STORAGE);
        assert_eq!(
            of(0).describe(),
            "storage profile \"default\" (folder /tmp/x)"
        );
        assert_eq!(of(1).key, "eu");
        assert_eq!(
            of(1).describe(),
            "storage profile \"eu\" (bucket calls-eu, role arn:aws:iam::111122223333:role/recvault-delivery)"
        );
        assert_eq!(of(2).key, "tenant:carol");
        assert_eq!(of(2).describe(), "its own storage (bucket carol-own)");

        let refused = |from: &str, to: &str| {
            let text = format!("{MINIMAL}{}", profiles.replace(from, to));
            assert_ne!(from, to);
            parse(&text, "t.toml").unwrap_err().to_string()
        };
        let e = refused("storage = \"eu\"", "storage = \"us\"");
        assert!(
            e.contains("t.toml:26")
                && e.contains("no storage profile \"us\"")
                && e.contains("default, eu"),
            "{e}"
        );
        let e = refused("name = \"eu\"", "name = \"default\"");
        assert!(
            e.contains("t.toml:15") && e.contains("not be \"default\""),
            "{e}"
        );
        let e = refused("111122223333\"\n", "1111\"\n");
        assert!(e.contains("12-digit"), "{e}");
        let e = refused("role/recvault-delivery", "user/recvault");
        assert!(e.contains("role_arn must look like"), "{e}");
        let e = refused("secret_key_file = \"/etc/recvault/carol.secret\"\n", "");
        assert!(
            e.contains("access_key_file and secret_key_file go together")
                && e.contains("[tenants.storage]"),
            "{e}"
        );
        let e = refused(
            "role_arn = \"arn:aws:iam::111122223333:role/recvault-delivery\"\n",
            "",
        );
        assert!(e.contains("external_id needs role_arn"), "{e}");
        let e = refused(
            "[tenants.storage]\nbackend = \"s3\"\nbucket = \"carol-own\"",
            "[tenants.storage]\nbackend = \"local\"\npath = \"/srv/carol\"",
        );
        assert!(e.contains("access_key_file is for backend = \"s3\""), "{e}");
        let e = refused(
            "[tenants.storage]\nbackend",
            "[tenants.storage]\nbukket = 1\nbackend",
        );
        assert!(
            e.contains("bukket"),
            "unknown keys of a tenant's own storage are refused: {e}"
        );
        let e = parse(
            &MINIMAL.replace("[storage]\n", "[storage]\nname = \"x\"\n"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("takes no name"), "{e}");
    }

    #[test]
    fn delivery_to_the_customer_needs_a_storage_of_its_own_and_a_sane_backup_time() {
        let profile = "\n[[storages]]\nname = \"eu\"\nbackend = \"s3\"\nbucket = \"calls-eu\"\n";
        let tenant = |extra: &str| {
            format!(
                "{MINIMAL}{profile}\n[[tenants]]\nid = \"b\"\nprefix = \"tenants/b/\"\n{extra}\n"
            )
        };
        let c = parse(
            &tenant("storage = \"eu\"\ndelivery = \"customer\"\nbackup_hours = 0.5"),
            "t.toml",
        )
        .expect("valid");
        assert_eq!(c.tenants[1].delivery(), Delivery::Customer);
        assert_eq!(
            c.tenants[1].backup_keep(),
            std::time::Duration::from_secs(1800)
        );
        let c = parse(
            &tenant("storage = \"eu\"\ndelivery = \"customer\""),
            "t.toml",
        )
        .expect("valid");
        assert_eq!(
            c.tenants[1].backup_keep(),
            std::time::Duration::from_secs(24 * 3600)
        );
        assert_eq!(c.tenants[0].delivery(), Delivery::Direct);
        for (extra, says) in [
            ("delivery = \"customer\"", "needs the customer's storage"),
            (
                "storage = \"default\"\ndelivery = \"customer\"",
                "needs the customer's storage",
            ),
            (
                "storage = \"eu\"\nbackup_hours = 2.0",
                "backup_hours is for delivery",
            ),
            (
                "storage = \"eu\"\ndelivery = \"customer\"\nbackup_hours = 0.0",
                "more than 0",
            ),
            (
                "storage = \"eu\"\ndelivery = \"customer\"\nbackup_hours = -1.0",
                "more than 0",
            ),
            (
                "storage = \"eu\"\ndelivery = \"customer\"\nbackup_hours = nan",
                "more than 0",
            ),
            ("storage = \"eu\"\ndelivery = \"later\"", "unknown variant"),
        ] {
            let e = parse(&tenant(extra), "t.toml").unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("t.toml:"), "{extra}: {e}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("50000-50100"), Some((50000, 50100)));
        assert_eq!(parse_port_range("5-1"), None);
        assert_eq!(parse_port_range("x"), None);
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn the_example_config_is_valid_and_documents_every_limit() {
        let text = include_str!("../config/recvault.example.toml");
        let cfg =
            super::parse(text, "recvault.example.toml").expect("example config must stay valid");
        let defaults = crate::limits::Limits::default();
        assert_eq!(
            format!("{:?}", cfg.limits),
            format!("{defaults:?}"),
            "the example shows the defaults"
        );
        let debug = format!("{defaults:?}");
        let fields = debug
            .trim_start_matches("Limits {")
            .split(", ")
            .filter_map(|f| f.trim().split(':').next());
        for field in fields.filter(|f| !f.is_empty() && *f != "}") {
            assert!(
                text.contains(&format!("\n{field} =")),
                "limit {field} is missing from the example config"
            );
        }
    }
}
