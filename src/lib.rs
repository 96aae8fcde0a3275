//! malog archives the logs of Huawei Cloud ModelArts training jobs.
//!
//! Data flows one way:
//!
//! ```text
//! config ──► source ──► plan ──► fetch ──► storage
//!  (TOML)   (ModelArts  (pure:   (bounded   (folder or S3,
//!            API, AK/SK  what to  pipeline:  zstd optional)
//!            signing)    fetch)   link→GET→      │
//!                          ▲      hash→store)    ▼
//!                          └──────────────── index (SQLite: state, sha256, validators)
//! ```
//!
//! The read side sits beside the pipeline on the same floors: [`read`] turns
//! one [`read::Selection`] of jobs and tasks into index rows, searches
//! (`grep`) and exports, and the command line only renders what it returns.
//!
//! [`run::run_once`] ties the layers together; `backfill`, `demo` and the daemon
//! all call it. Lower layers never import higher ones: `source` and `storage` know
//! nothing of `index`, and `plan` does no I/O. [`sim`] is a stand-in ModelArts + OBS
//! server used by `malog demo`, the tests and the benchmarks.

pub mod backoff;
pub mod cli;

/// `malog --version`: the package version and the commit it was built from
/// (`unknown` when built outside a git checkout without `MALOG_COMMIT`; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MALOG_COMMIT"),
    ")"
);
pub mod config;
pub mod daemon;
pub mod demo;
pub mod doctor;
pub mod fetch;
pub mod filelock;
pub mod http;
pub mod index;
pub mod manpages;
pub mod model;
pub mod output;
pub mod plan;
pub mod progress;
pub mod read;
pub mod run;
pub mod schedule;
pub mod seal;
pub mod shutdown;
pub mod sim;
pub mod source;
pub mod status;
pub mod storage;
pub mod systemd;
pub mod telemetry;
pub mod web;
