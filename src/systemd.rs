//! What malog knows about systemd: the `sd_notify` protocol (READY, STATUS,
//! RELOADING, STOPPING, WATCHDOG, EXTEND_TIMEOUT). Credentials passed with
//! `LoadCredential=` are read by [`crate::source::Credentials::resolve`].
//!
//! Everything here is a no-op outside systemd: without `$NOTIFY_SOCKET`
//! notifications go nowhere.

use sd_notify::NotifyState;
use std::time::Duration;

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
