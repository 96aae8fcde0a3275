//! Plain data shared by every layer: ids, job phases, task states, how an object
//! is encoded, and digests. No I/O lives here. The index stores phases, states
//! and encodings as the text of their `as_str`; `index::text` is that mapping.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A ModelArts training job id (a UUID in practice, but never trusted to be one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

/// A task name from `status.tasks`, e.g. `worker-0`. Held inline (up to 24
/// bytes, no allocation): a large first pass lists millions of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub CompactString);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_owned())
    }
}

impl From<&str> for TaskId {
    fn from(s: &str) -> Self {
        TaskId(s.into())
    }
}

/// `status.phase` of a training job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobPhase {
    Creating,
    Pending,
    Running,
    Terminating,
    Completed,
    Failed,
    Terminated,
    Abnormal,
    /// A phase this version does not know; treated as still running.
    Other(String),
}

impl JobPhase {
    pub fn parse(s: &str) -> JobPhase {
        match s {
            "Creating" => JobPhase::Creating,
            "Pending" => JobPhase::Pending,
            "Running" => JobPhase::Running,
            "Terminating" => JobPhase::Terminating,
            "Completed" => JobPhase::Completed,
            "Failed" => JobPhase::Failed,
            "Terminated" => JobPhase::Terminated,
            "Abnormal" => JobPhase::Abnormal,
            other => JobPhase::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobPhase::Creating => "Creating",
            JobPhase::Pending => "Pending",
            JobPhase::Running => "Running",
            JobPhase::Terminating => "Terminating",
            JobPhase::Completed => "Completed",
            JobPhase::Failed => "Failed",
            JobPhase::Terminated => "Terminated",
            JobPhase::Abnormal => "Abnormal",
            JobPhase::Other(s) => s,
        }
    }

    /// Whether the job's logs are final and may be sealed.
    ///
    /// Completed, Failed and Terminated are final. Abnormal (e.g. CreateFailed) is
    /// documented as uncertain, so it is *not* sealed: its logs keep being re-checked
    /// with cheap conditional GETs, which costs one link request per run at most.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobPhase::Completed | JobPhase::Failed | JobPhase::Terminated
        )
    }
}

impl fmt::Display for JobPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobPhase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One training job as the source reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub phase: JobPhase,
    /// `metadata.create_time`, epoch milliseconds.
    pub created_at_ms: i64,
    /// When the job stopped running (start + duration), epoch ms; `None` while running
    /// or when the API gives no start time.
    pub ended_at_ms: Option<i64>,
    /// `status.tasks`; empty while the job is being created.
    pub tasks: Vec<TaskId>,
    /// The job object the source returned, secrets redacted; `None` where a
    /// caller built the job by hand.
    pub record: Option<std::sync::Arc<JobRecord>>,
}

/// A job's record as ModelArts returned it (secrets already redacted), with the
/// few fields listings show taken out of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job object, compact JSON. Not in the serialised form, which holds
    /// only the fields taken out (a pass sets records aside that way).
    #[serde(skip)]
    pub json: String,
    pub user_name: Option<String>,
    /// `spec.resource.flavor_id`.
    pub flavor: Option<String>,
    pub node_count: Option<i64>,
    /// `algorithm.engine`: name and version.
    pub engine: Option<String>,
    /// `status.start_time`, epoch ms; 0 if the job never started.
    pub start_time_ms: i64,
    /// `status.duration`, ms.
    pub duration_ms: i64,
}

/// The state of one task's log in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Known but not fetched yet.
    Pending,
    /// A complete, durable copy is in storage and matches the recorded sha256.
    Archived,
    /// The last attempt failed; retried next run. A previous archived copy, if any,
    /// is still in storage and still described by the row.
    Failed,
    /// ModelArts has not produced this log yet (ModelArts.2818 / 2776).
    NotReady,
    /// ModelArts no longer has this log and malog never archived it (2819 / 2820, or the job is gone).
    Lost,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Archived => "archived",
            TaskState::Failed => "failed",
            TaskState::NotReady => "not_ready",
            TaskState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "pending" => TaskState::Pending,
            "archived" => TaskState::Archived,
            "failed" => TaskState::Failed,
            "not_ready" => TaskState::NotReady,
            "lost" => TaskState::Lost,
            _ => return None,
        })
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a stored object is encoded. Recorded per index row, so an archive can hold
/// both kinds after the setting changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// The log's bytes as downloaded.
    #[default]
    None,
    /// zstd frames with content checksums (one, plus one per delta of a grown
    /// log); the key gets a `.zst` suffix.
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }

    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "none" => Some(Compression::None),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Appended to the layout's key.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
        }
    }

    /// The `Content-Type` of stored objects.
    pub fn content_type(self) -> &'static str {
        match self {
            Compression::None => "text/plain",
            Compression::Zstd => "application/zstd",
        }
    }
}

impl Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Compares with the text the index and the JSON output use (`state == "archived"`).
macro_rules! eq_text {
    ($($t:ty),*) => {$(
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
    )*};
}
eq_text!(TaskState, JobPhase, Compression);

/// Validators of the source object, used for conditional GETs on re-check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceValidators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub length: Option<u64>,
}

/// Epoch milliseconds as RFC 3339 UTC at the given precision; `None` for a time
/// chrono cannot represent. The one formatter of times for people and the index.
/// The name of the one source of a `[modelarts]` config, and of the source of
/// every job an index recorded before it knew sources (migration 0006).
pub const DEFAULT_SOURCE: &str = "default";

pub fn rfc3339(ms: i64, precision: chrono::SecondsFormat) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(precision, true))
}

/// A stored JSON document (job record, events, metrics) as written to the
/// archive and exported: pretty-printed, with a final newline. Text that is
/// not JSON is kept as it is.
pub fn pretty_json(compact: &str) -> Vec<u8> {
    let mut out = match serde_json::from_str::<serde_json::Value>(compact) {
        Ok(value) => serde_json::to_vec_pretty(&value).unwrap_or_else(|_| compact.into()),
        Err(_) => compact.as_bytes().to_vec(),
    };
    out.push(b'\n');
    out
}
