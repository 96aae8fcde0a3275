//! The ModelArts API, read-only: request signing, job discovery, job details and
//! temporary log links. It knows nothing of storage or the index.

pub mod auth;
pub mod client;
pub mod error;
mod job_object;
pub mod limiter;
pub mod redact;
pub mod settings;
pub mod sign;

pub use auth::{Credentials, CredentialsError};
pub use client::{JobFilter, LogLink, ModelArtsClient};
pub use error::SourceError;
pub use settings::{AuthMethod, ModelArtsConfig};

/// About how long ModelArts keeps a training job's logs after it ends.
pub const MODELARTS_LOG_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86400);
pub use redact::Redaction;
