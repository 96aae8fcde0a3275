//! The one mapping between the model's enums and the index's text columns:
//! `tasks.state` (`archived`, …), `tasks.job_phase` (`Completed`, …) and
//! `tasks.compression` (`none`, `zstd`). Text the enum does not know is a
//! typed error naming the column's value, never a panic.

use crate::model::{Compression, JobPhase, TaskState};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

fn unknown(what: &str, text: &str) -> FromSqlError {
    FromSqlError::Other(format!("unknown {what} {text:?} in the index").into())
}

impl ToSql for TaskState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for TaskState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        TaskState::parse(text).ok_or_else(|| unknown("task state", text))
    }
}

impl ToSql for JobPhase {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for JobPhase {
    /// Any text: a phase this version does not know is kept as [`JobPhase::Other`].
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_str().map(JobPhase::parse)
    }
}

impl ToSql for Compression {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Compression {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Compression::parse(text).ok_or_else(|| unknown("compression", text))
    }
}
