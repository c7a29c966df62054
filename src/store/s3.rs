//! S3 (and S3-compatible stores) through aws-sdk-s3, over rustls with ring.
//!
//! Credentials come from the standard AWS chain, or from a profile's key
//! files, and may be exchanged for a role's (STS AssumeRole with an
//! external id, refreshed before they expire). With `expected_bucket_owner`
//! every request carries `x-amz-expected-bucket-owner`, so a bucket name
//! that another account holds is refused by S3. Server-side encryption
//! settings (`sse`, `sse_kms_key_id`, `sse_c_key_file`) are passed through on
//! every request that needs them. Errors are sorted once, here, into
//! not-found / already-exists / transient / permanent.

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as AwsByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{Got, ListPage, ObjectMeta, ObjectStore, PutOptions, StoreError};

/// The user metadata key of an object's mark (`x-amz-meta-recvault-mark`).
const MARK: &str = "recvault-mark";
use crate::config::StorageConfig;

#[derive(Clone)]
struct SseC {
    key_b64: String,
    md5_b64: String,
}

pub struct S3Store {
    client: Client,
    bucket: String,
    sse: Option<ServerSideEncryption>,
    kms_key: Option<String>,
    sse_c: Option<SseC>,
}

/// How the SDK tries each request: `max` attempts (the first included),
/// each answering within `timeout`, retried after an exponential backoff
/// with full jitter (0.2 s doubling to 5 s, times a random factor in
/// [0, 1)), so that nodes sharing a bucket do not retry in step. Throttling
/// (`503 SlowDown`), `500`s, timeouts and dropped connections are retried;
/// the whole operation stays bounded by the [`super::timeout::Timeouts`]
/// decorator.
#[derive(Debug, Clone, Copy)]
pub struct Attempts {
    pub max: u32,
    pub timeout: std::time::Duration,
}

impl Attempts {
    pub fn of(limits: &crate::limits::Limits) -> Self {
        Self {
            max: limits.storage_attempts.max(1),
            timeout: std::time::Duration::from_secs(limits.storage_attempt_secs.max(1)),
        }
    }
}

impl Default for Attempts {
    fn default() -> Self {
        Self::of(&crate::limits::Limits::default())
    }
}

impl S3Store {
    /// Connects with credentials from the standard AWS chain.
    pub async fn connect(cfg: &StorageConfig, attempts: Attempts) -> Result<Self, String> {
        Self::connect_inner(cfg, None, attempts).await
    }

    /// Connects with explicit static credentials (tools and tests).
    pub async fn connect_with_key(
        cfg: &StorageConfig,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Self, String> {
        let creds = aws_sdk_s3::config::Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "recvault-static",
        );
        Self::connect_inner(cfg, Some(creds), Attempts::default()).await
    }

    async fn connect_inner(
        cfg: &StorageConfig,
        creds: Option<aws_sdk_s3::config::Credentials>,
        attempts: Attempts,
    ) -> Result<Self, String> {
        use aws_sdk_s3::config::{retry::RetryConfig, timeout::TimeoutConfig};
        let bucket = cfg
            .bucket
            .as_ref()
            .ok_or("[storage] bucket is required")?
            .get_ref()
            .clone();
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &cfg.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let creds = match (creds, &cfg.access_key_file, &cfg.secret_key_file) {
            (Some(c), _, _) => Some(c),
            (None, Some(id), Some(secret)) => Some(aws_sdk_s3::config::Credentials::new(
                crate::secret::read_secret_file(id.get_ref())?.trim(),
                crate::secret::read_secret_file(secret.get_ref())?.trim(),
                None,
                None,
                "recvault-key-files",
            )),
            _ => None,
        };
        if let Some(c) = &creds {
            loader = loader.credentials_provider(c.clone());
        }
        let mut shared = loader.load().await;
        if shared.region().is_none() {
            shared = shared
                .into_builder()
                .region(aws_config::Region::new("us-east-1"))
                .build();
        }
        let role = match &cfg.role_arn {
            Some(arn) => Some(assume_role(&shared, cfg, arn.get_ref()).await),
            None => None,
        };
        // Objects uploaded in parts carry part-level checksums the SDK cannot
        // check on a whole-object GET (it would warn on every download);
        // integrity is checked against the SHA-256s in each session's index.
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(attempts.max)
                    .with_initial_backoff(std::time::Duration::from_millis(200))
                    .with_max_backoff(std::time::Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(attempts.timeout.min(std::time::Duration::from_secs(5)))
                    .operation_attempt_timeout(attempts.timeout)
                    .build(),
            );
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep.get_ref());
        }
        if let Some(r) = role {
            b = b.credentials_provider(r);
        }
        if let Some(owner) = &cfg.expected_bucket_owner {
            b = b.interceptor(ExpectedOwner(owner.get_ref().clone()));
        }
        let sse = cfg
            .sse
            .as_ref()
            .map(|s| ServerSideEncryption::from(s.get_ref().as_str()));
        let sse_c = match &cfg.sse_c_key_file {
            Some(path) => Some(load_sse_c(path.get_ref())?),
            None => None,
        };
        Ok(Self {
            client: Client::from_conf(b.build()),
            bucket,
            sse,
            kms_key: cfg.sse_kms_key_id.clone(),
            sse_c,
        })
    }
}

/// The credentials of `arn`, assumed with `shared`'s (the chain's or the
/// key files'), the configured external id and a session name that says
/// who asks; the SDK's provider refreshes them before they expire.
async fn assume_role(
    shared: &aws_config::SdkConfig,
    cfg: &StorageConfig,
    arn: &str,
) -> aws_config::sts::AssumeRoleProvider {
    let mut sts = shared.clone().into_builder();
    if let Some(ep) = &cfg.sts_endpoint {
        sts = sts.endpoint_url(ep.get_ref());
    }
    let session = format!(
        "recvault-{}",
        cfg.name
            .as_ref()
            .map_or("default", |n| n.get_ref().as_str())
    );
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(arn)
        .session_name(session.chars().take(64).collect::<String>())
        .configure(&sts.build());
    if let Some(x) = &cfg.external_id {
        builder = builder.external_id(x.get_ref());
    }
    builder.build().await
}

/// Adds `x-amz-expected-bucket-owner` to every request, before it is
/// signed, so no operation can go without it.
#[derive(Debug)]
struct ExpectedOwner(String);

impl aws_sdk_s3::config::Intercept for ExpectedOwner {
    fn name(&self) -> &'static str {
        "ExpectedBucketOwner"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("x-amz-expected-bucket-owner", self.0.clone());
        Ok(())
    }
}

fn load_sse_c(path: &std::path::Path) -> Result<SseC, String> {
    use md5::Digest;
    let text = crate::secret::read_secret_file(path)?;
    let key = match aws_smithy_types::base64::decode(&text) {
        Ok(k) if k.len() == 32 => k,
        _ if text.len() == 32 => text.into_bytes(),
        _ => {
            return Err(format!(
                "{}: an SSE-C key is 32 bytes, raw or base64",
                path.display()
            ))
        }
    };
    Ok(SseC {
        key_b64: aws_smithy_types::base64::encode(&key),
        md5_b64: aws_smithy_types::base64::encode(md5::Md5::digest(&key)),
    })
}

/// Sorts an SDK error into the store's error kinds.
fn classify<E>(key: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = http_status(&err);
    let detail = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("no message")
            )
        }
        other => format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(other)
        ),
    };
    match (&err, status) {
        (_, Some(404)) => StoreError::NotFound(key.to_string()),
        (_, Some(412)) => StoreError::AlreadyExists(key.to_string()),
        (_, Some(s)) if s == 408 || s == 409 || s == 429 || s >= 500 => {
            StoreError::Transient(format!("{key}: HTTP {s}: {detail}"))
        }
        (_, Some(s)) => StoreError::Permanent(format!("{key}: HTTP {s}: {detail}")),
        (SdkError::ConstructionFailure(_), _) => StoreError::Permanent(format!("{key}: {detail}")),
        _ => StoreError::Transient(format!("{key}: {detail}")),
    }
}

fn http_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    }
}

fn to_utc(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(Utc::now)
}

fn range_header(offset: u64, len: Option<u64>) -> Option<String> {
    match len {
        Some(l) => Some(format!("bytes={}-{}", offset, offset + l - 1)),
        None if offset > 0 => Some(format!("bytes={offset}-")),
        None => None,
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let mut req = self.client.head_object().bucket(&self.bucket).key(key);
        if let Some(c) = &self.sse_c {
            req = req
                .sse_customer_algorithm("AES256")
                .sse_customer_key(&c.key_b64)
                .sse_customer_key_md5(&c.md5_b64);
        }
        match req.send().await {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: to_utc(out.last_modified()),
                mark: out.metadata().and_then(|m| m.get(MARK)).cloned(),
                etag: out.e_tag().map(str::to_string),
            })),
            Err(e) => match classify(key, e) {
                StoreError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn get_object(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Got, StoreError> {
        if len == Some(0) {
            // No range can be empty: a HEAD tells the object's metadata.
            let meta = self
                .head(key)
                .await?
                .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            return Ok(Got {
                meta,
                body: Box::pin(futures::stream::empty()),
            });
        }
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(r) = range_header(offset, len) {
            req = req.range(r);
        }
        if let Some(c) = &self.sse_c {
            req = req
                .sse_customer_algorithm("AES256")
                .sse_customer_key(&c.key_b64)
                .sse_customer_key_md5(&c.md5_b64);
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                // A range starting at the end of an object: an empty body, not an error.
                if http_status(&e) == Some(416) {
                    return self.get_object(key, 0, Some(0)).await;
                }
                return Err(classify(key, e));
            }
        };
        let body_len = out.content_length().unwrap_or(0).max(0) as u64;
        // `bytes a-b/size` names the whole object's size; without a range
        // the body is the whole object.
        let size = out
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(offset + body_len);
        let meta = ObjectMeta {
            key: key.to_string(),
            size,
            last_modified: to_utc(out.last_modified()),
            mark: out.metadata().and_then(|m| m.get(MARK)).cloned(),
            etag: out.e_tag().map(str::to_string),
        };
        let key = key.to_string();
        let body: AwsByteStream = out.body;
        let stream = futures::stream::unfold(Some(body), move |state| {
            let key = key.clone();
            async move {
                let mut body = state?;
                match body.next().await {
                    Some(Ok(b)) => Some((Ok(b), Some(body))),
                    Some(Err(e)) => Some((
                        Err(StoreError::Transient(format!("{key}: reading body: {e}"))),
                        None,
                    )),
                    None => None,
                }
            }
        });
        Ok(Got {
            meta,
            body: Box::pin(stream),
        })
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix);
        if let Some(d) = delimiter {
            req = req.delimiter(d);
        }
        if let Some(c) = continuation {
            req = req.continuation_token(c);
        }
        let out = req.send().await.map_err(|e| classify(prefix, e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta {
                    mark: None,
                    etag: o.e_tag().map(str::to_string),
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: to_utc(o.last_modified()),
                })
            })
            .collect();
        let common_prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_owned))
            .collect();
        let next = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            common_prefixes,
            next,
        })
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64)
            .body(AwsByteStream::from(body));
        if opts.if_absent {
            req = req.if_none_match("*");
        }
        if let Some(m) = &opts.mark {
            req = req.metadata(MARK, m);
        }
        if let Some(tag) = &opts.if_match {
            req = req.if_match(tag);
        }
        let on_version = opts.if_match.is_some();
        if let Some(s) = &self.sse {
            req = req.server_side_encryption(s.clone());
        }
        if let Some(k) = &self.kms_key {
            req = req.ssekms_key_id(k);
        }
        if let Some(c) = &self.sse_c {
            req = req
                .sse_customer_algorithm("AES256")
                .sse_customer_key(&c.key_b64)
                .sse_customer_key_md5(&c.md5_b64);
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| match classify(key, e) {
                // 412 to an If-Match: another version is there now.
                // (404 to an If-Match: the version read is gone.)
                StoreError::AlreadyExists(k) | StoreError::NotFound(k) if on_version => {
                    StoreError::Changed(k)
                }
                other => other,
            })
    }

    async fn multipart_start(&self, key: &str, mark: Option<&str>) -> Result<String, StoreError> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key);
        if let Some(m) = mark {
            req = req.metadata(MARK, m);
        }
        if let Some(s) = &self.sse {
            req = req.server_side_encryption(s.clone());
        }
        if let Some(k) = &self.kms_key {
            req = req.ssekms_key_id(k);
        }
        if let Some(c) = &self.sse_c {
            req = req
                .sse_customer_algorithm("AES256")
                .sse_customer_key(&c.key_b64)
                .sse_customer_key_md5(&c.md5_b64);
        }
        let out = req.send().await.map_err(|e| classify(key, e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Permanent(format!("{key}: store returned no upload id")))
    }

    async fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let mut req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .part_number(number as i32)
            .content_length(body.len() as i64)
            .body(AwsByteStream::from(body));
        if let Some(c) = &self.sse_c {
            req = req
                .sse_customer_algorithm("AES256")
                .sse_customer_key(&c.key_b64)
                .sse_customer_key_md5(&c.md5_b64);
        }
        let out = req.send().await.map_err(|e| classify(key, e))?;
        out.e_tag()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Permanent(format!("{key}: store returned no part tag")))
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError> {
        let parts = tags
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(t)
                    .build()
            })
            .collect();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if let Some(c) = &self.sse_c {
            req = req
                .sse_customer_algorithm("AES256")
                .sse_customer_key(&c.key_b64)
                .sse_customer_key_md5(&c.md5_b64);
        }
        req.send().await.map(|_| ()).map_err(|e| classify(key, e))
    }

    async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify(key, e) {
                StoreError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify(key, e) {
                StoreError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<super::Upload>, StoreError> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| classify(prefix, e))?;
            for u in page.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    out.push(super::Upload {
                        key: key.to_string(),
                        id: id.to_string(),
                        started: to_utc(u.initiated()),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::range_header;

    #[test]
    fn ranges() {
        assert_eq!(range_header(0, None), None);
        assert_eq!(range_header(10, None).as_deref(), Some("bytes=10-"));
        assert_eq!(range_header(10, Some(5)).as_deref(), Some("bytes=10-14"));
    }
}
