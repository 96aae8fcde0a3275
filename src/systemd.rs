//! What malog knows about systemd: the `sd_notify` protocol (READY, STATUS,
//! RELOADING, STOPPING, WATCHDOG, EXTEND_TIMEOUT) and credentials passed with
//! `LoadCredential=`.
//!
//! Everything here is a no-op outside systemd: without `$NOTIFY_SOCKET`
//! notifications go nowhere, without `$CREDENTIALS_DIRECTORY` credentials come
//! from the config or the environment as before.

use crate::config::ModelArtsConfig;
use crate::source::Credentials;
use crate::source::client::CredentialsError;
use sd_notify::NotifyState;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Names of the credential files malog looks for in `$CREDENTIALS_DIRECTORY`
/// (`LoadCredential=ak:/etc/malog/ak` in the unit).
pub const CREDENTIAL_AK: &str = "ak";
pub const CREDENTIAL_SK: &str = "sk";

/// Resolves the AK/SK pair. In order: files named by `modelarts.access_key_file` /
/// `secret_key_file`; else `$CREDENTIALS_DIRECTORY/ak` and `/sk` when systemd
/// passed them; else `HUAWEICLOUD_SDK_AK` / `HUAWEICLOUD_SDK_SK`.
pub fn resolve_credentials(cfg: &ModelArtsConfig) -> Result<Credentials, CredentialsError> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    resolve_credentials_in(cfg, dir.as_deref())
}

fn resolve_credentials_in(
    cfg: &ModelArtsConfig,
    credentials_dir: Option<&Path>,
) -> Result<Credentials, CredentialsError> {
    let mut cfg = cfg.clone();
    if let Some(dir) = credentials_dir {
        let fill = |slot: &mut Option<PathBuf>, name: &str| {
            let path = dir.join(name);
            if slot.is_none() && path.is_file() {
                *slot = Some(path);
            }
        };
        fill(&mut cfg.access_key_file, CREDENTIAL_AK);
        fill(&mut cfg.secret_key_file, CREDENTIAL_SK);
    }
    Credentials::resolve(&cfg)
}

/// Sends `sd_notify` messages when running under systemd `Type=notify`.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// `WatchdogSec=` of the unit, if set for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to send WATCHDOG=1: half the unit's `WatchdogSec=`.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
            .map(|d| (d / 2).max(Duration::from_millis(100)))
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// RELOADING=1 with the monotonic timestamp systemd asks for; follow with
    /// [`Notifier::ready`].
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Asks systemd for more time in the current state (start-up retries), so a
    /// slow dependency does not trip `TimeoutStartSec=`.
    pub fn extend_timeout(&self, by: Duration) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_directory_fills_missing_key_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ak"), "AKFROMSYSTEMD\n").unwrap();
        std::fs::write(dir.path().join("sk"), "sk-from-systemd").unwrap();
        let parse = |extra: &str| {
            let text = format!(
                "[modelarts]\nendpoint = \"https://x.example\"\nproject_id = \"p\"\n{extra}\n[jobs]\ndiscover = true\n"
            );
            crate::config::Config::parse(&text, dir.path())
                .unwrap()
                .modelarts
        };
        let creds = resolve_credentials_in(&parse(""), Some(dir.path())).unwrap();
        let shown = format!("{creds:?}");
        assert!(
            shown.contains("AKFR"),
            "ak from the credentials directory: {shown}"
        );

        // A key file named in the config wins over the credentials directory.
        std::fs::write(dir.path().join("own-sk"), "  ").unwrap();
        let err = resolve_credentials_in(&parse("secret_key_file = \"own-sk\""), Some(dir.path()))
            .unwrap_err();
        assert!(err.to_string().contains("own-sk"), "{err}");
    }
}
