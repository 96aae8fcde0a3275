//! The ModelArts API, read-only: request signing, job discovery, job details and
//! temporary log links. It knows nothing of storage or the index.

pub mod client;
pub mod error;
pub mod sign;

pub use client::{Credentials, JobFilter, LogLink, ModelArtsClient};
pub use error::SourceError;
