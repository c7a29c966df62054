//! Object storage: one trait, one method per operation, and its backends.
//!
//! `s3` speaks to S3 (or any S3-compatible store) through aws-sdk-s3; `local`
//! keeps objects as files under a directory with the same semantics (atomic
//! writes, conditional create), for `recvault demo` and unit tests. Nothing
//! above this module knows which one it talks to.

pub mod crypt;
pub mod inflight;
pub mod local;
pub mod s3;
#[cfg(test)]
pub mod tap;
pub mod timeout;
pub mod union;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;

/// What one stored object looks like from a listing or a HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    /// recvault's mark on the object (S3 metadata `x-amz-meta-recvault-mark`;
    /// on the local backend a file beside it), set by the writer: how the
    /// object is encrypted ([`crypt`]). Head and get carry it; listings do
    /// not (S3 lists no metadata), so they leave it `None`.
    pub mark: Option<String>,
    /// The object's version tag (S3's ETag; on the local backend its file's
    /// identity), for a write that must not lose a change made since the
    /// read ([`PutOptions::if_match`]). Listings carry it too.
    pub etag: Option<String>,
}

/// An object being read: its metadata (the size of the whole object, not
/// of the range) and the body of the range.
pub struct Got {
    pub meta: ObjectMeta,
    pub body: ByteStream,
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListPage {
    /// Objects directly matching, in key order.
    pub objects: Vec<ObjectMeta>,
    /// With a delimiter: the rolled-up "sub-folders", each ending with the delimiter.
    pub common_prefixes: Vec<String>,
    /// Pass back to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A body being streamed from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub id: String,
    pub started: DateTime<Utc>,
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Create only if no object has the key (`If-None-Match: *`).
    pub if_absent: bool,
    /// The object's mark ([`ObjectMeta::mark`]), stored with it atomically.
    pub mark: Option<String>,
    /// Replace only the object with this [`ObjectMeta::etag`] (`If-Match`);
    /// [`StoreError::Changed`] when it has another (or is gone).
    pub if_match: Option<String>,
}

impl PutOptions {
    /// Create only if absent.
    pub fn if_absent() -> Self {
        Self {
            if_absent: true,
            ..Self::default()
        }
    }
}

/// Storage errors, each knowing whether a retry may help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    /// A conditional write (`If-Match`) met another version of the object.
    #[error("object changed since it was read: {0}")]
    Changed(String),
    #[error("storage request failed (transient, may be retried): {0}")]
    Transient(String),
    #[error("storage request failed: {0}")]
    Permanent(String),
    /// The object is there but is not what was stored: it fails
    /// authentication, is cut short, or is sealed by a key the keyset lacks.
    #[error("stored object is damaged or not readable with this keyset: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }

    /// The error's kind in one word (metrics' outcome label).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::AlreadyExists(_) => "exists",
            StoreError::Changed(_) => "changed",
            StoreError::Transient(_) => "transient",
            StoreError::Permanent(_) => "permanent",
            StoreError::Corrupt(_) => "corrupt",
        }
    }
}

/// The operations recvault needs from an object store.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Size and time of one object, `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// Streams `[offset, offset+len)` of an object (to its end when `len`
    /// is `None`), with the whole object's metadata. A range at or past the
    /// end is an empty body.
    async fn get_object(&self, key: &str, offset: u64, len: Option<u64>)
        -> Result<Got, StoreError>;

    /// The first offset at or after `at` where a ranged read should start
    /// (and the one before it end) so that the store reads whole units: an
    /// encryption segment's first plaintext byte; `at` itself for a store
    /// that serves any byte range as cheaply.
    fn range_boundary(&self, at: u64) -> u64 {
        at
    }

    /// [`Self::get_object`]'s body alone.
    async fn get(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ByteStream, StoreError> {
        Ok(self.get_object(key, offset, len).await?.body)
    }

    /// One page of keys under `prefix`, in key order, rolled up at `delimiter`.
    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError>;

    /// Writes a whole object atomically.
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError>;

    /// Starts a multipart upload of an object marked `mark` and returns its id.
    async fn multipart_start(&self, key: &str, mark: Option<&str>) -> Result<String, StoreError>;

    /// Uploads part `number` (1-based) and returns its tag.
    async fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError>;

    /// Completes an upload from its parts' tags, in order; the object appears atomically.
    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError>;

    /// Abandons an upload and frees its parts.
    async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError>;

    /// The unfinished multipart uploads of keys under `prefix` (all pages).
    async fn multipart_list(&self, prefix: &str) -> Result<Vec<Upload>, StoreError>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

pub type SharedStore = Arc<dyn ObjectStore>;

/// Aborts the unfinished multipart uploads under `prefix` started more than
/// `age` ago (archives and renders of a process that died or lost its
/// storage mid-upload; their parts are billed until aborted). Returns how
/// many were aborted.
pub async fn abort_orphan_uploads(
    store: &dyn ObjectStore,
    prefix: &str,
    age: std::time::Duration,
) -> Result<usize, StoreError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let mut n = 0;
    for u in store.multipart_list(prefix).await? {
        if u.started <= cutoff {
            store.multipart_abort(&u.key, &u.id).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Reads a whole (small) object into memory, refusing ones above `max` bytes.
pub async fn read_all(store: &dyn ObjectStore, key: &str, max: u64) -> Result<Bytes, StoreError> {
    let body = store.get(key, 0, None).await?;
    gather(body, key, max).await
}

/// An object whole with its metadata (its ETag, for a write back over the
/// version read), refused past `max` bytes; `None` when there is none.
pub async fn read_versioned(
    store: &dyn ObjectStore,
    key: &str,
    max: u64,
) -> Result<Option<(Bytes, ObjectMeta)>, StoreError> {
    let got = match store.get_object(key, 0, None).await {
        Ok(g) => g,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some((gather(got.body, key, max).await?, got.meta)))
}

/// A body's bytes, refused past `max`.
async fn gather(mut body: ByteStream, key: &str, max: u64) -> Result<Bytes, StoreError> {
    use futures::StreamExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(StoreError::Permanent(format!(
                "{key} is larger than {max} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// One multipart upload under way: its parts numbered in order and their
/// tags kept, completed whole or aborted (its parts freed). Every upload in
/// parts (archives, renders, party files) goes through it.
pub struct Multipart<'a> {
    store: &'a dyn ObjectStore,
    key: String,
    id: String,
    tags: Vec<String>,
}

impl<'a> Multipart<'a> {
    pub async fn start(store: &'a dyn ObjectStore, key: &str) -> Result<Self, StoreError> {
        Self::start_marked(store, key, None).await
    }

    /// [`Self::start`] of an object marked `mark`.
    pub async fn start_marked(
        store: &'a dyn ObjectStore,
        key: &str,
        mark: Option<&str>,
    ) -> Result<Self, StoreError> {
        let id = store.multipart_start(key, mark).await?;
        Ok(Self {
            store,
            key: key.to_string(),
            id,
            tags: Vec::new(),
        })
    }

    /// The upload's id (to record it, so a restart can abort it).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Parts uploaded so far.
    pub fn parts(&self) -> usize {
        self.tags.len()
    }

    /// Uploads the next part.
    pub async fn part(&mut self, body: Bytes) -> Result<(), StoreError> {
        let n = self.tags.len() as u32 + 1;
        let tag = self
            .store
            .multipart_part(&self.key, &self.id, n, body)
            .await?;
        self.tags.push(tag);
        Ok(())
    }

    /// Makes the object appear; if that fails, the upload is aborted.
    pub async fn complete(self) -> Result<(), StoreError> {
        let done = self
            .store
            .multipart_complete(&self.key, &self.id, self.tags.clone())
            .await;
        if done.is_err() {
            self.abort().await;
        }
        done
    }

    /// Abandons the upload (best effort: the orphan sweep catches the rest).
    pub async fn abort(self) {
        let _ = self.store.multipart_abort(&self.key, &self.id).await;
    }
}

/// Parts of [`upload_file`]'s multipart uploads (S3's minimum is 5 MiB).
pub const UPLOAD_PART: usize = 8 * 1024 * 1024;

/// Every page of a listing of `prefix` (rolled up at `delimiter`), as one page.
pub async fn list_all(
    store: &dyn ObjectStore,
    prefix: &str,
    delimiter: Option<&str>,
) -> Result<ListPage, StoreError> {
    let mut all = ListPage {
        objects: Vec::new(),
        common_prefixes: Vec::new(),
        next: None,
    };
    let mut next = None;
    loop {
        let page = store.list_page(prefix, delimiter, next).await?;
        all.objects.extend(page.objects);
        all.common_prefixes.extend(page.common_prefixes);
        next = page.next;
        if next.is_none() {
            return Ok(all);
        }
    }
}

/// Stores the `size` bytes of `file` at `key`, in 8 MiB parts when larger
/// than one (never whole in memory), handing every byte to `seen` in order
/// (to hash it) whether or not it is uploaded. With `if_absent`, an object
/// already at `key` is kept and `AlreadyExists` returned once the file has
/// been read through.
pub async fn upload_file(
    store: &dyn ObjectStore,
    key: &str,
    file: std::fs::File,
    size: u64,
    opts: PutOptions,
    mut seen: impl FnMut(&[u8]),
) -> Result<(), StoreError> {
    let mut file = tokio::fs::File::from_std(file);
    if size <= UPLOAD_PART as u64 {
        let body = read_part(&mut file, key).await?;
        seen(&body);
        return store.put(key, Bytes::from(body), opts).await;
    }
    let exists = opts.if_absent && store.head(key).await?.is_some();
    let mut upload = if exists {
        None
    } else {
        Some(Multipart::start(store, key).await?)
    };
    let sent = async {
        loop {
            let part = read_part(&mut file, key).await?;
            if part.is_empty() {
                return Ok(());
            }
            seen(&part);
            if let Some(up) = upload.as_mut() {
                up.part(Bytes::from(part)).await?;
            }
        }
    }
    .await;
    let Some(up) = upload else {
        return sent.and(Err(StoreError::AlreadyExists(key.to_string())));
    };
    match sent {
        Ok(()) => up.complete().await,
        Err(e) => {
            up.abort().await;
            Err(e)
        }
    }
}

/// Stores the bytes of `body` at `key` (marked `mark`): one PUT when they
/// fit in one part, else a multipart upload of [`UPLOAD_PART`] parts, never
/// more than a part in memory. Hands every byte to `seen` in order; returns
/// how many there were. A failed body aborts the upload.
pub async fn upload_stream(
    store: &dyn ObjectStore,
    key: &str,
    mut body: ByteStream,
    mark: Option<String>,
    mut seen: impl FnMut(&[u8]) + Send,
) -> Result<u64, StoreError> {
    use futures::StreamExt;
    let mut buf = bytes::BytesMut::new();
    let mut upload: Option<Multipart<'_>> = None;
    let mut total = 0u64;
    let sent = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            seen(&chunk);
            total += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            while buf.len() >= UPLOAD_PART {
                let part = buf.split_to(UPLOAD_PART).freeze();
                if upload.is_none() {
                    upload = Some(Multipart::start_marked(store, key, mark.as_deref()).await?);
                }
                if let Some(up) = upload.as_mut() {
                    up.part(part).await?;
                }
            }
        }
        Ok::<_, StoreError>(())
    }
    .await;
    match (sent, upload) {
        (Ok(()), None) => {
            let opts = PutOptions {
                mark,
                ..PutOptions::default()
            };
            store.put(key, buf.freeze(), opts).await?;
        }
        (Ok(()), Some(mut up)) => {
            if !buf.is_empty() {
                if let Err(e) = up.part(buf.freeze()).await {
                    up.abort().await;
                    return Err(e);
                }
            }
            up.complete().await?;
        }
        (Err(e), up) => {
            if let Some(up) = up {
                up.abort().await;
            }
            return Err(e);
        }
    }
    Ok(total)
}

/// The next (up to) [`UPLOAD_PART`] bytes of `file`.
async fn read_part(file: &mut tokio::fs::File, key: &str) -> Result<Vec<u8>, StoreError> {
    use tokio::io::AsyncReadExt;
    let mut part = vec![0u8; UPLOAD_PART];
    let mut got = 0;
    while got < part.len() {
        let n = file
            .read(&mut part[got..])
            .await
            .map_err(|e| StoreError::Permanent(format!("reading the file for {key}: {e}")))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    part.truncate(got);
    Ok(part)
}

/// Whether a store honours conditional writes (SPEC §4): the write-once
/// `info.json` and the cross-node render lease rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditional {
    /// A second create of one key with `If-None-Match: *` is refused.
    pub if_none_match: bool,
    /// A write on an ETag the object no longer has (`If-Match`) is refused.
    pub if_match: bool,
}

impl Conditional {
    pub fn trusted(&self) -> bool {
        self.if_none_match && self.if_match
    }
}

/// Tries conditional writes on a probe object at `key` (removed after):
/// creates it twice with `If-None-Match: *`, and writes it on a stale ETag.
pub async fn selftest(store: &dyn ObjectStore, key: &str) -> Result<Conditional, StoreError> {
    let create =
        |body: &'static [u8]| store.put(key, Bytes::from_static(body), PutOptions::if_absent());
    let result = async {
        // A store that refuses the condition outright (400, 501) does not
        // honour it either.
        let mut if_none_match = true;
        match create(b"first").await {
            Ok(()) => {}
            Err(StoreError::Permanent(_)) => {
                store
                    .put(key, Bytes::from_static(b"first"), PutOptions::default())
                    .await?;
                if_none_match = false;
            }
            Err(e) => return Err(e),
        }
        if_none_match &= matches!(create(b"second").await, Err(StoreError::AlreadyExists(_)));
        let first = store
            .head(key)
            .await?
            .and_then(|m| m.etag)
            .ok_or_else(|| StoreError::Permanent(format!("{key}: the store gives no ETag")))?;
        let on = |tag: String, body: &'static [u8]| {
            store.put(
                key,
                Bytes::from_static(body),
                PutOptions {
                    if_match: Some(tag),
                    ..PutOptions::default()
                },
            )
        };
        let if_match = match on(first.clone(), b"third").await {
            Ok(()) => matches!(on(first, b"fourth").await, Err(StoreError::Changed(_))),
            Err(StoreError::Permanent(_) | StoreError::Changed(_)) => false,
            Err(e) => return Err(e),
        };
        Ok(Conditional {
            if_none_match,
            if_match,
        })
    }
    .await;
    let _ = store.delete(key).await;
    result
}

/// Opens the store the configuration names, every wait on it bounded by
/// `limits` ([`timeout::Timeouts`]), its unfinished uploads tracked for the
/// stop ([`inflight::Inflight`]).
pub async fn open(
    cfg: &crate::config::StorageConfig,
    limits: &crate::limits::Limits,
) -> Result<Arc<inflight::Inflight>, String> {
    let (op, stall) = (
        std::time::Duration::from_secs(limits.storage_timeout_secs),
        std::time::Duration::from_secs(limits.storage_stall_secs),
    );
    let bounded: SharedStore = match cfg.backend.get_ref() {
        crate::config::Backend::Local => {
            let path = cfg.path.as_ref().ok_or("[storage] path is required")?;
            let store = local::LocalStore::open(path.get_ref()).map_err(|e| e.to_string())?;
            Arc::new(timeout::Timeouts::new(store, op, stall))
        }
        crate::config::Backend::S3 => {
            let store = s3::S3Store::connect(cfg, s3::Attempts::of(limits)).await?;
            Arc::new(timeout::Timeouts::new(store, op, stall))
        }
    };
    Ok(Arc::new(inflight::Inflight::new(bounded)))
}

/// Every store a process uses, each opened once: the default profile
/// (`[storage]`, the operator's, where the audit anchors live) and, when a
/// tenant first needs it, a `[[storages]]` profile or a tenant's own
/// `[tenants.storage]`. Each has its own client, credentials, bounds
/// ([`timeout::Timeouts`]) and uploads in flight, so one tenant's
/// unreachable bucket holds no other tenant's requests.
pub struct Stores {
    limits: crate::limits::Limits,
    default: Arc<inflight::Inflight>,
    others: tokio::sync::Mutex<std::collections::HashMap<String, Arc<inflight::Inflight>>>,
}

impl Stores {
    /// Opens the default profile; the others open on first use.
    pub async fn open(cfg: &crate::config::Config) -> Result<Arc<Stores>, String> {
        Ok(Arc::new(Stores {
            limits: cfg.limits.clone(),
            default: open(&cfg.storage, &cfg.limits).await?,
            others: Default::default(),
        }))
    }

    /// The default profile's store.
    pub fn default_store(&self) -> SharedStore {
        self.default.clone()
    }

    /// The store of tenant `t` (opened now if it is the first tenant on it);
    /// an error names the tenant and its storage.
    pub async fn of_tenant(
        &self,
        cfg: &crate::config::Config,
        t: &crate::config::TenantConfig,
    ) -> Result<SharedStore, String> {
        let id = t.id.get_ref();
        let place = cfg
            .storage_of(t)
            .ok_or_else(|| format!("tenant {id:?}: its storage profile is not configured"))?;
        if place.key == crate::config::DEFAULT_STORAGE {
            return Ok(self.default.clone());
        }
        let mut others = self.others.lock().await;
        if let Some(s) = others.get(place.key) {
            return Ok(s.clone());
        }
        let store = open(place.cfg, &self.limits)
            .await
            .map_err(|e| format!("tenant {id:?}: storage {}: {e}", place.describe()))?;
        others.insert(place.key.to_string(), store.clone());
        Ok(store)
    }

    /// The raw stores of tenant `t`'s tree: where its sessions are read
    /// (its storage; for `delivery = "customer"` its storage over the
    /// operator's backup, [`union::Union`]) and where its day indexes and
    /// archives go (its storage; the backup for `delivery = "customer"`).
    pub async fn tree_of(
        &self,
        cfg: &crate::config::Config,
        t: &crate::config::TenantConfig,
    ) -> Result<(SharedStore, SharedStore), String> {
        let home = self.of_tenant(cfg, t).await?;
        if t.delivery() != crate::config::Delivery::Customer {
            return Ok((home.clone(), home));
        }
        let backup = self.default_store();
        Ok((Arc::new(union::Union::new(home, backup.clone())), backup))
    }

    /// Aborts the uploads still under way in every store (all at once);
    /// how many there were.
    pub async fn close(&self) -> usize {
        let others: Vec<_> = self.others.lock().await.values().cloned().collect();
        let closing = others.iter().map(|s| s.close());
        let (first, rest) = tokio::join!(self.default.close(), futures::future::join_all(closing));
        first + rest.into_iter().sum::<usize>()
    }
}

#[doc(hidden)]
pub mod contract {
    //! Behaviour every backend must show; the unit tests run it on the local
    //! backend and the integration tests on S3 (moto). Not an API.
    use super::*;
    use futures::StreamExt;

    async fn body(store: &dyn ObjectStore, key: &str, off: u64, len: Option<u64>) -> Vec<u8> {
        let mut s = store.get(key, off, len).await.expect("get");
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.expect("chunk"));
        }
        out
    }

    /// Runs the contract under `base` (a prefix ending with '/').
    pub async fn run(store: &dyn ObjectStore, base: &str) {
        let k = |s: &str| format!("{base}{s}");
        let put = |key: String, data: &'static [u8]| async move {
            store
                .put(&key, Bytes::from_static(data), PutOptions::default())
                .await
                .unwrap()
        };
        assert!(store.head(&k("p/a")).await.unwrap().is_none());
        put(k("p/a"), b"hello world").await;
        put(k("p/empty"), b"").await;
        put(k("p/d/x"), b"x").await;
        put(k("p/d/y"), b"yy").await;
        put(k("q/z"), b"z").await;

        assert_eq!(store.head(&k("p/a")).await.unwrap().unwrap().size, 11);
        assert_eq!(body(store, &k("p/a"), 0, None).await, b"hello world");
        assert_eq!(body(store, &k("p/a"), 6, None).await, b"world");
        assert_eq!(body(store, &k("p/a"), 0, Some(5)).await, b"hello");
        assert_eq!(
            body(store, &k("p/a"), 11, None).await,
            b"",
            "a range at the end is empty"
        );
        assert_eq!(body(store, &k("p/empty"), 0, None).await, b"");
        let missing = store.get(&k("p/missing"), 0, None).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))));

        let err = store
            .put(
                &k("p/a"),
                Bytes::from_static(b"other"),
                PutOptions::if_absent(),
            )
            .await;
        assert!(matches!(err, Err(StoreError::AlreadyExists(_))), "{err:?}");
        assert_eq!(body(store, &k("p/a"), 0, None).await, b"hello world");
        store
            .put(
                &k("p/new"),
                Bytes::from_static(b"n"),
                PutOptions::if_absent(),
            )
            .await
            .unwrap();

        let page = store.list_page(&k("p/"), Some("/"), None).await.unwrap();
        let keys: Vec<_> = page.objects.iter().map(|o| o.key.clone()).collect();
        assert_eq!(keys, [k("p/a"), k("p/empty"), k("p/new")]);
        assert_eq!(page.common_prefixes, [k("p/d/")]);
        let page = store.list_page(&k("p/"), None, None).await.unwrap();
        let keys: Vec<_> = page.objects.iter().map(|o| o.key.clone()).collect();
        assert_eq!(
            keys,
            [k("p/a"), k("p/d/x"), k("p/d/y"), k("p/empty"), k("p/new")]
        );

        let big = k("p/big");
        let up = store.multipart_start(&big, None).await.unwrap();
        let part = Bytes::from(vec![1u8; 5 * 1024 * 1024]);
        let t1 = store.multipart_part(&big, &up, 1, part).await.unwrap();
        let t2 = store
            .multipart_part(&big, &up, 2, Bytes::from_static(b"tail"))
            .await
            .unwrap();
        assert!(
            store.head(&big).await.unwrap().is_none(),
            "invisible until complete"
        );
        store
            .multipart_complete(&big, &up, vec![t1, t2])
            .await
            .unwrap();
        assert_eq!(
            store.head(&big).await.unwrap().unwrap().size,
            5 * 1024 * 1024 + 4
        );
        assert_eq!(body(store, &big, 5 * 1024 * 1024, None).await, b"tail");
        let aborted = store.multipart_start(&k("p/gone"), None).await.unwrap();
        // Unfinished uploads are listed under their prefix, with their key.
        let listed = store.multipart_list(&k("p/")).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|u| (u.key.clone(), u.id.clone()))
                .collect::<Vec<_>>(),
            [(k("p/gone"), aborted.clone())],
            "a completed upload is not listed; an open one is"
        );
        assert!(store.multipart_list(&k("q/")).await.unwrap().is_empty());
        store.multipart_abort(&k("p/gone"), &aborted).await.unwrap();
        assert!(store.head(&k("p/gone")).await.unwrap().is_none());
        assert!(store.multipart_list(&k("p/")).await.unwrap().is_empty());

        store.delete(&k("p/a")).await.unwrap();
        store.delete(&k("p/a")).await.unwrap();
        assert!(store.head(&k("p/a")).await.unwrap().is_none());

        // Writes on a version (If-Match): the first on the version read
        // wins, a second on the same version is refused.
        let v = k("c/x");
        put(v.clone(), b"one").await;
        let tag = store
            .head(&v)
            .await
            .unwrap()
            .unwrap()
            .etag
            .expect("an ETag");
        let on = |tag: String| PutOptions {
            if_match: Some(tag),
            ..PutOptions::default()
        };
        store
            .put(&v, Bytes::from_static(b"two"), on(tag.clone()))
            .await
            .unwrap();
        let stale = store.put(&v, Bytes::from_static(b"three"), on(tag)).await;
        assert!(matches!(stale, Err(StoreError::Changed(_))), "{stale:?}");
        assert_eq!(body(store, &v, 0, None).await, b"two");
        let listed = store.list_page(&k("c/"), None, None).await.unwrap();
        assert_eq!(
            listed.objects[0].etag,
            store.head(&v).await.unwrap().unwrap().etag,
            "a listing carries the ETag a head gives"
        );
        let gone = store
            .put(
                &k("c/missing"),
                Bytes::from_static(b"x"),
                on("\"nope\"".into()),
            )
            .await;
        assert!(matches!(gone, Err(StoreError::Changed(_))), "{gone:?}");
        store.delete(&v).await.unwrap();
        let probe = selftest(store, &k("probe")).await.unwrap();
        assert!(probe.trusted(), "{probe:?}");
    }

    /// The backend's part of the contract: marks are stored with their
    /// objects (a decorator that sets its own marks runs [`run`] only).
    pub async fn marks(store: &dyn ObjectStore, base: &str) {
        let k = |s: &str| format!("{base}{s}");
        store
            .put(&k("m/a"), Bytes::from_static(b"a"), PutOptions::default())
            .await
            .unwrap();
        let opts = PutOptions {
            if_absent: true,
            mark: Some("other mark".into()),
            if_match: None,
        };
        let err = store
            .put(&k("m/a"), Bytes::from_static(b"other"), opts)
            .await;
        assert!(matches!(err, Err(StoreError::AlreadyExists(_))), "{err:?}");
        assert_eq!(
            store.head(&k("m/a")).await.unwrap().unwrap().mark,
            None,
            "a refused conditional write leaves the object's mark alone"
        );
        store.delete(&k("m/a")).await.unwrap();
        // Marks are stored with the object, and head and get return them.
        let marked = PutOptions {
            if_absent: false,
            mark: Some("m v1 key=7".into()),
            if_match: None,
        };
        store
            .put(&k("m/x"), Bytes::from_static(b"marked"), marked.clone())
            .await
            .unwrap();
        let head = store.head(&k("m/x")).await.unwrap().unwrap();
        assert_eq!(head.mark.as_deref(), Some("m v1 key=7"));
        let got = store.get_object(&k("m/x"), 2, Some(2)).await.unwrap();
        assert_eq!(
            (got.meta.size, got.meta.mark.as_deref()),
            (6, Some("m v1 key=7")),
            "get gives the whole object's size and mark, whatever the range"
        );
        store
            .put(
                &k("m/x"),
                Bytes::from_static(b"plain"),
                PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(store.head(&k("m/x")).await.unwrap().unwrap().mark, None);
        let up = store.multipart_start(&k("m/y"), Some("mp")).await.unwrap();
        let t = store
            .multipart_part(&k("m/y"), &up, 1, Bytes::from_static(b"y"))
            .await
            .unwrap();
        store
            .multipart_complete(&k("m/y"), &up, vec![t])
            .await
            .unwrap();
        assert_eq!(
            store
                .head(&k("m/y"))
                .await
                .unwrap()
                .unwrap()
                .mark
                .as_deref(),
            Some("mp")
        );
        let listed = store.list_page(&k("m/"), None, None).await.unwrap();
        assert_eq!(listed.objects.len(), 2, "marks are no objects of their own");
        store.delete(&k("m/x")).await.unwrap();
        store.delete(&k("m/y")).await.unwrap();
        assert!(store
            .list_page(&k("m/"), None, None)
            .await
            .unwrap()
            .objects
            .is_empty());
    }
}
