//! The validated settings of the ModelArts client. `config` parses and checks
//! the `[modelarts]` section (or one `[sources.<name>]` table) into these; the
//! source layer never reads the file.

use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// The `[modelarts]` section, or one `[sources.<name>]` table, validated.
#[derive(Debug, Clone)]
pub struct ModelArtsConfig {
    /// The source's name (`default` for the `[modelarts]` form): it labels the
    /// source's jobs, metrics and errors, and names its secrets.
    pub name: String,
    /// How the secrets are named outside the config file.
    pub secret_names: SecretNames,
    /// The region (`cn-north-4`), given or read from the endpoint's host; the
    /// `{region}` placeholder of the key layout.
    pub region: Option<String>,
    /// The workspace whose jobs a search lists (`None`: the service's default, "0").
    pub workspace_id: Option<String>,
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

/// How a source's secrets are named in `$CREDENTIALS_DIRECTORY` and the
/// environment. One rule per form, so that two sources never read each
/// other's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretNames {
    /// The `[modelarts]` form: `ak`, `sk`, …; `HUAWEICLOUD_SDK_AK`, … (unchanged).
    Shared,
    /// A `[sources.<name>]` table: `<name>-ak`, `<name>-sk`, …;
    /// `MALOG_<NAME>_AK`, `MALOG_<NAME>_SK`, … (upper case, `-` → `_`).
    PerSource,
}

impl ModelArtsConfig {
    /// The name of a secret in `$CREDENTIALS_DIRECTORY` (`credential` is the
    /// shared form's name, e.g. `ak`).
    pub fn credential_name(&self, credential: &str) -> String {
        match self.secret_names {
            SecretNames::Shared => credential.to_owned(),
            SecretNames::PerSource => format!("{}-{credential}", self.name),
        }
    }

    /// The environment variable of a secret (`shared` is the shared form's
    /// variable, `credential` the secret's credential name).
    pub fn env_name(&self, shared: &str, credential: &str) -> String {
        match self.secret_names {
            SecretNames::Shared => shared.to_owned(),
            SecretNames::PerSource => format!("MALOG_{}_{}", self.name, credential)
                .to_ascii_uppercase()
                .replace('-', "_"),
        }
    }

    /// The config key of a secret file (`key` is the key inside the table).
    pub fn config_key(&self, key: &str) -> String {
        match self.secret_names {
            SecretNames::Shared => format!("modelarts.{key}"),
            SecretNames::PerSource => format!("sources.{}.{key}", self.name),
        }
    }
}
