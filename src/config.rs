//! The configuration file: serde structs with their defaults, and `validate()`,
//! which turns them into a [`Config`] or a [`ConfigError`] naming the key.
//!
//! Loading a file is the only I/O here. Secrets are *not* read here: the config only
//! names where they live (see [`crate::source::Credentials`]).

use crate::model::JobPhase;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Defaults, documented in `config.example.toml`.
pub mod defaults {
    use std::time::Duration;
    pub const REQUESTS_PER_SECOND: u32 = 10;
    pub const IAM_ENDPOINT: &str = "https://iam.myhuaweicloud.com";
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const CONCURRENCY: usize = 8;
    pub const MAX_ATTEMPTS: u32 = 4;
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
    pub const SEAL_GRACE: Duration = Duration::from_secs(3600);
    pub const LAYOUT: &str = "{project_id}/{job_id}/{task_id}.log";
    pub const STORAGE_PATH: &str = "archive";
    pub const INDEX_PATH: &str = "index.sqlite";
    /// Hourly, at minute 17 (off the top of the hour, when everyone else calls APIs).
    pub const CRON: &str = "0 17 * * * *";
    pub const LISTEN: &str = "127.0.0.1:9731";
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
    pub const RETENTION_WARN_AFTER: Duration = Duration::from_secs(25 * 86400);
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The file as written. Every table and key is optional except `[modelarts]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub modelarts: ModelArtsSection,
    #[serde(default)]
    pub jobs: JobsSection,
    #[serde(default)]
    pub fetch: FetchSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub index: IndexSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    #[serde(default)]
    pub daemon: DaemonSection,
    #[serde(default)]
    pub alerts: AlertsSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelArtsSection {
    pub endpoint: String,
    pub project_id: String,
    /// File holding the access key; else `HUAWEICLOUD_SDK_AK`.
    pub access_key_file: Option<PathBuf>,
    /// File holding the secret key; else `HUAWEICLOUD_SDK_SK`.
    pub secret_key_file: Option<PathBuf>,
    /// `aksk` (default), `token` or `password`.
    #[serde(default = "d_auth")]
    pub auth: String,
    /// Security token of temporary AK/SK; else `HUAWEICLOUD_SDK_SECURITY_TOKEN`.
    pub security_token_file: Option<PathBuf>,
    /// For `auth = "token"`: file holding an IAM token; else `MALOG_AUTH_TOKEN`.
    pub token_file: Option<PathBuf>,
    /// For `auth = "password"`.
    #[serde(default = "d_iam_endpoint")]
    pub iam_endpoint: String,
    pub user_name: Option<String>,
    pub domain_name: Option<String>,
    /// File holding the IAM password; else `MALOG_IAM_PASSWORD`.
    pub password_file: Option<PathBuf>,
    #[serde(default = "d_rps")]
    pub requests_per_second: u32,
    #[serde(default = "d_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    pub discover: bool,
    /// A duration (`"30d"`) before now, or a date (`"2026-01-31"`, RFC 3339).
    pub created_after: Option<String>,
    #[serde(default)]
    pub phases: Vec<String>,
    /// A regular expression matched against job names.
    pub name_pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSection {
    #[serde(default = "d_concurrency")]
    pub concurrency: usize,
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "d_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "d_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "d_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(default = "d_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    #[serde(default = "d_seal_grace", with = "humantime_serde")]
    pub seal_grace: Duration,
}

impl Default for FetchSection {
    fn default() -> Self {
        FetchSection {
            concurrency: d_concurrency(),
            max_attempts: d_max_attempts(),
            connect_timeout: d_connect_timeout(),
            idle_timeout: d_idle_timeout(),
            backoff_initial: d_backoff_initial(),
            backoff_max: d_backoff_max(),
            seal_grace: d_seal_grace(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default = "d_storage_kind")]
    pub kind: String,
    #[serde(default = "d_storage_path")]
    pub path: PathBuf,
    #[serde(default = "d_layout")]
    pub layout: String,
    /// `"none"` or `"zstd"`.
    pub compression: Option<String>,
    pub zstd_level: Option<i32>,
    // The keys below are for `kind = "s3"` only.
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `"path"` or `"virtual"`.
    pub addressing: Option<String>,
    pub ca_bundle: Option<PathBuf>,
    /// File holding the S3 access key; else `AWS_ACCESS_KEY_ID`.
    pub access_key_file: Option<PathBuf>,
    /// File holding the S3 secret key; else `AWS_SECRET_ACCESS_KEY`.
    pub secret_key_file: Option<PathBuf>,
    /// File holding an S3 session token; else `AWS_SESSION_TOKEN`.
    pub session_token_file: Option<PathBuf>,
    pub part_size: Option<usize>,
    pub max_retries: Option<usize>,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            kind: d_storage_kind(),
            path: d_storage_path(),
            layout: d_layout(),
            compression: None,
            zstd_level: None,
            bucket: None,
            prefix: None,
            endpoint: None,
            region: None,
            addressing: None,
            ca_bundle: None,
            access_key_file: None,
            secret_key_file: None,
            session_token_file: None,
            part_size: None,
            max_retries: None,
        }
    }
}

impl StorageSection {
    /// The `[storage]` table: backend, layout, compression. Relative paths are
    /// resolved against `base`.
    pub fn validate(self, base: &Path) -> Result<StorageConfig, ConfigError> {
        use crate::storage::compress::{DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL, MIN_ZSTD_LEVEL};
        use crate::storage::s3;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let layout = crate::storage::KeyLayout::parse(&self.layout)
            .map_err(|e| invalid("storage.layout", e.to_string()))?;
        let compression = match self.compression.as_deref() {
            None => crate::storage::Compression::None,
            Some(c) => crate::storage::Compression::parse(c).ok_or_else(|| {
                invalid(
                    "storage.compression",
                    format!("unknown compression {c:?} (supported: \"none\", \"zstd\")"),
                )
            })?,
        };
        let zstd_level = self.zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL);
        if !(MIN_ZSTD_LEVEL..=MAX_ZSTD_LEVEL).contains(&zstd_level) {
            return Err(invalid(
                "storage.zstd_level",
                format!("must be between {MIN_ZSTD_LEVEL} and {MAX_ZSTD_LEVEL}"),
            ));
        }
        let s3_keys = [
            ("storage.bucket", self.bucket.is_some()),
            ("storage.prefix", self.prefix.is_some()),
            ("storage.endpoint", self.endpoint.is_some()),
            ("storage.region", self.region.is_some()),
            ("storage.addressing", self.addressing.is_some()),
            ("storage.ca_bundle", self.ca_bundle.is_some()),
            ("storage.access_key_file", self.access_key_file.is_some()),
            ("storage.secret_key_file", self.secret_key_file.is_some()),
            (
                "storage.session_token_file",
                self.session_token_file.is_some(),
            ),
            ("storage.part_size", self.part_size.is_some()),
            ("storage.max_retries", self.max_retries.is_some()),
        ];
        let s3 = match self.kind.as_str() {
            "local" => {
                if let Some((key, _)) = s3_keys.iter().find(|(_, set)| *set) {
                    return Err(invalid(key, "only used with kind = \"s3\""));
                }
                None
            }
            "s3" => {
                let bucket = self
                    .bucket
                    .ok_or_else(|| invalid("storage.bucket", "required with kind = \"s3\""))?;
                let bucket_ok = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    })
                    && !bucket.starts_with(['-', '.'])
                    && !bucket.ends_with(['-', '.']);
                if !bucket_ok {
                    return Err(invalid(
                        "storage.bucket",
                        "must be 3-63 characters of a-z, 0-9, - and ., starting and ending with a letter or digit",
                    ));
                }
                let prefix = self.prefix.unwrap_or_default();
                let prefix = prefix.trim_matches('/').to_owned();
                let prefix_ok = prefix.is_empty()
                    || prefix.split('/').all(|seg| {
                        !seg.is_empty()
                            && seg != "."
                            && seg != ".."
                            && seg.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~')
                            })
                    });
                if !prefix_ok {
                    return Err(invalid(
                        "storage.prefix",
                        "must be `/`-separated segments of A-Z, a-z, 0-9, ., _, - and ~ (no empty, . or .. segments)",
                    ));
                }
                let endpoint = self
                    .endpoint
                    .as_deref()
                    .map(|e| {
                        let url = Url::parse(e)
                            .map_err(|err| invalid("storage.endpoint", format!("not a URL: {err}")))?;
                        let plain = matches!(url.scheme(), "http" | "https")
                            && url.host_str().is_some()
                            && url.query().is_none()
                            && url.path().trim_matches('/').is_empty();
                        if plain {
                            Ok(url)
                        } else {
                            Err(invalid(
                                "storage.endpoint",
                                "must be an http:// or https:// URL with a host and no path or query",
                            ))
                        }
                    })
                    .transpose()?;
                let region = self.region.unwrap_or_else(|| s3::DEFAULT_REGION.to_owned());
                if region.is_empty()
                    || !region
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(invalid(
                        "storage.region",
                        "must be a region name such as \"cn-north-4\" or \"us-east-1\"",
                    ));
                }
                let addressing = match self.addressing.as_deref() {
                    None => s3::Addressing::Virtual,
                    Some(a) => s3::Addressing::parse(a).ok_or_else(|| {
                        invalid(
                            "storage.addressing",
                            format!("unknown addressing {a:?} (supported: \"path\", \"virtual\")"),
                        )
                    })?,
                };
                if addressing == s3::Addressing::Virtual
                    && let Some(url) = &endpoint
                    && !matches!(url.host(), Some(url::Host::Domain(d)) if d != "localhost")
                {
                    return Err(invalid(
                        "storage.addressing",
                        "\"virtual\" puts the bucket in the host name, which needs a DNS name in storage.endpoint; use addressing = \"path\" for an IP address or localhost",
                    ));
                }
                let part_size = self.part_size.unwrap_or(s3::DEFAULT_PART_SIZE);
                if !(s3::MIN_PART_SIZE..=s3::MAX_PART_SIZE).contains(&part_size) {
                    return Err(invalid(
                        "storage.part_size",
                        format!(
                            "must be between {} (5 MiB) and {} (5 GiB) bytes",
                            s3::MIN_PART_SIZE,
                            s3::MAX_PART_SIZE
                        ),
                    ));
                }
                let max_retries = self.max_retries.unwrap_or(s3::DEFAULT_MAX_RETRIES);
                if max_retries > 20 {
                    return Err(invalid("storage.max_retries", "must be at most 20"));
                }
                Some(s3::S3Config {
                    bucket,
                    prefix,
                    endpoint,
                    region,
                    addressing,
                    ca_bundle: self.ca_bundle.map(resolve),
                    access_key_file: self.access_key_file.map(resolve),
                    secret_key_file: self.secret_key_file.map(resolve),
                    session_token_file: self.session_token_file.map(resolve),
                    part_size,
                    max_retries,
                })
            }
            other => {
                return Err(invalid(
                    "storage.kind",
                    format!("unknown kind {other:?} (supported: \"local\", \"s3\")"),
                ));
            }
        };
        Ok(StorageConfig {
            root: resolve(self.path),
            layout,
            s3,
            compression,
            zstd_level,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSection {
    #[serde(default = "d_index_path")]
    pub path: PathBuf,
}

impl Default for IndexSection {
    fn default() -> Self {
        IndexSection {
            path: d_index_path(),
        }
    }
}

fn d_auth() -> String {
    "aksk".to_owned()
}
fn d_iam_endpoint() -> String {
    defaults::IAM_ENDPOINT.to_owned()
}
fn d_rps() -> u32 {
    defaults::REQUESTS_PER_SECOND
}
fn d_request_timeout() -> Duration {
    defaults::REQUEST_TIMEOUT
}
fn d_concurrency() -> usize {
    defaults::CONCURRENCY
}
fn d_max_attempts() -> u32 {
    defaults::MAX_ATTEMPTS
}
fn d_connect_timeout() -> Duration {
    defaults::CONNECT_TIMEOUT
}
fn d_idle_timeout() -> Duration {
    defaults::IDLE_TIMEOUT
}
fn d_backoff_initial() -> Duration {
    defaults::BACKOFF_INITIAL
}
fn d_backoff_max() -> Duration {
    defaults::BACKOFF_MAX
}
fn d_seal_grace() -> Duration {
    defaults::SEAL_GRACE
}
fn d_storage_kind() -> String {
    "local".to_owned()
}
fn d_storage_path() -> PathBuf {
    PathBuf::from(defaults::STORAGE_PATH)
}
fn d_layout() -> String {
    defaults::LAYOUT.to_owned()
}
fn d_index_path() -> PathBuf {
    PathBuf::from(defaults::INDEX_PATH)
}

/// A validated configuration. Relative paths are already resolved against the
/// directory of the config file.
#[derive(Debug, Clone)]
pub struct Config {
    pub modelarts: ModelArtsConfig,
    pub jobs: JobsConfig,
    pub fetch: FetchConfig,
    pub storage: StorageConfig,
    pub index_path: PathBuf,
    pub schedule: ScheduleConfig,
    pub daemon: DaemonConfig,
    pub alerts: AlertsConfig,
}

#[derive(Debug, Clone)]
pub struct ModelArtsConfig {
    pub endpoint: Url,
    pub project_id: String,
    pub auth: AuthMethod,
    pub access_key_file: Option<PathBuf>,
    pub secret_key_file: Option<PathBuf>,
    pub security_token_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub iam_endpoint: Url,
    pub user_name: Option<String>,
    pub domain_name: Option<String>,
    pub password_file: Option<PathBuf>,
    pub requests_per_second: u32,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub ids: Vec<String>,
    pub discover: bool,
    pub created_after: Option<CreatedAfter>,
    pub phases: Vec<JobPhase>,
    pub name_pattern: Option<regex::Regex>,
}

/// How requests to ModelArts are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// AK/SK signing (SDK-HMAC-SHA256), optionally with a security token.
    AkSk,
    /// A ready IAM token sent as `X-Auth-Token`.
    Token,
    /// A project-scoped IAM token obtained with user name and password.
    Password,
}

/// Lower bound on `metadata.create_time` for discovered jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatedAfter {
    /// Jobs created within this long before the run.
    Within(Duration),
    /// Jobs created after this instant, epoch milliseconds.
    Since(i64),
}

impl CreatedAfter {
    /// The bound in epoch milliseconds, for a run starting at `now_ms`.
    pub fn bound_ms(self, now_ms: i64) -> i64 {
        match self {
            CreatedAfter::Within(d) => now_ms - i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            CreatedAfter::Since(ms) => ms,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub seal_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The archive folder of `kind = "local"` (unused with S3).
    pub root: PathBuf,
    pub layout: crate::storage::KeyLayout,
    /// Set for `kind = "s3"`.
    pub s3: Option<crate::storage::S3Config>,
    /// For new objects; existing ones are read as the index recorded them.
    pub compression: crate::storage::Compression,
    pub zstd_level: i32,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        file.validate(base)
    }
}

impl ConfigFile {
    pub fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let m = self.modelarts;
        let endpoint = Url::parse(&m.endpoint)
            .map_err(|e| invalid("modelarts.endpoint", format!("not a URL: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(invalid(
                "modelarts.endpoint",
                "must be an http:// or https:// URL with a host",
            ));
        }
        if endpoint.query().is_some() {
            return Err(invalid(
                "modelarts.endpoint",
                "must not carry a query string",
            ));
        }
        let project_ok = (1..=64).contains(&m.project_id.len())
            && m.project_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !project_ok {
            return Err(invalid(
                "modelarts.project_id",
                "must be 1-64 characters of A-Z, a-z, 0-9 and -",
            ));
        }
        let auth = match m.auth.as_str() {
            "aksk" => AuthMethod::AkSk,
            "token" => AuthMethod::Token,
            "password" => AuthMethod::Password,
            other => {
                return Err(invalid(
                    "modelarts.auth",
                    format!("unknown method {other:?} (known: \"aksk\", \"token\", \"password\")"),
                ));
            }
        };
        let iam_endpoint = Url::parse(&m.iam_endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                invalid(
                    "modelarts.iam_endpoint",
                    "must be an http:// or https:// URL",
                )
            })?;
        if auth == AuthMethod::Password {
            if m.user_name.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    "modelarts.user_name",
                    "required with auth = \"password\"",
                ));
            }
            if m.domain_name.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    "modelarts.domain_name",
                    "required with auth = \"password\" (the account name)",
                ));
            }
        }
        if m.requests_per_second == 0 {
            return Err(invalid(
                "modelarts.requests_per_second",
                "must be at least 1",
            ));
        }
        nonzero(m.request_timeout, "modelarts.request_timeout")?;

        let j = self.jobs;
        if j.ids.is_empty() && !j.discover {
            return Err(invalid(
                "jobs",
                "select jobs with `ids = [...]` or `discover = true`",
            ));
        }
        if j.ids.iter().any(|id| id.trim().is_empty()) {
            return Err(invalid("jobs.ids", "contains an empty id"));
        }
        let created_after = j
            .created_after
            .as_deref()
            .map(parse_created_after)
            .transpose()?;
        let phases = j
            .phases
            .iter()
            .map(|p| match JobPhase::parse(p) {
                JobPhase::Other(other) => Err(invalid(
                    "jobs.phases",
                    format!("unknown phase {other:?} (known: Creating, Pending, Running, Terminating, Completed, Failed, Terminated, Abnormal)"),
                )),
                phase => Ok(phase),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name_pattern = j
            .name_pattern
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| invalid("jobs.name_pattern", e.to_string()))?;

        let f = self.fetch;
        if !(1..=1024).contains(&f.concurrency) {
            return Err(invalid("fetch.concurrency", "must be between 1 and 1024"));
        }
        if f.max_attempts == 0 {
            return Err(invalid("fetch.max_attempts", "must be at least 1"));
        }
        nonzero(f.connect_timeout, "fetch.connect_timeout")?;
        nonzero(f.idle_timeout, "fetch.idle_timeout")?;
        if f.backoff_max < f.backoff_initial {
            return Err(invalid(
                "fetch.backoff_max",
                "must not be smaller than fetch.backoff_initial",
            ));
        }

        let storage = self.storage.validate(base)?;

        Ok(Config {
            modelarts: ModelArtsConfig {
                endpoint,
                project_id: m.project_id,
                auth,
                access_key_file: m.access_key_file.map(resolve),
                secret_key_file: m.secret_key_file.map(resolve),
                security_token_file: m.security_token_file.map(resolve),
                token_file: m.token_file.map(resolve),
                iam_endpoint,
                user_name: m.user_name,
                domain_name: m.domain_name,
                password_file: m.password_file.map(resolve),
                requests_per_second: m.requests_per_second,
                request_timeout: m.request_timeout,
            },
            jobs: JobsConfig {
                ids: j.ids,
                discover: j.discover,
                created_after,
                phases,
                name_pattern,
            },
            fetch: FetchConfig {
                concurrency: f.concurrency,
                max_attempts: f.max_attempts,
                connect_timeout: f.connect_timeout,
                idle_timeout: f.idle_timeout,
                backoff_initial: f.backoff_initial,
                backoff_max: f.backoff_max,
                seal_grace: f.seal_grace,
            },
            storage,
            index_path: resolve(self.index.path),
            schedule: self.schedule.validate()?,
            daemon: self.daemon.validate()?,
            alerts: self.alerts.validate()?,
        })
    }
}

fn nonzero(d: Duration, key: &'static str) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(invalid(key, "must be greater than zero"))
    } else {
        Ok(())
    }
}

fn parse_created_after(s: &str) -> Result<CreatedAfter, ConfigError> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(CreatedAfter::Within(d));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(CreatedAfter::Since(t.timestamp_millis()));
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(CreatedAfter::Since(midnight.and_utc().timestamp_millis()));
    }
    Err(invalid(
        "jobs.created_after",
        format!("{s:?} is neither a duration (\"30d\") nor a date (\"2026-01-31\" or RFC 3339)"),
    ))
}

/// `[schedule]`: when the daemon (`malog run`) starts a pass.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    #[serde(default = "d_cron")]
    pub cron: String,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection { cron: d_cron() }
    }
}

impl ScheduleSection {
    fn validate(self) -> Result<ScheduleConfig, ConfigError> {
        let cron = crate::schedule::CronSchedule::parse(&self.cron, chrono::Utc::now())
            .map_err(|e| invalid("schedule.cron", e))?;
        Ok(ScheduleConfig { cron })
    }
}

/// `[daemon]`: the metrics/health listener and shutdown behaviour of `malog run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    #[serde(default = "d_listen")]
    pub listen: String,
    #[serde(default = "d_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            listen: d_listen(),
            shutdown_grace: d_shutdown_grace(),
        }
    }
}

impl DaemonSection {
    fn validate(self) -> Result<DaemonConfig, ConfigError> {
        let listen = self.listen.parse().map_err(|_| {
            invalid(
                "daemon.listen",
                format!(
                    "{:?} is not an IP address and port, e.g. \"127.0.0.1:9731\"",
                    self.listen
                ),
            )
        })?;
        Ok(DaemonConfig {
            listen,
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// `[alerts]`: what the daemon and `malog status` warn about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    #[serde(default = "d_retention_warn_after", with = "humantime_serde")]
    pub retention_warn_after: Duration,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            retention_warn_after: d_retention_warn_after(),
        }
    }
}

impl AlertsSection {
    fn validate(self) -> Result<AlertsConfig, ConfigError> {
        nonzero(self.retention_warn_after, "alerts.retention_warn_after")?;
        Ok(AlertsConfig {
            retention_warn_after: self.retention_warn_after,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub cron: crate::schedule::CronSchedule,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: std::net::SocketAddr,
    /// How long in-flight downloads may finish after SIGTERM before they are cancelled.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Tasks of jobs that ended longer ago than this and are not archived are at risk.
    pub retention_warn_after: Duration,
}

fn d_cron() -> String {
    defaults::CRON.to_owned()
}
fn d_listen() -> String {
    defaults::LISTEN.to_owned()
}
fn d_shutdown_grace() -> Duration {
    defaults::SHUTDOWN_GRACE
}
fn d_retention_warn_after() -> Duration {
    defaults::RETENTION_WARN_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [modelarts]
        endpoint = "https://modelarts.cn-north-4.myhuaweicloud.com"
        project_id = "0b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d"
        [jobs]
        ids = ["3faf5c03-aaa1-4cbe-879d-24b05d997347"]
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/malog"))
    }

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key.to_owned(),
            other => panic!("expected an Invalid error, got {other}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolved_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.fetch.concurrency, defaults::CONCURRENCY);
        assert_eq!(c.index_path, Path::new("/etc/malog/index.sqlite"));
        assert_eq!(c.storage.root, Path::new("/etc/malog/archive"));
    }

    /// GUARD: the shipped example must always parse and validate.
    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../config.example.toml");
        let c = parse(text).unwrap();
        assert!(c.jobs.discover);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{MINIMAL}\n[fetch]\nconcurency = 3\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("concurency"), "{text}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "endpoint = \"https://modelarts.cn-north-4.myhuaweicloud.com\"",
                "endpoint = \"ftp://x\"",
                "modelarts.endpoint",
            ),
            (
                "project_id = \"0b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d\"",
                "project_id = \"../x\"",
                "modelarts.project_id",
            ),
            (
                "ids = [\"3faf5c03-aaa1-4cbe-879d-24b05d997347\"]",
                "ids = []",
                "jobs",
            ),
        ];
        for (from, to, key) in cases {
            assert_eq!(key_of(parse(&MINIMAL.replace(from, to)).unwrap_err()), key);
        }
        let extra = [
            ("[fetch]\nconcurrency = 0", "fetch.concurrency"),
            ("[fetch]\nidle_timeout = \"0s\"", "fetch.idle_timeout"),
            ("[storage]\nkind = \"ftp\"", "storage.kind"),
            (
                "[storage]\nlayout = \"../{job_id}/{task_id}\"",
                "storage.layout",
            ),
        ];
        for (tail, key) in extra {
            assert_eq!(
                key_of(parse(&format!("{MINIMAL}\n{tail}\n")).unwrap_err()),
                key,
                "{tail}"
            );
        }
        let jobs_tail = [
            ("created_after = \"yesterday\"", "jobs.created_after"),
            ("phases = [\"Done\"]", "jobs.phases"),
            ("name_pattern = \"(\"", "jobs.name_pattern"),
        ];
        for (line, key) in jobs_tail {
            let text = MINIMAL.replace("[jobs]", &format!("[jobs]\n{line}"));
            assert_eq!(key_of(parse(&text).unwrap_err()), key, "{line}");
        }
    }

    #[test]
    fn created_after_forms() {
        assert_eq!(
            parse_created_after("30d").unwrap(),
            CreatedAfter::Within(Duration::from_secs(30 * 86400))
        );
        assert_eq!(
            parse_created_after("1970-01-02").unwrap(),
            CreatedAfter::Since(86_400_000)
        );
        assert_eq!(
            parse_created_after("1970-01-01T00:00:01Z").unwrap(),
            CreatedAfter::Since(1000)
        );
        assert_eq!(
            CreatedAfter::Within(Duration::from_secs(1)).bound_ms(5000),
            4000
        );
    }

    #[test]
    fn daemon_keys_default_and_validate() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.schedule.cron.expr(), defaults::CRON);
        assert_eq!(c.daemon.listen.to_string(), defaults::LISTEN);
        assert_eq!(c.daemon.shutdown_grace, defaults::SHUTDOWN_GRACE);
        assert_eq!(
            c.alerts.retention_warn_after,
            defaults::RETENTION_WARN_AFTER
        );
        // The example shows every daemon key with its default.
        let example = parse(include_str!("../config.example.toml")).unwrap();
        assert_eq!(example.schedule.cron, c.schedule.cron);
        assert_eq!(example.daemon.listen, c.daemon.listen);
        assert_eq!(example.daemon.shutdown_grace, c.daemon.shutdown_grace);
        assert_eq!(
            example.alerts.retention_warn_after,
            c.alerts.retention_warn_after
        );

        let c = parse(&format!(
            "{MINIMAL}\n[schedule]\ncron = \"30 2 * * *\"\n[daemon]\nlisten = \"0.0.0.0:9100\"\nshutdown_grace = \"5s\"\n[alerts]\nretention_warn_after = \"20d\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.schedule.cron.expr(),
            "0 30 2 * * *",
            "5-field lines get seconds"
        );
        assert_eq!(c.daemon.listen.port(), 9100);
        assert_eq!(
            c.alerts.retention_warn_after,
            Duration::from_secs(20 * 86400)
        );

        let bad = [
            ("[schedule]\ncron = \"every hour\"", "schedule.cron"),
            ("[schedule]\ncron = \"0 0 0 30 2 *\"", "schedule.cron"),
            ("[daemon]\nlisten = \"localhost\"", "daemon.listen"),
            (
                "[alerts]\nretention_warn_after = \"0s\"",
                "alerts.retention_warn_after",
            ),
        ];
        for (tail, key) in bad {
            let err = parse(&format!("{MINIMAL}\n{tail}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
            assert_eq!(key_of(err), key, "{tail}");
        }
        let err = parse(&format!("{MINIMAL}\n[daemon]\nshutdown_grace = \"soon\"\n")).unwrap_err();
        assert!(err.to_string().contains("shutdown_grace"), "{err}");
    }

    #[test]
    fn storage_s3_and_compression_keys() {
        use crate::storage::Compression;
        use crate::storage::s3::{Addressing, DEFAULT_PART_SIZE};
        let obs = r#"
[storage]
kind = "s3"
bucket = "my-logs"
prefix = "/malog/prod/"
endpoint = "https://obs.cn-north-4.myhuaweicloud.com"
region = "cn-north-4"
access_key_file = "keys/ak"
secret_key_file = "/run/credentials/malog.service/sk"
compression = "zstd"
zstd_level = 9
"#;
        let c = parse(&format!("{MINIMAL}{obs}")).unwrap();
        let s3 = c.storage.s3.expect("kind = s3");
        assert_eq!(s3.prefix, "malog/prod");
        assert_eq!(s3.addressing, Addressing::Virtual);
        assert_eq!(s3.part_size, DEFAULT_PART_SIZE);
        assert_eq!(
            s3.access_key_file.as_deref(),
            Some(Path::new("/etc/malog/keys/ak"))
        );
        assert_eq!(s3.session_token_file, None);
        assert_eq!(
            (c.storage.compression, c.storage.zstd_level),
            (Compression::Zstd, 9)
        );
        assert!(!format!("{s3:?}").is_empty());

        let local = parse(MINIMAL).unwrap();
        assert!(local.storage.s3.is_none());
        assert_eq!(local.storage.compression, Compression::None);

        let s3_base = "[storage]\nkind = \"s3\"\nbucket = \"logs\"\naddressing = \"path\"\n";
        let cases = [
            ("[storage]\nbucket = \"logs\"", "storage.bucket"),
            ("[storage]\nkind = \"s3\"", "storage.bucket"),
            (
                "[storage]\nkind = \"s3\"\nbucket = \"Logs_1\"",
                "storage.bucket",
            ),
            ("[storage]\ncompression = \"gzip\"", "storage.compression"),
            ("[storage]\nzstd_level = 22", "storage.zstd_level"),
            (&format!("{s3_base}prefix = \"a/../b\""), "storage.prefix"),
            (
                &format!("{s3_base}endpoint = \"s3.example.com\""),
                "storage.endpoint",
            ),
            (
                &format!("{s3_base}endpoint = \"https://h/x\""),
                "storage.endpoint",
            ),
            (
                "[storage]\nkind = \"s3\"\nbucket = \"logs\"\naddressing = \"dns\"",
                "storage.addressing",
            ),
            (&format!("{s3_base}region = \"\""), "storage.region"),
            (&format!("{s3_base}part_size = 1000"), "storage.part_size"),
            (&format!("{s3_base}max_retries = 99"), "storage.max_retries"),
            (
                "[storage]\nkind = \"s3\"\nbucket = \"logs\"\nendpoint = \"http://127.0.0.1:9000\"",
                "storage.addressing",
            ),
        ];
        for (tail, key) in cases {
            let text = format!("{MINIMAL}\n{tail}\n");
            assert_eq!(key_of(parse(&text).unwrap_err()), key, "{tail}");
        }
    }
}
