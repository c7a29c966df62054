//! The tenant-scoped, read-only virtual tree every protocol serves.
//!
//! A [`Vfs`] is one user's view: a tenant, an optional scope (a sub-folder
//! shown as `/`) and the user's permissions. Protocol adapters resolve client
//! paths with [`Vfs::resolve`] into [`VPath`]s and call `stat`, `list` and
//! `open`; they never see storage keys. Entries whose bytes are produced
//! rather than stored (derived media) plug in through [`Producer`].

pub mod budget;
mod events;
mod listing;
pub mod meta;
pub mod reader;
pub mod tree;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};

pub use listing::{ls_line, DirLister};
use meta::SessionMeta;
use moka::future::Cache;
use tree::{Loc, SessionRef};

use crate::config::Permission;
use crate::layout::index::{Hashes, SessionIndex};
use crate::layout::SessionKeys;
pub use crate::path::{PathError, VPath};
use crate::store::{SharedStore, StoreError};

/// A file's bytes as the tree serves them.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, VfsError>> + Send>>;

/// One tenant: its storage, its key prefix and its metadata caches.
///
/// The caches (`limits.metadata_cache_secs`, `metadata_cache_entries`; none
/// when the time is 0) also merge concurrent loads: clients asking for the
/// same session or folder at once share one set of storage requests.
pub struct Tenant {
    pub id: String,
    pub prefix: String,
    pub store: SharedStore,
    /// Which configured storage `store` is ([`crate::config::StorageRef::describe`]).
    pub storage: String,
    /// Whether that is the default profile (`[storage]`, the operator's).
    pub on_default_storage: bool,
    /// What [`Self::check_storage`] lists when not `store` (the customer's
    /// storage under a tree that falls back to the backup).
    check: Option<SharedStore>,
    /// The encryption under `store`, for a tenant with `encryption = "recvault"`.
    pub sealed: Option<Arc<crate::store::crypt::Crypt>>,
    /// The tenant's day indexes (shared with the archiver of this process).
    pub days: Arc<crate::days::Days>,
    /// Session metadata by session prefix.
    sessions: Option<Cache<String, Arc<SessionMeta>>>,
    /// Folder times by folder prefix.
    dir_times: Option<Cache<String, Option<DateTime<Utc>>>>,
    /// Time shown for an empty tenant root.
    empty_root_time: DateTime<Utc>,
}

impl Tenant {
    pub fn new(
        id: String,
        prefix: String,
        store: SharedStore,
        limits: &crate::limits::Limits,
    ) -> Self {
        fn cache<V: Clone + Send + Sync + 'static>(
            limits: &crate::limits::Limits,
        ) -> Option<Cache<String, V>> {
            // moka takes at most 1000 years; a year is "for ever" here.
            let ttl = limits
                .metadata_ttl()
                .min(std::time::Duration::from_secs(365 * 24 * 3600));
            (!ttl.is_zero()).then(|| {
                Cache::builder()
                    .max_capacity(limits.metadata_cache_entries.max(1) as u64)
                    .time_to_live(ttl)
                    .build()
            })
        }
        Self {
            days: Arc::new(crate::days::Days::new(store.clone(), &prefix, "local")),
            id,
            prefix,
            store,
            storage: format!("storage profile {:?}", crate::config::DEFAULT_STORAGE),
            on_default_storage: true,
            check: None,
            sealed: None,
            sessions: cache(limits),
            dir_times: cache(limits),
            empty_root_time: Utc::now(),
        }
    }

    /// A tenant whose objects are encrypted by `sealed` (which wraps the
    /// shared store).
    pub fn sealed(
        id: String,
        prefix: String,
        sealed: Arc<crate::store::crypt::Crypt>,
        limits: &crate::limits::Limits,
    ) -> Self {
        Self {
            sealed: Some(sealed.clone()),
            ..Self::new(id, prefix, sealed, limits)
        }
    }

    /// The same tenant, noted as living in storage `place`.
    pub fn on_storage(self, place: &crate::config::StorageRef) -> Self {
        Self {
            storage: place.describe(),
            on_default_storage: place.key == crate::config::DEFAULT_STORAGE,
            ..self
        }
    }

    /// The same tenant, its storage checked by listing `store` (see
    /// [`Self::check_storage`]).
    pub fn checking(self, store: SharedStore) -> Self {
        Self {
            check: Some(store),
            ..self
        }
    }

    /// The same tenant with `days` as its day indexes (one per tenant and
    /// process, shared with the archiver).
    pub fn with_days(self, days: Arc<crate::days::Days>) -> Self {
        Self { days, ..self }
    }

    /// Forgets what the caches hold of a session and of every folder time
    /// (after an erase).
    async fn forget(&self, session_prefix: &str) {
        if let Some(c) = &self.sessions {
            c.invalidate(session_prefix).await;
        }
        if let Some(c) = &self.dir_times {
            c.invalidate_all();
        }
    }

    /// What a producer may touch of session `m`.
    fn handle(&self, m: &SessionMeta) -> SessionHandle {
        SessionHandle {
            store: self.store.clone(),
            keys: m.keys.clone(),
            index: m.index.clone(),
            tenant: self.id.clone(),
            path: m.session.path(),
        }
    }

    /// One delimited listing of the tenant's prefix: does storage answer?
    pub async fn check_storage(&self) -> Result<(), StoreError> {
        self.check
            .as_ref()
            .unwrap_or(&self.store)
            .list_page(&self.prefix, Some("/"), None)
            .await
            .map(drop)
    }

    /// A session's metadata; `None` when it is not archived (never cached,
    /// so a session shows as soon as its index is written).
    async fn session(&self, s: &SessionRef) -> Result<Option<Arc<SessionMeta>>, StoreError> {
        let load = async {
            match SessionMeta::load(self.store.as_ref(), &self.prefix, s).await {
                Ok(Some(m)) => Ok(Arc::new(m)),
                Ok(None) => Err(None),
                Err(e) => Err(Some(e)),
            }
        };
        let loaded = match &self.sessions {
            Some(c) => {
                let key = s.keys(&self.prefix).prefix().to_string();
                c.try_get_with(key, load).await.map_err(|e| (*e).clone())
            }
            None => load.await,
        };
        match loaded {
            Ok(m) => Ok(Some(m)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    /// The newest session time under a date folder; `None` when it holds none.
    async fn dir_time(&self, loc: &Loc) -> Result<Option<DateTime<Utc>>, StoreError> {
        let Some(prefix) = loc.dir_prefix(&self.prefix) else {
            return Ok(None);
        };
        match &self.dir_times {
            Some(c) => {
                let load = self.newest_under(loc, &prefix);
                c.try_get_with(prefix.clone(), load)
                    .await
                    .map_err(|e| (*e).clone())
            }
            None => self.newest_under(loc, &prefix).await,
        }
    }

    /// Finds the newest session time under the date folder `loc` (at
    /// `prefix`): the newest call end its day indexes list (every day, not
    /// only the last: a long call filed under an earlier day may end last).
    async fn newest_under(
        &self,
        loc: &Loc,
        prefix: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let depth = match loc {
            Loc::Day(y, m, d) => {
                let day = crate::layout::Day::new(y, m, d);
                return self.days.newest(&day).await;
            }
            Loc::Root => 0,
            Loc::Year(_) => 1,
            Loc::Month(..) => 2,
            Loc::Session(_) | Loc::File(..) => return Ok(None),
        };
        let children = meta::child_dirs(self.store.as_ref(), prefix, depth).await?;
        let times: Vec<Option<DateTime<Utc>>> = futures::stream::iter(children)
            .map(|name| {
                let child = child_loc(loc, &name);
                async move { Box::pin(self.dir_time(&child)).await }
            })
            // Few at once at each level, so that a root listing's
            // look-ups stay bounded (at most 1 × 2 × 8 requests at once).
            .buffer_unordered(match depth {
                2 => DIR_TIME_CONCURRENCY,
                1 => 2,
                _ => 1,
            })
            .try_collect()
            .await?;
        Ok(times.into_iter().flatten().max())
    }
}

/// Child folders whose times are looked up at once.
const DIR_TIME_CONCURRENCY: usize = 8;

fn child_loc(parent: &Loc, name: &str) -> Loc {
    let n = name.to_string();
    match parent {
        Loc::Root => Loc::Year(n),
        Loc::Year(y) => Loc::Month(y.clone(), n),
        Loc::Month(y, m) => Loc::Day(y.clone(), m.clone(), n),
        Loc::Day(y, m, d) => Loc::Session(SessionRef {
            year: y.clone(),
            month: m.clone(),
            day: d.clone(),
            id: n,
        }),
        Loc::Session(s) => Loc::File(s.clone(), n),
        Loc::File(..) => parent.clone(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// What a listing or stat shows of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    /// Bytes a read returns; 0 for folders.
    pub size: u64,
    pub mtime: DateTime<Utc>,
}

/// Errors of the tree, mapped once per protocol.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    #[error("no such file or folder: {0}")]
    NotFound(String),
    #[error("not a folder: {0}")]
    NotADirectory(String),
    #[error("is a folder: {0}")]
    IsADirectory(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The one wording for every write, over every protocol.
    #[error("read-only: recordings cannot be written, renamed or removed")]
    ReadOnly,
    #[error("{0}")]
    InvalidPath(#[from] PathError),
    #[error("storage unavailable, try again later: {0}")]
    Storage(Fault),
    #[error("{0}")]
    Producer(String),
}

/// A storage failure as the tree's clients see it. Its text (keys, bucket,
/// the store's answer) is for the operator's log, never for a client.
#[derive(Debug)]
pub struct Fault {
    kind: FaultKind,
    detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// An object the index promised is not in storage.
    Missing,
    /// A retry may help.
    Transient,
    /// Storage refused the request.
    Refused,
}

impl Fault {
    /// A refusal with this detail (for tests of the protocol mappings).
    pub fn refused(detail: impl Into<String>) -> Self {
        Fault {
            kind: FaultKind::Refused,
            detail: detail.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == FaultKind::Transient
    }

    /// An object that should be there is not.
    pub fn is_missing(&self) -> bool {
        self.kind == FaultKind::Missing
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl From<StoreError> for VfsError {
    fn from(e: StoreError) -> Self {
        let kind = match &e {
            StoreError::NotFound(_) => FaultKind::Missing,
            StoreError::Transient(_) => FaultKind::Transient,
            StoreError::AlreadyExists(_)
            | StoreError::Changed(_)
            | StoreError::Permanent(_)
            | StoreError::Corrupt(_) => FaultKind::Refused,
        };
        VfsError::Storage(Fault {
            kind,
            detail: e.to_string(),
        })
    }
}

/// What a producer may touch of one session: its store, its keys, its
/// index; and, for logs and the audit trail, its tenant and path.
pub struct SessionHandle {
    pub store: SharedStore,
    pub keys: SessionKeys,
    pub index: Arc<SessionIndex>,
    pub tenant: String,
    /// The session folder's path in the tenant's tree.
    pub path: String,
}

/// Produces the bytes of entries that are not stored objects (derived media).
#[async_trait]
pub trait Producer: Send + Sync + 'static {
    /// Entries (name, exact size) this producer adds to a session folder.
    fn entries(&self, index: &SessionIndex) -> Vec<(String, u64)>;
    /// Streams the bytes of entry `name` from `offset`.
    async fn open(
        &self,
        session: &SessionHandle,
        name: &str,
        offset: u64,
    ) -> Result<crate::store::ByteStream, VfsError>;
    /// Streams `[offset, offset + len)` of entry `name` when it is stored
    /// (made and cached), `None` when only a render can serve it now.
    async fn open_range(
        &self,
        _session: &SessionHandle,
        _name: &str,
        _offset: u64,
        _len: u64,
    ) -> Result<Option<crate::store::ByteStream>, VfsError> {
        Ok(None)
    }
    /// The hashes known of entry `name` (none before it was made); never
    /// makes or reads the entry to learn them.
    async fn hashes(&self, session: &SessionHandle, name: &str) -> Result<Hashes, VfsError>;
    /// The server is stopping: ends the work under way (its readers get an
    /// error saying so) and clears what it holds in storage, within a few
    /// seconds.
    async fn stop(&self) {}
}

/// A user's permissions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Perms {
    pub list: bool,
    pub download: bool,
    pub delete: bool,
}

impl Perms {
    pub fn from_list(list: &[Permission]) -> Self {
        Self {
            list: list.contains(&Permission::List),
            download: list.contains(&Permission::Download),
            delete: list.contains(&Permission::Delete),
        }
    }
}

/// One user's view of one tenant's tree.
#[derive(Clone)]
pub struct Vfs {
    tenant: Arc<Tenant>,
    scope: VPath,
    perms: Perms,
    producers: Arc<[Arc<dyn Producer>]>,
}

/// An open file: its entry and where its bytes come from.
#[derive(Clone)]
pub struct OpenFile {
    pub entry: Entry,
    source: Source,
    tenant: Arc<Tenant>,
}

#[derive(Clone)]
enum Source {
    Stored(String, Arc<SessionMeta>),
    Produced(Arc<dyn Producer>, Arc<SessionMeta>),
}

impl OpenFile {
    /// The file's SHA-256 as recorded: by ingest for a stored object, by
    /// the producer's sums for a rendered one; `None` when not recorded
    /// (the file is never read to hash it).
    pub async fn recorded_sha256(&self) -> Option<String> {
        match &self.source {
            Source::Stored(_, m) => m.index.object(&self.entry.name)?.hashes().sha256,
            Source::Produced(p, m) => {
                p.hashes(&self.tenant.handle(m), &self.entry.name)
                    .await
                    .ok()?
                    .sha256
            }
        }
    }

    /// A tag that changes whenever the file's bytes could (for HTTP
    /// `ETag`): a hash of its name, size and the recorded SHA-256s of the
    /// session's stored objects, which derived files are made from. The
    /// same before and after a derived file is rendered, and on every node.
    pub fn version(&self) -> String {
        use sha2::Digest as _;
        let m = match &self.source {
            Source::Stored(_, m) | Source::Produced(_, m) => m,
        };
        let mut h = sha2::Sha256::new();
        h.update(self.entry.name.as_bytes());
        h.update(self.entry.size.to_be_bytes());
        for (name, d) in &m.index.recvault.objects {
            h.update(name.as_bytes());
            h.update(d.sha256_hex().unwrap_or_default().as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }

    /// Streams the file's bytes from `offset` to its end.
    pub async fn stream_from(&self, offset: u64) -> Result<ByteStream, VfsError> {
        if offset >= self.entry.size {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let body = match &self.source {
            Source::Stored(key, m) => self.stored(key, m, offset, None).await?,
            Source::Produced(p, m) => {
                p.open(&self.tenant.handle(m), &self.entry.name, offset)
                    .await?
            }
        };
        Ok(Box::pin(body.map(|c| c.map_err(VfsError::from))))
    }

    /// Streams `[offset, offset + len)` with one ranged read; `Ok(None)`
    /// when the file cannot be read in ranges now (a derived file not made
    /// yet streams only from its render).
    pub async fn range(&self, offset: u64, len: u64) -> Result<Option<ByteStream>, VfsError> {
        let body = match &self.source {
            Source::Stored(key, m) => self.stored(key, m, offset, Some(len)).await?,
            Source::Produced(p, m) => {
                match p
                    .open_range(&self.tenant.handle(m), &self.entry.name, offset, len)
                    .await?
                {
                    Some(body) => body,
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(Box::pin(body.map(|c| c.map_err(VfsError::from)))))
    }

    /// Where a range ending at or after `at` should end, so that storage
    /// reads whole units (the tenant's encryption segments).
    pub fn range_boundary(&self, at: u64) -> u64 {
        self.tenant.store.range_boundary(at).min(self.entry.size)
    }

    async fn stored(
        &self,
        key: &str,
        m: &SessionMeta,
        offset: u64,
        len: Option<u64>,
    ) -> Result<crate::store::ByteStream, VfsError> {
        let got = self.tenant.store.get_object(key, offset, len).await?;
        let recorded = m
            .index
            .object(&self.entry.name)
            .and_then(|d| d.sealed.clone());
        if let (Some(mark), None) = (recorded, &got.meta.mark) {
            // Read as clear, it would serve ciphertext as the file.
            return Err(VfsError::from(crate::store::StoreError::Corrupt(format!(
                "{key} is stored without the encryption mark its index records ({mark}): its metadata was removed or the object replaced; not served"
            ))));
        }
        Ok(got.body)
    }
}

impl Vfs {
    pub fn new(
        tenant: Arc<Tenant>,
        scope: VPath,
        perms: Perms,
        producers: Arc<[Arc<dyn Producer>]>,
    ) -> Self {
        Self {
            tenant,
            scope,
            perms,
            producers,
        }
    }

    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    pub fn perms(&self) -> Perms {
        self.perms
    }

    /// Whether `p` has the shape of a session folder (it may not exist).
    pub fn is_session(&self, p: &VPath) -> bool {
        matches!(self.locate(p), Ok(Loc::Session(_)))
    }

    /// Whether `p` has the shape of a day folder (its entries are sessions).
    pub fn is_day(&self, p: &VPath) -> bool {
        matches!(self.locate(p), Ok(Loc::Day(..)))
    }

    /// Resolves a client path (absolute, or relative to `cwd`) in this view.
    pub fn resolve(&self, cwd: &VPath, raw: &str) -> Result<VPath, VfsError> {
        Ok(VPath::resolve(cwd, raw)?)
    }

    fn locate(&self, p: &VPath) -> Result<Loc, VfsError> {
        Loc::of(&self.scope.join(p)).ok_or_else(|| VfsError::NotFound(p.to_string()))
    }

    fn need_list(&self) -> Result<(), VfsError> {
        if self.perms.list {
            Ok(())
        } else {
            Err(VfsError::PermissionDenied(
                "this user may not list or stat".into(),
            ))
        }
    }

    /// The entries a session folder shows: stored objects, then produced ones.
    fn session_entries(&self, m: &Arc<SessionMeta>) -> Vec<(Entry, Source)> {
        let mut out: Vec<(Entry, Source)> = m
            .files
            .iter()
            .map(|f| {
                let e = Entry {
                    name: f.name.clone(),
                    kind: Kind::File,
                    size: f.size,
                    mtime: m.ended_at,
                };
                (e, Source::Stored(f.key.clone(), m.clone()))
            })
            .collect();
        for p in self.producers.iter() {
            for (name, size) in p.entries(&m.index) {
                if out.iter().any(|(e, _)| e.name == name) {
                    continue;
                }
                let e = Entry {
                    name,
                    kind: Kind::File,
                    size,
                    mtime: m.ended_at,
                };
                out.push((e, Source::Produced(p.clone(), m.clone())));
            }
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        out
    }

    /// The entry `name` of a session folder (stored or produced); `p` is
    /// its path, for the error when there is none.
    fn session_entry(
        &self,
        m: &Arc<SessionMeta>,
        name: &str,
        p: &VPath,
    ) -> Result<(Entry, Source), VfsError> {
        self.session_entries(m)
            .into_iter()
            .find(|(e, _)| e.name == name)
            .ok_or_else(|| VfsError::NotFound(p.to_string()))
    }

    async fn session_meta(&self, s: &SessionRef, p: &VPath) -> Result<Arc<SessionMeta>, VfsError> {
        self.tenant
            .session(s)
            .await?
            .ok_or_else(|| VfsError::NotFound(p.to_string()))
    }

    /// Finds one entry and where its bytes come from.
    async fn find(&self, p: &VPath) -> Result<(Entry, Option<Source>), VfsError> {
        let name = p.name().unwrap_or("/").to_string();
        let dir = |mtime| Entry {
            name: name.clone(),
            kind: Kind::Dir,
            size: 0,
            mtime,
        };
        match self.locate(p)? {
            Loc::Session(s) => Ok((dir(self.session_meta(&s, p).await?.ended_at), None)),
            Loc::File(s, file) => {
                let m = self.session_meta(&s, p).await?;
                let (e, src) = self.session_entry(&m, &file, p)?;
                Ok((e, Some(src)))
            }
            loc => match self.tenant.dir_time(&loc).await? {
                Some(t) => Ok((dir(t), None)),
                None if p.is_root() => Ok((
                    dir(loc.date_floor().unwrap_or(self.tenant.empty_root_time)),
                    None,
                )),
                None => Err(VfsError::NotFound(p.to_string())),
            },
        }
    }

    /// Size, kind and time of one entry.
    pub async fn stat(&self, p: &VPath) -> Result<Entry, VfsError> {
        self.need_list()?;
        Ok(self.find(p).await?.0)
    }

    /// Starts listing a folder; entries come in batches from [`DirLister::next_batch`].
    pub async fn list(&self, p: &VPath) -> Result<DirLister, VfsError> {
        self.need_list()?;
        let loc = self.locate(p)?;
        match &loc {
            Loc::File(..) => {
                // Distinguish "not a folder" from "missing".
                self.find(p).await?;
                Err(VfsError::NotADirectory(p.to_string()))
            }
            Loc::Session(s) => {
                let m = self.session_meta(s, p).await?;
                let entries = self
                    .session_entries(&m)
                    .into_iter()
                    .map(|(e, _)| e)
                    .collect();
                Ok(DirLister::fixed(entries))
            }
            Loc::Day(y, m, d) => {
                let index = self
                    .tenant
                    .days
                    .day(&crate::layout::Day::new(y, m, d))
                    .await?;
                if !p.is_root() && index.sessions.is_empty() {
                    return Err(VfsError::NotFound(p.to_string()));
                }
                Ok(DirLister::day(index))
            }
            Loc::Root | Loc::Year(_) | Loc::Month(..) => {
                if !p.is_root() && self.tenant.dir_time(&loc).await?.is_none() {
                    return Err(VfsError::NotFound(p.to_string()));
                }
                Ok(DirLister::dates(self.tenant.clone(), loc))
            }
        }
    }

    /// The day index behind a day folder: its sessions with their times,
    /// parties, queue, tags and entry sizes (what a search filters on).
    /// An empty index for a day with no sessions.
    pub async fn day(&self, p: &VPath) -> Result<Arc<crate::layout::day::DayIndex>, VfsError> {
        self.need_list()?;
        let Loc::Day(y, m, d) = self.locate(p)? else {
            return Err(VfsError::NotFound(p.to_string()));
        };
        Ok(self
            .tenant
            .days
            .day(&crate::layout::Day::new(&y, &m, &d))
            .await?)
    }

    /// The index of a session folder (`info.json` as the tree read it).
    pub async fn session_index(&self, p: &VPath) -> Result<Arc<SessionIndex>, VfsError> {
        self.need_list()?;
        let Loc::Session(s) = self.locate(p)? else {
            return Err(VfsError::NotFound(p.to_string()));
        };
        Ok(self.session_meta(&s, p).await?.index.clone())
    }

    /// The SHA-256 (hex) of a stored file, when ingest recorded it; `None`
    /// for files whose hash is not known without reading them.
    pub async fn sha256(&self, p: &VPath) -> Result<Option<String>, VfsError> {
        Ok(self.hashes(p).await?.sha256)
    }

    /// The MD5, SHA-1 and SHA-256 recorded for a file: by ingest for stored
    /// objects, by the producer for derived ones once they were made. A hash
    /// not recorded is `None`; a file is never read to hash it.
    pub async fn hashes(&self, p: &VPath) -> Result<Hashes, VfsError> {
        self.need_list()?;
        let Loc::File(s, name) = self.locate(p)? else {
            return Err(VfsError::IsADirectory(p.to_string()));
        };
        let m = self.session_meta(&s, p).await?;
        // Stored or produced: a name the folder does not show is NotFound.
        match self.session_entry(&m, &name, p)?.1 {
            Source::Stored(..) => Ok(m
                .index
                .object(&name)
                .map(|o| o.hashes())
                .unwrap_or_default()),
            Source::Produced(producer, m) => producer.hashes(&self.tenant.handle(&m), &name).await,
        }
    }

    /// Erases a whole session folder: every object under it, the index
    /// last (so an interrupted erase is still visible and can be repeated),
    /// then its entry in the day index (an erase repeated after the objects
    /// went removes a leftover entry and returns 0). Needs the `delete`
    /// permission. Returns the number of objects removed.
    pub async fn erase(&self, p: &VPath) -> Result<usize, VfsError> {
        if !self.perms.delete {
            return Err(VfsError::PermissionDenied(
                "this user may not delete".into(),
            ));
        }
        let Loc::Session(s) = self.locate(p)? else {
            return Err(VfsError::PermissionDenied(
                "only a whole session folder can be erased".into(),
            ));
        };
        let day = crate::layout::Day::new(&s.year, &s.month, &s.day);
        if let Err(e) = self.session_meta(&s, p).await {
            if matches!(e, VfsError::NotFound(_))
                && self
                    .tenant
                    .days
                    .day(&day)
                    .await?
                    .sessions
                    .contains_key(&s.id)
            {
                self.tenant.days.remove(&day, &s.id).await?;
                self.tenant
                    .forget(s.keys(&self.tenant.prefix).prefix())
                    .await;
                return Ok(0);
            }
            return Err(e);
        }
        let session = s.keys(&self.tenant.prefix);
        let prefix = session.prefix();
        let index = session.index();
        let mut keys = Vec::new();
        let mut next = None;
        loop {
            let page = self.tenant.store.list_page(prefix, None, next).await?;
            keys.extend(page.objects.into_iter().map(|o| o.key));
            next = page.next;
            if next.is_none() {
                break;
            }
        }
        keys.retain(|k| *k != index);
        for k in &keys {
            self.tenant.store.delete(k).await?;
        }
        self.tenant.store.delete(&index).await?;
        let unlisted = self.tenant.days.remove(&day, &s.id).await;
        self.tenant.forget(prefix).await;
        unlisted?;
        Ok(keys.len() + 1)
    }

    /// Opens a file for reading.
    pub async fn open(&self, p: &VPath) -> Result<OpenFile, VfsError> {
        if !self.perms.download {
            return Err(VfsError::PermissionDenied(
                "this user may not download".into(),
            ));
        }
        let (entry, source) = self.find(p).await?;
        let source = source.ok_or_else(|| VfsError::IsADirectory(p.to_string()))?;
        Ok(OpenFile {
            entry,
            source,
            tenant: self.tenant.clone(),
        })
    }
}

#[cfg(test)]
mod ranged_tests;
#[cfg(test)]
mod tests;
