//! `recvault reencrypt --tenant ID`: seals every object of a tenant that
//! its keyset's primary key did not seal (clear objects from before the
//! tenant switched `encryption = "recvault"` on, and objects of an older
//! key after a rotation), session by session on the job runner.
//!
//! Each object is sealed as a copy first and the copy read back and
//! checked; only then does it replace the object:
//!
//! - an object of up to one part (8 MiB: indexes, sums, small media) is
//!   read, sealed and opened again in memory, then written over the
//!   object in one PUT;
//! - a larger one is streamed, sealed, into `derived/<path>.staged` (hidden
//!   from clients), read back and hashed, then copied over the object and
//!   the copy deleted.
//!
//! Every byte read is hashed: the archive's SHA-256 must be the index's
//! (else it is left as it is and reported), and a copy must hash to what
//! was read. The index is sealed last, recording the archive's new mark.
//! Render leases are left alone (locks, rewritten by every render). Each
//! object sealed is a finding (audited); a storage fault stops the job and
//! the next run resumes at that session, where objects already sealed by
//! the primary key are skipped.

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{Job, Session};
use crate::layout::index::{self, SessionIndex};
use crate::store::crypt::Crypt;
use crate::store::{ObjectStore, PutOptions, StoreError, UPLOAD_PART};

pub struct Reencrypt;

/// Why an object was left: written or erased while it was being sealed.
const CHANGED: &str = "changed or erased while it was being sealed; left for the next run";

fn err(e: StoreError) -> String {
    e.to_string()
}

/// Reads a whole stream, hashing it.
async fn read_hashed(
    store: &dyn ObjectStore,
    key: &str,
    max: u64,
) -> Result<(Vec<u8>, String), StoreError> {
    let body = crate::store::read_all(store, key, max).await?;
    let hash = hex::encode(Sha256::digest(&body));
    Ok((body.to_vec(), hash))
}

/// SHA-256 (hex) of an object read through `store`.
async fn hash_of(store: &dyn ObjectStore, key: &str) -> Result<String, StoreError> {
    use futures::StreamExt;
    let mut body = store.get(key, 0, None).await?;
    let mut h = Sha256::new();
    while let Some(chunk) = body.next().await {
        h.update(&chunk?);
    }
    Ok(hex::encode(h.finalize()))
}

/// Seals the object `key` (plaintext SHA-256 `want` when the index records
/// it). Returns what was done, or why it was left.
async fn seal_one(
    s: &Session,
    sealed: &Crypt,
    key: &str,
    size: u64,
    want: Option<&str>,
    etag: Option<String>,
) -> Result<Result<(), String>, String> {
    let raw = s.raw.as_ref();
    let mismatch = |got: &str| {
        Err(format!(
            "its SHA-256 {got} is not the index's {}; left as it is",
            want.unwrap_or("")
        ))
    };
    if size <= UPLOAD_PART as u64 {
        let (plain, hash) = read_hashed(sealed, key, UPLOAD_PART as u64)
            .await
            .map_err(err)?;
        if want.is_some_and(|w| w != hash) {
            return Ok(mismatch(&hash));
        }
        let (ct, mark) = sealed.seal(key, &plain).map_err(err)?;
        let back = sealed.open(key, &mark, &ct).map_err(err)?;
        if back != plain {
            return Ok(Err(
                "the sealed copy does not open to the object; left as it is".into(),
            ));
        }
        let opts = PutOptions {
            if_absent: false,
            mark: Some(mark),
            if_match: etag,
        };
        return match raw.put(key, Bytes::from(ct), opts).await {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::Changed(_)) => Ok(Err(CHANGED.into())),
            Err(e) => Err(e.to_string()),
        };
    }
    let relative = key.strip_prefix(s.keys.prefix()).unwrap_or(key);
    let staged = s.keys.staged(relative);
    sealed.alias(&staged, key);
    let outcome = async {
        let body = sealed.get(key, 0, None).await.map_err(err)?;
        let mut h = Sha256::new();
        crate::store::upload_stream(sealed, &staged, body, None, |b| h.update(b))
            .await
            .map_err(err)?;
        let hash = hex::encode(h.finalize());
        if want.is_some_and(|w| w != hash) {
            return Ok(mismatch(&hash));
        }
        let back = hash_of(sealed, &staged).await.map_err(err)?;
        if back != hash {
            return Ok(Err(format!(
                "the sealed copy reads back as {back}, not {hash}; left as it is"
            )));
        }
        let mark = raw
            .head(&staged)
            .await
            .map_err(err)?
            .and_then(|m| m.mark)
            .ok_or("the sealed copy has no mark")?;
        // Not over an object changed or erased meanwhile (an erase must
        // not be undone); a multipart upload cannot carry If-Match.
        let now = raw.head(key).await.map_err(err)?.and_then(|m| m.etag);
        if now.is_none() || now != etag {
            return Ok(Err(CHANGED.into()));
        }
        let body = raw.get(&staged, 0, None).await.map_err(err)?;
        crate::store::upload_stream(raw, key, body, Some(mark), |_| {})
            .await
            .map_err(err)?;
        Ok(Ok(()))
    }
    .await;
    sealed.unalias(&staged);
    let _ = raw.delete(&staged).await;
    outcome
}

#[async_trait]
impl Job for Reencrypt {
    fn kind(&self) -> &'static str {
        "reencrypt"
    }

    /// An index's size changes with the mark it records.
    fn rewrites_indexes(&self) -> bool {
        true
    }

    async fn session(&self, s: &Session) -> Result<Vec<String>, String> {
        let Some(sealed) = s.sealed.as_deref() else {
            return Err("the tenant is not configured with encryption = \"recvault\"".into());
        };
        let raw = s.raw.as_ref();
        let primary = sealed.primary_mark();
        let index_key = s.keys.index();
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = raw
                .list_page(s.keys.prefix(), None, token)
                .await
                .map_err(err)?;
            keys.extend(page.objects.into_iter().map(|o| o.key));
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        let index_etag = raw
            .head(&index_key)
            .await
            .map_err(err)?
            .and_then(|m| m.etag);
        let bytes = match crate::store::read_all(sealed, &index_key, index::MAX_BYTES).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                return Ok(vec!["info.json disappeared (erased?)".into()])
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut index = SessionIndex::parse(&bytes).ok();
        let mut found = Vec::new();
        // The index last: it publishes the archive's new mark.
        keys.retain(|k| *k != index_key);
        keys.push(index_key.clone());
        for key in keys {
            if crate::layout::is_lease(&key) || crate::layout::is_staged(&key) {
                continue;
            }
            let Some(meta) = raw.head(&key).await.map_err(err)? else {
                continue;
            };
            let name = key
                .strip_prefix(s.keys.prefix())
                .unwrap_or(&key)
                .to_string();
            let was = meta
                .mark
                .as_deref()
                .map_or("clear".to_string(), |m| m.to_string());
            if key == index_key {
                let Some(ix) = index.as_mut() else {
                    found.push("info.json is unreadable; left as it is".into());
                    continue;
                };
                let unreadable = SessionIndex::unreadable(&bytes);
                if !unreadable.is_empty() {
                    found.push(format!(
                        "info.json has parts this version cannot read ({}); left as it is",
                        unreadable.join(", ")
                    ));
                    continue;
                }
                let archive = s.keys.archive();
                let archive_mark = raw.head(&archive).await.map_err(err)?.and_then(|m| m.mark);
                let archive_name = s.keys.archive_name();
                let recorded = ix
                    .recvault
                    .objects
                    .get(&archive_name)
                    .and_then(|d| d.sealed.clone());
                if meta.mark.as_deref() == Some(primary.as_str()) && recorded == archive_mark {
                    continue;
                }
                if let Some(d) = ix.recvault.objects.get_mut(&archive_name) {
                    d.sealed = archive_mark;
                }
                let plain = ix.to_bytes();
                let (ct, mark) = sealed.seal(&key, &plain).map_err(err)?;
                if sealed.open(&key, &mark, &ct).map_err(err)? != plain {
                    found.push(
                        "info.json: the sealed copy does not open to it; left as it is".into(),
                    );
                    continue;
                }
                let opts = PutOptions {
                    if_absent: false,
                    mark: Some(mark),
                    if_match: index_etag.clone(),
                };
                match raw.put(&key, Bytes::from(ct), opts).await {
                    Ok(()) => found.push(format!("sealed {name} (was {was})")),
                    Err(StoreError::Changed(_)) => found.push(format!("{name}: {CHANGED}")),
                    Err(e) => return Err(e.to_string()),
                }
                continue;
            }
            if meta.mark.as_deref() == Some(primary.as_str()) {
                continue;
            }
            let size = sealed.head(&key).await.map_err(err)?.map_or(0, |m| m.size);
            let want = index
                .as_ref()
                .filter(|_| key == s.keys.archive())
                .and_then(|ix| ix.recvault.objects.get(&s.keys.archive_name()))
                .map(|d| d.sha256.clone());
            match seal_one(s, sealed, &key, size, want.as_deref(), meta.etag.clone()).await? {
                Ok(()) => found.push(format!("sealed {name} (was {was})")),
                Err(why) => found.push(format!("{name}: {why}")),
            }
        }
        Ok(found)
    }
}

/// `recvault reencrypt`: every configured tenant with encryption (or the
/// one named); prints each object sealed and a total per tenant.
pub async fn run_cli(
    cfg: &crate::config::Config,
    tenant: Option<&str>,
    since: Option<chrono::NaiveDate>,
) -> Result<usize, String> {
    super::run_cli(cfg, tenant, since, &Reencrypt, |id, report, resumed| {
        for f in &report.findings {
            println!("{id} {}: {}", f.path, f.what);
        }
        println!(
            "reencrypt {id}: {} sessions seen, {} objects sealed or reported{resumed}",
            report.sessions,
            report.findings.len()
        );
    })
    .await
}
