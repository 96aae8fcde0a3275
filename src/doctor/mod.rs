//! `malog doctor`: checks that a configuration can work before a pass depends
//! on it, and says what to fix. It owns the list of checks, their outcome
//! ([`Status`]) and how the report is printed; each check is one function in
//! [`local`] (config, secrets, systemd, index) or [`remote`] (clock, API,
//! storage), reusing the code a pass uses (credential resolver, API client,
//! storage backends, index open).
//!
//! Doctor never writes the index (it opens it read-only) and never prints a
//! secret: messages name where a secret comes from, never its value.

mod local;
mod remote;

use crate::config::Config;
use serde::Serialize;
use std::io::IsTerminal;
use std::path::Path;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// ✓
    Pass,
    /// ! works, but should be fixed.
    Warn,
    /// ✗ will not work.
    Fail,
    /// - not checked (and why is in the message).
    Skip,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
            Status::Skip => "-",
        }
    }

    /// ANSI colour of the mark on a terminal.
    fn colour(self) -> &'static str {
        match self {
            Status::Pass => "\x1b[32m",
            Status::Warn => "\x1b[33m",
            Status::Fail => "\x1b[31m",
            Status::Skip => "\x1b[2m",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Which part was checked: config, secrets, systemd, clock, api, storage, index.
    pub area: &'static str,
    pub status: Status,
    pub message: String,
    /// What to do about a ✗ or !.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(area: &'static str, status: Status, message: impl Into<String>) -> Check {
        Check {
            area,
            status,
            message: message.into(),
            fix: None,
        }
    }

    fn pass(area: &'static str, message: impl Into<String>) -> Check {
        Check::new(area, Status::Pass, message)
    }

    fn skip(area: &'static str, message: impl Into<String>) -> Check {
        Check::new(area, Status::Skip, message)
    }

    fn fail(area: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(area, Status::Fail, message).with_fix(fix)
    }

    fn warn(area: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(area, Status::Warn, message).with_fix(fix)
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// Every check that ran, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// False when the config could not be loaded (nothing else was checked).
    pub config_ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.count(Status::Fail)
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// 0 all passed (warnings allowed), 1 something failed, 2 the config is unusable.
    pub fn exit_code(&self) -> u8 {
        if !self.config_ok {
            crate::output::exit::USAGE
        } else if self.failed() > 0 {
            crate::output::exit::PARTIAL
        } else {
            crate::output::exit::OK
        }
    }
}

/// Runs every check for the config file at `config_path`.
pub async fn run(config_path: &Path) -> Report {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            return Report {
                config_ok: false,
                checks: vec![Check::fail(
                    "config",
                    e.to_string(),
                    "fix the key named above; every key is documented in config.example.toml",
                )],
            };
        }
    };
    let mut checks = vec![Check::pass(
        "config",
        format!("{} parses and validates", config_path.display()),
    )];
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    checks.extend(local::systemd(credentials_dir.as_deref()));
    let named = config.sources.len() > 1;
    for source in &config.sources {
        let (mut source_checks, credentials) =
            local::modelarts_secrets(source, credentials_dir.as_deref());
        source_checks.extend(remote::api(&config, source, credentials).await);
        // With several sources every line says which one it is about.
        for check in source_checks.iter_mut().filter(|_| named) {
            check.message = format!("source {}: {}", source.name(), check.message);
        }
        checks.extend(source_checks);
    }
    checks.extend(local::storage_secrets(&config));
    checks.extend(remote::storage(&config).await);
    checks.extend(local::index(&config.index_path));
    Report {
        config_ok: true,
        checks,
    }
}

/// Prints the report: one line per check (✓ ✗ ! -) with the fix under a ✗ or !,
/// coloured on a terminal; or JSON.
pub fn print(report: &Report, json: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        return writeln!(out);
    }
    let colour = std::io::stdout().is_terminal();
    for check in &report.checks {
        let mark = if colour {
            format!("{}{}\x1b[0m", check.status.colour(), check.status.mark())
        } else {
            check.status.mark().to_owned()
        };
        writeln!(out, "{mark} {}: {}", check.area, check.message)?;
        if let Some(fix) = &check.fix {
            writeln!(out, "    fix: {fix}")?;
        }
    }
    writeln!(
        out,
        "{} passed, {} warnings, {} failed, {} not checked",
        report.count(Status::Pass),
        report.count(Status::Warn),
        report.count(Status::Fail),
        report.count(Status::Skip)
    )
}
