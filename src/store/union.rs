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
//!
//! When `home` fails with a transient error (down, throttling, not
//! answering within `storage_timeout_secs`), reads and the choice of where
//! a write goes ask the backup first for [`HOME_DOWN_FOR`]: one request
//! pays the wait on a customer bucket that is down, not every download of
//! a session the backup still holds. Any answer from `home` ends it.

use async_trait::async_trait;
use bytes::Bytes;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Got, ListPage, ObjectMeta, ObjectStore, PutOptions, SharedStore, StoreError, Upload};

/// How long after `home` failed transiently the backup is asked first.
pub const HOME_DOWN_FOR: Duration = Duration::from_secs(30);

pub struct Union {
    home: SharedStore,
    backup: SharedStore,
    /// Multipart uploads started in the backup (by id); the others are home's.
    in_backup: Mutex<std::collections::HashSet<String>>,
    /// When `home` last failed transiently, until it answers again.
    home_failed: Mutex<Option<Instant>>,
}

impl Union {
    pub fn new(home: SharedStore, backup: SharedStore) -> Self {
        Self {
            home,
            backup,
            in_backup: Default::default(),
            home_failed: Mutex::new(None),
        }
    }

    /// Whether `home` failed transiently within [`HOME_DOWN_FOR`].
    fn home_down(&self) -> bool {
        self.home_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < HOME_DOWN_FOR)
    }

    /// Asks `home`, remembering whether it answered.
    async fn ask_home<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let r = op.await;
        let mut failed = self.home_failed.lock().unwrap_or_else(|e| e.into_inner());
        match &r {
            Err(e) if e.is_transient() => {
                if failed.is_none() {
                    tracing::warn!(error = %e, "the tenant's own storage failed; the backup is asked first for {} s", HOME_DOWN_FOR.as_secs());
                }
                *failed = Some(Instant::now());
            }
            _ => {
                if failed.take().is_some() {
                    tracing::info!("the tenant's own storage answers again");
                }
            }
        }
        r
    }

    /// Where a write of `key` goes: beside its session's index (the
    /// backup while only the backup has it), else home.
    async fn for_write(&self, key: &str) -> Result<&SharedStore, StoreError> {
        let Some(folder) = crate::layout::session_folder_of(key) else {
            return Ok(&self.home);
        };
        let index = format!("{folder}{}", crate::layout::INDEX);
        if self.home_down() && matches!(self.backup.head(&index).await, Ok(Some(_))) {
            return Ok(&self.backup);
        }
        match self.ask_home(self.home.head(&index)).await {
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
        if self.home_down() {
            match self.backup.head(key).await {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => return self.ask_home(self.home.head(key)).await,
                Err(_) => {}
            }
        }
        match self.ask_home(self.home.head(key)).await {
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
        if self.home_down() {
            match self.backup.get_object(key, offset, len).await {
                Ok(g) => return Ok(g),
                Err(StoreError::NotFound(_)) => {
                    return self.ask_home(self.home.get_object(key, offset, len)).await
                }
                Err(_) => {}
            }
        }
        match self.ask_home(self.home.get_object(key, offset, len)).await {
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
        if self.home_down() {
            match everything(self.backup.as_ref(), prefix, delimiter).await {
                Ok(b) if !b.objects.is_empty() || !b.common_prefixes.is_empty() => return Ok(b),
                _ => {}
            }
        }
        let (home, backup) = tokio::join!(
            self.ask_home(everything(self.home.as_ref(), prefix, delimiter)),
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
    async fn a_home_that_does_not_answer_is_waited_for_once_then_the_backup_is_asked_first() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let home_raw: SharedStore = Arc::new(LocalStore::open(&dir.path().join("home")).unwrap());
        let backup: SharedStore = Arc::new(LocalStore::open(&dir.path().join("backup")).unwrap());
        let (asked, down) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(true)),
        );
        let (a, d) = (asked.clone(), down.clone());
        // The customer's bucket as the server has it: behind the timeout
        // decorator, here a black hole answering nothing for 10 s.
        let tap = crate::store::tap::Tap::new(home_raw.clone()).before(move |_| {
            a.fetch_add(1, Ordering::SeqCst);
            if d.load(Ordering::SeqCst) {
                Duration::from_secs(10)
            } else {
                Duration::ZERO
            }
        });
        let step = Duration::from_millis(200);
        let home: SharedStore = Arc::new(crate::store::timeout::Timeouts::new(tap, step, step));
        let u = Union::new(home, backup.clone());
        let k = crate::layout::SessionKeys::new("t/", "2026", "11", "23", "c1");
        let archive = k.archive();
        for (key, body) in [(k.index(), "{}"), (archive.clone(), "backup-tgz")] {
            backup
                .put(&key, Bytes::from(body), PutOptions::default())
                .await
                .unwrap();
        }
        // The first read waits for home's timeout, then reads the backup.
        assert_eq!(text(&u, &archive).await, "backup-tgz");
        let after_first = asked.load(Ordering::SeqCst);
        assert!(after_first >= 1);
        // Every read, listing and write of the session after it goes to
        // the backup without asking home.
        assert_eq!(text(&u, &archive).await, "backup-tgz");
        assert_eq!(u.head(&archive).await.unwrap().unwrap().size, 10);
        let page = u.list_page(k.prefix(), None, None).await.unwrap();
        assert_eq!(page.objects.len(), 2);
        u.put(
            &k.derived("c1.mp3"),
            Bytes::from_static(b"mp3"),
            PutOptions::default(),
        )
        .await
        .unwrap();
        assert!(backup.head(&k.derived("c1.mp3")).await.unwrap().is_some());
        assert_eq!(
            asked.load(Ordering::SeqCst),
            after_first,
            "home is not asked again while it is down"
        );
        // What only home can have is still asked of it; its answer ends
        // the detour, and home is read first again.
        down.store(false, Ordering::SeqCst);
        home_raw
            .put(
                &archive,
                Bytes::from_static(b"home-tgz"),
                PutOptions::default(),
            )
            .await
            .unwrap();
        assert!(u.head("t/only-at-home").await.unwrap().is_none());
        assert_eq!(text(&u, &archive).await, "home-tgz");
        assert!(asked.load(Ordering::SeqCst) > after_first);
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
