//! The one selection every reading command shares (`query`, `jobs`, `grep`,
//! `export`, `verify`, and later the web page): which jobs and tasks, newest
//! jobs first. It is turned into SQL here and nowhere else.

use crate::config::CreatedAfter;
use crate::model::TaskState;
use rusqlite::types::Value;

/// Which jobs and tasks a reader looks at. Empty parts select everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Jobs of these configured sources only (`--source`).
    pub sources: Vec<String>,
    /// These job ids only.
    pub jobs: Vec<String>,
    /// Job names matching this regular expression (anywhere in the name).
    pub name: Option<regex::Regex>,
    /// Jobs in one of these phases (as ModelArts spells them).
    pub phases: Vec<String>,
    /// Jobs created at or after this instant, epoch ms.
    pub since_ms: Option<i64>,
    /// Jobs created before this instant, epoch ms.
    pub until_ms: Option<i64>,
    /// Only this task of each job.
    pub task: Option<String>,
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only the newest N jobs that match.
    pub limit: Option<usize>,
    /// Skip the newest N jobs that match first (a page of the web's job list).
    pub offset: Option<usize>,
}

/// A flag that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("--name: invalid regular expression: {0}")]
    Name(String),
    #[error(
        "--{flag} {value:?}: expected a duration before now (\"7d\"), a day (\"2026-11-01\") or an RFC 3339 time"
    )]
    Time { flag: &'static str, value: String },
    #[error("--state {0:?}: expected pending, archived, failed, not_ready or lost")]
    State(String),
    #[error(
        "--phase {0:?}: expected Creating, Pending, Running, Terminating, Completed, Failed, Terminated or Abnormal"
    )]
    Phase(String),
}

/// The flags as typed, before checking.
#[derive(Debug, Clone, Default)]
pub struct SelectionFlags {
    pub sources: Vec<String>,
    pub jobs: Vec<String>,
    pub name: Option<String>,
    pub phases: Vec<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub task: Option<String>,
    pub state: Option<String>,
    pub limit: Option<usize>,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A time flag: a duration before `now_ms`, a day (midnight UTC; with
/// `whole_day` the midnight after it, so `--until 2026-11-01` includes that
/// day) or an RFC 3339 instant.
fn parse_time(
    flag: &'static str,
    value: &str,
    now_ms: i64,
    whole_day: bool,
) -> Result<i64, SelectionError> {
    let bad = || SelectionError::Time {
        flag,
        value: value.to_owned(),
    };
    let bound = CreatedAfter::parse(value).ok_or_else(bad)?;
    let is_day = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok();
    let ms = bound.bound_ms(now_ms);
    Ok(if whole_day && is_day { ms + DAY_MS } else { ms })
}

impl Selection {
    /// Checks the flags; times relative to `now_ms`.
    pub fn parse(flags: SelectionFlags, now_ms: i64) -> Result<Selection, SelectionError> {
        let name = flags
            .name
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| SelectionError::Name(e.to_string()))?;
        let state = flags
            .state
            .map(|s| TaskState::parse(&s).ok_or(SelectionError::State(s)))
            .transpose()?;
        let phases = flags
            .phases
            .into_iter()
            .map(|p| match crate::model::JobPhase::parse(&p) {
                crate::model::JobPhase::Other(_) => Err(SelectionError::Phase(p)),
                phase => Ok(phase.as_str().to_owned()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Selection {
            sources: flags.sources,
            jobs: flags.jobs,
            name,
            phases,
            since_ms: flags
                .since
                .map(|s| parse_time("since", &s, now_ms, false))
                .transpose()?,
            until_ms: flags
                .until
                .map(|s| parse_time("until", &s, now_ms, true))
                .transpose()?,
            task: flags.task,
            state,
            limit: flags.limit,
            offset: None,
        })
    }

    /// Just these jobs.
    pub fn of_jobs(jobs: Vec<String>) -> Selection {
        Selection {
            jobs,
            ..Selection::default()
        }
    }

    /// Conditions on a task row aliased `t`.
    fn task_conditions(&self, sql: &mut String, args: &mut Vec<Value>) {
        if let Some(task) = &self.task {
            sql.push_str(" AND t.task_id = ?");
            args.push(Value::Text(task.clone()));
        }
        if let Some(state) = self.state {
            sql.push_str(" AND t.state = ?");
            args.push(Value::Text(state.as_str().to_owned()));
        }
    }

    /// `WHERE …` over `jobs j` selecting the matching jobs: their own filters,
    /// and, with a task or state filter, having such a task.
    fn job_where(&self) -> (String, Vec<Value>) {
        let mut sql = String::from(" WHERE 1 = 1");
        let mut args = Vec::new();
        for (column, values) in [("j.source", &self.sources), ("j.job_id", &self.jobs)] {
            if !values.is_empty() {
                let marks = vec!["?"; values.len()].join(", ");
                sql.push_str(&format!(" AND {column} IN ({marks})"));
                args.extend(values.iter().cloned().map(Value::Text));
            }
        }
        if let Some(name) = &self.name {
            sql.push_str(" AND j.name REGEXP ?");
            args.push(Value::Text(name.as_str().to_owned()));
        }
        if !self.phases.is_empty() {
            let marks = vec!["?"; self.phases.len()].join(", ");
            sql.push_str(&format!(" AND j.phase IN ({marks})"));
            args.extend(self.phases.iter().cloned().map(Value::Text));
        }
        if let Some(since) = self.since_ms {
            sql.push_str(" AND j.created_at_ms >= ?");
            args.push(Value::Integer(since));
        }
        if let Some(until) = self.until_ms {
            sql.push_str(" AND j.created_at_ms < ?");
            args.push(Value::Integer(until));
        }
        if self.task.is_some() || self.state.is_some() {
            sql.push_str(" AND EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.job_id");
            self.task_conditions(&mut sql, &mut args);
            sql.push(')');
        }
        (sql, args)
    }

    /// The selected jobs, newest first: `SELECT <columns> FROM jobs j
    /// LEFT JOIN job_records r …` with the filters and the limit.
    pub fn jobs_sql(&self, columns: &str) -> (String, Vec<Value>) {
        let (filter, mut args) = self.job_where();
        let mut sql = format!(
            "SELECT {columns} FROM jobs j LEFT JOIN job_records r ON r.job_id = j.job_id{filter}
             ORDER BY j.created_at_ms DESC, j.job_id"
        );
        if self.limit.is_some() || self.offset.is_some() {
            // SQLite: a negative LIMIT is no limit; OFFSET needs a LIMIT.
            let limit = self.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
            sql.push_str(" LIMIT ? OFFSET ?");
            args.push(Value::Integer(limit));
            let offset = self.offset.unwrap_or(0).min(i64::MAX as usize) as i64;
            args.push(Value::Integer(offset));
        }
        (sql, args)
    }

    /// The selected tasks, newest job first then by task: `SELECT <columns>
    /// FROM tasks t JOIN jobs j …`. With a limit, the tasks of the newest N
    /// matching jobs.
    pub fn tasks_sql(&self, columns: &str, extra: &str) -> (String, Vec<Value>) {
        let (jobs, mut args) = self.jobs_sql("j.job_id");
        let mut sql = format!(
            "SELECT {columns} FROM tasks t JOIN jobs j ON j.job_id = t.job_id
             WHERE t.job_id IN ({jobs}){extra}"
        );
        self.task_conditions(&mut sql, &mut args);
        sql.push_str(" ORDER BY j.created_at_ms DESC, j.job_id, t.task_id");
        (sql, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> SelectionFlags {
        SelectionFlags::default()
    }

    #[test]
    fn times_parse_as_durations_days_and_instants() {
        let now = 10 * DAY_MS;
        let s = Selection::parse(
            SelectionFlags {
                since: Some("7d".into()),
                until: Some("1970-01-05".into()),
                ..flags()
            },
            now,
        )
        .unwrap();
        assert_eq!(s.since_ms, Some(3 * DAY_MS));
        // A day given to --until includes that whole day.
        assert_eq!(s.until_ms, Some(5 * DAY_MS));
        let s = Selection::parse(
            SelectionFlags {
                since: Some("1970-01-02T00:00:00Z".into()),
                ..flags()
            },
            now,
        )
        .unwrap();
        assert_eq!(s.since_ms, Some(DAY_MS));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let err = |f: SelectionFlags| Selection::parse(f, 0).unwrap_err().to_string();
        assert!(
            err(SelectionFlags {
                since: Some("yesterday".into()),
                ..flags()
            })
            .contains("--since")
        );
        assert!(
            err(SelectionFlags {
                name: Some("(".into()),
                ..flags()
            })
            .contains("--name")
        );
        assert!(
            err(SelectionFlags {
                state: Some("done".into()),
                ..flags()
            })
            .contains("--state")
        );
        assert!(
            err(SelectionFlags {
                phases: vec!["Done".into()],
                ..flags()
            })
            .contains("--phase")
        );
    }
}
