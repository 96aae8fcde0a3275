//! Where a pass keeps its listed jobs' records until it archives them.
//!
//! A record (the redacted job object, a few KB of JSON) is read when the job is
//! listed but archived only at the end of the pass, after every log (ModelArts
//! deletes logs, so logs come first). Held in memory, the records of every
//! listed job made the pass's memory grow by about 2.5 KB per job. They wait
//! instead in an unnamed file beside the index (gone with the process, even
//! after a crash); memory keeps only where each one is. When the file cannot be made or written, records stay in
//! memory as before: a pass never fails for want of this file.

use crate::model::{Job, JobId, JobRecord};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// The records of one source's listed jobs, on disk.
pub(super) struct RecordSpill {
    /// `None` once writing failed (or the file could not be made).
    file: Option<File>,
    /// Where the next record goes.
    end: u64,
    spilled: HashMap<JobId, Spilled>,
}

/// Where a record is on disk: its fields (serialised, without the JSON),
/// then its JSON. Memory keeps only this (16 bytes) per job: at 125,000
/// listed jobs, the fields alone held in memory were about 40 MiB.
struct Spilled {
    offset: u64,
    fields_len: u32,
    json_len: u32,
}

impl RecordSpill {
    /// A spill file in `dir` (the index's folder).
    pub(super) fn new(dir: &Path) -> RecordSpill {
        let file = tempfile::tempfile_in(dir)
            .inspect_err(|e| {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot make a file for the job records of the pass; keeping them in memory");
            })
            .ok();
        RecordSpill {
            file,
            end: 0,
            spilled: HashMap::new(),
        }
    }

    /// Moves the job's record to the file; the job keeps its planning fields.
    /// A job listed twice (a retried search) keeps its latest record.
    pub(super) fn keep(&mut self, mut job: Job) -> Job {
        let Some(file) = &self.file else {
            return job;
        };
        let Some(record) = job.record.take() else {
            return job;
        };
        let mut fields = Arc::unwrap_or_clone(record);
        let json = std::mem::take(&mut fields.json);
        let spilled = write_record(file, self.end, &fields, &json);
        match spilled {
            Ok(spilled) => {
                self.end += u64::from(spilled.fields_len) + u64::from(spilled.json_len);
                self.spilled.insert(job.id.clone(), spilled);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the job records of the pass to their file; keeping them in memory");
                self.file = None;
                fields.json = json;
                job.record = Some(Arc::new(fields));
            }
        }
        job
    }

    /// Drops what is kept for a job the pass will not archive (a sealed one).
    pub(super) fn forget(&mut self, job: &JobId) {
        self.spilled.remove(job);
    }

    /// Whether the job has a record, here or with it.
    pub(super) fn has_record(&self, job: &Job) -> bool {
        job.record.is_some() || self.spilled.contains_key(&job.id)
    }

    /// Gives the job its record back (a read of a few KB, from the page cache
    /// in practice). A record that cannot be read is left out of this pass
    /// (logged; it is read again from the source next pass).
    pub(super) fn restore(&mut self, mut job: Job) -> Job {
        let Some(spilled) = self.spilled.remove(&job.id) else {
            return job;
        };
        match self.read_back(&spilled) {
            Ok(record) => job.record = Some(Arc::new(record)),
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "job record not read back; archiving it next pass");
            }
        }
        job
    }

    fn read_back(&self, spilled: &Spilled) -> std::io::Result<JobRecord> {
        let Some(file) = &self.file else {
            return Err(std::io::Error::other("the file was closed"));
        };
        let fields_len = spilled.fields_len as usize;
        let mut bytes = vec![0; fields_len + spilled.json_len as usize];
        file.read_exact_at(&mut bytes, spilled.offset)?;
        let json = bytes.split_off(fields_len);
        let mut record: JobRecord = serde_json::from_slice(&bytes)?;
        record.json = String::from_utf8(json).map_err(std::io::Error::other)?;
        Ok(record)
    }
}

/// Appends a record at `at`: its fields, then its JSON, in one write (a
/// failed write leaves no record half-described: `end` does not move).
fn write_record(file: &File, at: u64, fields: &JobRecord, json: &str) -> std::io::Result<Spilled> {
    let mut bytes = serde_json::to_vec(fields)?;
    let fields_len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let json_len = u32::try_from(json.len()).map_err(std::io::Error::other)?;
    bytes.extend_from_slice(json.as_bytes());
    file.write_all_at(&bytes, at)?;
    Ok(Spilled {
        offset: at,
        fields_len,
        json_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobPhase, TaskId};

    fn job(id: &str, json: &str) -> Job {
        Job {
            id: JobId::from(id),
            name: "n".into(),
            phase: JobPhase::Running,
            created_at_ms: 1,
            ended_at_ms: None,
            tasks: vec![TaskId::from("worker-0")],
            record: Some(Arc::new(JobRecord {
                json: json.to_owned(),
                user_name: Some("u".into()),
                flavor: None,
                node_count: Some(2),
                engine: None,
                start_time_ms: 5,
                duration_ms: 6,
            })),
        }
    }

    /// GUARD: records kept on disk come back exactly, each to its job; a job
    /// listed twice gets its latest record.
    #[test]
    fn records_come_back_as_they_went() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = RecordSpill::new(dir.path());
        let a = job("a", r#"{"a":1}"#);
        let b = job("b", r#"{"b":"é"}"#);
        let kept_a = spill.keep(a.clone());
        let _ = spill.keep(job("b", r#"{"old":true}"#));
        let kept_b = spill.keep(b.clone());
        assert!(kept_a.record.is_none() && kept_b.record.is_none());
        assert!(spill.has_record(&kept_a));
        assert_eq!(spill.restore(kept_b), b);
        assert_eq!(spill.restore(kept_a), a);
        let plain = job("c", "{}");
        assert_eq!(spill.restore(plain.clone()), plain);
    }

    /// GUARD: without a file, records stay with their jobs.
    #[test]
    fn without_a_file_records_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = RecordSpill::new(&dir.path().join("missing"));
        let a = job("a", "{}");
        let kept = spill.keep(a.clone());
        assert_eq!(kept, a);
        assert_eq!(spill.restore(kept), a);
    }
}
