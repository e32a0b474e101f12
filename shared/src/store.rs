//! S3-compatible object store client over `aws-sdk-s3`.

use crate::config::S3Settings;
use crate::keys::{self, KeyError};
use aws_sdk_s3::{
    config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Credentials, Region},
    error::{ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
    Client,
};
use bytes::Bytes;
use secrecy::ExposeSecret;
use std::time::Duration;

/// Objects above this size are uploaded in parts of this size.
pub const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("object not found: {key}")]
    NotFound {
        /// Missing key.
        key: String,
    },
    /// A byte range starts past the object's end.
    #[error("byte range {range} lies outside object {key}")]
    RangeOutside {
        /// Object key.
        key: String,
        /// The requested HTTP range.
        range: String,
    },
    /// The key would be unsafe to use.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// The object exists but cannot be read as what it should be (bad JSON, CSV).
    #[error("{key} is unreadable: {message}")]
    Corrupt {
        /// Object key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request failed after retries.
    #[error("s3 {op} {key}: {message}")]
    Request {
        /// Operation name.
        op: &'static str,
        /// Key or prefix.
        key: String,
        /// Error code and message from the server or transport.
        message: String,
    },
}

impl StoreError {
    /// Whether no retry can help: a bad key, a range past the end, an unreadable object.
    /// A missing object is not: the caller knows whether it may still appear.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::InvalidKey(_)
                | StoreError::RangeOutside { .. }
                | StoreError::Corrupt { .. }
        )
    }
}

/// Metadata of a listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A client bound to one bucket.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    bucket: String,
}

fn request_error<E, R>(op: &'static str, key: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let message = match &err {
        SdkError::ServiceError(e) => {
            let m = e.err();
            format!(
                "{}: {}",
                m.code().unwrap_or("error"),
                m.message().unwrap_or("no message")
            )
        }
        other => aws_sdk_s3::error::DisplayErrorContext(other).to_string(),
    };
    StoreError::Request {
        op,
        key: key.to_string(),
        message,
    }
}

fn is_not_found<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool
where
    R: HttpStatus,
{
    match err {
        SdkError::ServiceError(e) => {
            e.raw().status_code() == 404 || matches!(e.err().code(), Some("NoSuchKey" | "NotFound"))
        }
        _ => false,
    }
}

fn is_invalid_range<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool
where
    R: HttpStatus,
{
    match err {
        SdkError::ServiceError(e) => {
            e.raw().status_code() == 416 || e.err().code() == Some("InvalidRange")
        }
        _ => false,
    }
}

/// HTTP status of a raw response (abstracts the SDK's response type).
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl Store {
    /// Builds a client from settings: endpoint, path style, static or chain credentials,
    /// standard retries and timeouts.
    pub async fn connect(s: &S3Settings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(s.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(s.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let (Some(ak), Some(sk)) = (&s.access_key, &s.secret_key) {
            loader = loader.credentials_provider(Credentials::new(
                ak.clone(),
                sk.expose_secret().to_string(),
                None,
                None,
                "aerial-config",
            ));
        }
        if let Some(ep) = &s.endpoint {
            loader = loader.endpoint_url(ep.clone());
        }
        if let Some(ca) = &s.ca_file {
            loader = loader.http_client(https_with_ca(ca));
        }
        let shared = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(s.path_style)
            .build();
        Self {
            client: Client::from_conf(conf),
            bucket: s.bucket.clone(),
        }
    }

    /// The same client on another bucket.
    pub fn with_bucket(&self, bucket: &str) -> Self {
        Self {
            client: self.client.clone(),
            bucket: bucket.to_string(),
        }
    }

    /// Bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket unless it exists.
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error().and_then(|s| s.code()) {
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists") => Ok(()),
                _ => Err(request_error("create_bucket", &self.bucket, e)),
            },
        }
    }

    /// Writes an object; large ones go up in parts. Returns once the store has it.
    pub async fn put(&self, key: &str, body: impl Into<Bytes>) -> Result<(), StoreError> {
        keys::validate(key)?;
        let body: Bytes = body.into();
        if body.len() > MULTIPART_PART_BYTES {
            return self.put_multipart(key, body).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| request_error("put", key, e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let chunks: Vec<Bytes> = body
            .chunks(MULTIPART_PART_BYTES)
            .map(|c| body.slice_ref(c))
            .collect();
        self.upload_parts(key, futures::stream::iter(chunks.into_iter().map(Ok)))
            .await
    }

    /// Writes a local file to `key` without holding it in memory: one part at a time.
    pub async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), StoreError> {
        keys::validate(key)?;
        let io = |e: std::io::Error| StoreError::Request {
            op: "put_file",
            key: key.to_string(),
            message: format!("{}: {e}", path.display()),
        };
        let len = tokio::fs::metadata(path).await.map_err(io)?.len();
        if len as usize <= MULTIPART_PART_BYTES {
            let body = tokio::fs::read(path).await.map_err(io)?;
            return self.put(key, body).await;
        }
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let parts = futures::stream::try_unfold(file, move |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::with_capacity(MULTIPART_PART_BYTES);
            while buf.len() < MULTIPART_PART_BYTES {
                let n = (&mut f)
                    .take((MULTIPART_PART_BYTES - buf.len()) as u64)
                    .read_to_end(&mut buf)
                    .await?;
                if n == 0 {
                    break;
                }
            }
            Ok::<_, std::io::Error>((!buf.is_empty()).then(|| (Bytes::from(buf), f)))
        });
        let parts = futures::StreamExt::map(parts, |r| r.map_err(io));
        self.upload_parts(key, parts).await
    }

    /// Reads an object into a local file without holding it in memory; returns its size.
    pub async fn get_to_file(&self, key: &str, path: &std::path::Path) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt;
        let out = self.request(key, None).await?;
        let fail = |message: String| StoreError::Request {
            op: "get_to_file",
            key: key.to_string(),
            message,
        };
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut body = out.body;
        let mut written = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| fail(e.to_string()))? {
            file.write_all(&chunk)
                .await
                .map_err(|e| fail(e.to_string()))?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(|e| fail(e.to_string()))?;
        Ok(written)
    }

    /// A multipart upload of the parts `parts` yields, aborted on any failure.
    async fn upload_parts(
        &self,
        key: &str,
        parts: impl futures::Stream<Item = Result<Bytes, StoreError>>,
    ) -> Result<(), StoreError> {
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| request_error("create_multipart_upload", key, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut done = Vec::new();
            let mut n = 0;
            futures::pin_mut!(parts);
            while let Some(chunk) = futures::StreamExt::next(&mut parts).await {
                let chunk = chunk?;
                n += 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| request_error("upload_part", key, e))?;
                done.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(String::from))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(done))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| request_error("complete_multipart_upload", key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // leave no orphaned parts behind
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    /// Reads a whole object; a missing key is [`StoreError::NotFound`].
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.get_object(key, None).await
    }

    /// Reads bytes `start..start + len` of an object (fewer if the object ends sooner).
    pub async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Bytes, StoreError> {
        if len == 0 {
            keys::validate(key)?;
            return Ok(Bytes::new());
        }
        let range = format!("bytes={start}-{}", start + len - 1);
        self.get_object(key, Some(range)).await
    }

    /// One GET, of the whole object or of an HTTP byte range.
    async fn get_object(&self, key: &str, range: Option<String>) -> Result<Bytes, StoreError> {
        let out = self.request(key, range).await?;
        let data = out.body.collect().await.map_err(|e| StoreError::Request {
            op: "get",
            key: key.to_string(),
            message: e.to_string(),
        })?;
        Ok(data.into_bytes())
    }

    /// Sends a GET (its body not read yet), its failures named: missing key, range past the
    /// end, or the request itself.
    async fn request(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        keys::validate(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.clone())
            .send()
            .await
        {
            Ok(o) => Ok(o),
            Err(e) if is_not_found(&e) => Err(StoreError::NotFound {
                key: key.to_string(),
            }),
            Err(e) if is_invalid_range(&e) => Err(StoreError::RangeOutside {
                key: key.to_string(),
                range: range.unwrap_or_default(),
            }),
            Err(e) => Err(request_error("get", key, e)),
        }
    }

    /// Reads and parses a JSON object.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<T, StoreError> {
        let bytes = self.get(key).await?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    /// Writes a value as pretty JSON.
    pub async fn put_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(value).expect("serialisable value");
        self.put(key, body).await
    }

    /// Whether a key exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        keys::validate(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(request_error("head", key, e)),
        }
    }

    /// Lists every object under `prefix`, following pagination.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| request_error("list", prefix, e))?;
            for o in page.contents() {
                out.push(ObjectInfo {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                });
            }
        }
        Ok(out)
    }

    /// Deletes one object (no error if it is already gone).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        keys::validate(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| request_error("delete", key, e))?;
        Ok(())
    }
}

/// The SDK's HTTPS client trusting `ca` (PEM) besides the system roots. An unreadable file is
/// logged and left out: the connection then fails closed on the unknown certificate.
fn https_with_ca(ca: &std::path::Path) -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
    let mut trust = TrustStore::default();
    match std::fs::read(ca) {
        Ok(pem) => trust = trust.with_pem_certificate(pem),
        Err(e) => tracing::error!(path = %ca.display(), error = %e, "s3 ca_file unreadable"),
    }
    let ctx = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("a trust store always builds");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(ctx)
        .build_https()
}
