//! The job manifest: one JSON document per job, next to its logs, that holds
//! everything the index knows about the job's archived objects, so that the
//! archive describes itself and `malog index rebuild` can rebuild a lost index
//! from storage alone. docs/MANIFEST.md is the public description of the format.
//!
//! Storage owns the format (the types, the key, reading and writing); what goes
//! into a manifest is the write side's business (`run/manifests.rs`). The name
//! [`MANIFEST_NAME`] holds a `~` not followed by 8 hex digits, which no
//! sanitised id contains (see [`super::layout::sanitize`]), so a log key can
//! never be a manifest's key.

use super::layout::{ArchiveKey, KeyLayout, KeyParts};
use super::{Storage, StoreError};
use crate::model::Compression;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// The file name of every manifest (after the job's folder, or `<job_id>.`).
pub const MANIFEST_NAME: &str = "malog~manifest.json";
/// The `format` field: says what the document is to a reader without malog.
pub const FORMAT: &str = "malog-manifest";
/// The version this malog writes; readers refuse versions they do not know.
pub const VERSION: u32 = 1;
/// Manifests larger than this are refused rather than read into memory.
const MAX_MANIFEST: u64 = 64 << 20;

/// One job's manifest. Times are epoch milliseconds, UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written by this malog.
    pub version: u32,
    /// When this manifest was written.
    pub written_at_ms: i64,
    pub job: ManifestJob,
    /// The tasks whose log the archive holds, by task id.
    pub tasks: Vec<ManifestTask>,
}

/// What the source said about the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestJob {
    pub id: String,
    pub name: String,
    /// The configured source the job came from (`default` for the
    /// `[modelarts]` form; absent in manifests written before sources).
    #[serde(default = "default_source")]
    pub source: String,
    /// The source's region, empty when it has none.
    #[serde(default)]
    pub region: String,
    pub project_id: String,
    /// The job's phase as ModelArts names it (`Completed`, `Running`, …).
    pub phase: String,
    pub created_at_ms: i64,
    /// `null` while the job is not final.
    pub ended_at_ms: Option<i64>,
    /// Every task of the job, archived or not.
    pub task_ids: Vec<String>,
}

/// One archived log: where it is, what it holds, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestTask {
    pub task_id: String,
    /// The object's key under the archive root (or the bucket's prefix).
    pub key: String,
    /// `none` or `zstd`.
    pub compression: String,
    /// Size and sha256 (hex) of the original log.
    pub size: u64,
    pub sha256: String,
    /// Size and sha256 of the stored object (equal to the log's without compression).
    pub stored_size: u64,
    pub stored_sha256: String,
    /// Validators of the source log the copy was made from.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub source_length: Option<u64>,
    /// When the copy became durable, and when the source was last asked.
    pub fetched_at_ms: Option<i64>,
    pub checked_at_ms: Option<i64>,
    /// The job's phase at the last attempt.
    pub job_phase: Option<String>,
    /// Final: malog never asks ModelArts about this log again.
    pub sealed: bool,
    /// Built from deltas and not yet confirmed by a full download.
    #[serde(default)]
    pub unconfirmed: bool,
    /// Opaque to readers: what extending the copy later needs.
    #[serde(default)]
    pub growth: Option<String>,
    /// Earlier contents of a log that was rewritten (oldest first).
    #[serde(default)]
    pub versions: Vec<ManifestVersion>,
}

/// An earlier, different content of a task's log, kept under its own key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestVersion {
    /// 1 for the oldest; the number in its key (`<key>.v1`).
    pub n: u32,
    pub key: String,
    /// `none` or `zstd`.
    pub compression: String,
    /// `rewritten`, or `truncated` when the log that replaced it was shorter.
    pub reason: String,
    /// Size and sha256 of the log the version holds, and of the stored object.
    pub size: u64,
    pub sha256: String,
    pub stored_size: u64,
    pub stored_sha256: String,
    /// When the copy first became durable (unknown for copies made before
    /// fetch times were kept), and when it was kept as a version.
    pub archived_at_ms: Option<i64>,
    pub replaced_at_ms: i64,
}

impl Manifest {
    pub fn new(written_at_ms: i64, job: ManifestJob, tasks: Vec<ManifestTask>) -> Manifest {
        Manifest {
            format: FORMAT.to_owned(),
            version: VERSION,
            written_at_ms,
            job,
            tasks,
        }
    }

    /// The compression of a task, as storage reads it.
    pub fn compression_of(task: &ManifestTask) -> Option<Compression> {
        Compression::parse(&task.compression)
    }
}

/// What can be wrong with a manifest read back.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifest {key}: {message}")]
    Invalid { key: String, message: String },
}

/// The key of a job's manifest under `layout`: where its `job.json` goes, with
/// [`MANIFEST_NAME`] as the file name.
pub fn manifest_key(layout: &KeyLayout, parts: KeyParts<'_>) -> ArchiveKey {
    // A stand-in name that sanitising keeps, replaced by the real one (which
    // sanitising would change: that is what makes it collision-free).
    const STAND_IN: &str = "malog-manifest-json";
    let key = layout.render_job_file(parts, STAND_IN);
    let text = key.as_str();
    let base = &text[..text.len() - STAND_IN.len()];
    ArchiveKey::from_stored(&format!("{base}{MANIFEST_NAME}"))
        .expect("a job file's key with another plain file name stays a valid key")
}

/// Whether `key` names a manifest.
pub fn is_manifest(key: &str) -> bool {
    key.ends_with(MANIFEST_NAME)
}

impl Storage {
    /// Writes `manifest` under `key`, replacing the previous one atomically
    /// and durably (local: staging, fsync, rename, folder fsync; S3: one PUT).
    pub async fn put_manifest(
        &self,
        key: &ArchiveKey,
        manifest: &Manifest,
    ) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::Codec {
            key: key.to_string(),
            message: format!("cannot encode the manifest: {e}"),
        })?;
        bytes.push(b'\n');
        self.put_document(key, &bytes).await.map(|_| ())
    }

    /// Reads and checks the manifest under `key`.
    pub async fn read_manifest(&self, key: &ArchiveKey) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            key: key.to_string(),
            message,
        };
        let mut bytes = Vec::new();
        self.open(key)
            .await?
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| invalid(format!("read error: {e}")))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(invalid(format!("larger than {MAX_MANIFEST} bytes")));
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not a manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(invalid(format!(
                "format is {:?}, not {FORMAT:?}",
                manifest.format
            )));
        }
        if manifest.version > VERSION {
            return Err(invalid(format!(
                "version {} is newer than this malog reads ({VERSION}); upgrade malog",
                manifest.version
            )));
        }
        Ok(manifest)
    }
}

fn default_source() -> String {
    crate::model::DEFAULT_SOURCE.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(job: &'a str) -> KeyParts<'a> {
        KeyParts {
            source: "default",
            region: "",
            project_id: "p",
            job_id: job,
            job_name: "n",
            task_id: "",
        }
    }

    /// GUARD: the manifest sits where the job's documents go, and no task id,
    /// however spelt, renders to the same key.
    #[test]
    fn manifest_key_never_collides_with_a_log() {
        let layout = KeyLayout::parse("{project_id}/{job_id}/{task_id}").unwrap();
        let key = manifest_key(&layout, parts("j"));
        assert_eq!(key.as_str(), "p/j/malog~manifest.json");
        for task in [MANIFEST_NAME, "malog_manifest.json", "malog~manifest"] {
            let log = layout.render(KeyParts {
                task_id: task,
                ..parts("j")
            });
            assert_ne!(log, key, "{task}");
        }
        let flat = KeyLayout::parse("{project_id}/{job_id}-{task_id}.log").unwrap();
        assert_eq!(
            manifest_key(&flat, parts("j")).as_str(),
            "p/j.malog~manifest.json"
        );
        assert!(is_manifest(key.as_str()));
    }

    #[test]
    fn manifest_round_trips_and_reserves_versions() {
        let m = Manifest::new(
            5,
            ManifestJob {
                id: "j".into(),
                name: "n".into(),
                source: "default".into(),
                region: String::new(),
                project_id: "p".into(),
                phase: "Completed".into(),
                created_at_ms: 1,
                ended_at_ms: Some(2),
                task_ids: vec!["worker-0".into()],
            },
            vec![],
        );
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
        // A task written without the optional fields still reads.
        let task: ManifestTask = serde_json::from_str(
            r#"{"task_id":"t","key":"k","compression":"none","size":1,"sha256":"a",
                "stored_size":1,"stored_sha256":"a","etag":null,"last_modified":null,
                "source_length":null,"fetched_at_ms":1,"checked_at_ms":1,"job_phase":null,"sealed":true}"#,
        )
        .unwrap();
        assert!(task.versions.is_empty());
    }
}
