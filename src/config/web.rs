//! `[web]`: the archive's web page (`malog web`, or `malog run` with
//! `enabled = true`). The secret for access control is only *named* here; the
//! web module reads it at start, like the other secrets.

use super::*;

/// Defaults, documented in `config.example.toml`.
pub mod web_defaults {
    use std::time::Duration;
    pub const LISTEN: &str = "127.0.0.1:9732";
    pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);
    pub const SEARCH_MAX_HITS: usize = 500;
    pub const SEARCH_MAX_LOGS: usize = 200;
    pub const LOG_SEARCH_BYTES: u64 = 256 << 20;
    pub const SECRET_CREDENTIAL: &str = "malog-web-secret";
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "d_web_listen")]
    pub listen: String,
    /// `none` (default), `bearer` or `basic`.
    #[serde(default = "d_web_auth")]
    pub auth: String,
    /// The user name of `auth = "basic"`.
    pub user: Option<String>,
    /// File holding the token or password; else `$CREDENTIALS_DIRECTORY/malog-web-secret`.
    pub secret_file: Option<PathBuf>,
    #[serde(default = "d_search_timeout", with = "humantime_serde")]
    pub search_timeout: Duration,
    #[serde(default = "d_search_max_hits")]
    pub search_max_hits: usize,
    #[serde(default = "d_search_max_logs")]
    pub search_max_logs: usize,
    #[serde(default = "d_log_search_bytes")]
    pub log_search_bytes: u64,
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection {
            enabled: false,
            listen: d_web_listen(),
            auth: d_web_auth(),
            user: None,
            secret_file: None,
            search_timeout: d_search_timeout(),
            search_max_hits: d_search_max_hits(),
            search_max_logs: d_search_max_logs(),
            log_search_bytes: d_log_search_bytes(),
        }
    }
}

/// Who may read the pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebAuth {
    /// Anyone who reaches the listener (keep it on 127.0.0.1, or behind a proxy).
    None,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// HTTP basic auth as `user` with the secret as password.
    Basic { user: String },
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Whether `malog run` serves the pages too (`malog web` always does).
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
    pub auth: WebAuth,
    /// Where the secret of `auth` is read from, when not the credentials directory.
    pub secret_file: Option<PathBuf>,
    /// An archive-wide search stops after this long, showing what it found.
    pub search_timeout: Duration,
    /// An archive-wide search stops after this many matching lines.
    pub search_max_hits: usize,
    /// An archive-wide search reads at most this many logs.
    pub search_max_logs: usize,
    /// A search inside one log reads at most this many bytes per request.
    pub log_search_bytes: u64,
}

impl WebSection {
    pub(super) fn validate(self, base: &Path) -> Result<WebConfig, ConfigError> {
        let listen = self.listen.parse().map_err(|_| {
            invalid(
                "web.listen",
                format!(
                    "{:?} is not an IP address and port, e.g. \"127.0.0.1:9732\"",
                    self.listen
                ),
            )
        })?;
        let auth = match self.auth.as_str() {
            "none" => WebAuth::None,
            "bearer" => WebAuth::Bearer,
            "basic" => match self.user {
                Some(user) if !user.is_empty() && !user.contains(':') => WebAuth::Basic { user },
                _ => {
                    return Err(invalid(
                        "web.user",
                        "required with auth = \"basic\": a name without ':'",
                    ));
                }
            },
            other => {
                return Err(invalid(
                    "web.auth",
                    format!("unknown method {other:?} (known: \"none\", \"bearer\", \"basic\")"),
                ));
            }
        };
        nonzero(self.search_timeout, "web.search_timeout")?;
        if self.search_max_hits == 0 {
            return Err(invalid("web.search_max_hits", "must be at least 1"));
        }
        if self.search_max_logs == 0 {
            return Err(invalid("web.search_max_logs", "must be at least 1"));
        }
        if self.log_search_bytes < 1 << 20 {
            return Err(invalid("web.log_search_bytes", "must be at least 1 MiB"));
        }
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        Ok(WebConfig {
            enabled: self.enabled,
            listen,
            auth,
            secret_file: self.secret_file.map(resolve),
            search_timeout: self.search_timeout,
            search_max_hits: self.search_max_hits,
            search_max_logs: self.search_max_logs,
            log_search_bytes: self.log_search_bytes,
        })
    }
}

fn d_web_listen() -> String {
    web_defaults::LISTEN.to_owned()
}
fn d_web_auth() -> String {
    "none".to_owned()
}
fn d_search_timeout() -> Duration {
    web_defaults::SEARCH_TIMEOUT
}
fn d_search_max_hits() -> usize {
    web_defaults::SEARCH_MAX_HITS
}
fn d_search_max_logs() -> usize {
    web_defaults::SEARCH_MAX_LOGS
}
fn d_log_search_bytes() -> u64 {
    web_defaults::LOG_SEARCH_BYTES
}

#[cfg(test)]
impl WebSection {
    /// The defaults, validated (for other modules' tests).
    pub fn validate_for_tests(self) -> Result<WebConfig, ConfigError> {
        self.validate(Path::new("."))
    }
}
