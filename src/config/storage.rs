//! The `[storage]` table: backend (local folder or S3), key layout and
//! compression, validated into a [`StorageConfig`].

use super::*;
use crate::storage::compress::{DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL, MIN_ZSTD_LEVEL};
use crate::storage::{Compression, KeyLayout, SyncMode, s3};

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
    /// `"file"` or `"filesystem"` (local only).
    pub sync: Option<String>,
    /// Grow a copy by appending to its file where the file system cannot
    /// share blocks (local only; default true).
    pub append_in_place: Option<bool>,
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
            sync: None,
            append_in_place: None,
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
        let layout =
            KeyLayout::parse(&self.layout).map_err(|e| invalid("storage.layout", e.to_string()))?;
        let compression = compression(self.compression.as_deref())?;
        let zstd_level = zstd_level(self.zstd_level)?;
        let sync = sync_mode(self.sync.as_deref(), &self.kind)?;
        if self.append_in_place.is_some() && self.kind == "s3" {
            return Err(invalid(
                "storage.append_in_place",
                "only used with kind = \"local\"",
            ));
        }
        let append_in_place = self.append_in_place.unwrap_or(true);
        let root = resolve(base, self.path.clone());
        let s3 = match self.kind.as_str() {
            "local" => {
                if let Some(key) = self.s3_keys_set().next() {
                    return Err(invalid(key, "only used with kind = \"s3\""));
                }
                None
            }
            "s3" => Some(self.s3(base)?),
            other => {
                return Err(invalid(
                    "storage.kind",
                    format!("unknown kind {other:?} (supported: \"local\", \"s3\")"),
                ));
            }
        };
        Ok(StorageConfig {
            root,
            layout,
            s3,
            compression,
            zstd_level,
            sync,
            append_in_place,
        })
    }

    /// The S3-only keys that are set (an error with `kind = "local"`).
    fn s3_keys_set(&self) -> impl Iterator<Item = &'static str> {
        [
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
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
    }

    /// The S3 settings of `kind = "s3"`.
    fn s3(self, base: &Path) -> Result<s3::S3Config, ConfigError> {
        let bucket = bucket(self.bucket)?;
        let prefix = prefix(self.prefix.unwrap_or_default())?;
        let endpoint = self.endpoint.as_deref().map(endpoint).transpose()?;
        let region = region(self.region.unwrap_or_else(|| s3::DEFAULT_REGION.to_owned()))?;
        let addressing = addressing(self.addressing.as_deref(), endpoint.as_ref())?;
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
        Ok(s3::S3Config {
            bucket,
            prefix,
            endpoint,
            region,
            addressing,
            ca_bundle: self.ca_bundle.map(|p| resolve(base, p)),
            access_key_file: self.access_key_file.map(|p| resolve(base, p)),
            secret_key_file: self.secret_key_file.map(|p| resolve(base, p)),
            session_token_file: self.session_token_file.map(|p| resolve(base, p)),
            part_size,
            max_retries,
        })
    }
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { base.join(p) }
}

fn compression(text: Option<&str>) -> Result<Compression, ConfigError> {
    match text {
        None => Ok(Compression::None),
        Some(c) => Compression::parse(c).ok_or_else(|| {
            invalid(
                "storage.compression",
                format!("unknown compression {c:?} (supported: \"none\", \"zstd\")"),
            )
        }),
    }
}

fn zstd_level(level: Option<i32>) -> Result<i32, ConfigError> {
    let level = level.unwrap_or(DEFAULT_ZSTD_LEVEL);
    if !(MIN_ZSTD_LEVEL..=MAX_ZSTD_LEVEL).contains(&level) {
        return Err(invalid(
            "storage.zstd_level",
            format!("must be between {MIN_ZSTD_LEVEL} and {MAX_ZSTD_LEVEL}"),
        ));
    }
    Ok(level)
}

fn sync_mode(text: Option<&str>, kind: &str) -> Result<SyncMode, ConfigError> {
    let mode = match text {
        None | Some("file") => SyncMode::File,
        Some("filesystem") => SyncMode::Filesystem,
        Some(other) => {
            return Err(invalid(
                "storage.sync",
                format!("unknown sync {other:?} (supported: \"file\", \"filesystem\")"),
            ));
        }
    };
    if text.is_some() && kind == "s3" {
        return Err(invalid("storage.sync", "only used with kind = \"local\""));
    }
    Ok(mode)
}

fn bucket(bucket: Option<String>) -> Result<String, ConfigError> {
    let bucket = bucket.ok_or_else(|| invalid("storage.bucket", "required with kind = \"s3\""))?;
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !ok {
        return Err(invalid(
            "storage.bucket",
            "must be 3-63 characters of a-z, 0-9, - and ., starting and ending with a letter or digit",
        ));
    }
    Ok(bucket)
}

fn prefix(prefix: String) -> Result<String, ConfigError> {
    let prefix = prefix.trim_matches('/').to_owned();
    let ok = prefix.is_empty()
        || prefix.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~'))
        });
    if !ok {
        return Err(invalid(
            "storage.prefix",
            "must be `/`-separated segments of A-Z, a-z, 0-9, ., _, - and ~ (no empty, . or .. segments)",
        ));
    }
    Ok(prefix)
}

fn endpoint(text: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(text).map_err(|err| invalid("storage.endpoint", format!("not a URL: {err}")))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.query().is_none()
        && url.path().trim_matches('/').is_empty();
    if !plain {
        return Err(invalid(
            "storage.endpoint",
            "must be an http:// or https:// URL with a host and no path or query",
        ));
    }
    Ok(url)
}

fn region(region: String) -> Result<String, ConfigError> {
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
    Ok(region)
}

fn addressing(text: Option<&str>, endpoint: Option<&Url>) -> Result<s3::Addressing, ConfigError> {
    let addressing = match text {
        None => s3::Addressing::Virtual,
        Some(a) => s3::Addressing::parse(a).ok_or_else(|| {
            invalid(
                "storage.addressing",
                format!("unknown addressing {a:?} (supported: \"path\", \"virtual\")"),
            )
        })?,
    };
    if addressing == s3::Addressing::Virtual
        && let Some(url) = endpoint
        && !matches!(url.host(), Some(url::Host::Domain(d)) if d != "localhost")
    {
        return Err(invalid(
            "storage.addressing",
            "\"virtual\" puts the bucket in the host name, which needs a DNS name in storage.endpoint; use addressing = \"path\" for an IP address or localhost",
        ));
    }
    Ok(addressing)
}
