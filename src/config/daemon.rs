//! The daemon's tables: `[schedule]`, `[daemon]` and `[alerts]`.

use super::*;

/// `[schedule]`: when the daemon (`malog run`) starts a pass.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    #[serde(default = "d_cron")]
    pub cron: String,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection { cron: d_cron() }
    }
}

impl ScheduleSection {
    pub(super) fn validate(self) -> Result<ScheduleConfig, ConfigError> {
        let cron = crate::schedule::CronSchedule::parse(&self.cron, chrono::Utc::now())
            .map_err(|e| invalid("schedule.cron", e))?;
        Ok(ScheduleConfig { cron })
    }
}

/// `[daemon]`: the metrics/health listener and shutdown behaviour of `malog run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    #[serde(default = "d_listen")]
    pub listen: String,
    #[serde(default = "d_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            listen: d_listen(),
            shutdown_grace: d_shutdown_grace(),
        }
    }
}

impl DaemonSection {
    pub(super) fn validate(self) -> Result<DaemonConfig, ConfigError> {
        let listen = self.listen.parse().map_err(|_| {
            invalid(
                "daemon.listen",
                format!(
                    "{:?} is not an IP address and port, e.g. \"127.0.0.1:9731\"",
                    self.listen
                ),
            )
        })?;
        Ok(DaemonConfig {
            listen,
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// `[alerts]`: what the daemon and `malog status` warn about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    #[serde(default = "d_retention_warn_after", with = "humantime_serde")]
    pub retention_warn_after: Duration,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            retention_warn_after: d_retention_warn_after(),
        }
    }
}

impl AlertsSection {
    pub(super) fn validate(self) -> Result<AlertsConfig, ConfigError> {
        nonzero(self.retention_warn_after, "alerts.retention_warn_after")?;
        Ok(AlertsConfig {
            retention_warn_after: self.retention_warn_after,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub cron: crate::schedule::CronSchedule,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: std::net::SocketAddr,
    /// How long in-flight downloads may finish after SIGTERM before they are cancelled.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Tasks of jobs that ended longer ago than this and are not archived are at risk.
    pub retention_warn_after: Duration,
}

fn d_cron() -> String {
    defaults::CRON.to_owned()
}
fn d_listen() -> String {
    defaults::LISTEN.to_owned()
}
fn d_shutdown_grace() -> Duration {
    defaults::SHUTDOWN_GRACE
}
fn d_retention_warn_after() -> Duration {
    defaults::RETENTION_WARN_AFTER
}
