//! Bounded waits on storage, as a decorator on any [`ObjectStore`]: every
//! operation must answer within `[limits] storage_timeout_secs` (the SDK's
//! own retries included), and a body being streamed must deliver its next
//! piece within `storage_stall_secs`. A wait that runs out is a transient
//! error naming the operation and the limit, so a client gets a clear
//! "try again" (SFTP failure, FTP 451, HTTP 503) instead of a hang, and the
//! archiver retries it like any other transient fault.
//!
//! Every operation passing here is also counted, by name and outcome, with
//! its latency ([`crate::metrics`]).
//!
//! Without it, an endpoint that accepts connections and never answers (a
//! network partition, a stuck proxy) held every request, and the start-up
//! storage check, for as long as it stayed silent.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{ByteStream, Got, ListPage, ObjectMeta, ObjectStore, PutOptions, StoreError, Upload};

pub struct Timeouts<S> {
    inner: S,
    operation: Duration,
    stall: Duration,
}

impl<S: ObjectStore> Timeouts<S> {
    pub fn new(inner: S, operation: Duration, stall: Duration) -> Self {
        Self {
            inner,
            operation,
            stall,
        }
    }

    async fn within<T>(
        &self,
        what: &str,
        key: &str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let began = std::time::Instant::now();
        let r = match tokio::time::timeout(self.operation, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Transient(format!(
                "storage did not answer {what} {key} within {} s ([limits] storage_timeout_secs)",
                self.operation.as_secs_f64()
            ))),
        };
        let outcome = r.as_ref().map_or_else(StoreError::kind, |_| "ok");
        crate::metrics::storage(what, outcome, began.elapsed());
        r
    }
}

/// `body`, failing with a transient error when its next piece takes longer
/// than `stall` (a body cut or stalled mid-stream is never a short success).
fn stall_bounded(body: ByteStream, stall: Duration, key: String) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(body), move |state| {
        let key = key.clone();
        async move {
            let mut body = state?;
            match tokio::time::timeout(stall, body.next()).await {
                Ok(Some(item)) => Some((item, Some(body))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(StoreError::Transient(format!(
                        "storage stopped sending {key} for {} s ([limits] storage_stall_secs)",
                        stall.as_secs_f64()
                    ))),
                    None,
                )),
            }
        }
    }))
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for Timeouts<S> {
    fn range_boundary(&self, at: u64) -> u64 {
        self.inner.range_boundary(at)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.within("HEAD", key, self.inner.head(key)).await
    }

    async fn get_object(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Got, StoreError> {
        let got = self
            .within("GET", key, self.inner.get_object(key, offset, len))
            .await?;
        Ok(Got {
            meta: got.meta,
            body: stall_bounded(got.body, self.stall, key.to_string()),
        })
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        self.within(
            "LIST",
            prefix,
            self.inner.list_page(prefix, delimiter, continuation),
        )
        .await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError> {
        self.within("PUT", key, self.inner.put(key, body, opts))
            .await
    }

    async fn multipart_start(&self, key: &str, mark: Option<&str>) -> Result<String, StoreError> {
        self.within(
            "CreateMultipartUpload",
            key,
            self.inner.multipart_start(key, mark),
        )
        .await
    }

    async fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.within(
            "UploadPart",
            key,
            self.inner.multipart_part(key, upload, number, body),
        )
        .await
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError> {
        self.within(
            "CompleteMultipartUpload",
            key,
            self.inner.multipart_complete(key, upload, tags),
        )
        .await
    }

    async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        self.within(
            "AbortMultipartUpload",
            key,
            self.inner.multipart_abort(key, upload),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.within("DELETE", key, self.inner.delete(key)).await
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        self.within(
            "ListMultipartUploads",
            prefix,
            self.inner.multipart_list(prefix),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose every operation waits forever, and whose bodies send
    /// one piece and then nothing.
    struct Silent;

    #[async_trait]
    impl ObjectStore for Silent {
        async fn head(&self, _: &str) -> Result<Option<ObjectMeta>, StoreError> {
            futures::future::pending().await
        }
        async fn get_object(&self, key: &str, _: u64, _: Option<u64>) -> Result<Got, StoreError> {
            if key == "stalls" {
                let first = futures::stream::iter([Ok(Bytes::from_static(b"abc"))]);
                return Ok(Got {
                    meta: ObjectMeta {
                        key: key.into(),
                        size: 6,
                        last_modified: chrono::Utc::now(),
                        mark: None,
                        etag: None,
                    },
                    body: Box::pin(first.chain(futures::stream::pending())),
                });
            }
            futures::future::pending().await
        }
        async fn list_page(
            &self,
            _: &str,
            _: Option<&str>,
            _: Option<String>,
        ) -> Result<ListPage, StoreError> {
            futures::future::pending().await
        }
        async fn put(&self, _: &str, _: Bytes, _: PutOptions) -> Result<(), StoreError> {
            futures::future::pending().await
        }
        async fn multipart_start(&self, _: &str, _: Option<&str>) -> Result<String, StoreError> {
            futures::future::pending().await
        }
        async fn multipart_part(
            &self,
            _: &str,
            _: &str,
            _: u32,
            _: Bytes,
        ) -> Result<String, StoreError> {
            futures::future::pending().await
        }
        async fn multipart_complete(
            &self,
            _: &str,
            _: &str,
            _: Vec<String>,
        ) -> Result<(), StoreError> {
            futures::future::pending().await
        }
        async fn multipart_abort(&self, _: &str, _: &str) -> Result<(), StoreError> {
            futures::future::pending().await
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            futures::future::pending().await
        }
        async fn multipart_list(&self, _: &str) -> Result<Vec<Upload>, StoreError> {
            futures::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_silent_store_fails_every_operation_with_a_transient_error_naming_the_limit() {
        let s = Timeouts::new(Silent, Duration::from_millis(30), Duration::from_millis(20));
        let e = s.head("k").await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("HEAD k within 0.03 s"), "{e}");
        assert!(s
            .list_page("p/", None, None)
            .await
            .unwrap_err()
            .is_transient());
        assert!(s
            .put("k", Bytes::new(), PutOptions::default())
            .await
            .unwrap_err()
            .is_transient());
        assert!(s
            .multipart_start("k", None)
            .await
            .unwrap_err()
            .is_transient());
        assert!(s
            .multipart_part("k", "u", 1, Bytes::new())
            .await
            .unwrap_err()
            .is_transient());
        assert!(s
            .multipart_complete("k", "u", vec![])
            .await
            .unwrap_err()
            .is_transient());
        assert!(s
            .multipart_abort("k", "u")
            .await
            .unwrap_err()
            .is_transient());
        assert!(s.delete("k").await.unwrap_err().is_transient());
        assert!(s.multipart_list("p/").await.unwrap_err().is_transient());
        assert!(s.get("k", 0, None).await.err().unwrap().is_transient());
    }

    #[tokio::test]
    async fn a_body_that_stalls_ends_with_an_error_not_a_short_success() {
        let s = Timeouts::new(Silent, Duration::from_millis(30), Duration::from_millis(20));
        let mut body = s.get("stalls", 0, None).await.unwrap();
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"abc");
        let e = body.next().await.unwrap().unwrap_err();
        assert!(
            e.is_transient() && e.to_string().contains("stopped sending stalls"),
            "{e}"
        );
        assert!(body.next().await.is_none());
    }
}
