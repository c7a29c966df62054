//! One tree over two places, for a tenant with `delivery = "customer"`:
//! `home` (the customer's storage, where sessions are delivered) and
//! `backup` (the operator's, where they are archived first and kept for
//! `backup_hours` after a verified delivery).
//!
//! Reads try `home` first and fall back to `backup` when the object is not
//! there, or when `home` fails and `backup` has it (a customer bucket that
//! is down does not hide what the backup still holds). Writes under a
//! session folder (renders, their leases and sums) go beside the session's
//! index: to the backup while only the backup has it (not delivered yet;
//! the deliverer takes them along), else `home`; deletes (an erase) go to
//! both. A listing is both places' merged into one page
//! (`home`'s object where a key is in both, the backup's alone while
//! `home` fails): only session folders and a tenant's top level are listed
//! through here (day indexes and events are read from the backup itself),
//! so a page stays small.

use async_trait::async_trait;
use bytes::Bytes;

use std::sync::Arc;

use super::{Got, ListPage, ObjectMeta, ObjectStore, PutOptions, SharedStore, StoreError, Upload};

pub struct Union {
    home: SharedStore,
    backup: SharedStore,
    /// Multipart uploads started in the backup (by id); the others are home's.
    in_backup: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Union {
    pub fn new(home: SharedStore, backup: SharedStore) -> Self {
        Self {
            home,
            backup,
            in_backup: Default::default(),
        }
    }

    /// Where a write of `key` goes: beside its session's index (the
    /// backup while only the backup has it), else home.
    async fn for_write(&self, key: &str) -> Result<&SharedStore, StoreError> {
        let Some(folder) = crate::layout::session_folder_of(key) else {
            return Ok(&self.home);
        };
        let index = format!("{folder}{}", crate::layout::INDEX);
        match self.home.head(&index).await {
            Ok(Some(_)) => Ok(&self.home),
            Ok(None) => match self.backup.head(&index).await? {
                Some(_) => Ok(&self.backup),
                None => Ok(&self.home),
            },
            Err(e) => match self.backup.head(&index).await {
                Ok(Some(_)) => Ok(&self.backup),
                _ => Err(e),
            },
        }
    }

    /// The store upload `id` was started in.
    fn upload_store(&self, id: &str) -> &SharedStore {
        let backup = self
            .in_backup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id);
        if backup {
            &self.backup
        } else {
            &self.home
        }
    }

    fn upload_done(&self, id: &str) {
        self.in_backup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The most keys one merged listing holds.
const MAX_MERGED: usize = 100_000;

/// Every page of a listing of `store`, as one page, refused past
/// [`MAX_MERGED`] keys.
async fn everything(
    store: &dyn ObjectStore,
    prefix: &str,
    delimiter: Option<&str>,
) -> Result<ListPage, StoreError> {
    let all = super::list_all(store, prefix, delimiter).await?;
    if all.objects.len() + all.common_prefixes.len() > MAX_MERGED {
        return Err(StoreError::Permanent(format!(
            "{prefix}: more than {MAX_MERGED} keys to list across the customer's storage and the backup"
        )));
    }
    Ok(all)
}

#[async_trait]
impl ObjectStore for Union {
    fn range_boundary(&self, at: u64) -> u64 {
        self.home.range_boundary(at)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self.home.head(key).await {
            Ok(Some(m)) => Ok(Some(m)),
            Ok(None) => self.backup.head(key).await,
            Err(e) => match self.backup.head(key).await {
                Ok(Some(m)) => Ok(Some(m)),
                _ => Err(e),
            },
        }
    }

    async fn get_object(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Got, StoreError> {
        match self.home.get_object(key, offset, len).await {
            Ok(g) => Ok(g),
            Err(StoreError::NotFound(_)) => self.backup.get_object(key, offset, len).await,
            Err(e) => match self.backup.get_object(key, offset, len).await {
                Ok(g) => Ok(g),
                Err(_) => Err(e),
            },
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        _continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let (home, backup) = tokio::join!(
            everything(self.home.as_ref(), prefix, delimiter),
            everything(self.backup.as_ref(), prefix, delimiter)
        );
        let backup = backup?;
        let home = match home {
            Ok(h) => h,
            // What the backup still holds is served while home is down.
            Err(e) if backup.objects.is_empty() && backup.common_prefixes.is_empty() => {
                return Err(e)
            }
            Err(_) => ListPage {
                objects: Vec::new(),
                common_prefixes: Vec::new(),
                next: None,
            },
        };
        let mut objects = std::collections::BTreeMap::new();
        for o in backup.objects.into_iter().chain(home.objects) {
            objects.insert(o.key.clone(), o);
        }
        let mut prefixes: std::collections::BTreeSet<String> =
            backup.common_prefixes.into_iter().collect();
        prefixes.extend(home.common_prefixes);
        Ok(ListPage {
            objects: objects.into_values().collect(),
            common_prefixes: prefixes.into_iter().collect(),
            next: None,
        })
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError> {
        self.for_write(key).await?.put(key, body, opts).await
    }

    async fn multipart_start(&self, key: &str, mark: Option<&str>) -> Result<String, StoreError> {
        let store = self.for_write(key).await?;
        let id = store.multipart_start(key, mark).await?;
        if Arc::ptr_eq(store, &self.backup) {
            self.in_backup
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone());
        }
        Ok(id)
    }

    async fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.upload_store(upload)
            .multipart_part(key, upload, number, body)
            .await
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError> {
        let done = self
            .upload_store(upload)
            .multipart_complete(key, upload, tags)
            .await;
        self.upload_done(upload);
        done
    }

    async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        let done = self.upload_store(upload).multipart_abort(key, upload).await;
        self.upload_done(upload);
        done
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        let (mut home, backup) = tokio::join!(
            self.home.multipart_list(prefix),
            self.backup.multipart_list(prefix)
        );
        if let Ok(h) = home.as_mut() {
            h.extend(backup?);
        }
        home
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (home, backup) = tokio::join!(self.home.delete(key), self.backup.delete(key));
        home.and(backup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    async fn text(s: &dyn ObjectStore, key: &str) -> String {
        String::from_utf8(
            crate::store::read_all(s, key, 1 << 20)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn reads_prefer_home_fall_back_to_backup_writes_go_home_and_deletes_go_to_both() {
        let dir = tempfile::tempdir().unwrap();
        let home: SharedStore = Arc::new(LocalStore::open(&dir.path().join("home")).unwrap());
        let backup: SharedStore = Arc::new(LocalStore::open(&dir.path().join("backup")).unwrap());
        let u = Union::new(home.clone(), backup.clone());
        let put = |s: &SharedStore, k: &str, v: &'static str| {
            let (s, k) = (s.clone(), k.to_string());
            async move {
                s.put(&k, Bytes::from_static(v.as_bytes()), PutOptions::default())
                    .await
                    .unwrap()
            }
        };
        put(&backup, "p/a", "backup-a").await;
        put(&backup, "p/b", "backup-b").await;
        put(&home, "p/b", "home-b").await;
        put(&home, "p/c", "home-c").await;
        assert_eq!(text(&u, "p/a").await, "backup-a");
        assert_eq!(text(&u, "p/b").await, "home-b");
        assert_eq!(u.head("p/a").await.unwrap().unwrap().size, 8);
        assert!(u.head("p/none").await.unwrap().is_none());
        assert!(matches!(
            u.get_object("p/none", 0, None).await,
            Err(StoreError::NotFound(_))
        ));

        u.put("p/d", Bytes::from_static(b"new"), PutOptions::default())
            .await
            .unwrap();
        assert!(home.head("p/d").await.unwrap().is_some());
        assert!(backup.head("p/d").await.unwrap().is_none());
        // Under a session folder: beside its index, in the backup before
        // delivery and at home after.
        let k = crate::layout::SessionKeys::new("t/", "2026", "11", "23", "c1");
        put(&backup, &k.index(), "{}").await;
        let render = k.derived("c1.mp3");
        u.put(&render, Bytes::from_static(b"mp3"), PutOptions::default())
            .await
            .unwrap();
        let up = u.multipart_start(&k.derived("c1.mp4"), None).await.unwrap();
        let tag = u
            .multipart_part(&k.derived("c1.mp4"), &up, 1, Bytes::from_static(b"mp4"))
            .await
            .unwrap();
        u.multipart_complete(&k.derived("c1.mp4"), &up, vec![tag])
            .await
            .unwrap();
        for key in [render.clone(), k.derived("c1.mp4")] {
            assert!(backup.head(&key).await.unwrap().is_some(), "{key}");
            assert!(home.head(&key).await.unwrap().is_none(), "{key}");
        }
        put(&home, &k.index(), "{}").await;
        u.put(
            &k.derived("c1.webm"),
            Bytes::from_static(b"w"),
            PutOptions::default(),
        )
        .await
        .unwrap();
        assert!(home.head(&k.derived("c1.webm")).await.unwrap().is_some());

        // One page holds both places (a reader of a session folder reads
        // only the first page): mid-delivery, the archive at home and the
        // index still only in the backup are listed together.
        let page = u.list_page("p/", None, None).await.unwrap();
        assert!(page.next.is_none());
        let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["p/a", "p/b", "p/c", "p/d"]);
        assert_eq!(page.objects[1].size, 6, "home's p/b wins");
        put(&backup, "p/x/1", "1").await;
        put(&home, "p/y/1", "1").await;
        put(&home, "p/x/2", "2").await;
        let page = u.list_page("p/", Some("/"), None).await.unwrap();
        assert_eq!(page.common_prefixes, ["p/x/", "p/y/"]);

        u.delete("p/b").await.unwrap();
        assert!(home.head("p/b").await.unwrap().is_none());
        assert!(backup.head("p/b").await.unwrap().is_none());
    }
}
