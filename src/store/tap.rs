//! A test decorator: every operation passes through to the inner store;
//! one hook sees each operation before it goes (to count it, delay it, or
//! panic as a bug would) and another may replace what a GET returns (a
//! slow link, a body cut mid-way). One forwarding store for every test
//! that watches or bends storage, instead of one each.

use async_trait::async_trait;
use bytes::Bytes;

use super::{Got, ListPage, ObjectMeta, ObjectStore, PutOptions, SharedStore, StoreError, Upload};

use std::time::Duration;

/// An operation about to reach the inner store.
#[derive(Debug)]
pub enum Op<'a> {
    Get {
        key: &'a str,
        offset: u64,
        len: Option<u64>,
    },
    Put {
        key: &'a str,
    },
    Part {
        key: &'a str,
        len: usize,
    },
    /// Any other operation (HEAD, LIST, the rest of multipart, DELETE).
    Other,
}

type BeforeHook = dyn Fn(&Op<'_>) -> Duration + Send + Sync;
/// What a GET hook is given: the GET's key, offset and length, and its answer.
type GetHook = dyn Fn(&str, u64, Option<u64>, Got) -> Got + Send + Sync;

pub struct Tap {
    inner: SharedStore,
    before: Box<BeforeHook>,
    on_get: Box<GetHook>,
}

impl Tap {
    /// Passes everything through unchanged.
    pub fn new(inner: SharedStore) -> Self {
        Self {
            inner,
            before: Box::new(|_| Duration::ZERO),
            on_get: Box::new(|_, _, _, got| got),
        }
    }

    /// Calls `f` before each operation and waits the time it returns.
    pub fn before(mut self, f: impl Fn(&Op<'_>) -> Duration + Send + Sync + 'static) -> Self {
        self.before = Box::new(f);
        self
    }

    /// Replaces each GET's answer with what `f` makes of it.
    pub fn on_get(
        mut self,
        f: impl Fn(&str, u64, Option<u64>, Got) -> Got + Send + Sync + 'static,
    ) -> Self {
        self.on_get = Box::new(f);
        self
    }

    async fn about_to(&self, op: Op<'_>) {
        let wait = (self.before)(&op);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl ObjectStore for Tap {
    fn range_boundary(&self, at: u64) -> u64 {
        self.inner.range_boundary(at)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.about_to(Op::Other).await;
        self.inner.head(key).await
    }

    async fn get_object(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Got, StoreError> {
        self.about_to(Op::Get { key, offset, len }).await;
        let got = self.inner.get_object(key, offset, len).await?;
        Ok((self.on_get)(key, offset, len, got))
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        self.about_to(Op::Other).await;
        self.inner.list_page(prefix, delimiter, continuation).await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError> {
        self.about_to(Op::Put { key }).await;
        self.inner.put(key, body, opts).await
    }

    async fn multipart_start(&self, key: &str, mark: Option<&str>) -> Result<String, StoreError> {
        self.about_to(Op::Other).await;
        self.inner.multipart_start(key, mark).await
    }

    async fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.about_to(Op::Part {
            key,
            len: body.len(),
        })
        .await;
        self.inner.multipart_part(key, upload, number, body).await
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError> {
        self.about_to(Op::Other).await;
        self.inner.multipart_complete(key, upload, tags).await
    }

    async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        self.about_to(Op::Other).await;
        self.inner.multipart_abort(key, upload).await
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        self.about_to(Op::Other).await;
        self.inner.multipart_list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.about_to(Op::Other).await;
        self.inner.delete(key).await
    }
}
