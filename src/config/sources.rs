//! Where jobs come from: the single `[modelarts]` + `[jobs]` form (one source
//! named [`DEFAULT_SOURCE`]) or `[sources.<name>]` tables, each with its own
//! endpoint, project, secrets, rate cap and job selection
//! (`[sources.<name>.jobs]`). Also the rules that keep sources apart in the
//! archive: names that are safe in keys, labels and environment variables, and
//! a key layout under which two sources never write the same key.

use super::*;
use std::collections::BTreeMap;

pub use crate::model::DEFAULT_SOURCE;

/// The default layout when there is more than one source: the single-source
/// default under a folder per source.
pub const MULTI_SOURCE_LAYOUT: &str = "{source}/{project_id}/{job_id}/{task_id}.log";

/// Longest source name: it is a key segment, a metric label and part of
/// environment variable names.
const MAX_NAME: usize = 32;

/// One source, validated: where its jobs are and which of them to archive.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The client's settings; its `name` is the source's name.
    pub modelarts: ModelArtsConfig,
    pub jobs: JobsConfig,
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        &self.modelarts.name
    }
}

/// The sources of the file: either form, never both.
pub(super) fn validate(
    modelarts: Option<ModelArtsSection>,
    jobs: Option<JobsSection>,
    tables: BTreeMap<String, toml::Table>,
    base: &Path,
) -> Result<Vec<SourceConfig>, ConfigError> {
    if tables.is_empty() {
        let Some(modelarts) = modelarts else {
            return Err(invalid(
                "modelarts",
                "missing: add a [modelarts] table (one project), or one [sources.<name>] table per project",
            ));
        };
        return Ok(vec![SourceConfig {
            modelarts: modelarts.validate(
                base,
                DEFAULT_SOURCE,
                SecretNames::Shared,
                "modelarts",
            )?,
            jobs: jobs.unwrap_or_default().validate("jobs")?,
        }]);
    }
    if modelarts.is_some() {
        return Err(invalid(
            "modelarts",
            "use either [modelarts] (one project) or [sources.<name>] tables, not both: \
             move [modelarts] into [sources.default] and [jobs] into [sources.default.jobs]",
        ));
    }
    if jobs.is_some() {
        return Err(invalid(
            "jobs",
            "with [sources.<name>] tables each source selects its jobs in [sources.<name>.jobs]; \
             move [jobs] there",
        ));
    }
    tables
        .into_iter()
        .map(|(name, table)| source(name, table, base))
        .collect()
}

/// One `[sources.<name>]` table: its `jobs` table apart, the rest is a
/// `[modelarts]` table.
fn source(name: String, mut table: toml::Table, base: &Path) -> Result<SourceConfig, ConfigError> {
    let prefix = format!("sources.{name}");
    check_name(&name, &prefix)?;
    let parse_error = |e: toml::de::Error| ConfigError::Parse {
        path: PathBuf::new(),
        message: format!("[{prefix}]: {}", e.message()),
    };
    let jobs: JobsSection = match table.remove("jobs") {
        Some(value) => value.try_into().map_err(parse_error)?,
        None => JobsSection::default(),
    };
    let modelarts: ModelArtsSection = toml::Value::Table(table).try_into().map_err(parse_error)?;
    Ok(SourceConfig {
        modelarts: modelarts.validate(base, &name, SecretNames::PerSource, &prefix)?,
        jobs: jobs.validate(&format!("{prefix}.jobs"))?,
    })
}

/// A name that is the same in a key segment, a metric label, a credential
/// file name and (upper-cased, `-` → `_`) an environment variable.
fn check_name(name: &str, key: &str) -> Result<(), ConfigError> {
    let ok = (1..=MAX_NAME).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key.to_owned(),
            format!(
                "source name {name:?} must be 1-{MAX_NAME} characters of a-z, 0-9 and -, starting with a letter"
            ),
        ))
    }
}

/// The region given in `key`, else the one in an endpoint
/// `https://modelarts.<region>.<domain>`; `None` when neither says.
pub(super) fn region(
    given: Option<String>,
    endpoint: &Url,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    if let Some(region) = given {
        let ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(invalid(
                key.to_owned(),
                format!("{region:?} is not a region id such as \"cn-north-4\""),
            ));
        }
        return Ok(Some(region));
    }
    let host = endpoint.host_str().unwrap_or_default();
    let labels: Vec<&str> = host.split('.').collect();
    Ok(match labels.as_slice() {
        ["modelarts", region, _, ..] if region.bytes().any(|b| b.is_ascii_alphabetic()) => {
            Some((*region).to_owned())
        }
        _ => None,
    })
}

/// Keeps sources apart in the archive: with more than one source every key
/// must hold the source's name (the default layout then gets a folder per
/// source), and `{region}` needs every source to know its region.
pub(super) fn check_layout(
    sources: &[SourceConfig],
    written: &str,
    storage: &mut StorageConfig,
) -> Result<(), ConfigError> {
    if sources.len() > 1 && !storage.layout.uses_source() {
        if written != defaults::LAYOUT {
            return Err(invalid(
                "storage.layout",
                "with more than one source the layout must contain {source}, so that two sources never write the same key",
            ));
        }
        storage.layout =
            crate::storage::KeyLayout::parse(MULTI_SOURCE_LAYOUT).expect("the layout is valid");
    }
    if storage.layout.uses_region()
        && let Some(s) = sources.iter().find(|s| s.modelarts.region.is_none())
    {
        return Err(invalid(
            s.modelarts.config_key("region"),
            "the layout uses {region} but the endpoint does not name one; set it",
        ));
    }
    Ok(())
}
