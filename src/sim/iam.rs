//! The simulated IAM: `POST /v3/auth/tokens` with a user name, password and
//! domain issues a project-scoped token (in `X-Subject-Token`, 201), which the
//! API then accepts as `X-Auth-Token` until it expires. Also the optional
//! security token that temporary AK/SK must carry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::scenario::SimConfig;
use super::state::{Shared, bump};

/// Users, issued tokens and temporary-key rules.
pub(crate) struct Iam {
    user: String,
    password: String,
    domain: String,
    token_ttl: Duration,
    /// Required with the access key when set (temporary AK/SK).
    pub security_token: Option<String>,
    /// token → expiry (unix ms).
    tokens: Mutex<HashMap<String, i64>>,
}

impl Iam {
    pub fn new(config: &SimConfig) -> Iam {
        Iam {
            user: config.iam_user.clone(),
            password: config.iam_password.clone(),
            domain: config.iam_domain.clone(),
            token_ttl: config.token_ttl,
            security_token: config.security_token.clone(),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The IAM part of the simulator's config (the rest left at defaults).
    pub fn settings(&self) -> SimConfig {
        SimConfig {
            iam_user: self.user.clone(),
            iam_password: self.password.clone(),
            iam_domain: self.domain.clone(),
            token_ttl: self.token_ttl,
            security_token: self.security_token.clone(),
            ..SimConfig::default()
        }
    }

    /// Whether `token` was issued here and has not expired.
    pub fn accepts(&self, token: &str) -> bool {
        let now = chrono::Utc::now().timestamp_millis();
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.get(token).is_some_and(|expiry| *expiry > now)
    }

    /// Makes every issued token expired, as 24 hours passing would.
    pub fn expire_all(&self) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        for expiry in tokens.values_mut() {
            *expiry = 0;
        }
    }
}

#[derive(Deserialize)]
struct AuthBody {
    auth: Auth,
}
#[derive(Deserialize)]
struct Auth {
    identity: Identity,
    scope: Scope,
}
#[derive(Deserialize)]
struct Identity {
    password: PasswordIdentity,
}
#[derive(Deserialize)]
struct PasswordIdentity {
    user: User,
}
#[derive(Deserialize)]
struct User {
    name: String,
    password: String,
    domain: Domain,
}
#[derive(Deserialize)]
struct Domain {
    name: String,
}
#[derive(Deserialize)]
struct Scope {
    project: Project,
}
#[derive(Deserialize)]
struct Project {
    id: String,
}

fn iam_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}, "error_code": code, "error_msg": message});
    (status, axum::Json(body)).into_response()
}

/// `POST /v3/auth/tokens`.
pub(crate) async fn issue_token(
    State(shared): State<Arc<Shared>>,
    _headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<AuthBody>(&body) else {
        return iam_error(StatusCode::BAD_REQUEST, "IAM.0001", "bad request body");
    };
    let iam = &shared.iam;
    let user = &body.auth.identity.password.user;
    if user.name != iam.user || user.password != iam.password || user.domain.name != iam.domain {
        bump(&shared.counters.auth_failures);
        return iam_error(
            StatusCode::UNAUTHORIZED,
            "IAM.0002",
            "The username or password is wrong.",
        );
    }
    if body.auth.scope.project.id != shared.project_id {
        return iam_error(StatusCode::BAD_REQUEST, "IAM.0003", "project not found");
    }
    let token = format!("MIISIM{}", hex::encode(rand::random::<[u8; 24]>()));
    let expires = chrono::Utc::now() + iam.token_ttl;
    iam.tokens
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(token.clone(), expires.timestamp_millis());
    bump(&shared.counters.tokens_issued);
    let body = serde_json::json!({"token": {
        "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "methods": ["password"],
        "project": {"id": shared.project_id},
    }});
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = token.parse() {
        response.headers_mut().insert("x-subject-token", value);
    }
    response
}
