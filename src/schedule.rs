//! The `[schedule] cron` expression: parsing, and the instants it fires at.
//!
//! This is the only place the expression is parsed (with croner: seconds field
//! required, day-of-month AND day-of-week). The daemon asks it for each next
//! instant and has `tokio-cron-scheduler` fire a tick then, so `malog status`
//! ("next pass"), the catch-up rule ("missed a period") and the ticks agree.
//!
//! Semantics, as documented in `config.example.toml`:
//! - six fields, seconds first: `sec min hour day-of-month month day-of-week`
//!   (an optional seventh is the year); a classic five-field crontab line is
//!   accepted and gets `0` seconds prepended;
//! - times are UTC;
//! - when both day-of-month and day-of-week are restricted, *both* must match
//!   (classic cron runs when either matches).
//!
//! No I/O here; the clock is always passed in.

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use std::time::Duration;

/// A validated cron schedule, in the six-field form the scheduler takes.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    cron: Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl std::fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.expr)
    }
}

impl CronSchedule {
    /// Parses an expression; `now` is used only to check that it fires at all.
    pub fn parse(text: &str, now: DateTime<Utc>) -> Result<CronSchedule, String> {
        let text = text.trim();
        let fields = text.split_whitespace().count();
        let expr = if fields == 5 && !text.starts_with('@') {
            format!("0 {text}")
        } else {
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&expr)
            .map_err(|e| {
                format!(
                    "{text:?} is not a cron expression ({e}); expected 6 fields \
                     \"sec min hour day-of-month month day-of-week\" (UTC), e.g. \"0 15 * * * *\""
                )
            })?;
        let schedule = CronSchedule { expr, cron };
        if schedule.next_after(now).is_none() {
            return Err(format!("{text:?} never fires"));
        }
        Ok(schedule)
    }

    /// The six-field expression handed to the scheduler.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first instant strictly after `t` at which the schedule fires.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The schedule's period as seen from `now`: the gap between its next two
    /// firings. For irregular schedules (weekdays only, say) this is the gap that
    /// is coming up next.
    pub fn period_after(&self, now: DateTime<Utc>) -> Option<Duration> {
        let first = self.next_after(now)?;
        let second = self.next_after(first)?;
        (second - first).to_std().ok()
    }

    /// Whether a pass should run at start-up: never a successful pass, or the last
    /// one started more than one period before `now` (the machine was off, or the
    /// daemon was stopped, across at least one firing).
    pub fn missed(&self, last_success: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        let Some(last) = last_success else {
            return true;
        };
        let Some(period) = self.period_after(now) else {
            return false;
        };
        let age = (now - last).to_std().unwrap_or(Duration::ZERO);
        age > period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const NOW: &str = "2026-03-02T10:20:30Z"; // a Monday

    #[test]
    fn six_fields_fire_in_utc() {
        let s = CronSchedule::parse("0 15 * * * *", at(NOW)).unwrap();
        assert_eq!(
            s.next_after(at(NOW)),
            Some(at("2026-03-02T10:15:00Z") + chrono::Duration::hours(1))
        );
        assert_eq!(s.period_after(at(NOW)), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn five_fields_get_zero_seconds() {
        let s = CronSchedule::parse("30 2 * * *", at(NOW)).unwrap();
        assert_eq!(s.expr(), "0 30 2 * * *");
        assert_eq!(s.next_after(at(NOW)), Some(at("2026-03-03T02:30:00Z")));
    }

    #[test]
    fn nicknames() {
        let s = CronSchedule::parse("@hourly", at(NOW)).unwrap();
        assert_eq!(s.next_after(at(NOW)), Some(at("2026-03-02T11:00:00Z")));
    }

    #[test]
    fn every_second() {
        let s = CronSchedule::parse("* * * * * *", at(NOW)).unwrap();
        assert_eq!(s.next_after(at(NOW)), Some(at("2026-03-02T10:20:31Z")));
        assert_eq!(s.period_after(at(NOW)), Some(Duration::from_secs(1)));
    }

    /// GUARD: the documented difference from classic cron: day-of-month AND
    /// day-of-week must both match.
    #[test]
    fn day_of_month_and_day_of_week_must_both_match() {
        // The 1st of a month that is also a Monday: 2026-06-01.
        let s = CronSchedule::parse("0 0 0 1 * MON", at(NOW)).unwrap();
        assert_eq!(s.next_after(at(NOW)), Some(at("2026-06-01T00:00:00Z")));
    }

    #[test]
    fn bad_expressions_are_rejected() {
        for bad in ["", "every hour", "61 * * * * *", "* * * *", "0 0 0 30 2 *"] {
            assert!(CronSchedule::parse(bad, at(NOW)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missed_period_runs_at_start() {
        let s = CronSchedule::parse("0 0 * * * *", at(NOW)).unwrap();
        assert!(s.missed(None, at(NOW)));
        assert!(!s.missed(Some(at("2026-03-02T10:00:00Z")), at(NOW)));
        assert!(s.missed(Some(at("2026-03-02T09:00:00Z")), at(NOW)));
    }
}
