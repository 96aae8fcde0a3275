//! Doctor's checks of this machine: where each secret comes from (and whether
//! other users can read its file), what systemd passed in, and the index
//! (opened read-only).

use super::Check;
use crate::config::{Config, SourceConfig};
use crate::index::Index;
use crate::source::Credentials;
use crate::source::auth::{SecretOrigin, locate_secrets, readable_by_others};
use std::path::{Path, PathBuf};

/// A write-ahead log this large means checkpoints are not keeping up (a reader
/// holds it open), and every read pays for scanning it.
const HUGE_WAL: u64 = 256 * 1024 * 1024;

/// Network file systems (statfs `f_type`) on which SQLite's locking, and so the
/// index, is not safe.
const NETWORK_FILE_SYSTEMS: &[(u32, &str)] = &[
    (0x6969, "NFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x517B, "SMB"),
];

/// `$CREDENTIALS_DIRECTORY` and `$STATE_DIRECTORY`, when systemd set them.
pub(super) fn systemd(credentials_dir: Option<&Path>) -> Vec<Check> {
    let state_dirs = std::env::var_os("STATE_DIRECTORY");
    if credentials_dir.is_none() && state_dirs.is_none() {
        return vec![Check::skip(
            "systemd",
            "not run by systemd ($CREDENTIALS_DIRECTORY and $STATE_DIRECTORY are not set)",
        )];
    }
    let mut checks = Vec::new();
    if let Some(dir) = credentials_dir {
        checks.push(match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                Check::pass(
                    "systemd",
                    format!(
                        "$CREDENTIALS_DIRECTORY {} is readable and holds: {}",
                        dir.display(),
                        if names.is_empty() {
                            "nothing".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
            }
            Err(e) => Check::fail(
                "systemd",
                format!(
                    "$CREDENTIALS_DIRECTORY {} is not readable: {e}",
                    dir.display()
                ),
                "check the unit's LoadCredential= lines and that the files they name exist",
            ),
        });
    }
    if let Some(dirs) = state_dirs {
        for dir in std::env::split_paths(&dirs) {
            checks.push(state_directory(&dir));
        }
    }
    checks
}

/// Whether a file can be created and removed in the state directory.
fn state_directory(dir: &Path) -> Check {
    let probe = dir.join(format!(".malog-doctor-{}", std::process::id()));
    let result = std::fs::write(&probe, b"probe").and_then(|()| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check::pass(
            "systemd",
            format!("state directory {} is writable", dir.display()),
        ),
        Err(e) => Check::fail(
            "systemd",
            format!("state directory {} is not writable: {e}", dir.display()),
            "check StateDirectory= in the unit and the ownership of the folder",
        ),
    }
}

/// Where each secret of `[modelarts] auth` comes from, and the credentials
/// themselves when all could be read (for the API checks).
pub(super) fn modelarts_secrets(
    source: &SourceConfig,
    credentials_dir: Option<&Path>,
) -> (Vec<Check>, Option<Credentials>) {
    let mut checks = Vec::new();
    let mut missing = false;
    for secret in locate_secrets(&source.modelarts, credentials_dir) {
        let (file, from) = match &secret.origin {
            SecretOrigin::ConfigFile(path) => (Some(path), format!("file {}", path.display())),
            SecretOrigin::CredentialsDir(path) => (
                Some(path),
                format!(
                    "systemd credential {} ($CREDENTIALS_DIRECTORY)",
                    path.display()
                ),
            ),
            SecretOrigin::Env(name) => (None, format!("environment variable {name}")),
            SecretOrigin::Missing if secret.required => {
                missing = true;
                checks.push(Check::fail(
                    "secrets",
                    format!("no {}", secret.what),
                    secret.how_to_provide.clone(),
                ));
                continue;
            }
            // An optional secret (the security token of temporary keys) not given.
            SecretOrigin::Missing => continue,
        };
        checks.push(Check::pass(
            "secrets",
            format!("{} found: {from}", secret.what),
        ));
        if let Some(path) = file {
            checks.extend(shared_file_warning(secret.what, path));
        }
    }
    if missing {
        return (checks, None);
    }
    match Credentials::resolve_in(&source.modelarts, credentials_dir) {
        Ok(credentials) => (checks, Some(credentials)),
        Err(e) => {
            checks.push(Check::fail(
                "secrets",
                e.to_string(),
                "the file must be readable by the user malog runs as and hold the secret on one line",
            ));
            (checks, None)
        }
    }
}

/// A warning when other users can read a secret file.
fn shared_file_warning(what: &str, path: &Path) -> Option<Check> {
    readable_by_others(path).then(|| {
        Check::warn(
            "secrets",
            format!("{what} file {} is readable by other users", path.display()),
            format!("chmod 600 {}", path.display()),
        )
    })
}

/// Where the S3 keys come from (`kind = "s3"` only).
pub(super) fn storage_secrets(config: &Config) -> Vec<Check> {
    let Some(s3) = &config.storage.s3 else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    for (i, (what, file, key, env)) in crate::storage::s3::secret_sources(s3)
        .into_iter()
        .enumerate()
    {
        let required = i < 2;
        match file {
            Some(path) if path.is_file() => {
                checks.push(Check::pass(
                    "secrets",
                    format!("{what} found: file {}", path.display()),
                ));
                checks.extend(shared_file_warning(what, path));
            }
            Some(path) => checks.push(Check::fail(
                "secrets",
                format!(
                    "{what}: {key} names {}, which is not a readable file",
                    path.display()
                ),
                format!("create the file or correct `{key}`"),
            )),
            None if std::env::var(env).is_ok_and(|v| !v.trim().is_empty()) => {
                checks.push(Check::pass(
                    "secrets",
                    format!("{what} found: environment variable {env}"),
                ))
            }
            None if required => checks.push(Check::fail(
                "secrets",
                format!("no {what}"),
                format!("set {env} or `{key}`"),
            )),
            None => {}
        }
    }
    checks
}

/// The index: opens read-only, passes `quick_check`, is on a local file system,
/// and its write-ahead log is not huge. A missing index is fine before the first pass.
pub(super) fn index(path: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    let folder = existing_ancestor(path);
    if let Some(fs) = network_file_system(&folder) {
        checks.push(Check::fail(
            "index",
            format!("{} is on a network file system ({fs})", folder.display()),
            "put `[index] path` on a local disk: SQLite's locking is not reliable over the network (the archive itself may stay there)",
        ));
    }
    if !path.exists() {
        checks.push(Check::pass(
            "index",
            format!(
                "{} does not exist yet; the first pass creates it",
                path.display()
            ),
        ));
        return checks;
    }
    let opened = Index::open_read_only(path).and_then(|index| index.check_integrity());
    checks.push(match opened {
        Ok(()) => Check::pass(
            "index",
            format!("{} opens and passes quick_check", path.display()),
        ),
        Err(e) => Check::fail(
            "index",
            e.to_string(),
            "see docs/RELIABILITY.md, \"Recovering a damaged or lost index\"",
        ),
    });
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    if let Ok(meta) = std::fs::metadata(&wal)
        && meta.len() > HUGE_WAL
    {
        checks.push(Check::warn(
            "index",
            format!(
                "its write-ahead log {} is {} MiB",
                wal.display(),
                meta.len() / (1024 * 1024)
            ),
            "a long-running reader (query, verify, a backup tool) keeps SQLite from checkpointing; stop it and the next pass shrinks the log",
        ));
    }
    checks
}

/// The path itself if it exists, else its closest existing parent.
fn existing_ancestor(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    absolute
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_owned()
}

/// The name of the network file system `path` is on, if it is on one.
fn network_file_system(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a writable statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // f_type's width differs between platforms; the magic numbers fit in 32 bits.
    let kind = stat.f_type as u32;
    NETWORK_FILE_SYSTEMS
        .iter()
        .find(|(magic, _)| *magic == kind)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_folder_is_not_a_network_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(network_file_system(dir.path()), None);
        assert_eq!(
            existing_ancestor(&dir.path().join("a/b/index.sqlite")),
            dir.path()
        );
    }

    #[test]
    fn a_huge_write_ahead_log_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        drop(Index::open(&path).unwrap());
        let wal = std::fs::File::create(dir.path().join("index.sqlite-wal")).unwrap();
        wal.set_len(HUGE_WAL + 1).unwrap();
        let checks = index(&path);
        let warn = checks
            .iter()
            .find(|c| c.status == super::super::Status::Warn)
            .expect("a warning");
        assert!(warn.message.contains("write-ahead log"), "{warn:?}");
    }
}
