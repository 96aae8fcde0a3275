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

mod daemon;
mod sources;
mod storage;
mod web;

use crate::source::settings::SecretNames;
pub use crate::source::{AuthMethod, ModelArtsConfig};
pub use crate::storage::StorageConfig;

pub use daemon::*;
pub use sources::*;
pub use storage::*;
pub use web::*;

/// Defaults, documented in `config.example.toml`.
pub mod defaults {
    use std::time::Duration;
    pub const REQUESTS_PER_SECOND: u32 = 10;
    pub const IAM_ENDPOINT: &str = "https://iam.myhuaweicloud.com";
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const CONCURRENCY: usize = 8;
    pub const MAX_ATTEMPTS: u32 = 4;
    pub const RETRY_ROUNDS: u32 = 3;
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
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The file as written. Every table and key is optional, except that the
/// sources must be given: `[modelarts]` (one source) or `[sources.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub modelarts: Option<ModelArtsSection>,
    pub jobs: Option<JobsSection>,
    /// `[sources.<name>]` tables, each a `[modelarts]` table plus its own
    /// `jobs` table; parsed in `sources.rs`.
    #[serde(default)]
    pub sources: std::collections::BTreeMap<String, toml::Table>,
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
    #[serde(default)]
    pub web: WebSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelArtsSection {
    pub endpoint: String,
    pub project_id: String,
    /// The region id (`cn-north-4`); else read from an endpoint
    /// `https://modelarts.<region>.…`.
    pub region: Option<String>,
    /// The workspace whose jobs a search lists; else the default one.
    pub workspace_id: Option<String>,
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

#[derive(Debug, Deserialize)]
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
    /// Keep environment variable values in stored job records (default: redacted).
    #[serde(default)]
    pub keep_environment: bool,
    #[serde(default = "d_true")]
    pub archive_events: bool,
    #[serde(default = "d_true")]
    pub archive_metrics: bool,
}

fn d_true() -> bool {
    true
}

impl Default for JobsSection {
    fn default() -> JobsSection {
        JobsSection {
            ids: Vec::new(),
            discover: false,
            created_after: None,
            phases: Vec::new(),
            name_pattern: None,
            keep_environment: false,
            archive_events: true,
            archive_metrics: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSection {
    #[serde(default = "d_concurrency")]
    pub concurrency: usize,
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "d_retry_rounds")]
    pub retry_rounds: u32,
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
            retry_rounds: d_retry_rounds(),
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
fn d_retry_rounds() -> u32 {
    defaults::RETRY_ROUNDS
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
    /// At least one; names are unique. The `[modelarts]` form is one source
    /// named [`DEFAULT_SOURCE`].
    pub sources: Vec<SourceConfig>,
    pub fetch: FetchConfig,
    pub storage: StorageConfig,
    pub index_path: PathBuf,
    pub schedule: ScheduleConfig,
    pub daemon: DaemonConfig,
    pub alerts: AlertsConfig,
    pub web: WebConfig,
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub ids: Vec<String>,
    pub discover: bool,
    pub created_after: Option<CreatedAfter>,
    pub phases: Vec<JobPhase>,
    pub name_pattern: Option<regex::Regex>,
    /// Store the values of a job's environment variables verbatim in its record
    /// instead of `"<redacted>"` (a risk: they often hold credentials).
    pub keep_environment: bool,
    /// Archive each job's events (refreshed while it runs).
    pub archive_events: bool,
    /// Archive each task's resource metrics once its job is final.
    pub archive_metrics: bool,
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
    /// Further rounds over the tasks that failed retryably, at the end of a pass
    /// (the pass budget): each round runs only while the previous one archived
    /// something.
    pub retry_rounds: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub seal_grace: Duration,
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
        let sources = sources::validate(self.modelarts, self.jobs, self.sources, base)?;
        let layout = self.storage.layout.clone();
        let mut storage = self.storage.validate(base)?;
        sources::check_layout(&sources, &layout, &mut storage)?;
        Ok(Config {
            sources,
            fetch: self.fetch.validate()?,
            storage,
            index_path: resolve(self.index.path),
            schedule: self.schedule.validate()?,
            daemon: self.daemon.validate()?,
            alerts: self.alerts.validate()?,
            web: self.web.validate(base)?,
        })
    }
}

impl ModelArtsSection {
    /// The `[modelarts]` table or one `[sources.<name>]` table (its keys
    /// start with `table`); relative paths are resolved against `base`.
    fn validate(
        self,
        base: &Path,
        name: &str,
        secret_names: SecretNames,
        table: &str,
    ) -> Result<ModelArtsConfig, ConfigError> {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let key = |k: &str| format!("{table}.{k}");
        let m = self;
        let endpoint = api_endpoint(&m.endpoint, key("endpoint"))?;
        check_project_id(&m.project_id, key("project_id"))?;
        let auth = auth_method(&m.auth, key("auth"))?;
        let iam_endpoint = Url::parse(&m.iam_endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| invalid(key("iam_endpoint"), "must be an http:// or https:// URL"))?;
        if auth == AuthMethod::Password {
            m.check_password_identity(table)?;
        }
        if m.requests_per_second == 0 {
            return Err(invalid(key("requests_per_second"), "must be at least 1"));
        }
        nonzero(m.request_timeout, key("request_timeout"))?;
        let region = sources::region(m.region, &endpoint, &key("region"))?;
        let workspace_id = m.workspace_id.filter(|w| !w.is_empty());
        Ok(ModelArtsConfig {
            name: name.to_owned(),
            secret_names,
            region,
            workspace_id,
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
        })
    }

    /// `auth = "password"` names the IAM user and its account.
    fn check_password_identity(&self, table: &str) -> Result<(), ConfigError> {
        if self.user_name.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                format!("{table}.user_name"),
                "required with auth = \"password\"",
            ));
        }
        if self.domain_name.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                format!("{table}.domain_name"),
                "required with auth = \"password\" (the account name)",
            ));
        }
        Ok(())
    }
}

/// The ModelArts API's base URL: http(s), with a host and no query string.
fn api_endpoint(raw: &str, key: String) -> Result<Url, ConfigError> {
    let endpoint = Url::parse(raw).map_err(|e| invalid(key.clone(), format!("not a URL: {e}")))?;
    if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
        return Err(invalid(
            key,
            "must be an http:// or https:// URL with a host",
        ));
    }
    if endpoint.query().is_some() {
        return Err(invalid(key, "must not carry a query string"));
    }
    Ok(endpoint)
}

/// A project id goes into every API path: 1-64 characters of A-Z, a-z, 0-9 and -.
fn check_project_id(project_id: &str, key: String) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&project_id.len())
        && project_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(invalid(
            key,
            "must be 1-64 characters of A-Z, a-z, 0-9 and -",
        ));
    }
    Ok(())
}

/// The `auth` key's method.
fn auth_method(auth: &str, key: String) -> Result<AuthMethod, ConfigError> {
    match auth {
        "aksk" => Ok(AuthMethod::AkSk),
        "token" => Ok(AuthMethod::Token),
        "password" => Ok(AuthMethod::Password),
        other => Err(invalid(
            key,
            format!("unknown method {other:?} (known: \"aksk\", \"token\", \"password\")"),
        )),
    }
}

impl JobsSection {
    /// The `[jobs]` table (or a source's, whose keys start with `table`):
    /// which jobs to archive and what to keep of them.
    fn validate(self, table: &str) -> Result<JobsConfig, ConfigError> {
        let key = |k: &str| format!("{table}.{k}");
        let j = self;
        if j.ids.is_empty() && !j.discover {
            return Err(invalid(
                table,
                "select jobs with `ids = [...]` or `discover = true`",
            ));
        }
        if j.ids.iter().any(|id| id.trim().is_empty()) {
            return Err(invalid(key("ids"), "contains an empty id"));
        }
        let created_after = j
            .created_after
            .as_deref()
            .map(|s| parse_created_after(s, &key("created_after")))
            .transpose()?;
        let phases = j
            .phases
            .iter()
            .map(|p| match JobPhase::parse(p) {
                JobPhase::Other(other) => Err(invalid(
                    key("phases"),
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
            .map_err(|e| invalid(key("name_pattern"), e.to_string()))?;
        Ok(JobsConfig {
            ids: j.ids,
            discover: j.discover,
            created_after,
            phases,
            name_pattern,
            keep_environment: j.keep_environment,
            archive_events: j.archive_events,
            archive_metrics: j.archive_metrics,
        })
    }
}

impl FetchSection {
    /// The `[fetch]` table: parallelism, retries and timeouts.
    fn validate(self) -> Result<FetchConfig, ConfigError> {
        let f = self;
        if !(1..=1024).contains(&f.concurrency) {
            return Err(invalid("fetch.concurrency", "must be between 1 and 1024"));
        }
        if f.max_attempts == 0 {
            return Err(invalid("fetch.max_attempts", "must be at least 1"));
        }
        if f.retry_rounds > 100 {
            return Err(invalid("fetch.retry_rounds", "must be at most 100"));
        }
        nonzero(f.connect_timeout, "fetch.connect_timeout")?;
        nonzero(f.idle_timeout, "fetch.idle_timeout")?;
        if f.backoff_max < f.backoff_initial {
            return Err(invalid(
                "fetch.backoff_max",
                "must not be smaller than fetch.backoff_initial",
            ));
        }
        Ok(FetchConfig {
            concurrency: f.concurrency,
            max_attempts: f.max_attempts,
            retry_rounds: f.retry_rounds,
            connect_timeout: f.connect_timeout,
            idle_timeout: f.idle_timeout,
            backoff_initial: f.backoff_initial,
            backoff_max: f.backoff_max,
            seal_grace: f.seal_grace,
        })
    }
}

fn nonzero(d: Duration, key: impl Into<String>) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(invalid(key, "must be greater than zero"))
    } else {
        Ok(())
    }
}

fn parse_created_after(s: &str, key: &str) -> Result<CreatedAfter, ConfigError> {
    CreatedAfter::parse(s).ok_or_else(|| {
        invalid(
            key,
            format!(
                "{s:?} is neither a duration (\"30d\") nor a date (\"2026-01-31\" or RFC 3339)"
            ),
        )
    })
}

impl CreatedAfter {
    /// A duration before now (`"30d"`), a day (`"2026-01-31"`, midnight UTC) or
    /// an RFC 3339 instant; `None` for anything else.
    pub fn parse(s: &str) -> Option<CreatedAfter> {
        if let Ok(d) = humantime::parse_duration(s) {
            return Some(CreatedAfter::Within(d));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Some(CreatedAfter::Since(t.timestamp_millis()));
        }
        if let Ok(day) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
            return Some(CreatedAfter::Since(midnight.and_utc().timestamp_millis()));
        }
        None
    }
}

#[cfg(test)]
mod tests;
