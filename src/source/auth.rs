//! How malog proves who it is to ModelArts: AK/SK signing (with a security token
//! for temporary keys), a static IAM token, or a project-scoped IAM token obtained
//! with user name and password, cached and refreshed before it expires.
//!
//! Secrets are read once, from (in order) the file the config names, the file
//! systemd passed with `LoadCredential=` (`$CREDENTIALS_DIRECTORY/<name>`), or the
//! environment. They never appear in `Debug` output, logs or errors. A
//! `[sources.<name>]` source names them after itself ([`super::settings::SecretNames`]).

use super::error::{SourceError, Target, parse_fault};
use super::settings::{AuthMethod, ModelArtsConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Environment variables, and the names looked up in `$CREDENTIALS_DIRECTORY`.
pub const ENV_ACCESS_KEY: &str = "HUAWEICLOUD_SDK_AK";
pub const ENV_SECRET_KEY: &str = "HUAWEICLOUD_SDK_SK";
pub const ENV_SECURITY_TOKEN: &str = "HUAWEICLOUD_SDK_SECURITY_TOKEN";
pub const ENV_AUTH_TOKEN: &str = "MALOG_AUTH_TOKEN";
pub const ENV_IAM_PASSWORD: &str = "MALOG_IAM_PASSWORD";
pub const CREDENTIAL_AK: &str = "ak";
pub const CREDENTIAL_SK: &str = "sk";
pub const CREDENTIAL_SECURITY_TOKEN: &str = "security-token";
pub const CREDENTIAL_TOKEN: &str = "token";
pub const CREDENTIAL_PASSWORD: &str = "password";

/// An IAM token is refreshed this long before it expires (tokens live 24 h).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no {what}: set {env}, pass `{credential}` with systemd LoadCredential=, or set `{key}`"
    )]
    Missing {
        what: &'static str,
        env: String,
        credential: String,
        /// The config key, with its table (`modelarts.access_key_file`).
        key: String,
    },
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} in {origin} is empty")]
    Empty { what: &'static str, origin: String },
}

/// Proof of identity for API requests. Cheap to clone; clones share the token cache.
#[derive(Clone)]
pub struct Credentials {
    kind: Arc<Kind>,
}

enum Kind {
    AkSk {
        access_key: String,
        secret_key: String,
        security_token: Option<String>,
    },
    Token(String),
    Password(PasswordLogin),
}

struct PasswordLogin {
    iam_endpoint: url::Url,
    user_name: String,
    domain_name: String,
    password: String,
    project_id: String,
    /// The current token and when to refresh it.
    cache: Mutex<Option<(String, tokio::time::Instant)>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.kind {
            Kind::AkSk {
                access_key,
                security_token,
                ..
            } => {
                let shown: String = access_key.chars().take(4).collect();
                let temporary = if security_token.is_some() {
                    ", temporary"
                } else {
                    ""
                };
                write!(
                    f,
                    "Credentials(AK/SK \"{shown}…\"{temporary}, secret <redacted>)"
                )
            }
            Kind::Token(_) => f.write_str("Credentials(token <redacted>)"),
            Kind::Password(p) => write!(
                f,
                "Credentials(IAM user {:?} of {:?}, password <redacted>)",
                p.user_name, p.domain_name
            ),
        }
    }
}

/// What one request must carry.
pub(crate) enum RequestAuth<'a> {
    /// Sign with SDK-HMAC-SHA256; add `X-Security-Token` (signed) when set.
    Sign {
        access_key: &'a str,
        secret_key: &'a str,
        security_token: Option<&'a str>,
    },
    /// Send `X-Auth-Token`.
    Token(String),
}

impl Credentials {
    /// A permanent AK/SK pair.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Credentials {
        Credentials {
            kind: Arc::new(Kind::AkSk {
                access_key: access_key.into(),
                secret_key: secret_key.into(),
                security_token: None,
            }),
        }
    }

    /// Reads the secrets `[modelarts] auth` needs.
    pub fn resolve(cfg: &ModelArtsConfig) -> Result<Credentials, CredentialsError> {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Credentials::resolve_in(cfg, dir.as_deref())
    }

    /// [`Credentials::resolve`] with an explicit credentials directory (for tests).
    pub fn resolve_in(
        cfg: &ModelArtsConfig,
        credentials_dir: Option<&Path>,
    ) -> Result<Credentials, CredentialsError> {
        let mut sources = secret_sources(cfg, credentials_dir).into_iter();
        let mut next = || sources.next().expect("secret_sources lists every secret");
        let kind = match cfg.auth {
            AuthMethod::AkSk => Kind::AkSk {
                access_key: next().read()?,
                secret_key: next().read()?,
                security_token: next().read_optional()?,
            },
            AuthMethod::Token => Kind::Token(next().read()?),
            AuthMethod::Password => Kind::Password(PasswordLogin {
                iam_endpoint: cfg.iam_endpoint.clone(),
                user_name: cfg.user_name.clone().unwrap_or_default(),
                domain_name: cfg.domain_name.clone().unwrap_or_default(),
                password: next().read()?,
                project_id: cfg.project_id.clone(),
                cache: Mutex::new(None),
            }),
        };
        Ok(Credentials {
            kind: Arc::new(kind),
        })
    }

    /// What the next request must carry; logs in to IAM first when needed.
    pub(crate) async fn request_auth(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<RequestAuth<'_>, SourceError> {
        match &*self.kind {
            Kind::AkSk {
                access_key,
                secret_key,
                security_token,
            } => Ok(RequestAuth::Sign {
                access_key,
                secret_key,
                security_token: security_token.as_deref(),
            }),
            Kind::Token(token) => Ok(RequestAuth::Token(token.clone())),
            Kind::Password(login) => login.token(http, timeout).await.map(RequestAuth::Token),
        }
    }

    /// Drops a cached IAM token after a 401; returns whether a fresh one can be had.
    pub(crate) fn invalidate_token(&self) -> bool {
        match &*self.kind {
            Kind::Password(login) => {
                *login.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
                true
            }
            _ => false,
        }
    }
}

impl PasswordLogin {
    async fn token(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<String, SourceError> {
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((token, refresh_at)) = &*cache
                && tokio::time::Instant::now() < *refresh_at
            {
                return Ok(token.clone());
            }
        }
        let (token, refresh_at) = self.login(http, timeout).await?;
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((token.clone(), refresh_at));
        Ok(token)
    }

    /// `POST /v3/auth/tokens` with a project scope; the token is in `X-Subject-Token`.
    async fn login(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<(String, tokio::time::Instant), SourceError> {
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.user_name, "password": self.password, "domain": {"name": self.domain_name}}}},
            "scope": {"project": {"id": self.project_id}}
        }});
        let mut url = self.iam_endpoint.clone();
        url.set_path(&format!(
            "{}/v3/auth/tokens",
            self.iam_endpoint.path().trim_end_matches('/')
        ));
        let response = http
            .post(url)
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| SourceError::Transport {
                target: Target::Iam,
                message: crate::http::describe_reqwest_error(e),
            })?;
        let status = response.status();
        let token = response
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.unwrap_or_default();
        let Some(token) = token.filter(|_| status.is_success()) else {
            let fault = parse_fault(status.as_u16(), &bytes);
            return Err(SourceError::from_response(Target::Iam, fault, None));
        };
        #[derive(serde::Deserialize)]
        struct Body {
            token: TokenBody,
        }
        #[derive(serde::Deserialize)]
        struct TokenBody {
            expires_at: String,
        }
        let now = chrono::Utc::now();
        let lifetime = serde_json::from_slice::<Body>(&bytes)
            .ok()
            .and_then(|b| chrono::DateTime::parse_from_rfc3339(&b.token.expires_at).ok())
            .and_then(|t| (t.with_timezone(&chrono::Utc) - now).to_std().ok())
            .unwrap_or(Duration::from_secs(23 * 3600));
        // Refresh an hour early, or halfway for a short-lived token.
        let margin = TOKEN_REFRESH_MARGIN.min(lifetime / 2);
        tracing::debug!(lifetime_s = lifetime.as_secs(), "obtained an IAM token");
        Ok((token, tokio::time::Instant::now() + lifetime - margin))
    }
}

/// The secrets `[modelarts] auth` needs, in the order [`Credentials::resolve_in`]
/// reads them, each with the places it may come from.
fn secret_sources(cfg: &ModelArtsConfig, credentials_dir: Option<&Path>) -> Vec<SecretSource> {
    let source = |what, key, file: &Option<PathBuf>, credential, env, required| {
        let env = cfg.env_name(env, credential);
        let credential = cfg.credential_name(credential);
        let key = cfg.config_key(key);
        let from_dir = credentials_dir
            .map(|d| d.join(&credential))
            .filter(|p: &PathBuf| p.is_file());
        SecretSource {
            what,
            key,
            file: file
                .clone()
                .map(|p| (p, false))
                .or(from_dir.map(|p| (p, true))),
            credential,
            env,
            required,
        }
    };
    match cfg.auth {
        AuthMethod::AkSk => vec![
            source(
                "access key",
                "access_key_file",
                &cfg.access_key_file,
                CREDENTIAL_AK,
                ENV_ACCESS_KEY,
                true,
            ),
            source(
                "secret key",
                "secret_key_file",
                &cfg.secret_key_file,
                CREDENTIAL_SK,
                ENV_SECRET_KEY,
                true,
            ),
            source(
                "security token",
                "security_token_file",
                &cfg.security_token_file,
                CREDENTIAL_SECURITY_TOKEN,
                ENV_SECURITY_TOKEN,
                false,
            ),
        ],
        AuthMethod::Token => vec![source(
            "IAM token",
            "token_file",
            &cfg.token_file,
            CREDENTIAL_TOKEN,
            ENV_AUTH_TOKEN,
            true,
        )],
        AuthMethod::Password => vec![source(
            "IAM password",
            "password_file",
            &cfg.password_file,
            CREDENTIAL_PASSWORD,
            ENV_IAM_PASSWORD,
            true,
        )],
    }
}

/// Where a secret is taken from (never its value), for `malog doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// The file named by the config key.
    ConfigFile(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`).
    CredentialsDir(PathBuf),
    /// This environment variable.
    Env(String),
    /// Nowhere.
    Missing,
}

/// One secret the configured authentication needs, and where it would be read.
#[derive(Debug, Clone)]
pub struct SecretLocation {
    pub what: &'static str,
    pub origin: SecretOrigin,
    /// False for the security token, which only temporary keys have.
    pub required: bool,
    /// Every way to provide it, for a message when it is missing.
    pub how_to_provide: String,
}

/// Where each secret of `cfg` would be read from, without reading any.
pub fn locate_secrets(
    cfg: &ModelArtsConfig,
    credentials_dir: Option<&Path>,
) -> Vec<SecretLocation> {
    secret_sources(cfg, credentials_dir)
        .into_iter()
        .map(|s| SecretLocation {
            what: s.what,
            origin: match &s.file {
                Some((path, false)) => SecretOrigin::ConfigFile(path.clone()),
                Some((path, true)) => SecretOrigin::CredentialsDir(path.clone()),
                None if std::env::var_os(&s.env).is_some() => SecretOrigin::Env(s.env.clone()),
                None => SecretOrigin::Missing,
            },
            required: s.required,
            how_to_provide: format!(
                "set {}, pass `{}` with systemd LoadCredential=, or set `{}`",
                s.env, s.credential, s.key
            ),
        })
        .collect()
}

/// Where one secret may come from.
struct SecretSource {
    what: &'static str,
    /// The config key naming its file, with its table.
    key: String,
    /// A file, and whether it was found in the credentials directory.
    file: Option<(PathBuf, bool)>,
    /// Its name in `$CREDENTIALS_DIRECTORY` and in the environment.
    credential: String,
    env: String,
    required: bool,
}

impl SecretSource {
    fn read(self) -> Result<String, CredentialsError> {
        let (what, key, credential, env) = (
            self.what,
            self.key.clone(),
            self.credential.clone(),
            self.env.clone(),
        );
        self.read_optional()?.ok_or(CredentialsError::Missing {
            what,
            env,
            credential,
            key,
        })
    }

    fn read_optional(self) -> Result<Option<String>, CredentialsError> {
        let what = self.what;
        let (value, origin) = match &self.file {
            Some((path, _)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
                        what,
                        path: path.clone(),
                        source,
                    })?;
                if readable_by_others(path) {
                    tracing::warn!(path = %path.display(), "secret file is readable by other users; chmod 600 it");
                }
                (text, path.display().to_string())
            }
            None => match std::env::var(&self.env) {
                Ok(v) => (v, self.env.clone()),
                Err(_) => return Ok(None),
            },
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(CredentialsError::Empty { what, origin });
        }
        Ok(Some(value))
    }
}

/// Whether users other than the owner may read a secret file (a warning: it
/// is still used).
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ModelArtsConfig {
        let base = format!(
            "[modelarts]\nendpoint = \"http://127.0.0.1:1\"\nproject_id = \"p\"\n{text}\n[jobs]\ndiscover = true\n"
        );
        crate::config::Config::parse(&base, Path::new("/"))
            .unwrap()
            .sources
            .remove(0)
            .modelarts
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::new("HPUAEXAMPLEAK0000001", "topsecret");
        let text = format!("{c:?}");
        assert!(
            !text.contains("topsecret") && !text.contains("EXAMPLEAK"),
            "{text}"
        );
    }

    #[test]
    fn credentials_directory_is_used_when_no_file_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ak"), "AK-FROM-SYSTEMD\n").unwrap();
        std::fs::write(dir.path().join("sk"), "SK-FROM-SYSTEMD").unwrap();
        std::fs::write(dir.path().join("security-token"), "ST").unwrap();
        let c = Credentials::resolve_in(&config(""), Some(dir.path())).unwrap();
        match &*c.kind {
            Kind::AkSk {
                access_key,
                secret_key,
                security_token,
            } => {
                assert_eq!(
                    (access_key.as_str(), secret_key.as_str()),
                    ("AK-FROM-SYSTEMD", "SK-FROM-SYSTEMD")
                );
                assert_eq!(security_token.as_deref(), Some("ST"));
            }
            _ => panic!("expected AK/SK"),
        }
    }

    #[test]
    fn a_file_named_in_the_config_wins_over_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ak"), "AK").unwrap();
        std::fs::write(dir.path().join("sk"), "SK").unwrap();
        std::fs::write(dir.path().join("own-sk"), "  ").unwrap();
        let cfg = config(&format!(
            "secret_key_file = \"{}/own-sk\"",
            dir.path().display()
        ));
        let err = Credentials::resolve_in(&cfg, Some(dir.path())).unwrap_err();
        assert!(
            err.to_string().contains("own-sk") && err.to_string().contains("empty"),
            "{err}"
        );
    }

    #[test]
    fn missing_secret_names_every_way_to_give_it() {
        let cfg = config(
            "auth = \"password\"\nuser_name = \"u\"\ndomain_name = \"d\"\npassword_file = \"/nonexistent/pw\"",
        );
        let err = Credentials::resolve_in(&cfg, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pw"), "{err}");
        let cfg = config("auth = \"token\"");
        let err = Credentials::resolve_in(&cfg, Some(Path::new("/nonexistent")))
            .unwrap_err()
            .to_string();
        if std::env::var_os(ENV_AUTH_TOKEN).is_none() {
            assert!(
                err.contains(ENV_AUTH_TOKEN) && err.contains("token_file"),
                "{err}"
            );
        }
    }
}
