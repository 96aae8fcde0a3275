//! The ModelArts API, read-only: request signing, job discovery, job details and
//! temporary log links. It knows nothing of storage or the index.

pub mod auth;
pub mod client;
pub mod error;
pub mod redact;
pub mod sign;

pub use auth::{Credentials, CredentialsError};
pub use client::{JobFilter, LogLink, ModelArtsClient};
pub use error::SourceError;
pub use redact::Redaction;
