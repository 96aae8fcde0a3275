//! The validated settings of the ModelArts client. `config` parses and checks
//! the `[modelarts]` section into these; the source layer never reads the file.

use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// The `[modelarts]` section, validated.
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
