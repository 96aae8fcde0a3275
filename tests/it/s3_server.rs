//! A real third-party S3 server on 127.0.0.1 for the storage tests: `s3s-fs` (an
//! S3 implementation over a folder, checking SigV4 signatures) served in-process
//! by hyper, so `cargo test` needs nothing installed.
//!
//! Two additions wrap s3s-fs, both in [`FaultyS3`]:
//! - scripted faults in the upload path (an operation answers `500 InternalError`
//!   a number of times), counted per operation;
//! - ListMultipartUploads, which s3s-fs lacks. It is derived from s3s-fs's own
//!   state on disk: an upload is open while s3s-fs keeps its `.upload-<id>.json`
//!   (deleted on complete and abort), so the listing shows exactly what s3s-fs
//!   still holds.

use async_trait::async_trait;
use malog::storage::s3::{Addressing, DEFAULT_MAX_RETRIES, MIN_PART_SIZE, S3Config};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub const BUCKET: &str = "malog-test";
pub const ACCESS_KEY: &str = "s3-test-access-key";
pub const SECRET_KEY: &str = "s3-test-secret-key-do-not-print";

/// Operations a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S3Op {
    PutObject,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    CopyObject,
}

#[derive(Default)]
struct State {
    /// Remaining failures per operation.
    faults: HashMap<S3Op, u32>,
    /// Requests seen per operation (failed ones included).
    calls: HashMap<S3Op, u32>,
    /// Key of every upload ever created, by upload id (open or not: see `open_uploads`).
    upload_keys: HashMap<String, (String, String)>,
    /// When set, uploads signed for another region are refused, as AWS does.
    region: Option<String>,
    /// When set, uploads that name the bucket in the path instead of the host
    /// name find no bucket, as on services with virtual-hosted buckets only.
    virtual_only: bool,
}

pub struct FaultyS3 {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    state: Arc<Mutex<State>>,
}

impl FaultyS3 {
    /// Refuses an upload the way a service with another region, or one that
    /// finds buckets by host name only, would.
    fn gate<T>(&self, req: &S3Request<T>) -> S3Result<()> {
        let state = self.state.lock().unwrap();
        let signed_for = req.region.as_ref().map(|r| r.as_str()).unwrap_or("");
        if let Some(region) = &state.region
            && signed_for != region
        {
            return Err(s3_error!(
                AuthorizationHeaderMalformed,
                "The authorization header is malformed; the region '{signed_for}' is wrong; expecting '{region}'"
            ));
        }
        let host = req
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if state.virtual_only && !host.starts_with(&format!("{BUCKET}.")) {
            return Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            ));
        }
        Ok(())
    }

    /// Counts the call and fails it if a fault is scripted.
    fn enter(&self, op: S3Op) -> S3Result<()> {
        let mut state = self.state.lock().unwrap();
        *state.calls.entry(op).or_default() += 1;
        if let Some(left) = state.faults.get_mut(&op)
            && *left > 0
        {
            *left -= 1;
            return Err(s3_error!(InternalError, "injected fault"));
        }
        Ok(())
    }
}

/// Upload ids s3s-fs still holds open (its `.upload-<id>.json` files).
fn open_upload_ids(root: &Path) -> Vec<(String, SystemTime)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name
            .strip_prefix(".upload-")
            .and_then(|n| n.strip_suffix(".json"))
        {
            let modified = entry.metadata().unwrap().modified().unwrap();
            out.push((id.to_owned(), modified));
        }
    }
    out
}

#[async_trait]
impl S3 for FaultyS3 {
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.enter(S3Op::PutObject)?;
        self.gate(&req)?;
        self.fs.put_object(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.enter(S3Op::CopyObject)?;
        self.fs.copy_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.enter(S3Op::CreateMultipartUpload)?;
        let bucket = req.input.bucket.clone();
        let key = req.input.key.clone();
        let response = self.fs.create_multipart_upload(req).await?;
        if let Some(id) = &response.output.upload_id {
            self.state
                .lock()
                .unwrap()
                .upload_keys
                .insert(id.clone(), (bucket, key));
        }
        Ok(response)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.enter(S3Op::UploadPart)?;
        self.fs.upload_part(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.enter(S3Op::CompleteMultipartUpload)?;
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.enter(S3Op::AbortMultipartUpload)?;
        self.fs.abort_multipart_upload(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.unwrap_or_default();
        let state = self.state.lock().unwrap();
        let mut uploads = Vec::new();
        for (id, modified) in open_upload_ids(&self.root) {
            let Some((bucket, key)) = state.upload_keys.get(&id) else {
                continue;
            };
            if *bucket == input.bucket && key.starts_with(&prefix) {
                uploads.push(MultipartUpload {
                    key: Some(key.clone()),
                    upload_id: Some(id),
                    initiated: Some(Timestamp::from(modified)),
                    ..Default::default()
                });
            }
        }
        uploads.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(prefix),
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

/// A running server; stops when dropped.
pub struct S3Server {
    pub endpoint: String,
    /// s3s-fs's folder: the bucket is a subfolder, upload state lives beside it.
    pub root: tempfile::TempDir,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Server {
    pub async fn start() -> S3Server {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder;

        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let s3 = FaultyS3 {
            fs: s3s_fs::FileSystem::new(root.path()).unwrap(),
            root: root.path().to_owned(),
            state: state.clone(),
        };
        let mut builder = s3s::service::S3ServiceBuilder::new(s3);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let http = Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            endpoint,
            root,
            state,
            task,
        }
    }

    /// Uploads must be signed for `region` from now on.
    pub fn require_region(&self, region: &str) {
        self.state.lock().unwrap().region = Some(region.to_owned());
    }

    /// Uploads must name the bucket in the host name from now on.
    pub fn virtual_hosted_only(&self) {
        self.state.lock().unwrap().virtual_only = true;
    }

    /// The next `times` requests of `op` fail with 500 InternalError.
    pub fn fail(&self, op: S3Op, times: u32) {
        self.state.lock().unwrap().faults.insert(op, times);
    }

    /// Requests of `op` seen so far.
    pub fn calls(&self, op: S3Op) -> u32 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// Multipart uploads s3s-fs still holds open.
    pub fn open_uploads(&self) -> usize {
        open_upload_ids(self.root.path()).len()
    }

    /// Part files of uploads left on disk (s3s-fs keeps them until abort or complete).
    pub fn part_files(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload_id-"))
            .collect()
    }

    /// Where s3s-fs keeps the object `key` of the test bucket.
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// Every object key in the bucket (a walk of its folder).
    pub fn object_keys(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else {
                    let rel = path.strip_prefix(base).unwrap();
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let mut out = Vec::new();
        let bucket = self.root.path().join(BUCKET);
        walk(&bucket, &bucket, &mut out);
        out.sort();
        out
    }

    /// Writes the access and secret key into files in `dir`; returns their paths.
    pub fn key_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let ak = dir.join("s3-ak");
        let sk = dir.join("s3-sk");
        std::fs::write(&ak, ACCESS_KEY).unwrap();
        std::fs::write(&sk, format!("{SECRET_KEY}\n")).unwrap();
        (ak, sk)
    }

    /// A client config for this server (path-style, smallest parts, few retries).
    pub fn config(&self, dir: &Path, prefix: &str) -> S3Config {
        let (ak, sk) = self.key_files(dir);
        S3Config {
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.parse().unwrap()),
            region: "us-east-1".into(),
            addressing: Addressing::Path,
            ca_bundle: None,
            access_key_file: Some(ak),
            secret_key_file: Some(sk),
            session_token_file: None,
            part_size: MIN_PART_SIZE,
            max_retries: DEFAULT_MAX_RETRIES.min(3),
        }
    }

    /// The `[storage]` table for a malog config using this server.
    pub fn storage_toml(&self, dir: &Path, prefix: &str, compression: &str) -> String {
        let (ak, sk) = self.key_files(dir);
        format!(
            r#"
[storage]
kind = "s3"
bucket = "{BUCKET}"
prefix = "{prefix}"
endpoint = "{}"
region = "us-east-1"
addressing = "path"
access_key_file = "{}"
secret_key_file = "{}"
part_size = {MIN_PART_SIZE}
max_retries = 3
compression = "{compression}"
"#,
            self.endpoint,
            ak.display(),
            sk.display()
        )
    }
}
