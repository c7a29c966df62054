//! Encryption at rest (SPEC §10): a decorator that encrypts every object it
//! writes for one tenant with Tink's AES-GCM-HKDF streaming AEAD
//! ([`crate::crypto::streaming`]) under the tenant's keyset, and decrypts on
//! read.
//!
//! - **Mark.** An encrypted object carries the mark
//!   `tink-aes-gcm-hkdf-streaming key=<id>` ([`ObjectMeta::mark`]): which
//!   key of the keyset sealed it. An object without a mark is read as it is
//!   (a clear object stored before the tenant switched encryption on);
//!   nothing is guessed from an object's bytes. A mark naming a key the
//!   keyset lacks is an error, never a clear read.
//! - **Associated data**: `recvault/v1 tenant=<tenant id> object=<key
//!   relative to the tenant's prefix>` (e.g. `object=sessions/2026/11/23/c-1/c-1.tar.gz`),
//!   so an object decrypts only as itself: copied under another session or
//!   tenant it fails authentication, while a copy of a tenant's objects
//!   under another bucket or prefix still decrypts.
//! - **Reads.** A read from the start is one storage request (the header
//!   comes with the first segment). A read from an offset is two: the
//!   40-byte header, then only the segments that cover the range. Every
//!   segment is authenticated before a byte of it is passed on.
//! - **Multipart uploads** stay streamed: each part is encrypted as it
//!   comes; at most one segment of plaintext and one storage part of
//!   ciphertext wait in memory per upload.
//! - **Sizes.** `head` and `get_object` give plaintext sizes, computed from
//!   the ciphertext's length. A listing carries no marks (S3 lists no
//!   metadata), so its sizes are the stored ones: what shows a file's size
//!   takes it from the session index (see [`crate::vfs::meta`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{
    ByteStream, Got, ListPage, ObjectMeta, ObjectStore, PutOptions, SharedStore, StoreError, Upload,
};
use crate::crypto::keyset::{Keyset, StreamingKey};
use crate::crypto::streaming::{self, CryptoError, Encryptor, Layout, SegmentCipher, HEADER};

/// The scheme word of an encrypted object's mark.
pub const SCHEME: &str = "tink-aes-gcm-hkdf-streaming";

/// Ciphertext gathered before it is sent as one part (S3's smallest part
/// but the last is 5 MiB).
const MIN_PART: usize = 5 * 1024 * 1024;

/// An upload's state is dropped when it was neither completed nor aborted
/// within this time (its writer died; the orphan sweep aborts the upload).
const UPLOAD_STATE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The mark of an object sealed by key `id`.
pub fn mark(id: u32) -> String {
    format!("{SCHEME} key={id}")
}

/// The key id a mark names; an error for a mark recvault did not write.
pub fn key_of_mark(key: &str, mark: &str) -> Result<u32, StoreError> {
    mark.strip_prefix(SCHEME)
        .and_then(|rest| rest.strip_prefix(" key="))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| {
            StoreError::Permanent(format!(
                "{key} carries the mark {mark:?}, which this recvault does not know"
            ))
        })
}

/// The associated data of the object `relative` (its key below the
/// tenant's prefix) of tenant `tenant`.
pub fn associated_data(tenant: &str, relative: &str) -> Vec<u8> {
    format!("recvault/v1 tenant={tenant} object={relative}").into_bytes()
}

/// Whether a listed (stored) size fits an object of `plain` bytes: the
/// same, or its size sealed with recvault's 1 MiB segments.
pub fn stored_size_agrees(stored: u64, plain: u64) -> bool {
    stored == plain || stored == Layout { segment: 1 << 20 }.ciphertext_len(plain)
}

fn crypto_err(key: &str, e: CryptoError) -> StoreError {
    StoreError::Corrupt(format!("{key}: {e}"))
}

/// A multipart upload being encrypted.
struct Sealing {
    key: String,
    started: Instant,
    encryptor: Option<Encryptor>,
    /// Ciphertext not yet sent.
    out: Vec<u8>,
    /// Parts the caller sent.
    parts: u32,
    /// Tags of the parts sent to storage.
    sent: Vec<String>,
    /// A part failed: the upload can only be aborted.
    failed: bool,
}

/// One tenant's objects, encrypted under its keyset.
pub struct Crypt {
    inner: SharedStore,
    tenant: String,
    prefix: String,
    /// The tenant's keyset, shared by every view of its objects
    /// ([`Crypt::over`]): a rotation reaches them all at once.
    keys: Arc<RwLock<Arc<Keyset>>>,
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Sealing>>>>,
    /// Staging keys that hold another key's object (re-encryption): sealed
    /// and opened with that key's associated data.
    aliases: Mutex<HashMap<String, String>>,
}

/// The store of tenant `t`: `None` when recvault does not encrypt its
/// objects; its keyset read and checked otherwise (an error names the
/// tenant and the file).
pub async fn for_tenant(
    t: &crate::config::TenantConfig,
    shared: &SharedStore,
) -> Result<Option<Arc<Crypt>>, String> {
    if t.encryption() != crate::config::Encryption::Recvault {
        return Ok(None);
    }
    let keys = keyset_of(t).await?;
    Crypt::new(shared.clone(), t.id.get_ref(), t.prefix.get_ref(), keys).map(|c| Some(Arc::new(c)))
}

/// Reads tenant `t`'s keyset (`keyset`, unwrapped with `keyset_kms_key`).
pub async fn keyset_of(t: &crate::config::TenantConfig) -> Result<Keyset, String> {
    let path = t.keyset.as_ref().ok_or_else(|| {
        format!(
            "tenant {:?}: encryption = \"recvault\" needs a keyset",
            t.id.get_ref()
        )
    })?;
    let kms = t.keyset_kms_key.as_ref().map(|k| k.get_ref().as_str());
    crate::crypto::load_keyset(path.get_ref(), kms).await
}

impl Crypt {
    /// Encrypts what is written below `prefix` (tenant `tenant`'s objects)
    /// under `keys`' primary key.
    pub fn new(
        inner: SharedStore,
        tenant: &str,
        prefix: &str,
        keys: Keyset,
    ) -> Result<Self, String> {
        if keys.primary().is_none() {
            return Err(format!(
                "the keyset of tenant {tenant:?} has no enabled primary key"
            ));
        }
        Ok(Self {
            inner,
            tenant: tenant.to_string(),
            prefix: prefix.to_string(),
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            uploads: Mutex::new(HashMap::new()),
            aliases: Mutex::new(HashMap::new()),
        })
    }

    /// The same tenant's objects in another store (a delivery tenant's
    /// backup or its own storage), under this keyset: a later
    /// [`Self::replace_keyset`] on either reaches both, so every place a
    /// tenant writes seals with the same primary key after a rotation.
    pub fn over(&self, inner: SharedStore) -> Arc<Crypt> {
        Arc::new(Self {
            inner,
            tenant: self.tenant.clone(),
            prefix: self.prefix.clone(),
            keys: self.keys.clone(),
            uploads: Mutex::new(HashMap::new()),
            aliases: Mutex::new(HashMap::new()),
        })
    }

    /// The keyset in use.
    pub fn keyset(&self) -> Arc<Keyset> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the keyset (a reload after `recvault keys rotate`): new
    /// objects are sealed by its primary key. Refused when it lacks a key
    /// of the one in use (objects sealed by it would become unreadable).
    pub fn replace_keyset(&self, keys: Keyset) -> Result<(), String> {
        let old = self.keyset();
        if keys.primary().is_none() {
            return Err("the new keyset has no enabled primary key".into());
        }
        if let Some(lost) = old
            .keys
            .iter()
            .filter(|k| k.enabled)
            .find(|k| keys.key(k.id).is_none())
        {
            return Err(format!(
                "the new keyset lacks key {} of the one in use; objects it sealed would become unreadable",
                lost.id
            ));
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// The primary key's id (the one new objects are sealed by).
    pub fn primary_id(&self) -> u32 {
        self.keyset().primary
    }

    /// Until [`Self::unalias`], the object at `staging` is sealed and opened
    /// as the object `key` (its associated data): a copy being verified
    /// before it replaces `key`.
    pub fn alias(&self, staging: &str, key: &str) {
        self.aliases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(staging.to_string(), key.to_string());
    }

    pub fn unalias(&self, staging: &str) {
        self.aliases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(staging);
    }

    /// The mark of an object sealed by the primary key now.
    pub fn primary_mark(&self) -> String {
        mark(self.primary_id())
    }

    fn aad(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let aliased = self
            .aliases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        let key = aliased.as_deref().unwrap_or(key);
        let relative = key.strip_prefix(&self.prefix).ok_or_else(|| {
            StoreError::Permanent(format!(
                "{key} is not an object of tenant {:?} (below {:?}); refusing to store it unencrypted",
                self.tenant, self.prefix
            ))
        })?;
        Ok(associated_data(&self.tenant, relative))
    }

    /// The key that sealed an object marked `mark`, if it is marked.
    fn sealed_by(
        &self,
        key: &str,
        mark: Option<&str>,
    ) -> Result<Option<(Arc<Keyset>, u32)>, StoreError> {
        let Some(mark) = mark else { return Ok(None) };
        let id = key_of_mark(key, mark)?;
        let keys = self.keyset();
        if keys.key(id).is_none() {
            return Err(StoreError::Corrupt(format!(
                "{key} was encrypted with key {id}, which the keyset of tenant {:?} does not hold (a wrong or outdated keyset?)",
                self.tenant
            )));
        }
        Ok(Some((keys, id)))
    }

    /// `body` sealed as the object `key` under the primary key: the
    /// ciphertext and its mark.
    pub fn seal(&self, key: &str, body: &[u8]) -> Result<(Vec<u8>, String), StoreError> {
        let aad = self.aad(key)?;
        let keys = self.keyset();
        let k = primary(&keys)?;
        let ct = streaming::encrypt(k.material(), &aad, k.layout, body)
            .map_err(|e| crypto_err(key, e))?;
        Ok((ct, mark(k.id)))
    }

    /// Decrypts a whole (small) ciphertext of the object `key` marked `mark`.
    pub fn open(&self, key: &str, mark: &str, ct: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (keys, id) = self
            .sealed_by(key, Some(mark))?
            .ok_or_else(|| StoreError::Permanent(format!("{key}: no mark")))?;
        let k = key_in(&keys, id)?;
        streaming::decrypt(k.material(), &self.aad(key)?, k.layout, ct)
            .map_err(|e| crypto_err(key, e))
    }

    fn sealing(&self, upload: &str) -> Result<Arc<tokio::sync::Mutex<Sealing>>, StoreError> {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(upload)
            .cloned()
            .ok_or_else(|| {
                StoreError::Permanent(format!(
                    "multipart upload {upload} is unknown to this process (started before a restart?)"
                ))
            })
    }
}

fn primary(keys: &Keyset) -> Result<&StreamingKey, StoreError> {
    keys.primary()
        .ok_or_else(|| StoreError::Permanent("the keyset has no enabled primary key".into()))
}

fn key_in(keys: &Keyset, id: u32) -> Result<&StreamingKey, StoreError> {
    keys.key(id)
        .ok_or_else(|| StoreError::Permanent(format!("the keyset does not hold key {id}")))
}

/// Decrypts the segments `first..` of a ciphertext of `n` bytes as they
/// stream in, passing on `remaining` plaintext bytes after skipping `skip`.
struct Opening {
    body: ByteStream,
    buf: BytesMut,
    key: String,
    seg: u64,
    count: u64,
    n: u64,
    layout: Layout,
    /// The segment cipher; `None` until segment 0's header is read.
    cipher: Option<SegmentCipher>,
    keys: Arc<Keyset>,
    id: u32,
    aad: Vec<u8>,
    skip: u64,
    remaining: u64,
}

impl Opening {
    async fn next_piece(&mut self) -> Option<Result<Bytes, StoreError>> {
        while self.remaining > 0 && self.seg < self.count {
            let (start, end) = self.layout.cipher_range(self.seg, self.n);
            let need = (end - start) as usize;
            while self.buf.len() < need {
                match self.body.next().await {
                    Some(Ok(b)) => self.buf.extend_from_slice(&b),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {
                        return Some(Err(crypto_err(
                            &self.key,
                            CryptoError::Truncated(format!(
                                "the stored object ended inside segment {}",
                                self.seg
                            )),
                        )))
                    }
                }
            }
            let segment = self.buf.split_to(need);
            let data = if self.seg == 0 {
                if self.cipher.is_none() {
                    let k = match key_in(&self.keys, self.id) {
                        Ok(k) => k,
                        Err(e) => return Some(Err(e)),
                    };
                    match SegmentCipher::for_header(k.material(), &self.aad, &segment) {
                        Ok(c) => self.cipher = Some(c),
                        Err(e) => return Some(Err(crypto_err(&self.key, e))),
                    }
                }
                &segment[HEADER.min(segment.len())..]
            } else {
                &segment[..]
            };
            let Some(cipher) = self.cipher.as_ref() else {
                return Some(Err(crypto_err(
                    &self.key,
                    CryptoError::Format("no header read before segment {}".into()),
                )));
            };
            let plain = match cipher.open(self.seg, self.seg + 1 == self.count, data) {
                Ok(p) => p,
                Err(e) => return Some(Err(crypto_err(&self.key, e))),
            };
            self.seg += 1;
            let from = (self.skip as usize).min(plain.len());
            self.skip -= from as u64;
            let take = ((plain.len() - from) as u64).min(self.remaining) as usize;
            self.remaining -= take as u64;
            if take > 0 {
                return Some(Ok(Bytes::from(plain).slice(from..from + take)));
            }
        }
        None
    }

    fn into_stream(self) -> ByteStream {
        Box::pin(futures::stream::unfold(Some(self), |state| async move {
            let mut o = state?;
            match o.next_piece().await {
                Some(Ok(b)) => Some((Ok(b), Some(o))),
                Some(Err(e)) => Some((Err(e), None)),
                None => None,
            }
        }))
    }
}

/// Segments decrypted ahead of the reader (so AES-GCM runs on another
/// core while the protocol encrypts and sends the segment before).
const AHEAD: usize = 2;

/// `body` polled by a task of its own, up to [`AHEAD`] pieces ahead of the
/// reader; the task ends when the reader drops the stream.
fn ahead(mut body: ByteStream) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    tokio::spawn(async move {
        while let Some(piece) = body.next().await {
            let failed = piece.is_err();
            if tx.send(piece).await.is_err() || failed {
                return;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    }))
}

/// At most `len` bytes of `body`.
fn limited(body: ByteStream, len: Option<u64>) -> ByteStream {
    let Some(left) = len else { return body };
    Box::pin(futures::stream::unfold(
        (body, left),
        |(mut body, left)| async move {
            if left == 0 {
                return None;
            }
            let chunk = body.next().await?;
            Some(match chunk {
                Ok(mut b) => {
                    b.truncate(b.len().min(left as usize));
                    let left = left - b.len() as u64;
                    (Ok(b), (body, left))
                }
                Err(e) => (Err(e), (body, 0)),
            })
        },
    ))
}

/// Reads the first `HEADER` bytes of a body.
async fn read_header(key: &str, mut body: ByteStream) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(HEADER);
    while out.len() < HEADER {
        match body.next().await {
            Some(chunk) => out.extend_from_slice(&chunk?),
            None => break,
        }
    }
    out.truncate(HEADER);
    if out.len() < HEADER {
        return Err(crypto_err(
            key,
            CryptoError::Truncated(format!("a header of {} bytes", out.len())),
        ));
    }
    Ok(out)
}

#[async_trait]
impl ObjectStore for Crypt {
    /// The primary key's segments (objects sealed by an older key of
    /// another size read an extra segment per range, nothing worse).
    fn range_boundary(&self, at: u64) -> u64 {
        match self.keyset().primary() {
            Some(k) => k.layout.boundary_at_or_after(at),
            None => at,
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let Some(mut meta) = self.inner.head(key).await? else {
            return Ok(None);
        };
        if let Some((keys, id)) = self.sealed_by(key, meta.mark.as_deref())? {
            meta.size = key_in(&keys, id)?
                .layout
                .plaintext_len(meta.size)
                .map_err(|e| crypto_err(key, e))?;
        }
        Ok(Some(meta))
    }

    async fn get_object(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Got, StoreError> {
        let aad = self.aad(key)?;
        let (got, header) = if offset == 0 {
            // One request: enough ciphertext for `len` plaintext bytes under
            // any key of the keyset (the header comes with segment 0).
            let want = len.map(|l| {
                let keys = self.keyset();
                keys.keys
                    .iter()
                    .map(|k| {
                        let last = k.layout.segment_of(l.max(1) - 1);
                        (last + 1) * k.layout.segment as u64
                    })
                    .max()
                    .unwrap_or(l)
                    .max(l)
            });
            (self.inner.get_object(key, 0, want).await?, None)
        } else {
            // The header first: it tells the key and where segments start.
            let first = self.inner.get_object(key, 0, Some(HEADER as u64)).await?;
            if first.meta.mark.is_none() {
                let clear = self.inner.get_object(key, offset, len).await?;
                if clear.meta.mark.is_some() || clear.meta.etag != first.meta.etag {
                    // Replaced between the two (re-encrypted): never serve
                    // the new object's ciphertext as the old one's bytes.
                    return Err(StoreError::Transient(format!(
                        "{key} changed while it was being opened; try again"
                    )));
                }
                return Ok(clear);
            }
            let header = read_header(key, first.body).await?;
            let body: ByteStream = Box::pin(futures::stream::empty());
            (
                Got {
                    meta: first.meta,
                    body,
                },
                Some(header),
            )
        };
        let Some((keys, id)) = self.sealed_by(key, got.meta.mark.as_deref())? else {
            return Ok(Got {
                meta: got.meta,
                body: limited(got.body, len),
            });
        };
        let k = key_in(&keys, id)?;
        let (layout, n) = (k.layout, got.meta.size);
        let plain = layout.plaintext_len(n).map_err(|e| crypto_err(key, e))?;
        let mut meta = got.meta;
        meta.size = plain;
        let meta_etag = meta.etag.clone();
        let remaining = len.unwrap_or(u64::MAX).min(plain.saturating_sub(offset));
        if remaining == 0 && offset > 0 {
            return Ok(Got {
                meta,
                body: Box::pin(futures::stream::empty()),
            });
        }
        let count = layout.segment_count(n);
        let (body, first, cipher) = match header {
            None => (got.body, 0, None),
            Some(header) => {
                let (first, last) = layout.segments_for(offset, remaining, n);
                let start = layout.cipher_range(first, n).0;
                let end = layout.cipher_range(last, n).1;
                let cipher = SegmentCipher::for_header(k.material(), &aad, &header)
                    .map_err(|e| crypto_err(key, e))?;
                let got = self.inner.get_object(key, start, Some(end - start)).await?;
                if got.meta.etag != meta_etag {
                    return Err(StoreError::Transient(format!(
                        "{key} changed while it was being opened; try again"
                    )));
                }
                (got.body, first, Some(cipher))
            }
        };
        let opening = Opening {
            body,
            buf: BytesMut::new(),
            key: key.to_string(),
            seg: first,
            count,
            n,
            layout,
            cipher,
            keys: keys.clone(),
            id,
            aad,
            skip: offset - layout.plain_start(first),
            // An empty object still has its one segment authenticated.
            remaining: if plain == 0 { 1 } else { remaining },
        };
        Ok(Got {
            meta,
            body: ahead(opening.into_stream()),
        })
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        self.inner.list_page(prefix, delimiter, continuation).await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError> {
        let (ct, mark) = self.seal(key, &body)?;
        let opts = PutOptions {
            if_absent: opts.if_absent,
            mark: Some(mark),
            if_match: opts.if_match,
        };
        self.inner.put(key, Bytes::from(ct), opts).await
    }

    async fn multipart_start(&self, key: &str, _mark: Option<&str>) -> Result<String, StoreError> {
        let aad = self.aad(key)?;
        let keys = self.keyset();
        let k = primary(&keys)?;
        let mut out = Vec::new();
        let encryptor = Encryptor::new(k.material(), &aad, k.layout, &mut out)
            .map_err(|e| crypto_err(key, e))?;
        let id = self.inner.multipart_start(key, Some(&mark(k.id))).await?;
        let sealing = Sealing {
            key: key.to_string(),
            started: Instant::now(),
            encryptor: Some(encryptor),
            out,
            parts: 0,
            sent: Vec::new(),
            failed: false,
        };
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        uploads.retain(|_, s| {
            s.try_lock()
                .map_or(true, |s| s.started.elapsed() < UPLOAD_STATE_TTL)
        });
        uploads.insert(id.clone(), Arc::new(tokio::sync::Mutex::new(sealing)));
        Ok(id)
    }

    async fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let sealing = self.sealing(upload)?;
        let mut s = sealing.lock().await;
        if s.failed || s.key != key || number != s.parts + 1 {
            return Err(StoreError::Permanent(format!(
                "{key}: part {number} of an encrypted upload must follow part {} of the same key, and no part may have failed",
                s.parts
            )));
        }
        let Sealing { encryptor, out, .. } = &mut *s;
        let pushed = match encryptor.as_mut() {
            Some(e) => e.push(&body, out).map_err(|e| crypto_err(key, e)),
            None => Err(StoreError::Permanent(format!("{key}: upload finished"))),
        };
        if let Err(e) = pushed {
            s.failed = true;
            return Err(e);
        }
        s.parts = number;
        if s.out.len() >= MIN_PART {
            let part = Bytes::from(std::mem::take(&mut s.out));
            let n = s.sent.len() as u32 + 1;
            match self.inner.multipart_part(key, upload, n, part).await {
                Ok(tag) => s.sent.push(tag),
                Err(e) => {
                    s.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(format!("sealed-{number}"))
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError> {
        let sealing = self.sealing(upload)?;
        let mut s = sealing.lock().await;
        if s.failed || s.key != key || tags.len() != s.parts as usize {
            return Err(StoreError::Permanent(format!(
                "{key}: completing with {} parts an encrypted upload that took {}{}",
                tags.len(),
                s.parts,
                if s.failed { " and lost one" } else { "" }
            )));
        }
        let Some(encryptor) = s.encryptor.take() else {
            return Err(StoreError::Permanent(format!("{key}: upload finished")));
        };
        let mut out = std::mem::take(&mut s.out);
        encryptor.finish(&mut out).map_err(|e| crypto_err(key, e))?;
        let n = s.sent.len() as u32 + 1;
        let tag = self
            .inner
            .multipart_part(key, upload, n, Bytes::from(out))
            .await?;
        s.sent.push(tag);
        let sent = std::mem::take(&mut s.sent);
        drop(s);
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(upload);
        self.inner.multipart_complete(key, upload, sent).await
    }

    async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(upload);
        self.inner.multipart_abort(key, upload).await
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        self.inner.multipart_list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

/// The store of a tenant without `encryption = "recvault"`: objects as
/// they are, except that one recvault sealed (its mark says so) is refused
/// rather than served as if its ciphertext were the file (encryption
/// switched off for a tenant that has sealed objects).
pub struct Unsealed {
    inner: SharedStore,
}

/// The tenant's view of another store than `sealed`'s own (a delivery
/// tenant's backup or its own storage): under the same keyset
/// ([`Crypt::over`]), or [`Unsealed`] when it is not encrypted.
pub fn view_over(sealed: Option<&Arc<Crypt>>, other: &SharedStore) -> SharedStore {
    tenant_store(sealed.map(|c| c.over(other.clone())).as_ref(), other)
}

/// A tenant's view of the shared store: through its encryption, or
/// [`Unsealed`].
pub fn tenant_store(sealed: Option<&Arc<Crypt>>, shared: &SharedStore) -> SharedStore {
    match sealed {
        Some(c) => c.clone(),
        None => Arc::new(Unsealed {
            inner: shared.clone(),
        }),
    }
}

#[async_trait]
impl ObjectStore for Unsealed {
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }

    async fn get_object(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Got, StoreError> {
        let got = self.inner.get_object(key, offset, len).await?;
        if let Some(mark) = &got.meta.mark {
            return Err(StoreError::Corrupt(format!(
                "{key} is encrypted by recvault ({mark}) but the tenant has no keyset configured (encryption = \"recvault\"); not served"
            )));
        }
        Ok(got)
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        self.inner.list_page(prefix, delimiter, continuation).await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError> {
        self.inner.put(key, body, opts).await
    }

    async fn multipart_start(&self, key: &str, mark: Option<&str>) -> Result<String, StoreError> {
        self.inner.multipart_start(key, mark).await
    }

    async fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.inner.multipart_part(key, upload, number, body).await
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError> {
        self.inner.multipart_complete(key, upload, tags).await
    }

    async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        self.inner.multipart_abort(key, upload).await
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        self.inner.multipart_list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests;
