//! Listing the bucket's prefix, for `malog index rebuild`.

use super::S3Store;
use crate::storage::{ArchiveKey, Listed, StoreError};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

impl S3Store {
    /// Every object under the prefix (ListObjectsV2, paged by the client),
    /// with keys relative to the prefix. Keys that are not valid archive keys
    /// are left out: malog never writes them.
    pub async fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let prefix =
            (!self.inner.prefix.is_empty()).then(|| ObjectPath::from(self.inner.prefix.as_str()));
        let objects: Vec<object_store::ObjectMeta> = self
            .inner
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| StoreError::Remote {
                what: format!("s3://{}/{}", self.inner.bucket, self.inner.prefix),
                message: format!("listing failed: {e}"),
            })?;
        let strip = if self.inner.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.inner.prefix)
        };
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                // object_store percent-encodes some characters of a key (`~`
                // of a sanitised id, of the manifest's name) and encodes again
                // when given the key back: hand out the key as written.
                let full = o.location.to_string();
                let full = percent_encoding::percent_decode_str(&full)
                    .decode_utf8()
                    .ok()?;
                let key = ArchiveKey::from_stored(full.strip_prefix(&strip)?)?;
                Some(Listed {
                    key,
                    stored_size: o.size,
                })
            })
            .collect())
    }
}
