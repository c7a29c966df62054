//! One tree over two places, for a tenant with `delivery = "customer"`:
//! `home` (the customer's storage, where sessions are delivered) and
//! `backup` (the operator's, where they are archived first and kept for
//! `backup_hours` after a verified delivery).
//!
//! Reads try `home` first and fall back to `backup` when the object is not
//! there, or when `home` fails and `backup` has it (a customer bucket that
//! is down does not hide what the backup still holds). Writes (renders,
//! leases) go to `home`, where the session lives once delivered; deletes
//! (an erase) go to both. Listings are `home`'s pages, then `backup`'s,
//! so a key in both may be listed twice (erase deletes it twice; nothing
//! else lists a session folder).

use async_trait::async_trait;
use bytes::Bytes;

use super::{Got, ListPage, ObjectMeta, ObjectStore, PutOptions, SharedStore, StoreError, Upload};

pub struct Union {
    home: SharedStore,
    backup: SharedStore,
}

impl Union {
    pub fn new(home: SharedStore, backup: SharedStore) -> Self {
        Self { home, backup }
    }
}

/// Continuation tokens of the two phases of a listing.
const HOME: &str = "h:";
const BACKUP: &str = "b:";

#[async_trait]
impl ObjectStore for Union {
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
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let (from_backup, token) = match continuation.as_deref() {
            None => (false, None),
            Some(t) if t.starts_with(BACKUP) => (
                true,
                Some(t[BACKUP.len()..].to_string()).filter(|t| !t.is_empty()),
            ),
            Some(t) => (false, t.strip_prefix(HOME).map(str::to_string)),
        };
        if from_backup {
            let mut page = self.backup.list_page(prefix, delimiter, token).await?;
            page.next = page.next.map(|n| format!("{BACKUP}{n}"));
            return Ok(page);
        }
        let mut page = self.home.list_page(prefix, delimiter, token).await?;
        page.next = Some(match page.next {
            Some(n) => format!("{HOME}{n}"),
            None => BACKUP.to_string(),
        });
        if page.next.as_deref() == Some(BACKUP) && page.objects.is_empty() {
            // Nothing more at home: go straight on with the backup.
            let mut rest = self.backup.list_page(prefix, delimiter, None).await?;
            rest.common_prefixes
                .retain(|p| !page.common_prefixes.contains(p));
            page.common_prefixes.extend(rest.common_prefixes);
            page.objects = rest.objects;
            page.next = rest.next.map(|n| format!("{BACKUP}{n}"));
        }
        Ok(page)
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError> {
        self.home.put(key, body, opts).await
    }

    async fn multipart_start(&self, key: &str, mark: Option<&str>) -> Result<String, StoreError> {
        self.home.multipart_start(key, mark).await
    }

    async fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.home.multipart_part(key, upload, number, body).await
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError> {
        self.home.multipart_complete(key, upload, tags).await
    }

    async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        self.home.multipart_abort(key, upload).await
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        self.home.multipart_list(prefix).await
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
    use std::sync::Arc;

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
        let put = |s: &SharedStore, k: &'static str, v: &'static str| {
            let s = s.clone();
            async move {
                s.put(k, Bytes::from_static(v.as_bytes()), PutOptions::default())
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

        let mut keys = Vec::new();
        let mut next = None;
        loop {
            let page = u.list_page("p/", None, next).await.unwrap();
            keys.extend(page.objects.into_iter().map(|o| o.key));
            next = page.next;
            if next.is_none() {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys, ["p/a", "p/b", "p/c", "p/d"]);

        u.delete("p/b").await.unwrap();
        assert!(home.head("p/b").await.unwrap().is_none());
        assert!(backup.head("p/b").await.unwrap().is_none());
    }
}
