//! The S3-compatible backend (AWS S3, Huawei OBS, MinIO, …) on `object_store`.
//!
//! **Writes stream.** Bytes are buffered up to one part (`part_size`). An object
//! that ends within it goes up as one PUT carrying all its metadata; a longer one
//! becomes a multipart upload with at most [`PARTS_IN_FLIGHT`] parts uploading
//! while the next one fills, so a writer holds at most
//! `(PARTS_IN_FLIGHT + 1) × part_size` bytes whatever the log size. Completing a
//! multipart upload is atomic: readers see the previous object or the complete new
//! one, never a part. A failed, aborted or dropped writer aborts its upload;
//! [`S3Store::sweep_staging`] aborts uploads under the prefix that a crashed run
//! left behind, where the server can list them.
//!
//! **Metadata.** Every object carries `x-amz-meta-job-id` and `-task-id` (the
//! ModelArts ids, percent-encoded where not plain ASCII), `-sha256` and `-log-size`
//! (of the original log, also for compressed objects), and a `Content-Type`; never
//! a `Content-Encoding`, so every client gets the stored bytes as they are. The
//! sha256 is known only once the last byte is written: a single PUT carries it, a
//! multipart upload (whose metadata is fixed when it starts) gets it by a copy of
//! the completed object onto itself with `x-amz-metadata-directive: REPLACE`,
//! guarded by the completed ETag. S3 copies at most 5 GiB in one request, so
//! larger objects keep only the ids; the index holds their sha256 either way.
//!
//! **Compatibility.** No checksum algorithm is configured, so requests carry no
//! `x-amz-checksum-*` header and no `aws-chunked` body (Huawei OBS rejects both);
//! the payload is signed with a plain SigV4 `x-amz-content-sha256`. Virtual-hosted
//! addressing puts the bucket in the host name, as OBS requires.
//!
//! **Requests object_store has no call for** (ListMultipartUploads, and the
//! metadata-replacing copy) go through URLs presigned by object_store's own SigV4
//! signer, so nothing here signs by hand; their errors never include the URL.

use super::{ArchiveKey, LogMeta, StoreError};
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};
use object_store::{
    Attribute, Attributes, BackoffConfig, Certificate, ClientOptions, GetOptions, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;
use url::Url;

mod list;
mod writer;

pub use writer::{FinalMeta, S3Writer};

/// Default `[storage] part_size`: 8 MiB, so 10,000 parts cover 80 GiB.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: usize = 5 << 30;
/// Default `[storage] max_retries` for one S3 request.
pub const DEFAULT_MAX_RETRIES: usize = 5;
pub const DEFAULT_REGION: &str = "us-east-1";
/// Parts of one upload in flight while the next fills.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Multipart uploads under the prefix initiated longer ago than this are taken
/// for leftovers of a crashed run. Long enough that an upload still running in
/// another malog process (a backfill beside the daemon) is never cut off.
pub const STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);
/// The largest object CopyObject copies in one request.
const MAX_COPY_SIZE: u64 = 5 << 30;
/// Lifetime of the presigned URLs used here (one request each, sent at once).
const PRESIGN_TTL: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No data on a connection for this long breaks the request (object_store then
/// retries it; a GET resumes with a Range).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Whole-request limit for the small presigned requests.
const PRESIGNED_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound on ListMultipartUploads pages read by one sweep (1,000 uploads each).
const MAX_SWEEP_PAGES: usize = 100;

/// The `[storage]` keys of `kind = "s3"`, validated by the config module.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// `a/b` (no leading or trailing `/`), or empty for the whole bucket.
    pub prefix: String,
    /// None: AWS's endpoint for the region.
    pub endpoint: Option<Url>,
    pub region: String,
    pub addressing: Addressing,
    /// Extra PEM certificates trusted besides the system's.
    pub ca_bundle: Option<PathBuf>,
    pub access_key_file: Option<PathBuf>,
    pub secret_key_file: Option<PathBuf>,
    pub session_token_file: Option<PathBuf>,
    pub part_size: usize,
    pub max_retries: usize,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only file names of secrets, never their contents (which are not held here).
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .field("region", &self.region)
            .field("addressing", &self.addressing)
            .field("ca_bundle", &self.ca_bundle)
            .field("access_key_file", &self.access_key_file)
            .field("secret_key_file", &self.secret_key_file)
            .field("session_token_file", &self.session_token_file)
            .field("part_size", &self.part_size)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// Where the bucket name goes in a request URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `https://endpoint/bucket/key`: MinIO, s3s, most local servers.
    Path,
    /// `https://bucket.endpoint/key`: AWS, and required by Huawei OBS.
    Virtual,
}

impl Addressing {
    pub fn parse(s: &str) -> Option<Addressing> {
        match s {
            "path" => Some(Addressing::Path),
            "virtual" => Some(Addressing::Virtual),
            _ => None,
        }
    }
}

/// The S3 keys, read from files or the standard AWS environment variables.
struct S3Credentials {
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix: String = self.access_key.chars().take(4).collect();
        write!(f, "S3Credentials({prefix}…)")
    }
}

/// The S3 secrets, each as (what, file named in the config, config key,
/// environment variable): a named file wins over the variable.
pub fn secret_sources(
    config: &S3Config,
) -> [(&'static str, Option<&PathBuf>, &'static str, &'static str); 3] {
    [
        (
            "S3 access key",
            config.access_key_file.as_ref(),
            "storage.access_key_file",
            "AWS_ACCESS_KEY_ID",
        ),
        (
            "S3 secret key",
            config.secret_key_file.as_ref(),
            "storage.secret_key_file",
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            "S3 session token",
            config.session_token_file.as_ref(),
            "storage.session_token_file",
            "AWS_SESSION_TOKEN",
        ),
    ]
}

impl S3Credentials {
    fn resolve(config: &S3Config) -> Result<S3Credentials, StoreError> {
        let [access_key, secret_key, session_token] =
            secret_sources(config).map(|(_, file, key, env)| read_secret(file, key, env));
        let (access_key, secret_key, session_token) = (access_key?, secret_key?, session_token?);
        // Without static keys object_store would ask the EC2 instance metadata
        // service; malog never does that implicitly.
        match (access_key, secret_key) {
            (Some(access_key), Some(secret_key)) => Ok(S3Credentials {
                access_key,
                secret_key,
                session_token,
            }),
            (None, _) => Err(StoreError::Credentials {
                message: "no S3 access key: set AWS_ACCESS_KEY_ID or [storage] access_key_file"
                    .into(),
            }),
            (_, None) => Err(StoreError::Credentials {
                message: "no S3 secret key: set AWS_SECRET_ACCESS_KEY or [storage] secret_key_file"
                    .into(),
            }),
        }
    }
}

/// A secret from its file if configured, else from the environment; empty is unset.
fn read_secret(file: Option<&PathBuf>, key: &str, env: &str) -> Result<Option<String>, StoreError> {
    let value = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| StoreError::Credentials {
            message: format!("cannot read {key} {}: {e}", path.display()),
        })?,
        None => std::env::var(env).unwrap_or_default(),
    };
    let value = value.trim().to_owned();
    Ok((!value.is_empty()).then_some(value))
}

/// The URL object_store should send requests to, or None for AWS's default.
///
/// For virtual-hosted addressing object_store wants the bucket already in the host
/// (`https://bucket.obs.cn-north-4.myhuaweicloud.com`); the config names the plain
/// service endpoint, so the bucket is added here unless it is already there.
pub fn request_endpoint(config: &S3Config) -> Option<String> {
    let endpoint = config.endpoint.as_ref()?;
    let base = endpoint.as_str().trim_end_matches('/').to_owned();
    match config.addressing {
        Addressing::Path => Some(base),
        Addressing::Virtual => {
            let host = endpoint.host_str().unwrap_or_default();
            if host.starts_with(&format!("{}.", config.bucket)) {
                return Some(base);
            }
            let mut url = endpoint.clone();
            url.set_host(Some(&format!("{}.{host}", config.bucket)))
                .ok()?;
            Some(url.as_str().trim_end_matches('/').to_owned())
        }
    }
}

/// Characters escaped in metadata values: controls, `%` itself, and (always) non-ASCII.
const META_ESCAPE: &AsciiSet = &CONTROLS.add(b'%');
/// Characters escaped in `x-amz-copy-source`: all but unreserved ones and `/`.
const COPY_SOURCE_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

fn meta_value(value: &str) -> String {
    utf8_percent_encode(value, META_ESCAPE).to_string()
}

/// An S3 bucket (and prefix) holding the archive.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    store: AmazonS3,
    /// For the presigned requests; trusts the same extra CA certificates.
    http: reqwest::Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    stale_after: Duration,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .field("part_size", &self.inner.part_size)
            .finish_non_exhaustive()
    }
}

/// What a HEAD of an object says, for the cheap verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Head {
    pub size: u64,
    /// `x-amz-meta-sha256`: the original log's sha256, when the object has it.
    pub log_sha256: Option<String>,
    /// Every user metadata entry (`x-amz-meta-*`, without the prefix).
    pub metadata: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
}

fn setup_err(message: impl fmt::Display) -> StoreError {
    StoreError::Remote {
        what: "storage setup".into(),
        message: message.to_string(),
    }
}

impl S3Store {
    /// Builds the client; reads the credentials and the CA bundle. No request is
    /// sent yet: [`S3Store::sweep_staging`] is the first.
    pub fn connect(config: &S3Config) -> Result<S3Store, StoreError> {
        let credentials = S3Credentials::resolve(config)?;
        let allow_http = config
            .endpoint
            .as_ref()
            .is_some_and(|u| u.scheme() == "http");
        let mut options = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(CONNECT_TIMEOUT)
            // Objects may be many GiB: no whole-request limit, a read timeout instead.
            .with_timeout_disabled()
            .with_read_timeout(READ_TIMEOUT);
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(PRESIGNED_TIMEOUT);
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                setup_err(format!(
                    "cannot read storage.ca_bundle {}: {e}",
                    path.display()
                ))
            })?;
            let certs = Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup_err(format!("storage.ca_bundle {}: {e}", path.display())))?;
            for cert in certs {
                options = options.with_root_certificate(cert);
            }
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup_err(format!("storage.ca_bundle {}: {e}", path.display())))?;
            http = http.tls_certs_merge(certs);
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&credentials.access_key)
            .with_secret_access_key(&credentials.secret_key)
            .with_virtual_hosted_style_request(config.addressing == Addressing::Virtual)
            .with_client_options(options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: config.max_retries,
                retry_timeout: Duration::from_secs(180),
            });
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = request_endpoint(config) {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder.build().map_err(setup_err)?;
        let http = http.build().map_err(|e| setup_err(e.without_url()))?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                store,
                http,
                bucket: config.bucket.clone(),
                prefix: config.prefix.clone(),
                part_size: config.part_size,
                stale_after: STALE_UPLOAD_AGE,
            }),
        })
    }

    /// Changes the age after which the sweep takes an upload for a leftover (tests).
    pub fn with_stale_after(self, age: Duration) -> S3Store {
        let inner = &self.inner;
        S3Store {
            inner: Arc::new(Inner {
                store: inner.store.clone(),
                http: inner.http.clone(),
                bucket: inner.bucket.clone(),
                prefix: inner.prefix.clone(),
                part_size: inner.part_size,
                stale_after: age,
            }),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The full object key: prefix and archive key.
    pub fn object_key(&self, key: &ArchiveKey) -> String {
        if self.inner.prefix.is_empty() {
            key.as_str().to_owned()
        } else {
            format!("{}/{}", self.inner.prefix, key.as_str())
        }
    }

    fn path(&self, key: &ArchiveKey) -> ObjectPath {
        ObjectPath::from(self.object_key(key))
    }

    pub fn location(&self, key: &ArchiveKey) -> String {
        format!("s3://{}/{}", self.inner.bucket, self.object_key(key))
    }

    fn err(&self, key: &ArchiveKey, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                key: key.to_string(),
            },
            other => StoreError::Remote {
                what: self.location(key),
                message: other.to_string(),
            },
        }
    }

    /// Starts a write; nothing is sent until a part is full or the writer finishes.
    pub fn create(&self, key: &ArchiveKey, meta: &LogMeta, content_type: &str) -> S3Writer {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.to_owned().into());
        if !meta.job_id.is_empty() {
            attributes.insert(
                Attribute::Metadata("job-id".into()),
                meta_value(&meta.job_id).into(),
            );
        }
        if !meta.task_id.is_empty() {
            attributes.insert(
                Attribute::Metadata("task-id".into()),
                meta_value(&meta.task_id).into(),
            );
        }
        S3Writer::new(self.clone(), self.path(key), key.clone(), attributes)
    }

    pub async fn open(
        &self,
        key: &ArchiveKey,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StoreError> {
        self.open_with(key, GetOptions::default()).await
    }

    /// [`S3Store::open`] from byte `offset` on (a ranged GET).
    pub async fn open_from(
        &self,
        key: &ArchiveKey,
        offset: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StoreError> {
        let options = GetOptions {
            range: Some(object_store::GetRange::Offset(offset)),
            ..Default::default()
        };
        self.open_with(key, options).await
    }

    async fn open_with(
        &self,
        key: &ArchiveKey,
        options: GetOptions,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StoreError> {
        use futures::TryStreamExt;
        let result = self
            .inner
            .store
            .get_opts(&self.path(key), options)
            .await
            .map_err(|e| self.err(key, e))?;
        let stream = result.into_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    /// Starts a multipart upload under `key` and aborts it: the store answers,
    /// accepts our credentials and lets us write there (CreateMultipartUpload
    /// needs the same permission as a PUT), and nothing is left behind.
    pub async fn probe(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        let mut upload = self
            .inner
            .store
            .put_multipart(&self.path(key))
            .await
            .map_err(|e| self.err(key, e))?;
        upload.abort().await.map_err(|e| self.err(key, e))
    }

    pub async fn head(&self, key: &ArchiveKey) -> Result<S3Head, StoreError> {
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        let result = self
            .inner
            .store
            .get_opts(&self.path(key), options)
            .await
            .map_err(|e| self.err(key, e))?;
        let mut head = S3Head {
            size: result.meta.size,
            log_sha256: None,
            metadata: BTreeMap::new(),
            content_type: None,
            content_encoding: None,
        };
        for (attribute, value) in &result.attributes {
            match attribute {
                Attribute::Metadata(name) => {
                    head.metadata.insert(name.to_string(), value.to_string());
                }
                Attribute::ContentType => head.content_type = Some(value.to_string()),
                Attribute::ContentEncoding => head.content_encoding = Some(value.to_string()),
                _ => {}
            }
        }
        head.log_sha256 = head.metadata.get("sha256").cloned();
        Ok(head)
    }

    /// Copies the object under `from` to `to` inside the bucket (CopyObject: no
    /// bytes pass through malog, and the user metadata goes along). The copy
    /// is durable when the call returns.
    pub async fn copy(&self, from: &ArchiveKey, to: &ArchiveKey) -> Result<(), StoreError> {
        self.inner
            .store
            .copy(&self.path(from), &self.path(to))
            .await
            .map_err(|e| self.err(from, e))
    }

    /// Removes the object; a missing one is not an error.
    pub async fn delete(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        match self.inner.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Aborts multipart uploads under the prefix initiated more than
    /// [`STALE_UPLOAD_AGE`] ago (the prefix is malog's own); returns how many.
    ///
    /// A server that does not implement ListMultipartUploads (s3s, some gateways),
    /// or a policy that denies it, is reported once as a warning: the sweep is
    /// housekeeping, and a bucket lifecycle rule (AbortIncompleteMultipartUpload)
    /// does the same job. An unreachable endpoint, a missing bucket or rejected
    /// keys are errors: no run could store anything.
    pub async fn sweep_staging(&self) -> Result<usize, StoreError> {
        let uploads = match self.list_uploads().await {
            Ok(uploads) => uploads,
            Err(ListError::Unsupported(code)) => {
                tracing::warn!(
                    bucket = %self.inner.bucket,
                    code = %code,
                    "cannot list multipart uploads, so incomplete uploads of crashed runs are not swept; \
                     add a lifecycle rule that aborts incomplete multipart uploads"
                );
                return Ok(0);
            }
            Err(ListError::Failed(message)) => {
                return Err(StoreError::Remote {
                    what: format!("bucket {}", self.inner.bucket),
                    message,
                });
            }
        };
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(self.inner.stale_after).unwrap_or_default();
        let mut aborted = 0;
        for upload in uploads {
            let stale = chrono::DateTime::parse_from_rfc3339(&upload.initiated)
                .is_ok_and(|t| t.to_utc() < cutoff);
            if !stale || !upload.key.starts_with(&self.list_prefix()) {
                continue;
            }
            let path = ObjectPath::from(upload.key.as_str());
            match self
                .inner
                .store
                .abort_multipart(&path, &upload.upload_id)
                .await
            {
                Ok(()) => aborted += 1,
                Err(e) => {
                    tracing::warn!(key = %upload.key, error = %e, "could not abort a stale multipart upload")
                }
            }
        }
        Ok(aborted)
    }

    fn list_prefix(&self) -> String {
        if self.inner.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.inner.prefix)
        }
    }

    /// Every multipart upload under the prefix, via a presigned ListMultipartUploads.
    async fn list_uploads(&self) -> Result<Vec<UploadEntry>, ListError> {
        let prefix = self.list_prefix();
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_SWEEP_PAGES {
            let mut query = vec![
                ("uploads".to_owned(), String::new()),
                ("max-uploads".to_owned(), "1000".to_owned()),
            ];
            if !prefix.is_empty() {
                query.push(("prefix".to_owned(), prefix.clone()));
            }
            if let Some((key, id)) = &markers {
                query.push(("key-marker".to_owned(), key.clone()));
                query.push(("upload-id-marker".to_owned(), id.clone()));
            }
            let options = SignedUrlOptions::default().with_query(query);
            let url = self
                .inner
                .store
                .signed_url_opts(Method::GET, &ObjectPath::default(), PRESIGN_TTL, &options)
                .await
                .map_err(|e| ListError::Failed(e.to_string()))?;
            let response = self
                .inner
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| ListError::Failed(e.without_url().to_string()))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| ListError::Failed(e.without_url().to_string()))?;
            if !status.is_success() {
                let code = error_code(&body).unwrap_or_default();
                // Not implemented, or a policy without s3:ListBucketMultipartUploads.
                if matches!(status.as_u16(), 501 | 405) || code == "NotImplemented" {
                    return Err(ListError::Unsupported(format!("HTTP {status} {code}")));
                }
                if code == "AccessDenied" {
                    return Err(ListError::Unsupported(format!("HTTP {status} {code}")));
                }
                return Err(ListError::Failed(format!(
                    "ListMultipartUploads: HTTP {status} {code}"
                )));
            }
            let page: ListUploadsResult = quick_xml::de::from_str(&body).map_err(|e| {
                ListError::Failed(format!("unreadable ListMultipartUploads answer: {e}"))
            })?;
            out.extend(page.uploads);
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(id)) => markers = Some((key, id)),
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// Replaces the metadata of a just-completed object by copying it onto itself.
    async fn replace_metadata(
        &self,
        path: &ObjectPath,
        etag: Option<&str>,
        attributes: &Attributes,
    ) -> Result<(), String> {
        let source = format!(
            "/{}/{}",
            self.inner.bucket,
            utf8_percent_encode(path.as_ref(), COPY_SOURCE_ESCAPE)
        );
        let mut headers = vec![
            ("x-amz-copy-source".to_owned(), source),
            ("x-amz-metadata-directive".to_owned(), "REPLACE".to_owned()),
        ];
        if let Some(etag) = etag {
            headers.push(("x-amz-copy-source-if-match".to_owned(), etag.to_owned()));
        }
        for (attribute, value) in attributes {
            match attribute {
                Attribute::ContentType => headers.push(("content-type".into(), value.to_string())),
                Attribute::Metadata(name) => {
                    headers.push((format!("x-amz-meta-{name}"), value.to_string()))
                }
                _ => {}
            }
        }
        let mut options = SignedUrlOptions::default();
        let mut request_headers = reqwest::header::HeaderMap::new();
        for (name, value) in &headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            options = options.with_signed_header(name.clone(), value.clone());
            request_headers.insert(name, value);
        }
        let url = self
            .inner
            .store
            .signed_url_opts(Method::PUT, path, PRESIGN_TTL, &options)
            .await
            .map_err(|e| e.to_string())?;
        let response = self
            .inner
            .http
            .put(url)
            .headers(request_headers)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| e.without_url().to_string())?;
        // CopyObject may answer 200 with an error document.
        match error_code(&body) {
            Some(code) => Err(format!("CopyObject: HTTP {status} {code}")),
            None if !status.is_success() => Err(format!("CopyObject: HTTP {status}")),
            None => Ok(()),
        }
    }
}

enum ListError {
    /// The server or the policy does not allow listing uploads.
    Unsupported(String),
    Failed(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploadsResult {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload", default)]
    uploads: Vec<UploadEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadEntry {
    key: String,
    upload_id: String,
    initiated: String,
}

/// The `<Code>` of an S3 error document, if the body is one.
fn error_code(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ErrorDoc {
        code: String,
    }
    if !body.contains("<Error") {
        return None;
    }
    Some(
        quick_xml::de::from_str::<ErrorDoc>(body)
            .map(|e| e.code)
            .unwrap_or_else(|_| "unreadable error document".into()),
    )
}

#[cfg(test)]
mod tests;
