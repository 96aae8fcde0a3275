//! Archive keys: the configurable layout template and the sanitising of ids.
//!
//! Whatever the API returns as a job id, name or task id, a rendered key is a
//! relative path of plain segments (`[A-Za-z0-9._-]`, never `.` or `..`), so no key
//! can leave the archive root. A value that had to be changed gets a short hash of
//! its original spelling appended, so two different ids never share a key.

use super::LogMeta;
use sha2::{Digest, Sha256};
use std::fmt;

/// A relative, `/`-separated key under the archive root.
///
/// A key rendered by [`KeyLayout::render`] also remembers the job and task it was
/// rendered for, so storage can label the object with them (S3 user metadata)
/// without every caller passing them along. Equality, hashing and display look at
/// the key string only.
#[derive(Clone)]
pub struct ArchiveKey {
    key: String,
    origin: Option<LogMeta>,
}

impl ArchiveKey {
    fn new(key: String) -> ArchiveKey {
        ArchiveKey { key, origin: None }
    }

    /// Accepts a key read back from the index, re-checking that it stays inside the root.
    pub fn from_stored(s: &str) -> Option<ArchiveKey> {
        let ok = !s.is_empty()
            && !s.starts_with('/')
            && s.split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
        ok.then(|| ArchiveKey::new(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The job and task this key was rendered for, if it was rendered here.
    pub fn origin(&self) -> Option<&LogMeta> {
        self.origin.as_ref()
    }

    /// The same key with `suffix` appended to its last segment (e.g. `.zst`).
    pub fn with_suffix(&self, suffix: &str) -> ArchiveKey {
        ArchiveKey {
            key: format!("{}{suffix}", self.key),
            origin: self.origin.clone(),
        }
    }
}

impl PartialEq for ArchiveKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ArchiveKey {}

impl std::hash::Hash for ArchiveKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArchiveKey").field(&self.key).finish()
    }
}

impl fmt::Display for ArchiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// The values a layout template may use.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    /// The source's name in the config (`default` for the `[modelarts]` form).
    pub source: &'a str,
    /// The source's region; empty when it has none (a layout using `{region}`
    /// is only accepted when every source has one).
    pub region: &'a str,
    pub project_id: &'a str,
    pub job_id: &'a str,
    pub job_name: &'a str,
    pub task_id: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Source,
    Region,
    ProjectId,
    JobId,
    JobName,
    TaskId,
}

/// A parsed `[storage] layout` template, e.g. `{project_id}/{job_id}/{task_id}.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "unknown placeholder {{{0}}} (known: source, region, project_id, job_id, job_name, task_id)"
    )]
    UnknownPlaceholder(String),
    #[error("unclosed `{{`")]
    Unclosed,
    #[error("must contain {{job_id}} and {{task_id}} so that every task gets its own key")]
    NotUnique,
    #[error("must be a relative path without empty, `.` or `..` segments")]
    BadPath,
}

impl KeyLayout {
    pub fn parse(template: &str) -> Result<KeyLayout, LayoutError> {
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or(LayoutError::Unclosed)? + open;
            pieces.push(match &rest[open + 1..close] {
                "source" => Piece::Source,
                "region" => Piece::Region,
                "project_id" => Piece::ProjectId,
                "job_id" => Piece::JobId,
                "job_name" => Piece::JobName,
                "task_id" => Piece::TaskId,
                other => return Err(LayoutError::UnknownPlaceholder(other.to_owned())),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        if !pieces.contains(&Piece::JobId) || !pieces.contains(&Piece::TaskId) {
            return Err(LayoutError::NotUnique);
        }
        // Check the path shape with stand-in values: placeholders never add a `/`.
        let sample = KeyLayout {
            pieces: pieces.clone(),
        }
        .render_raw(KeyParts {
            source: "s",
            region: "r",
            project_id: "p",
            job_id: "j",
            job_name: "n",
            task_id: "t",
        });
        if ArchiveKey::from_stored(&sample).is_none() || template.contains('\\') {
            return Err(LayoutError::BadPath);
        }
        Ok(KeyLayout { pieces })
    }

    /// Whether keys hold the source's name: then two sources never share a key.
    pub fn uses_source(&self) -> bool {
        self.pieces.contains(&Piece::Source)
    }

    /// Whether keys hold the source's region.
    pub fn uses_region(&self) -> bool {
        self.pieces.contains(&Piece::Region)
    }

    fn render_raw(&self, parts: KeyParts<'_>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Source => out.push_str(parts.source),
                Piece::Region => out.push_str(parts.region),
                Piece::ProjectId => out.push_str(parts.project_id),
                Piece::JobId => out.push_str(parts.job_id),
                Piece::JobName => out.push_str(parts.job_name),
                Piece::TaskId => out.push_str(parts.task_id),
            }
        }
        out
    }

    /// Renders the key for one task, sanitising every value.
    pub fn render(&self, parts: KeyParts<'_>) -> ArchiveKey {
        let key = self.render_raw(KeyParts {
            source: &sanitize(parts.source),
            region: &sanitize(parts.region),
            project_id: &sanitize(parts.project_id),
            job_id: &sanitize(parts.job_id),
            job_name: &sanitize(parts.job_name),
            task_id: &sanitize(parts.task_id),
        });
        ArchiveKey {
            key,
            origin: Some(LogMeta {
                job_id: parts.job_id.to_owned(),
                task_id: parts.task_id.to_owned(),
            }),
        }
    }
}

impl KeyLayout {
    /// The key of a job-level document (`job.json`, `events.json`,
    /// `metrics.json`), next to the job's logs: inside the job's own folder when
    /// the template gives the job one (a folder segment holds `{job_id}`), else
    /// beside the logs as `<job_id>.<name>`. Sanitised like [`KeyLayout::render`].
    pub fn render_job_file(&self, parts: KeyParts<'_>, name: &str) -> ArchiveKey {
        // Stand-ins no sanitised value contains, to find where job and task land.
        const JOB: &str = "\u{1}";
        const TASK: &str = "\u{0}";
        let job_id = sanitize(parts.job_id);
        let marked = self.render_raw(KeyParts {
            source: &sanitize(parts.source),
            region: &sanitize(parts.region),
            project_id: &sanitize(parts.project_id),
            job_id: JOB,
            job_name: &sanitize(parts.job_name),
            task_id: TASK,
        });
        let segments: Vec<&str> = marked.split('/').collect();
        let task_at = segments
            .iter()
            .position(|s| s.contains(TASK))
            .unwrap_or(segments.len());
        let folder = &segments[..task_at];
        let mut key = folder.join("/");
        if !key.is_empty() {
            key.push('/');
        }
        if folder.iter().any(|s| s.contains(JOB)) {
            key.push_str(&sanitize(name));
        } else {
            key.push_str(&format!("{JOB}.{}", sanitize(name)));
        }
        ArchiveKey {
            key: key.replace(JOB, &job_id),
            origin: Some(LogMeta {
                job_id: parts.job_id.to_owned(),
                task_id: String::new(),
            }),
        }
    }
}

/// Longest sanitised value kept before hashing, to stay far below NAME_MAX (255).
const MAX_SEGMENT: usize = 100;

/// Maps any string onto `[A-Za-z0-9._-]+`, never `.` or `..`; a changed value gets
/// `~` plus 8 hex digits of its SHA-256 appended so distinct inputs stay distinct.
pub fn sanitize(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_SEGMENT)
        .collect();
    let dots_only = clean.chars().all(|c| c == '.');
    if clean == value && !dots_only {
        return clean;
    }
    let digest = hex::encode(Sha256::digest(value.as_bytes()));
    let stem = if dots_only { "_".to_owned() } else { clean };
    format!("{stem}~{}", &digest[..8])
}

/// The ids a key was rendered from, when they can be read back from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// Empty when the layout does not name the source (one source).
    pub source: String,
    pub region: String,
    pub project_id: String,
    pub job_id: String,
    pub job_name: String,
    pub task_id: String,
}

impl KeyLayout {
    /// Reads the ids back from a log's key (without a compression suffix), for
    /// `index rebuild` adopting an object that no manifest names. Only exact
    /// answers: `None` when the key does not fit the layout, when a value was
    /// changed by sanitising (its original spelling is lost), or when the ids
    /// found do not render to the same key.
    pub fn parse_key(&self, key: &str) -> Option<ParsedKey> {
        // A placeholder used twice gets a numbered group each time (regex
        // refuses repeated names); the render check below makes them agree.
        let mut uses = std::collections::HashMap::<char, usize>::new();
        let mut pattern = String::from("^");
        for piece in &self.pieces {
            let name = match piece {
                Piece::Literal(s) => {
                    pattern.push_str(&regex::escape(s));
                    continue;
                }
                Piece::Source => 's',
                Piece::Region => 'r',
                Piece::ProjectId => 'p',
                Piece::JobId => 'j',
                Piece::JobName => 'n',
                Piece::TaskId => 't',
            };
            let n = uses.entry(name).or_default();
            *n += 1;
            pattern.push_str(&format!("(?P<{name}{n}>[A-Za-z0-9._-]+)"));
        }
        pattern.push('$');
        let captures = regex::Regex::new(&pattern).ok()?.captures(key)?;
        let value = |name: &str| {
            captures
                .name(&format!("{name}1"))
                .map(|m| m.as_str().to_owned())
        };
        let parsed = ParsedKey {
            source: value("s").unwrap_or_default(),
            region: value("r").unwrap_or_default(),
            project_id: value("p").unwrap_or_default(),
            job_id: value("j")?,
            job_name: value("n").unwrap_or_default(),
            task_id: value("t")?,
        };
        let rendered = self.render(KeyParts {
            source: &parsed.source,
            region: &parsed.region,
            project_id: &parsed.project_id,
            job_id: &parsed.job_id,
            job_name: &parsed.job_name,
            task_id: &parsed.task_id,
        });
        let exact = [
            &parsed.source,
            &parsed.region,
            &parsed.project_id,
            &parsed.job_id,
            &parsed.job_name,
            &parsed.task_id,
        ]
        .iter()
        .all(|v| v.is_empty() || sanitize(v) == **v);
        (exact && rendered.as_str() == key).then_some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts<'a>(job_id: &'a str, task_id: &'a str) -> KeyParts<'a> {
        KeyParts {
            source: "eu",
            region: "eu-west-101",
            project_id: "proj",
            job_id,
            job_name: "name",
            task_id,
        }
    }

    #[test]
    fn source_and_region_placeholders_render() {
        let layout = KeyLayout::parse("{source}/{region}/{job_id}/{task_id}.log").unwrap();
        assert!(layout.uses_source() && layout.uses_region());
        assert_eq!(
            layout.render(parts("j", "t")).as_str(),
            "eu/eu-west-101/j/t.log"
        );
        let default = KeyLayout::parse(crate::config::defaults::LAYOUT).unwrap();
        assert!(!default.uses_source() && !default.uses_region());
    }

    #[test]
    fn default_layout_renders() {
        let layout = KeyLayout::parse(crate::config::defaults::LAYOUT).unwrap();
        assert_eq!(
            layout.render(parts("j1", "worker-0")).as_str(),
            "proj/j1/worker-0.log"
        );
    }

    #[test]
    fn job_files_go_into_the_job_folder_or_beside_the_logs() {
        let file = |template: &str| {
            KeyLayout::parse(template)
                .unwrap()
                .render_job_file(parts("j/1", "worker-0"), "job.json")
                .as_str()
                .to_owned()
        };
        let j = sanitize("j/1");
        assert_eq!(
            file("{project_id}/{job_id}/{task_id}.log"),
            format!("proj/{j}/job.json")
        );
        assert_eq!(
            file("{project_id}/{job_id}-{task_id}.log"),
            format!("proj/{j}.job.json")
        );
        assert_eq!(file("{job_id}_{task_id}"), format!("{j}.job.json"));
        assert_eq!(
            file("logs/{job_name}--{job_id}/{task_id}/out.log"),
            format!("logs/name--{j}/job.json")
        );
        for t in ["{project_id}/{job_id}/{task_id}.log", "{job_id}-{task_id}"] {
            assert!(ArchiveKey::from_stored(&file(t)).is_some(), "{t}");
        }
    }

    #[test]
    fn layout_errors() {
        assert_eq!(
            KeyLayout::parse("{job_id}.log"),
            Err(LayoutError::NotUnique)
        );
        assert_eq!(
            KeyLayout::parse("{job}/{task_id}"),
            Err(LayoutError::UnknownPlaceholder("job".into()))
        );
        assert_eq!(
            KeyLayout::parse("{job_id/{task_id}"),
            Err(LayoutError::UnknownPlaceholder("job_id/{task_id".into()))
        );
        assert_eq!(
            KeyLayout::parse("{job_id}/{task_id"),
            Err(LayoutError::Unclosed)
        );
        for bad in [
            "/{job_id}/{task_id}",
            "../{job_id}/{task_id}",
            "{job_id}//{task_id}",
            "{job_id}/./{task_id}",
        ] {
            assert_eq!(KeyLayout::parse(bad), Err(LayoutError::BadPath), "{bad}");
        }
    }

    #[test]
    fn hostile_ids_stay_inside_the_root() {
        let layout = KeyLayout::parse("{job_id}/{task_id}.log").unwrap();
        for (job, task) in [
            ("..", "x"),
            ("../../etc", "passwd"),
            ("a/b", "c"),
            (".", ".."),
            ("", "w"),
            ("j", "/abs"),
        ] {
            let key = layout.render(parts(job, task));
            assert!(
                ArchiveKey::from_stored(key.as_str()).is_some(),
                "{job:?}/{task:?} -> {key}"
            );
            assert_eq!(key.as_str().split('/').count(), 2, "{key}");
        }
    }

    #[test]
    fn sanitize_keeps_distinct_ids_distinct() {
        assert_eq!(sanitize("worker-0"), "worker-0");
        assert_ne!(sanitize("a/b"), sanitize("a_b"));
        assert_ne!(sanitize("a b"), sanitize("a/b"));
        assert!(sanitize(&"x".repeat(1000)).len() < 120);
    }

    /// GUARD: ids come back from a key only when they are exact.
    #[test]
    fn keys_parse_back_to_their_ids() {
        let layout = KeyLayout::parse("{project_id}/{job_name}--{job_id}/{task_id}.log").unwrap();
        let key = layout.render(KeyParts {
            source: "default",
            region: "",
            project_id: "p",
            job_id: "j-1",
            job_name: "train",
            task_id: "worker-0",
        });
        let parsed = layout.parse_key(key.as_str()).unwrap();
        assert_eq!(parsed.job_id, "j-1");
        assert_eq!(parsed.task_id, "worker-0");
        assert_eq!(parsed.job_name, "train");
        let by_source = KeyLayout::parse("{source}/{region}/{job_id}/{task_id}.log").unwrap();
        let key = by_source.render(KeyParts {
            source: "prod",
            region: "cn-north-4",
            project_id: "p",
            job_id: "j-1",
            job_name: "train",
            task_id: "worker-0",
        });
        let parsed = by_source.parse_key(key.as_str()).unwrap();
        assert_eq!(
            (parsed.source.as_str(), parsed.region.as_str()),
            ("prod", "cn-north-4")
        );
        // A sanitised id cannot be read back.
        let key = layout.render(KeyParts {
            source: "default",
            region: "",
            project_id: "p",
            job_id: "j",
            job_name: "n",
            task_id: "a/b",
        });
        assert_eq!(layout.parse_key(key.as_str()), None);
        assert_eq!(layout.parse_key("p/other"), None);
        let twice = KeyLayout::parse("{job_id}/{job_id}-{task_id}").unwrap();
        assert_eq!(twice.parse_key("a/a-t").unwrap().task_id, "t");
        assert_eq!(twice.parse_key("a/b-t"), None);
    }

    proptest! {
        #[test]
        fn sanitize_is_always_a_safe_segment(s in ".*") {
            let out = sanitize(&s);
            prop_assert!(!out.is_empty() && out != "." && out != "..");
            prop_assert!(out.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '~')));
        }
    }
}
