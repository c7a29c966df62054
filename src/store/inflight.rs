//! What this process has under way in storage, as a decorator on any
//! [`ObjectStore`]: the multipart uploads it started and has neither
//! completed nor aborted. A stopping server calls [`Inflight::close`] after
//! its drain: every write is refused from then on (a transient error, so
//! the archiver keeps its session queued in the spool for the next start,
//! and never commits a session index whose party files the stop cut off),
//! the parts being sent are waited for (bounded), and every upload still
//! open is aborted, so a stop leaves no half-written upload behind for the
//! orphan sweep to find a day later. An upload whose writer was cut off
//! mid-way (its task dropped when the process stops) is caught the same
//! way. Deletes still pass: the renders' leases are deleted before.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Got, ListPage, ObjectMeta, ObjectStore, PutOptions, SharedStore, StoreError, Upload};

pub struct Inflight {
    inner: SharedStore,
    /// (key, upload id) of every upload started and not yet finished.
    open: Mutex<HashSet<(String, String)>>,
    /// Parts being sent right now (an abort while a part is on its way may
    /// leave that part stored: S3 says to abort again).
    sending: AtomicUsize,
    closed: AtomicBool,
}

/// How long [`Inflight::close`] waits for parts on their way.
const PARTS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Inflight {
    pub fn new(inner: SharedStore) -> Self {
        Self {
            inner,
            open: Mutex::new(HashSet::new()),
            sending: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse_if_closed(&self, key: &str) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Transient(format!(
                "not writing {key}: the server is shutting down"
            )));
        }
        Ok(())
    }

    /// Refuses new uploads and aborts every one still open; returns how
    /// many were aborted. Each abort is bounded like any storage request
    /// (the timeout decorator below this one).
    pub async fn close(&self) -> usize {
        self.closed.store(true, Ordering::Release);
        let waited = tokio::time::Instant::now();
        while self.sending.load(Ordering::Acquire) > 0 && waited.elapsed() < PARTS_WAIT {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let open: Vec<(String, String)> = self.open().drain().collect();
        let aborts = open
            .iter()
            .map(|(key, id)| self.inner.multipart_abort(key, id));
        let done = futures::future::join_all(aborts).await;
        for ((key, _), r) in open.iter().zip(&done) {
            if let Err(e) = r {
                tracing::warn!(%key, error = %e, "unfinished upload not aborted at stop (the orphan sweep will)");
            }
        }
        done.iter().filter(|r| r.is_ok()).count()
    }
}

#[async_trait]
impl ObjectStore for Inflight {
    fn range_boundary(&self, at: u64) -> u64 {
        self.inner.range_boundary(at)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }

    async fn get_object(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Got, StoreError> {
        self.inner.get_object(key, offset, len).await
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
        self.refuse_if_closed(key)?;
        self.inner.put(key, body, opts).await
    }

    async fn multipart_start(&self, key: &str, mark: Option<&str>) -> Result<String, StoreError> {
        self.refuse_if_closed(key)?;
        let id = self.inner.multipart_start(key, mark).await?;
        self.open().insert((key.to_string(), id.clone()));
        if self.closed.load(Ordering::Acquire) {
            // Closed while it started: `close` did not see it.
            self.open().remove(&(key.to_string(), id.clone()));
            let _ = self.inner.multipart_abort(key, &id).await;
            self.refuse_if_closed(key)?;
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
        self.refuse_if_closed(key)?;
        self.sending.fetch_add(1, Ordering::AcqRel);
        let sent = self.inner.multipart_part(key, upload, number, body).await;
        self.sending.fetch_sub(1, Ordering::AcqRel);
        sent
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError> {
        self.refuse_if_closed(key)?;
        let done = self.inner.multipart_complete(key, upload, tags).await;
        if done.is_ok() {
            self.open().remove(&(key.to_string(), upload.to_string()));
        }
        done
    }

    async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        let done = self.inner.multipart_abort(key, upload).await;
        self.open().remove(&(key.to_string(), upload.to_string()));
        done
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        self.inner.multipart_list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    #[tokio::test]
    async fn close_aborts_open_uploads_keeps_finished_ones_and_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Inflight::new(std::sync::Arc::new(LocalStore::open(dir.path()).unwrap()));
        let done = store.multipart_start("t/done.bin", None).await.unwrap();
        let tag = store
            .multipart_part("t/done.bin", &done, 1, Bytes::from_static(b"whole"))
            .await
            .unwrap();
        store
            .multipart_complete("t/done.bin", &done, vec![tag])
            .await
            .unwrap();
        let cut = store.multipart_start("t/cut.bin", None).await.unwrap();
        store
            .multipart_part("t/cut.bin", &cut, 1, Bytes::from_static(b"half"))
            .await
            .unwrap();
        // A writer that started an upload and was dropped never finishes it.
        let _dropped = store.multipart_start("t/dropped.bin", None).await.unwrap();
        assert_eq!(store.multipart_list("t/").await.unwrap().len(), 2);

        assert_eq!(store.close().await, 2, "the two open uploads aborted");
        assert!(store.multipart_list("t/").await.unwrap().is_empty());
        assert!(store.head("t/done.bin").await.unwrap().is_some());
        assert!(store.head("t/cut.bin").await.unwrap().is_none());
        let refused = store.multipart_start("t/late.bin", None).await.unwrap_err();
        assert!(refused.is_transient(), "{refused}");
        assert!(refused.to_string().contains("shutting down"), "{refused}");
        let late_part = store
            .multipart_part("t/cut.bin", &cut, 2, Bytes::from_static(b"more"))
            .await
            .unwrap_err();
        assert!(late_part.is_transient());
        assert!(store.multipart_list("t/").await.unwrap().is_empty());
        // No write commits anything after the stop (a session index, say).
        let late_put = store
            .put(
                "t/index.json",
                Bytes::from_static(b"{}"),
                PutOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(late_put.is_transient());
        assert!(store.head("t/index.json").await.unwrap().is_none());
        store.delete("t/done.bin").await.unwrap();
    }
}
