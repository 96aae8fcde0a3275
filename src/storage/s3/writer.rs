//! A streaming upload to S3: one PUT for a log that fits in one part, else a
//! multipart upload with bounded parts in flight; see the parent module's docs.

use super::*;

/// What is known only when the last byte is written.
#[derive(Debug, Clone)]
pub struct FinalMeta {
    pub log_sha256: String,
    pub log_size: u64,
}

/// An object being uploaded; see the module docs.
pub struct S3Writer {
    store: S3Store,
    path: ObjectPath,
    key: ArchiveKey,
    /// Content type and the ids; the sha256 and size are added at the end.
    attributes: Attributes,
    written: u64,
    state: WriteState,
}

enum WriteState {
    /// Less than one part so far: held here, sent as one PUT by `finish`.
    Buffering(Vec<u8>),
    /// A multipart upload is open; its parts upload in background tasks.
    Uploading(WriteMultipart),
    /// Finished, aborted, or broken by an error (the upload is then aborted).
    Done,
}

impl S3Writer {
    pub(super) fn new(
        store: S3Store,
        path: ObjectPath,
        key: ArchiveKey,
        attributes: Attributes,
    ) -> S3Writer {
        S3Writer {
            store,
            path,
            key,
            attributes,
            written: 0,
            state: WriteState::Buffering(Vec::new()),
        }
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let part_size = self.store.inner.part_size;
        if let WriteState::Buffering(buf) = &mut self.state {
            if buf.len() + chunk.len() <= part_size {
                buf.extend_from_slice(chunk);
                self.written += chunk.len() as u64;
                return Ok(());
            }
            let first = Bytes::from(std::mem::take(buf));
            self.state = WriteState::Done;
            let options = PutMultipartOptions {
                attributes: self.attributes.clone(),
                ..Default::default()
            };
            let upload = self
                .store
                .inner
                .store
                .put_multipart_opts(&self.path, options)
                .await
                .map_err(|e| self.store.err(&self.key, e))?;
            let mut upload = WriteMultipart::new_with_chunk_size(upload, part_size);
            upload.put(first);
            self.state = WriteState::Uploading(upload);
        }
        let WriteState::Uploading(upload) = &mut self.state else {
            return Err(StoreError::Remote {
                what: self.store.location(&self.key),
                message: "write after finish, abort or a failed write".into(),
            });
        };
        upload.write(chunk);
        self.written += chunk.len() as u64;
        // Back-pressure: wait while too many parts are in flight; fails if one failed.
        upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| self.store.err(&self.key, e))
    }

    /// Makes the object visible under its key; returns its location.
    pub async fn finish(mut self, meta: &FinalMeta) -> Result<String, StoreError> {
        let mut attributes = self.attributes.clone();
        attributes.insert(
            Attribute::Metadata("sha256".into()),
            meta.log_sha256.clone().into(),
        );
        attributes.insert(
            Attribute::Metadata("log-size".into()),
            meta.log_size.to_string().into(),
        );
        match std::mem::replace(&mut self.state, WriteState::Done) {
            WriteState::Buffering(buf) => {
                let options = PutOptions {
                    mode: PutMode::Overwrite,
                    attributes,
                    ..Default::default()
                };
                self.store
                    .inner
                    .store
                    .put_opts(&self.path, PutPayload::from(buf), options)
                    .await
                    .map_err(|e| self.store.err(&self.key, e))?;
            }
            WriteState::Uploading(upload) => {
                // Aborts the upload itself when a part or the completion fails.
                let result = upload
                    .finish()
                    .await
                    .map_err(|e| self.store.err(&self.key, e))?;
                if self.written <= MAX_COPY_SIZE {
                    let etag = result.e_tag.as_deref();
                    if let Err(e) = self
                        .store
                        .replace_metadata(&self.path, etag, &attributes)
                        .await
                    {
                        tracing::warn!(
                            location = %self.store.location(&self.key),
                            error = %e,
                            "object stored, but its sha256 metadata could not be added"
                        );
                    }
                }
            }
            WriteState::Done => {
                return Err(StoreError::Remote {
                    what: self.store.location(&self.key),
                    message: "finish after abort or a failed write".into(),
                });
            }
        }
        Ok(self.store.location(&self.key))
    }

    /// Aborts the multipart upload, if one was started. Idempotent.
    pub async fn abort(mut self) {
        if let WriteState::Uploading(upload) = std::mem::replace(&mut self.state, WriteState::Done)
            && let Err(e) = abort_upload(upload).await
        {
            tracing::warn!(
                location = %self.store.location(&self.key),
                error = %e,
                "could not abort a multipart upload; the start-up sweep or a lifecycle rule removes it"
            );
        }
    }
}

/// Lets the parts in flight end (succeed or fail) before aborting: a part that
/// lands after the abort would otherwise stay stored (S3's docs warn that an
/// upload may need aborting again for that reason).
async fn abort_upload(mut upload: WriteMultipart) -> object_store::Result<()> {
    let _ = upload.wait_for_capacity(0).await;
    upload.abort().await
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // A writer dropped mid-stream (a cancelled task) must not leave its upload
        // open: abort it in the background if a runtime is still there.
        if let WriteState::Uploading(upload) = std::mem::replace(&mut self.state, WriteState::Done)
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = abort_upload(upload).await;
            });
        }
    }
}
