//! Session metadata and folder times, loaded from storage and cached.
//!
//! A session is described by two requests made together: GET of its
//! `info.json` and one LIST of its folder (real sizes of stored objects); the
//! tenant caches it (see [`super::Tenant`]). Folder times come from the day
//! indexes ([`crate::days`]).
//!
//! A stored file's size is its plaintext size: `info.json`'s is the length
//! read; the archive's is the index's when the listed size agrees with it
//! (equal, or the size of its encryption, SPEC §10); otherwise a HEAD tells
//! (a listing cannot tell an encrypted object from a clear one).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use tracing::warn;

use super::tree::SessionRef;
use crate::layout::index::{self, SessionIndex};
use crate::layout::{self, SessionKeys};
use crate::store::{ObjectStore, StoreError};

/// A stored object shown in a session folder.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub name: String,
    pub key: String,
    pub size: u64,
}

/// What the tree knows of one session.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    pub session: SessionRef,
    pub keys: SessionKeys,
    /// Time of every entry in the session: the call's end.
    pub ended_at: DateTime<Utc>,
    pub files: Vec<StoredFile>,
    pub index: Arc<SessionIndex>,
}

impl SessionMeta {
    /// Loads a session; `Ok(None)` when it has no `info.json` (not archived).
    pub async fn load(
        store: &dyn ObjectStore,
        tenant_prefix: &str,
        s: &SessionRef,
    ) -> Result<Option<SessionMeta>, StoreError> {
        let keys = s.keys(tenant_prefix);
        let info_key = keys.index();
        let (info, listing) = tokio::join!(
            crate::store::read_all(store, &info_key, index::MAX_BYTES),
            store.list_page(keys.prefix(), Some("/"), None)
        );
        let info = match info {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let listing = listing?;
        let Some(info_obj) = listing.objects.iter().find(|o| o.key == info_key) else {
            return Ok(None);
        };
        // A damaged index still shows the session (its stored files, the
        // index's own time), so that an operator can fetch and repair it.
        let index = SessionIndex::parse(&info).unwrap_or_else(|e| {
            warn!(key = %info_key, error = %e, "session index unreadable; showing its stored files only");
            SessionIndex::default()
        });
        let ended_at = index.ended().unwrap_or(info_obj.last_modified);
        let shown = keys.shown();
        let mut files: Vec<StoredFile> = Vec::new();
        for o in &listing.objects {
            let Some((name, _)) = shown.iter().find(|(_, key)| *key == o.key) else {
                continue;
            };
            let size = if o.key == info_key {
                info.len() as u64
            } else {
                match index.recvault.objects.get(name).map(|d| d.size) {
                    Some(plain) if crate::store::crypt::stored_size_agrees(o.size, plain) => plain,
                    _ => match store.head(&o.key).await? {
                        Some(m) => m.size,
                        None => continue,
                    },
                }
            };
            files.push(StoredFile {
                name: name.clone(),
                key: o.key.clone(),
                size,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(SessionMeta {
            session: s.clone(),
            keys,
            ended_at,
            files,
            index: Arc::new(index),
        }))
    }
}

/// Lists the valid child folder names of a date folder, in order.
pub async fn child_dirs(
    store: &dyn ObjectStore,
    prefix: &str,
    depth: usize,
) -> Result<Vec<String>, StoreError> {
    let pages = futures::stream::try_unfold((Some(None::<String>), ()), |(token, ())| async move {
        let Some(token) = token else { return Ok(None) };
        let page = store.list_page(prefix, Some("/"), token).await?;
        let next = page.next.clone().map(Some);
        Ok::<_, StoreError>(Some((page.common_prefixes, (next, ()))))
    });
    let all: Vec<Vec<String>> = pages.try_collect().await?;
    Ok(all
        .into_iter()
        .flatten()
        .filter_map(|p| layout::child_name(prefix, &p).map(str::to_string))
        .filter(|n| super::tree::valid_child(depth, n))
        .collect())
}
