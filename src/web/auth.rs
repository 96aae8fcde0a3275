//! Who may read the pages: nobody checked (`auth = "none"`), a bearer token,
//! or HTTP basic auth. The secret is read once at start from `web.secret_file`
//! or `$CREDENTIALS_DIRECTORY/malog-web-secret` (systemd `LoadCredential=`),
//! like the ModelArts secrets; it never appears in logs, errors or pages.
//!
//! Requests are compared by their sha256 digests, so the time a comparison
//! takes says nothing about how much of the secret matched.

use crate::config::{WebAuth, WebConfig, web_defaults};
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "web.auth needs a secret: set web.secret_file, or pass the systemd credential {name} (LoadCredential=)"
    )]
    Missing { name: &'static str },
    #[error("cannot read the web secret from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the web secret in {path} is empty")]
    Empty { path: PathBuf },
}

/// The check every request passes.
#[derive(Clone)]
pub struct Access {
    /// `None`: open. Else the digest of the `Authorization` value to expect.
    expected: Option<[u8; 32]>,
    /// What a refused request is told (`WWW-Authenticate`).
    challenge: &'static str,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("checked", &self.expected.is_some())
            .finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Access {
    /// Reads the secret `web` needs; `credentials_dir` is `$CREDENTIALS_DIRECTORY`.
    pub fn resolve(web: &WebConfig, credentials_dir: Option<&Path>) -> Result<Access, SecretError> {
        let (scheme, user, challenge) = match &web.auth {
            WebAuth::None => {
                return Ok(Access {
                    expected: None,
                    challenge: "",
                });
            }
            WebAuth::Bearer => ("Bearer", None, "Bearer realm=\"malog\""),
            WebAuth::Basic { user } => (
                "Basic",
                Some(user.as_str()),
                "Basic realm=\"malog\", charset=\"UTF-8\"",
            ),
        };
        let path = match (&web.secret_file, credentials_dir) {
            (Some(path), _) => path.clone(),
            (None, Some(dir)) => dir.join(web_defaults::SECRET_CREDENTIAL),
            (None, None) => {
                return Err(SecretError::Missing {
                    name: web_defaults::SECRET_CREDENTIAL,
                });
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| SecretError::Read {
            path: path.clone(),
            source,
        })?;
        let secret = text.trim_end_matches(['\r', '\n']);
        if secret.is_empty() {
            return Err(SecretError::Empty { path });
        }
        let credentials = match user {
            Some(user) => {
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
            }
            None => secret.to_owned(),
        };
        Ok(Access {
            expected: Some(digest(format!("{scheme} {credentials}").as_bytes())),
            challenge,
        })
    }

    /// Open access (tests, and `auth = "none"`).
    pub fn open() -> Access {
        Access {
            expected: None,
            challenge: "",
        }
    }

    /// Whether the request carries the secret.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = self.expected else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        let given = digest(given);
        // Constant time over the digests.
        given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// The `WWW-Authenticate` value of a refusal.
    pub fn challenge(&self) -> &'static str {
        self.challenge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(auth: WebAuth, file: &Path) -> WebConfig {
        let mut web = crate::config::WebSection::default()
            .validate_for_tests()
            .unwrap();
        web.auth = auth;
        web.secret_file = Some(file.to_owned());
        web
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_accept_only_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let bearer = Access::resolve(&config(WebAuth::Bearer, &file), None).unwrap();
        assert!(bearer.allows(&headers("Bearer s3cret")));
        assert!(!bearer.allows(&headers("Bearer s3cre")));
        assert!(!bearer.allows(&HeaderMap::new()));
        let basic = Access::resolve(
            &config(
                WebAuth::Basic {
                    user: "ml".to_owned(),
                },
                &file,
            ),
            None,
        )
        .unwrap();
        let good = base64::engine::general_purpose::STANDARD.encode("ml:s3cret");
        assert!(basic.allows(&headers(&format!("Basic {good}"))));
        assert!(!basic.allows(&headers("Bearer s3cret")));
        // The secret is not in the debug output.
        assert!(!format!("{basic:?}").contains("s3cret"));
    }

    #[test]
    fn a_missing_secret_names_the_credential() {
        let mut web = crate::config::WebSection::default()
            .validate_for_tests()
            .unwrap();
        web.auth = WebAuth::Bearer;
        let err = Access::resolve(&web, None).unwrap_err().to_string();
        assert!(err.contains("malog-web-secret"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let from_dir = Access::resolve(&web, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(from_dir.contains("malog-web-secret"), "{from_dir}");
    }
}
